//! Proof against the real programs: `promtool check metrics` on the exporter's own
//! exposition, and a real Prometheus (the project's alert rules) and Alertmanager (the
//! project's routing and inhibitions) fed by the exporter running in-process against the
//! simulator.
//!
//! The tests need `promtool`, `prometheus` (Debian package prometheus) and
//! `prometheus-alertmanager` (Debian package prometheus-alertmanager) on the PATH, hence
//! `#[ignore]`: run them with `cargo test --test it stack:: -- --include-ignored`.

use crate::common;
use crate::common::dashboard;

use common::accounts::unix_now;
use common::prometheus::{
    Daemon, assert_promtool_accepts, free_port, shipped_discovery_config, start_daemon,
    start_daemon_on_ports,
};
use common::{
    AppOptions, TestApp, fixture, http_with_timeout as http, read_repo_file, spawn_app_with,
};
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use withings_sim::{Fault, SimulatorOptions};

const RULES: &str = "prometheus/rules/withings.rules.yml";
const ALERTMANAGER_CONFIG: &str = "prometheus/alertmanager.yml";
/// The placeholder receiver of the shipped Alertmanager config, replaced by the test's own.
const PLACEHOLDER_WEBHOOK: &str = "http://127.0.0.1:5001/alerts";
/// What the test gives every non-zero `for:` of the rules: long enough that the alert is
/// pending for a couple of 1 s evaluations first, short enough for the CI budget.
const SHORT_FOR: &str = "2s";
/// How long any one thing may take to become true before the test gives up. Generous,
/// because the machine may be loaded; the test only waits this long when it is failing.
const DEADLINE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------- promtool check metrics

/// The check above is only worth something if promtool's lint findings fail it.
#[test]
#[ignore = "needs promtool (Debian package prometheus)"]
#[should_panic(expected = "should have \"_total\" suffix")]
fn promtool_lint_findings_fail_the_check() {
    assert_promtool_accepts("# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n");
}

/// Every metric family the exposition of a healthy scrape must contain, so that the lint
/// is known to have seen them.
const HEALTHY_FAMILIES: &[&str] = &[
    "withings_api_requests_total",
    "withings_blood_pressure_mmhg",
    "withings_body_temperature_celsius",
    "withings_exporter_build_info",
    "withings_heart_rate_bpm",
    "withings_last_success_timestamp_seconds",
    "withings_measurement_timestamp_seconds",
    "withings_scrape_duration_seconds",
    "withings_spo2_ratio",
    "withings_token_valid",
    "withings_up",
];

fn assert_families(exposition: &str, families: &[&str]) {
    for family in families {
        assert!(
            exposition.contains(&format!("# TYPE {family} ")),
            "{family} missing from:\n{exposition}"
        );
    }
}

#[tokio::test]
#[ignore = "needs promtool (Debian package prometheus)"]
async fn promtool_accepts_the_seed_exposition() {
    let app = common::spawn_seeded_app().await;
    let exposition = app.scrape().await;
    assert_families(&exposition, HEALTHY_FAMILIES);
    assert_promtool_accepts(&exposition);
}

#[tokio::test]
#[ignore = "needs promtool (Debian package prometheus)"]
async fn promtool_accepts_the_live_demo_exposition() {
    let app = spawn_app_with(AppOptions {
        simulator: SimulatorOptions {
            live: true,
            ..SimulatorOptions::default()
        },
        ..AppOptions::default()
    })
    .await;
    let exposition = app.scrape().await;
    assert_families(&exposition, HEALTHY_FAMILIES);
    assert_promtool_accepts(&exposition);
}

/// The real 2,062-group account history, plus an inconclusive SpO2 reading and, with
/// ambiguous groups excluded, the seed-like attrib-1 groups: the exporter then counts
/// skipped groups, a family the other expositions lack.
#[tokio::test]
#[ignore = "needs promtool (Debian package prometheus)"]
async fn promtool_accepts_the_real_history_with_skipped_groups() {
    let app = spawn_app_with(AppOptions {
        env: vec![("WITHINGS_INCLUDE_AMBIGUOUS", "false".into())],
        ..AppOptions::default()
    })
    .await;
    app.simulator
        .load_fixture(&fixture("measurement_list.json"))
        .expect("measurement_list fixture");
    app.simulator
        .upsert_group(
            json!({"grpid": 4_800_000_002_i64, "attrib": 0, "date": 1_700_000_000,
            "category": 1, "is_inconclusive": true,
            "measures": [{"value": 80, "type": 54, "unit": 0}]}),
        )
        .expect("inconclusive group");
    let exposition = app.scrape().await;
    assert!(
        common::sample_with(
            &exposition,
            "withings_groups_skipped_total",
            &[("reason", "inconclusive")]
        )
        .is_some(),
        "{exposition}"
    );
    assert_promtool_accepts(&exposition);
}

