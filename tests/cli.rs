//! The binary as an operator runs it: exit codes, one-line errors, signals, logs.

mod common;

use common::process::{BIN, ChildGuard, capture_stderr, served_url, wait_for_log};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn exporter(vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    // Only what the test sets: the developer's own WITHINGS_* must not leak in.
    cmd.env_clear()
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs a command that is expected to exit by itself, within a deadline.
fn run_to_exit(mut cmd: Command) -> (i32, String) {
    let mut guard = ChildGuard(cmd.spawn().expect("spawn"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = guard.0.try_wait().expect("wait") {
            let mut stderr = String::new();
            guard
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (status.code().unwrap_or(-1), stderr);
        }
        assert!(Instant::now() < deadline, "process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_configuration_stops_at_once_with_one_line_naming_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("WITHINGS_ACCESS_TOKEN", "t"),
                ("WITHINGS_LISTEN_ADDRESS", "nonsense"),
            ],
            "WITHINGS_LISTEN_ADDRESS",
        ),
        (
            &[
                ("WITHINGS_ACCESS_TOKEN", "t"),
                ("WITHINGS_MEASTYPES", "9,x"),
            ],
            "WITHINGS_MEASTYPES",
        ),
        (
            &[
                ("WITHINGS_ACCESS_TOKEN", "t"),
                ("WITHINGS_API_URL", "wbsapi"),
            ],
            "WITHINGS_API_URL",
        ),
        (&[], "WITHINGS_ACCESS_TOKEN"),
    ];
    for (vars, variable) in cases {
        let (code, stderr) = run_to_exit(exporter(vars));
        assert_ne!(code, 0, "{variable}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{variable}: {stderr}");
        assert!(lines[0].contains(variable), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_port_in_use_is_reported_clearly() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let (code, stderr) = run_to_exit(exporter(&[
        ("WITHINGS_ACCESS_TOKEN", "t"),
        ("WITHINGS_LISTEN_ADDRESS", &address),
    ]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains(&address) && stderr.contains("WITHINGS_LISTEN_ADDRESS"),
        "{stderr}"
    );
}

/// Starts the command with its log captured.
fn spawn_logged(cmd: &mut Command) -> (ChildGuard, std::sync::Arc<std::sync::Mutex<String>>) {
    let mut guard = ChildGuard(cmd.spawn().expect("spawn"));
    let log = capture_stderr(&mut guard.0);
    (guard, log)
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_fails_quietly_about_secrets_and_stops_on_sigterm() {
    let secret = "tok-3f9a2c-never-print-me";
    let simulator = withings_exporter::simulator::Simulator::start(Default::default())
        .await
        .unwrap();
    // The simulator does not know this token: every fetch is an auth failure, logged.
    let api = simulator.url().to_string();
    let (mut guard, log) = spawn_logged(&mut exporter(&[
        ("WITHINGS_ACCESS_TOKEN", secret),
        ("WITHINGS_API_URL", &api),
        ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0"),
    ]));
    let url = served_url(&log).await;
    let text = common::http()
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(common::sample(&text, "withings_token_valid"), Some(0.0));
    let logged = wait_for_log(&log, "fetching measures from Withings failed", 1).await;
    assert!(
        logged.contains("401") && logged.contains("invalid_token"),
        "{logged}"
    );
    // A fixed token cannot be renewed: the line says why it stopped and how to switch.
    assert!(
        logged.contains("stops working 3 hours after it was issued")
            && logged.contains("WITHINGS_CLIENT_ID")
            && logged.contains("withings-exporter auth"),
        "{logged}"
    );
    assert!(logged.contains("access_token=<set>"), "{logged}");
    assert!(!logged.contains(secret), "secret in the log:\n{logged}");
    assert!(!text.contains(secret));

    let pid = guard.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, Some(0), "{}", log.lock().unwrap());
    wait_for_log(&log, "shutting down", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_shows_a_household_on_probe_and_sd_without_any_credentials() {
    let (_guard, log) =
        spawn_logged(exporter(&[("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0")]).arg("demo"));
    let url = served_url(&log).await;
    let base = url.trim_end_matches("/metrics").to_owned();
    let http = common::http();
    let get = |path: String| {
        let http = http.clone();
        async move { http.get(path).send().await.unwrap().text().await.unwrap() }
    };
    let sd: serde_json::Value = serde_json::from_str(&get(format!("{base}/sd")).await).unwrap();
    let names: Vec<&str> = sd
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["labels"]["account"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alex", "grandma", "sam"]);
    let mut household = String::new();
    for name in names {
        let text = get(format!("{base}/probe?account={name}")).await;
        assert_eq!(
            common::sample(&text, "withings_up"),
            Some(1.0),
            "{name}: {text}"
        );
        assert_eq!(common::sample(&text, "withings_token_valid"), Some(1.0));
        household.push_str(&text);
    }
    // Between them, the three people measure all five vitals.
    for measurement in [
        "systolic_blood_pressure",
        "diastolic_blood_pressure",
        "heart_rate",
        "spo2",
        "body_temperature",
    ] {
        assert!(
            household.contains(&format!("measurement=\"{measurement}\"")),
            "{measurement} missing:\n{household}"
        );
    }
    let landing = get(format!("{base}/")).await;
    for name in ["alex", "grandma", "sam"] {
        assert!(
            landing.contains(&format!("probe?account={name}")),
            "{landing}"
        );
    }
    let own = get(url).await;
    assert_eq!(
        common::sample_with(&own, "withings_accounts", &[("state", "ok")]),
        Some(3.0),
        "{own}"
    );
}
