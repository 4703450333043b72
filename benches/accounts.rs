//! A thousand accounts (issue 10). Run with `cargo bench --bench accounts`; the figures go in
//! BENCHMARKS.md.
//!
//! Part 1, the release binary as a child process (so that its resident memory is its own),
//! serving a token directory of 1,000 accounts whose simulated users each have a reading of
//! all five vitals: memory after start and after 10,000 probes, probe latency at
//! concurrency 16, `/sd` answer time, and the upstream requests the flood caused.
//!
//! Part 2, in-process with the exporter's test clock stepped a second at a time (instead of
//! waiting ten real minutes): how long until every account has been fetched once at a
//! budget of 100 a minute, with Prometheus probing every account once a minute.
//!
//! Loopback only; bounded in requests and in time.

mod common;

use common::{ExporterProcess, memory_kib, ms, stats};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use withings_exporter::account::token_store::{StoredTokens, TokenStore};
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_exporter::secret::Secret;
use withings_sim::{Simulator, SimulatorOptions};

const ACCOUNTS: usize = 1_000;
const PROBES: usize = 10_000;
const CONCURRENCY: usize = 16;
const SD_REQUESTS: usize = 200;
const LANDING_REQUESTS: usize = 50;
const BUDGET: usize = 100;
const TIME_LIMIT: Duration = Duration::from_secs(600);

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A blood-pressure group (systolic, diastolic, pulse), an SpO2 and a temperature reading.
fn five_vitals(i: i64) -> Vec<Value> {
    let date = unix_now() - 3_600;
    let group = |grpid: i64, model: &str, measures: Value| {
        json!({
            "grpid": grpid, "attrib": 0, "date": date, "created": date, "modified": date,
            "category": 1, "deviceid": format!("device-{i}-{model}"),
            "hash_deviceid": format!("device-{i}-{model}"), "model": model, "modelid": 44,
            "measures": measures,
        })
    };
    vec![
        group(
            i * 10,
            "BPM Connect",
            json!([
                {"type": 10, "value": 100 + i % 50, "unit": 0},
                {"type": 9, "value": 60 + i % 30, "unit": 0},
                {"type": 11, "value": 55 + i % 40, "unit": 0},
            ]),
        ),
        group(
            i * 10 + 1,
            "ScanWatch 2",
            json!([{"type": 54, "value": 90 + i % 10, "unit": 0}]),
        ),
        group(
            i * 10 + 2,
            "Thermo",
            json!([{"type": 71, "value": 360 + i % 10, "unit": -1}]),
        ),
    ]
}

/// The simulator's users and one token file each; returns access token -> user id.
fn household(sim: &Simulator, dir: &Path) -> HashMap<String, String> {
    let mut users = HashMap::new();
    for i in 0..ACCOUNTS {
        let userid = format!("{}", 100_000 + i);
        sim.set_user_groups(&userid, five_vitals(i as i64 + 1))
            .expect("groups");
        let (access, refresh, expires_in) = sim.issue_token_pair_for(&userid);
        let now = unix_now();
        TokenStore::new(dir.join(format!("p{i:04}.json")))
            .save(&StoredTokens {
                access_token: Secret::new(access.clone()),
                refresh_token: Secret::new(refresh),
                expires_at: now + expires_in,
                obtained_at: Some(now),
                userid: Some(userid.clone()),
                scope: Some("user.metrics".into()),
            })
            .expect("token file");
        users.insert(access, userid);
    }
    users
}

fn served_from(text: &str) -> &str {
    text.lines()
        .find_map(|l| l.strip_prefix("withings_scrape_served_from{served_from=\""))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("none")
}

struct Probed {
    latencies: Vec<Duration>,
    from_state: Vec<Duration>,
    sources: HashMap<String, usize>,
    errors: usize,
}

