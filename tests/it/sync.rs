//! Issue 4: a sync that stays cheap. Pagination, incremental fetches, corrections,
//! coalesced scrapes, the minimum fetch interval, 601 rate limits, scrape timeouts and the
//! response size cap, each against the simulator. No test sleeps to let time pass: held
//! requests are released by hand, and backoffs are stepped over with the exporter's clock.

use crate::common;

use common::{AppOptions, TestApp, eventually, fixture, sample, sample_with, spawn_app_with};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use withings_exporter::account::{FetchError, SYNC_OVERLAP_SECONDS};
use withings_exporter::withings::ApiError;
use withings_sim::{Fault, SimulatorOptions};

/// The simulator's `updatetime` during a test; the history lies well before it.
const T: i64 = 1_700_000_000;
const WAIT: Duration = Duration::from_secs(10);

fn group(grpid: i64, date: i64, modified: i64, measures: &[(i64, i64, i64)]) -> Value {
    let measures: Vec<Value> = measures
        .iter()
        .map(|&(kind, value, unit)| json!({"type": kind, "value": value, "unit": unit}))
        .collect();
    json!({
        "grpid": grpid, "attrib": 0, "date": date, "created": date, "modified": modified,
        "category": 1, "deviceid": "d1", "hash_deviceid": "d1", "model": "BPM Core",
        "modelid": 44, "measures": measures,
    })
}

fn systolic(text: &str) -> Option<f64> {
    sample_with(
        text,
        "withings_blood_pressure_mmhg",
        &[("kind", "systolic")],
    )
}

async fn app_with(env: Vec<(&'static str, String)>, simulator: SimulatorOptions) -> TestApp {
    let app = spawn_app_with(AppOptions { env, simulator }).await;
    app.simulator.set_clock(Some(T));
    app
}

async fn app() -> TestApp {
    app_with(Vec::new(), SimulatorOptions::default()).await
}

/// Two blood-pressure readings a day apart; the later one, systolic 120, is the latest.
fn seed(app: &TestApp) {
    app.simulator
        .set_groups(vec![
            group(1, T - 86_400, T - 86_400, &[(10, 130, 0), (9, 85, 0)]),
            group(2, T - 3_600, T - 3_600, &[(10, 120, 0), (9, 80, 0)]),
        ])
        .unwrap();
}

fn measure_params(app: &TestApp, key: &str) -> Vec<Option<String>> {
    app.simulator
        .requests()
        .iter()
        .filter(|r| r.path == "/measure")
        .map(|r| r.params.get(key).cloned())
        .collect()
}

fn scrapes_served_from(app: &TestApp, source: &str) -> f64 {
    let text = app.exporter.metrics_now();
    sample_with(&text, "withings_scrapes_total", &[("served_from", source)]).unwrap_or(0.0)
}

async fn scrape_with_timeout_header(app: &TestApp, value: &str) -> String {
    let response = app
        .http
        .get(app.url("/metrics"))
        .header("X-Prometheus-Scrape-Timeout-Seconds", value)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    response.text().await.expect("body")
}

#[tokio::test]
async fn a_three_page_history_is_read_whole() {
    let app = app_with(
        Vec::new(),
        SimulatorOptions {
            page_size: 2,
            ..SimulatorOptions::default()
        },
    )
    .await;
    // Each page holds something only it has, and the latest systolic is on the last page.
    app.simulator
        .set_groups(vec![
            group(1, T - 6_000, T - 6_000, &[(10, 110, 0)]),
            group(2, T - 5_000, T - 5_000, &[(9, 70, 0)]),
            group(3, T - 4_000, T - 4_000, &[(11, 60, 0)]),
            group(4, T - 3_000, T - 3_000, &[(54, 97, 0)]),
            group(5, T - 2_000, T - 2_000, &[(71, 36_600, -3)]),
            group(6, T - 1_000, T - 1_000, &[(10, 125, 0)]),
        ])
        .unwrap();

    let text = app.scrape().await;

    assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
    assert_eq!(systolic(&text), Some(125.0));
    assert_eq!(
        sample_with(
            &text,
            "withings_blood_pressure_mmhg",
            &[("kind", "diastolic")]
        ),
        Some(70.0)
    );
    assert_eq!(
        sample_with(&text, "withings_heart_rate_bpm", &[]),
        Some(60.0)
    );
    assert_eq!(sample_with(&text, "withings_spo2_ratio", &[]), Some(0.97));
    assert_eq!(
        sample_with(&text, "withings_body_temperature_celsius", &[]),
        Some(36.6)
    );
    assert_eq!(
        measure_params(&app, "offset"),
        [None, Some("2".into()), Some("4".into())],
        "one request per page, each with the previous page's offset"
    );
    assert_eq!(
        measure_params(&app, "lastupdate"),
        vec![Some("0".to_string()); 3]
    );
}

#[tokio::test]
async fn a_second_fetch_carries_lastupdate_and_gets_only_the_new_groups() {
    let app = app().await;
    seed(&app);
    assert_eq!(systolic(&app.scrape().await), Some(120.0));
    app.simulator.clear_requests();

    // One group arrives after the first answer; another is stamped just before that answer
    // but reached Withings late: the overlap is there so that it is not lost.
    app.simulator
        .upsert_group(group(3, T + 10, T + 10, &[(10, 140, 0), (9, 90, 0)]))
        .unwrap();
    app.simulator
        .upsert_group(group(4, T - 100, T - 100, &[(11, 64, 0)]))
        .unwrap();
    app.simulator.set_clock(Some(T + 60));

    let outcome = app.exporter.single_account().unwrap().fetch().await;

    let stats = outcome.expect("second fetch succeeds");
    assert_eq!(
        stats.groups, 2,
        "only the two new groups come back, not the history"
    );
    assert_eq!(
        measure_params(&app, "lastupdate"),
        [Some((T - SYNC_OVERLAP_SECONDS).to_string())]
    );
    let text = app.exporter.metrics_now();
    assert_eq!(systolic(&text), Some(140.0));
    assert_eq!(
        sample_with(&text, "withings_heart_rate_bpm", &[]),
        Some(64.0)
    );
}

#[tokio::test]
async fn corrections_of_groups_already_read_are_applied() {
    let app = app().await;
    seed(&app);
    assert_eq!(systolic(&app.scrape().await), Some(120.0));

    // The latest reading is corrected in place (same grpid and date, later `modified`).
    app.simulator
        .upsert_group(group(2, T - 3_600, T + 30, &[(10, 118, 0), (9, 80, 0)]))
        .unwrap();
    app.simulator.set_clock(Some(T + 60));
    let text = app.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0));
    assert_eq!(systolic(&text), Some(118.0), "{text}");

    // An old reading gets its date corrected to be the newest: it becomes the latest.
    app.simulator
        .upsert_group(group(1, T - 600, T + 90, &[(10, 131, 0), (9, 86, 0)]))
        .unwrap();
    app.simulator.set_clock(Some(T + 120));
    let text = app.scrape().await;
    assert_eq!(systolic(&text), Some(131.0), "{text}");
    assert_eq!(
        sample_with(
            &text,
            "withings_measurement_timestamp_seconds",
            &[("measurement", "systolic_blood_pressure")]
        ),
        Some((T - 600) as f64)
    );
    assert_eq!(
        measure_params(&app, "lastupdate"),
        [
            Some("0".into()),
            Some((T - 300).to_string()),
            Some((T + 60 - 300).to_string())
        ]
    );
}

