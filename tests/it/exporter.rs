//! The exporter end to end: a real server on an ephemeral port, the simulator as Withings.

use crate::common;

use common::{AppOptions, TOKEN, fixture, sample, sample_with, spawn_app, spawn_app_with};
use std::time::Duration;
use withings_sim::Fault;

const BPM: &str = "c405eb8e0e053f6601e151c7e43c04e29aad6956";

fn vital(text: &str, metric: &str, extra: &[(&str, &str)]) -> Option<f64> {
    sample_with(text, metric, extra)
}

fn timestamp(text: &str, measurement: &str) -> Option<f64> {
    sample_with(
        text,
        "withings_measurement_timestamp_seconds",
        &[("measurement", measurement)],
    )
}

fn assert_seed_vitals(text: &str) {
    let bp = |kind| {
        vital(
            text,
            "withings_blood_pressure_mmhg",
            &[
                ("kind", kind),
                ("device_id", BPM),
                ("device_model", "BPM Core"),
            ],
        )
    };
    assert_eq!(bp("systolic"), Some(109.0), "{text}");
    assert_eq!(bp("diastolic"), Some(89.0), "{text}");
    assert_eq!(
        vital(
            text,
            "withings_heart_rate_bpm",
            &[("device_model", "BPM Core")]
        ),
        Some(88.0)
    );
    // SpO2 and temperature come from other devices, with no model (null in the answer).
    assert_eq!(
        vital(
            text,
            "withings_spo2_ratio",
            &[
                ("device_id", "dbf7f61809d5fb350a16a50f6af6e826f0746082"),
                ("device_model", "")
            ]
        ),
        Some(0.99)
    );
    assert!(text.contains("\nwithings_body_temperature_celsius{device_id=\"1d453daf947378fac40677e7a085eea73750b061\",device_model=\"\"} 37.37\n"), "{text}");
    assert_eq!(
        timestamp(text, "systolic_blood_pressure"),
        Some(1690491576.0)
    );
    assert_eq!(
        timestamp(text, "diastolic_blood_pressure"),
        Some(1690491576.0)
    );
    assert_eq!(timestamp(text, "heart_rate"), Some(1690491576.0));
    assert_eq!(timestamp(text, "spo2"), Some(1690375238.0));
    assert_eq!(timestamp(text, "body_temperature"), Some(1690374434.0));
}

