//! The running exporter's remote writer (issue 19): each account's settled history goes to
//! the store under the labels the scraped series carry; a receiver that is down, or an
//! exporter that restarts, loses nothing (the cursor moves only when a run was written, and
//! the next run reads again from it); nothing is written twice with another value.

use crate::common;
use crate::remote_write::{Receiver, Reply};

use common::accounts::{directory_vars, unix_now, write_account};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use withings_exporter::app::App;
use withings_exporter::backfill::live::{CURSORS_FILE, LATE_SECONDS, Live, Run, SETTLE_SECONDS};
use withings_exporter::clock::Clock;
use withings_exporter::config::Config;
use withings_exporter::remote_write::{Destination, Options, Writer};
use withings_sim::{Simulator, SimulatorOptions};

/// One blood-pressure reading (systolic `systolic`) of `userid` at `date`.
fn reading(grpid: i64, date: i64, systolic: i64) -> serde_json::Value {
    json!({
        "grpid": grpid, "attrib": 0, "date": date, "created": date, "modified": date,
        "category": 1, "deviceid": "bpm", "hash_deviceid": "bpm", "model": "BPM Connect",
        "modelid": 44,
        "measures": [{"type": 10, "value": systolic, "unit": 0},
                     {"type": 9, "value": systolic - 40, "unit": 0}],
    })
}

/// The systolic samples of `account` in the store: (unix seconds, values written there).
fn systolic(receiver: &Receiver, account: &str) -> Vec<(i64, Vec<f64>)> {
    receiver
        .stored()
        .into_iter()
        .filter(|((series, _), _)| {
            series.contains("__name__=withings_blood_pressure_mmhg,")
                && series.contains(&format!("account={account},"))
                && series.contains("kind=systolic")
        })
        .map(|((series, ms), values)| {
            // The labels that join the scraped series.
            assert!(
                series.contains("instance=exporter:19100,job=withings"),
                "{series}"
            );
            (ms / 1000, values)
        })
        .collect()
}