/// A correction that takes the latest reading back in time (or out of the history) cannot
/// be settled from the changed groups alone: the new latest reading was sent long ago. The
/// exporter then reads the whole history again, into a fresh state, and swaps it in.
#[tokio::test]
async fn a_correction_that_retires_the_latest_reading_rebuilds_from_the_whole_history() {
    let app = app().await;
    seed(&app);
    assert_eq!(systolic(&app.scrape().await), Some(120.0));

    // The latest reading (group 2) is re-dated to two days ago, before group 1.
    app.simulator
        .upsert_group(group(2, T - 172_800, T + 30, &[(10, 121, 0), (9, 81, 0)]))
        .unwrap();
    app.simulator.set_clock(Some(T + 60));
    app.scrape().await;
    app.simulator.set_clock(Some(T + 120));
    let text = app.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0));
    assert_eq!(
        systolic(&text),
        Some(130.0),
        "group 1 is the latest now:\n{text}"
    );
    assert_eq!(
        sample_with(
            &text,
            "withings_measurement_timestamp_seconds",
            &[("measurement", "systolic_blood_pressure")]
        ),
        Some((T - 86_400) as f64)
    );
    assert_eq!(
        measure_params(&app, "lastupdate"),
        [
            Some("0".into()),
            Some((T - 300).to_string()),
            Some("0".into()),
        ],
        "the third fetch reads the whole history"
    );

    // Group 1 is then marked inconclusive: nothing else holds a blood pressure, so after
    // the rebuild none is exposed rather than the retired value.
    let mut inconclusive = group(1, T - 86_400, T + 150, &[(10, 130, 0), (9, 85, 0)]);
    inconclusive["is_inconclusive"] = json!(true);
    app.simulator.upsert_group(inconclusive).unwrap();
    app.simulator
        .upsert_group(group(2, T - 172_800, T + 30, &[(9, 81, 0)]))
        .unwrap();
    app.simulator.set_clock(Some(T + 180));
    app.scrape().await;
    app.simulator.set_clock(Some(T + 240));
    let text = app.scrape().await;
    assert_eq!(systolic(&text), None, "{text}");
    assert_eq!(
        sample_with(
            &text,
            "withings_blood_pressure_mmhg",
            &[("kind", "diastolic")]
        ),
        Some(81.0),
        "{text}"
    );
}

