//! Every beat (issue 20): what every collector on costs Withings and the machine, for 1 and
//! 1,000 accounts of the demo household's kind, with and without notifications; the time
//! from a watch's late sync to its samples in Prometheus; the remote writer's throughput
//! for these series beside the OpenMetrics file's; and a person's year of minute-level
//! heart rate backfilled. `cargo bench --bench beats`; the figures go in BENCHMARKS.md
//! ("Every beat").
//!
//! Cost rows (`cost`): the simulator, the exporter's App and its HTTP server in this process,
//! as in `benches/notify.rs`, time from the App's test clock: every tick advances it 20 s,
//! starts the notified fetches that are due (as `notify::run_triggers` does every second),
//! and every third tick probes every account (a scrape every 60 s). The simulator's clock
//! follows the App's, so its household's data (`add_live_user`: measures, activity, nights,
//! a watch's day sample by sample, a night minute by minute, workouts, ECGs, goals) is the
//! data of that simulated moment. Requests are counted at the simulator; every 60 s window
//! of the test clock is checked against Withings' 120 a minute.
//!
//! Parts: `BEATS_PARTS=cost,latency,throughput,year` (default all); `BEATS_ACCOUNTS=1,1000`.

mod common;

use common::{memory_kib, run_bench};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use withings_exporter::account::token_store::{StoredTokens, TokenStore};
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_exporter::http::server::Application;
use withings_exporter::notify::callback::{self, Callback};
use withings_exporter::notify::{self, Notifier, NotifySettings};
use withings_exporter::secret::Secret;
use withings_sim::{HOUSEHOLD, Simulator, SimulatorOptions, data, demo_extras};

/// What Withings allows one application in any 60 seconds.
const WITHINGS_PER_MINUTE: usize = 120;
/// One tick of the test clock; a probe of every account every third.
const TICK: Duration = Duration::from_secs(20);
const TICKS_PER_MINUTE: usize = 3;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn userid(i: usize) -> String {
    format!("{}", 200_000 + i)
}

fn all_collectors() -> String {
    withings_exporter::collector::ALL
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(",")
}

