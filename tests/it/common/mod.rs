//! Shared test harness: a simulator and a real exporter server on ephemeral ports.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod accounts;
pub mod dashboard;
pub mod process;
pub mod prometheus;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use withings_exporter::account::tokens::TokenSource;
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_exporter::http::server::Application;
use withings_sim::{Simulator, SimulatorOptions};

pub const TOKEN: &str = "test-access-token";

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The one way the tests start an exporter's HTTP server in this process: [`bind`] it on a
/// free loopback port, add what the test needs (limits, web configuration), then [`serve`].
pub async fn bind(app: Arc<App>) -> Application {
    Application::bind(SocketAddr::from(([127, 0, 0, 1], 0)), app)
        .await
        .expect("bind a free loopback port")
}

/// A server [`serve`] started: it stops when this is dropped or [`Served::stop`]ped.
pub struct Served {
    pub address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Runs `server` on the runtime until the [`Served`] it returns goes.
pub fn serve(server: Application) -> Served {
    let address = server.local_addr().expect("local address");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = rx.await;
    }));
    Served {
        address,
        shutdown: Some(tx),
        task: Some(task),
    }
}

impl Served {
    /// Asks the server to stop (it drains the requests in flight) without waiting.
    pub fn signal_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Stops the server and waits until it has finished, asserting that it ended well.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub struct TestApp {
    pub address: SocketAddr,
    pub simulator: Simulator,
    pub exporter: Arc<App>,
    pub http: reqwest::Client,
    server: Option<Served>,
}

/// Extra `WITHINGS_*` variables and simulator options for [`spawn_app_with`].
#[derive(Default)]
pub struct AppOptions {
    pub env: Vec<(&'static str, String)>,
    pub simulator: SimulatorOptions,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// An app whose simulator serves the seed sample (`tests/fixtures/seed_getmeas.json`).
pub async fn spawn_seeded_app() -> TestApp {
    let app = spawn_app().await;
    app.simulator
        .load_fixture(&fixture("seed_getmeas.json"))
        .expect("seed fixture");
    app
}

/// Starts a simulator and an exporter pointed at it, both on port 0.
pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let simulator = Simulator::start(SimulatorOptions {
        access_tokens: vec![TOKEN.into()],
        ..options.simulator
    })
    .await
    .expect("simulator starts");
    let mut vars: std::collections::BTreeMap<String, String> = [
        ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0".to_string()),
        ("WITHINGS_API_URL", simulator.url().to_string()),
        ("WITHINGS_ACCESS_TOKEN", TOKEN.to_string()),
        ("WITHINGS_TIMEOUT_SECONDS", "5".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // Later settings replace the defaults above.
    vars.extend(options.env.into_iter().map(|(k, v)| (k.to_string(), v)));
    let config = Config::from_vars(vars).expect("valid test configuration");
    let token = config.require_access_token().expect("token").clone();
    let exporter =
        Arc::new(App::with_tokens(&config, TokenSource::Static(token)).expect("exporter"));
    let server = serve(bind(Arc::clone(&exporter)).await);
    TestApp {
        address: server.address,
        simulator,
        exporter,
        http: http(),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    /// GET /metrics, asserting the answer is a well-formed text exposition.
    pub async fn scrape(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        response.text().await.expect("body")
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        self.simulator.stop();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The server first, as before: dropping it stops it.
        self.server.take();
        self.simulator.stop();
    }
}

/// The value of the sample whose name and labels are exactly `series` (as printed,
/// e.g. `withings_up` or `withings_blood_pressure_mmhg{kind="systolic",...}`).
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// The value of the only sample of `metric` whose labels include every `name="value"` in
/// `labels`.
pub fn sample_with(exposition: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(n, v)| l.contains(&format!("{n}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        found.len() <= 1,
        "{metric} {labels:?} matches {} samples",
        found.len()
    );
    found.first().copied()
}

/// An exposition as golden files hold it: the process's own figures dropped and the values
/// that change from run to run replaced by a marker.
pub fn normalize_exposition(text: &str) -> String {
    normalize_volatile(
        text,
        &[
            "withings_scrape_duration_seconds ",
            "withings_last_success_timestamp_seconds ",
            "withings_requests_in_window ",
        ],
    )
}

/// `text` with the process's own figures dropped and the value of every line starting with
/// one of `volatile` (a series and its trailing space) replaced by a marker.
pub fn normalize_volatile(text: &str, volatile: &[&str]) -> String {
    text.lines()
        .filter(|line| !line.contains("process_"))
        .map(|line| {
            for volatile in volatile {
                if line.starts_with(volatile) {
                    return format!("{volatile}<volatile>\n");
                }
            }
            format!("{line}\n")
        })
        .collect()
}

/// Compares `text` with the golden file `tests/golden/NAME`; `UPDATE_GOLDEN=1` rewrites it
/// after a deliberate change (review the diff).
pub fn assert_golden(text: &str, name: &str) {
    assert_golden_normalized(&normalize_exposition(text), name);
}

/// [`assert_golden`] for a text already normalised.
pub fn assert_golden_normalized(normalized: &str, name: &str) {
    let path = fixture_path(&format!("../golden/{name}"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, normalized).unwrap();
    }
    let golden =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("tests/golden/{name}: {e}"));
    assert_eq!(
        normalized, golden,
        "exposition differs from tests/golden/{name}"
    );
}

/// A plain HTTP client for tests (reqwest needs the crypto provider installed first).
pub fn http() -> reqwest::Client {
    withings_exporter::withings::install_crypto_provider();
    reqwest::Client::new()
}

/// The body of `GET url`, which must be answered.
pub async fn get_text(url: &str) -> String {
    let response = http()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// A simulator that accepts [`TOKEN`] and serves the captured answer `fixture_name`.
pub async fn simulator_serving(fixture_name: &str) -> Simulator {
    let simulator = Simulator::start(SimulatorOptions {
        access_tokens: vec![TOKEN.into()],
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    simulator.load_fixture(&fixture(fixture_name)).unwrap();
    simulator
}

/// A simulator whose access tokens live `lifetime` seconds, its clock stopped at `clock`:
/// tests expire tokens by moving the clock, not by waiting.
pub async fn simulator_on_a_stopped_clock(lifetime: i64, clock: i64) -> Simulator {
    let sim = Simulator::start(SimulatorOptions {
        oauth: withings_sim::OAuthOptions {
            access_token_lifetime: Duration::from_secs(lifetime as u64),
            ..Default::default()
        },
        ..SimulatorOptions::default()
    })
    .await
    .expect("simulator starts");
    sim.set_clock(Some(clock));
    sim
}

/// The body of a request that must be answered (any status: callers check what they need).
pub async fn body_of(request: reqwest::RequestBuilder) -> String {
    request.send().await.unwrap().text().await.unwrap()
}

/// An HTTP client whose requests give up: a port taken by something that accepts but never
/// answers must not hang the test.
pub fn http_with_timeout() -> reqwest::Client {
    withings_exporter::withings::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// The text of a file of the repository (`relative` to its root).
pub fn read_repo_file(relative: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Log output kept in memory: a `tracing_subscriber` writer whose text a test reads back.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl CapturedLogs {
    /// Everything logged so far (the formatter writes UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("logs are UTF-8")
    }
}