#[tokio::test]
async fn steady_state_of_a_real_two_thousand_group_history_is_one_request() {
    let app = app().await;
    app.simulator
        .load_fixture(&fixture("measurement_list.json"))
        .unwrap();
    let first = app
        .exporter
        .single_account()
        .unwrap()
        .fetch()
        .await
        .expect("full sync");
    let first_requests = app.simulator.request_count("/measure");
    assert!(first_requests > 1, "the history spans several pages");
    assert!(first.groups > 1000, "{first:?}");

    app.simulator.set_clock(Some(T + 60));
    let text = app.scrape().await;

    assert_eq!(sample(&text, "withings_up"), Some(1.0));
    assert_eq!(app.simulator.request_count("/measure"), first_requests + 1);
    assert!(systolic(&text).is_some());
    let steady = app
        .exporter
        .single_account()
        .unwrap()
        .fetch()
        .await
        .expect("steady fetch");
    assert_eq!(
        steady.groups, 0,
        "nothing changed, so nothing is sent again"
    );
}

#[tokio::test]
async fn a_hundred_concurrent_scrapes_make_one_upstream_request() {
    // A generous upstream timeout, so that the held request outlasts a slow start of the
    // hundred scrapes on a busy machine.
    let app = app_with(
        vec![("WITHINGS_TIMEOUT_SECONDS", "60".into())],
        SimulatorOptions::default(),
    )
    .await;
    seed(&app);
    app.simulator.hold();

    let scrapes: Vec<_> = (0..100)
        .map(|_| {
            let http = app.http.clone();
            let url = app.url("/metrics");
            tokio::spawn(async move { http.get(url).send().await?.text().await })
        })
        .collect();
    // Release the upstream only once every scrape is waiting on the one fetch.
    assert!(
        eventually(WAIT, || {
            app.simulator.request_count("/measure") == 1
                && scrapes_served_from(&app, "shared_fetch") == 99.0
        })
        .await,
        "requests: {}, shared: {}",
        app.simulator.request_count("/measure"),
        scrapes_served_from(&app, "shared_fetch")
    );
    app.simulator.release();

    for scrape in scrapes {
        let text = scrape.await.expect("task").expect("scrape");
        assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
        assert_eq!(systolic(&text), Some(120.0));
    }
    assert_eq!(app.simulator.request_count("/measure"), 1);
    assert_eq!(scrapes_served_from(&app, "new_fetch"), 1.0);
}

#[tokio::test]
async fn the_minimum_fetch_interval_serves_the_last_fetch() {
    let app = app_with(
        vec![("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "60".into())],
        SimulatorOptions::default(),
    )
    .await;
    seed(&app);
    assert_eq!(sample(&app.scrape().await, "withings_up"), Some(1.0));

    let text = app.scrape().await;
    assert_eq!(
        sample(&text, "withings_up"),
        Some(1.0),
        "the result of the fetch it was served"
    );
    assert_eq!(systolic(&text), Some(120.0));
    assert_eq!(app.simulator.request_count("/measure"), 1);
    assert_eq!(scrapes_served_from(&app, "recent_fetch"), 1.0);
    let help = text
        .lines()
        .find(|l| l.starts_with("# HELP withings_up "))
        .unwrap();
    assert!(
        help.contains("WITHINGS_MIN_FETCH_INTERVAL_SECONDS"),
        "{help}"
    );

    app.exporter.clock().advance(Duration::from_secs(61));
    app.scrape().await;
    assert_eq!(app.simulator.request_count("/measure"), 2);
}

#[tokio::test]
async fn a_601_with_wait_seconds_is_honoured() {
    let app = app().await;
    seed(&app);
    app.scrape().await;
    app.simulator.push_fault(Fault::Status {
        status: 601,
        error: "Too many requests".into(),
        wait_seconds: Some(60),
    });

    let refused = app.scrape().await;
    assert_eq!(sample(&refused, "withings_up"), Some(0.0));
    assert_eq!(sample(&refused, "withings_rate_limited"), Some(1.0));
    assert_eq!(
        systolic(&refused),
        Some(120.0),
        "last known values are kept"
    );
    assert_eq!(
        sample_with(
            &refused,
            "withings_api_requests_total",
            &[("action", "getmeas"), ("status", "601")]
        ),
        Some(1.0)
    );
    let resume =
        sample(&refused, "withings_rate_limit_resume_timestamp_seconds").expect("resume time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        resume >= now + 50.0 && resume <= now + 80.0,
        "{resume} vs {now}"
    );

    // Scrapes, and direct fetches, in the 60 s that follow make no request.
    let requests = app.simulator.request_count("/measure");
    for _ in 0..3 {
        let text = app.scrape().await;
        assert_eq!(sample(&text, "withings_up"), Some(0.0));
        assert_eq!(systolic(&text), Some(120.0));
    }
    assert!(matches!(
        app.exporter.single_account().unwrap().fetch().await,
        Err(FetchError::Api(ApiError::Paused(_)))
    ));
    // 5 s short of the wait: that much real time may pass on a busy machine without the
    // test going wrong (the exact boundary is unit-tested in `ratelimit`).
    app.exporter.clock().advance(Duration::from_secs(55));
    assert_eq!(sample(&app.scrape().await, "withings_up"), Some(0.0));
    assert_eq!(app.simulator.request_count("/measure"), requests);
    assert_eq!(scrapes_served_from(&app, "rate_limited"), 4.0);

    // Past the wait and its at most 20 % jitter (72 s), requests resume.
    app.exporter.clock().advance(Duration::from_secs(18));
    let text = app.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "withings_rate_limited"), Some(0.0));
    assert_eq!(
        sample(&text, "withings_rate_limit_resume_timestamp_seconds"),
        None
    );
    assert_eq!(app.simulator.request_count("/measure"), requests + 1);
}

