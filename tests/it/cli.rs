//! The binary as an operator runs it: exit codes, one-line errors, signals, logs.

use crate::common;

use common::process::{BIN, ChildGuard, capture_stderr, served_url, signal, wait_for_log};
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
        // Bug 6: the metrics under the notification path, which is open without credentials.
        (
            &[
                ("WITHINGS_ACCESS_TOKEN", "t"),
                ("WITHINGS_CALLBACK_URL", "https://x.org/withings/notify"),
                ("WITHINGS_TELEMETRY_PATH", "/withings/notify/metrics"),
            ],
            "WITHINGS_TELEMETRY_PATH",
        ),
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
    let simulator = withings_sim::Simulator::start(Default::default())
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
    let text = common::body_of(common::http().get(&url)).await;
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

    signal(&guard.0, libc::SIGTERM);
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

/// The demo with a remote-write receiver (the README's "with a local Prometheus"): each
/// person's day reaches the store at the times it happened, under the labels the scrapes of
/// the demo's address carry, as soon as a fetch reads it; its port chosen by the system.
#[tokio::test(flavor = "multi_thread")]
async fn demo_writes_the_households_day_to_a_remote_write_receiver() {
    use crate::remote_write::{Receiver, Reply};
    let receiver = Receiver::start(|_, _| Reply::Ok).await;
    let (_guard, log) = spawn_logged(
        exporter(&[
            ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0"),
            ("WITHINGS_REMOTE_WRITE_URL", &receiver.url),
        ])
        .arg("demo"),
    );
    let url = served_url(&log).await;
    let base = url.trim_end_matches("/metrics").to_owned();
    let address = base.trim_start_matches("http://").to_owned();
    wait_for_log(&log, &format!(" instance={address}"), 1).await;
    // As Prometheus would: each person's first probe is their first fetch.
    for name in ["alex", "grandma", "sam"] {
        let text = common::get_text(&format!("{base}/probe?account={name}")).await;
        assert!(
            text.contains("withings_intraday_heart_rate_bpm{"),
            "{name}: {text}"
        );
    }
    let labels = format!("instance={address},job=withings");
    let samples = |name: &str, account: &str| -> Vec<i64> {
        receiver
            .stored()
            .into_keys()
            .filter(|(series, _)| {
                series.starts_with(&format!("__name__={name},account={account},"))
                    && series.contains(&labels)
            })
            .map(|(_, ms)| ms / 1000)
            .collect()
    };
    let day = || samples("withings_intraday_heart_rate_bpm", "grandma");
    let night = || samples("withings_sleep_state", "grandma");
    // The watch's last two days every 10 minutes, and a night in minutes.
    let written = common::eventually(Duration::from_secs(30), || {
        day().len() >= 100 && night().len() >= 400
    })
    .await;
    assert!(
        written,
        "day {} night {}: {:?}",
        day().len(),
        night().len(),
        receiver.stored().keys().take(5).collect::<Vec<_>>()
    );
    let now = common::accounts::unix_now();
    let times = day();
    assert!(
        times.windows(2).all(|w| w[1] - w[0] == 600) && times[0] < now - 86_400,
        "{times:?}"
    );
    receiver.assert_no_violation();
}

