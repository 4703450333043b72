//! A scrape from state against an empty answer (issue 18): `wrk` at 64 connections against
//! the release binary, `/-/healthy` beside `/metrics` (one account, `WITHINGS_ACCESS_TOKEN`)
//! and beside `/probe?account=seed` (a token directory of that one account), every scrape
//! served from state (`WITHINGS_MIN_FETCH_INTERVAL_SECONDS` of a day after the first fetch).
//!
//! ```sh
//! apt-get install -y wrk
//! cargo bench --bench scrape
//! # the same, beside another build of the exporter (an older commit's, say):
//! SCRAPE_BASELINE=/tmp/base/target/release/withings-exporter cargo bench --bench scrape
//! ```
//!
//! `SCRAPE_SECONDS` (3) is the length of each `wrk` run, `SCRAPE_ROUNDS` (4) how many times
//! each build is measured on all four URLs.
//!
//! The simulator (the seed's readings) runs in this process and is asked once per exporter;
//! `wrk` and the exporter share the machine's cores, so the ratio to `/-/healthy` of the same
//! process in the same run is the figure to read, not the absolute rates.

mod common;

use common::{ExporterProcess, run_bench};
use std::process::Command;
use withings_exporter::account::token_store::{StoredTokens, TokenStore};
use withings_exporter::secret::Secret;
use withings_sim::{Simulator, SimulatorOptions};

const TOKEN: &str = "bench-token";
const ACCOUNT: &str = "seed";
/// Every scrape after the first is served from state.
const FROM_STATE: (&str, &str) = ("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "86400");
const CONNECTIONS: &str = "64";
const THREADS: &str = "2";
const SECONDS_VARIABLE: &str = "SCRAPE_SECONDS";
const DEFAULT_SECONDS: u64 = 3;
/// Rounds alternate the builds, so that a busy spell on the machine falls on both alike;
/// the median ratio of the rounds is the figure to read.
const ROUNDS_VARIABLE: &str = "SCRAPE_ROUNDS";
const DEFAULT_ROUNDS: u64 = 4;

/// One build of the exporter, running twice: one account on `/metrics`, and a token
/// directory of that account on `/probe`.
struct Build {
    label: String,
    single: ExporterProcess,
    directory: ExporterProcess,
    /// Requests per second by URL, one entry per round.
    rates: Vec<[f64; 4]>,
}

fn base(url: &str) -> String {
    url.trim_end_matches('"')
        .trim_end_matches("/metrics")
        .to_owned()
}

/// The URLs a build is measured on, in the order of the table.
fn urls(build: &Build) -> [String; 4] {
    let single = base(&build.single.metrics_url);
    let directory = base(&build.directory.metrics_url);
    [
        format!("{single}/-/healthy"),
        format!("{single}/metrics"),
        format!("{directory}/-/healthy"),
        format!("{directory}/probe?account={ACCOUNT}"),
    ]
}

/// `wrk` on `url`; its requests per second, or the reason there is none.
fn wrk(url: &str, seconds: u64) -> Result<f64, String> {
    let output = Command::new("wrk")
        .args(["-c", CONNECTIONS, "-t", THREADS, "-d"])
        .arg(format!("{seconds}s"))
        .arg(url)
        .output()
        .map_err(|e| format!("wrk did not run: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("wrk failed on {url}: {text}"));
    }
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!("errors while measuring {url}:\n{text}"));
    }
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output for {url}:\n{text}"))
}

async fn body(http: &reqwest::Client, url: &str) -> String {
    let answer = http.get(url).send().await.expect("the exporter answers");
    assert_eq!(answer.status(), 200, "{url}");
    answer.text().await.expect("a body")
}

fn start(label: &str, program: &str, sim: &Simulator, dir: &std::path::Path) -> Build {
    let api = sim.url();
    let (id, secret) = sim.client_credentials();
    let dir_text = dir.display().to_string();
    let quiet = ("RUST_LOG", "warn,withings_exporter=info");
    let single = ExporterProcess::start_program(
        program,
        api.as_str(),
        &[("WITHINGS_ACCESS_TOKEN", TOKEN), FROM_STATE, quiet],
    );
    let directory = ExporterProcess::start_program(
        program,
        api.as_str(),
        &[
            ("WITHINGS_TOKEN_DIR", &dir_text),
            ("WITHINGS_CLIENT_ID", &id),
            ("WITHINGS_CLIENT_SECRET", &secret),
            FROM_STATE,
            quiet,
        ],
    );
    Build {
        label: label.to_owned(),
        single,
        directory,
        rates: Vec::new(),
    }
}

