//! `withings-exporter backfill`: the OpenMetrics writer, a run against the simulator's
//! multi-year history of two accounts (measures, and activity and sleep), and the proof with
//! the real programs — `promtool tsdb create-blocks-from openmetrics` and a Prometheus 2.42
//! started on the blocks, answering with the simulator's readings exactly, live scraping
//! continuing the same series, and the shipped dashboard's history panels having data over
//! the backfilled range.
//!
//! The tests with the real programs need `promtool` and `prometheus` (Debian package
//! prometheus), hence `#[ignore]`: `cargo test --test it backfill:: -- --include-ignored`.

use crate::common;
use crate::common::dashboard;

use common::process::{BIN, ChildGuard};
use common::prometheus::{Daemon, start_daemon};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use withings_exporter::account::token_store::TokenStore;
use withings_exporter::account::tokens::{ClientCredentials, TokenSource};
use withings_exporter::account::unix_now;
use withings_exporter::backfill::openmetrics::{
    HEAD_SECONDS, OpenMetricsWriter, Sample, Window, WriteError, unit_of,
};
use withings_exporter::backfill::{self, Options, Target};
use withings_exporter::clock::Clock;
use withings_exporter::collector::measures::table::{MEASURES, index_of, scale};
use withings_exporter::secret::Secret;
use withings_exporter::withings::{ClientOptions, Limits, WithingsClient};
use withings_sim::history::{self, HistorySpec};
use withings_sim::{Fault, Simulator, SimulatorOptions};

const DEADLINE: Duration = Duration::from_secs(60);
const YEAR: i64 = 365 * 86_400;

// ------------------------------------------------------------------ the writer

/// Name, help, the labels of each series, the samples.
type Family<'a> = (&'a str, &'a str, Vec<Vec<(&'a str, String)>>, Vec<Sample>);

