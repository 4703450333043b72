//! What a scrape costs, against the simulator serving a real account's 2,062-group history
//! (`tests/fixtures/measurement_list.json`). Run with `cargo bench --bench sync`; the
//! figures go in BENCHMARKS.md.
//!
//! The exporter runs as its own process (the release binary), so that its peak memory is its
//! own; the simulator and the load generator share this process. Everything is on loopback
//! and every phase makes a bounded number of requests.

use std::sync::Arc;
use std::time::{Duration, Instant};
mod common;

use common::{ExporterProcess, memory_kib, ms, stats};
use withings_exporter::account::tokens::TokenSource;
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_sim::{Simulator, SimulatorOptions};

const TOKEN: &str = "bench-token";
/// The simulator's `updatetime`: later than every group of the fixture, so steady-state
/// fetches find nothing new, as on a real account between two readings.
const T: i64 = 1_700_000_000;
const MEASTYPES: &str = "9,10,11,54,71";
const FIRST_SYNC_RUNS: usize = 5;
const STEADY_ROUNDS: usize = 50;
const STEADY_PER_ROUND: usize = 20;
const REQUESTS_PER_LEVEL: usize = 1024;
const CONCURRENCY: [usize; 3] = [1, 16, 64];

/// GET /metrics; the time and the body, after checking the fetch succeeded.
async fn scrape(http: &reqwest::Client, url: &str) -> (Duration, String) {
    let started = Instant::now();
    let body = http
        .get(url)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let took = started.elapsed();
    assert!(
        body.contains("\nwithings_up 1\n"),
        "a scrape failed:\n{body}"
    );
    (took, body)
}

/// The request the exporter makes, sent straight to the simulator: the upstream's own cost.
async fn getmeas(
    http: &reqwest::Client,
    sim: &Simulator,
    lastupdate: i64,
    offset: Option<i64>,
) -> (Duration, serde_json::Value, usize) {
    let mut form = vec![
        ("action", "getmeas".to_string()),
        ("meastypes", MEASTYPES.to_string()),
        ("category", "1".to_string()),
        ("lastupdate", lastupdate.to_string()),
    ];
    if let Some(o) = offset {
        form.push(("offset", o.to_string()));
    }
    let started = Instant::now();
    let bytes = http
        .post(sim.url().join("measure").expect("url"))
        .bearer_auth(TOKEN)
        .form(&form)
        .send()
        .await
        .expect("getmeas")
        .bytes()
        .await
        .expect("body");
    let took = started.elapsed();
    let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(value["status"], 0, "{value}");
    (took, value, bytes.len())
}

/// Bytes and pages of a whole sync (lastupdate=0, following `more`/`offset`).
async fn full_history_bytes(http: &reqwest::Client, sim: &Simulator) -> (usize, usize, usize) {
    let (mut bytes, mut pages, mut groups, mut offset) = (0, 0, 0, None);
    loop {
        let (_, body, n) = getmeas(http, sim, 0, offset).await;
        bytes += n;
        pages += 1;
        groups += body["body"]["measuregrps"].as_array().map_or(0, Vec::len);
        if body["body"]["more"].as_i64() != Some(1) {
            return (bytes, pages, groups);
        }
        offset = body["body"]["offset"].as_i64();
    }
}

/// `concurrency` clients, each running its share of `total` rounds of `one` back to back.
async fn load<F, Fut, T>(concurrency: usize, total: usize, one: F) -> Vec<T>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    let per_client = total / concurrency;
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let one = one.clone();
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    samples.push(one().await);
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for c in clients {
        all.extend(c.await.expect("client task"));
    }
    all
}

async fn start_simulator(fixture: Option<&str>) -> Simulator {
    let sim = Simulator::start(SimulatorOptions {
        access_tokens: vec![TOKEN.into()],
        ..SimulatorOptions::default()
    })
    .await
    .expect("simulator");
    if let Some(text) = fixture {
        sim.load_fixture(text).expect("fixture loads");
    }
    sim.set_clock(Some(T));
    sim
}