async fn probe_flood(http: &reqwest::Client, base: &str) -> Probed {
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (http, base, next) = (http.clone(), base.to_owned(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= PROBES {
                        break;
                    }
                    let url = format!("{base}/probe?account=p{:04}", n % ACCOUNTS);
                    let t = Instant::now();
                    let body = match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => r.text().await.ok(),
                        _ => None,
                    };
                    out.push((t.elapsed(), body.map(|b| served_from(&b).to_owned())));
                }
                out
            })
        })
        .collect();
    let mut probed = Probed {
        latencies: Vec::with_capacity(PROBES),
        from_state: Vec::new(),
        sources: HashMap::new(),
        errors: 0,
    };
    for client in clients {
        for (latency, source) in client.await.expect("client task") {
            probed.latencies.push(latency);
            match source {
                None => probed.errors += 1,
                Some(source) => {
                    if source != "new_fetch" && source != "shared_fetch" {
                        probed.from_state.push(latency);
                    }
                    *probed.sources.entry(source).or_default() += 1;
                }
            }
        }
    }
    probed
}

async fn child_process(sim: &Simulator, dir: &Path) {
    let (id, secret) = sim.client_credentials();
    let dir_text = dir.display().to_string();
    let started = Instant::now();
    let exporter = ExporterProcess::start_with(
        sim.url().as_str(),
        &[
            ("WITHINGS_TOKEN_DIR", &dir_text),
            ("WITHINGS_CLIENT_ID", &id),
            ("WITHINGS_CLIENT_SECRET", &secret),
            ("RUST_LOG", "warn,withings_exporter=info"),
        ],
    );
    let base = exporter
        .metrics_url
        .trim_end_matches('"')
        .trim_end_matches("/metrics")
        .to_owned();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client");
    let sd = http
        .get(format!("{base}/sd"))
        .send()
        .await
        .expect("/sd")
        .text()
        .await
        .expect("/sd body");
    let listed: Vec<Value> = serde_json::from_str(&sd).expect("/sd is JSON");
    assert_eq!(listed.len(), ACCOUNTS, "every account file is an account");
    let start_time = started.elapsed();
    let (_, rss_start) = memory_kib(exporter.pid());

    let mut sd_times = Vec::with_capacity(SD_REQUESTS);
    for _ in 0..SD_REQUESTS {
        let t = Instant::now();
        let body = http
            .get(format!("{base}/sd"))
            .send()
            .await
            .expect("/sd")
            .bytes()
            .await
            .expect("/sd body");
        sd_times.push(t.elapsed());
        assert!(body.len() > 100 * ACCOUNTS / 2);
    }
    let sd_bytes = sd.len();

    sim.clear_requests();
    let flood_started = Instant::now();
    let probed = tokio::time::timeout(TIME_LIMIT, probe_flood(&http, &base))
        .await
        .expect("10,000 probes within the time limit");
    let flood_time = flood_started.elapsed();
    let (hwm, rss_after) = memory_kib(exporter.pid());
    let upstream = sim.request_count("/measure");
    let max_minute = sim.max_requests_in_any_minute();
    // The household landing page of a practice: every account's latest readings, from
    // state (the probes above fetched them), beside /sd.
    let mut landing_times = Vec::with_capacity(LANDING_REQUESTS);
    let mut landing_bytes = 0;
    for _ in 0..LANDING_REQUESTS {
        let t = Instant::now();
        let response = http.get(format!("{base}/")).send().await.expect("/");
        assert!(
            response.status().is_success(),
            "/ answered {}",
            response.status()
        );
        let body = response.bytes().await.expect("/ body");
        landing_times.push(t.elapsed());
        landing_bytes = body.len();
    }
    assert_eq!(
        sim.request_count("/measure"),
        upstream,
        "the landing page asked Withings"
    );

    let all = stats(probed.latencies);
    let from_state_n = probed.from_state.len();
    let state = stats(probed.from_state);
    let sds = stats(sd_times);
    println!("## Part 1: the release binary, {ACCOUNTS} accounts\n");
    println!("| figure | value |\n|---|---|");
    println!(
        "| start until /sd lists {ACCOUNTS} accounts | {:.0} ms |",
        start_time.as_secs_f64() * 1000.0
    );
    println!(
        "| VmRSS after start | {rss_start} KiB ({:.1} MiB) |",
        rss_start as f64 / 1024.0
    );
    println!(
        "| VmRSS after {PROBES} probes | {rss_after} KiB ({:.1} MiB); VmHWM {hwm} KiB |",
        rss_after as f64 / 1024.0
    );
    println!(
        "| probes: wall time, rate | {:.2} s, {:.0}/s at concurrency {CONCURRENCY} |",
        flood_time.as_secs_f64(),
        all.n as f64 / flood_time.as_secs_f64()
    );
    println!(
        "| probe latency, all {} | p50 {} ms, p99 {} ms |",
        all.n,
        ms(all.p50),
        ms(all.p99)
    );
    println!(
        "| probe latency, the {from_state_n} answered from state (served_from budget/recent_fetch) | p50 {} ms, p99 {} ms |",
        ms(state.p50),
        ms(state.p99)
    );
    let mut sources: Vec<_> = probed.sources.into_iter().collect();
    sources.sort();
    println!(
        "| probes by served_from | {sources:?}; errors {} |",
        probed.errors
    );
    println!(
        "| /sd ({sd_bytes} bytes), {} requests | p50 {} ms, p99 {} ms |",
        sds.n,
        ms(sds.p50),
        ms(sds.p99)
    );
    let landing = stats(landing_times);
    println!(
        "| / (the landing page, {landing_bytes} bytes), {} requests | p50 {} ms, p99 {} ms |",
        landing.n,
        ms(landing.p50),
        ms(landing.p99)
    );
    println!(
        "| upstream requests during the probes | {upstream}; most in any 60 s: {max_minute} (budget {BUDGET}) |"
    );
    assert_eq!(probed.errors, 0, "some probes failed");
    assert!(
        max_minute <= BUDGET,
        "the budget was exceeded: {max_minute}"
    );
}