fn write(window: Window, families: &mut [Family<'_>]) -> String {
    let mut writer = OpenMetricsWriter::new(Vec::new(), window);
    for (name, help, series, samples) in families.iter_mut() {
        writer.gauge_family(name, help, series, samples).unwrap();
    }
    String::from_utf8(writer.finish().unwrap()).unwrap()
}

fn s(series: u32, timestamp: i64, grpid: i64, value: f64) -> Sample {
    Sample {
        series,
        timestamp,
        grpid,
        value,
    }
}

const ALL_TIME: Window = Window {
    since: None,
    until: i64::MAX,
};

#[test]
fn samples_are_ordered_by_series_then_time_and_the_file_ends_with_eof() {
    let series = vec![
        vec![("kind", "systolic".to_owned())],
        vec![("kind", "diastolic".to_owned())],
    ];
    let samples = vec![
        s(0, 300, 3, 130.0),
        s(1, 100, 1, 80.0),
        s(0, 100, 1, 120.0),
        s(1, 300, 3, 85.0),
        s(0, 200, 2, 125.0),
    ];
    let text = write(
        ALL_TIME,
        &mut [("withings_blood_pressure_mmhg", "BP.", series, samples)],
    );
    assert_eq!(
        text,
        "# HELP withings_blood_pressure_mmhg BP.\n\
         # TYPE withings_blood_pressure_mmhg gauge\n\
         # UNIT withings_blood_pressure_mmhg mmhg\n\
         withings_blood_pressure_mmhg{kind=\"diastolic\"} 80 100\n\
         withings_blood_pressure_mmhg{kind=\"diastolic\"} 85 300\n\
         withings_blood_pressure_mmhg{kind=\"systolic\"} 120 100\n\
         withings_blood_pressure_mmhg{kind=\"systolic\"} 125 200\n\
         withings_blood_pressure_mmhg{kind=\"systolic\"} 130 300\n\
         # EOF\n"
    );
}

#[test]
fn a_family_is_one_block_and_cannot_be_written_twice() {
    let mut writer = OpenMetricsWriter::new(Vec::new(), ALL_TIME);
    let series = vec![vec![]];
    writer
        .gauge_family("withings_spo2_ratio", "h", &series, &mut [s(0, 1, 1, 0.97)])
        .unwrap();
    writer
        .gauge_family(
            "withings_heart_rate_bpm",
            "h",
            &series,
            &mut [s(0, 1, 1, 60.0)],
        )
        .unwrap();
    let again = writer.gauge_family("withings_spo2_ratio", "h", &series, &mut [s(0, 2, 2, 0.96)]);
    assert!(
        matches!(again, Err(WriteError::FamilyRepeated(name)) if name == "withings_spo2_ratio")
    );
    let text = String::from_utf8(writer.finish().unwrap()).unwrap();
    assert_eq!(text.matches("# TYPE withings_spo2_ratio").count(), 1);
    assert!(!text.contains(" 0.96 "));
    // A sample naming a series that was not given is refused, not written unlabelled.
    let mut writer = OpenMetricsWriter::new(Vec::new(), ALL_TIME);
    assert!(matches!(
        writer.gauge_family("withings_spo2_ratio", "h", &series, &mut [s(1, 1, 1, 0.9)]),
        Err(WriteError::UnknownSeries { .. })
    ));
}

#[test]
fn label_values_and_help_are_escaped() {
    let series = vec![vec![
        ("device_id", "a\\b".to_owned()),
        ("device_model", "BPM \"Core\"\nv2".to_owned()),
    ]];
    let text = write(
        ALL_TIME,
        &mut [(
            "withings_heart_rate_bpm",
            "Pulse \"bpm\" \\ per\nminute.",
            series,
            vec![s(0, 5, 1, 61.0)],
        )],
    );
    assert!(
        text.contains("# HELP withings_heart_rate_bpm Pulse \\\"bpm\\\" \\\\ per\\nminute.\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "withings_heart_rate_bpm{device_id=\"a\\\\b\",device_model=\"BPM \\\"Core\\\"\\nv2\"} 61 5\n"
        ),
        "{text}"
    );
}

#[test]
fn nothing_of_the_last_three_hours_and_nothing_before_since() {
    let now = 1_800_000_000;
    let window = Window::before_head(now, Some(1_000));
    assert_eq!(window.until, now - HEAD_SECONDS);
    let samples = vec![
        s(0, 999, 1, 1.0),
        s(0, 1_000, 2, 2.0),
        s(0, now - HEAD_SECONDS, 3, 3.0),
        s(0, now - HEAD_SECONDS + 1, 4, 4.0),
        s(0, now, 5, 5.0),
    ];
    let text = write(
        window,
        &mut [("withings_visceral_fat", "h", vec![vec![]], samples)],
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "withings_visceral_fat 2 1000".to_owned(),
            format!("withings_visceral_fat 3 {}", now - HEAD_SECONDS)
        ]
    );
    // A family with nothing left in the window is left out entirely, headers included.
    let text = write(
        window,
        &mut [(
            "withings_visceral_fat",
            "h",
            vec![vec![]],
            vec![s(0, now, 1, 1.0)],
        )],
    );
    assert_eq!(text, "# EOF\n");
}

#[test]
fn two_readings_of_a_series_in_one_second_keep_the_greatest_grpid() {
    let text = write(
        ALL_TIME,
        &mut [(
            "withings_weight_grams",
            "h",
            vec![vec![]],
            vec![
                s(0, 10, 7, 70_000.0),
                s(0, 10, 9, 71_000.0),
                s(0, 10, 8, 72_000.0),
            ],
        )],
    );
    assert!(text.contains("withings_weight_grams 71000 10\n"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("withings_weight_grams "))
            .count(),
        1
    );
}

#[test]
fn units_are_declared_only_when_the_name_ends_with_them() {
    assert_eq!(unit_of("withings_weight_grams"), Some("grams"));
    assert_eq!(
        unit_of("withings_pulse_wave_velocity_meters_per_second"),
        Some("meters_per_second")
    );
    assert_eq!(
        unit_of("withings_measurement_timestamp_seconds"),
        Some("seconds")
    );
    assert_eq!(unit_of("withings_fat_ratio"), Some("ratio"));
    assert_eq!(unit_of("withings_visceral_fat"), None);
    assert_eq!(unit_of("withings_afib_class"), None);
    assert_eq!(unit_of("withings_electrochemical_skin_conductance"), None);
    // Every family the exporter has: a declared unit is always a `_`-separated suffix.
    for def in MEASURES {
        if let Some(unit) = unit_of(def.metric) {
            assert!(def.metric.ends_with(&format!("_{unit}")), "{}", def.metric);
        }
    }
}

#[test]
fn the_history_is_read_in_yearly_windows_up_to_the_head() {
    let until = backfill::parse_since("2011-06-01").unwrap();
    let w = backfill::windows(Window { since: None, until });
    let y = |t: &str| backfill::parse_since(t).unwrap();
    assert_eq!(
        w,
        [
            (0, y("2009-01-01") - 1),
            (y("2009-01-01"), y("2010-01-01") - 1),
            (y("2010-01-01"), y("2011-01-01") - 1),
            (y("2011-01-01"), until),
        ]
    );
    let w = backfill::windows(Window {
        since: Some(y("2010-03-04")),
        until,
    });
    assert_eq!(
        w,
        [
            (y("2010-03-04"), y("2011-01-01") - 1),
            (y("2011-01-01"), until)
        ]
    );
    assert!(
        backfill::windows(Window {
            since: Some(until + 1),
            until
        })
        .is_empty()
    );
    assert!(backfill::parse_since("2020-13-01").is_err());
}

/// Activity and sleep rows are selected by their own (local) date: the windows' days follow
/// each other, so every day is read once; only the outer ones reach a day further, for a
/// local day a day off UTC's.
#[test]
fn activity_and_sleep_windows_cover_every_day_once() {
    let since = backfill::parse_since("2023-06-15").unwrap();
    // 2025-03-01T10:00:00Z
    let until = 1_740_823_200;
    let spans = backfill::windows(Window {
        since: Some(since),
        until,
    });
    let days: Vec<(String, String)> = spans
        .iter()
        .map(|&span| {
            let edges = (Some(&span) == spans.first(), Some(&span) == spans.last());
            backfill::days_of(span, edges).unwrap()
        })
        .collect();
    let want = [
        ("2023-06-14", "2023-12-31"),
        ("2024-01-01", "2024-12-31"),
        ("2025-01-01", "2025-03-02"),
    ];
    assert_eq!(
        days,
        want.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
    );
}

// ------------------------------------------------------------------ the simulated history

/// Two accounts with four years of history each, up to an hour ago.
pub(crate) struct Household {
    pub(crate) simulator: Simulator,
    dir: tempfile::TempDir,
    /// Each account's groups as the simulator serves them.
    groups: BTreeMap<&'static str, Vec<Value>>,
    pub(crate) now: i64,
}

const ACCOUNTS: [(&str, &str, i64); 2] = [("mom", "1001", 10_000_000), ("dad", "1002", 20_000_000)];

pub(crate) async fn household(groups_each: usize, page_size: usize) -> Household {
    let simulator = Simulator::start(SimulatorOptions {
        page_size,
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let now = unix_now();
    let mut all = BTreeMap::new();
    for (seed, (name, userid, base)) in ACCOUNTS.into_iter().enumerate() {
        let groups = history::generate(HistorySpec {
            groups: groups_each,
            from: now - 4 * YEAR,
            to: now - 3_600,
            grpid_base: base,
            seed: seed as u64,
        });
        simulator.set_user_groups(userid, groups.clone()).unwrap();
        common::accounts::write_account(&simulator, dir.path(), name, userid);
        all.insert(name, groups);
    }
    Household {
        simulator,
        dir,
        groups: all,
        now,
    }
}

impl Household {
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let (id, secret) = self.simulator.client_credentials();
        [
            ("WITHINGS_API_URL", self.simulator.url().to_string()),
            ("WITHINGS_ACCOUNT_URL", self.simulator.url().to_string()),
            ("WITHINGS_TOKEN_DIR", self.dir.path().display().to_string()),
            ("WITHINGS_CLIENT_ID", id),
            ("WITHINGS_CLIENT_SECRET", secret),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Runs `withings-exporter backfill ARGS` and returns its exit success and stderr.
    async fn backfill(&self, args: &[&str]) -> (bool, String) {
        self.backfill_with(&[], args).await
    }

    /// Backfills every account into `all.om` in a fresh dir, which must succeed; returns the
    /// dir (keep it alive) and the file.
    async fn backfill_all_to_a_file(&self) -> (tempfile::TempDir, PathBuf) {
        let out = tempfile::tempdir().unwrap();
        let file = out.path().join("all.om");
        let (ok, stderr) = self
            .backfill(&["--all", "--output", file.to_str().unwrap()])
            .await;
        assert!(ok, "{stderr}");
        (out, file)
    }

    /// [`Household::backfill`] with more environment variables.
    pub(crate) async fn backfill_with(
        &self,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> (bool, String) {
        let mut command = Command::new(BIN);
        command.arg("backfill");
        if !args.contains(&"--instance") {
            command.args(["--instance", INSTANCE]);
        }
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env())
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        // The simulator runs on this test's runtime: the child is waited for off it.
        let out = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("backfill waited for")
            .expect("backfill runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// One reading as the simulator holds it: family, labels that matter here, date, value.
#[derive(Debug, Clone)]
struct Expected {
    family: &'static str,
    selector: String,
    date: i64,
    value: f64,
}

/// What the live exporter would keep of one group's measure: computed from the JSON with
/// the table's scaling, for the spot checks.
fn expected(account: &str, group: &Value, measure: &Value) -> Option<Expected> {
    let kind = measure["type"].as_i64()?;
    let def = &MEASURES[index_of(kind)?];
    let value = scale(
        measure["value"].as_i64()?,
        measure["unit"].as_i64()? as i32 + def.exponent_shift,
    )?;
    let mut labels: Vec<String> = def
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    if let Some(p) = measure["position"].as_i64() {
        let name = withings_exporter::collector::measures::table::position_name(p)?;
        labels.push(format!("position=\"{name}\""));
    }
    labels.push(format!("device_model=\"{}\"", group["model"].as_str()?));
    labels.push(format!("account=\"{account}\""));
    labels.push("job=\"withings\"".to_owned());
    labels.push("instance=\"withings-exporter:19100\"".to_owned());
    Some(Expected {
        family: def.metric,
        selector: format!("{}{{{}}}", def.metric, labels.join(",")),
        date: group["date"].as_i64()?,
        value,
    })
}

fn counts(group: &Value) -> bool {
    group["category"] == 1 && group["is_inconclusive"] == false
}

/// The samples of the file for one series selector's family and labels at `date`.
fn file_samples(text: &str, e: &Expected) -> Vec<f64> {
    let labels: Vec<&str> = e.selector[e.family.len() + 1..e.selector.len() - 1]
        .split(',')
        .collect();
    text.lines()
        .filter(|l| l.starts_with(&format!("{}{{", e.family)))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter(|l| l.ends_with(&format!(" {}", e.date)))
        .filter_map(|l| l.rsplit(' ').nth(1)?.parse().ok())
        .collect()
}

fn spot_checks(h: &Household) -> Vec<(String, Expected)> {
    let mut checks = Vec::new();
    for (account, groups) in &h.groups {
        let valid: Vec<&Value> = groups.iter().filter(|g| counts(g)).collect();
        let first = valid.first().unwrap();
        checks.push((
            format!("{account}: first"),
            expected(account, first, &first["measures"][0]).unwrap(),
        ));
        let last = valid.last().unwrap();
        checks.push((
            format!("{account}: last"),
            expected(account, last, &last["measures"][0]).unwrap(),
        ));
        // A corrected group: served twice under one grpid; the later `modified` is the reading.
        let corrected = groups
            .iter()
            .enumerate()
            .find(|(i, g)| *i > 0 && groups[i - 1]["grpid"] == g["grpid"] && counts(g))
            .map(|(_, g)| g)
            .unwrap();
        checks.push((
            format!("{account}: corrected"),
            expected(account, corrected, &corrected["measures"][0]).unwrap(),
        ));
        // One of every type the history holds.
        let mut seen = std::collections::BTreeSet::new();
        for g in &valid {
            for m in g["measures"].as_array().unwrap() {
                let kind = m["type"].as_i64().unwrap();
                let key = (kind, m["position"].as_i64());
                let Some(e) = expected(account, g, m) else {
                    continue;
                };
                let def = &MEASURES[index_of(kind).unwrap()];
                if withings_exporter::collector::measures::table::is_plausible(def, e.value)
                    && seen.insert(key)
                {
                    checks.push((format!("{account}: type {kind} {:?}", key.1), e));
                }
            }
        }
    }
    checks
}

#[tokio::test]
async fn two_accounts_are_backfilled_with_the_live_exporters_series() {
    let h = household(2_000, 150).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("all.om");
    let (ok, stderr) = h
        .backfill(&["--all", "--output", file.to_str().unwrap()])
        .await;
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.ends_with("# EOF\n"));
    // Nothing else left in the directory: the temporary file was renamed.
    let names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["all.om"]);
    // Health data: readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o077,
        0
    );
    // One line at the end: samples per family and the range covered.
    let summary = stderr.lines().last().unwrap();
    assert!(summary.starts_with("backfill: wrote "), "{stderr}");
    assert!(summary.contains("withings_weight_grams "), "{summary}");
    assert!(summary.contains(" from "), "{summary}");

    // Every family in one block, each series in increasing time, nothing in the last 3 hours.
    let mut families_seen = Vec::new();
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap().to_owned();
            assert!(!families_seen.contains(&name), "{name} split");
            families_seen.push(name);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, rest) = line.rsplit_once('}').unwrap();
        let ts: i64 = rest.trim().rsplit(' ').next().unwrap().parse().unwrap();
        assert!(series.starts_with(families_seen.last().unwrap()), "{line}");
        assert!(ts <= h.now - HEAD_SECONDS, "{line}");
        if let Some(prev) = last.insert(series.to_owned(), ts) {
            assert!(prev < ts, "not increasing: {line}");
        }
    }
    assert!(families_seen.contains(&"withings_measurement_timestamp_seconds".to_owned()));

    for (what, e) in spot_checks(&h) {
        assert_eq!(file_samples(&text, &e), [e.value], "{what}: {e:?}");
    }
    for (account, groups) in &h.groups {
        // Left out: inconclusive, objectives, the stale version of a correction, the
        // implausible heart rate, the last 3 hours.
        for g in groups.iter().filter(|g| !counts(g)) {
            let m = &g["measures"][0];
            let e = expected(account, g, m).unwrap();
            assert!(file_samples(&text, &e).is_empty(), "{account}: {g}");
        }
        let stale = groups
            .windows(2)
            .find(|w| w[0]["grpid"] == w[1]["grpid"] && w[0]["measures"] != w[1]["measures"])
            .map(|w| &w[0])
            .unwrap();
        let e = expected(account, stale, &stale["measures"][0]).unwrap();
        let corrected = latest_version(groups, stale);
        let want = expected(account, corrected, &corrected["measures"][0]).unwrap();
        assert_eq!(
            file_samples(&text, &e),
            [want.value],
            "{account}: stale copy kept"
        );
        let implausible = groups
            .iter()
            .find(|g| {
                g["measures"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["type"] == 11 && m["value"] == 999)
            })
            .unwrap();
        let e = expected(account, implausible, &implausible["measures"][2]).unwrap();
        assert!(
            file_samples(&text, &e).is_empty(),
            "{account}: implausible kept"
        );
        // Two groups in one second on one device: the greater grpid.
        let twins = groups
            .windows(2)
            .find(|w| {
                w[0]["date"] == w[1]["date"]
                    && w[0]["grpid"] != w[1]["grpid"]
                    && counts(&w[0])
                    && counts(&w[1])
            })
            .unwrap();
        let older = expected(account, &twins[0], &twins[0]["measures"][0]).unwrap();
        let newer = expected(account, &twins[1], &twins[1]["measures"][0]).unwrap();
        assert_eq!(
            file_samples(&text, &older),
            [newer.value],
            "{account}: twins"
        );
    }
    // Bounded by the budget: no minute held more than the default 100 requests.
    assert!(h.simulator.max_requests_in_any_minute() <= 100);
    // Measures only by default, as the live exporter: no activity or sleep asked for.
    assert_eq!(h.simulator.request_count("/v2/measure"), 0);
    assert_eq!(h.simulator.request_count("/v2/sleep"), 0);
    // The token files are those of their own accounts still.
    for (name, userid, _) in ACCOUNTS {
        let stored = TokenStore::new(h.dir.path().join(format!("{name}.json")))
            .load()
            .unwrap();
        assert_eq!(stored.and_then(|s| s.userid).as_deref(), Some(userid));
    }
}

// ------------------------------------------------------------------ activity and sleep

/// Every history collector on, and devices, which have no history to backfill.
pub(crate) const COLLECTORS: (&str, &str) =
    ("WITHINGS_COLLECTORS", "measures,activity,sleep,devices");

/// The `--instance` of [`Household::backfill`]: the shipped compose stack's exporter.
pub(crate) const INSTANCE: &str = "withings-exporter:19100";

/// An activity row of the simulator: what getactivity serves.
fn activity_row(
    date: &str,
    timezone: &str,
    source: Option<&str>,
    model: &str,
    data: Value,
) -> Value {
    let mut row = serde_json::json!({
        "date": date,
        "timezone": timezone,
        "hash_deviceid": source,
        "model": model,
        "modified": 1_717_300_000,
        "brand": 1,
    });
    for (k, v) in data.as_object().unwrap() {
        row[k] = v.clone();
    }
    row
}

fn night_row(
    date: &str,
    source: &str,
    model_id: i64,
    (start, end): (i64, i64),
    data: Value,
) -> Value {
    serde_json::json!({
        "date": date,
        "timezone": "UTC",
        "startdate": start,
        "enddate": end,
        "modified": end + 600,
        "hash_deviceid": source,
        "model": 32,
        "model_id": model_id,
        "data": data,
    })
}

/// Two sources of activity (a watch and a phone, the phone without heart rate), a day in
/// New York that began with the change to summer time (23 hours, ending at 04:00 UTC the
/// next day), a day in Tokyo (ending at 15:00 UTC), today (not over: left out); two sleep
/// devices on one night, and a night without the snoring the other had.
pub(crate) fn days_and_nights(now: i64) -> withings_sim::data::UserExtras {
    use serde_json::json;
    let today = jiff::Timestamp::from_second(now)
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string();
    withings_sim::data::UserExtras {
        activities: vec![
            activity_row(
                "2024-03-10",
                "America/New_York",
                Some("w1"),
                "ScanWatch 2",
                json!({
                    "steps": 8000, "distance": 6123.5, "elevation": 5,
                    "soft": 3600, "moderate": 1200, "intense": 300,
                    "calories": 350.25, "totalcalories": 2100.5,
                    "hr_average": 72, "hr_min": 50, "hr_max": 150,
                    "hr_zone_0": 30000, "hr_zone_1": 2000, "hr_zone_2": 600, "hr_zone_3": 60,
                }),
            ),
            activity_row(
                "2024-03-10",
                "America/New_York",
                None,
                "GoogleFit tracker",
                json!({
                    "steps": 7000, "distance": 5000, "hr_average": 0, "hr_min": 0,
                }),
            ),
            activity_row(
                "2024-06-01",
                "Asia/Tokyo",
                Some("w1"),
                "ScanWatch 2",
                json!({
                    "steps": 12000, "hr_average": 0, "hr_zone_0": 0,
                }),
            ),
            activity_row(
                &today,
                "UTC",
                Some("w1"),
                "ScanWatch 2",
                json!({"steps": 4321}),
            ),
        ],
        sleep: vec![
            // 2024-03-09T22:30Z to 2024-03-10T06:15Z.
            night_row(
                "2024-03-10",
                "s1",
                63,
                (1_710_023_400, 1_710_051_300),
                json!({
                    "total_timeinbed": 27900, "total_sleep_time": 25200,
                    "lightsleepduration": 12600, "deepsleepduration": 7200, "remsleepduration": 5400,
                    "wakeupcount": 2, "hr_average": 58, "rr_average": 14,
                    "snoring": 600, "apnea_hypopnea_index": 3.5,
                    "night_events": {"1": [1_710_030_000]},
                }),
            ),
            // The watch on the same night: no snoring, breathing or apnea sensor.
            night_row(
                "2024-03-10",
                "w1",
                94,
                (1_710_024_000, 1_710_050_400),
                json!({
                    "total_timeinbed": 26400, "total_sleep_time": 24000, "hr_average": 60,
                }),
            ),
            // 2024-05-31T14:00Z to 21:30Z; the analyzer heard no snoring value this time.
            night_row(
                "2024-06-01",
                "s1",
                63,
                (1_717_164_000, 1_717_191_000),
                json!({
                    "total_timeinbed": 27000, "total_sleep_time": 24600, "hr_average": 55,
                }),
            ),
        ],
        devices: vec![json!({"type": "Scale", "battery": "high", "model": "Body+",
            "model_id": 5, "deviceid": "d1", "hash_deviceid": "d1", "timezone": "UTC",
            "last_session_date": 1_717_000_000})],
        ..Default::default()
    }
}

/// A sample the file and Prometheus must hold: the exact series (labels in the file's
/// order), the second and the value, worked out by hand from [`days_and_nights`].
fn collected(account: &str, instance: &str) -> Vec<(String, i64, f64)> {
    let tail = format!("account=\"{account}\",job=\"withings\",instance=\"{instance}\"");
    let watch = format!("device_id=\"w1\",device_model=\"ScanWatch 2\",{tail}");
    let phone = format!("device_id=\"\",device_model=\"GoogleFit tracker\",{tail}");
    let analyzer = format!("device_id=\"s1\",device_model=\"Aura Sensor V2\",{tail}");
    let watch_zone =
        |label: &str| format!("device_id=\"w1\",device_model=\"ScanWatch 2\",{label},{tail}");
    // 2024-03-10 in New York: from 05:00 UTC (EST, UTC-5) to 2024-03-11 00:00 EDT (UTC-4),
    // 04:00 UTC; its last second is 2024-03-11T03:59:59Z.
    let ny_end = 1_710_129_599;
    let ny_start = 1_710_046_800;
    // 2024-06-01 in Tokyo (UTC+9) ends at 2024-06-01T15:00Z; last second 14:59:59Z.
    let tokyo_end = 1_717_253_999;
    let mut out = vec![
        (
            format!("withings_activity_steps{{{watch}}}"),
            ny_end,
            8000.0,
        ),
        (
            format!("withings_activity_steps{{{phone}}}"),
            ny_end,
            7000.0,
        ),
        (
            format!("withings_activity_steps{{{watch}}}"),
            tokyo_end,
            12000.0,
        ),
        (
            format!("withings_activity_distance_meters{{{watch}}}"),
            ny_end,
            6123.5,
        ),
        (format!("withings_activity_floors{{{watch}}}"), ny_end, 5.0),
        // 350.25 kcal × 4184 J/kcal, 2100.5 kcal × 4184.
        (
            format!("withings_activity_active_energy_joules{{{watch}}}"),
            ny_end,
            1_465_446.0,
        ),
        (
            format!("withings_activity_total_energy_joules{{{watch}}}"),
            ny_end,
            8_788_492.0,
        ),
        (
            format!("withings_activity_heart_rate_average_bpm{{{watch}}}"),
            ny_end,
            72.0,
        ),
        (
            format!("withings_activity_heart_rate_min_bpm{{{watch}}}"),
            ny_end,
            50.0,
        ),
        (
            format!("withings_activity_heart_rate_max_bpm{{{watch}}}"),
            ny_end,
            150.0,
        ),
        (
            format!(
                "withings_activity_intensity_seconds{{{}}}",
                watch_zone("intensity=\"soft\"")
            ),
            ny_end,
            3600.0,
        ),
        (
            format!(
                "withings_activity_intensity_seconds{{{}}}",
                watch_zone("intensity=\"intense\"")
            ),
            ny_end,
            300.0,
        ),
        (
            format!(
                "withings_activity_heart_rate_zone_seconds{{{}}}",
                watch_zone("zone=\"3\"")
            ),
            ny_end,
            60.0,
        ),
        (
            format!("withings_activity_day_timestamp_seconds{{{watch}}}"),
            ny_end,
            ny_start as f64,
        ),
        // Tokyo's midnight: 2024-05-31T15:00Z.
        (
            format!("withings_activity_day_timestamp_seconds{{{watch}}}"),
            tokyo_end,
            1_717_167_600.0,
        ),
    ];
    let night = 1_710_051_300;
    let watch_night = 1_710_050_400;
    let june = 1_717_191_000;
    out.extend([
        (format!("withings_sleep_in_bed_seconds{{{analyzer}}}"), night, 27900.0),
        (format!("withings_sleep_asleep_seconds{{{analyzer}}}"), night, 25200.0),
        (format!("withings_sleep_stage_seconds{{device_id=\"s1\",device_model=\"Aura Sensor V2\",stage=\"deep\",{tail}}}"), night, 7200.0),
        (format!("withings_sleep_wakeups{{{analyzer}}}"), night, 2.0),
        (format!("withings_sleep_breathing_rate_average_per_minute{{{analyzer}}}"), night, 14.0),
        (format!("withings_sleep_snoring_seconds{{{analyzer}}}"), night, 600.0),
        (format!("withings_sleep_apnea_hypopnea_index{{{analyzer}}}"), night, 3.5),
        (format!("withings_sleep_start_timestamp_seconds{{{analyzer}}}"), night, 1_710_023_400.0),
        (format!("withings_sleep_end_timestamp_seconds{{{analyzer}}}"), night, night as f64),
        (format!("withings_sleep_heart_rate_average_bpm{{{watch}}}"), watch_night, 60.0),
        (format!("withings_sleep_in_bed_seconds{{{watch}}}"), watch_night, 26400.0),
        (format!("withings_sleep_asleep_seconds{{{analyzer}}}"), june, 24600.0),
        (format!("withings_sleep_end_timestamp_seconds{{{analyzer}}}"), june, june as f64),
    ]);
    out
}

/// Series that must have no sample at that second: what the device does not measure.
fn not_collected(account: &str, instance: &str) -> Vec<(String, i64)> {
    let tail = format!("account=\"{account}\",job=\"withings\",instance=\"{instance}\"");
    let watch = format!("device_id=\"w1\",device_model=\"ScanWatch 2\",{tail}");
    let phone = format!("device_id=\"\",device_model=\"GoogleFit tracker\",{tail}");
    let analyzer = format!("device_id=\"s1\",device_model=\"Aura Sensor V2\",{tail}");
    vec![
        // Withings' 0 bpm means "no heart rate": no average, no zones.
        (
            format!("withings_activity_heart_rate_average_bpm{{{phone}}}"),
            1_710_129_599,
        ),
        (
            format!("withings_activity_heart_rate_min_bpm{{{phone}}}"),
            1_710_129_599,
        ),
        (
            format!("withings_activity_heart_rate_average_bpm{{{watch}}}"),
            1_717_253_999,
        ),
        (
            format!(
                "withings_activity_heart_rate_zone_seconds{{device_id=\"w1\",device_model=\"ScanWatch 2\",zone=\"0\",{tail}}}"
            ),
            1_717_253_999,
        ),
        (
            format!("withings_activity_floors{{{watch}}}"),
            1_717_253_999,
        ),
        (
            format!("withings_sleep_snoring_seconds{{{analyzer}}}"),
            1_717_191_000,
        ),
        (
            format!("withings_sleep_snoring_seconds{{{watch}}}"),
            1_710_050_400,
        ),
        (
            format!("withings_sleep_apnea_hypopnea_index{{{watch}}}"),
            1_710_050_400,
        ),
    ]
}

/// The values of the file's samples of exactly `series` at `at`.
fn series_samples(text: &str, series: &str, at: i64) -> Vec<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .filter_map(|rest| {
            let (value, ts) = rest.split_once(' ')?;
            (ts == at.to_string()).then(|| value.parse().ok())?
        })
        .collect()
}

/// A backfill that worked: the household, the output's directory, the file, its text and
/// what the command said.
struct Backfilled {
    h: Household,
    out: tempfile::TempDir,
    file: std::path::PathBuf,
    text: String,
    stderr: String,
}

/// Mom's measure history (`groups`, served `page_size` a page) with [`days_and_nights`],
/// backfilled with every collector on.
/// The last version Withings holds of `stale`'s group (the history lists corrections after
/// the groups they correct).
fn latest_version<'a>(groups: &'a [Value], stale: &Value) -> &'a Value {
    groups
        .iter()
        .rev()
        .find(|g| g["grpid"] == stale["grpid"])
        .unwrap()
}