/// Every measure family a Body Scan fills (body composition, segments with `position`,
/// the AFib class, ECG-derived vascular age...) passes the linter too.
#[tokio::test]
#[ignore = "needs promtool (Debian package prometheus)"]
async fn promtool_accepts_the_body_composition_exposition() {
    for file in ["measurement_list_2.json", "measurement_positions.json"] {
        let app = spawn_app_with(AppOptions {
            simulator: SimulatorOptions {
                page_size: 100_000,
                ..SimulatorOptions::default()
            },
            ..AppOptions::default()
        })
        .await;
        app.simulator
            .load_fixture(&fixture(file))
            .expect("body composition fixture");
        let exposition = app.scrape().await;
        assert_families(
            &exposition,
            &[
                "withings_weight_grams",
                "withings_fat_ratio",
                "withings_segmental_fat_mass_grams",
                "withings_basal_metabolic_rate_kcal_per_day",
            ],
        );
        assert_promtool_accepts(&exposition);
    }
}

/// After a success, an expired token: `withings_up` and `withings_token_valid` at 0 and a
/// second status label on the request counter.
#[tokio::test]
#[ignore = "needs promtool (Debian package prometheus)"]
async fn promtool_accepts_the_failing_exposition() {
    let app = common::spawn_seeded_app().await;
    app.scrape().await;
    app.simulator.set_fault(Some(Fault::ExpiredToken));
    let exposition = app.scrape().await;
    assert_eq!(
        common::sample(&exposition, "withings_token_valid"),
        Some(0.0)
    );
    assert_eq!(common::sample(&exposition, "withings_up"), Some(0.0));
    assert_families(&exposition, HEALTHY_FAMILIES);
    assert_promtool_accepts(&exposition);
}

// ------------------------------------------------------------------ child processes

