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
//! Parts: `BEATS_PARTS=cost,latency,throughput,year` (default all); `BEATS_ACCOUNTS=1,1000`
//! (the cost rows); `BEATS_HOURS=WARMUP,MEASURED` (simulated hours of each cost row; by
//! default 2,24 for one account and 3,2 for more); `BEATS_ROUNDS=20` (the late syncs).

mod common;

use common::{memory_kib, run_bench};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use withings_exporter::account::token_store::{StoredTokens, TokenStore};
use withings_exporter::app::App;
use withings_exporter::backfill::openmetrics::{
    FamilyOutput, OpenMetricsWriter, Sample, Window, WriteError,
};
use withings_exporter::backfill::remote;
use withings_exporter::config::Config;
use withings_exporter::http::server::Application;
use withings_exporter::notify::callback::{self, Callback};
use withings_exporter::notify::{self, Notifier, NotifySettings};
use withings_exporter::remote_write::{Destination, Options, Writer};
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
    /// Each account's access token (they outlive the run: never refreshed), to tell whose
    /// request reached the simulator.
    bearers: HashMap<String, usize>,
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
    let mut bearers = HashMap::new();
    for i in 0..accounts {
        let uid = userid(i);
        sim.add_live_user(&uid, HOUSEHOLD[i % HOUSEHOLD.len()].2);
        let (access, refresh, _) = sim.issue_token_pair_for(&uid);
        bearers.insert(access.clone(), i);
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
        bearers,
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
    /// With [`Counter::bearers`] set: each account's last `getintradayactivity`, at the
    /// test-clock time of the mark that took it.
    bearers: HashMap<String, usize>,
    now: i64,
    intraday_read: HashMap<usize, i64>,
}

impl Counter {
    fn take(&mut self, sim: &Simulator) {
        for r in sim.take_requests() {
            if r.params.get("action").map(String::as_str) == Some("getintradayactivity")
                && let Some(i) = r.bearer.as_ref().and_then(|b| self.bearers.get(b))
            {
                self.intraday_read.insert(*i, self.now);
            }
            self.total += 1;
            if self.counting {
                self.counted += 1;
                *self.by_path.entry(r.path).or_default() += 1;
            }
        }
    }

    fn mark(&mut self, sim: &Simulator, at: i64) {
        self.now = at;
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
        common::probe_all(&self.app).await;
    }

    /// As in `benches/notify.rs`: the notified fetches end, those deferred start and end.
    async fn settle(&self) {
        common::settle_notified(&self.app, Duration::from_secs(120)).await;
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
    /// After the run (trimmed), then without the App, then without the simulator too.
    rss_end: u64,
    rss_without_app: u64,
    rss_base: u64,
    wall: f64,
    /// For each watch sync notified (appli 16) in the measured hours and read since: how
    /// long after the notification its account's `getintradayactivity` went out, in
    /// test-clock seconds (a tick is 20 s); and how many were still waiting at the end.
    sync_waits: Vec<i64>,
    syncs_unread: usize,
}

/// `warmup` simulated hours (the first fetch of every account, and of a thousand, the
/// budget's backlog), then `hours` measured.
async fn cost(accounts: usize, notifications: bool, warmup: usize, hours: usize) -> Cost {
    let b = bench(accounts, notifications).await;
    // The simulator and the App ready, the accounts read, nothing fetched yet.
    let (_, rss_before) = memory_kib(std::process::id());
    let mut counter = Counter {
        bearers: b.bearers.clone(),
        ..Counter::default()
    };
    let setup = if notifications {
        b.subscribe_all(&mut counter).await
    } else {
        0
    };
    let wall = Instant::now();
    let mut sent: BTreeMap<i64, usize> = BTreeMap::new();
    let mut delivered = 0;
    // Watch syncs notified and not read yet: (account, when notified).
    let mut syncs: Vec<(usize, i64)> = Vec::new();
    let mut sync_waits = Vec::new();
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
                            if appli == 16 && !syncs.iter().any(|(j, _)| *j == i) {
                                syncs.push((i, at));
                            }
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
            syncs.retain(|(i, at)| match counter.intraday_read.get(i) {
                Some(read) if read >= at => {
                    sync_waits.push(read - at);
                    false
                }
                _ => true,
            });
        }
    }
    let (peak, rss_after) = memory_kib(std::process::id());
    // The simulator holds most of the process (its household makes a reading a minute for
    // each member, and keeps them). The exporter's own share: what the process hands back
    // when the App and its server are dropped (which also ends the connections the
    // simulator serves), each time after glibc returned freed memory to the system.
    let Bench {
        sim,
        app,
        _dir,
        _stop,
        ..
    } = b;
    let rss_end = trimmed_rss();
    drop(_stop);
    drop(app);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_without_app = trimmed_rss();
    sim.stop();
    drop(sim);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_base = trimmed_rss();
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
        rss_end,
        rss_without_app,
        rss_base,
        wall: wall.elapsed().as_secs_f64(),
        syncs_unread: syncs.len(),
        sync_waits,
    }
}