async fn run() {
    let fixture_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/measurement_list.json"
    );
    let fixture = std::fs::read_to_string(fixture_path).expect("fixture");
    let large = start_simulator(Some(&fixture)).await;
    let empty = start_simulator(None).await;
    // reqwest is built without a crypto provider of its own (see the Withings client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();

    println!("## Upstream answers (simulator, page size 500)\n");
    println!(
        "| account | full history: pages, groups, bytes | full history read directly, median of 5, ms | steady-state request: groups, bytes |"
    );
    println!("|---|---|---|---|");
    for (name, sim) in [("large (2,062 groups)", &large), ("empty", &empty)] {
        let (bytes, pages, groups) = full_history_bytes(&http, sim).await;
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            full_history_bytes(&http, sim).await;
            times.push(started.elapsed());
        }
        times.sort();
        let (_, body, steady_bytes) = getmeas(&http, sim, T - 300, None).await;
        let steady_groups = body["body"]["measuregrps"].as_array().map_or(0, Vec::len);
        println!(
            "| {name} | {pages}, {groups}, {bytes} | {} | {steady_groups}, {steady_bytes} |",
            ms(times[2])
        );
    }

    println!("\n## First full sync (first scrape of a fresh exporter process)\n");
    println!("| account | runs | min ms | median ms | max ms | upstream requests |");
    println!("|---|---|---|---|---|---|");
    for (name, sim) in [("large", &large), ("empty", &empty)] {
        let mut times = Vec::new();
        let mut requests = 0;
        for _ in 0..FIRST_SYNC_RUNS {
            let exporter = ExporterProcess::start(sim.url().as_str(), TOKEN, &[]);
            let before = sim.request_count("/measure");
            times.push(scrape(&http, &exporter.metrics_url).await.0);
            requests = sim.request_count("/measure") - before;
        }
        times.sort();
        println!(
            "| {name} | {FIRST_SYNC_RUNS} | {} | {} | {} | {requests} |",
            ms(times[0]),
            ms(times[FIRST_SYNC_RUNS / 2]),
            ms(times[FIRST_SYNC_RUNS - 1])
        );
    }

    // Two long-lived exporters, warmed up, scraped in alternating rounds so that noise from
    // the shared machine falls on both alike.
    let large_exporter = ExporterProcess::start(large.url().as_str(), TOKEN, &[]);
    let empty_exporter = ExporterProcess::start(empty.url().as_str(), TOKEN, &[]);
    let mut bodies = Vec::new();
    for e in [&large_exporter, &empty_exporter] {
        for _ in 0..20 {
            scrape(&http, &e.metrics_url).await;
        }
        bodies.push(scrape(&http, &e.metrics_url).await.1.len());
    }
    let (mut large_times, mut empty_times) = (Vec::new(), Vec::new());
    let large_before = large.request_count("/measure");
    let empty_before = empty.request_count("/measure");
    for _ in 0..STEADY_ROUNDS {
        for _ in 0..STEADY_PER_ROUND {
            large_times.push(scrape(&http, &large_exporter.metrics_url).await.0);
        }
        for _ in 0..STEADY_PER_ROUND {
            empty_times.push(scrape(&http, &empty_exporter.metrics_url).await.0);
        }
    }
    let scrapes = (STEADY_ROUNDS * STEADY_PER_ROUND) as f64;
    let per_scrape =
        |sim: &Simulator, before: usize| (sim.request_count("/measure") - before) as f64 / scrapes;
    let large_stats = stats(large_times);
    let empty_stats = stats(empty_times);
    println!("\n## Steady-state scrape, concurrency 1 (sequential GET /metrics)\n");
    println!(
        "| account | scrapes | p50 ms | p99 ms | mean ms | upstream requests per scrape | /metrics bytes |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, s, sim, before, body) in [
        ("large", &large_stats, &large, large_before, bodies[0]),
        ("empty", &empty_stats, &empty, empty_before, bodies[1]),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {:.2} | {body} |",
            s.n,
            ms(s.p50),
            ms(s.p99),
            ms(s.mean),
            per_scrape(sim, before)
        );
    }
    println!(
        "\nlarge / empty: p50 {:.3}, mean {:.3} (target: at most 1.10)",
        large_stats.p50.as_secs_f64() / empty_stats.p50.as_secs_f64(),
        large_stats.mean.as_secs_f64() / empty_stats.mean.as_secs_f64()
    );

    println!("\n## /metrics latency under concurrency (large account, coalescing, interval 0)\n");
    println!(
        "| concurrency | scrapes | exporter's upstream requests | scrape p50 ms | scrape p99 ms | direct upstream p50 ms | direct upstream p99 ms | added p50 ms | added p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for concurrency in CONCURRENCY {
        let url = large_exporter.metrics_url.clone();
        let sim = large.clone();
        let client = http.clone();
        let before = large.request_count("/measure");
        // Each client alternates a direct upstream request and a scrape, so that both are
        // sampled under the same load from the rest of the machine.
        let pairs = load(concurrency, REQUESTS_PER_LEVEL, move || {
            let client = client.clone();
            let url = url.clone();
            let sim = sim.clone();
            async move {
                let direct = getmeas(&client, &sim, T - 300, None).await.0;
                (direct, scrape(&client, &url).await.0)
            }
        })
        .await;
        let upstream_requests = large.request_count("/measure") - before - pairs.len();
        let (direct, scraped): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        let (direct, scraped) = (stats(direct), stats(scraped));
        let added = |a: Duration, b: Duration| (a.as_secs_f64() - b.as_secs_f64()) * 1000.0;
        println!(
            "| {concurrency} | {} | {upstream_requests} | {} | {} | {} | {} | {:.3} | {:.3} |",
            scraped.n,
            ms(scraped.p50),
            ms(scraped.p99),
            ms(direct.p50),
            ms(direct.p99),
            added(scraped.p50, direct.p50),
            added(scraped.p99, direct.p99),
        );
    }

    in_process_costs(&large).await;

    println!("\n## Exporter process memory (after all of the above)\n");
    println!("| exporter | peak RSS (VmHWM) KiB | RSS now KiB |");
    println!("|---|---|---|");
    for (name, e) in [
        ("large account", &large_exporter),
        ("empty account", &empty_exporter),
    ] {
        let (hwm, rss) = memory_kib(e.pid());
        println!("| {name} | {hwm} | {rss} |");
    }
}