struct Bench {
    sim: Simulator,
    app: Arc<App>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// `accounts` members of the demo household (the three profiles in turn), every collector
/// on, the default budget; notifications subscribed through the simulator when asked.
async fn bench(accounts: usize, notifications: bool) -> Bench {
    let sim = Simulator::start(SimulatorOptions::default())
        .await
        .expect("simulator");
    // The test clock jumps a day: tokens must outlive it on both sides.
    sim.set_access_token_lifetime(Duration::from_secs(60 * 86_400));
    sim.set_clock(Some(now()));
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).expect("token dir");
    for i in 0..accounts {
        let uid = userid(i);
        sim.add_live_user(&uid, HOUSEHOLD[i % HOUSEHOLD.len()].2);
        let (access, refresh, _) = sim.issue_token_pair_for(&uid);
        TokenStore::new(tokens.join(format!("a{i:04}.json")))
            .save(&StoredTokens {
                access_token: Secret::new(access),
                refresh_token: Secret::new(refresh),
                expires_at: now() + 60 * 86_400,
                obtained_at: Some(now()),
                userid: Some(uid),
                scope: Some("user.metrics,user.activity".into()),
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
            ("WITHINGS_COLLECTORS", all_collectors()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .expect("config");
    let app = Arc::new(App::from_config(&config).expect("app"));
    let server = Application::bind(config.server.listen_address, Arc::clone(&app))
        .await
        .expect("bind");
    let addr: SocketAddr = server.local_addr().expect("addr");
    if notifications {
        let secret =
            callback::load_or_create_secret(&tokens.join(callback::SECRET_FILE)).expect("secret");
        let base =
            callback::parse_callback_url(&format!("http://{addr}/withings/notify")).expect("url");
        app.set_notifier(Notifier::new(
            Callback::new(base, secret),
            NotifySettings {
                min_interval: notify::DEFAULT_MIN_INTERVAL,
                safety_poll: notify::DEFAULT_SAFETY_POLL,
                applis: app.collectors().applis(),
                subscribe_spacing: Duration::ZERO,
                reconcile_interval: notify::RECONCILE_INTERVAL,
            },
            app.clock().clone(),
        ));
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let b = Bench {
        sim,
        app,
        _dir: dir,
        _stop: stop,
    };
    b.follow_clock();
    b
}

/// Requests at the simulator, taken from it as they come (its record stays small), by path
/// once counting starts; every 60 s window of the test clock checked.
#[derive(Default)]
struct Counter {
    total: usize,
    counting: bool,
    counted: usize,
    by_path: BTreeMap<String, usize>,
    /// (test-clock unix seconds, requests so far) after each tick.
    marks: Vec<(i64, usize)>,
    max_window: usize,
}

impl Counter {
    fn take(&mut self, sim: &Simulator) {
        for r in sim.take_requests() {
            self.total += 1;
            if self.counting {
                self.counted += 1;
                *self.by_path.entry(r.path).or_default() += 1;
            }
        }
    }

    fn mark(&mut self, sim: &Simulator, at: i64) {
        self.take(sim);
        let total = self.total;
        self.marks.push((at, total));
        // The requests of every tick within 60 s before this one (the clock stands still
        // within a tick: all of a tick's requests are at its instant).
        let first = self
            .marks
            .iter()
            .rev()
            .find(|(t, _)| at - t >= 60)
            .map_or(0, |(_, n)| *n);
        let window = total - first;
        self.max_window = self.max_window.max(window);
        assert!(
            window <= WITHINGS_PER_MINUTE,
            "{window} requests to Withings within 60 s of the test clock at {at}: over its {WITHINGS_PER_MINUTE}"
        );
    }
}

impl Bench {
    fn follow_clock(&self) {
        self.sim.set_clock(Some(self.app.clock().unix_seconds()));
    }

    fn tick(&self, counter: &mut Counter) {
        self.app.clock().advance(TICK);
        self.follow_clock();
        counter.mark(&self.sim, self.app.clock().unix_seconds());
    }

    /// Subscribes every account, checking the budget as it goes.
    async fn subscribe_all(&self, counter: &mut Counter) -> usize {
        let n = self.app.notifier().expect("notifier");
        counter.take(&self.sim);
        let before = counter.total;
        for _ in 0..10_000 {
            n.reconcile_due(&self.app).await;
            counter.mark(&self.sim, self.app.clock().unix_seconds());
            if self
                .app
                .accounts()
                .iter()
                .all(|a| n.schedule().is_subscribed(a.name()))
            {
                break;
            }
            self.tick(counter);
        }
        counter.total - before
    }

    async fn probe_all(&self) {
        for a in self.app.accounts() {
            let _ = self.app.probe_outcome(&a, None).await;
        }
    }

    /// As in `benches/notify.rs`: the notified fetches end, those deferred start and end.
    async fn settle(&self) {
        let Some(n) = self.app.notifier() else {
            return;
        };
        let ended = || async {
            let deadline = Instant::now() + Duration::from_secs(120);
            while n.fetches_in_flight() > 0 {
                assert!(Instant::now() < deadline, "notified fetches never ended");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        ended().await;
        notify::trigger_due(&self.app);
        ended().await;
    }
}

/// What each account is notified of, the assumption of the "with notifications" rows: what
/// of its household member's data reached Withings since the last minute, as the simulator
/// tells it (`withings_sim::data::arrivals`: the watch's syncs every 30 minutes, appli 16;
/// the night uploaded at 07:15, 44), a weigh-in (appli 1) and a blood pressure (4) a day
/// each, and an ECG a week (54), spread over the day and the week by account. (The
/// simulator's ECG is always "yesterday evening": it never arrives as news.) The members
/// are the simulator's three profiles in turn; their day is computed once a minute for each
/// profile, not for each account.
struct Arrivals {
    timezone: String,
    since: i64,
}

impl Arrivals {
    fn due(&mut self, now: i64, accounts: usize, minute: usize) -> Vec<(usize, i64, i64, i64)> {
        let by_profile: Vec<Vec<(i64, i64, i64)>> = HOUSEHOLD
            .iter()
            .map(|(_, _, profile)| {
                let mut extras = demo_extras::household_extras(now, &self.timezone);
                extras.ecgs = demo_extras::ecgs(now, &self.timezone, profile.ecg_afib);
                data::arrivals(&extras, self.since, now)
            })
            .collect();
        self.since = now;
        let of_day = minute % 1440;
        let mut out = Vec::new();
        for i in 0..accounts {
            for &(appli, first, last) in &by_profile[i % HOUSEHOLD.len()] {
                out.push((i, appli, first, last));
            }
            if of_day == (7 * 60 + 10 + i * 13) % 1440 {
                out.push((i, 1, now - 60, now));
            }
            if of_day == (19 * 60 + 30 + i * 17) % 1440 {
                out.push((i, 4, now - 60, now));
            }
            // An ECG a week, at 20:20 of the account's day of the week.
            if minute % (7 * 1440) == (i % 7) * 1440 + (20 * 60 + 20 + i * 7) % 1440 {
                out.push((i, 54, now - 300, now - 300));
            }
        }
        out
    }
}

struct Cost {
    accounts: usize,
    notifications: bool,
    hours: usize,
    by_path: BTreeMap<String, usize>,
    total: usize,
    sent: BTreeMap<i64, usize>,
    delivered: usize,
    setup: usize,
    max_window: usize,
    rss_before: u64,
    rss_after: u64,
    peak: u64,
    wall: f64,
}

/// `warmup` simulated hours (the first fetch of every account, and of a thousand, the
/// budget's backlog), then `hours` measured.
async fn cost(accounts: usize, notifications: bool, warmup: usize, hours: usize) -> Cost {
    let b = bench(accounts, notifications).await;
    // The simulator and the App ready, the accounts read, nothing fetched yet.
    let (_, rss_before) = memory_kib(std::process::id());
    let mut counter = Counter::default();
    let setup = if notifications {
        b.subscribe_all(&mut counter).await
    } else {
        0
    };
    let wall = Instant::now();
    let mut sent: BTreeMap<i64, usize> = BTreeMap::new();
    let mut delivered = 0;
    let mut arrivals = Arrivals {
        timezone: SimulatorOptions::default().timezone,
        since: b.app.clock().unix_seconds(),
    };
    for minute in 0..(warmup + hours) * 60 {
        if minute == warmup * 60 {
            counter.take(&b.sim);
            counter.counting = true;
        }
        let counted = minute >= warmup * 60;
        for t in 0..TICKS_PER_MINUTE {
            b.tick(&mut counter);
            if t == 0 {
                let at = b.app.clock().unix_seconds();
                let due = arrivals.due(at, accounts, minute);
                if notifications {
                    for (i, appli, first, last) in due {
                        let d = b.sim.notify_user(&userid(i), appli, first, last).await;
                        if counted {
                            *sent.entry(appli).or_default() += 1;
                            delivered += d;
                        }
                    }
                }
            }
            b.settle().await;
            if t == TICKS_PER_MINUTE - 1 {
                b.probe_all().await;
                if let Some(n) = b.app.notifier() {
                    n.reconcile_due(&b.app).await;
                }
            }
            counter.mark(&b.sim, b.app.clock().unix_seconds());
        }
    }
    let (peak, rss_after) = memory_kib(std::process::id());
    b.sim.stop();
    Cost {
        accounts,
        notifications,
        hours,
        total: counter.counted,
        by_path: counter.by_path,
        sent,
        delivered,
        setup,
        max_window: counter.max_window,
        rss_before,
        rss_after,
        peak,
        wall: wall.elapsed().as_secs_f64(),
    }
}

fn print_cost(c: &Cost) {
    let per_hour = c.total as f64 / c.hours as f64;
    let paths: Vec<String> = c
        .by_path
        .iter()
        .map(|(p, n)| format!("{p} {:.1}", *n as f64 / c.hours as f64))
        .collect();
    let sent: Vec<String> = c
        .sent
        .iter()
        .map(|(a, n)| format!("{a}: {:.2}", *n as f64 / c.hours as f64))
        .collect();
    println!(
        "| {} | {} | {} | **{:.1}** ({:.2} per account) | {} | {} (delivered {:.2}/h) | {} | {} | {:.1} / {:.1} / {:.1} MiB | {:.1} s |",
        c.accounts,
        if c.notifications { "yes" } else { "no" },
        c.hours,
        per_hour,
        per_hour / c.accounts as f64,
        paths.join(", "),
        sent.join(", "),
        c.delivered as f64 / c.hours as f64,
        c.setup,
        c.max_window,
        c.rss_before as f64 / 1024.0,
        c.rss_after as f64 / 1024.0,
        c.peak as f64 / 1024.0,
        c.wall,
    );
}

async fn costs(accounts: &[usize]) {
    println!(
        "\n## Requests to Withings an hour, every collector on ({}), the default budget of {}/min, a probe of every account every 60 s",
        all_collectors(),
        withings_exporter::withings::budget::DEFAULT_PER_MINUTE
    );
    println!(
        "| accounts | notifications | measured hours | requests / hour | by path / hour | notifications sent / hour by appli | setup (subscriptions) | max in any 60 s | RSS ready / end / peak (the row's process, simulator included) | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &n in accounts {
        for notifications in [false, true] {
            // Each row in a process of its own, so that its memory is its own.
            let status = std::process::Command::new(std::env::current_exe().expect("this bench"))
                .env(ROW_VARIABLE, format!("{n},{notifications}"))
                .status()
                .expect("the row runs");
            assert!(status.success(), "the row {n},{notifications} failed");
        }
    }
}

/// Set (`ACCOUNTS,NOTIFICATIONS`): this process runs that one cost row and prints it.
const ROW_VARIABLE: &str = "BEATS_ROW";

fn row(spec: &str) {
    let (n, notifications) = spec.split_once(',').expect("ACCOUNTS,NOTIFICATIONS");
    let n: usize = n.parse().expect("accounts");
    let notifications = notifications == "true";
    // One account: a whole day measured, so that the daily notifications fall in it; a
    // thousand: the first fetches and the budget's backlog first, then two hours.
    let (warmup, hours) = if n == 1 { (2, 24) } else { (3, 2) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let c = runtime.block_on(cost(n, notifications, warmup, hours));
    print_cost(&c);
}

fn parts() -> Vec<String> {
    std::env::var("BEATS_PARTS")
        .unwrap_or_else(|_| "cost,latency,throughput,year".into())
        .split(',')
        .map(|p| p.trim().to_owned())
        .collect()
}

fn main() {
    withings_exporter::withings::install_crypto_provider();
    if let Ok(spec) = std::env::var(ROW_VARIABLE) {
        row(&spec);
        return;
    }
    let accounts: Vec<usize> = std::env::var("BEATS_ACCOUNTS")
        .unwrap_or_else(|_| "1,1000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let parts = parts();
    run_bench(
        async move {
            if parts.iter().any(|p| p == "cost") {
                costs(&accounts).await;
            }
        },
        "simulator, App and HTTP server in this process on loopback (cost rows: the App's test clock)",
    );
}