#[tokio::test]
async fn seed_sample_gives_the_exact_vitals() {
    let app = common::spawn_seeded_app().await;
    let text = app.scrape().await;
    assert_seed_vitals(&text);
    assert_eq!(sample(&text, "withings_up"), Some(1.0));
    assert_eq!(sample(&text, "withings_token_valid"), Some(1.0));
    assert_eq!(
        sample(&text, "withings_exporter_build_info{version=\"0.1.0\"}"),
        Some(1.0)
    );
    assert!(sample(&text, "withings_scrape_duration_seconds").is_some_and(|d| d > 0.0));
    assert_eq!(
        sample(
            &text,
            "withings_api_requests_total{action=\"getmeas\",status=\"0\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn each_scrape_makes_one_getmeas_request_with_the_documented_parameters() {
    let app = common::spawn_seeded_app().await;
    app.scrape().await;
    app.scrape().await;
    let requests = app.simulator.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for r in &requests {
        assert_eq!(r.path, "/measure");
        assert_eq!(r.bearer.as_deref(), Some(TOKEN));
        assert_eq!(r.params["action"], "getmeas");
        // Every type the exporter knows, in the one request (tests/it/measures.rs checks the list).
        assert!(
            r.params["meastypes"].starts_with("1,4,5,6,8,9,10,11,12,54,71,"),
            "{r:?}"
        );
        assert_eq!(r.params["category"], "1");
        assert!(
            !r.params.values().any(|v| v.contains(TOKEN)),
            "token in parameters"
        );
    }
}

/// The whole exposition for the seed sample, with the two values that change from run to
/// run replaced by a marker. Set `UPDATE_GOLDEN=1` to rewrite the file after a deliberate
/// change, and review the diff.
#[tokio::test]
async fn seed_exposition_matches_the_golden_file() {
    let app = common::spawn_seeded_app().await;
    let text = app.scrape().await;
    common::assert_golden(&text, "seed.prom");
}

#[tokio::test]
async fn seed_expired_token_answer_sets_token_invalid_and_up_zero() {
    let app = spawn_app().await;
    app.simulator
        .set_fault(Some(Fault::Body(fixture("seed_expired_token.json"))));
    let text = app.scrape().await;
    assert_eq!(sample(&text, "withings_token_valid"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "withings_up"), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "withings_api_requests_total{action=\"getmeas\",status=\"401\"}"
        ),
        Some(1.0)
    );
    // Before any successful fetch there is nothing to show: never a made-up 0.
    for metric in [
        "withings_blood_pressure_mmhg",
        "withings_heart_rate_bpm",
        "withings_spo2_ratio",
        "withings_body_temperature_celsius",
        "withings_measurement_timestamp_seconds",
        "withings_last_success_timestamp_seconds",
    ] {
        assert!(
            !text.contains(metric),
            "{metric} exposed without data:\n{text}"
        );
    }
}

#[tokio::test]
async fn a_token_the_simulator_does_not_know_is_an_auth_failure() {
    let app = spawn_app().await;
    app.simulator.revoke_access_token(TOKEN);
    let text = app.scrape().await;
    assert_eq!(sample(&text, "withings_token_valid"), Some(0.0));
    app.simulator.add_access_token(TOKEN);
    let text = app.scrape().await;
    assert_eq!(sample(&text, "withings_token_valid"), Some(1.0));
    assert_eq!(sample(&text, "withings_up"), Some(1.0));
}

/// Every failure mode: `/metrics` still answers 200, `withings_up 0`, the token gauge as it
/// was, and the last known vitals with their timestamps.
#[tokio::test]
async fn failures_keep_the_last_known_values() {
    let app = spawn_app_with(AppOptions {
        env: vec![("WITHINGS_TIMEOUT_SECONDS", "1".into())],
        ..AppOptions::default()
    })
    .await;
    app.simulator
        .load_fixture(&fixture("seed_getmeas.json"))
        .unwrap();
    let first = app.scrape().await;
    assert_eq!(sample(&first, "withings_up"), Some(1.0));
    let faults = [
        (
            Fault::Http {
                status: 500,
                body: "<html><body>Internal Server Error</body></html>".into(),
            },
            "http_error",
        ),
        (
            Fault::Http {
                status: 502,
                body: "<html>Bad Gateway</html>".into(),
            },
            "http_error",
        ),
        (
            Fault::Body("<html>not json</html>".into()),
            "invalid_response",
        ),
        (
            Fault::Body(r#"{"status":0,"body":{"measuregrps":[{"grpid":1,"#.into()),
            "invalid_response",
        ),
        (
            Fault::Body(r#"{"status":0,"body":"nope"}"#.into()),
            "invalid_response",
        ),
        (
            Fault::Status {
                status: 293,
                error: "Invalid params".into(),
                wait_seconds: None,
            },
            "293",
        ),
        (
            Fault::Status {
                status: 522,
                error: "Timeout".into(),
                wait_seconds: None,
            },
            "522",
        ),
        (Fault::Delay(Duration::from_secs(3)), "timeout"),
    ];
    for (fault, label) in faults {
        app.simulator.set_fault(Some(fault.clone()));
        let text = app.scrape().await;
        assert_eq!(sample(&text, "withings_up"), Some(0.0), "{fault:?}\n{text}");
        // Neither network nor parameter errors say anything about the token.
        assert_eq!(
            sample(&text, "withings_token_valid"),
            Some(1.0),
            "{fault:?}"
        );
        assert_seed_vitals(&text);
        let series =
            format!("withings_api_requests_total{{action=\"getmeas\",status=\"{label}\"}}");
        assert!(
            sample(&text, &series).is_some_and(|n| n >= 1.0),
            "{fault:?}: no {series}\n{text}"
        );
        assert!(sample(&text, "withings_last_success_timestamp_seconds").is_some());
    }
    app.simulator.set_fault(Some(Fault::ExpiredToken));
    let text = app.scrape().await;
    assert_eq!(sample(&text, "withings_token_valid"), Some(0.0));
    assert_seed_vitals(&text);
    // A network error after that leaves the token gauge as the last answer set it.
    app.simulator.set_fault(Some(Fault::Http {
        status: 503,
        body: String::new(),
    }));
    assert_eq!(
        sample(&app.scrape().await, "withings_token_valid"),
        Some(0.0)
    );
    app.simulator.set_fault(None);
    let text = app.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0));
    assert_eq!(sample(&text, "withings_token_valid"), Some(1.0));
}

#[tokio::test]
async fn connection_refused_gives_up_zero() {
    // A port that was just free: bind, learn it, close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app_with(AppOptions {
        env: vec![("WITHINGS_API_URL", format!("http://{closed}/"))],
        ..AppOptions::default()
    })
    .await;
    let text = app.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "withings_api_requests_total{action=\"getmeas\",status=\"transport_error\"}"
        ),
        Some(1.0)
    );
    assert!(
        !text.contains("withings_token_valid"),
        "unknown token state must not be guessed"
    );
}

