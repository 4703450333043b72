//! One budget across processes (issue 22): every process working on one token directory
//! (exporters, `backfill`, `auth`, `notify`) counts its requests to Withings in the
//! directory's ledger, so that together they keep to WITHINGS_REQUESTS_PER_MINUTE, counted
//! where Withings counts it: at the (simulated) API.

use crate::common;
use common::accounts::{directory_vars, write_account};
use common::process::{BIN, ChildGuard, start_serving};

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use withings_sim::{Simulator, SimulatorOptions};

const PER_MINUTE: usize = 20;

fn env(sim: &Simulator, dir: &std::path::Path) -> Vec<(String, String)> {
    let mut vars = directory_vars(sim, dir);
    vars.extend(
        [
            ("WITHINGS_REQUESTS_PER_MINUTE", PER_MINUTE.to_string()),
            // Every probe fetches: the exporters ask for as much as they can get.
            ("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "0".to_owned()),
            ("NO_COLOR", "1".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    vars
}

fn command(vars: &[(String, String)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k, v)));
    command
}

/// Probes both accounts of the exporter at `address` as fast as it answers, until `stop`.
fn hammer(address: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let http = common::http_with_timeout();
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) {
            for account in ["mom", "dad"] {
                let url = format!("http://{address}/probe?account={account}");
                if http.get(&url).send().await.is_ok() {
                    answered += 1;
                }
            }
        }
        answered
    })
}

async fn metrics(address: &str) -> String {
    common::body_of(common::http().get(format!("http://{address}/metrics"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_exporters_and_a_backfill_on_one_token_directory_keep_one_budget() {
    let sim = Simulator::start(SimulatorOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, userid) in [("mom", "7001"), ("dad", "7002")] {
        sim.add_user(userid);
        write_account(&sim, dir.path(), name, userid);
    }
    let vars = env(&sim, dir.path());

    let (_first, first, _) = start_serving(command(&vars).arg("serve")).await;
    let (_second, second, _) = start_serving(command(&vars).arg("serve")).await;
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("all.om");
    let backfill = command(&vars)
        .args(["backfill", "--all", "--instance", "x:19100", "--output"])
        .arg(&output)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("backfill starts");
    let _backfill = ChildGuard(backfill);

    let stop = Arc::new(AtomicBool::new(false));
    let hammers = [
        hammer(first.clone(), Arc::clone(&stop)),
        hammer(second.clone(), Arc::clone(&stop)),
    ];
    // Three processes at full tilt spend a budget of 20 within a few seconds; each alone
    // would spend all of it, so without one budget between them they spend it three times.
    // Then keep asking a while longer: nothing more may go out within the minute.
    let spent = common::eventually(Duration::from_secs(30), || {
        sim.requests().len() >= PER_MINUTE
    })
    .await;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (first_metrics, second_metrics) = (metrics(&first).await, metrics(&second).await);
    stop.store(true, Ordering::Relaxed);
    for hammer in hammers {
        assert!(
            hammer.await.unwrap() > 0,
            "an exporter never answered a probe"
        );
    }

    let requests = sim.requests();
    let first_at = requests.first().map(|r| r.at);
    let seconds = first_at.map_or(0.0, |at| at.elapsed().as_secs_f64());
    assert!(spent, "only {} requests reached Withings", requests.len());
    assert!(
        seconds < 55.0,
        "the run took {seconds:.0} s: the window counted must be the first minute"
    );
    let most = sim.max_requests_in_any_minute();
    assert!(
        most <= PER_MINUTE,
        "{most} requests reached Withings within a minute, over the application's budget of {PER_MINUTE} (two exporters and a backfill on one token directory)"
    );
    // Every process counts every process's requests, and both exporters were at full
    // tilt: probes they answered from state because the budget was spent.
    for text in [&first_metrics, &second_metrics] {
        assert_eq!(
            common::sample(text, "withings_requests_in_window"),
            Some(PER_MINUTE as f64),
            "{text}"
        );
        let held =
            common::sample_with(text, "withings_scrapes_total", &[("served_from", "budget")]);
        assert!(held.is_some_and(|n| n > 0.0), "{text}");
    }
    let ledger = dir.path().join(".budget");
    let mode = std::fs::metadata(&ledger).expect("the ledger exists");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
}

#[test]
fn the_ledger_is_in_the_token_directory_or_beside_the_token_file() {
    use withings_exporter::config::Config;
    let ledger = |vars: &[(&str, &str)]| {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .unwrap()
            .accounts
            .budget_ledger()
    };
    assert_eq!(
        ledger(&[("WITHINGS_TOKEN_DIR", "/var/lib/w/accounts")]),
        Some("/var/lib/w/accounts/.budget".into())
    );
    assert_eq!(
        ledger(&[("WITHINGS_TOKEN_FILE", "/var/lib/w/tokens.json")]),
        Some("/var/lib/w/.budget".into())
    );
    assert_eq!(
        ledger(&[("WITHINGS_TOKEN_FILE", "tokens.json")]),
        Some("./.budget".into())
    );
    assert_eq!(ledger(&[("WITHINGS_ACCESS_TOKEN", "abc")]), None);
}