async fn run() {
    withings_exporter::withings::install_crypto_provider();
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("this bench drives the exporter with wrk: install it (apt-get install -y wrk)");
        std::process::exit(2);
    }
    let seconds = positive(SECONDS_VARIABLE, DEFAULT_SECONDS);
    let rounds = positive(ROUNDS_VARIABLE, DEFAULT_ROUNDS);
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seed_getmeas.json"
    ))
    .expect("fixture");
    let sim = Simulator::start(SimulatorOptions {
        access_tokens: vec![TOKEN.into()],
        ..SimulatorOptions::default()
    })
    .await
    .expect("simulator");
    sim.load_fixture(&seed).expect("fixture loads");
    let dir = tempfile::tempdir().expect("token directory");
    let (access, refresh, expires_in) = sim.issue_token_pair();
    let now = withings_exporter::account::unix_now();
    TokenStore::new(dir.path().join(format!("{ACCOUNT}.json")))
        .save(&StoredTokens {
            access_token: Secret::new(access),
            refresh_token: Secret::new(refresh),
            expires_at: now + expires_in,
            obtained_at: Some(now),
            userid: None,
            scope: Some("user.metrics".into()),
        })
        .expect("token file");

    let mut builds = vec![start(
        "this build",
        env!("CARGO_BIN_EXE_withings-exporter"),
        &sim,
        dir.path(),
    )];
    if let Ok(program) = std::env::var("SCRAPE_BASELINE") {
        builds.push(start(
            &format!("baseline {program}"),
            &program,
            &sim,
            dir.path(),
        ));
    }
    let http = reqwest::Client::new();
    for build in &builds {
        // The first scrape fetches; every later one is served from state.
        let [_, metrics, _, probe] = urls(build);
        for url in [&metrics, &probe] {
            let text = body(&http, url).await;
            assert!(text.contains("\nwithings_up 1\n"), "{url}: {text}");
            let again = body(&http, url).await;
            assert!(
                again.contains("withings_scrape_served_from{served_from=\"recent_fetch\"} 1"),
                "{url} is not served from state: {again}"
            );
            println!("{}: {url} answers {} bytes", build.label, again.len());
        }
    }
    for _ in 0..rounds {
        for build in &mut builds {
            let mut rates = [0.0; 4];
            for (rate, url) in rates.iter_mut().zip(urls(build)) {
                *rate = match wrk(&url, seconds) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("{e}");
                        std::process::exit(1);
                    }
                };
            }
            build.rates.push(rates);
        }
    }
    println!(
        "\nwrk -c{CONNECTIONS} -t{THREADS} -d{seconds}s, {rounds} rounds; requests/s (ratio to /-/healthy of the same process in the same round)\n"
    );
    println!(
        "| build | round | single: /-/healthy | /metrics | directory: /-/healthy | /probe?account={ACCOUNT} |"
    );
    println!("|---|---|---|---|---|---|");
    for build in &builds {
        for (round, r) in build.rates.iter().enumerate() {
            println!(
                "| {} | {} | {:.0} | {:.0} ({:.2}x) | {:.0} | {:.0} ({:.2}x) |",
                build.label,
                round + 1,
                r[0],
                r[1],
                r[1] / r[0],
                r[2],
                r[3],
                r[3] / r[2],
            );
        }
    }
    println!();
    for build in &builds {
        let median = |scrape: usize, healthy: usize| {
            let mut ratios: Vec<f64> = build.rates.iter().map(|r| r[scrape] / r[healthy]).collect();
            ratios.sort_by(f64::total_cmp);
            let n = ratios.len();
            (ratios[(n - 1) / 2] + ratios[n / 2]) / 2.0
        };
        println!(
            "{}: median ratio to /-/healthy: /metrics {:.2}x, /probe {:.2}x",
            build.label,
            median(1, 0),
            median(3, 2)
        );
    }
    drop(builds);
    sim.stop();
}

/// A whole number above 0 from `variable`, or `default` when it is unset.
fn positive(variable: &str, default: u64) -> u64 {
    match std::env::var(variable) {
        Ok(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("{variable} must be a whole number above 0, not {v:?}");
                std::process::exit(2);
            }
        },
        Err(_) => default,
    }
}

fn main() {
    run_bench(
        run(),
        "exporters: release binary, child processes; simulator: this process; load: wrk, 64 connections, 2 threads",
    );
}
