//! The real Prometheus programs for the tests that need them (`#[ignore]`d, run by CI with
//! `--include-ignored`): `promtool check metrics`, daemons (Prometheus, Alertmanager) on free
//! ports, killed however the test ends, and the shipped scrape configuration.
#![allow(dead_code)] // each test binary uses a different part of it

use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to become ready before the test gives up. Generous, because
/// the machine may be loaded; the test only waits this long when it is failing.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Runs `promtool check metrics` on `exposition` and fails on any complaint: promtool
/// exits 0 on lint findings, so its output, not only its status, must be empty.
pub fn assert_promtool_accepts(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool: {e} (install the Debian package prometheus)")
        });
    // A failed write shows up as promtool's own error below.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(exposition.as_bytes());
    }
    let output = child.wait_with_output().expect("promtool runs");
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "promtool check metrics ({}) complained:\n{complaints}\n--- exposition ---\n{exposition}",
        output.status
    );
}

/// A program started by the test, killed and reaped when dropped, so that it never
/// outlives the test, whether it passes or panics. Its stdout and stderr go to a file.
pub struct Daemon {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
    pub port: u16,
}

impl Daemon {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The end of the program's output, for assertion messages.
    pub fn log_tail(&self) -> String {
        const TAIL: usize = 6000;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(TAIL);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        format!(
            "--- {} output ({}) ---\n{}",
            self.name,
            self.log.display(),
            &text[start..]
        )
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago. Another process may take it before the daemon binds
/// it: [`start_daemon`] then retries with another one.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// Starts `program` with the arguments `args(port)` on a free port and waits until its
/// `/-/ready` answers 200. Retries on a lost port race; panics with the program's output on
/// any other failure.
pub async fn start_daemon(
    name: &'static str,
    program: &str,
    dir: &Path,
    args: impl Fn(u16) -> Vec<String>,
) -> Daemon {
    start_daemon_on_ports(name, program, dir, args, free_port).await
}

/// [`start_daemon`] with the ports to try coming from `next_port`.
pub async fn start_daemon_on_ports(
    name: &'static str,
    program: &str,
    dir: &Path,
    args: impl Fn(u16) -> Vec<String>,
    mut next_port: impl FnMut() -> u16,
) -> Daemon {
    let http = super::http_with_timeout();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = next_port();
        let log = dir.join(format!("{name}-{attempt}.log"));
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(program)
            .args(args(port))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {program}: {e} (install the Debian packages prometheus and prometheus-alertmanager)")
            });
        let mut daemon = Daemon {
            name,
            child,
            log,
            port,
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = daemon.exited() {
                let tail = daemon.log_tail();
                if tail.contains("address already in use") && attempt < 3 {
                    break;
                }
                panic!("{name} exited with {status} before it was ready\n{tail}");
            }
            // Short: a port taken by a process that never answers shows as a timeout.
            let ready = http
                .get(daemon.url("/-/ready"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if let Ok(response) = ready
                && response.status().is_success()
            {
                return daemon;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready within {DEADLINE:?}\n{}",
                daemon.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The shipped Prometheus configuration's discovery job, as a user runs it: nothing but the
/// `http_sd_configs` URL (pointed at this exporter) and a faster refresh and scrape.
pub fn shipped_discovery_config(exporter: &str) -> String {
    let shipped = super::read_repo_file("prometheus/prometheus.yml");
    assert!(
        shipped.contains("url: http://withings-exporter:19100/sd"),
        "prometheus/prometheus.yml no longer discovers accounts at /sd: update this test"
    );
    let start = shipped.find("scrape_configs:").expect("scrape_configs");
    let jobs = shipped[start..]
        .replace("withings-exporter:19100", exporter)
        .replace("refresh_interval: 60s", "refresh_interval: 1s");
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n{jobs}"
    )
}

/// A Prometheus that takes remote write, started in `dir` with `config` as its
/// prometheus.yml, keeping 20 years (a backfill brings years).
pub async fn start_remote_write_receiver(dir: &Path, config: &str) -> Daemon {
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).expect("write prometheus.yml");
    let data = dir.join("rw-data");
    start_daemon("prometheus", "prometheus", dir, |port| {
        vec![
            format!("--config.file={}", path.display()),
            format!("--storage.tsdb.path={}", data.display()),
            "--storage.tsdb.retention.time=20y".to_owned(),
            "--web.enable-remote-write-receiver".to_owned(),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ]
    })
    .await
}
