//! Notifications (issue 12): freshness with push, upstream cost per hour with and without
//! notifications, and a flood of forged notifications. `cargo bench --bench notify`; the
//! figures go in BENCHMARKS.md.
//!
//! Everything runs in this process: the simulator, the exporter's App and its HTTP server on
//! loopback. Time for the cost rows is the App's test clock (`App::clock().advance`): each
//! simulated minute advances it 60 s and probes every account once, so an hour of scrapes
//! takes seconds of wall time, and the request budget (which follows the same clock) refills
//! as it would. Requests are counted at the simulator.

mod common;

use common::{memory_kib, ms, run_bench, stats};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use withings_exporter::account::token_store::{StoredTokens, TokenStore};
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_exporter::http::server::Application;
use withings_exporter::notify::callback::{self, Callback};
use withings_exporter::notify::{Notifier, NotifySettings};
use withings_exporter::secret::Secret;
use withings_sim::{Simulator, SimulatorOptions};

const ACCOUNTS_VARIABLE: &str = "NOTIFY_BENCH_ACCOUNTS";
/// Set: only the flood row.
const ONLY_FLOOD_VARIABLE: &str = "NOTIFY_BENCH_ONLY_FLOOD";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn group(grpid: i64, date: i64, weight_g: i64) -> Value {
    json!({
        "grpid": grpid, "attrib": 0, "date": date, "created": date, "modified": date,
        "category": 1, "deviceid": "d1", "hash_deviceid": "d1", "model": "Body+",
        "modelid": 5, "measures": [{"type": 1, "value": weight_g, "unit": -3}],
    })
}