// The captured answers against their hand calculation, every type: tests/it/measures.rs.

#[tokio::test]
async fn ambiguous_groups_can_be_excluded() {
    let app = spawn_app_with(AppOptions {
        env: vec![("WITHINGS_INCLUDE_AMBIGUOUS", "false".into())],
        ..AppOptions::default()
    })
    .await;
    app.simulator
        .load_fixture(&fixture("seed_getmeas.json"))
        .unwrap();
    let text = app.scrape().await;
    // The seed's only temperature is attrib 1 (a device that may be someone else's).
    assert!(
        !text.contains("withings_body_temperature_celsius{"),
        "{text}"
    );
    assert_eq!(timestamp(&text, "body_temperature"), None);
    assert_eq!(timestamp(&text, "spo2"), Some(1690375238.0));
    assert_eq!(
        sample(&text, "withings_groups_skipped_total{reason=\"ambiguous\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn inconclusive_groups_and_unknown_types_are_skipped_quietly() {
    let app = spawn_app().await;
    app.simulator
        .set_groups(vec![
            serde_json::json!({"grpid": 1, "attrib": 0, "date": 1000, "category": 1,
                "measures": [{"value": 97, "type": 54, "unit": 0}], "is_inconclusive": false}),
            serde_json::json!({"grpid": 2, "attrib": 10000, "date": 2000, "category": 1,
                "measures": [{"value": 80, "type": 54, "unit": 0}], "is_inconclusive": true}),
            serde_json::json!({"grpid": 3, "attrib": 17, "date": 3000, "category": 1,
                "measures": [{"value": 5, "type": 9999, "unit": 0}, {"value": 7000, "type": 11, "unit": -2}]}),
        ])
        .unwrap();
    // Undocumented attrib values (17, 10000) are not a reason to drop a reading; the
    // inconclusive SpO2 is, even though it is the newest.
    let text = app.scrape().await;
    assert_eq!(vital(&text, "withings_spo2_ratio", &[]), Some(0.97));
    assert_eq!(vital(&text, "withings_heart_rate_bpm", &[]), Some(70.0));
    assert_eq!(
        sample(
            &text,
            "withings_groups_skipped_total{reason=\"inconclusive\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn routes_other_than_metrics_never_call_withings() {
    let app = spawn_app().await;
    let landing = app.get("/").await;
    assert_eq!(landing.status(), 200);
    assert!(
        landing.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(landing.text().await.unwrap().contains("href=\"metrics\""));
    for path in ["/-/healthy", "/-/ready"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    let missing = app.get("/nope").await;
    assert_eq!(missing.status(), 404);
    for path in ["/metrics", "/", "/-/healthy"] {
        let r = app.http.post(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 405, "{path}");
        assert_eq!(r.headers()["allow"], "GET, HEAD");
    }
    assert_eq!(app.simulator.request_count("/measure"), 0);
    // HEAD is a GET without the body (RFC 9110), so that its Content-Length is true: it
    // fetches like a scrape, within the request budget (tests/it/hardening_http.rs).
    let head = app.http.head(app.url("/metrics")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
}

#[tokio::test]
async fn shutdown_lets_a_scrape_in_flight_finish() {
    let app = common::spawn_seeded_app().await;
    app.simulator
        .push_fault(Fault::Delay(Duration::from_millis(300)));
    let url = app.url("/metrics");
    let http = app.http.clone();
    let in_flight = tokio::spawn(async move { http.get(url).send().await?.text().await });
    // Wait until the scrape has reached Withings, then shut down under it.
    let sim = app.simulator.clone();
    assert!(
        common::eventually(Duration::from_secs(5), || sim.request_count("/measure")
            == 1)
        .await
    );
    let address = app.address;
    app.shutdown().await;
    let text = in_flight
        .await
        .unwrap()
        .expect("scrape in flight completes");
    assert_eq!(sample(&text, "withings_up"), Some(1.0));
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still listening"
    );
}