/// Part 2: the test clock stepped a second at a time; every account probed once a minute.
async fn fill_time(sim: &Simulator, dir: &Path, users: &HashMap<String, String>) {
    sim.clear_requests();
    let (id, secret) = sim.client_credentials();
    let config = Config::from_vars(
        [
            ("WITHINGS_API_URL", sim.url().to_string()),
            ("WITHINGS_TOKEN_DIR", dir.display().to_string()),
            ("WITHINGS_CLIENT_ID", id),
            ("WITHINGS_CLIENT_SECRET", secret),
            ("WITHINGS_REQUESTS_PER_MINUTE", BUDGET.to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    )
    .expect("configuration");
    let app = App::from_config(&config).expect("app");
    let clock = app.clock().clone();
    let names: Vec<String> = (0..ACCOUNTS).map(|i| format!("p{i:04}")).collect();
    // 17 probes a simulated second is a little over 1,000 a minute: each account once.
    let per_second = ACCOUNTS.div_ceil(60) + 1;
    let mut fetched: HashSet<String> = HashSet::new();
    let mut per_minute = Vec::new();
    let mut counted = 0;
    let mut all_at = None;
    let mut n = 0usize;
    let real = Instant::now();
    for second in 1..=15 * 60u64 {
        for _ in 0..per_second {
            let name = &names[n % ACCOUNTS];
            n += 1;
            app.probe(Some(name), None).await.expect("known account");
        }
        clock.advance(Duration::from_secs(1));
        if second % 60 == 0 {
            let requests = sim.requests();
            for r in &requests[counted..] {
                if let Some(user) = r.bearer.as_ref().and_then(|b| users.get(b)) {
                    fetched.insert(user.clone());
                }
            }
            per_minute.push(requests.len() - counted);
            counted = requests.len();
            if fetched.len() == ACCOUNTS && all_at.is_none() {
                all_at = Some(second / 60);
            }
            if all_at.is_some() {
                break;
            }
        }
    }
    println!("\n## Part 2: in-process, test clock, budget {BUDGET}/min, {ACCOUNTS} accounts\n");
    println!("upstream requests per simulated minute: {per_minute:?}");
    println!(
        "every account fetched at least once after: {} simulated minutes ({n} probes, {:.1} s real time)",
        all_at.map_or_else(|| "more than 15".to_owned(), |m| m.to_string()),
        real.elapsed().as_secs_f64()
    );
    assert!(per_minute.iter().all(|&m| m <= BUDGET), "{per_minute:?}");
}

async fn run() {
    withings_exporter::withings::install_crypto_provider();
    let sim = Simulator::start(SimulatorOptions::default())
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let users = household(&sim, dir.path());
    child_process(&sim, dir.path()).await;
    fill_time(&sim, dir.path(), &users).await;
}

fn main() {
    common::run_bench(
        run(),
        "loopback only; part 1 exporter: the release binary as a child process; simulator and load generator (reqwest): this process, 2 worker threads, on the same 2 cores",
    );
}