fn writer(url: &str) -> Writer {
    let mut destination = Destination::new(url.parse().expect("a URL"));
    destination.options = Options {
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        give_up_after: Some(Duration::from_millis(300)),
        ..Options::default()
    };
    Writer::new(destination).expect("writer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_history_reaches_the_store_once_and_an_outage_or_a_restart_loses_nothing() {
    let sim = Simulator::start(SimulatorOptions::default())
        .await
        .expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    let now = unix_now();
    // mom: one reading settled (20 h old), one not yet (2 h old); dad: one 30 h old; a
    // reading four days old, before the first run's window, is the backfill's business.
    sim.set_user_groups(
        "31",
        vec![
            reading(1, now - 96 * 3600, 150),
            reading(2, now - 20 * 3600, 121),
            reading(3, now - 2 * 3600, 133),
        ],
    )
    .unwrap();
    sim.set_user_groups("32", vec![reading(10, now - 30 * 3600, 140)])
        .unwrap();
    write_account(&sim, dir.path(), "mom", "31");
    write_account(&sim, dir.path(), "dad", "32");
    let config = Config::from_vars(directory_vars(&sim, dir.path())).expect("configuration");
    let clock = Clock::starting_at_unix(now);
    let app = Arc::new(App::from_config_with_clock(&config, clock.clone()).expect("app"));
    let down = Arc::new(AtomicBool::new(false));
    let is_down = Arc::clone(&down);
    let receiver = Receiver::start(move |_, _| {
        if is_down.load(Ordering::SeqCst) {
            Reply::Status(503, None)
        } else {
            Reply::Ok
        }
    })
    .await;
    let cursors = dir.path().join(CURSORS_FILE);
    let start = |app: &Arc<App>| {
        Live::new(
            Arc::clone(app),
            writer(&receiver.url),
            None,
            Some("exporter:19100"),
            Some(cursors.clone()),
            &prometheus::Registry::new(),
        )
        .expect("the writer starts")
    };
    let mut live = start(&app);
    // One history (measures) at the default 100 requests a minute: an hour a round up to
    // 1,500 accounts (a quarter of the hour's 6,000), longer beyond.
    let hour = Duration::from_secs(3600);
    assert_eq!(live.cycle(2), hour);
    assert_eq!(live.cycle(1_500), hour);
    assert_eq!(live.cycle(10_000), 7 * hour);
    let mom = app.account("mom").expect("mom");
    let dad = app.account("dad").expect("dad");
    let settled = now - SETTLE_SECONDS;

    // The first run: what has settled, from two days before it.
    assert_eq!(live.run_account(&mom).await, Run::Written(settled));
    assert_eq!(live.run_account(&dad).await, Run::Written(settled));
    assert_eq!(systolic(&receiver, "mom"), [(now - 20 * 3600, vec![121.0])]);
    assert_eq!(systolic(&receiver, "dad"), [(now - 30 * 3600, vec![140.0])]);
    receiver.assert_no_violation();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cursors).unwrap()).unwrap();
    assert_eq!(saved["accounts"]["mom"], settled);

    // Thirteen hours on, the receiver down: the run fails and the cursor stays.
    clock.advance(Duration::from_secs(13 * 3600));
    down.store(true, Ordering::SeqCst);
    assert_eq!(live.run_account(&mom).await, Run::Failed);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cursors).unwrap()).unwrap();
    assert_eq!(
        saved["accounts"]["mom"], settled,
        "the cursor moved on a failure"
    );
    assert_eq!(systolic(&receiver, "mom").len(), 1);

    // The exporter restarts (a new writer from the saved cursors), the receiver is back:
    // the next run reads again from the cursor and the reading that settled meanwhile
    // arrives; the one written before is written again with the same value, never another.
    drop(live);
    down.store(false, Ordering::SeqCst);
    let measure_requests = || {
        sim.requests()
            .into_iter()
            .filter(|r| r.path == "/measure")
            .collect::<Vec<_>>()
    };
    let before = measure_requests().len();
    let mut live = start(&app);
    let later = now + 13 * 3600 - SETTLE_SECONDS;
    assert_eq!(live.run_account(&mom).await, Run::Written(later));
    let written = systolic(&receiver, "mom");
    assert_eq!(
        written.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        [now - 20 * 3600, now - 2 * 3600]
    );
    for (at, values) in &written {
        assert!(
            values.iter().all(|v| *v == values[0]),
            "two values at {at}: {values:?}"
        );
    }
    assert_eq!(written[1].1[0], 133.0);
    // It read from the cursor less the late-sync window, within the budget like any fetch.
    let asked = &measure_requests()[before..];
    assert!(!asked.is_empty());
    assert!(
        asked
            .iter()
            .all(|r| r.params.get("startdate").map(String::as_str)
                == Some((settled - LATE_SECONDS).to_string().as_str())),
        "{asked:?}"
    );
    receiver.assert_no_violation();
}

#[test]
fn serve_with_a_remote_write_url_needs_the_instance_label() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(common::process::BIN)
        .arg("serve")
        .env_clear()
        .env("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0")
        .env("WITHINGS_ACCESS_TOKEN", "t")
        .env("WITHINGS_TOKEN_FILE", dir.path().join("t.json"))
        .env(
            "WITHINGS_REMOTE_WRITE_URL",
            "http://127.0.0.1:9/api/v1/write",
        )
        .env("NO_COLOR", "1")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("WITHINGS_REMOTE_WRITE_INSTANCE is not set"),
        "{stderr}"
    );
}