fn main() {
    common::run_bench(
        run(),
        "loopback only; exporter: the release binary as a child process; simulator and load generator: this process, 2 worker threads",
    );
}

/// Where the time of a scrape goes, without HTTP in front of the exporter: an exporter in
/// this process, synced with the large account.
async fn in_process_costs(sim: &Simulator) {
    const RENDERS: u32 = 20_000;
    // Every scrape that fetches spends a request of the budget (at most 120 a minute).
    const SCRAPES: u32 = 100;
    let config = Config::from_vars([
        ("WITHINGS_API_URL".to_string(), sim.url().to_string()),
        (
            "WITHINGS_LISTEN_ADDRESS".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        (
            "WITHINGS_REQUESTS_PER_MINUTE".to_string(),
            "120".to_string(),
        ),
    ])
    .expect("configuration");
    let exporter =
        Arc::new(App::with_tokens(&config, TokenSource::Static(TOKEN.into())).expect("exporter"));
    assert!(exporter.metrics(None).await.contains("\nwithings_up 1\n"));
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..RENDERS {
        bytes += exporter.metrics_now().len();
    }
    let render = started.elapsed() / RENDERS;
    let started = Instant::now();
    for _ in 0..SCRAPES {
        let text = exporter.metrics(None).await;
        assert!(text.contains("withings_scrape_served_from{served_from=\"new_fetch\"} 1"));
    }
    let scrape = started.elapsed() / SCRAPES;
    println!("\n## In-process costs (large account, no HTTP in front of the exporter)\n");
    println!("| step | mean per call |");
    println!("|---|---|");
    println!(
        "| render the exposition ({} bytes, {RENDERS} calls) | {:.1} µs |",
        bytes / RENDERS as usize,
        render.as_secs_f64() * 1e6
    );
    println!(
        "| scrape: steady-state fetch from the simulator + merge + render ({SCRAPES} calls) | {:.1} µs |",
        scrape.as_secs_f64() * 1e6
    );
}
