//! Shared by the benches that run the release binary as a child process: starting it,
//! reading its memory, summarising latencies.
#![allow(dead_code)] // each bench uses a different part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

/// The exporter binary as a child process; killed and reaped however the bench ends.
pub struct ExporterProcess {
    child: Child,
    pub metrics_url: String,
}

impl Drop for ExporterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ExporterProcess {
    /// Starts `withings-exporter serve` with a fixed access token and `env` on top.
    pub fn start(api_url: &str, token: &str, env: &[(&str, &str)]) -> Self {
        let mut all = vec![("WITHINGS_ACCESS_TOKEN", token)];
        all.extend_from_slice(env);
        Self::start_with(api_url, &all)
    }

    /// Starts `withings-exporter serve` with only `env` on top of the address and API URL
    /// (a token directory, say).
    pub fn start_with(api_url: &str, env: &[(&str, &str)]) -> Self {
        Self::start_program(env!("CARGO_BIN_EXE_withings-exporter"), api_url, env)
    }

    /// [`Self::start_with`] on another build of the exporter (an older one, to compare).
    pub fn start_program(program: &str, api_url: &str, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(program)
            .arg("serve")
            .env_clear()
            .env("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0")
            .env("WITHINGS_API_URL", api_url)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the exporter binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Reads the address from the start-up log line, then keeps draining so that the
        // child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // "... serving metrics at http://127.0.0.1:PORT/metrics address=..."
                if let Some(url) = line
                    .split("serving metrics at ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    // logfmt quotes the message: `msg="serving metrics at http://…/metrics"`.
                    .map(|url| url.trim_end_matches('"'))
                {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let metrics_url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the exporter logs its address within 30 s");
        ExporterProcess { child, metrics_url }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Peak and current resident memory of a process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

pub struct Stats {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

pub fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let n = samples.len();
    let at = |q: usize| samples[(n * q / 100).min(n - 1)];
    Stats {
        n,
        p50: at(50),
        p99: at(99),
        mean: samples.iter().sum::<Duration>() / n as u32,
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat` (`"self"` for
/// this process), assuming the usual 100 clock ticks a second.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after it are plain numbers.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15, i.e. 12 and 13 after the name.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Runs a bench's `run` on a 2-worker runtime, framed by the machine's load average, since
/// figures from a shared 2-core machine mean little without it. `setup` says where what ran.
pub fn run_bench<F: std::future::Future<Output = ()>>(run: F, setup: &str) {
    // `cargo bench` passes `--bench`; these harnesses take no options.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let load_average = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before: {}", load_average().trim());
    runtime.block_on(run);
    println!("\nload average after: {}", load_average().trim());
    println!("\n({setup})");
}

/// Prometheus (Debian package prometheus) with the remote-write receiver and an
/// out-of-order window of 11 years, in a temporary directory; killed when dropped.
pub struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            "global:\n  scrape_interval: 1m\nstorage:\n  tsdb:\n    out_of_order_time_window: 11y\n",
        )
        .expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a port")
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--storage.tsdb.retention.time=20y")
            .arg("--web.enable-remote-write-receiver")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("prometheus runs (Debian package prometheus)");
        let prometheus = Self {
            child,
            port,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(prometheus.url("/-/ready")).send().await
                && r.status().is_success()
            {
                return prometheus;
            }
            assert!(Instant::now() < deadline, "prometheus not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of an instant query, as a number.
    pub async fn number(&self, query: &str, at: i64) -> f64 {
        let mut url = url::Url::parse(&self.url("/api/v1/query")).expect("url");
        url.query_pairs_mut()
            .append_pair("query", query)
            .append_pair("time", &at.to_string());
        let text = reqwest::Client::new()
            .get(url)
            .send()
            .await
            .expect("query")
            .text()
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_str(&text).expect("json");
        body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }
}

/// Runs the binary's `backfill` of the account of `token` to completion, `env` on top of
/// the budget of 120 a minute, `target` its other arguments (where it writes); wall time,
/// peak RSS in KiB, stderr.
// Reaped by `waitpid` after its stderr was handed to a reader thread.
#[allow(clippy::zombie_processes)]
pub fn run_backfill(
    api_url: &str,
    token: &str,
    env: &[(&str, &str)],
    target: &[&str],
) -> (Duration, u64, String) {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_withings-exporter"))
        .args(["backfill", "--account", "default"])
        .args(target)
        .env_clear()
        .env("WITHINGS_API_URL", api_url)
        .env("WITHINGS_ACCESS_TOKEN", token)
        .env("WITHINGS_REQUESTS_PER_MINUTE", "120")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the exporter binary runs");
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(memory_kib(pid).0);
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let mut stderr = child.stderr.expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let mut status = 0;
    // SAFETY: `pid` is our own child, not yet reaped (std's Child was consumed without a wait).
    let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    assert_eq!(reaped, pid as libc::pid_t, "waitpid");
    let text = reader.join().unwrap_or_default();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "backfill failed: {text}"
    );
    (took, peak, text)
}

/// Probes every account of `app` once, in turn, as a scrape of each would.
pub async fn probe_all(app: &withings_exporter::app::App) {
    for a in app.accounts() {
        let _ = app.probe_outcome(&a, None).await;
    }
}

/// Waits until the notified fetches have ended, then starts those that waited for the
/// budget or their interval, as `notify::run_triggers` does every second in a running
/// exporter (the benches do not run it: their clock stands still between steps), and waits
/// for them too, each wait at most `patience`.
pub async fn settle_notified(
    app: &std::sync::Arc<withings_exporter::app::App>,
    patience: Duration,
) {
    let Some(n) = app.notifier() else {
        return;
    };
    let ended = || async {
        let deadline = Instant::now() + patience;
        while n.fetches_in_flight() > 0 {
            assert!(Instant::now() < deadline, "notified fetches never ended");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    ended().await;
    withings_exporter::notify::trigger_due(app);
    ended().await;
}