/// The immediate path: a watch's intraday samples reach the store the moment a fetch reads
/// them (a probe here; a notification's fetch alike), under the scraped series' labels,
/// within seconds; the settled run is only the safety net.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intraday_samples_reach_the_store_as_a_fetch_reads_them() {
    use withings_exporter::backfill::live::Immediate;
    let sim = Simulator::start(SimulatorOptions::default())
        .await
        .expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    let now = unix_now();
    let mut intraday = std::collections::BTreeMap::new();
    for (minutes, bpm) in [(30, 61), (20, 63), (10, 65)] {
        intraday.insert(
            now - minutes * 60,
            json!({"deviceid": "w1", "model": "ScanWatch 2", "heart_rate": bpm}),
        );
    }
    sim.set_user_extras(
        "41",
        withings_sim::data::UserExtras {
            intraday,
            ..Default::default()
        },
    )
    .unwrap();
    write_account(&sim, dir.path(), "mom", "41");
    let mut vars = directory_vars(&sim, dir.path());
    vars.push(("WITHINGS_COLLECTORS".into(), "measures,intraday".into()));
    let config = Config::from_vars(vars).expect("configuration");
    let app = Arc::new(App::from_config(&config).expect("app"));
    let receiver = Receiver::start(|_, _| Reply::Ok).await;
    let (immediate, writing) = Immediate::new(
        &app,
        writer(&receiver.url),
        None,
        Some("exporter:19100"),
        &prometheus::Registry::new(),
    )
    .expect("the immediate path");
    app.emit_to(immediate);
    let task = tokio::spawn(writing);
    let served = common::serve(common::bind(Arc::clone(&app)).await);
    let body = common::http()
        .get(format!("http://{}/probe?account=mom", served.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("withings_intraday_heart_rate_bpm{"), "{body}");
    let read_at = std::time::Instant::now();
    let heart_rate = || -> Vec<(i64, Vec<f64>)> {
        receiver
            .stored()
            .into_iter()
            .filter(|((series, _), _)| {
                series.starts_with("__name__=withings_intraday_heart_rate_bpm,account=mom,")
                    && series.contains("instance=exporter:19100,job=withings")
            })
            .map(|((_, ms), values)| (ms / 1000, values))
            .collect()
    };
    assert!(
        common::eventually(Duration::from_secs(5), || heart_rate().len() == 3).await,
        "{:?}",
        receiver.stored()
    );
    assert!(read_at.elapsed() < Duration::from_secs(5));
    assert_eq!(
        heart_rate(),
        [
            (now - 1_800, vec![61.0]),
            (now - 1_200, vec![63.0]),
            (now - 600, vec![65.0])
        ]
    );
    // A late sync: one sample older than the newest seen, one newer. The next fetch reads
    // the hour again and hands the writer those two only: no sample twice, none lost.
    let mut intraday = std::collections::BTreeMap::new();
    for (minutes, bpm) in [(30, 61), (25, 62), (20, 63), (10, 65), (5, 66)] {
        intraday.insert(
            now - minutes * 60,
            json!({"deviceid": "w1", "model": "ScanWatch 2", "heart_rate": bpm}),
        );
    }
    sim.set_user_extras(
        "41",
        withings_sim::data::UserExtras {
            intraday,
            ..Default::default()
        },
    )
    .unwrap();
    let body = common::get_text(&format!("http://{}/probe?account=mom", served.address)).await;
    assert!(body.contains("withings_intraday_heart_rate_bpm{"), "{body}");
    assert!(
        common::eventually(Duration::from_secs(5), || heart_rate().len() == 5).await,
        "{:?}",
        heart_rate()
    );
    // Anything written twice would show here as a second value.
    let bodies = receiver.requests().len();
    assert_eq!(
        heart_rate(),
        [
            (now - 1_800, vec![61.0]),
            (now - 1_500, vec![62.0]),
            (now - 1_200, vec![63.0]),
            (now - 600, vec![65.0]),
            (now - 300, vec![66.0])
        ],
        "after {bodies} write requests"
    );
    receiver.assert_no_violation();
    task.abort();
}
