//! Issue 14, the HTTP side, as a hostile client would try it: basic-auth floods from clients
//! that hang up, passwords longer than bcrypt reads, idle connections beyond the cap and the
//! file-descriptor limit, SIGHUP without a web configuration, a drain as long as the longest
//! scrape, and HEAD's Content-Length. Assertions are on counts, never on timing.

use crate::common;

use base64::Engine;
use common::process::{BIN, ChildGuard, capture_stderr, served_url, signal, wait_for_log};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use withings_exporter::account::tokens::TokenSource;
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_exporter::http::connections::Connections;
use withings_exporter::http::server::ServerLimits;
use withings_exporter::http::web_config::{
    CONCURRENT_CHECKS, MAX_FAILURES_PER_ADDRESS, MAX_PASSWORD_BYTES, WebConfig,
};
use withings_sim::Simulator;

const DEADLINE: Duration = Duration::from_secs(20);

/// An exporter server on port 0 against a simulator with the measurement fixture.
struct Served {
    address: SocketAddr,
    connections: Arc<Connections>,
    simulator: Simulator,
    server: Option<common::Served>,
}

impl Drop for Served {
    fn drop(&mut self) {
        // The server first, as before: dropping it stops it.
        self.server.take();
        self.simulator.stop();
    }
}

impl Served {
    async fn start(
        env: &[(&str, &str)],
        web: Option<Arc<WebConfig>>,
        limits: impl FnOnce(&Config) -> ServerLimits,
    ) -> Self {
        let simulator = common::simulator_serving("measurement_list.json").await;
        let mut vars = vec![
            ("WITHINGS_LISTEN_ADDRESS".to_string(), "127.0.0.1:0".into()),
            ("WITHINGS_API_URL".into(), simulator.url().to_string()),
            ("WITHINGS_ACCESS_TOKEN".into(), common::TOKEN.into()),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_vars(vars).unwrap();
        let exporter =
            App::with_tokens(&config, TokenSource::Static(common::TOKEN.into())).unwrap();
        let mut app = common::bind(Arc::new(exporter))
            .await
            .with_limits(limits(&config));
        if let Some(web) = web {
            app = app.with_web_config(web);
        }
        let connections = app.connections();
        let server = common::serve(app);
        Self {
            address: server.address,
            connections,
            simulator,
            server: Some(server),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A client whose connections come from `source` (any 127/8 address works on loopback), with
/// no pooling: every request is a new connection.
fn client_from(source: Ipv4Addr, timeout: Duration) -> reqwest::Client {
    withings_exporter::withings::install_crypto_provider();
    reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build()
        .unwrap()
}

fn web_config_with(dir: &Path, user: &str, password: &str, cost: u32) -> Arc<WebConfig> {
    let hash = bcrypt::hash(password, cost).unwrap();
    let path = dir.join("web.yml");
    std::fs::write(&path, format!("basic_auth_users:\n  {user}: {hash}\n")).unwrap();
    Arc::new(WebConfig::load(path).unwrap())
}

/// Defect 2: wrong passwords from clients that hang up after 30 ms. The checks they leave
/// behind still run one at a time, the flood is refused at once beyond a few pending checks
/// and after its address's failures, and Prometheus' fresh login from its own address, then
/// its cached one, still get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_wrong_passwords_from_clients_that_hang_up_does_not_keep_prometheus_out() {
    let dir = tempfile::tempdir().unwrap();
    // Cost 4 in a debug build: a check lasts longer than the 30 ms after which the flooders
    // hang up.
    let web = web_config_with(dir.path(), "prometheus", "the-right-one", 4);
    let served = Served::start(&[], Some(Arc::clone(&web)), |_| ServerLimits::default()).await;
    let url = served.url("/metrics");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flooders = Vec::new();
    for source in 2..=4u8 {
        for task in 0..4 {
            let (stop, url) = (Arc::clone(&stop), url.clone());
            flooders.push(tokio::spawn(async move {
                let client =
                    client_from(Ipv4Addr::new(127, 0, 0, source), Duration::from_millis(30));
                let mut sent = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let guess = basic("prometheus", &format!("guess-{task}-{sent}"));
                    // Errors are the point: the client gives up after 30 ms.
                    let _ = client.get(&url).header("authorization", guess).send().await;
                    sent += 1;
                    // About 300 guesses a second in all (the issue measured 200), without
                    // running the machine out of ephemeral ports once the 429s come fast.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                sent
            }));
        }
    }
    // The flood has done its worst: each flooding address has used up its failures.
    let flood_addresses = 3;
    let deadline = Instant::now() + DEADLINE;
    while web.current().users.check_stats().completed
        < u64::from(MAX_FAILURES_PER_ADDRESS) * flood_addresses
    {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            web.current().users.check_stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let prometheus = client_from(Ipv4Addr::LOCALHOST, Duration::from_secs(10));
    let right = basic("prometheus", "the-right-one");
    let mut served_scrapes = 0;
    for _ in 0..3 {
        // The first pays bcrypt behind whatever the flood still has pending; the others come
        // from the cache.
        let response = prometheus
            .get(&url)
            .header("authorization", &right)
            .send()
            .await
            .expect("Prometheus' scrape was answered in time");
        assert_eq!(response.status(), 200);
        served_scrapes += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for flooder in flooders {
        sent += flooder.await.unwrap();
    }
    assert_eq!(served_scrapes, 3);

    let deadline = Instant::now() + DEADLINE;
    while web.current().users.check_stats().running > 0 {
        assert!(Instant::now() < deadline, "checks never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = web.current().users.check_stats();
    assert!(stats.peak_running <= CONCURRENT_CHECKS, "{stats:?}");
    // Most of the flood never reached bcrypt: each address is limited to its failures (and
    // perhaps a few checks pending when it was locked out) plus Prometheus' one check.
    assert!(
        stats.completed <= u64::from(MAX_FAILURES_PER_ADDRESS + 2) * flood_addresses + 1,
        "{stats:?} for {sent} guesses"
    );
    assert!(
        u64::from(sent) > stats.completed,
        "{stats:?} for {sent} guesses"
    );

    // A locked-out address is told to wait, with Retry-After, not asked for a password.
    let flooder = client_from(Ipv4Addr::new(127, 0, 0, 2), Duration::from_secs(10));
    let refused = flooder
        .get(&url)
        .header("authorization", basic("prometheus", "one-more-guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

/// Issue 22: behind a proxy, Prometheus and a guesser share one address. Ten failed logins
/// locked the address out, Prometheus' already verified login included.
#[tokio::test(flavor = "multi_thread")]
async fn a_locked_out_address_still_lets_in_credentials_the_cache_knows() {
    let dir = tempfile::tempdir().unwrap();
    let web = web_config_with(dir.path(), "prometheus", "right", 4);
    let served = Served::start(&[], Some(web), |_| ServerLimits::default()).await;
    let proxy = client_from(Ipv4Addr::new(127, 0, 0, 3), Duration::from_secs(10));
    let status = |password: &'static str| {
        let (client, url) = (proxy.clone(), served.url("/metrics"));
        async move {
            client
                .get(url)
                .header("authorization", basic("prometheus", password))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status("right").await, 200);
    for _ in 0..MAX_FAILURES_PER_ADDRESS {
        assert_eq!(status("guess").await, 401);
    }
    assert_eq!(status("guess").await, 429);
    assert_eq!(status("right").await, 200);
    assert_eq!(status("guess").await, 429);
}

/// Weakness 9: bcrypt reads 72 bytes; a longer password with the right first 72 bytes got in.
#[tokio::test(flavor = "multi_thread")]
async fn a_password_longer_than_72_bytes_is_refused_even_with_the_right_first_72() {
    let dir = tempfile::tempdir().unwrap();
    let real = "0123456789abcdef".repeat(5)[..MAX_PASSWORD_BYTES].to_string();
    let web = web_config_with(dir.path(), "prometheus", &real, 4);
    let served = Served::start(&[], Some(web), |_| ServerLimits::default()).await;
    let client = common::http();
    let status = |password: String| {
        let (client, url) = (client.clone(), served.url("/metrics"));
        async move {
            client
                .get(url)
                .header("authorization", basic("prometheus", &password))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for suffix in ["!", "-and-then-some"] {
        assert_eq!(status(format!("{real}{suffix}")).await, 401, "{suffix}");
    }
    assert_eq!(status(real.clone()).await, 200);
    // Even once the real one is cached.
    assert_eq!(status(format!("{real}!")).await, 401);
}

/// Weakness 6: idle connections beyond the cap. The idlest are closed to make room, so the
/// real scrapes that come after them are served, and the open connections never exceed it.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_beyond_the_cap_do_not_starve_scrapes() {
    const CAP: usize = 8;
    let served = Served::start(&[], None, |config| ServerLimits {
        max_connections: CAP,
        ..ServerLimits::from_config(&config.server, &config.withings)
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..CAP * 5 {
        idle.push(
            tokio::net::TcpStream::connect(served.address)
                .await
                .unwrap(),
        );
    }
    let client = client_from(Ipv4Addr::LOCALHOST, Duration::from_secs(10));
    let mut served_scrapes = 0;
    for _ in 0..5 {
        let response = client
            .get(served.url("/metrics"))
            .send()
            .await
            .expect("a scrape behind idle connections was answered");
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert_eq!(common::sample(&text, "withings_up"), Some(1.0), "{text}");
        served_scrapes += 1;
    }
    assert_eq!(served_scrapes, 5);
    let stats = served.connections.stats();
    assert!(stats.peak_open <= CAP, "{stats:?}");
    // Every idle connection beyond the cap, at least, made room by closing an older one.
    assert!(stats.closed_idle >= (CAP * 4) as u64, "{stats:?}");
    drop(idle);
}

/// A scrape in flight is never closed to make room: with every place taken by busy
/// connections, a new client waits, and is served once one ends.
#[tokio::test(flavor = "multi_thread")]
async fn busy_connections_are_not_closed_to_make_room() {
    let served = Served::start(&[("WITHINGS_TIMEOUT_SECONDS", "10")], None, |config| {
        ServerLimits {
            max_connections: 1,
            ..ServerLimits::from_config(&config.server, &config.withings)
        }
    })
    .await;
    served.simulator.hold();
    let client = client_from(Ipv4Addr::LOCALHOST, DEADLINE);
    let first = tokio::spawn({
        let (client, url) = (client.clone(), served.url("/metrics"));
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    let deadline = Instant::now() + DEADLINE;
    while served.simulator.request_count("/measure") == 0 {
        assert!(
            Instant::now() < deadline,
            "the first scrape never reached Withings"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = tokio::spawn({
        let (client, url) = (client.clone(), served.url("/-/healthy"));
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    // The second cannot get in while the first is busy: nothing idle to close.
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        assert!(!second.is_finished(), "served beyond the cap");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served.simulator.release();
    assert_eq!(first.await.unwrap().unwrap(), 200);
    assert_eq!(second.await.unwrap().unwrap(), 200);
    assert_eq!(served.connections.stats().closed_idle, 0);
}

/// Weakness 11, the server side: shutdown drains for as long as the longest scrape
/// (WITHINGS_TIMEOUT_SECONDS) and a margin, not a fixed 10 s, so a scrape waiting on a slow
/// Withings is answered, not cut.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_a_scrape_waiting_on_withings_finish_within_its_timeout() {
    let mut served = Served::start(&[("WITHINGS_TIMEOUT_SECONDS", "12")], None, |config| {
        ServerLimits::from_config(&config.server, &config.withings)
    })
    .await;
    served.simulator.hold();
    let scrape = tokio::spawn({
        let (client, url) = (
            client_from(Ipv4Addr::LOCALHOST, Duration::from_secs(30)),
            served.url("/metrics"),
        );
        async move {
            let response = client.get(url).send().await?;
            let status = response.status();
            response.text().await.map(|text| (status, text))
        }
    });
    let deadline = Instant::now() + DEADLINE;
    while served.simulator.request_count("/measure") == 0 {
        assert!(
            Instant::now() < deadline,
            "the scrape never reached Withings"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    served.server.as_mut().unwrap().signal_stop();
    // Withings never answers: the scrape gives up after its 12 s and answers what it has.
    let (status, text) = scrape.await.unwrap().expect("the scrape was answered");
    assert_eq!(status, 200);
    assert!(text.contains("withings_up"), "{text}");
    served.server.take().unwrap().stop().await;
}

#[test]
fn the_drain_follows_the_scrape_timeout() {
    let config = Config::from_vars([("WITHINGS_TIMEOUT_SECONDS".into(), "90".into())]).unwrap();
    let limits = ServerLimits::from_config(&config.server, &config.withings);
    assert!(
        limits.shutdown_grace > Duration::from_secs(90),
        "{limits:?}"
    );
    assert!(
        limits.shutdown_grace <= Duration::from_secs(100),
        "{limits:?}"
    );
}

/// HEAD /metrics: the headers of a GET, Content-Length included, and no body. Two answers
/// differ only in the digits of `withings_scrape_duration_seconds`, so the GET's body with its
/// duration taken out must account for all of HEAD's length but a number's worth.
#[tokio::test(flavor = "multi_thread")]
async fn head_sends_the_content_length_a_get_would() {
    let served = Served::start(
        &[("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "3600")],
        None,
        |config| ServerLimits::from_config(&config.server, &config.withings),
    )
    .await;
    let client = common::http();
    // The first scrape fetches, the next ones are served that fetch: once both kinds have
    // been counted, the families stay the same from one answer to the next.
    for _ in 0..2 {
        client.get(served.url("/metrics")).send().await.unwrap();
    }
    for path in ["/", "/-/healthy", "/metrics"] {
        let head = client.head(served.url(path)).send().await.unwrap();
        let got = client.get(served.url(path)).send().await.unwrap();
        assert_eq!(got.status(), 200, "{path}");
        let get_length: usize = got.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = got.text().await.unwrap();
        assert_eq!(get_length, body.len(), "{path}");
        assert_eq!(head.status(), 200, "{path}");
        let head_length: usize = head
            .headers()
            .get("content-length")
            .unwrap_or_else(|| panic!("HEAD {path} without Content-Length"))
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(head.bytes().await.unwrap().is_empty(), "{path}");
        if path != "/metrics" {
            assert_eq!(head_length, get_length, "{path}");
            continue;
        }
        let duration = body
            .lines()
            .find_map(|l| l.strip_prefix("withings_scrape_duration_seconds "))
            .expect("a scrape duration");
        let rest = body.len() - duration.len();
        let head_duration = head_length.checked_sub(rest).unwrap_or_else(|| {
            panic!("HEAD's {head_length} bytes are fewer than GET's {rest} without the duration")
        });
        assert!(
            (1..=24).contains(&head_duration),
            "HEAD {head_length} bytes, GET {get_length} bytes with a {}-byte duration",
            duration.len()
        );
    }
}

fn exporter(vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0")
        .envs(vars.iter().copied())
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Defect 4: without a web configuration nothing handled SIGHUP, and its default action ended
/// the process; `systemctl reload` sends it. The demo serves a token directory, which a
/// SIGHUP reads again.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_without_a_web_config_rereads_the_accounts_and_the_exporter_keeps_serving() {
    let mut child = ChildGuard(exporter(&[]).spawn().unwrap());
    let log = capture_stderr(&mut child.0);
    let url = served_url(&log).await;
    for round in 1..=2 {
        signal(&child.0, libc::SIGHUP);
        wait_for_log(&log, "SIGHUP: read WITHINGS_TOKEN_DIR again", round).await;
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "{}",
            log.lock().unwrap()
        );
        let response = common::http().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
}

/// The single-account configuration has nothing to reload without a web configuration: a
/// SIGHUP is logged and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_nothing_to_reload_is_logged_and_the_exporter_keeps_serving() {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("RUST_LOG", "info")
        .env("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0")
        // Nothing listens there: this test never scrapes Withings' data, only the process.
        .env("WITHINGS_API_URL", "http://127.0.0.1:9/")
        .env("WITHINGS_ACCESS_TOKEN", "fixed-token")
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = ChildGuard(cmd.spawn().unwrap());
    let log = capture_stderr(&mut child.0);
    let url = served_url(&log).await;
    signal(&child.0, libc::SIGHUP);
    wait_for_log(&log, "nothing to reload", 1).await;
    assert!(child.0.try_wait().unwrap().is_none());
    let healthy = url.replace("/metrics", "/-/healthy");
    assert_eq!(
        common::http().get(&healthy).send().await.unwrap().status(),
        200
    );
}

/// Weakness 6 at the file-descriptor limit: 150 idle connections against a process allowed
/// 64 descriptors. Accept fails with EMFILE; the idlest connections are closed to make room,
/// scrapes are served, and the failure is logged once, not every 50 ms.
#[tokio::test(flavor = "multi_thread")]
async fn at_the_descriptor_limit_scrapes_are_served_and_accept_errors_logged_once() {
    use std::os::unix::process::CommandExt;
    let mut cmd = exporter(&[]);
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = ChildGuard(cmd.spawn().unwrap());
    let log = capture_stderr(&mut child.0);
    let url = served_url(&log).await;
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let mut idle = Vec::new();
    for _ in 0..150 {
        idle.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    let client = client_from(Ipv4Addr::LOCALHOST, DEADLINE);
    let mut served_scrapes = 0;
    for _ in 0..5 {
        let response = client
            .get(&url)
            .send()
            .await
            .expect("a scrape was answered");
        assert_eq!(response.status(), 200);
        served_scrapes += 1;
    }
    assert_eq!(served_scrapes, 5);
    let logged = log.lock().unwrap().clone();
    let episodes = logged.matches("accepting connections fails").count();
    assert!(
        (1..=2).contains(&episodes),
        "{episodes} warnings about accept:\n{logged}"
    );
    assert!(logged.contains("Too many open files"), "{logged}");
    drop(idle);
}

/// Issue 22: HEAD on /probe and /sd answered 405; they answer as GET without a body, like
/// /metrics, and POST names both methods.
#[tokio::test(flavor = "multi_thread")]
async fn head_on_probe_and_sd_answers_as_get_without_a_body() {
    let served = Served::start(
        &[("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "3600")],
        None,
        |config| ServerLimits::from_config(&config.server, &config.withings),
    )
    .await;
    let client = common::http();
    for path in ["/probe?account=default", "/sd"] {
        let got = client.get(served.url(path)).send().await.unwrap();
        assert_eq!(got.status(), 200, "{path}");
        let get_type = got.headers()["content-type"].clone();
        let get_length = got.headers()["content-length"].clone();
        let head = client.head(served.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "{path}");
        assert_eq!(head.headers()["content-type"], get_type, "{path}");
        let head_length = head.headers().get("content-length").cloned();
        assert!(head.bytes().await.unwrap().is_empty(), "{path}");
        if path == "/sd" {
            assert_eq!(head_length, Some(get_length), "{path}");
        } else {
            assert!(head_length.is_some(), "HEAD {path} without Content-Length");
        }
        let post = client.post(served.url(path)).send().await.unwrap();
        assert_eq!(post.status(), 405, "{path}");
        assert_eq!(post.headers()["allow"], "GET, HEAD", "{path}");
    }
}

/// Issue 22: a 400 repeated a bad account name in full, up to 64 KB.
#[tokio::test(flavor = "multi_thread")]
async fn a_400_repeats_at_most_64_characters_of_a_bad_account_name() {
    let served = Served::start(&[], None, |config| {
        ServerLimits::from_config(&config.server, &config.withings)
    })
    .await;
    let long = "X".repeat(60_000);
    let response = common::http()
        .get(served.url(&format!("/probe?account={long}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(body.contains(&"X".repeat(64)), "{body}");
    assert!(!body.contains(&"X".repeat(65)), "{} bytes", body.len());
    assert!(body.contains("[cut]"), "{body}");
    assert!(body.len() < 512, "{} bytes", body.len());
    assert_eq!(body.trim_end().lines().count(), 1);
}

/// Issue 22: a token directory others can write to gets one warning at start.
#[tokio::test]
async fn a_token_directory_others_can_write_to_is_warned_about_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let config = Config::from_vars(
        [
            ("WITHINGS_TOKEN_DIR", tokens.display().to_string()),
            ("WITHINGS_CLIENT_ID", "id".to_string()),
            ("WITHINGS_CLIENT_SECRET", "secret".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .unwrap();
    for (mode, warned) in [(0o777, 1), (0o770, 1), (0o700, 0), (0o755, 0)] {
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(mode)).unwrap();
        let logs = common::CapturedLogs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::INFO)
            .finish();
        let app = tracing::subscriber::with_default(subscriber, || App::from_config(&config));
        drop(app.unwrap());
        let text = logs.text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("token directory can be written by other users"))
            .collect();
        assert_eq!(lines.len(), warned, "mode {mode:o}: {text}");
        assert!(lines.iter().all(|l| l.contains("WARN")), "{text}");
    }
}