/// VmRSS in KiB once freed memory is handed back to the system.
fn trimmed_rss() -> u64 {
    // SAFETY: malloc_trim only returns free memory of glibc's heap to the system.
    unsafe { libc::malloc_trim(0) };
    memory_kib(std::process::id()).1
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
        "| {} | {} | {} | **{:.1}** ({:.2} per account) | {} | {} (delivered {:.2}/h) | {} | {} | {:.1} MiB ({:.1} / {:.1} / {:.1}) | {:.1} / {:.1} / {:.1} MiB | {:.1} s |",
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
        c.rss_end.saturating_sub(c.rss_without_app) as f64 / 1024.0,
        c.rss_end as f64 / 1024.0,
        c.rss_without_app as f64 / 1024.0,
        c.rss_base as f64 / 1024.0,
        c.rss_before as f64 / 1024.0,
        c.rss_after as f64 / 1024.0,
        c.peak as f64 / 1024.0,
        c.wall,
    );
    if c.notifications {
        let mut waits = c.sync_waits.clone();
        waits.sort_unstable();
        let at = |q: usize| {
            waits
                .get((waits.len() * q / 100).min(waits.len().saturating_sub(1)))
                .map_or("-".to_owned(), |w| format!("{:.1} min", *w as f64 / 60.0))
        };
        println!(
            "|  | watch syncs notified (appli 16) until their `getintradayactivity`, test clock (20 s ticks): {} read, median {}, p90 {}, max {}; {} still waiting at the end |",
            waits.len(),
            at(50),
            at(90),
            at(100),
            c.syncs_unread
        );
    }
}

async fn costs(accounts: &[usize]) {
    println!(
        "\n## Requests to Withings an hour, every collector on ({}), the default budget of {}/min, a probe of every account every 60 s",
        all_collectors(),
        withings_exporter::withings::budget::DEFAULT_PER_MINUTE
    );
    println!(
        "| accounts | notifications | measured hours | requests / hour | by path / hour | notifications sent / hour by appli | setup (subscriptions) | max in any 60 s | the exporter's memory: what dropping the App gave back (RSS after the run / without the App / without the simulator) | RSS of the row's process, simulator included: ready / end / peak | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
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
    let (warmup, hours) = std::env::var("BEATS_HOURS")
        .ok()
        .and_then(|h| {
            let (w, m) = h.split_once(',')?;
            Some((w.parse().ok()?, m.parse().ok()?))
        })
        .unwrap_or(if n == 1 { (2, 24) } else { (3, 2) });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let c = runtime.block_on(cost(n, notifications, warmup, hours));
    print_cost(&c);
}

/// A free port on loopback for a child to listen on (the exporter's callback URL names its
/// own address, so the port is chosen before it starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port()
}

/// One minute-level heart-rate sample of the watch.
fn heart_sample(bpm: i64) -> serde_json::Value {
    serde_json::json!({
        "deviceid": demo_extras::WATCH.0,
        "model": demo_extras::WATCH.1,
        "model_id": 94,
        "heart_rate": bpm,
    })
}

