//! What `withings-exporter backfill` costs: the real 2,062-group history
//! (`tests/fixtures/measurement_list.json`) and a 100,000-group synthetic one
//! (`withings_sim::history`), backfilled by the binary as a child process against the simulator
//! in this process, and the real one with ten years of activity and sleep beside it. Wall
//! time, peak RSS of the child (its VmHWM, sampled every 5 ms until it exits) and the
//! requests spent. Run with `cargo bench --bench backfill`; the
//! figures go in BENCHMARKS.md.
//!
//! The request budget is Withings' own limit (WITHINGS_REQUESTS_PER_MINUTE=120, the most the
//! exporter accepts): a history of more than 120 pages waits for the budget, as it would
//! against Withings, and the wall time says so.

mod common;

use common::run_bench;
use std::time::Duration;
use withings_sim::data::UserExtras;
use withings_sim::history::{self, HistorySpec};
use withings_sim::{Simulator, SimulatorOptions};

const TOKEN: &str = "bench-token";
const YEAR: i64 = 365 * 86_400;

/// Runs the binary to completion; wall time and peak RSS in KiB.
fn backfill(api_url: &str, output: &std::path::Path, collectors: &str) -> (Duration, i64, String) {
    let output = output.display().to_string();
    let (took, peak_kib, text) = common::run_backfill(
        api_url,
        TOKEN,
        &[("WITHINGS_COLLECTORS", collectors)],
        &["--output", &output],
    );
    (took, peak_kib as i64, text)
}

/// Ten years of days from two sources (a watch and a phone) and of nights, in the shapes
/// getactivity and getsummary give them, the way `days` back from `now`.
fn days_and_nights(now: i64, days: i64) -> UserExtras {
    let mut extras = UserExtras::default();
    let first = now - days * 86_400;
    for d in 0..days {
        let noon = first + d * 86_400 + 43_200;
        let date = jiff::Timestamp::from_second(noon)
            .expect("in range")
            .strftime("%Y-%m-%d")
            .to_string();
        for (source, model, hr) in [
            (Some("watch"), "ScanWatch 2", true),
            (None, "Apple HealthKit", false),
        ] {
            extras.activities.push(serde_json::json!({
                "date": date, "timezone": "Europe/Paris", "hash_deviceid": source, "model": model,
                "modified": noon + 50_000, "steps": 4_000 + d % 9_000, "distance": 3_000.5 + (d % 700) as f64,
                "elevation": d % 20, "soft": 3_000, "moderate": 1_200, "intense": d % 900,
                "calories": 250.25, "totalcalories": 2_100.5,
                "hr_average": if hr { 60 + d % 30 } else { 0 }, "hr_min": if hr { 48 } else { 0 }, "hr_max": if hr { 150 } else { 0 },
                "hr_zone_0": 30_000, "hr_zone_1": 2_000, "hr_zone_2": 500, "hr_zone_3": d % 100,
            }));
        }
        extras.sleep.push(serde_json::json!({
            "date": date, "startdate": noon - 50_000, "enddate": noon - 22_000, "modified": noon,
            "hash_deviceid": "analyzer", "model": 32, "model_id": 63,
            "data": {"total_timeinbed": 28_000, "total_sleep_time": 25_000 + d % 1_000,
                "lightsleepduration": 12_000, "deepsleepduration": 7_000, "remsleepduration": 6_000,
                "wakeupcount": d % 5, "hr_average": 55, "rr_average": 14, "snoring": d % 600,
                "apnea_hypopnea_index": 2.5},
        }));
    }
    extras
}

async fn case(
    name: &str,
    groups: Vec<serde_json::Value>,
    page_size: usize,
    extras: Option<UserExtras>,
) {
    let simulator = Simulator::start(SimulatorOptions {
        access_tokens: vec![TOKEN.into()],
        page_size,
        ..SimulatorOptions::default()
    })
    .await
    .expect("simulator");
    let count = groups.len();
    simulator.set_groups(groups).expect("groups");
    let collectors = if let Some(extras) = extras {
        simulator.set_extras(extras).expect("extras");
        "measures,activity,sleep"
    } else {
        "measures"
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("history.om");
    let url = simulator.url().to_string();
    let (took, peak_kib, stderr) =
        tokio::task::spawn_blocking(move || backfill(&url, &output, collectors))
            .await
            .expect("bench thread");
    let requests = simulator.request_count("/measure")
        + simulator.request_count("/v2/measure")
        + simulator.request_count("/v2/sleep");
    let file = std::fs::metadata(dir.path().join("history.om")).map_or(0, |m| m.len());
    println!(
        "\n{name}: {count} groups served, page size {page_size}\n  wall {:.2} s, peak RSS {:.1} MiB, {requests} requests (at least {} min of budget waits at 120 a minute), file {:.1} MiB\n  {}",
        took.as_secs_f64(),
        peak_kib as f64 / 1024.0,
        requests.div_ceil(120).saturating_sub(1),
        file as f64 / 1_048_576.0,
        stderr
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(400)
            .collect::<String>()
    );
}

fn main() {
    run_bench(
        async {
            let fixture = std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/measurement_list.json"
            ))
            .expect("fixture");
            let real: Vec<serde_json::Value> = serde_json::from_str(&fixture).expect("fixture");
            case(
                "real history (measurement_list.json)",
                real.clone(),
                500,
                None,
            )
            .await;
            let now = withings_exporter::account::unix_now();
            case(
                "real history, and 10 years of activity (2 sources) and sleep",
                real,
                500,
                Some(days_and_nights(now, 3_650)),
            )
            .await;
            for groups in [100_000] {
                let synthetic = history::generate(HistorySpec {
                    groups,
                    from: now - 10 * YEAR,
                    to: now - 3_600,
                    grpid_base: 1,
                    seed: 7,
                });
                case(
                    &format!("synthetic {groups}-group history over 10 years"),
                    synthetic,
                    500,
                    None,
                )
                .await;
            }
        },
        "the simulator and this harness in one process, the backfill in its own; 2 shared cores",
    );
}
