//! Withings notifications (issue 12): the receiver, subscriptions, fetching less, the flood
//! bound, the secret kept out of logs. A simulator and a real server on port 0; the
//! background loops are not started: each test drives reconciliation itself, and the
//! receiver triggers fetches as in production.

use crate::common;

use common::accounts::unix_now as now;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_exporter::http::web_config::WebConfig;
use withings_exporter::notify::callback::{self, Callback};
use withings_exporter::notify::{Notifier, NotifySettings};
use withings_sim::{Simulator, SimulatorOptions};

const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    sim: Simulator,
    app: Arc<App>,
    addr: SocketAddr,
    secret: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    server: Option<common::Served>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The server first, as before: dropping it stops it.
        self.server.take();
        self.sim.stop();
    }
}

fn group(grpid: i64, date: i64, weight_g: i64) -> Value {
    json!({
        "grpid": grpid, "attrib": 0, "date": date, "created": date, "modified": date,
        "category": 1, "deviceid": "d1", "hash_deviceid": "d1", "model": "Body+",
        "modelid": 5, "measures": [{"type": 1, "value": weight_g, "unit": -3}],
    })
}

struct Setup<'a> {
    accounts: &'a [(&'a str, &'a str)],
    budget: u32,
    web: Option<(&'a str, &'a str)>,
    min_interval: Duration,
    safety_poll: Duration,
    /// Subscribe with a callback nothing answers on: the simulator's HEAD fails (293).
    dead_callback: bool,
    /// `WITHINGS_TELEMETRY_PATH`, as the library is told it (config checks aside).
    telemetry_path: &'a str,
    /// `WITHINGS_WEB_MAX_CONNECTIONS`, when not the default.
    max_connections: Option<usize>,
    /// How long a body may take, when not the default.
    body_deadline: Option<Duration>,
    /// `WITHINGS_COLLECTORS`, when not the default; the subscriptions follow it.
    collectors: Option<&'a str>,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Self {
            accounts: &[("mom", "1001"), ("dad", "1002")],
            budget: 120,
            web: None,
            min_interval: Duration::from_secs(30),
            safety_poll: Duration::from_secs(3600),
            dead_callback: false,
            telemetry_path: "/metrics",
            max_connections: None,
            body_deadline: None,
            collectors: None,
        }
    }
}