async fn mom_with_days_and_nights(groups: usize, page_size: usize) -> Backfilled {
    let h = household(groups, page_size).await;
    h.simulator
        .set_user_extras("1001", days_and_nights(h.now))
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    let (ok, stderr) = h
        .backfill_with(
            &[COLLECTORS],
            &["--account", "mom", "--output", file.to_str().unwrap()],
        )
        .await;
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    Backfilled {
        h,
        out,
        file,
        text,
        stderr,
    }
}

#[tokio::test]
async fn activity_and_sleep_are_backfilled_at_the_end_of_each_day_and_night() {
    // Two rows a page: the days and the nights of 2024 take two pages each.
    let Backfilled {
        h, text, stderr, ..
    } = mom_with_days_and_nights(40, 2).await;
    for (series, at, value) in collected("mom", INSTANCE) {
        assert_eq!(
            series_samples(&text, &series, at),
            [value],
            "{series} @{at}\n{text}"
        );
    }
    for (series, at) in not_collected("mom", INSTANCE) {
        assert!(
            series_samples(&text, &series, at).is_empty(),
            "{series} @{at}"
        );
    }
    // Today is not over (and within the head block): the live exporter shows it.
    assert!(!text.contains(" 4321 "), "{text}");
    // Each family once, with the live family's HELP; devices are not history.
    for family in ["withings_activity_steps", "withings_sleep_stage_seconds"] {
        assert_eq!(text.matches(&format!("# TYPE {family} gauge\n")).count(), 1);
    }
    assert!(text.contains("# HELP withings_sleep_stage_seconds Time in each sleep stage during the latest night, in seconds.\n"));
    assert!(text.contains("# UNIT withings_activity_distance_meters meters\n"));
    assert!(!text.contains("withings_device"), "{text}");
    assert_eq!(h.simulator.request_count("/v2/user"), 0);
    // The 2024 window of each took two pages of two rows, the second asked with offset 2.
    let summary = stderr.lines().last().unwrap();
    assert!(summary.contains(", 4 days, 3 nights read)"), "{summary}");
    assert!(summary.contains("withings_activity_steps 3"), "{summary}");
    let asked: Vec<_> = h
        .simulator
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v2/sleep")
        .collect();
    assert!(
        asked
            .iter()
            .any(
                |r| r.params.get("startdateymd").map(String::as_str) == Some("2024-01-01")
                    && r.params.get("enddateymd").map(String::as_str) == Some("2024-12-31")
                    && r.params.get("offset").map(String::as_str) == Some("2")
            ),
        "{asked:?}"
    );
    // The measures are still there, in the same file.
    assert!(text.contains("# TYPE withings_weight_grams gauge\n"));
}