/// One number from an instant query: the first result's value.
async fn query_number(prometheus: &common::prometheus::Daemon, query: &str) -> Option<f64> {
    let url = reqwest::Url::parse_with_params(&prometheus.url("/api/v1/query"), [("query", query)])
        .ok()?;
    let answer: serde_json::Value = common::http()
        .get(url)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())?;
    answer["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

/// The README's demo with a local Prometheus, as written there: `prometheus/demo.yml`, the
/// remote-write receiver on, the demo writing to it. The scraped series and the written
/// history are one: the last two days of each watch at their own times, the night minute by
/// minute, under the instance the scrapes carry.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs prometheus (Debian package prometheus)"]
async fn the_readme_demo_fills_a_local_prometheus_with_the_whole_day() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::copy(
        root.join("prometheus/rules/withings.rules.yml"),
        dir.path().join("rules/withings.rules.yml"),
    )
    .unwrap();
    let shipped = std::fs::read_to_string(root.join("prometheus/demo.yml")).unwrap();
    assert!(shipped.contains("127.0.0.1:19100"), "{shipped}");
    let config = dir.path().join("demo.yml");
    // The demo's port is the system's choice here, known once it listens: Prometheus starts
    // with the shipped file and reads it again with that port.
    std::fs::write(&config, &shipped).unwrap();
    let data = dir.path().join("data");
    let prometheus =
        common::prometheus::start_daemon("prometheus", "prometheus", dir.path(), |port| {
            vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", data.display()),
                "--web.enable-remote-write-receiver".to_owned(),
                "--web.enable-lifecycle".to_owned(),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ]
        })
        .await;
    let write_url = prometheus.url("/api/v1/write");
    let (_guard, log) = spawn_logged(
        exporter(&[
            ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0"),
            ("WITHINGS_REMOTE_WRITE_URL", &write_url),
        ])
        .arg("demo"),
    );
    let url = served_url(&log).await;
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    std::fs::write(&config, shipped.replace("127.0.0.1:19100", &address)).unwrap();
    let reloaded = common::http()
        .post(prometheus.url("/-/reload"))
        .send()
        .await
        .unwrap();
    assert!(reloaded.status().is_success(), "{}", prometheus.log_tail());
    let me = format!(r#"account="grandma",instance="{address}",job="withings""#);
    let checks = [
        // Scraped through /sd.
        (format!("up{{{me}}}"), 1.0),
        // Written: the watch's last two days every 10 minutes (288, less the last sync's).
        (
            format!("count_over_time(withings_intraday_heart_rate_bpm{{{me}}}[2d])"),
            250.0,
        ),
        // Written: last night's stages, minute by minute from 23:00 to 07:00.
        (
            format!("count_over_time(withings_sleep_state{{{me}}}[2d])"),
            470.0,
        ),
    ];
    for (query, at_least) in checks {
        let deadline = Instant::now() + Duration::from_secs(120);
        let (reached, last) = loop {
            let last = query_number(&prometheus, &query).await;
            if last.is_some_and(|v| v >= at_least) {
                break (true, last);
            }
            if Instant::now() > deadline {
                break (false, last);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(
            reached,
            "{query}: {last:?}, want >= {at_least}\n{}\n{}",
            prometheus.log_tail(),
            log.lock().unwrap()
        );
    }
    assert_eq!(
        query_number(
            &prometheus,
            &format!("max_over_time(withings_sleep_state{{{me}}}[2d])")
        )
        .await,
        Some(3.0)
    );
}

/// Waits for the child to log `needle` into the file its stderr goes to; returns the file.
fn wait_for_file(path: &std::path::Path, needle: &str, guard: &mut ChildGuard) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        if let Some(status) = guard.0.try_wait().unwrap() {
            panic!("exited with {status} before logging {needle:?}:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "never logged {needle:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The demo with stderr redirected to a file, as journald, `docker logs` or `2>log` see it.
fn demo_logging_to_file(args: &[&str], vars: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stderr.log");
    let file = std::fs::File::create(&path).unwrap();
    let mut cmd = Command::new(BIN);
    // No NO_COLOR here: the redirection alone must turn colour off.
    cmd.env_clear()
        .envs(vars.iter().copied())
        .arg("demo")
        .args(["--web.listen-address", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
    let mut guard = ChildGuard(cmd.spawn().unwrap());
    wait_for_file(&path, "serving metrics at", &mut guard)
}

#[test]
fn a_redirected_log_has_no_colour_codes_and_greps_by_message() {
    let text = demo_logging_to_file(&[], &[]);
    assert!(!text.contains('\x1b'), "escape codes in {text:?}");
    let serving: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("serving metrics"))
        .collect();
    assert_eq!(serving.len(), 1, "{text}");
    assert!(
        serving[0].starts_with("ts=")
            && serving[0].contains(" level=info msg=\"serving metrics at http://127.0.0.1:"),
        "{text}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_by_flag_or_variable() {
    for (args, vars) in [
        (&["--log.format", "json"][..], &[][..]),
        (&[][..], &[("WITHINGS_LOG_FORMAT", "json")][..]),
    ] {
        let text = demo_logging_to_file(args, vars);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        assert!(
            lines.iter().any(|l| l["level"] == "info"
                && l["msg"]
                    .as_str()
                    .unwrap()
                    .starts_with("serving metrics at ")),
            "{text}"
        );
    }
}

#[test]
fn an_unparsable_log_filter_stops_the_start_with_one_line() {
    for (args, vars, variable) in [
        (&[][..], &[("RUST_LOG", "infoo")][..], "RUST_LOG"),
        (
            &["--log.level", "verbose"][..],
            &[][..],
            "WITHINGS_LOG_LEVEL",
        ),
        (
            &[][..],
            &[("WITHINGS_LOG_LEVEL", "withings_exporter=loud")][..],
            "WITHINGS_LOG_LEVEL",
        ),
        (
            &["--log.format", "text"][..],
            &[][..],
            "WITHINGS_LOG_FORMAT",
        ),
    ] {
        let mut cmd = exporter(vars);
        cmd.env_remove("RUST_LOG")
            .envs(vars.iter().copied())
            .arg("demo")
            .args(args);
        let (code, stderr) = run_to_exit(cmd);
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!("error: {variable}: ")),
            "{stderr}"
        );
    }
}

#[test]
fn a_misspelt_variable_is_warned_about_with_the_closest_name() {
    let text = demo_logging_to_file(&[], &[("WITHINGS_LISTEN_ADRESS", "127.0.0.1:1")]);
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("level=warn")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0].contains("WITHINGS_LISTEN_ADRESS")
            && warnings[0].contains("did you mean WITHINGS_LISTEN_ADDRESS?"),
        "{text}"
    );
}

#[test]
fn a_non_utf8_secret_is_named_never_shown_and_other_variables_are_ignored() {
    use std::os::unix::ffi::OsStrExt;
    let value = std::ffi::OsStr::from_bytes(b"secret-\xff-value");
    let mut cmd = exporter(&[("WITHINGS_CLIENT_ID", "cid")]);
    cmd.env("WITHINGS_CLIENT_SECRET", value).arg("demo");
    let (code, stderr) = run_to_exit(cmd);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: WITHINGS_CLIENT_SECRET: ") && stderr.contains("UTF-8"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret-") && !stderr.contains('\u{fffd}') && !stderr.contains("panicked"),
        "{stderr}"
    );

    // Someone else's variable is none of the exporter's business.
    let mut cmd = exporter(&[("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0")]);
    cmd.env("SOME_OTHER_PROGRAM_SECRET", value).arg("demo");
    let (guard, log) = spawn_logged(&mut cmd);
    let started = futures_poll(&log, "serving metrics at ");
    assert!(!started.contains("secret-"), "{started}");
    drop(guard);
}

/// `wait_for_log` for a synchronous test.
fn futures_poll(log: &std::sync::Mutex<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = log.lock().unwrap().clone();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "never logged {needle:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_win_over_their_variables_and_the_telemetry_path_moves_the_metrics() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = busy.local_addr().unwrap().to_string();
    // The variable names a port in use: only the flag's address can work. Flags go before
    // or after the subcommand.
    let mut cmd = exporter(&[
        ("WITHINGS_LISTEN_ADDRESS", &taken),
        ("WITHINGS_TELEMETRY_PATH", "/from-variable"),
    ]);
    cmd.args(["--web.telemetry-path", "/withings/metrics", "demo"])
        .args(["--web.listen-address", "127.0.0.1:0"]);
    let (_guard, log) = spawn_logged(&mut cmd);
    let url = served_url(&log).await;
    assert!(url.ends_with("/withings/metrics"), "{url}");
    let client = common::http();
    let metrics = client.get(&url).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("withings_exporter_build_info")
    );
    for other in ["/metrics", "/from-variable"] {
        let moved = url.replace("/withings/metrics", other);
        assert_eq!(
            client.get(&moved).send().await.unwrap().status(),
            404,
            "{moved}"
        );
    }
    let landing = url.replace("/withings/metrics", "/");
    let page = common::body_of(client.get(&landing)).await;
    assert!(page.contains("href=\"withings/metrics\""), "{page}");
}

