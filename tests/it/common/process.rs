#![allow(dead_code)] // each test binary uses a different part of it
//! The exporter binary as a child process: killed however the test ends, its log readable
//! while it runs.

use std::io::Read;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_withings-exporter");

/// Kills and reaps the child however the test ends, a failed assertion included.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Collects the child's piped stderr on a thread, so that the test can read what it has
/// logged so far and the child never blocks on a full pipe.
pub fn capture_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let log = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    log
}

/// Polls the log until `needle` appears `count` times; returns the log then.
pub async fn wait_for_log(log: &Mutex<String>, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = log.lock().unwrap().clone();
        if text.matches(needle).count() >= count {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "never logged {needle:?} {count} time(s):\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the exporter to announce where it serves, and returns that `/metrics` URL.
pub async fn served_url(log: &Mutex<String>) -> String {
    let started = wait_for_log(log, "serving metrics at ", 1).await;
    started
        .split("serving metrics at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a URL after 'serving metrics at'")
        // The end of logfmt's quoted msg="...".
        .trim_end_matches('"')
        .replace("0.0.0.0", "127.0.0.1")
}

/// Starts `command` with its stderr collected line by line, and waits until the exporter
/// announces its plain-HTTP address. Returns the guarded child, that `host:port`, and the
/// lines logged so far (the collection goes on while the child runs).
pub async fn start_serving(
    command: &mut std::process::Command,
) -> (ChildGuard, String, Arc<Mutex<Vec<String>>>) {
    use std::io::BufRead;
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the exporter binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let child = ChildGuard(child);
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Arc::clone(&logs);
    // Keeps draining stderr so that the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("serving metrics at http://").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let address = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
        .await
        .expect("join")
        .unwrap_or_else(|_| panic!("the exporter did not start: {:?}", logs.lock().unwrap()));
    (child, address, logs)
}

/// Sends `signal` (e.g. `libc::SIGHUP`) to `child`, which has not been reaped yet. Through
/// libc rather than the `kill` program, which minimal machines do not have.
pub fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: kill(2) with our own, unreaped child's pid has no memory effects.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        sent,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}
