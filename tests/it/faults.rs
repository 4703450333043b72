//! Issue 7, the fault matrix: the real binary (`withings-exporter serve`, managed tokens in a
//! temporary token file) runs against the simulator, which is switched into one fault per
//! test. Each test checks the whole answer: `/metrics` still answers 200, `withings_up` and
//! `withings_token_valid` tell the truth, the vitals of the seed survive, the token file is
//! whole and its refresh token still accepted, and the warnings and errors the process
//! printed are exactly the expected ones (no panic, no secret).
//!
//! The binary is used rather than an in-process exporter so that the log is the process's
//! own standard error (a test-local `tracing` subscriber misses lines from spawned tasks),
//! and so that the SIGTERM and disk-full cases act on a real process.

use crate::common;

use common::accounts::{issued_tokens, unix_now as now};
use common::process::{ChildGuard, start_serving};
use common::{eventually, fixture, sample, sample_with};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use withings_exporter::account::token_store::{StoredTokens, TokenStore};
use withings_sim::{Fault, OAuthOptions, Simulator};

/// Access tokens the simulator issues live this long; moving its clock past it makes
/// Withings answer 401 to the token the exporter holds.
const LIFETIME: i64 = 3600;
const WAIT: Duration = Duration::from_secs(20);

const VITALS: [&str; 5] = [
    "withings_blood_pressure_mmhg",
    "withings_heart_rate_bpm",
    "withings_spo2_ratio",
    "withings_body_temperature_celsius",
    "withings_measurement_timestamp_seconds",
];