/// The histories read are the collectors the live exporter runs: with `measures` off,
/// not one `getmeas`.
#[tokio::test]
async fn only_the_enabled_collectors_histories_are_read() {
    let h = household(40, 50).await;
    h.simulator
        .set_user_extras("1001", days_and_nights(h.now))
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    let (ok, stderr) = h
        .backfill_with(
            &[("WITHINGS_COLLECTORS", "sleep")],
            &["--account", "mom", "--output", file.to_str().unwrap()],
        )
        .await;
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(h.simulator.request_count("/measure"), 0);
    assert_eq!(h.simulator.request_count("/v2/measure"), 0);
    assert!(h.simulator.request_count("/v2/sleep") > 0);
    assert!(text.contains("# TYPE withings_sleep_in_bed_seconds gauge\n"));
    assert!(!text.contains("withings_weight_grams") && !text.contains("withings_activity_"));
}

/// Without the `instance` Prometheus gives the exporter's series, the backfilled years are
/// other series than the live ones: said in one line, and the file is still written.
#[tokio::test]
async fn a_backfill_without_an_instance_warns_that_it_will_not_join_the_live_series() {
    let h = household(40, 50).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    let (ok, stderr) = h
        .backfill(&[
            "--account",
            "mom",
            "--instance",
            "",
            "--output",
            file.to_str().unwrap(),
        ])
        .await;
    assert!(ok, "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("--instance"), "{stderr}");
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains("instance=")
    );
    let (ok, stderr) = h
        .backfill(&["--account", "mom", "--output", file.to_str().unwrap()])
        .await;
    assert!(ok && !stderr.contains("warning"), "{stderr}");
}