async fn harness(setup: Setup<'_>) -> Harness {
    let sim = Simulator::start(SimulatorOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    for (name, userid) in setup.accounts {
        sim.add_user(userid);
        sim.upsert_user_group(userid, group(1, now() - 86_400, 70_000))
            .unwrap();
        common::accounts::write_account(&sim, &tokens, name, userid);
    }
    let (client_id, client_secret) = sim.client_credentials();
    let mut vars: Vec<(String, String)> = [
        ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0".to_string()),
        ("WITHINGS_API_URL", sim.url().to_string()),
        ("WITHINGS_TOKEN_DIR", tokens.display().to_string()),
        ("WITHINGS_CLIENT_ID", client_id),
        ("WITHINGS_CLIENT_SECRET", client_secret),
        ("WITHINGS_REQUESTS_PER_MINUTE", setup.budget.to_string()),
        ("WITHINGS_TIMEOUT_SECONDS", "5".to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into();
    if let Some(collectors) = setup.collectors {
        vars.push(("WITHINGS_COLLECTORS".into(), collectors.into()));
    }
    let config = Config::from_vars(vars).unwrap();
    let app = Arc::new(App::from_config(&config).unwrap());
    let mut server = common::bind(Arc::clone(&app))
        .await
        .with_telemetry_path(setup.telemetry_path);
    if let Some(max_connections) = setup.max_connections {
        server = server.with_limits(withings_exporter::http::server::ServerLimits {
            max_connections,
            ..Default::default()
        });
    }
    if let Some(deadline) = setup.body_deadline {
        server = server.with_body_deadline(deadline);
    }
    if let Some((user, password)) = setup.web {
        let hash = bcrypt::hash(password, 4).unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, format!("basic_auth_users:\n  {user}: {hash}\n")).unwrap();
        server = server.with_web_config(Arc::new(WebConfig::load(path).unwrap()));
    }
    let addr = server.local_addr().unwrap();
    let target = if setup.dead_callback {
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        dead_addr
    } else {
        addr
    };
    let base = callback::parse_callback_url(&format!("http://{target}/withings/notify")).unwrap();
    let secret = callback::load_or_create_secret(&tokens.join(callback::SECRET_FILE)).unwrap();
    let secret_text = secret.expose().to_owned();
    app.set_notifier(Notifier::new(
        Callback::new(base, secret),
        NotifySettings {
            min_interval: setup.min_interval,
            safety_poll: setup.safety_poll,
            applis: app.collectors().applis(),
            subscribe_spacing: Duration::ZERO,
            reconcile_interval: Duration::from_secs(3 * 3600),
        },
        app.clock().clone(),
    ));
    let server = common::serve(server);
    withings_exporter::withings::install_crypto_provider();
    Harness {
        sim,
        app,
        addr,
        secret: secret_text,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        _dir: dir,
        server: Some(server),
    }
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
    fn notify_url(&self) -> String {
        self.url(&format!("/withings/notify/{}", self.secret))
    }
    async fn post(&self, url: &str, body: &str) -> reqwest::StatusCode {
        self.http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .status()
    }
    /// The body of `GET path`, which must be answered.
    async fn get_text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
    async fn probe(&self, account: &str) -> String {
        self.get_text(&format!("/probe?account={account}")).await
    }
    fn measures(&self) -> usize {
        self.sim.request_count("/measure")
    }
    async fn wait_for(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    async fn subscribe_all(&self) {
        let n = self.app.notifier().unwrap();
        n.reconcile_due(&self.app).await;
        for a in self.app.accounts() {
            assert!(
                n.schedule().is_subscribed(a.name()),
                "{} not subscribed",
                a.name()
            );
        }
    }
}

fn weight(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with("withings_weight_grams"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn head_and_post_on_right_and_wrong_paths_without_basic_auth() {
    let h = harness(Setup::default()).await;
    let head = h.http.head(h.notify_url()).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let wrong = h.url("/withings/notify/AAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(h.http.head(&wrong).send().await.unwrap().status(), 404);
    assert_eq!(h.post(&wrong, "userid=1001&appli=1").await, 404);
    assert_eq!(
        h.post(&h.url("/withings/notify"), "userid=1001&appli=1")
            .await,
        404
    );
    assert_eq!(h.post(&h.notify_url(), "appli=1").await, 400);
    assert_eq!(h.post(&h.notify_url(), &"x".repeat(9000)).await, 413);
    assert_eq!(
        h.http.get(h.notify_url()).send().await.unwrap().status(),
        405
    );
    // Unknown user and an appli no collector needs: 200, so Withings does not retry; no fetch.
    assert_eq!(h.post(&h.notify_url(), "userid=999&appli=1").await, 200);
    assert_eq!(h.post(&h.notify_url(), "userid=1001&appli=16").await, 200);
    assert_eq!(h.measures(), 0);
    let metrics = h.get_text("/metrics").await;
    for (appli, outcome, n) in [
        ("none", "wrong_secret", 2.0),
        ("1", "malformed", 1.0),
        ("none", "too_large", 1.0),
        ("none", "wrong_method", 1.0),
        ("none", "head", 1.0),
        ("1", "unknown_userid", 1.0),
        ("16", "ignored_appli", 1.0),
    ] {
        let series =
            format!("withings_notifications_total{{appli=\"{appli}\",outcome=\"{outcome}\"}}");
        assert_eq!(sample(&metrics, &series), Some(n), "{series}\n{metrics}");
    }
    assert!(!metrics.contains(&h.secret));
    // A valid notification, with Withings' fields and an unknown extra one: 200 at once,
    // then one fetch of that account.
    let status = h
        .post(
            &h.notify_url(),
            &format!(
                "userid=1002&appli=1&startdate={}&enddate={}&colour=blue",
                now() - 60,
                now()
            ),
        )
        .await;
    assert_eq!(status, 200);
    h.wait_for("the notified fetch", |h| h.measures() == 1)
        .await;
    let req = &h
        .sim
        .requests()
        .into_iter()
        .find(|r| r.path == "/measure")
        .unwrap();
    assert!(req.bearer.is_some());
    // The fetch was the notified account's (dad, 1002), not one of the refused ones'.
    let fetched =
        |h: &Harness, name: &str| h.app.account(name).unwrap().health().last_success.is_some();
    h.wait_for("dad's fetch to end", |h| fetched(h, "dad"))
        .await;
    assert!(!fetched(&h, "mom"));
    assert_eq!(h.measures(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_basic_auth_only_the_notification_path_is_open() {
    let h = harness(Setup {
        web: Some(("prom", "s3cret-pass")),
        ..Setup::default()
    })
    .await;
    assert_eq!(
        h.http.get(h.url("/metrics")).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        h.http
            .get(h.url("/probe?account=mom"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        h.http.head(h.notify_url()).send().await.unwrap().status(),
        200
    );
    assert_eq!(h.post(&h.notify_url(), "userid=1001&appli=1").await, 200);
    // A wrong secret is not let through to anything else: 404, never a fetch.
    assert_eq!(
        h.post(&h.url("/withings/notify/guess"), "userid=1001&appli=1")
            .await,
        404
    );
    // Paths that merely look alike still need credentials.
    assert_eq!(
        h.http
            .get(h.url("/withings/notifyx"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    h.wait_for("the notified fetch", |h| h.measures() == 1)
        .await;
    let ok = h
        .http
        .get(h.url("/probe?account=mom"))
        .basic_auth("prom", Some("s3cret-pass"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_under_the_notification_path_is_served_without_credentials() {
    // Bug 6: the metrics path under the callback path answered the vitals without
    // credentials. The configuration refuses it at start; the server, told so anyway, sends
    // every path under the notification path to the receiver alone.
    let h = harness(Setup {
        web: Some(("prom", "s3cret-pass")),
        telemetry_path: "/withings/notify/metrics",
        ..Setup::default()
    })
    .await;
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let response = h
            .http
            .request(method.clone(), h.url("/withings/notify/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{method}");
        let body = response.text().await.unwrap();
        assert!(!body.contains("withings_"), "{method}: {body}");
    }
    // The notification path itself still works without credentials.
    assert_eq!(
        h.http.head(h.notify_url()).send().await.unwrap().status(),
        200
    );
}

/// Starts a notification with the right secret whose body never comes: the headers, and
/// then nothing of the 100 bytes announced.
async fn slow_notification(addr: SocketAddr, secret: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /withings/notify/{secret} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nuserid=1"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_notification_bodies_do_not_lock_out_the_other_clients() {
    // Bug 5: bodies sent a byte at a time with the right secret kept every connection busy,
    // and /probe and /-/healthy timed out.
    const CAP: usize = 8;
    let h = harness(Setup {
        max_connections: Some(CAP),
        body_deadline: Some(Duration::from_millis(300)),
        ..Setup::default()
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..CAP * 3 {
        slow.push(slow_notification(h.addr, &h.secret).await);
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for path in ["/-/healthy", "/probe?account=mom"] {
        let response = client
            .get(h.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path} behind slow notifications: {e}"));
        assert_eq!(response.status(), 200, "{path}");
    }
    // Each slow body gets an answer within its deadline (408) or at once (503, beyond the
    // notification path's share of the connections), and none is held open for ever.
    let mut answers = Vec::new();
    for mut stream in slow {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a slow notification was never answered");
        // Closed (reset: the server closes with the body unread) counts as an answer too.
        let read = read.unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..read]).to_string();
        answers.push(head.lines().next().unwrap_or("").to_owned());
    }
    assert!(
        answers
            .iter()
            .all(|a| a.contains(" 408 ") || a.contains(" 503 ") || a.is_empty()),
        "{answers:?}"
    );
    assert!(answers.iter().any(|a| a.contains(" 408 ")), "{answers:?}");
    // A real notification still gets through afterwards.
    assert_eq!(h.post(&h.notify_url(), "userid=1001&appli=1").await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribed_accounts_are_served_from_state_and_fetched_on_notification() {
    let h = harness(Setup::default()).await;
    h.subscribe_all().await;
    assert_eq!(h.sim.subscriptions("1001").len(), 3);
    // The safety poll is due for an account never fetched: the first probe fetches.
    let first = h.probe("mom").await;
    assert_eq!(weight(&first), Some(70_000.0), "{first}");
    assert_eq!(
        sample(&first, "withings_notification_subscribed{appli=\"1\"}"),
        Some(1.0),
        "{first}"
    );
    let before = h.measures();
    // Later probes cost nothing.
    for _ in 0..5 {
        let text = h.probe("mom").await;
        assert_eq!(sample(&text, "withings_up"), Some(1.0));
        assert!(text.contains("served_from=\"subscribed\""), "{text}");
    }
    assert_eq!(h.measures(), before);
    // A reading arrives by push: the simulator POSTs the notification; the fetch follows.
    let delivered = h
        .sim
        .add_reading_and_notify("1001", group(2, now() - 10, 71_500))
        .await
        .unwrap();
    assert_eq!(delivered, 1);
    h.wait_for("the notified fetch", |h| h.measures() == before + 1)
        .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let text = h.probe("mom").await;
        if weight(&text) == Some(71_500.0) {
            assert!(sample(&text, "withings_last_notification_timestamp_seconds").is_some());
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.measures(), before + 1);
    let page = h.get_text("/").await;
    assert!(page.contains("Last notification") && !page.contains(&h.secret));
}

/// What reached the simulator from the `from`th request on: each endpoint and action once,
/// the token and subscription endpoints left out.
fn endpoints_asked(sim: &Simulator, from: usize) -> std::collections::BTreeSet<String> {
    sim.requests()
        .into_iter()
        .skip(from)
        .filter(|r| !r.path.contains("oauth2") && r.path != "/notify")
        .map(|r| {
            let action = r.params.get("action").cloned().unwrap_or_default();
            format!("{} {action}", r.path)
        })
        .collect()
}

/// Issue 20: a notification's fetch asks only the endpoints of the collectors its `appli`
/// concerns (an ECG does not cost the day's minutes, a night not the ECGs); the safety poll
/// asks them all.
#[tokio::test(flavor = "multi_thread")]
async fn a_notification_wakes_only_its_own_collectors() {
    let h = harness(Setup {
        accounts: &[("mom", "1001")],
        collectors: Some(
            "measures,activity,sleep,devices,workouts,intraday,sleep_detail,heart,goals",
        ),
        ..Setup::default()
    })
    .await;
    h.subscribe_all().await;
    assert_eq!(h.sim.subscriptions("1001").len(), 6);
    let every = [
        "/measure getmeas",
        "/v2/heart list",
        "/v2/measure getactivity",
        "/v2/measure getintradayactivity",
        "/v2/measure getworkouts",
        "/v2/sleep get",
        "/v2/sleep getsummary",
        "/v2/user getdevice",
        "/v2/user getgoals",
    ];
    let start = h.sim.requests().len();
    let text = h.probe("mom").await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
    assert_eq!(
        endpoints_asked(&h.sim, start),
        every.iter().map(|e| e.to_string()).collect(),
        "the first fetch (the safety poll) reads every collector"
    );
    let n = h.app.notifier().unwrap();
    let cases: [(i64, &[&str]); 4] = [
        (54, &["/v2/heart list"]),
        (44, &["/v2/sleep get", "/v2/sleep getsummary"]),
        (
            16,
            &[
                "/v2/measure getactivity",
                "/v2/measure getintradayactivity",
                "/v2/measure getworkouts",
            ],
        ),
        (4, &["/measure getmeas"]),
    ];
    for (appli, expected) in cases {
        // Past the minimum interval, so that the receiver starts the fetch itself.
        h.app.clock().advance(Duration::from_secs(31));
        let from = h.sim.requests().len();
        let now = now();
        assert_eq!(h.sim.notify_user("1001", appli, now - 600, now).await, 1);
        h.wait_for(&format!("the fetch of appli {appli}"), |h| {
            n.fetches_in_flight() == 0 && h.sim.requests().len() > from
        })
        .await;
        assert_eq!(
            endpoints_asked(&h.sim, from),
            expected.iter().map(|e| e.to_string()).collect(),
            "appli {appli}"
        );
    }
    // An hour after the first fetch the safety poll reads every collector again, however
    // many notified fetches came between.
    h.app.clock().advance(Duration::from_secs(3600));
    let from = h.sim.requests().len();
    let text = h.probe("mom").await;
    assert!(text.contains("served_from=\"new_fetch\""), "{text}");
    assert_eq!(
        endpoints_asked(&h.sim, from),
        every.iter().map(|e| e.to_string()).collect()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notification_during_a_probe_shares_its_fetch() {
    let h = harness(Setup::default()).await;
    h.sim.hold();
    let probe = {
        let http = h.http.clone();
        let url = h.url("/probe?account=dad");
        tokio::spawn(async move { http.get(url).send().await.unwrap().text().await.unwrap() })
    };
    h.wait_for("the probe's fetch", |h| h.measures() == 1).await;
    assert_eq!(h.post(&h.notify_url(), "userid=1002&appli=4").await, 200);
    // The notification joined the running fetch instead of starting another.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.measures(), 1);
    h.sim.release();
    let text = probe.await.unwrap();
    assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
    assert_eq!(h.measures(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notified_fetch_is_in_flight_until_it_ends() {
    let h = harness(Setup::default()).await;
    h.subscribe_all().await;
    h.probe("mom").await;
    let n = h.app.notifier().unwrap();
    assert_eq!(n.fetches_in_flight(), 0);
    let before = h.measures();
    h.sim.hold();
    assert_eq!(h.post(&h.notify_url(), "userid=1001&appli=1").await, 200);
    h.wait_for("the notified fetch to reach Withings", |h| {
        h.measures() == before + 1 && n.fetches_in_flight() == 1
    })
    .await;
    h.sim.release();
    h.wait_for("the notified fetch to end", |_| n.fetches_in_flight() == 0)
        .await;
    assert_eq!(h.measures(), before + 1);
}

/// The `notify` calls of each action that reached the simulator.
fn notify_calls(sim: &Simulator, action: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| {
            r.path == "/notify" && r.params.get("action").map(String::as_str) == Some(action)
        })
        .count()
}

/// When the budget holds an account's subscribes back, the next check goes on from the list
/// it has instead of listing again: subscribing costs one `list` and one `subscribe` per
/// `appli`, however thin the budget (found by benches/beats.rs: 1,000 new accounts spent
/// 22,000 to 49,000 requests on it instead of 7,000).
#[tokio::test(flavor = "multi_thread")]
async fn subscribes_held_back_by_the_budget_resume_without_listing_again() {
    let h = harness(Setup {
        accounts: &[("mom", "1001")],
        budget: 2,
        collectors: Some(
            "measures,activity,sleep,devices,workouts,intraday,sleep_detail,heart,goals",
        ),
        ..Setup::default()
    })
    .await;
    let n = h.app.notifier().unwrap();
    let mut rounds = 0;
    while !n.schedule().is_subscribed("mom") {
        rounds += 1;
        assert!(rounds <= 10, "not subscribed after {rounds} minutes");
        n.reconcile_due(&h.app).await;
        h.app.clock().advance(Duration::from_secs(61));
    }
    assert_eq!(h.sim.subscriptions("1001").len(), 6);
    // The actions only: a subscribe's form holds the callback's secret.
    let actions: Vec<String> = h
        .sim
        .requests()
        .iter()
        .filter_map(|r| r.params.get("action").cloned())
        .collect();
    assert_eq!(notify_calls(&h.sim, "list"), 1, "{actions:?}");
    assert_eq!(notify_calls(&h.sim, "subscribe"), 6);
    // Two a minute: the list and the six subscribes took four minutes.
    assert_eq!(rounds, 4);
    // The next reconciliation lists again, as it must (Withings may have cancelled some).
    h.app.clock().advance(Duration::from_secs(3 * 3600));
    n.reconcile_due(&h.app).await;
    assert_eq!(notify_calls(&h.sim, "list"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_that_disappears_is_made_again() {
    let h = harness(Setup::default()).await;
    h.subscribe_all().await;
    let n = h.app.notifier().unwrap();
    h.sim.drop_subscriptions("1001");
    // Not due yet: nothing is listed before the reconcile interval.
    assert_eq!(n.reconcile_due(&h.app).await, 0);
    h.app.clock().advance(Duration::from_secs(3 * 3600 + 1));
    assert_eq!(n.reconcile_due(&h.app).await, 2);
    let appli: Vec<i64> = h
        .sim
        .subscriptions("1001")
        .iter()
        .map(|s| s.appli)
        .collect();
    assert_eq!(appli, vec![1, 2, 4]);
    assert!(
        h.sim.subscriptions("1001")[0]
            .callbackurl
            .ends_with(&h.secret)
    );
    // dad's were still there: listed, none subscribed twice.
    assert_eq!(h.sim.subscriptions("1002").len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_subscription_is_retried_with_backoff_and_the_account_polled() {
    let h = harness(Setup {
        dead_callback: true,
        ..Setup::default()
    })
    .await;
    let n = h.app.notifier().unwrap();
    let checked = withings_exporter::notify::subscribe::check_account(
        n,
        &h.app,
        &h.app.account("mom").unwrap(),
    )
    .await;
    let withings_exporter::notify::subscribe::Checked::Failed(reason) = checked else {
        panic!("{checked:?}");
    };
    assert!(
        reason.contains("293") && reason.contains("443") && reason.contains("HEAD"),
        "{reason}"
    );
    assert!(!reason.contains(&h.secret));
    assert_eq!(n.reconcile_due(&h.app).await, 2);
    assert!(h.sim.subscriptions("1001").is_empty());
    assert!(!n.schedule().is_subscribed("mom"));
    // Meanwhile the account is polled on every probe, as without notifications.
    let before = h.measures();
    let _ = h.probe("mom").await;
    let _ = h.probe("mom").await;
    assert_eq!(h.measures(), before + 2);
    // Retried only after the backoff.
    assert_eq!(n.reconcile_due(&h.app).await, 0);
    h.app
        .clock()
        .advance(withings_exporter::notify::subscribe::FIRST_BACKOFF);
    assert_eq!(n.reconcile_due(&h.app).await, 2);
    assert_eq!(n.reconcile_due(&h.app).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_safety_poll_fetches_a_quiet_subscribed_account() {
    let h = harness(Setup::default()).await;
    h.subscribe_all().await;
    let _ = h.probe("mom").await;
    let before = h.measures();
    h.app.clock().advance(Duration::from_secs(3599));
    let _ = h.probe("mom").await;
    assert_eq!(h.measures(), before);
    h.app.clock().advance(Duration::from_secs(2));
    let text = h.probe("mom").await;
    assert_eq!(h.measures(), before + 1, "{text}");
    assert!(text.contains("served_from=\"new_fetch\""), "{text}");
    let _ = h.probe("mom").await;
    assert_eq!(h.measures(), before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_forged_notifications_costs_one_fetch_per_account_per_interval() {
    let accounts: Vec<(String, String)> = (0..5)
        .map(|i| (format!("a{i}"), format!("20{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = accounts
        .iter()
        .map(|(a, u)| (a.as_str(), u.as_str()))
        .collect();
    let h = harness(Setup {
        accounts: &refs,
        budget: 30,
        ..Setup::default()
    })
    .await;
    h.subscribe_all().await;
    let notify_calls = h.sim.request_count("/notify");
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..10_000 {
        let t = Instant::now();
        let body = format!("userid=20{}&appli=1&startdate=1&enddate=2", i % 5);
        assert_eq!(h.post(&h.notify_url(), &body).await, 200);
        slowest = slowest.max(t.elapsed());
    }
    let _ = started;
    // Let the triggered fetches finish, then count: one per account in the window.
    h.wait_for("the fetches", |h| h.measures() >= 5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.measures(), 5, "one fetch per account per interval");
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    // Another window: again at most one per account, and never over the budget.
    h.app.clock().advance(Duration::from_secs(30));
    for i in 0..1000 {
        let body = format!("userid=20{}&appli=1", i % 5);
        assert_eq!(h.post(&h.notify_url(), &body).await, 200);
    }
    h.wait_for("the second window's fetches", |h| h.measures() >= 10)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.measures(), 10);
    assert_eq!(h.sim.request_count("/notify"), notify_calls);
    assert!(h.sim.max_requests_in_any_minute() <= 30 + notify_calls);
}

// One thread: `set_default` captures only the thread it is set on, and the server, the
// handlers and the fetches they start must all log into the capture.
#[tokio::test(flavor = "current_thread")]
async fn the_secret_is_never_logged() {
    let logs = common::CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = harness(Setup::default()).await;
    h.subscribe_all().await;
    let _ = h.probe("mom").await;
    assert_eq!(h.post(&h.notify_url(), "userid=1001&appli=1").await, 200);
    let _ = h
        .post(&h.url("/withings/notify/wrong"), "userid=1001&appli=1")
        .await;
    let _ = h.post(&h.notify_url(), "garbage").await;
    h.app.clock().advance(Duration::from_secs(4 * 3600));
    h.sim.drop_subscriptions("1001");
    h.app.notifier().unwrap().reconcile_due(&h.app).await;
    let lines = withings_exporter::notify::cli::run(
        &h.app,
        withings_exporter::notify::cli::Action::List,
        None,
    )
    .await
    .unwrap();
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("<redacted>") && !l.contains(&h.secret)),
        "{lines:?}"
    );
    let text = logs.text();
    assert!(!text.contains(&h.secret), "{text}");
    // The capture saw the handlers' lines, not only the test's own.
    assert!(
        text.contains("wrong secret refused") && text.contains("subscribed to Withings"),
        "{text}"
    );
    assert!(!format!("{:?}", h.app.notifier().unwrap()).contains(&h.secret));
}

/// `notify list|revoke` ask through the same retry as every other request: a token Withings
/// says has expired is refreshed and the request asked again, once.
#[tokio::test]
async fn the_notify_command_refreshes_an_expired_token_and_asks_again() {
    let h = harness(Setup {
        accounts: &[("mom", "1001")],
        ..Setup::default()
    })
    .await;
    h.subscribe_all().await;
    let account = h.app.account("mom").unwrap();
    let expired = account.tokens().access_token().await.unwrap();
    // Withings' clock past the token's three hours; the exporter's still within them, so
    // it learns of the expiry only from the answer.
    h.sim.set_clock(Some(now() + 4 * 3600));
    let (notify_before, oauth_before) = (
        h.sim.request_count("/notify"),
        h.sim.request_count("/v2/oauth2"),
    );
    let lines = withings_exporter::notify::cli::run(
        &h.app,
        withings_exporter::notify::cli::Action::List,
        Some("mom"),
    )
    .await
    .unwrap();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("appli=") && !l.contains("error")),
        "{lines:?}"
    );
    // The refused list, one refresh, the list asked again.
    assert_eq!(h.sim.request_count("/notify") - notify_before, 2);
    assert_eq!(h.sim.request_count("/v2/oauth2") - oauth_before, 1);
    let fresh = account.tokens().access_token().await.unwrap();
    assert_ne!(fresh.expose(), expired.expose());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_account_whose_answers_stall_does_not_delay_the_others_subscriptions() {
    let h = harness(Setup::default()).await;
    // dad comes first: checked one after another, mom would wait for his stalled requests
    // until they timed out (WITHINGS_TIMEOUT_SECONDS 5), and his check would have failed.
    let order: Vec<String> = h
        .app
        .accounts()
        .iter()
        .map(|a| a.name().to_owned())
        .collect();
    assert_eq!(order, ["dad", "mom"]);
    h.sim.hold_user("1002");
    let app = Arc::clone(&h.app);
    let round = tokio::spawn(async move { app.notifier().unwrap().reconcile_due(&app).await });
    h.wait_for("mom's subscriptions while dad's answers stall", |h| {
        h.sim.subscriptions("1001").len() == 3
    })
    .await;
    assert!(h.sim.subscriptions("1002").is_empty());
    // dad's request is still waiting for its answer, well within its timeout.
    h.sim.release_user("1002");
    assert_eq!(round.await.unwrap(), 2);
    assert_eq!(h.sim.subscriptions("1002").len(), 3);
    let n = h.app.notifier().unwrap();
    assert!(n.schedule().is_subscribed("mom") && n.schedule().is_subscribed("dad"));
    // Both checked: neither is due again before the reconcile interval.
    assert_eq!(n.reconcile_due(&h.app).await, 0);
}