/// A TCP relay between the exporter and the simulator that can be unplugged: its listener
/// and every relayed connection close at once, so that even pooled keep-alive connections
/// are gone and the next connection is refused.
struct Plug {
    addr: std::net::SocketAddr,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Plug {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let relays = Arc::clone(&tasks);
        tasks.lock().unwrap().spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                relays.lock().unwrap().spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, tasks }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn unplug(&self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

impl Drop for Plug {
    fn drop(&mut self) {
        self.unplug();
    }
}

/// One simulator, one token file and one exporter process.
struct Case {
    sim: Simulator,
    dir: tempfile::TempDir,
    /// The directory holding the token file (a subdirectory, so that tests can take it away).
    volume: PathBuf,
    path: PathBuf,
    pair: StoredTokens,
    child: ChildGuard,
    address: String,
    logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
    clock: i64,
    /// Vital samples of the first scrape, which must survive every fault.
    vitals: Vec<String>,
    _plug: Option<Plug>,
}

#[derive(Default)]
struct Options {
    env: Vec<(&'static str, String)>,
    /// Largest file the exporter may write (RLIMIT_FSIZE), to simulate a full disk.
    file_size_limit: Option<u64>,
    /// Put a [`Plug`] between the exporter and the simulator.
    plug: bool,
}

impl Case {
    async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// Starts everything and makes one good scrape of the seed fixture.
    async fn start_with(options: Options) -> Self {
        withings_exporter::withings::install_crypto_provider();
        let clock = now();
        let sim = common::simulator_on_a_stopped_clock(LIFETIME, clock).await;
        sim.load_fixture(&fixture("seed_getmeas.json")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("volume");
        std::fs::create_dir(&volume).unwrap();
        let path = volume.join("tokens.json");
        // The simulator's default user.
        let pair = issued_tokens(&sim, "12345");
        TokenStore::new(&path).save(&pair).unwrap();
        let plug = if options.plug {
            Some(Plug::start(sim.addr()).await)
        } else {
            None
        };
        let api_url = plug
            .as_ref()
            .map_or_else(|| sim.url().to_string(), Plug::url);
        let o = OAuthOptions::default();
        let mut command = Command::new(env!("CARGO_BIN_EXE_withings-exporter"));
        command
            .arg("serve")
            .env_clear()
            .env("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0")
            .env("WITHINGS_API_URL", api_url)
            .env("WITHINGS_CLIENT_ID", &o.client_id)
            .env("WITHINGS_CLIENT_SECRET", &o.client_secret)
            .env("WITHINGS_TOKEN_FILE", &path)
            .env("WITHINGS_TIMEOUT_SECONDS", "5")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info");
        for (k, v) in &options.env {
            command.env(k, v);
        }
        if let Some(limit) = options.file_size_limit {
            // SAFETY: between fork and exec only async-signal-safe calls are made
            // (setrlimit, signal), on values owned by this closure.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: libc::RLIM_INFINITY,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // Ignored, SIGXFSZ stays ignored across exec: a write past the limit then
                    // fails with EFBIG after a partial write, as on a full disk, instead of
                    // killing the process.
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        let (child, address, logs) = start_serving(&mut command).await;
        let mut case = Self {
            sim,
            dir,
            volume,
            path,
            pair,
            child,
            address,
            logs,
            http: reqwest::Client::new(),
            clock,
            vitals: Vec::new(),
            _plug: plug,
        };
        let text = case.scrape().await;
        assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "withings_token_valid"), Some(1.0), "{text}");
        case.vitals = vitals(&text);
        assert_eq!(case.vitals.len(), 10, "the seed's vitals: {text}");
        assert!(
            case.vitals
                .iter()
                .any(|l| l.contains("systolic") && l.ends_with(" 109")),
            "{text}"
        );
        case
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// GET /metrics, which must answer 200 whatever Withings does.
    async fn scrape(&self) -> String {
        self.scrape_request(self.http.get(self.url("/metrics")))
            .await
    }

    async fn scrape_request(&self, request: reqwest::RequestBuilder) -> String {
        let response = request.send().await.expect("the exporter answers");
        assert_eq!(response.status(), 200, "{:?}", self.log_lines());
        response.text().await.expect("body")
    }

    fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// How many log lines so far: warnings after this mark belong to what the test does next.
    fn mark(&self) -> usize {
        self.logs.lock().unwrap().len()
    }

    /// Waits until the warnings and errors logged since `mark` are exactly one line matching
    /// each of `expected` (in order), and returns them.
    async fn expect_problems(&self, mark: usize, expected: &[&str]) -> Vec<String> {
        let problems = || -> Vec<String> {
            self.logs.lock().unwrap()[mark..]
                .iter()
                .filter(|l| l.contains(" level=warn ") || l.contains(" level=error "))
                .cloned()
                .collect()
        };
        // The lines were written before the answer was sent; the reader thread may lag.
        eventually(WAIT, || problems().len() >= expected.len()).await;
        let found = problems();
        assert_eq!(
            found.len(),
            expected.len(),
            "expected one line for each of {expected:?}, got {found:#?}"
        );
        for (line, fragment) in found.iter().zip(expected) {
            assert!(line.contains(fragment), "{line:?} lacks {fragment:?}");
        }
        found
    }

    /// The vitals of the seed are all still there, unchanged.
    fn assert_vitals_survive(&self, text: &str) {
        assert_eq!(vitals(text), self.vitals, "{text}");
    }

    /// The token file parses and its refresh token is still accepted by Withings; returns it.
    fn assert_token_file_intact(&self) -> StoredTokens {
        let stored = TokenStore::new(&self.path)
            .load()
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("the token file exists");
        assert!(
            self.sim.refresh_token_usable(stored.refresh_token.expose()),
            "the refresh token in the file is no longer accepted"
        );
        stored
    }

    /// No panic and no secret in anything the process printed.
    fn assert_clean_log(&self) {
        let text = self.log_lines().join("\n");
        assert!(!text.contains("panicked"), "{text}");
        let mut secrets = vec![
            self.pair.access_token.expose().to_owned(),
            self.pair.refresh_token.expose().to_owned(),
            OAuthOptions::default().client_secret,
        ];
        if let Ok(Some(now)) = TokenStore::new(&self.path).load() {
            secrets.push(now.access_token.expose().to_owned());
            secrets.push(now.refresh_token.expose().to_owned());
        }
        for secret in secrets {
            assert!(!text.contains(&secret), "a secret reached the log: {text}");
        }
    }

    /// Moves the simulator's clock past the access token's lifetime: Withings answers 401.
    fn expire_access_token(&mut self) {
        self.clock += LIFETIME + 1;
        self.sim.set_clock(Some(self.clock));
    }

    fn pid(&self) -> libc::pid_t {
        self.child.0.id() as libc::pid_t
    }

    /// Waits until the process has closed its listener, its first act on SIGTERM.
    async fn wait_for_shutdown_to_begin(&self) {
        let deadline = std::time::Instant::now() + WAIT;
        while TcpStream::connect(&self.address).await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "still accepting connections after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the process to exit and returns its status.
    async fn exit_status(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        let exited = eventually(WAIT, || {
            status = self.child.0.try_wait().unwrap();
            status.is_some()
        })
        .await;
        assert!(exited, "still running: {:?}", self.log_lines());
        status.unwrap()
    }
}

/// The vital samples of an exposition, in order.
fn vitals(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| VITALS.iter().any(|v| l.starts_with(v)))
        .map(str::to_owned)
        .collect()
}

fn getmeas_requests(text: &str, status: &str) -> Option<f64> {
    sample_with(
        text,
        "withings_api_requests_total",
        &[("action", "getmeas"), ("status", status)],
    )
}

fn refreshes(text: &str, outcome: &str) -> Option<f64> {
    sample_with(
        text,
        "withings_token_refreshes_total",
        &[("outcome", outcome)],
    )
}

const FETCH_FAILED: &str = "fetching measures from Withings failed; serving the last known values";

/// A fault in Withings' answer to getmeas: the scrape says down, the token stays valid (it
/// was not what failed), nothing else changes, one line names the failure.
async fn answer_fault(fault: Fault, status_label: &str, detail: &str) {
    let case = Case::start().await;
    case.sim.set_fault(Some(fault));
    let mark = case.mark();
    let text = case.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "withings_token_valid"), Some(1.0), "{text}");
    assert_eq!(getmeas_requests(&text, status_label), Some(1.0), "{text}");
    case.assert_vitals_survive(&text);
    let lines = case.expect_problems(mark, &[FETCH_FAILED]).await;
    assert!(
        lines[0].contains(&format!("status={status_label} ")) && lines[0].contains(detail),
        "{lines:?} lacks {status_label} / {detail}"
    );
    assert_eq!(case.assert_token_file_intact(), case.pair, "untouched");
    // The fault passes: the next scrape is up again, with the same vitals.
    case.sim.set_fault(None);
    let text = case.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
    case.assert_vitals_survive(&text);
    case.assert_clean_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused() {
    let case = Case::start_with(Options {
        plug: true,
        ..Options::default()
    })
    .await;
    case._plug.as_ref().unwrap().unplug();
    let mark = case.mark();
    let text = case.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "withings_token_valid"), Some(1.0), "{text}");
    assert_eq!(
        getmeas_requests(&text, "transport_error"),
        Some(1.0),
        "{text}"
    );
    case.assert_vitals_survive(&text);
    let lines = case.expect_problems(mark, &[FETCH_FAILED]).await;
    assert!(lines[0].contains("cannot reach Withings"), "{lines:?}");
    assert_eq!(case.assert_token_file_intact(), case.pair);
    case.assert_clean_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset_mid_body() {
    answer_fault(
        Fault::ResetMidBody(fixture("seed_getmeas.json")),
        "transport_error",
        // The headers arrived; the body was cut off (not a connection refused at the start).
        "body",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500_with_an_html_page() {
    answer_fault(
        Fault::Http {
            status: 500,
            body: "<html><body><h1>500 Internal Server Error</h1></body></html>".into(),
        },
        "http_error",
        "HTTP 500",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_502_with_an_html_page() {
    answer_fault(
        Fault::Http {
            status: 502,
            body: "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
                .into(),
        },
        "http_error",
        "HTTP 502",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_json() {
    let seed = fixture("seed_getmeas.json");
    answer_fault(
        Fault::Body(seed[..seed.len() / 2].to_owned()),
        "invalid_response",
        "not a valid getmeas response",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_json_of_the_wrong_shape() {
    answer_fault(
        Fault::Body(r#"{"status":0,"body":{"measuregrps":{"grpid":1},"more":"no"}}"#.into()),
        "invalid_response",
        "not a valid getmeas response",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_out_of_range_are_skipped_and_counted() {
    let case = Case::start().await;
    // Newer than everything in the seed, so they would win if they were taken.
    let date = case.clock - 60;
    case.sim
        .upsert_group(serde_json::json!({
            "grpid": 1, "attrib": 0, "date": date, "modified": case.clock, "category": 1,
            "deviceid": "c405eb8e0e053f6601e151c7e43c04e29aad6956",
            "measures": [
                {"value": 150, "type": 10, "unit": 400},
                {"value": 71, "type": 11, "unit": 0}
            ]
        }))
        .unwrap();
    case.sim
        .upsert_group(serde_json::json!({
            "grpid": 2, "attrib": 0, "date": -1_690_491_576_i64, "modified": case.clock,
            "category": 1, "measures": [{"value": 200, "type": 9, "unit": 0}]
        }))
        .unwrap();
    let mark = case.mark();
    let text = case.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "withings_token_valid"), Some(1.0), "{text}");
    assert_eq!(
        sample_with(
            &text,
            "withings_groups_skipped_total",
            &[("reason", "out_of_range")]
        ),
        Some(2.0),
        "the measure with unit 400 and the group with a negative date: {text}"
    );
    // The good measure of the same group is taken; nothing else moves.
    let heart_rate = |t: &str| {
        vitals(t)
            .into_iter()
            .find(|l| l.starts_with("withings_heart_rate_bpm"))
    };
    assert!(
        heart_rate(&text).is_some_and(|l| l.ends_with(" 71")),
        "{text}"
    );
    let unchanged = |v: &Vec<String>| -> Vec<String> {
        v.iter()
            .filter(|l| !l.starts_with("withings_heart_rate_bpm") && !l.contains("\"heart_rate\""))
            .cloned()
            .collect()
    };
    assert_eq!(unchanged(&vitals(&text)), unchanged(&case.vitals), "{text}");
    // Skipping is routine, counted rather than logged.
    case.expect_problems(mark, &[]).await;
    assert_eq!(case.assert_token_file_intact(), case.pair);
    case.assert_clean_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slower_than_the_scrape_timeout() {
    let case = Case::start_with(Options {
        env: vec![("WITHINGS_TIMEOUT_SECONDS", "15".into())],
        ..Options::default()
    })
    .await;
    case.sim
        .set_fault(Some(Fault::Delay(Duration::from_secs(60))));
    let mark = case.mark();
    let text = case
        .scrape_request(
            case.http
                .get(case.url("/metrics"))
                .header("X-Prometheus-Scrape-Timeout-Seconds", "1"),
        )
        .await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "withings_token_valid"), Some(1.0), "{text}");
    let duration = sample(&text, "withings_scrape_duration_seconds").unwrap();
    assert!(duration < 1.0, "answered within the budget: {duration}");
    case.assert_vitals_survive(&text);
    case.expect_problems(mark, &["did not answer within the scrape's budget"])
        .await;
    assert_eq!(case.assert_token_file_intact(), case.pair);
    case.assert_clean_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_401_in_a_200() {
    let mut case = Case::start().await;
    // Withings refuses every token, even a freshly refreshed one.
    case.sim.set_fault(Some(Fault::ExpiredToken));
    case.expire_access_token();
    let mark = case.mark();
    let text = case.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "withings_token_valid"), Some(0.0), "{text}");
    assert_eq!(
        getmeas_requests(&text, "401"),
        Some(2.0),
        "one retry: {text}"
    );
    assert_eq!(refreshes(&text, "success"), Some(1.0), "{text}");
    case.assert_vitals_survive(&text);
    let lines = case.expect_problems(mark, &[FETCH_FAILED]).await;
    assert!(lines[0].contains("status=401 "), "{lines:?}");
    // The refreshed pair was saved before it was tried; the file holds it.
    let stored = case.assert_token_file_intact();
    assert_ne!(stored.refresh_token, case.pair.refresh_token);
    // Once Withings accepts tokens again, the one in the file works.
    case.sim.set_fault(None);
    let text = case.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "withings_token_valid"), Some(1.0), "{text}");
    assert_eq!(case.sim.token_request_count(), 1);
    case.assert_clean_log();
}

/// A 601: down, the token still valid, and no request to Withings until the wait passes.
async fn rate_limited(wait_seconds: Option<i64>) -> f64 {
    let case = Case::start().await;
    case.sim.set_fault(Some(Fault::Status {
        status: 601,
        error: "Too Many Requests".into(),
        wait_seconds,
    }));
    let mark = case.mark();
    let before = now() as f64;
    let text = case.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "withings_token_valid"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "withings_rate_limited"), Some(1.0), "{text}");
    assert_eq!(getmeas_requests(&text, "601"), Some(1.0), "{text}");
    case.assert_vitals_survive(&text);
    let lines = case
        .expect_problems(mark, &["Withings is rate-limiting this application"])
        .await;
    assert!(
        lines[0].contains("status=601 ") && lines[0].contains("wait_seconds="),
        "{lines:?}"
    );
    // Backing off: the next scrapes make no request at all.
    case.sim.set_fault(None);
    let requests = case.sim.request_count("/measure");
    let text = case.scrape().await;
    assert_eq!(case.sim.request_count("/measure"), requests);
    assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
    assert_eq!(
        sample_with(
            &text,
            "withings_scrapes_total",
            &[("served_from", "rate_limited")]
        ),
        Some(1.0),
        "{text}"
    );
    case.assert_vitals_survive(&text);
    assert_eq!(case.assert_token_file_intact(), case.pair);
    case.assert_clean_log();
    sample(&text, "withings_rate_limit_resume_timestamp_seconds").unwrap() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_601_with_wait_seconds() {
    let wait = rate_limited(Some(120)).await;
    // Honoured, plus at most 20 % jitter.
    assert!((119.0..=146.0).contains(&wait), "{wait}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_601_without_wait_seconds() {
    let wait = rate_limited(None).await;
    // The exporter's own first backoff step: 10 s, plus at most 20 % jitter.
    assert!((9.0..=14.0).contains(&wait), "{wait}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_failing_transiently() {
    let mut case = Case::start().await;
    case.sim.set_token_fault(Some(Fault::Http {
        status: 502,
        body: "<html><body>502 Bad Gateway</body></html>".into(),
    }));
    case.expire_access_token();
    let mark = case.mark();
    let text = case.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
    // Withings just refused the token and no other could be had.
    assert_eq!(sample(&text, "withings_token_valid"), Some(0.0), "{text}");
    assert_eq!(refreshes(&text, "transient_error"), Some(1.0), "{text}");
    case.assert_vitals_survive(&text);
    case.expect_problems(mark, &["refreshing the access token failed", FETCH_FAILED])
        .await;
    assert_eq!(case.assert_token_file_intact(), case.pair, "kept as it was");
    // Once the endpoint recovers and the backoff (1 to 2 s) has passed, a retry succeeds.
    case.sim.set_token_fault(None);
    let mut last = String::new();
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        last = case.scrape().await;
        if sample(&last, "withings_up") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sample(&last, "withings_up"), Some(1.0), "{last}");
    assert_eq!(sample(&last, "withings_token_valid"), Some(1.0), "{last}");
    let stored = case.assert_token_file_intact();
    assert_ne!(stored.refresh_token, case.pair.refresh_token, "rotated");
    case.assert_vitals_survive(&last);
    case.assert_clean_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_failing_permanently() {
    let mut case = Case::start().await;
    // What Withings answers to a refresh token it no longer knows.
    case.sim.set_token_fault(Some(Fault::Status {
        status: 503,
        error: "Invalid Params: invalid refresh_token".into(),
        wait_seconds: None,
    }));
    case.expire_access_token();
    let mark = case.mark();
    let text = case.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "withings_token_valid"), Some(0.0), "{text}");
    assert_eq!(refreshes(&text, "permanent_error"), Some(1.0), "{text}");
    case.assert_vitals_survive(&text);
    let lines = case
        .expect_problems(mark, &["Withings refused the refresh token", FETCH_FAILED])
        .await;
    assert!(lines[0].contains("withings-exporter auth"), "{lines:?}");
    // Not retried: the next scrape asks Withings nothing, says the same, logs again only
    // the per-scrape line.
    let mark = case.mark();
    let text = case.scrape().await;
    assert_eq!(sample(&text, "withings_token_valid"), Some(0.0), "{text}");
    assert_eq!(case.sim.token_request_count(), 1);
    case.expect_problems(mark, &[FETCH_FAILED]).await;
    // The file is left exactly as it was, for the user to replace with `auth`.
    let stored = TokenStore::new(&case.path).load().unwrap().unwrap();
    assert_eq!(stored, case.pair);
    case.assert_clean_log();
}

/// The token file cannot be written (read-only directory, full disk): the refreshed pair is
/// held in memory and not used, the pair on disk stays valid, and once the file can be
/// written the pending pair is saved, then used.
async fn unsaveable(mut case: Case, expected: &[&str], cause: &str, restore: impl FnOnce(&Case)) {
    case.expire_access_token();
    let mark = case.mark();
    let text = case.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "withings_token_valid"), Some(0.0), "{text}");
    assert_eq!(refreshes(&text, "save_error"), Some(1.0), "{text}");
    case.assert_vitals_survive(&text);
    let lines = case.expect_problems(mark, expected).await;
    assert!(
        lines.iter().all(|l| l.contains(cause)),
        "{lines:?} lacks {cause}"
    );
    // The refresh token on disk was not rotated away: the new access token was never used.
    assert!(
        case.sim
            .refresh_token_usable(case.pair.refresh_token.expose())
    );
    restore(&case);
    assert_eq!(
        TokenStore::new(&case.path).load().unwrap().as_ref(),
        Some(&case.pair),
        "the old file is whole"
    );
    let temp_files = std::fs::read_dir(&case.volume)
        .unwrap()
        // The request ledger beside the token file is no temporary file.
        .filter(|e| {
            !["tokens.json", ".budget"].contains(&e.as_ref().unwrap().file_name().to_str().unwrap())
        })
        .count();
    assert_eq!(temp_files, 0, "no temporary file left behind");
    let text = case.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "withings_token_valid"), Some(1.0), "{text}");
    let stored = case.assert_token_file_intact();
    assert_ne!(stored.refresh_token, case.pair.refresh_token);
    assert_eq!(case.sim.token_request_count(), 1, "no second rotation");
    case.assert_vitals_survive(&text);
    case.assert_clean_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_directory_becomes_read_only() {
    // Tests run as root, which ignores permission bits; the directory is replaced by a
    // regular file instead (ENOTDIR), which stops root as a read-only volume stops others.
    let case = Case::start().await;
    let moved = case.dir.path().join("moved");
    std::fs::rename(&case.volume, &moved).unwrap();
    std::fs::write(&case.volume, b"not a directory").unwrap();
    unsaveable(
        case,
        &[
            // The exporter notices the file is gone before it refreshes.
            "the token file changed and cannot be used; keeping the tokens in memory",
            "the refreshed token pair could not be saved",
            FETCH_FAILED,
        ],
        "Not a directory",
        |case| {
            std::fs::remove_file(&case.volume).unwrap();
            std::fs::rename(case.dir.path().join("moved"), &case.volume).unwrap();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_while_writing_the_token_file() {
    // The process may write at most 64 bytes to any file (RLIMIT_FSIZE): the write of the
    // new token file stops partway with EFBIG ("File too large"), as a full disk stops it
    // with ENOSPC. Raising the limit of the running process (prlimit) frees the "disk".
    let case = Case::start_with(Options {
        file_size_limit: Some(64),
        ..Options::default()
    })
    .await;
    unsaveable(
        case,
        &["the refreshed token pair could not be saved", FETCH_FAILED],
        "File too large",
        |case| {
            let unlimited = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: plain syscall on a live child's pid with valid pointers.
            let done = unsafe {
                libc::prlimit(
                    case.pid(),
                    libc::RLIMIT_FSIZE,
                    &unlimited,
                    std::ptr::null_mut(),
                )
            };
            assert_eq!(done, 0, "{}", std::io::Error::last_os_error());
        },
    )
    .await;
}

/// What `scrape_in_background` hands back.
type BackgroundScrape =
    tokio::task::JoinHandle<Result<(reqwest::StatusCode, String), reqwest::Error>>;

impl Case {
    /// A scrape that runs while the test goes on: its status and body, once answered.
    fn scrape_in_background(&self) -> BackgroundScrape {
        let (http, url) = (self.http.clone(), self.url("/metrics"));
        tokio::spawn(async move {
            let response = http.get(url).send().await?;
            let status = response.status();
            Ok((status, response.text().await?))
        })
    }

    /// Holds Withings' answers and starts a scrape whose fetch is then in flight there.
    async fn scrape_held_at_withings(&self) -> BackgroundScrape {
        self.sim.hold();
        let requests = self.sim.request_count("/measure");
        let scrape = self.scrape_in_background();
        assert!(
            eventually(WAIT, || self.sim.request_count("/measure") > requests).await,
            "the fetch reached Withings"
        );
        scrape
    }

    async fn assert_exits_with_0(&mut self) -> std::process::ExitStatus {
        let exit = self.exit_status().await;
        assert_eq!(exit.code(), Some(0), "{exit:?} {:?}", self.log_lines());
        exit
    }
}

/// The body of a background scrape, which must have been answered with 200.
async fn answered_with_200(scrape: BackgroundScrape) -> String {
    let (status, text) = scrape
        .await
        .unwrap()
        .expect("the scrape in flight is answered");
    assert_eq!(status, 200);
    text
}

fn sigterm(case: &Case) {
    // SAFETY: a signal to our own live child.
    assert_eq!(unsafe { libc::kill(case.pid(), libc::SIGTERM) }, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_of_a_scrape() {
    let mut case = Case::start().await;
    let scrape = case.scrape_held_at_withings().await;
    let mark = case.mark();
    sigterm(&case);
    case.wait_for_shutdown_to_begin().await;
    // Withings answers after the signal: the scrape in flight is finished, then the process
    // exits.
    case.sim.release();
    let text = answered_with_200(scrape).await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
    case.assert_vitals_survive(&text);
    case.assert_exits_with_0().await;
    assert_eq!(case.assert_token_file_intact(), case.pair);
    case.expect_problems(mark, &[]).await;
    case.assert_clean_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_of_a_refresh() {
    let mut case = Case::start().await;
    case.expire_access_token();
    case.sim.hold_token_endpoint();
    let scrape = {
        let (http, url) = (case.http.clone(), case.url("/metrics"));
        tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
    };
    assert!(
        eventually(WAIT, || case.sim.token_request_count() == 1).await,
        "the refresh reached Withings"
    );
    sigterm(&case);
    case.wait_for_shutdown_to_begin().await;
    // Withings answers the refresh after the signal, rotating the pair.
    case.sim.release_token_endpoint();
    let exit = case.assert_exits_with_0().await;
    assert_eq!(exit.signal(), None);
    // Whether the process saved the rotated pair before it exited or not, the file holds a
    // refresh token Withings accepts.
    let stored = case.assert_token_file_intact();
    assert!(
        stored == case.pair || stored.refresh_token != case.pair.refresh_token,
        "either the old pair or a whole new one"
    );
    if let Ok(Ok(status)) = scrape.await {
        assert_eq!(status, 200);
    }
    case.assert_clean_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_withings_never_answers() {
    // The scrape in flight cannot be finished with fresh data: it is answered when its
    // budget (WITHINGS_TIMEOUT_SECONDS) runs out, with the last known values, and the
    // process exits cleanly rather than waiting for Withings.
    let mut case = Case::start_with(Options {
        env: vec![("WITHINGS_TIMEOUT_SECONDS", "1".into())],
        ..Options::default()
    })
    .await;
    let scrape = case.scrape_held_at_withings().await;
    sigterm(&case);
    case.wait_for_shutdown_to_begin().await;
    let text = answered_with_200(scrape).await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
    case.assert_vitals_survive(&text);
    case.assert_exits_with_0().await;
    assert_eq!(case.assert_token_file_intact(), case.pair);
    case.assert_clean_log();
}