/// The late sync -> Prometheus rows: the release binary `serve` with every collector on,
/// notifications (its callback on loopback, subscribed through the simulator) and remote
/// write into a real Prometheus; each round the simulator gets 30 minutes of a watch's
/// minute-level heart rate that the watch synced late (the newest a few minutes old, the
/// oldest 40 minutes after the last round's) and POSTs the appli 16 notification; the time
/// runs from the samples being at the simulator until Prometheus answers all 30.
async fn latency(rounds: usize) {
    let prometheus = common::Prometheus::start().await;
    let sim = Simulator::start(SimulatorOptions::default())
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let uid = userid(0);
    sim.add_user(&uid);
    let (access, refresh, expires_in) = sim.issue_token_pair_for(&uid);
    TokenStore::new(dir.path().join("a0.json"))
        .save(&StoredTokens {
            access_token: Secret::new(access),
            refresh_token: Secret::new(refresh),
            expires_at: now() + expires_in,
            obtained_at: Some(now()),
            userid: Some(uid.clone()),
            scope: None,
        })
        .expect("token file");
    let port = free_port();
    let (id, secret) = sim.client_credentials();
    let listen = format!("127.0.0.1:{port}");
    let callback = format!("http://127.0.0.1:{port}/withings/notify");
    let write = prometheus.url("/api/v1/write");
    let token_dir = dir.path().display().to_string();
    let collectors = all_collectors();
    let exporter = common::ExporterProcess::start_with(
        sim.url().as_str(),
        &[
            ("WITHINGS_LISTEN_ADDRESS", &listen),
            ("WITHINGS_TOKEN_DIR", &token_dir),
            ("WITHINGS_CLIENT_ID", &id),
            ("WITHINGS_CLIENT_SECRET", &secret),
            ("WITHINGS_COLLECTORS", &collectors),
            ("WITHINGS_CALLBACK_URL", &callback),
            // The watch syncs every 30 minutes; the rounds come every second or so.
            ("WITHINGS_NOTIFY_MIN_INTERVAL_SECONDS", "1"),
            ("WITHINGS_REMOTE_WRITE_URL", &write),
            ("WITHINGS_REMOTE_WRITE_INSTANCE", "bench:19100"),
        ],
    );
    let wanted = sim_applis(&collectors);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let subscribed: Vec<i64> = sim.subscriptions(&uid).iter().map(|s| s.appli).collect();
        if wanted.iter().all(|a| subscribed.contains(a)) {
            break;
        }
        assert!(Instant::now() < deadline, "not subscribed: {subscribed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let step = 40 * 60;
    let first_end = (now() - (rounds as i64 + 1) * step) / 60 * 60;
    let mut extras = withings_sim::data::UserExtras::default();
    let mut samples = Vec::new();
    let mut requests = Vec::new();
    // Round 0 is the first fetch, not counted.
    for round in 0..=rounds {
        let end = first_end + round as i64 * step;
        let bpm = 60 + (round as i64 % 50);
        for minute in 0..30 {
            extras.intraday.insert(end - minute * 60, heart_sample(bpm));
        }
        sim.set_user_extras(&uid, extras.clone()).expect("extras");
        sim.take_requests();
        let started = Instant::now();
        let delivered = sim.notify_user(&uid, 16, end - 29 * 60, end).await;
        assert_eq!(delivered, 1, "the notification was not answered");
        let query =
            "sum(count_over_time(withings_intraday_heart_rate_bpm{instance=\"bench:19100\"}[35m]))";
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if prometheus.number(query, end).await == 30.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: the samples never reached Prometheus"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed();
        requests.push(sim.take_requests().len());
        if round > 0 {
            samples.push(took);
        }
        // Past the exporter's minimum interval between two notified fetches.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let (peak, rss) = memory_kib(exporter.pid());
    drop(exporter);
    let max = samples.iter().max().copied().unwrap_or_default();
    let s = common::stats(samples);
    println!(
        "\n## Late sync -> samples in Prometheus, with notifications (1 account, every collector on, the release binary `serve`, remote write into Prometheus on loopback)"
    );
    println!(
        "| rounds | median | mean | max | requests to Withings a round | exporter RSS / peak |\n|---|---|---|---|---|---|"
    );
    println!(
        "| {} | {} ms | {} ms | {} ms | {:?} | {:.1} / {:.1} MiB |",
        s.n,
        common::ms(s.p50),
        common::ms(s.mean),
        common::ms(max),
        requests
            .iter()
            .skip(1)
            .collect::<std::collections::BTreeSet<_>>(),
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
    sim.stop();
}

/// The appli codes the exporter subscribes for these collectors.
fn sim_applis(collectors: &str) -> Vec<i64> {
    let config = Config::from_vars(
        [
            ("WITHINGS_ACCESS_TOKEN", "x".to_owned()),
            ("WITHINGS_COLLECTORS", collectors.to_owned()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .expect("config");
    withings_exporter::collector::check(&config.collectors)
        .expect("collectors")
        .0
        .applis()
}

const YEAR_MINUTES: u32 = 365 * 24 * 60;

/// The intraday families of a watch for the throughput rows: a year at a sample a minute of
/// each (heart rate, steps, SpO2), one series each with the collector's labels.
const THROUGHPUT_FAMILIES: [(&str, &str); 3] = [
    ("withings_intraday_heart_rate_bpm", "Heart rate."),
    ("withings_intraday_steps", "Steps in the slot."),
    ("withings_intraday_spo2_ratio", "SpO2."),
];

fn watch_series() -> Vec<Vec<(&'static str, String)>> {
    vec![vec![
        ("device_id", demo_extras::WATCH.0.to_owned()),
        ("device_model", demo_extras::WATCH.1.to_owned()),
        ("job", "withings".to_owned()),
        // Not the instance of the year's backfill below, which writes the same family into
        // the same Prometheus.
        ("instance", "throughput:19100".to_owned()),
    ]]
}

fn year_of(family: usize, start: i64) -> impl Iterator<Item = Result<Sample, WriteError>> {
    (0..YEAR_MINUTES).map(move |i| {
        let value = match family {
            0 => 55.0 + f64::from(i % 60),
            1 => f64::from(i % 120),
            _ => 0.94 + f64::from(i % 5) / 100.0,
        };
        Ok(Sample {
            series: 0,
            timestamp: start + i64::from(i) * 60,
            grpid: 0,
            value,
        })
    })
}

/// The writer's throughput for these series beside the OpenMetrics file's, in one run: the
/// same three families of a year at a minute (1,576,800 samples) through the backfill's two
/// outputs, remote write into Prometheus and the file.
async fn throughput(prometheus: &common::Prometheus) {
    let start = (now() - 366 * 86_400) / 60 * 60;
    let window = Window {
        since: None,
        until: i64::MAX,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("year.om");
    let started = Instant::now();
    let file = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            let out = std::io::BufWriter::new(std::fs::File::create(&path).expect("file"));
            let mut writer = OpenMetricsWriter::new(out, window);
            let mut samples = 0;
            for (k, (name, help)) in THROUGHPUT_FAMILIES.iter().enumerate() {
                samples += writer
                    .family(name, help, &watch_series(), &mut year_of(k, start))
                    .expect("family")
                    .samples;
            }
            writer.finish().expect("finish");
            samples
        }
    })
    .await
    .expect("file writer");
    let file_took = started.elapsed();
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());

    let mut destination = Destination::new(prometheus.url("/api/v1/write").parse().expect("url"));
    destination.options = Options::default();
    let writer = Writer::new(destination).expect("writer");
    let started = Instant::now();
    let (families, receivers) = remote::channels(
        window,
        writer.options().max_samples_per_send,
        writer.options().max_in_flight,
    );
    let producer = tokio::task::spawn_blocking(move || {
        let mut families = families;
        let mut samples = 0;
        for (k, (name, help)) in THROUGHPUT_FAMILIES.iter().enumerate() {
            samples += families
                .family(name, help, &watch_series(), &mut year_of(k, start))
                .expect("family")
                .samples;
        }
        families.finish().expect("finish");
        samples
    });
    let sent = remote::send_all(&writer, receivers).await.expect("sent");
    let remote_samples = producer.await.expect("producer");
    let remote_took = started.elapsed();
    let mut held = 0.0;
    for (name, _) in THROUGHPUT_FAMILIES {
        held += prometheus
            .number(
                &format!("count_over_time({name}{{instance=\"throughput:19100\"}}[367d])"),
                now(),
            )
            .await;
    }
    println!(
        "\n## Write throughput: a watch's year at a minute (heart rate, steps, SpO2: {} samples), the backfill's two outputs in one run",
        u64::from(YEAR_MINUTES) * 3
    );
    println!(
        "| output | samples | wall | samples/s | requests | size |\n|---|---|---|---|---|---|"
    );
    println!(
        "| OpenMetrics file | {file} | {:.2} s | {:.2} M | – | {:.1} MiB |",
        file_took.as_secs_f64(),
        file as f64 / file_took.as_secs_f64() / 1e6,
        bytes as f64 / 1024.0 / 1024.0
    );
    println!(
        "| remote write into Prometheus | {remote_samples} (Prometheus holds {held}) | {:.2} s | {:.2} M | {} ({} retries) | – |",
        remote_took.as_secs_f64(),
        remote_samples as f64 / remote_took.as_secs_f64() / 1e6,
        sent.requests,
        sent.retries
    );
}

const YEAR_TOKEN: &str = "beats-year-token";

/// A person's year of minute-level heart rate (525,600 samples of a watch, in the
/// simulator's intraday store) backfilled by the release binary, to a file and by remote
/// write into Prometheus: requests, wall time, the child's peak RSS.
async fn year(prometheus: &common::Prometheus) {
    let end = now() / 60 * 60 - 60;
    let start = end - (i64::from(YEAR_MINUTES) - 1) * 60;
    let mut extras = withings_sim::data::UserExtras::default();
    for i in 0..i64::from(YEAR_MINUTES) {
        extras
            .intraday
            .insert(start + i * 60, heart_sample(55 + i % 60));
    }
    let since = jiff::Timestamp::from_second(start)
        .expect("time")
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("year.om");
    let write = prometheus.url("/api/v1/write");
    println!(
        "\n## A year of minute-level heart rate backfilled ({YEAR_MINUTES} samples from {since}, `backfill --since {since}`, WITHINGS_COLLECTORS=intraday, 120 requests a minute)"
    );
    println!(
        "| output | requests to Withings (getintradayactivity) | wall | peak RSS of the child | samples written |\n|---|---|---|---|---|"
    );
    for (name, target) in [
        (
            "`--output FILE`",
            vec!["--output".to_owned(), file.display().to_string()],
        ),
        (
            "`--remote-write URL`",
            vec!["--remote-write".to_owned(), write.clone()],
        ),
    ] {
        let sim = Simulator::start(SimulatorOptions {
            access_tokens: vec![YEAR_TOKEN.into()],
            ..SimulatorOptions::default()
        })
        .await
        .expect("simulator");
        sim.set_extras(extras.clone()).expect("extras");
        let url = sim.url().to_string();
        let since = since.clone();
        let (took, peak, stderr) = tokio::task::spawn_blocking(move || {
            let target: Vec<&str> = target.iter().map(String::as_str).collect();
            let mut args = vec!["--instance", "bench:19100", "--since", since.as_str()];
            args.extend(target);
            common::run_backfill(
                &url,
                YEAR_TOKEN,
                &[("WITHINGS_COLLECTORS", "intraday")],
                &args,
            )
        })
        .await
        .expect("bench thread");
        let requests = sim.take_requests();
        let intraday = requests
            .iter()
            .filter(|r| r.params.get("action").map(String::as_str) == Some("getintradayactivity"))
            .count();
        let written = if name.contains("FILE") {
            std::fs::read_to_string(&file)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("withings_intraday_heart_rate_bpm{"))
                .count() as f64
        } else {
            prometheus
                .number(
                    "count_over_time(withings_intraday_heart_rate_bpm{instance=\"bench:19100\"}[367d])",
                    now(),
                )
                .await
        };
        println!(
            "| {name} | {} ({intraday}) | {:.1} s | {:.1} MiB | {written} |",
            requests.len(),
            took.as_secs_f64(),
            peak as f64 / 1024.0,
        );
        eprintln!(
            "  {}",
            stderr
                .lines()
                .last()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect::<String>()
        );
        sim.stop();
    }
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
            if parts.iter().any(|p| p == "latency") {
                let rounds = std::env::var("BEATS_ROUNDS")
                    .ok()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(20);
                latency(rounds).await;
            }
            if parts.iter().any(|p| p == "throughput" || p == "year") {
                let prometheus = common::Prometheus::start().await;
                if parts.iter().any(|p| p == "throughput") {
                    throughput(&prometheus).await;
                }
                if parts.iter().any(|p| p == "year") {
                    year(&prometheus).await;
                }
            }
        },
        "simulator, App and HTTP server in this process on loopback (cost rows: the App's test clock)",
    );
}
