//! What `withings-exporter backfill` costs: the real 2,062-group history
//! (`tests/fixtures/measurement_list.json`) and a 100,000-group synthetic one
//! (`simulator::history`), backfilled by the binary as a child process against the simulator
//! in this process. Wall time, peak RSS of the child (its VmHWM, sampled every 5 ms until it
//! exits) and the `getmeas` requests spent. Run with `cargo bench --bench backfill`; the
//! figures go in BENCHMARKS.md.
//!
//! The request budget is Withings' own limit (WITHINGS_REQUESTS_PER_MINUTE=120, the most the
//! exporter accepts): a history of more than 120 pages waits for the budget, as it would
//! against Withings, and the wall time says so.

mod common;

use common::run_bench;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use withings_exporter::simulator::history::{self, HistorySpec};
use withings_exporter::simulator::{Simulator, SimulatorOptions};

const TOKEN: &str = "bench-token";
const YEAR: i64 = 365 * 86_400;

/// Runs the binary to completion; wall time and peak RSS in KiB.
// Reaped by `waitpid` after its stderr was handed to a reader thread.
#[allow(clippy::zombie_processes)]
fn backfill(api_url: &str, output: &std::path::Path) -> (Duration, i64, String) {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_withings-exporter"))
        .args(["backfill", "--account", "default", "--output"])
        .arg(output)
        .env_clear()
        .env("WITHINGS_API_URL", api_url)
        .env("WITHINGS_ACCESS_TOKEN", TOKEN)
        .env("WITHINGS_REQUESTS_PER_MINUTE", "120")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the exporter binary runs");
    let pid = child.id() as libc::pid_t;
    // VmHWM of the child's own address space, sampled until it is reaped: `ru_maxrss` would
    // include this process's memory at the fork (the simulator's whole history).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = std::sync::Arc::clone(&done);
        let pid = child.id();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(common::memory_kib(pid).0);
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let mut stderr = child.stderr.expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let mut status = 0;
    // SAFETY: `pid` is our own child, not yet reaped (std's Child was consumed without a wait).
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_kib = sampler.join().unwrap_or(0);
    assert_eq!(reaped, pid, "wait4");
    let text = reader.join().unwrap_or_default();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "backfill failed: {text}"
    );
    (took, peak_kib as i64, text)
}

async fn case(name: &str, groups: Vec<serde_json::Value>, page_size: usize) {
    let simulator = Simulator::start(SimulatorOptions {
        access_tokens: vec![TOKEN.into()],
        page_size,
        ..SimulatorOptions::default()
    })
    .await
    .expect("simulator");
    let count = groups.len();
    simulator.set_groups(groups).expect("groups");
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("history.om");
    let url = simulator.url().to_string();
    let (took, peak_kib, stderr) = tokio::task::spawn_blocking(move || backfill(&url, &output))
        .await
        .expect("bench thread");
    let requests = simulator.request_count("/measure");
    let file = std::fs::metadata(dir.path().join("history.om")).map_or(0, |m| m.len());
    println!(
        "\n{name}: {count} groups served, page size {page_size}\n  wall {:.2} s, peak RSS {:.1} MiB, {requests} getmeas requests (at least {} min of budget waits at 120 a minute), file {:.1} MiB\n  {}",
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
            case("real history (measurement_list.json)", real, 500).await;
            let now = withings_exporter::account::unix_now();
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
                )
                .await;
            }
        },
        "the simulator and this harness in one process, the backfill in its own; 2 shared cores",
    );
}