/// Alertmanager's arguments, on `port`, with its files in `dir`.
fn alertmanager_args(dir: &Path, port: u16) -> Vec<String> {
    vec![
        format!("--config.file={}", dir.join("alertmanager.yml").display()),
        format!("--storage.path={}", dir.join("alertmanager-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        // Empty disables clustering, which would otherwise bind port 9094.
        "--cluster.listen-address=".into(),
    ]
}

#[tokio::test]
#[ignore = "needs prometheus-alertmanager (Debian package of the same name)"]
async fn a_daemon_whose_port_was_taken_is_started_on_another() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        dir.path().join("alertmanager.yml"),
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .expect("write alertmanager.yml");
    // Held until the end: the first attempt cannot bind it.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("address").port();
    let mut ports = vec![taken_port, free_port()].into_iter();
    let daemon = start_daemon_on_ports(
        "alertmanager",
        "prometheus-alertmanager",
        dir.path(),
        |port| alertmanager_args(dir.path(), port),
        || ports.next().expect("at most two attempts"),
    )
    .await;
    assert_ne!(daemon.port, taken_port);
    let first = std::fs::read_to_string(dir.path().join("alertmanager-1.log")).expect("first log");
    assert!(first.contains("address already in use"), "{first}");
}

// -------------------------------------------------------------- webhook receiver

/// Alertmanager's notification target: answers 200 to every request and keeps the bodies.
/// The shipped config points at a placeholder port that anything on the machine could
/// own; this keeps the test's notifications inside the test.
struct Webhook {
    port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind webhook");
        let port = listener.local_addr().expect("webhook address").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::clone(&bodies);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let received = Arc::clone(&received);
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Read the head, then as much body as Content-Length says.
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buffer);
                        let Some(head_end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let length = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buffer.len() >= head_end + 4 + length {
                            let body = String::from_utf8_lossy(
                                &buffer[head_end + 4..head_end + 4 + length],
                            )
                            .into_owned();
                            received
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(body);
                            let _ = stream
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                                )
                                .await;
                            return;
                        }
                    }
                });
            }
        });
        Self { port, bodies, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/alerts", self.port)
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------------ the stack

/// The rules file with every non-zero `for:` replaced by [`SHORT_FOR`], so that the
/// operational alerts (minutes in production) fire within the test. Returns the text and
/// how many durations were shortened.
fn rules_with_short_for(rules: &str) -> (String, usize) {
    let mut shortened = 0;
    let text = rules
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            match trimmed.strip_prefix("for:") {
                Some(duration) if !matches!(duration.trim(), "0" | "0s" | "0m") => {
                    shortened += 1;
                    let indent = &line[..line.len() - trimmed.len()];
                    format!("{indent}for: {SHORT_FOR}")
                }
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    (text + "\n", shortened)
}

#[test]
fn rules_with_short_for_shortens_only_non_zero_durations() {
    let (text, n) = rules_with_short_for("  - alert: A\n    for: 10m\n  - alert: B\n    for: 0m\n");
    assert_eq!(n, 1);
    assert_eq!(
        text,
        format!("  - alert: A\n    for: {SHORT_FOR}\n  - alert: B\n    for: 0m\n")
    );
    // The shipped rules: WithingsExporterDown, WithingsProbeFailing, WithingsTokenInvalid,
    // WithingsFetchFailing, WithingsRateLimited, WithingsAccountFileError,
    // WithingsRequestBudgetSaturated, WithingsRemoteWriteFailing,
    // WithingsRemoteWriteFallingBehind, WithingsRemoteWriteAccountBehind,
    // WithingsDeviceBatteryLow.
    assert_eq!(rules_with_short_for(&read_repo_file(RULES)).1, 11);
}

/// The exporter, its simulator, Prometheus, Alertmanager and the webhook, all on loopback.
/// Field order is drop order: the daemons die before their directory is removed.
struct Stack {
    prometheus: Daemon,
    alertmanager: Daemon,
    webhook: Webhook,
    app: TestApp,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start(app: TestApp) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let webhook = Webhook::start().await;

        let shipped = read_repo_file(ALERTMANAGER_CONFIG);
        assert!(
            shipped.contains(PLACEHOLDER_WEBHOOK),
            "{ALERTMANAGER_CONFIG} no longer uses {PLACEHOLDER_WEBHOOK}: update this test"
        );
        std::fs::write(
            dir.path().join("alertmanager.yml"),
            shipped.replace(PLACEHOLDER_WEBHOOK, &webhook.url()),
        )
        .expect("write alertmanager.yml");
        let alertmanager = start_daemon(
            "alertmanager",
            "prometheus-alertmanager",
            dir.path(),
            |port| alertmanager_args(dir.path(), port),
        )
        .await;

        let (rules, _) = rules_with_short_for(&read_repo_file(RULES));
        std::fs::create_dir(dir.path().join("rules")).expect("rules directory");
        std::fs::write(dir.path().join("rules/withings.rules.yml"), rules).expect("write rules");
        // The job is named as in the shipped prometheus.yml: WithingsExporterDown selects
        // up{job=~".*withings.*"}. A scrape per second instead of per minute so that
        // rate(...[1m]) has samples within seconds.
        let prometheus_config = dir.path().join("prometheus.yml");
        let exporter = app.address;
        let alertmanager_port = alertmanager.port;
        std::fs::write(
            &prometheus_config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - rules/withings.rules.yml\n\
                 alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{alertmanager_port}']\n\
                 scrape_configs:\n  - job_name: withings\n    static_configs:\n      - targets: ['{exporter}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let tsdb = dir.path().join("prometheus-data");
        let prometheus = start_daemon("prometheus", "prometheus", dir.path(), |port| {
            vec![
                format!("--config.file={}", prometheus_config.display()),
                format!("--storage.tsdb.path={}", tsdb.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ]
        })
        .await;

        Self {
            prometheus,
            alertmanager,
            webhook,
            http: http(),
            app,
            _dir: dir,
        }
    }

    /// Both daemons' output, for assertion messages.
    fn logs(&self) -> String {
        format!(
            "{}\n{}",
            self.prometheus.log_tail(),
            self.alertmanager.log_tail()
        )
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {url}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("GET {url}: {e}: {text}"))
    }

    /// The result of an instant query. Panics when Prometheus rejects the query: that
    /// does not get better by waiting.
    async fn query(&self, query: &str) -> Result<Vec<Value>, String> {
        let url = self.prometheus.url("/api/v1/query");
        let response = self
            .http
            .post(&url)
            .form(&[("query", query)])
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
        let body: Value =
            serde_json::from_str(&text).map_err(|e| format!("{url}: {status}: {e}: {text}"))?;
        assert!(
            body["errorType"] != "bad_data",
            "Prometheus rejects the query {query}: {}\n{}",
            body["error"],
            self.logs()
        );
        if body["status"] != "success" {
            return Err(format!("{status}: {text}"));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// All of Alertmanager's alerts: active, silenced and inhibited.
    async fn alertmanager_all_alerts(&self) -> Result<Vec<Value>, String> {
        let alerts = self
            .get_json(&self.alertmanager.url("/api/v2/alerts"))
            .await?;
        Ok(alerts.as_array().cloned().unwrap_or_default())
    }

    /// Alertmanager's alerts named `name`.
    async fn alertmanager_alerts(&self, name: &str) -> Result<Vec<Value>, String> {
        let mut alerts = self.alertmanager_all_alerts().await?;
        alerts.retain(|a| a["labels"]["alertname"] == name);
        Ok(alerts)
    }

    /// The alert `name` with every label of `labels`, once Alertmanager has it in `state`
    /// ("active" or "suppressed"), with the exporter as its instance.
    async fn alertmanager_alert(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        state: &str,
    ) -> Result<Value, String> {
        let instance = self.app.address.to_string();
        let alerts = self.alertmanager_all_alerts().await?;
        alerts
            .iter()
            .find(|a| {
                a["labels"]["alertname"] == name
                    && a["labels"]["instance"] == instance.as_str()
                    && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
                    && a["status"]["state"] == state
            })
            .cloned()
            .ok_or_else(|| {
                let present: Vec<String> = alerts
                    .iter()
                    .map(|a| format!("{} {}", a["labels"], a["status"]["state"]))
                    .collect();
                format!(
                    "no {state} {name} {labels:?} for {instance} in Alertmanager; it has:\n{}",
                    present.join("\n")
                )
            })
    }

    /// Polls `check` until it succeeds; panics with the last reason and the daemons' logs
    /// after [`DEADLINE`].
    async fn eventually<T>(
        &self,
        what: &str,
        mut check: impl AsyncFnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let reason = match check().await {
                Ok(value) => return value,
                Err(reason) => reason,
            };
            assert!(
                Instant::now() < deadline,
                "{what}: not within {DEADLINE:?}: {reason}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Once every rule has been evaluated, asserts that none failed (a rule whose
    /// expression errors at evaluation, e.g. a many-to-many match, never fires).
    async fn assert_rules_healthy(&self) {
        let rules = self
            .eventually("every rule evaluated", async || {
                let body = self.get_json(&self.prometheus.url("/api/v1/rules")).await?;
                let rules: Vec<Value> = body["data"]["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                    .collect();
                if rules.is_empty() || rules.iter().any(|r| r["health"] == "unknown") {
                    return Err(format!("not all evaluated yet: {rules:?}"));
                }
                Ok(rules)
            })
            .await;
        let broken: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
            .collect();
        assert!(
            broken.is_empty(),
            "rules fail to evaluate:\n{}",
            broken.join("\n")
        );
        let loaded = rules.iter().filter(|r| r["type"] == "alerting").count();
        let defined = read_repo_file(RULES)
            .lines()
            .filter(|l| l.trim_start().starts_with("- alert:"))
            .count();
        assert_eq!(loaded, defined, "alerting rules loaded: {rules:?}");
    }
}

/// A weighing from a scale and a day, a night and the devices of the collectors, all
/// fresh, beside the seed's vitals.
fn feed_every_family(app: &TestApp) {
    let now = unix_now();
    app.simulator
        .upsert_group(json!({
            "grpid": 9_000_000_001i64, "attrib": 0, "date": now - 3600, "created": now - 3000,
            "modified": now - 3000, "category": 1, "deviceid": "scale", "hash_deviceid": "scale",
            "model": "Body+",
            "measures": [
                {"value": 72550, "type": 1, "unit": -3},
                {"value": 215, "type": 6, "unit": -1}
            ]
        }))
        .expect("weighing");
    let mut activity: Value = serde_json::from_str(&fixture("getactivity.json")).expect("JSON");
    let mut activities = activity["body"]["activities"].take();
    for row in activities.as_array_mut().into_iter().flatten() {
        row["modified"] = json!(now - 60);
    }
    let night = json!({
        "id": 1, "timezone": "Europe/Berlin", "model": 32, "model_id": 63,
        "hash_deviceid": "analyzer", "startdate": now - 30_000, "enddate": now - 3_000,
        "date": "2026-11-30", "created": now - 2_000, "modified": now - 2_000,
        "completed": true,
        "data": {"total_timeinbed": 27000, "total_sleep_time": 25000,
                 "apnea_hypopnea_index": 4, "sleep_efficiency": 0.93}
    });
    let device = json!({
        "type": "Scale", "battery": "low", "model": "Body+", "model_id": 5,
        "timezone": "Europe/Berlin", "first_session_date": now - 86_400,
        "last_session_date": now - 3600, "deviceid": "scale", "hash_deviceid": "scale"
    });
    app.simulator
        .set_extras(withings_sim::data::UserExtras {
            activities: activities.as_array().cloned().unwrap_or_default(),
            sleep: vec![night],
            devices: vec![device],
            ..Default::default()
        })
        .expect("extras");
}

/// A blood-pressure reading taken a minute ago and uploaded now, on the seed's BPM Core:
/// systolic 185 (> 180, hypertensive crisis) and diastolic 95 (>= 90, stage 2).
fn hypertensive_group(now: i64) -> Value {
    json!({
        "grpid": 4_800_000_001_i64,
        "attrib": 0,
        "date": now - 60,
        "created": now,
        "modified": now,
        "category": 1,
        "deviceid": "c405eb8e0e053f6601e151c7e43c04e29aad6956",
        "hash_deviceid": "c405eb8e0e053f6601e151c7e43c04e29aad6956",
        "measures": [
            {"value": 95, "type": 9, "unit": 0, "algo": 0, "fm": 3},
            {"value": 185, "type": 10, "unit": 0, "algo": 0, "fm": 3},
            {"value": 84, "type": 11, "unit": 0, "algo": 0, "fm": 3}
        ],
        "modelid": 44,
        "model": "BPM Core",
        "comment": null
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus and prometheus-alertmanager (Debian packages of the same names)"]
async fn prometheus_and_alertmanager_get_dashboard_data_and_alerts() {
    // Every collector on, so that every row of the dashboard has data.
    let app = spawn_app_with(AppOptions {
        env: vec![(
            "WITHINGS_COLLECTORS",
            "measures,activity,sleep,devices".into(),
        )],
        ..AppOptions::default()
    })
    .await;
    app.simulator
        .load_fixture(&fixture("seed_getmeas.json"))
        .expect("seed fixture");
    feed_every_family(&app);
    // Where the time goes, shown with --nocapture (the CI budget is about a minute).
    let started = Instant::now();
    let phase = |name: &str| eprintln!("stack: {name} after {:.1?}", started.elapsed());
    let stack = Stack::start(app).await;
    phase("Prometheus and Alertmanager ready");

    // 1. Every dashboard panel has data. The seed has every vital; rate() needs two
    // scrapes within its window, hence polling.
    let queries = dashboard::dashboard_queries_with_titles();
    assert!(
        queries.len() >= 10,
        "only {} dashboard queries",
        queries.len()
    );
    for (title, query) in &queries {
        // The Day row's samples at their own times come by remote write, which this stack
        // does not have: dashboard_day:: proves those panels.
        if dashboard::PROVEN_BY_REMOTE_WRITE.contains(&title.as_str()) {
            continue;
        }
        stack
            .eventually(&format!("panel {title:?}: {query}"), async || {
                let result = stack.query(query).await?;
                if result.is_empty() {
                    Err("empty result".to_owned())
                } else {
                    Ok(())
                }
            })
            .await;
    }
    stack.assert_rules_healthy().await;

    phase("every dashboard query has data, every rule healthy");

    // 2. The seed's readings are from 2023: the reading reminder reaches Alertmanager, and
    // no vital alert fires for readings that old.
    stack
        .eventually("old seed readings notice in Alertmanager", async || {
            stack
                .alertmanager_alert(
                    "WithingsNoRecentBloodPressureReading",
                    &[("severity", "info")],
                    "active",
                )
                .await
        })
        .await;
    let vital_alerts = stack
        .query(r#"ALERTS{alertname=~"BloodPressure.*|SpO2.*|BodyTemperature.*|HeartRate.*"}"#)
        .await
        .expect("ALERTS query");
    assert!(
        vital_alerts.is_empty(),
        "vital alerts on 2023 readings: {vital_alerts:?}"
    );

    phase("old-reading reminder in Alertmanager");

    // 3. A hypertensive reading arrives. The exporter's incremental sync must pick it up,
    // Prometheus fire both blood-pressure alerts, and Alertmanager inhibit the stage-2
    // alert by the crisis one (the shipped inhibit rule).
    stack
        .app
        .simulator
        .upsert_group(hypertensive_group(unix_now()))
        .expect("hypertensive group");
    let crisis = stack
        .eventually("BloodPressureCrisis in Alertmanager", async || {
            stack
                .alertmanager_alert(
                    "BloodPressureCrisis",
                    &[
                        ("kind", "systolic"),
                        ("severity", "critical"),
                        ("job", "withings"),
                    ],
                    "active",
                )
                .await
        })
        .await;
    assert_eq!(
        crisis["annotations"]["summary"], "Hypertensive crisis range: systolic 185 mmHg",
        "{crisis}"
    );
    for kind in ["systolic", "diastolic"] {
        let high = stack
            .eventually(&format!("BloodPressureHigh {kind} inhibited"), async || {
                stack
                    .alertmanager_alert("BloodPressureHigh", &[("kind", kind)], "suppressed")
                    .await
            })
            .await;
        assert_eq!(
            high["status"]["inhibitedBy"],
            json!([crisis["fingerprint"]]),
            "{high}"
        );
    }
    assert!(
        stack
            .alertmanager_alerts("BloodPressureCrisis")
            .await
            .expect("alerts")
            .iter()
            .all(|a| a["labels"]["kind"] == "systolic"),
        "diastolic 95 is not a crisis"
    );

    phase("blood-pressure alerts in Alertmanager");

    // 4. Withings starts rejecting the token. The token alert fires after its (shortened)
    // `for:` and inhibits the fetch alert; the last known readings stay exported, so the
    // crisis alert stays active.
    stack.app.simulator.set_fault(Some(Fault::ExpiredToken));
    let token = stack
        .eventually("WithingsTokenInvalid in Alertmanager", async || {
            stack
                .alertmanager_alert("WithingsTokenInvalid", &[("severity", "warning")], "active")
                .await
        })
        .await;
    let fetch = stack
        .eventually("WithingsFetchFailing inhibited", async || {
            stack
                .alertmanager_alert("WithingsFetchFailing", &[], "suppressed")
                .await
        })
        .await;
    assert_eq!(
        fetch["status"]["inhibitedBy"],
        json!([token["fingerprint"]]),
        "{fetch}"
    );
    stack
        .alertmanager_alert("BloodPressureCrisis", &[("kind", "systolic")], "active")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));

    phase("token alert in Alertmanager");

    // 5. The critical route notifies the receiver (group_wait 10 s in the shipped config).
    stack
        .eventually("crisis notification at the webhook", async || {
            let bodies = stack
                .webhook
                .bodies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            bodies
                .iter()
                .filter_map(|b| serde_json::from_str::<Value>(b).ok())
                .find(|b| {
                    b["alerts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|a| a["labels"]["alertname"] == "BloodPressureCrisis")
                })
                .ok_or_else(|| format!("webhook received {bodies:?}"))
        })
        .await;
    phase("crisis notification at the webhook");
    stack.assert_rules_healthy().await;
}

// ------------------------------------------------------------------ several accounts

/// A fresh blood-pressure reading of `systolic` for one simulated user.
fn reading(grpid: i64, systolic: i64, now: i64) -> Value {
    json!({
        "grpid": grpid, "attrib": 0, "date": now - 60, "created": now, "modified": now,
        "category": 1, "deviceid": "bpm", "hash_deviceid": "bpm", "model": "BPM Core",
        "measures": [
            {"value": systolic, "type": 10, "unit": 0},
            {"value": 80, "type": 9, "unit": 0}
        ]
    })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Prometheus (Debian package prometheus)"]
async fn prometheus_discovers_every_account_and_one_added_with_auth() {
    use withings_exporter::app::App;
    use withings_exporter::auth::{AuthSettings, Authorization};
    use withings_exporter::config::Config;
    use withings_sim::Simulator;

    let sim = Simulator::start(SimulatorOptions::default()).await.unwrap();
    let now = unix_now();
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts");
    std::fs::create_dir(&accounts).unwrap();
    for (name, userid, systolic) in [("mom", "2001", 131), ("ben", "2002", 117)] {
        sim.set_user_groups(
            userid,
            vec![reading(userid.parse().unwrap(), systolic, now)],
        )
        .unwrap();
        common::accounts::write_account(&sim, &accounts, name, userid);
    }
    let (client_id, client_secret) = sim.client_credentials();
    let config = Config::from_vars(
        [
            ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0".to_string()),
            ("WITHINGS_API_URL", sim.url().to_string()),
            ("WITHINGS_ACCOUNT_URL", sim.url().to_string()),
            ("WITHINGS_TOKEN_DIR", accounts.display().to_string()),
            ("WITHINGS_CLIENT_ID", client_id),
            ("WITHINGS_CLIENT_SECRET", client_secret),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .unwrap();
    let app = Arc::new(App::from_config(&config).unwrap());
    tokio::spawn(Arc::clone(&app).watch(Duration::from_millis(200)));
    let server = common::serve(common::bind(Arc::clone(&app)).await);
    let exporter = server.address.to_string();

    let prometheus_config = dir.path().join("prometheus.yml");
    std::fs::write(&prometheus_config, shipped_discovery_config(&exporter)).unwrap();
    let tsdb = dir.path().join("data");
    let prometheus = start_daemon("prometheus", "prometheus", dir.path(), |port| {
        vec![
            format!("--config.file={}", prometheus_config.display()),
            format!("--storage.tsdb.path={}", tsdb.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ]
    })
    .await;
    // Each account scraped on /probe under its own name, the readings never mixed.
    for (account, want) in [("mom", "131"), ("ben", "117")] {
        assert_eq!(
            scraped_systolic(&prometheus, account).await,
            want,
            "{account}"
        );
    }

    // A third person authorizes with `auth --account`; Prometheus finds them with no change
    // to its configuration.
    sim.set_user_groups("2003", vec![reading(2003, 142, now)])
        .unwrap();
    sim.sign_in("2003");
    let mut settings = AuthSettings::for_account(
        &config.withings,
        &config.accounts,
        &config.collectors,
        "grandpa",
    )
    .unwrap();
    settings.listen = None;
    let authorization = Authorization::new(settings).unwrap();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirected = browser.get(authorization.url()).send().await.unwrap();
    let location = redirected.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    let code = authorization.code_from_pasted(&location).unwrap();
    authorization.exchange(&code).await.unwrap();
    let got = scraped_systolic(&prometheus, "grandpa").await;
    assert_eq!(got, "142");
    drop(server);
}

/// The systolic value Prometheus has scraped for `account`, once it has one.
async fn scraped_systolic(prometheus: &Daemon, account: &str) -> String {
    let http = http();
    let url = prometheus.url("/api/v1/query");
    let query = format!(
        "withings_blood_pressure_mmhg{{job=\"withings\",kind=\"systolic\",account=\"{account}\"}}"
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = http
            .post(&url)
            .form(&[("query", query.as_str())])
            .send()
            .await;
        let body: Value = match answer {
            Ok(response) => serde_json::from_str(&response.text().await.unwrap_or_default())
                .unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if let Some(value) = body["data"]["result"][0]["value"][1].as_str() {
            return value.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{account} never scraped: {body}\n{}",
            prometheus.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
