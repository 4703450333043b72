//! The golden expositions of the demo household (issue 11): the simulator's household and an
//! exporter with every collector on, both pinned at the same instant, so that each account's
//! `/probe` and the application's `/metrics` are the same bytes on every run. Set
//! `UPDATE_GOLDEN=1` to rewrite `tests/golden/household_*.prom` after a deliberate change,
//! and review the diff.

mod common;

use common::prometheus::assert_promtool_accepts;
use std::sync::Arc;
use tokio::sync::oneshot;
use withings_exporter::app::App;
use withings_exporter::clock::Clock;
use withings_exporter::config::Config;
use withings_exporter::http::server::Application;
use withings_exporter::simulator::HOUSEHOLD;
use withings_exporter::simulator::household::Household;

/// 2026-06-01T10:05:30Z: noon in Berlin, the household's time zone, so that last night has
/// ended, the morning's weigh-in is done and today's activity row is partly filled.
const AT: i64 = 1_780_308_330;

/// The only values of these expositions that a pinned clock cannot fix: the real time a
/// scrape took (`withings_scrape_duration_seconds`) and the count of requests the budget
/// saw in the last real minute (`withings_requests_in_window`: it follows the monotonic
/// clock, so a test slower than a minute would see fewer). `process_*` (CPU, memory, file
/// descriptors of this test process) are left out altogether.
const VOLATILE: [&str; 2] = [
    "withings_scrape_duration_seconds ",
    "withings_requests_in_window ",
];

/// `(file name, exposition)`: one per household account's probe, then `/metrics`.
async fn household_expositions(exporter_clock: Clock) -> Vec<(String, String)> {
    let household = Household::start_at(AT).await.expect("household starts");
    let vars = [
        ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0"),
        ("WITHINGS_COLLECTORS", "measures,activity,sleep,devices"),
        ("WITHINGS_TIMEOUT_SECONDS", "5"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let config = household.config(Config::from_vars(vars).expect("valid configuration"));
    let app = Arc::new(App::from_config_with_clock(&config, exporter_clock).expect("app"));
    let server = Application::bind(config.server.listen_address, Arc::clone(&app))
        .await
        .expect("bind");
    let address = server.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let http = common::http();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let response = http
                .get(format!("http://{address}{path}"))
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 200, "{path}");
            response.text().await.expect("body")
        }
    };
    let mut out = Vec::new();
    for (name, _, _) in HOUSEHOLD {
        let text = get(format!("/probe?account={name}")).await;
        assert_eq!(
            common::sample(&text, "withings_up"),
            Some(1.0),
            "{name}\n{text}"
        );
        out.push((format!("household_{name}.prom"), text));
    }
    out.push((
        "household_metrics.prom".into(),
        get("/metrics".into()).await,
    ));
    let _ = stop.send(());
    served.await.expect("server task").expect("server result");
    out
}

#[tokio::test]
async fn the_demo_household_with_every_collector_matches_the_golden_files() {
    for (file, text) in household_expositions(Clock::starting_at_unix(AT)).await {
        common::assert_golden_normalized(&common::normalize_volatile(&text, &VOLATILE), &file);
    }
}

/// The goldens depend on the exporter's clock, not just on the simulator's: an exporter on
/// the real clock, against the same pinned household, gives other bytes (its last-success
/// time, and the collectors' 30-day look-back reaching past the household's history).
#[tokio::test]
async fn an_exporter_on_the_real_clock_does_not_match_them() {
    let texts = household_expositions(Clock::default()).await;
    let (file, text) = &texts[0];
    let normalized = common::normalize_volatile(text, &VOLATILE);
    let golden = std::fs::read_to_string(common::fixture_path(&format!("../golden/{file}")))
        .expect("golden file");
    assert_ne!(
        normalized, golden,
        "{file} does not depend on the exporter's clock"
    );
}

/// The "dated more than a day ahead" filter follows the exporter's clock too: pinned three
/// days before the household's instant, the last two mornings' weigh-ins and every reading
/// of the last hours are in its future (though long past for the system clock), and the
/// weigh-in of three mornings before is the latest.
#[tokio::test]
async fn what_is_in_the_future_is_judged_by_the_exporters_clock() {
    let texts = household_expositions(Clock::starting_at_unix(AT - 3 * 86_400)).await;
    let (file, alex) = &texts[0];
    assert_eq!(file, "household_alex.prom");
    let future = common::sample_with(
        alex,
        "withings_groups_skipped_total",
        &[("reason", "future")],
    );
    assert!(future.is_some_and(|n| n > 0.0), "{alex}");
    // 2026-05-30T05:10:00Z: 07:10 in Berlin.
    assert_eq!(
        common::sample_with(
            alex,
            "withings_measurement_timestamp_seconds",
            &[("measurement", "weight")]
        ),
        Some(1_780_117_800.0),
        "{alex}"
    );
    assert!(!alex.contains("withings_spo2_ratio{"), "{alex}");
    assert!(
        !alex.contains("withings_body_temperature_celsius{"),
        "{alex}"
    );
}

/// promtool sees the expositions themselves, before normalisation puts its markers in: the
/// same bytes as the goldens but for the volatile values.
#[tokio::test]
#[ignore = "needs promtool (Debian package prometheus)"]
async fn promtool_accepts_every_golden_exposition() {
    for (_file, text) in household_expositions(Clock::starting_at_unix(AT)).await {
        assert_promtool_accepts(&text);
    }
}