#[tokio::test]
async fn one_account_since_a_date_and_clear_errors() {
    let h = household(600, 500).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    let since = h.now - YEAR;
    let day = jiff::Timestamp::from_second(since)
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string();
    let (ok, stderr) = h
        .backfill(&[
            "--account",
            "mom",
            "--output",
            file.to_str().unwrap(),
            "--since",
            &day,
        ])
        .await;
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("account=\"dad\""));
    let since_midnight = backfill::parse_since(&day).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let ts: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(ts >= since_midnight, "{line}");
        assert!(line.contains("account=\"mom\""), "{line}");
    }
    // Errors: one line each, and no output file.
    for (args, needle) in [
        (vec!["--account", "nobody"], "no nobody.json"),
        (vec!["--account", "Mom!"], "account name"),
        (vec!["--account", "mom", "--all"], "not both"),
        (vec![], "--account NAME"),
        (
            vec!["--account", "mom", "--since", "yesterday"],
            "YYYY-MM-DD",
        ),
    ] {
        let bad = out.path().join("bad.om");
        let mut all = args.clone();
        all.extend(["--output", bad.to_str().unwrap()]);
        let (ok, stderr) = h.backfill(&all).await;
        assert!(!ok && stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!bad.exists());
    }
}

#[tokio::test]
async fn a_failure_midway_leaves_no_file_and_says_how_to_rerun() {
    let h = household(600, 50).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    std::fs::write(&file, "an older complete backfill\n").unwrap();
    // The connection is reset in the middle of the fourth page: a network failure.
    for _ in 0..3 {
        h.simulator.push_fault(Fault::Delay(Duration::ZERO));
    }
    h.simulator.push_fault(Fault::ResetMidBody(
        r#"{"status":0,"body":{"measuregrps":[]}}"#.into(),
    ));
    let (ok, stderr) = h
        .backfill(&["--account", "mom", "--output", file.to_str().unwrap()])
        .await;
    assert_eq!(h.simulator.request_count("/measure"), 4);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("rerun the same command"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // The older file is untouched and no temporary file is left beside it.
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "an older complete backfill\n"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn ctrl_c_leaves_no_file_and_says_how_to_rerun() {
    let h = household(300, 500).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    // Measure requests wait while held: the backfill is caught in the middle of its paging.
    h.simulator.hold();
    let mut command = Command::new(BIN);
    command
        .args(["backfill", "--account", "mom", "--output"])
        .arg(&file)
        .env_clear()
        .envs(h.env())
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = ChildGuard(command.spawn().unwrap());
    let log = common::process::capture_stderr(&mut child.0);
    let deadline = Instant::now() + DEADLINE;
    while h.simulator.request_count("/measure") == 0 {
        assert!(Instant::now() < deadline, "no request");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) };
    let status = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    h.simulator.release();
    assert!(!status.success());
    let stderr = common::process::wait_for_log(&log, "rerun the same command", 1).await;
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "{stderr}"
    );
}

#[tokio::test]
async fn a_spent_budget_is_waited_for_not_fatal() {
    let h = household(1_500, 40).await;
    let (id, secret) = h.simulator.client_credentials();
    let clock = Clock::default();
    let limits = Arc::new(Limits::new(3, clock.clone()));
    let client = WithingsClient::with_limits(
        &h.simulator.url(),
        ClientOptions::default(),
        Arc::clone(&limits),
    )
    .unwrap();
    let credentials = ClientCredentials {
        client_id: id,
        client_secret: Secret::new(secret),
    };
    let targets = vec![Target {
        name: "mom".into(),
        label: Some("mom".into()),
        tokens: TokenSource::for_account_file(
            &h.dir.path().join("mom.json"),
            &credentials,
            &client,
        ),
    }];
    let options = Options {
        settings: withings_exporter::collector::Settings {
            meastypes: withings_exporter::collector::measures::table::DEFAULT_MEASTYPES
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(","),
            include_ambiguous: true,
        },
        since: None,
        now: h.now,
        progress: false,
        collectors: withings_exporter::collector::Collectors::default(),
        target_labels: Vec::new(),
    };
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    let registry = prometheus::Registry::new();
    limits.register(&registry).unwrap();
    // The budget of 3 a minute is spent at once; a minute passes (on the limits' clock)
    // only while the backfill is waiting, so it can finish only by waiting.
    let run = backfill::run(&client, &targets, &options, &file);
    let held_back = || {
        registry
            .gather()
            .iter()
            .find(|f| f.name() == "withings_api_requests_held_back_total")
            .and_then(|f| {
                f.get_metric()
                    .iter()
                    .find(|m| m.get_label().iter().any(|l| l.value() == "budget"))
                    .map(|m| m.get_counter().get_value())
            })
            .unwrap_or(0.0)
    };
    let summary = tokio::time::timeout(DEADLINE, async {
        tokio::pin!(run);
        let mut seen = 0.0;
        loop {
            tokio::select! {
                result = &mut run => return result,
                () = tokio::time::sleep(Duration::from_millis(20)) => {
                    let now = held_back();
                    if now > seen {
                        seen = now;
                        clock.advance(Duration::from_secs(61));
                    }
                }
            }
        }
    })
    .await
    .expect("finishes")
    .expect("succeeds");
    assert!(summary.counts.pages > 3, "{summary:?}");
    assert!(held_back() > 0.0);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("withings_weight_grams{")
    );
}

// ------------------------------------------------------------------ the real programs

