//! Load and soak (issue 7): 100,000 scrapes at concurrency 64 against the release binary,
//! which fetches from the simulator. Run with `cargo bench --bench load`; the figures go in
//! BENCHMARKS.md.
//!
//! The exporter is a child process, so that its resident memory is its own; the simulator
//! (serving the seed account) and the load generator share this process and its 2 Tokio
//! worker threads, on the same 2 cores as the exporter. Loopback only, bounded in requests
//! (100,000 per row) and in time (the run is abandoned after `TIME_LIMIT`).

mod common;

use common::{ExporterProcess, cpu_seconds, memory_kib, ms, stats};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use withings_sim::{Simulator, SimulatorOptions};

const TOKEN: &str = "bench-token";
const SCRAPES: usize = 100_000;
/// A longer soak: `LOAD_SCRAPES=1000000 cargo bench --bench load` (still bounded by
/// `TIME_LIMIT`).
const SCRAPES_VARIABLE: &str = "LOAD_SCRAPES";
const CONCURRENCY: usize = 64;
const SEGMENTS: usize = 4;
const WARM_UP: usize = 1_000;
const TIME_LIMIT: Duration = Duration::from_secs(600);

struct Row {
    name: &'static str,
    env: &'static [(&'static str, &'static str)],
}

const ROWS: [Row; 2] = [
    Row {
        name: "coalesced (concurrent scrapes share one fetch)",
        env: &[],
    },
    Row {
        name: "coalesced + WITHINGS_MIN_FETCH_INTERVAL_SECONDS=1",
        env: &[("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "1")],
    },
];

/// What `n` scrapes by `concurrency` clients saw.
struct Outcome {
    latencies: Vec<Duration>,
    /// Non-200 answers and transport errors.
    errors: usize,
    /// 200 answers whose `withings_up` was not 1.
    down: usize,
    elapsed: Duration,
}

async fn hammer(http: &reqwest::Client, url: &str, n: usize) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (http, url, next) = (http.clone(), url.to_owned(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(n / CONCURRENCY + 1);
                let (mut errors, mut down) = (0, 0);
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let t = Instant::now();
                    let answer = match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => r.text().await.ok(),
                        _ => None,
                    };
                    latencies.push(t.elapsed());
                    match answer {
                        None => errors += 1,
                        Some(body) if !body.contains("\nwithings_up 1\n") => down += 1,
                        Some(_) => {}
                    }
                }
                (latencies, errors, down)
            })
        })
        .collect();
    let mut outcome = Outcome {
        latencies: Vec::with_capacity(n),
        errors: 0,
        down: 0,
        elapsed: Duration::ZERO,
    };
    for client in clients {
        let (latencies, errors, down) = client.await.expect("client task");
        outcome.latencies.extend(latencies);
        outcome.errors += errors;
        outcome.down += down;
    }
    outcome.elapsed = started.elapsed();
    outcome
}

async fn run() {
    withings_exporter::withings::install_crypto_provider();
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seed_getmeas.json"
    ))
    .expect("fixture");
    println!(
        "| row | scrapes | wall time s | scrapes/s | p50 ms | p99 ms | max ms | upstream requests | errors | down | VmRSS before KiB | VmRSS after KiB | VmHWM KiB | CPU s exporter | CPU s bench process |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let scrapes = match std::env::var(SCRAPES_VARIABLE) {
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n >= SEGMENTS => n,
            _ => {
                eprintln!(
                    "{SCRAPES_VARIABLE} must be a whole number of at least {SEGMENTS}, not {v:?}"
                );
                std::process::exit(2);
            }
        },
        Err(_) => SCRAPES,
    };
    let mut failed = false;
    let mut series = Vec::new();
    for row in &ROWS {
        let sim = Simulator::start(SimulatorOptions {
            access_tokens: vec![TOKEN.into()],
            ..SimulatorOptions::default()
        })
        .await
        .expect("simulator");
        sim.load_fixture(&seed).expect("fixture loads");
        let exporter = ExporterProcess::start(sim.url().as_str(), TOKEN, row.env);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .build()
            .expect("client");
        // Warm up: the first full sync, connections, allocator arenas.
        let warm = hammer(&http, &exporter.metrics_url, WARM_UP).await;
        assert_eq!(warm.errors + warm.down, 0, "the warm-up failed");
        let (_, rss_before) = memory_kib(exporter.pid());
        let upstream_before = sim.request_count("/measure");
        let child = exporter.pid().to_string();
        let cpu_before = (cpu_seconds(&child), cpu_seconds("self"));
        // In quarters, to see whether resident memory levels off or keeps growing.
        let deadline = Instant::now() + TIME_LIMIT;
        let mut outcome = Outcome {
            latencies: Vec::with_capacity(scrapes),
            errors: 0,
            down: 0,
            elapsed: Duration::ZERO,
        };
        let mut rss_series = Vec::new();
        for _ in 0..SEGMENTS {
            let left = deadline.saturating_duration_since(Instant::now());
            let part = tokio::time::timeout(
                left,
                hammer(&http, &exporter.metrics_url, scrapes / SEGMENTS),
            )
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: {scrapes} scrapes took longer than {TIME_LIMIT:?}; abandoned",
                    row.name
                )
            });
            outcome.latencies.extend(part.latencies);
            outcome.errors += part.errors;
            outcome.down += part.down;
            outcome.elapsed += part.elapsed;
            rss_series.push(memory_kib(exporter.pid()).1);
        }
        let upstream = sim.request_count("/measure") - upstream_before;
        let cpu = (
            cpu_seconds(&child) - cpu_before.0,
            cpu_seconds("self") - cpu_before.1,
        );
        let (hwm, rss_after) = memory_kib(exporter.pid());
        let (errors, down, elapsed) = (outcome.errors, outcome.down, outcome.elapsed);
        let max = outcome.latencies.iter().max().copied().unwrap_or_default();
        let s = stats(outcome.latencies);
        println!(
            "| {} | {} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            row.name,
            s.n,
            elapsed.as_secs_f64(),
            s.n as f64 / elapsed.as_secs_f64(),
            ms(s.p50),
            ms(s.p99),
            ms(max),
            upstream,
            errors,
            down,
            rss_before,
            rss_after,
            hwm,
            cpu.0,
            cpu.1
        );
        series.push(format!(
            "{}: VmRSS KiB before and after each quarter: {rss_before} {}",
            row.name,
            rss_series
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ));
        failed |= errors > 0 || down > 0;
        sim.stop();
    }
    println!();
    for line in series {
        println!("{line}");
    }
    // Errors are a failure of the exporter, not a figure: say so in the exit status.
    assert!(
        !failed,
        "some scrapes failed (see the errors and down columns)"
    );
}

fn main() {
    common::run_bench(
        run(),
        "loopback only; exporter: the release binary as a child process; simulator and load generator (reqwest): this process, 2 worker threads, on the same 2 cores",
    );
}