#[test]
fn help_lists_every_setting_with_its_variable_and_default() {
    let out = Command::new(BIN)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for setting in withings_exporter::config::SETTINGS {
        assert!(
            help.contains(setting.variable),
            "{} missing:\n{help}",
            setting.variable
        );
    }
    for flag in [
        "--web.listen-address",
        "--web.config.file",
        "--web.telemetry-path",
        "--log.level",
        "--log.format",
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
    assert!(
        help.contains("[env: WITHINGS_LISTEN_ADDRESS] [default: 0.0.0.0:19100]"),
        "{help}"
    );
    assert!(
        help.contains("WITHINGS_TIMEOUT_SECONDS [default: 20]"),
        "{help}"
    );
}

#[test]
fn the_simulator_prints_the_client_credentials_it_accepts() {
    let mut cmd = exporter(&[]);
    cmd.args([
        "simulator",
        "--client-id",
        "my-id",
        "--client-secret",
        "my-secret",
    ]);
    let (_guard, log) = spawn_logged(&mut cmd);
    let printed = futures_poll(&log, "client secret");
    assert!(
        printed.contains("client id my-id") && printed.contains("client secret my-secret"),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_says_where_to_open_it_and_does_not_warn_about_its_own_callback() {
    let (_guard, log) =
        spawn_logged(exporter(&[("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0")]).arg("demo"));
    let text = wait_for_log(&log, "demo ready: open ", 1).await;
    let url = text
        .split("demo ready: open ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a URL after 'demo ready: open'")
        .to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    let page = common::body_of(common::http().get(&url)).await;
    assert!(page.contains("probe?account=alex"), "{page}");
    // Its own loopback callback is expected: said at INFO, with nothing about a refusal.
    let text = log.lock().unwrap().clone();
    assert!(!text.contains("level=warn"), "{text}");
    assert!(!text.contains("will be refused"), "{text}");
}

/// Runs the binary with `args` and no environment but `vars`; returns (exit code, stdout,
/// stderr).
fn run_args(args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("NO_COLOR", "1")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_mistyped_command_or_flag_gets_did_you_mean() {
    for (args, suggested) in [
        (&["notfy", "list"][..], "'notify'"),
        (&["notify", "lsit"][..], "'list'"),
        (&["auth", "--acount", "mom"][..], "'--account'"),
        (
            &["--web.listen-adress", "127.0.0.1:0"][..],
            "'--web.listen-address'",
        ),
        (&["backfil"][..], "'backfill'"),
    ] {
        let (code, _, stderr) = run_args(args, &[]);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains("similar") && stderr.contains(suggested),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn notify_help_describes_its_subcommands() {
    let (code, help, _) = run_args(&["notify", "--help"], &[]);
    assert_eq!(code, 0, "{help}");
    for (command, says) in [
        ("list", "subscriptions at Withings"),
        ("subscribe", "every category its collectors"),
        ("revoke", "Revoke this exporter's subscriptions"),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(command))
            .unwrap_or_else(|| panic!("no {command} in:\n{help}"));
        assert!(
            line.contains(says) || help.contains(says),
            "{command}: {help}"
        );
        assert!(
            line.trim_start().len() > command.len(),
            "{command} undescribed: {help}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_log_no_lines_of_a_server() {
    // `notify` and `backfill` read the token directory as `serve` does, and serve nothing:
    // no "serving a new account".
    let sim = withings_sim::Simulator::start(Default::default())
        .await
        .unwrap();
    sim.add_user("1001");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    common::accounts::write_account(&sim, &tokens, "mom", "1001");
    let output = dir.path().join("history.om");
    let mut vars: Vec<(String, String)> = common::accounts::directory_vars(&sim, &tokens);
    vars.push((
        "WITHINGS_CALLBACK_URL".into(),
        "https://withings.example.org/withings/notify".into(),
    ));
    vars.push(("RUST_LOG".into(), "info".into()));
    let output_arg = output.display().to_string();
    for args in [
        vec!["notify", "list"],
        vec![
            "backfill",
            "--account",
            "mom",
            "--instance",
            "x:1",
            "--output",
            output_arg.as_str(),
        ],
    ] {
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let vars = vars.clone();
        let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let vars: Vec<(&str, &str)> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            run_args(&args, &vars)
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(!stderr.contains("serving"), "{stderr}");
    }
}