#[tokio::test]
async fn a_601_without_wait_seconds_backs_off_exponentially() {
    let app = app().await;
    seed(&app);
    let same_arguments = || Fault::Status {
        status: 601,
        error: "Same arguments in less than 10 seconds".into(),
        wait_seconds: None,
    };
    app.simulator.push_fault(same_arguments());
    assert_eq!(sample(&app.scrape().await, "withings_up"), Some(0.0));
    app.exporter.clock().advance(Duration::from_secs(5));
    app.scrape().await;
    assert_eq!(
        app.simulator.request_count("/measure"),
        1,
        "first backoff is at least 10 s"
    );

    // Refused again once the first backoff (10 s, up to 12 with jitter) is over: the second
    // is twice as long.
    app.simulator.push_fault(same_arguments());
    app.exporter.clock().advance(Duration::from_secs(8));
    assert_eq!(sample(&app.scrape().await, "withings_up"), Some(0.0));
    assert_eq!(app.simulator.request_count("/measure"), 2);
    app.exporter.clock().advance(Duration::from_secs(15));
    app.scrape().await;
    assert_eq!(
        app.simulator.request_count("/measure"),
        2,
        "second backoff is at least 20 s"
    );
    app.exporter.clock().advance(Duration::from_secs(10));
    assert_eq!(sample(&app.scrape().await, "withings_up"), Some(1.0));
    assert_eq!(app.simulator.request_count("/measure"), 3);
}

#[tokio::test]
async fn a_slow_upstream_is_answered_within_the_scrape_timeout() {
    let app = app().await;
    seed(&app);
    // A value that is not a number of seconds is ignored, not an error.
    let text = scrape_with_timeout_header(&app, "soon").await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0));

    app.simulator.hold();
    let asked = Instant::now();
    let text = scrape_with_timeout_header(&app, "1").await;
    let took = asked.elapsed();

    // A correctness bound, not a benchmark: the upstream is held indefinitely.
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
    assert_eq!(systolic(&text), Some(120.0), "last known values are served");

    // The fetch was not cancelled with the scrape: once Withings answers, the state moves on
    // without another scrape or request.
    app.simulator
        .upsert_group(group(3, T + 10, T + 10, &[(10, 140, 0)]))
        .unwrap();
    app.simulator.release();
    assert!(
        eventually(WAIT, || systolic(&app.exporter.metrics_now())
            == Some(140.0))
        .await
    );
    assert_eq!(app.simulator.request_count("/measure"), 2);
}

#[tokio::test]
async fn an_answer_over_the_size_cap_is_refused_cleanly() {
    let app = app_with(
        vec![("WITHINGS_MAX_RESPONSE_BYTES", "4096".into())],
        SimulatorOptions::default(),
    )
    .await;
    seed(&app);
    assert_eq!(sample(&app.scrape().await, "withings_up"), Some(1.0));
    let padding = "x".repeat(10_000);
    app.simulator.push_fault(Fault::Body(format!(
        r#"{{"status":0,"body":{{"updatetime":{T},"measuregrps":[],"more":0,"offset":0,"padding":"{padding}"}}}}"#
    )));

    let text = app.scrape().await;

    assert_eq!(sample(&text, "withings_up"), Some(0.0));
    assert_eq!(systolic(&text), Some(120.0), "last known values are kept");
    assert_eq!(
        sample_with(
            &text,
            "withings_api_requests_total",
            &[("action", "getmeas"), ("status", "too_large")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&app.scrape().await, "withings_up"),
        Some(1.0),
        "the next answer is used"
    );
}