pub(crate) fn promtool_blocks(file: &Path, blocks: &Path) {
    // promtool cuts 2-hour blocks unless told otherwise, reading the whole file again for
    // each: years of history want larger blocks (it rounds down to 182 days), as the README says.
    let out = Command::new("promtool")
        .args([
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--max-block-duration=8760h",
        ])
        .arg(file)
        .arg(blocks)
        .output()
        .expect("promtool runs (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool refused the file:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Blocks of `file` moved into a new Prometheus data directory under `dir`, as the README
/// says: every block directory moved over.
pub(crate) fn data_dir_of(file: &Path, dir: &Path) -> std::path::PathBuf {
    let blocks = dir.join("blocks");
    promtool_blocks(file, &blocks);
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    for block in std::fs::read_dir(&blocks).unwrap() {
        let block = block.unwrap();
        std::fs::rename(block.path(), data.join(block.file_name())).unwrap();
    }
    data
}

#[tokio::test]
#[ignore = "needs promtool (Debian package prometheus)"]
async fn promtool_makes_blocks_of_the_backfill() {
    let h = household(1_000, 200).await;
    let (out, file) = h.backfill_all_to_a_file().await;
    let blocks = out.path().join("blocks");
    promtool_blocks(&file, &blocks);
    assert!(std::fs::read_dir(&blocks).unwrap().count() > 0);
}

/// A Prometheus (killed and reaped when dropped) on a data directory of the test's, with
/// the queries these tests ask.
pub(crate) struct Prometheus(pub(crate) Daemon);

impl Prometheus {
    pub(crate) async fn start(data: &Path, config: &Path) -> Self {
        let dir = data.parent().unwrap();
        Self(
            start_daemon("prometheus", "prometheus", dir, |port| {
                vec![
                    format!("--config.file={}", config.display()),
                    format!("--storage.tsdb.path={}", data.display()),
                    "--storage.tsdb.retention.time=20y".to_owned(),
                    format!("--web.listen-address=127.0.0.1:{port}"),
                ]
            })
            .await,
        )
    }

    /// The `result` of one API call (`/api/v1/query`, `/api/v1/query_range`), which must
    /// succeed.
    pub(crate) async fn result(&self, path: &str, params: &[(&str, String)]) -> Vec<Value> {
        let mut url = url::Url::parse(&self.0.url(path)).unwrap();
        for (name, value) in params {
            url.query_pairs_mut().append_pair(name, value);
        }
        let body = common::body_of(common::http().get(url)).await;
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body["status"],
            "success",
            "{params:?}: {body}\n{}",
            self.log_text()
        );
        body["data"]["result"].as_array().unwrap().clone()
    }

    /// The samples of `selector` in the second ending at `at`: exact timestamps and values.
    pub(crate) async fn samples_at(&self, selector: &str, at: i64) -> Vec<(f64, f64)> {
        self.series_over(selector, "1s", at)
            .await
            .iter()
            .flat_map(|series| series["values"].as_array().unwrap().clone())
            .map(|v| {
                (
                    v[0].as_f64().unwrap(),
                    v[1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// Every series `selector` selects over `range` before `at`, with its samples.
    pub(crate) async fn series_over(&self, selector: &str, range: &str, at: i64) -> Vec<Value> {
        let query = format!("{selector}[{range}]");
        self.result(
            "/api/v1/query",
            &[("query", query), ("time", at.to_string())],
        )
        .await
    }

    async fn range(&self, query: &str, start: i64, end: i64, step: i64) -> Vec<Value> {
        let params = [
            ("query", query.to_owned()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ];
        self.result("/api/v1/query_range", &params).await
    }

    pub(crate) fn log_text(&self) -> String {
        self.0.log_tail()
    }
}

#[tokio::test]
#[ignore = "needs promtool and prometheus (Debian package prometheus)"]
async fn prometheus_answers_with_the_simulators_readings_from_the_blocks() {
    let h = household(2_000, 200).await;
    let (out, file) = h.backfill_all_to_a_file().await;
    let data = data_dir_of(&file, out.path());
    let config = out.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
    let prometheus = Prometheus::start(&data, &config).await;

    let checks = spot_checks(&h);
    assert!(checks.len() > 20, "{}", checks.len());
    for (what, e) in &checks {
        let got = prometheus.samples_at(&e.selector, e.date).await;
        assert_eq!(got, [(e.date as f64, e.value)], "{what}: {e:?}");
    }
    // The stale version of a correction is nowhere: the corrected value only.
    for (account, groups) in &h.groups {
        let stale = groups
            .windows(2)
            .find(|w| w[0]["grpid"] == w[1]["grpid"] && counts(&w[1]))
            .map(|w| &w[0])
            .unwrap();
        let e = expected(account, stale, &stale["measures"][0]).unwrap();
        let corrected = latest_version(groups, stale);
        let want = expected(account, corrected, &corrected["measures"][0]).unwrap();
        assert_ne!(e.value, want.value);
        assert_eq!(
            prometheus.samples_at(&e.selector, e.date).await,
            [(e.date as f64, want.value)]
        );
    }
    // Range queries over the backfilled years, as a dashboard asks (readings are hours
    // apart, beyond the 5-minute lookback): both accounts, every device, points all along.
    let series = prometheus
        .range(
            "last_over_time(withings_weight_grams[2d])",
            h.now - 4 * YEAR,
            h.now - HEAD_SECONDS,
            86_400,
        )
        .await;
    let accounts: std::collections::BTreeSet<_> = series
        .iter()
        .map(|s| s["metric"]["account"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(accounts.into_iter().collect::<Vec<_>>(), ["dad", "mom"]);
    for s in &series {
        assert!(s["values"].as_array().unwrap().len() >= 30, "{s}");
    }
}

/// The live exporter, in this process, serving the household's token directory with every
/// collector on; stopped when dropped.
struct Live {
    address: String,
    _server: common::Served,
}

async fn live_exporter(h: &Household) -> Live {
    use withings_exporter::app::App;
    use withings_exporter::config::Config;
    let mut vars = h.env();
    vars.push(("WITHINGS_LISTEN_ADDRESS".into(), "127.0.0.1:0".into()));
    vars.push((COLLECTORS.0.into(), COLLECTORS.1.into()));
    let config = Config::from_vars(vars).unwrap();
    let app = Arc::new(App::from_config(&config).unwrap());
    let server = common::serve(common::bind(app).await);
    Live {
        address: server.address.to_string(),
        _server: server,
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs promtool and prometheus (Debian package prometheus)"]
async fn live_scraping_continues_the_backfilled_series() {
    let h = household(300, 100).await;
    h.simulator
        .set_user_extras("1001", days_and_nights(h.now))
        .unwrap();
    let live = live_exporter(&h).await;
    // The instance Prometheus will give the live series: the address /sd hands out.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    let (ok, stderr) = h
        .backfill_with(
            &[COLLECTORS],
            &[
                "--account",
                "mom",
                "--instance",
                &live.address,
                "--output",
                file.to_str().unwrap(),
            ],
        )
        .await;
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    let data = data_dir_of(&file, out.path());
    let config = out.path().join("prometheus.yml");
    std::fs::write(
        &config,
        common::prometheus::shipped_discovery_config(&live.address),
    )
    .unwrap();

    // New readings after the backfilled range: a weight on the device of the history's
    // last one, yesterday's steps on the watch, last night on the analyzer.
    let mom = &h.groups["mom"];
    let last_weight = mom
        .iter()
        .rev()
        .find(|g| {
            counts(g)
                && g["measures"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["type"] == 1)
        })
        .unwrap();
    let device = last_weight["hash_deviceid"].as_str().unwrap().to_owned();
    let now = unix_now();
    let mut weight = last_weight.clone();
    weight["grpid"] = serde_json::json!(99_000_001);
    weight["date"] = serde_json::json!(now - 60);
    weight["created"] = serde_json::json!(now - 60);
    weight["modified"] = serde_json::json!(now - 60);
    weight["measures"] = serde_json::json!([{"type": 1, "value": 71234, "unit": -3}]);
    h.simulator.upsert_user_group("1001", weight).unwrap();
    let mut extras = days_and_nights(h.now);
    let yesterday = jiff::Timestamp::from_second(now - 86_400)
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string();
    let mut day = activity_row(
        &yesterday,
        "UTC",
        Some("w1"),
        "ScanWatch 2",
        serde_json::json!({"steps": 9876}),
    );
    day["modified"] = serde_json::json!(now - 60);
    extras.activities.push(day);
    let mut night = night_row(
        &yesterday,
        "s1",
        63,
        (now - 10 * 3600, now - 2 * 3600),
        serde_json::json!({"total_timeinbed": 28_801}),
    );
    night["modified"] = serde_json::json!(now - 60);
    extras.sleep.push(night);
    h.simulator.set_user_extras("1001", extras).unwrap();

    let prometheus = Prometheus::start(&data, &config).await;
    // The backfilled activity and sleep, exactly, under the live instance label.
    for (series, at, value) in collected("mom", &live.address) {
        assert_eq!(
            prometheus.samples_at(&series, at).await,
            [(at as f64, value)],
            "{series}\n{}",
            prometheus.log_text()
        );
    }
    for (series, at) in not_collected("mom", &live.address) {
        assert!(
            prometheus.samples_at(&series, at).await.is_empty(),
            "{series}"
        );
    }

    let families = [
        (
            format!("withings_weight_grams{{account=\"mom\",device_id=\"{device}\"}}"),
            71_234.0,
        ),
        (
            "withings_activity_steps{account=\"mom\",device_id=\"w1\"}".to_owned(),
            9876.0,
        ),
        (
            "withings_sleep_in_bed_seconds{account=\"mom\",device_id=\"s1\"}".to_owned(),
            28_801.0,
        ),
    ];
    // Scraped: polled for, the scrape interval is a second.
    let deadline = Instant::now() + DEADLINE;
    for (selector, value) in &families {
        loop {
            let got = prometheus.samples_at(selector, unix_now()).await;
            // `[1s]` at now may fall between two scrapes: look back a little.
            let recent = prometheus.series_over(selector, "30s", unix_now()).await;
            let seen = got.iter().any(|(_, v)| v == value)
                || recent.iter().any(|s| {
                    s["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| v[1].as_str() == Some(&value.to_string()))
                });
            if seen {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{selector} never scraped\n{}",
                prometheus.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Over the whole span, one series per family: the backfilled samples, then the live.
    for (selector, value) in &families {
        let series = prometheus.series_over(selector, "6y", unix_now()).await;
        assert_eq!(series.len(), 1, "{selector}: {series:#?}");
        let labels = &series[0]["metric"];
        assert_eq!(labels["instance"], live.address.as_str(), "{labels}");
        assert_eq!(labels["job"], "withings", "{labels}");
        let values = series[0]["values"].as_array().unwrap();
        let in_file = text
            .lines()
            .filter(|l| {
                let name = selector.split('{').next().unwrap();
                l.starts_with(&format!("{name}{{"))
                    && selector
                        .trim_end_matches('}')
                        .split('{')
                        .nth(1)
                        .unwrap()
                        .split(',')
                        .all(|want| l.contains(want))
            })
            .count();
        assert!(in_file > 0, "{selector}");
        let backfilled = values
            .iter()
            .filter(|v| v[0].as_f64().unwrap() < h.now as f64)
            .count();
        assert_eq!(backfilled, in_file, "{selector}");
        let last = values.last().unwrap();
        assert_eq!(
            last[1].as_str(),
            Some(value.to_string().as_str()),
            "{selector}"
        );
        assert!(
            last[0].as_f64().unwrap() >= now as f64,
            "{selector}: {last}"
        );
    }
}

// ------------------------------------------------------------------ the shipped dashboard

/// The families a panel's expression reads, among those of `families`.
fn families_of<'a>(expr: &str, families: &'a [String]) -> Vec<&'a String> {
    families
        .iter()
        .filter(|f| {
            expr.match_indices(f.as_str()).any(|(i, _)| {
                let after = expr[i + f.len()..].chars().next();
                !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        })
        .collect()
}

/// Grafana's `roundInterval` as the dashboard test applies it, against the values Grafana
/// shows for these ranges.
#[test]
fn grafana_intervals_are_worked_out_as_grafana_does() {
    let panel = |min: Option<&str>| dashboard::Panel {
        title: String::new(),
        kind: "timeseries".into(),
        min_interval: min.map(str::to_owned),
        exprs: Vec::new(),
    };
    // 7 days in 1000 points: 604.8 s, rounded to 10m.
    assert_eq!(
        dashboard::grafana_interval(7 * 86_400, 1000, &panel(None)),
        600
    );
    // 1 hour: 3.6 s rounds to 5s, below the data source's 60s and the panel's 2m.
    assert_eq!(dashboard::grafana_interval(3600, 1000, &panel(None)), 60);
    assert_eq!(
        dashboard::grafana_interval(3600, 1000, &panel(Some("2m"))),
        120
    );
    // 4 years: 35 h rounds to 24h.
    assert_eq!(
        dashboard::grafana_interval(4 * YEAR, 1000, &panel(Some("2m"))),
        86_400
    );
    assert_eq!(
        dashboard::expand_for("rate(x[$__rate_interval]) + y[$__interval]", 600, 86_400),
        "rate(x[660s]) + y[600s]"
    );
}

/// Stat panels, the household table and the alerts mean "the latest fresh value": only the
/// history panels look back over their step, so a backfilled year shows in them and an
/// old reading never passes for today's. The Day row's panels show samples at their own
/// times, which only remote write brings, not scrapes: their own rules are
/// `alert_rules::dashboard_day_row_*`'s.
#[test]
fn only_time_series_panels_look_back_over_their_step() {
    let mut history = 0;
    for panel in dashboard::panels() {
        if dashboard::PROVEN_BY_REMOTE_WRITE.contains(&panel.title.as_str()) {
            continue;
        }
        for expr in &panel.exprs {
            let looks_back = expr.contains("last_over_time(");
            match panel.kind.as_str() {
                "timeseries" if looks_back => {
                    history += 1;
                    assert!(expr.contains("[$__interval]"), "{}: {expr}", panel.title);
                    let min = panel
                        .min_interval
                        .as_deref()
                        .and_then(dashboard::duration_seconds);
                    // At least one scrape of the shipped 60 s interval in every step.
                    assert!(
                        min.is_some_and(|m| m > 60),
                        "{}: min interval {min:?}",
                        panel.title
                    );
                }
                "timeseries" => {}
                _ => assert!(
                    !looks_back,
                    "{} ({}) must show the latest value: {expr}",
                    panel.title, panel.kind
                ),
            }
        }
    }
    assert!(history >= 12, "{history} history queries");
    let rules = common::read_repo_file("prometheus/rules/withings.rules.yml");
    assert!(!rules.contains("last_over_time"));
}

#[tokio::test]
#[ignore = "needs promtool and prometheus (Debian package prometheus)"]
async fn the_dashboards_history_panels_have_data_all_over_the_backfilled_range() {
    let Backfilled {
        h, out, file, text, ..
    } = mom_with_days_and_nights(2_000, 200).await;
    let families: Vec<String> = text
        .lines()
        .filter_map(|l| Some(l.strip_prefix("# TYPE ")?.split(' ').next()?.to_owned()))
        .collect();
    let data = data_dir_of(&file, out.path());
    let config = out.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
    let prometheus = Prometheus::start(&data, &config).await;

    // The whole backfilled range, as a user sets the time picker, in Grafana's default of
    // about one point per pixel of a half-width panel.
    let (from, to) = (h.now - 4 * YEAR - 86_400, h.now - HEAD_SECONDS);
    let max_data_points = 1000;
    let mut checked = Vec::new();
    for panel in dashboard::panels() {
        if panel.kind != "timeseries" {
            continue;
        }
        let interval = dashboard::grafana_interval(to - from, max_data_points, &panel);
        // Grafana aligns the range to the step.
        let start = from - from.rem_euclid(interval);
        let end = to - to.rem_euclid(interval) + interval;
        for expr in &panel.exprs {
            let read = families_of(expr, &families);
            if read.is_empty() {
                continue;
            }
            // The steps whose window (the step before each point) holds a backfilled sample.
            let mut want = std::collections::BTreeSet::new();
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let name = line.split(['{', ' ']).next().unwrap();
                if !read.iter().any(|f| *f == name) {
                    continue;
                }
                let ts: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
                want.insert((ts - start + interval - 1).div_euclid(interval));
            }
            let query = dashboard::expand_for(expr, interval, to - from);
            let series = prometheus.range(&query, start, end, interval).await;
            let got: std::collections::BTreeSet<i64> = series
                .iter()
                .flat_map(|s| s["values"].as_array().unwrap().clone())
                .map(|v| (v[0].as_f64().unwrap() as i64 - start) / interval)
                .collect();
            let shown = want.intersection(&got).count();
            // Every step with a reading shows it (a step may also show an older reading
            // held by the panel, never fewer).
            assert!(
                !want.is_empty() && shown == want.len(),
                "{}: {query}: {shown} of {} steps with a reading have data ({} steps of {interval}s)",
                panel.title,
                want.len(),
                (end - start) / interval
            );
            checked.push(panel.title.clone());
        }
    }
    // Every history panel of the health data: vitals, body, activity and sleep.
    for title in [
        "Systolic blood pressure",
        "Pulse",
        "SpO2",
        "Body temperature",
        "Weight",
        "Steps",
        "Active energy",
        "Sleep duration",
        "Apnea-hypopnea index",
    ] {
        assert!(
            checked.iter().any(|t| t == title),
            "{title} not checked: {checked:?}"
        );
    }
}

// Issue 22, bug 2: a 601 is waited out, as the README promises, not fatal.

#[tokio::test]
async fn a_601_is_waited_out_and_the_backfill_goes_on() {
    let h = household(300, 50).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    // The second page is refused with a 601 asking for a second's pause.
    h.simulator.push_fault(Fault::Delay(Duration::ZERO));
    h.simulator.push_fault(Fault::Status {
        status: 601,
        error: "Too many requests".into(),
        wait_seconds: Some(1),
    });
    let started = Instant::now();
    let (ok, stderr) = h
        .backfill(&["--account", "mom", "--output", file.to_str().unwrap()])
        .await;
    assert!(ok, "{stderr}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the pause was waited out"
    );
    assert!(stderr.contains("rate-limiting"), "{stderr}");
    // The same file as a run that met no 601.
    let again = out.path().join("again.om");
    let (ok, clean) = h
        .backfill(&["--account", "mom", "--output", again.to_str().unwrap()])
        .await;
    assert!(ok, "{clean}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("withings_weight_grams{"), "{stderr}");
    assert_eq!(text, std::fs::read_to_string(&again).unwrap());
}

// Issue 22, bug 4: the spool is owner-only and never left behind.

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The spool directories in `tmp` (those of this backfill, by their name).
fn spools_in(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(backfill_spool_prefix()))
        })
        .collect()
}

fn backfill_spool_prefix() -> &'static str {
    "withings-backfill-spool-"
}

#[tokio::test]
async fn the_spool_is_owner_only_removed_at_sigterm_and_a_killed_runs_spool_is_cleaned_next_time() {
    let h = household(300, 20).await;
    let tmp = tempfile::tempdir().unwrap();
    // What a SIGKILLed backfill left (its process is gone), and a running one's spool.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let stale = tmp
        .path()
        .join(format!("{}{gone_pid}-x1y2z3", backfill_spool_prefix()));
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("withings_weight_grams.spool"), b"health data").unwrap();
    let running = tmp.path().join(format!(
        "{}{}-a1b2c3",
        backfill_spool_prefix(),
        std::process::id()
    ));
    std::fs::create_dir(&running).unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    // 17 pages are answered (the yearly windows before the history, then some of it); the
    // next hangs, so the backfill is caught mid-paging.
    for _ in 0..17 {
        h.simulator.push_fault(Fault::Delay(Duration::ZERO));
    }
    h.simulator
        .push_fault(Fault::Delay(Duration::from_secs(30)));
    let mut command = Command::new(BIN);
    command
        .args(["backfill", "--account", "mom", "--output"])
        .arg(&file)
        .env_clear()
        .envs(h.env())
        .env("WITHINGS_TIMEOUT_SECONDS", "60")
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = ChildGuard(command.spawn().unwrap());
    let log = common::process::capture_stderr(&mut child.0);
    assert!(common::eventually(DEADLINE, || h.simulator.request_count("/measure") >= 18).await);
    assert!(!stale.exists(), "the stale spool is removed");
    assert!(running.exists(), "a running backfill's spool is left alone");
    let spools: Vec<PathBuf> = spools_in(tmp.path())
        .into_iter()
        .filter(|p| *p != running)
        .collect();
    assert_eq!(spools.len(), 1, "{spools:?}");
    let spool = &spools[0];
    assert_eq!(mode_of(spool), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(spool)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!files.is_empty(), "two pages were spooled");
    for f in &files {
        assert_eq!(mode_of(f), 0o600, "{}", f.display());
    }
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    let stderr = common::process::wait_for_log(&log, "rerun the same command", 1).await;
    assert!(!status.success(), "{stderr}");
    assert_eq!(
        status.code(),
        Some(1),
        "an exit, not a death by signal: {stderr}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!spool.exists(), "{stderr}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

// Issue 22: malformed activity and sleep rows are counted in the summary line.

#[tokio::test]
async fn malformed_activity_and_sleep_rows_are_counted_in_the_summary() {
    let h = household(40, 50).await;
    let mut extras = days_and_nights(h.now);
    // A day that cannot be placed (no such time zone), a night that ends before it starts.
    extras.activities.push(activity_row(
        "2024-05-01",
        "Nowhere/Atlantis",
        Some("w1"),
        "ScanWatch 2",
        serde_json::json!({"steps": 1}),
    ));
    extras.sleep.push(night_row(
        "2024-05-02",
        "s9",
        63,
        (1_714_640_000, 1_714_610_000),
        serde_json::json!({"total_sleep_time": 100}),
    ));
    h.simulator.set_user_extras("1001", extras).unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    let (ok, stderr) = h
        .backfill_with(
            &[COLLECTORS],
            &["--account", "mom", "--output", file.to_str().unwrap()],
        )
        .await;
    assert!(ok, "{stderr}");
    let summary = stderr.lines().last().unwrap();
    assert!(
        summary.contains(", 4 days, 3 nights read; 2 malformed rows skipped)"),
        "{summary}"
    );
}

// Issue 22: paging that advances forever is bounded.

#[tokio::test]
async fn paging_that_never_ends_is_given_up_after_50_pages() {
    let h = household(40, 50).await;
    // Every answer says there is more, one further on each time.
    for offset in 1..=120 {
        h.simulator.push_fault(Fault::Body(format!(
            r#"{{"status":0,"body":{{"updatetime":1,"timezone":"UTC","measuregrps":[],"more":1,"offset":{offset}}}}}"#
        )));
    }
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    let (ok, stderr) = h
        .backfill(&["--account", "mom", "--output", file.to_str().unwrap()])
        .await;
    assert!(!ok, "{stderr}");
    assert_eq!(h.simulator.request_count("/measure"), 50, "{stderr}");
    assert!(
        stderr.contains("kept answering `more` for 50 pages"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

/// The `heart` and `workouts` histories: each ECG at the time it was recorded (windows of
/// unix seconds across years and pages), each workout at its start (windows of days), with
/// the live series; a malformed row counted.
#[tokio::test]
async fn ecgs_and_workouts_are_backfilled_each_at_its_own_time() {
    use serde_json::json;
    let h = household(0, 1).await;
    let ecg = |timestamp: i64, afib: i64, hr: i64| {
        json!({"deviceid": "e1", "model": 44, "ecg": {"signalid": timestamp, "afib": afib},
               "heart_rate": hr, "timestamp": timestamp, "modified": timestamp + 60})
    };
    h.simulator
        .set_user_extras(
            "1001",
            withings_sim::data::UserExtras {
                // 2019-06-08, and two in 2024 (so a window of two pages of one row).
                ecgs: vec![
                    ecg(1_560_000_000, 0, 64),
                    ecg(1_717_000_000, 1, 97),
                    ecg(1_717_100_000, 2, 0),
                    json!({"timestamp": 1_717_200_000, "modified": 1_717_200_060, "ecg": "no"}),
                ],
                workouts: vec![
                    json!({"category": 2, "model": 94, "deviceid": "w1", "startdate": 1_600_000_000,
                           "enddate": 1_600_001_800, "date": "2020-09-13", "modified": 1_600_002_000,
                           "data": {"calories": 300, "distance": 5000.5}}),
                    json!({"category": 7, "model": 94, "deviceid": "w1", "startdate": 1_700_000_000,
                           "enddate": 1_700_002_400, "date": "2023-11-14", "modified": 1_700_002_500,
                           "data": {"pool_laps": 40}}),
                ],
                ..Default::default()
            },
        )
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    let (ok, stderr) = h
        .backfill_with(
            &[("WITHINGS_COLLECTORS", "heart,workouts")],
            &["--account", "mom", "--output", file.to_str().unwrap()],
        )
        .await;
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    let series = |name: &str| {
        format!(
            "{name}{{device_id=\"e1\",device_model=\"BPM Core\",account=\"mom\",job=\"withings\",instance=\"{INSTANCE}\"}}"
        )
    };
    for (name, at, value) in [
        ("withings_ecg_afib_classification", 1_560_000_000, 0.0),
        ("withings_ecg_heart_rate_bpm", 1_560_000_000, 64.0),
        ("withings_ecg_afib_classification", 1_717_000_000, 1.0),
        ("withings_ecg_heart_rate_bpm", 1_717_000_000, 97.0),
        ("withings_ecg_afib_classification", 1_717_100_000, 2.0),
        (
            "withings_ecg_timestamp_seconds",
            1_717_100_000,
            1_717_100_000.0,
        ),
    ] {
        assert_eq!(
            series_samples(&text, &series(name), at),
            [value],
            "{name} @{at}\n{text}"
        );
    }
    // 0 bpm is "not measured": no sample rather than a 0.
    assert!(
        series_samples(&text, &series("withings_ecg_heart_rate_bpm"), 1_717_100_000).is_empty()
    );
    let workout = |name: &str, category: &str| {
        format!(
            "{name}{{device_id=\"w1\",device_model=\"ScanWatch 2\",category=\"{category}\",account=\"mom\",job=\"withings\",instance=\"{INSTANCE}\"}}"
        )
    };
    for (series, at, value) in [
        (
            workout("withings_workout_duration_seconds", "run"),
            1_600_000_000,
            1800.0,
        ),
        (
            workout("withings_workout_energy_joules", "run"),
            1_600_000_000,
            1_255_200.0,
        ),
        (
            workout("withings_workout_distance_meters", "run"),
            1_600_000_000,
            5000.5,
        ),
        (
            workout("withings_workout_pool_laps", "swimming"),
            1_700_000_000,
            40.0,
        ),
    ] {
        assert_eq!(
            series_samples(&text, &series, at),
            [value],
            "{series} @{at}\n{text}"
        );
    }
    let summary = stderr.lines().last().unwrap();
    assert!(
        summary.contains(" pages, 2 workouts, 3 ECGs read; 1 malformed row skipped)"),
        "{summary}"
    );
    // The heart list asked by unix time, never by day; workouts by day.
    let asked: Vec<_> = h.simulator.requests();
    assert!(
        asked
            .iter()
            .all(|r| ["/v2/heart", "/v2/measure", "/v2/oauth2"].contains(&r.path.as_str())),
        "{asked:?}"
    );
    assert!(asked.iter().filter(|r| r.path == "/v2/measure").all(|r| {
        r.params.get("action").map(String::as_str) == Some("getworkouts")
            && r.params.contains_key("startdateymd")
    }));
    assert!(asked.iter().filter(|r| r.path == "/v2/heart").all(|r| {
        r.params.contains_key("startdate")
            && r.params.contains_key("enddate")
            && !r.params.contains_key("startdateymd")
    }));
}

/// The intraday history: a day a request, each sample at its own time; without `--since`
/// only the last year (the test gives one, two days back).
#[tokio::test]
async fn intraday_samples_are_backfilled_a_day_a_request_each_at_its_time() {
    use serde_json::json;
    let h = household(0, 10).await;
    // --since takes a day: its first second, UTC.
    let since = (h.now - 2 * 86_400).div_euclid(86_400) * 86_400;
    let at = [since + 60, since + 86_400 + 120, since + 86_400 + 720];
    let mut intraday = std::collections::BTreeMap::new();
    for (i, t) in at.iter().enumerate() {
        intraday.insert(
            *t,
            json!({"deviceid": "w1", "model": "ScanWatch 2", "heart_rate": 60 + i, "steps": 10 * i}),
        );
    }
    h.simulator
        .set_user_extras(
            "1001",
            withings_sim::data::UserExtras {
                intraday,
                ..Default::default()
            },
        )
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("mom.om");
    let date = jiff::Timestamp::from_second(since)
        .unwrap()
        .strftime("%Y-%m-%d")
        .to_string();
    let (ok, stderr) = h
        .backfill_with(
            &[("WITHINGS_COLLECTORS", "intraday")],
            &[
                "--account",
                "mom",
                "--since",
                &date,
                "--output",
                file.to_str().unwrap(),
            ],
        )
        .await;
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    let series = format!(
        "withings_intraday_heart_rate_bpm{{device_id=\"w1\",device_model=\"ScanWatch 2\",account=\"mom\",job=\"withings\",instance=\"{INSTANCE}\"}}"
    );
    for (i, t) in at.iter().enumerate() {
        assert_eq!(
            series_samples(&text, &series, *t),
            [60.0 + i as f64],
            "{t}\n{text}"
        );
    }
    // From --since to 3 hours ago: a request for each day of it, none longer than a day.
    let asked: Vec<_> = h
        .simulator
        .requests()
        .into_iter()
        .filter(|r| r.params.get("action").map(String::as_str) == Some("getintradayactivity"))
        .collect();
    let spans: Vec<(i64, i64)> = asked
        .iter()
        .map(|r| {
            (
                r.params["startdate"].parse().unwrap(),
                r.params["enddate"].parse().unwrap(),
            )
        })
        .collect();
    assert!((2..=3).contains(&spans.len()), "{spans:?}");
    assert_eq!(spans[0].0, since);
    assert!(spans.iter().all(|(s, e)| e - s < 86_400), "{spans:?}");
    assert!(spans.windows(2).all(|w| w[1].0 == w[0].1 + 1), "{spans:?}");
    // Up to the head block's edge, 3 hours before the run.
    let last = spans.last().unwrap().1;
    assert!(
        (h.now - 3 * 3_600 - 60..=h.now - 3 * 3_600 + 60).contains(&last),
        "{last}"
    );
}