struct Bench {
    sim: Simulator,
    app: Arc<App>,
    addr: SocketAddr,
    secret: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn userid(i: usize) -> String {
    format!("{}", 100_000 + i)
}

async fn bench(accounts: usize, notifications: bool) -> Bench {
    let sim = Simulator::start(SimulatorOptions::default())
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).expect("token dir");
    for i in 0..accounts {
        let uid = userid(i);
        sim.add_user(&uid);
        sim.upsert_user_group(&uid, group(1, now() - 86_400, 70_000))
            .expect("group");
        let (access, refresh, _) = sim.issue_token_pair_for(&uid);
        TokenStore::new(tokens.join(format!("a{i}.json")))
            .save(&StoredTokens {
                access_token: Secret::new(access),
                refresh_token: Secret::new(refresh),
                // Far ahead: the bench's clock jumps hours, the token must not expire.
                expires_at: now() + 30 * 86_400,
                obtained_at: Some(now()),
                userid: Some(uid),
                scope: Some("user.metrics".into()),
            })
            .expect("token file");
    }
    let (client_id, client_secret) = sim.client_credentials();
    let config = Config::from_vars(
        [
            ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0".to_string()),
            ("WITHINGS_API_URL", sim.url().to_string()),
            ("WITHINGS_TOKEN_DIR", tokens.display().to_string()),
            ("WITHINGS_CLIENT_ID", client_id),
            ("WITHINGS_CLIENT_SECRET", client_secret),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .expect("config");
    let app = Arc::new(App::from_config(&config).expect("app"));
    let server = Application::bind(config.server.listen_address, Arc::clone(&app))
        .await
        .expect("bind");
    let addr = server.local_addr().expect("addr");
    let secret =
        callback::load_or_create_secret(&tokens.join(callback::SECRET_FILE)).expect("secret");
    let secret_text = secret.expose().to_owned();
    if notifications {
        let base =
            callback::parse_callback_url(&format!("http://{addr}/withings/notify")).expect("url");
        app.set_notifier(Notifier::new(
            Callback::new(base, secret),
            NotifySettings {
                min_interval: Duration::from_secs(30),
                safety_poll: Duration::from_secs(3600),
                applis: vec![1, 2, 4],
                subscribe_spacing: Duration::ZERO,
                reconcile_interval: Duration::from_secs(3 * 3600),
            },
            app.clock().clone(),
        ));
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    Bench {
        sim,
        app,
        addr,
        secret: secret_text,
        _dir: dir,
        _stop: stop,
    }
}

impl Bench {
    /// Subscribes every account, a budget's worth a simulated minute.
    async fn subscribe_all(&self) -> usize {
        let n = self.app.notifier().expect("notifier");
        let before = self.sim.request_count("/notify");
        for _ in 0..1000 {
            n.reconcile_due(&self.app).await;
            if self
                .app
                .accounts()
                .iter()
                .all(|a| n.schedule().is_subscribed(a.name()))
            {
                break;
            }
            self.app.clock().advance(Duration::from_secs(60));
        }
        self.sim.request_count("/notify") - before
    }

    async fn probe_all(&self) {
        common::probe_all(&self.app).await;
    }

    /// The notified fetches end, those deferred start and end.
    async fn settle(&self) {
        common::settle_notified(&self.app, Duration::from_secs(60)).await;
    }
}

fn weight(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with("withings_weight_grams"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn freshness() {
    let b = bench(3, true).await;
    b.subscribe_all().await;
    b.probe_all().await;
    let mut samples = Vec::new();
    for round in 0..50i64 {
        // Past the per-account minimum interval, as real readings are.
        b.app.clock().advance(Duration::from_secs(31));
        let grams = 71_000 + round;
        let started = Instant::now();
        b.sim
            .add_reading_and_notify(&userid(0), group(10 + round, now() - 5, grams))
            .await
            .expect("reading");
        loop {
            let text = b.app.probe(Some("a0"), None).await.expect("probe");
            if weight(&text) == Some(grams as f64) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never shown");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(started.elapsed());
    }
    let s = stats(samples);
    println!(
        "\n## Freshness: reading added in the simulator -> visible in a probe (with notifications)"
    );
    println!("| rounds | median ms | p99 ms | mean ms |\n|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} |",
        s.n,
        ms(s.p50),
        ms(s.p99),
        ms(s.mean)
    );
}

/// What one cost row measured, over the second simulated hour (the first includes the
/// start).
struct Cost {
    getmeas: usize,
    notify: usize,
    setup: usize,
    readings: usize,
    /// Notifications the exporter answered 2xx. One that is lost (the simulator's POST
    /// timed out on a loaded machine) is left to the safety poll, as with Withings, and costs
    /// that account a second request in the hour.
    delivered: usize,
    wall: f64,
}

async fn cost(accounts: usize, notifications: bool) -> Cost {
    let b = bench(accounts, notifications).await;
    let setup = if notifications {
        b.subscribe_all().await
    } else {
        0
    };
    let wall = Instant::now();
    let mut second_hour = (0, 0);
    let (mut readings, mut delivered) = (0, 0);
    for minute in 0..120usize {
        if minute == 60 {
            second_hour = (
                b.sim.request_count("/measure"),
                b.sim.request_count("/notify"),
            );
        }
        b.app.clock().advance(Duration::from_secs(60));
        // One new reading an hour for each account, spread over the hour.
        for i in (0..accounts).filter(|i| i % 60 == minute % 60) {
            let grams = 70_000 + minute as i64;
            let g = group(1000 + minute as i64, now() - 5, grams);
            let counted = minute >= 60;
            readings += usize::from(counted);
            if notifications {
                let answered = b
                    .sim
                    .add_reading_and_notify(&userid(i), g)
                    .await
                    .expect("reading");
                if counted {
                    delivered += answered;
                }
            } else {
                b.sim.upsert_user_group(&userid(i), g).expect("reading");
            }
        }
        b.settle().await;
        b.probe_all().await;
        // Reconciliation is due every 3 hours; within these 2 it does not run again.
        if let Some(n) = b.app.notifier() {
            n.reconcile_due(&b.app).await;
        }
    }
    Cost {
        getmeas: b.sim.request_count("/measure") - second_hour.0,
        notify: b.sim.request_count("/notify") - second_hour.1,
        setup,
        readings,
        delivered,
        wall: wall.elapsed().as_secs_f64(),
    }
}

async fn flood() {
    let b = bench(100, true).await;
    b.subscribe_all().await;
    b.probe_all().await;
    // A fresh minute of the budget, which the first fetches above spent.
    b.app.clock().advance(Duration::from_secs(61));
    let before = b.sim.request_count("/measure");
    let (_, rss_before) = memory_kib(std::process::id());
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("http://{}/withings/notify/{}", b.addr, b.secret);
    let mut samples = Vec::with_capacity(10_000);
    let started = Instant::now();
    for i in 0..10_000usize {
        let body = format!("userid={}&appli=1&startdate=1&enddate=2", userid(i % 100));
        let t = Instant::now();
        let status = http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        samples.push(t.elapsed());
        assert_eq!(status, 200);
    }
    let elapsed = started.elapsed();
    b.settle().await;
    let made = b.sim.request_count("/measure") - before;
    let (peak, rss_after) = memory_kib(std::process::id());
    let s = stats(samples);
    println!(
        "\n## Flood: 10,000 forged notifications (right secret, 100 subscribed accounts, within one 30 s interval of the test clock)"
    );
    println!(
        "| requests to Withings | answer median ms | p99 ms | total s | RSS before / after / peak KiB |\n|---|---|---|---|---|"
    );
    println!(
        "| {made} | {} | {} | {:.2} | {rss_before} / {rss_after} / {peak} |",
        ms(s.p50),
        ms(s.p99),
        elapsed.as_secs_f64()
    );
}

fn main() {
    let accounts: usize = std::env::var(ACCOUNTS_VARIABLE)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    run_bench(
        async move {
            if std::env::var_os(ONLY_FLOOD_VARIABLE).is_some() {
                flood().await;
                return;
            }
            freshness().await;
            println!(
                "\n## Cost: {accounts} accounts, a probe each every 60 s, one new reading an hour each (second simulated hour; the default budget of {}/min)",
                withings_exporter::withings::budget::DEFAULT_PER_MINUTE
            );
            println!(
                "| notifications | readings | notifications answered | getmeas requests | notify requests | setup notify requests | wall s |\n|---|---|---|---|---|---|---|"
            );
            for notifications in [true, false] {
                let c = cost(accounts, notifications).await;
                println!(
                    "| {} | {} | {} | {} | {} | {} | {:.1} |",
                    if notifications { "yes" } else { "no" },
                    c.readings,
                    c.delivered,
                    c.getmeas,
                    c.notify,
                    c.setup,
                    c.wall
                );
            }
            flood().await;
        },
        "simulator, App and HTTP server in this process, loopback; time of the cost rows from the test clock",
    );
}
