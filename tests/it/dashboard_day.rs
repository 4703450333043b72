//! The dashboard's "Day" row (issue 20) against a real Prometheus fed by remote write: the
//! demo household's day, night, workouts and ECGs, fetched by the exporter (every collector
//! on) and written by its remote writer (the immediate path for the intraday samples and the
//! night's minutes, the settled run for the rest), into a Prometheus that takes remote write
//! and scrapes the same exporter through `/sd` with the scrape filter of docs/dashboard.md.
//! Every query of every panel of the row is sent as Grafana sends it, for each person, and
//! the answers are compared with what the simulator served.
//!
//! The clocks are pinned (the simulator's and the exporter's) at [`AT`], so the day is the
//! same on every run; the data is therefore months old for Prometheus (its out-of-order
//! window takes it), and Prometheus' own scrapes, at the real time, are far from it. Every
//! query is evaluated at [`AT`], as Grafana would evaluate it with the dashboard opened
//! then: a range query (`query_range`) over the panel's range for the graphs, an instant
//! query at the range's end for the tables. An instant query at the real time would see
//! none of it: a sample is visible to an instant selector only within the lookback (5
//! minutes) after its time.
//!
//! Needs `prometheus` (Debian package prometheus), hence `#[ignore]`: run with
//! `cargo test --test it dashboard_day:: -- --include-ignored`.

use crate::common;
use common::dashboard::{self, Panel};

use jiff::tz::TimeZone;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use withings_exporter::app::App;
use withings_exporter::backfill::live::{Immediate, Live, Run};
use withings_exporter::clock::Clock;
use withings_exporter::config::Config;
use withings_exporter::remote_write::{Destination, Writer};
use withings_sim::demo_extras;
use withings_sim::household::Household;

/// 2026-06-01 10:05:30 UTC, 12:05:30 in the household's Berlin: last night (23:00 to 07:00)
/// is over and uploaded, yesterday's run (07:00), the walk the evening before and
/// yesterday's 20:15 ECG are older than the settled run's 12 hours.
const AT: i64 = 1_780_308_330;
const TIMEZONE: &str = "Europe/Berlin";
/// The dashboard's default range (`now-7d`), which the tables and trends follow.
const WEEK: i64 = 7 * 86_400;
const DAY: i64 = 86_400;
/// How long the samples may take to become queryable before the test gives up.
const DEADLINE: Duration = Duration::from_secs(60);
/// The width in pixels Grafana gives a panel a grid unit wide on a 1,800-pixel screen:
/// its maxDataPoints, from which it computes `$__interval`.
const PIXELS_PER_UNIT: i64 = 75;

/// The remote-write receiving Prometheus, scraping `exporter`'s accounts through `/sd` with
/// the scrape filter docs/dashboard.md gives.
async fn prometheus(dir: &std::path::Path, exporter: &str) -> crate::backfill::Prometheus {
    let filter = scrape_filter_of_the_docs();
    crate::backfill::Prometheus(
        common::prometheus::start_remote_write_receiver(
            dir,
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 storage:\n  tsdb:\n    out_of_order_time_window: 10y\n\
                 scrape_configs:\n  - job_name: withings\n    http_sd_configs:\n      - url: http://{exporter}/sd\n        refresh_interval: 1s\n{filter}"
            ),
        )
        .await,
    )
}

/// The `metric_relabel_configs` block of docs/dashboard.md, indented for a scrape job.
fn scrape_filter_of_the_docs() -> String {
    let docs = common::read_repo_file("docs/dashboard.md");
    let start = docs
        .find("```yaml\nmetric_relabel_configs:")
        .expect("docs/dashboard.md gives the scrape filter in a yaml block");
    let block = &docs[start + "```yaml\n".len()..];
    let block = &block[..block.find("```").expect("the block ends")];
    block.lines().map(|l| format!("    {l}\n")).collect()
}

/// The shipped Prometheus configurations carry the docs' filter, word for word: the demo's
/// (it writes into that Prometheus) in force, the example's commented out, to uncomment
/// with remote write into it.
#[test]
fn the_shipped_prometheus_configurations_carry_the_scrape_filter_of_the_docs() {
    let filter = scrape_filter_of_the_docs();
    let demo = common::read_repo_file("prometheus/demo.yml");
    assert!(
        demo.contains(&filter),
        "prometheus/demo.yml lacks\n{filter}"
    );
    let commented: String = filter
        .lines()
        .map(|l| format!("    # {}\n", &l[4..]))
        .collect();
    let example = common::read_repo_file("prometheus/prometheus.yml");
    assert!(
        example.contains(&commented),
        "prometheus/prometheus.yml lacks, commented out,\n{commented}"
    );
}

/// `expr` for `account` as Grafana sends it from the row repeated for that account.
fn expand(expr: &str, account: &str, interval: i64, range: i64, from: i64) -> String {
    let expr = expr
        .replace("${account}", account)
        .replace("$account", account)
        .replace("${__from}", &(from * 1000).to_string())
        .replace("$__from", &(from * 1000).to_string());
    dashboard::expand_for(&expr, interval, range)
}

/// One answer series: its labels and its points (unix seconds, value).
struct Series {
    labels: BTreeMap<String, String>,
    points: Vec<(i64, f64)>,
}

fn series_of(result: &[Value]) -> Vec<Series> {
    result
        .iter()
        .map(|s| {
            let labels = serde_json::from_value(s["metric"].clone()).expect("labels");
            let values = match s["values"].as_array() {
                Some(values) => values.clone(),
                None => vec![s["value"].clone()],
            };
            let points = values
                .iter()
                .map(|v| {
                    (
                        v[0].as_f64().expect("a time") as i64,
                        v[1].as_str().and_then(|x| x.parse().ok()).expect("a value"),
                    )
                })
                .collect();
            Series { labels, points }
        })
        .collect()
}

/// A panel of the Day row and how Grafana asks for it at [`AT`].
struct Asked {
    panel: Panel,
    /// The panel's range in seconds: its own (`timeFrom`) or the dashboard's.
    range: i64,
    /// `$__interval` and the step, in seconds.
    interval: i64,
    table: bool,
}

fn asked(panels: &[&Value]) -> Vec<Asked> {
    let all = dashboard::panels();
    panels
        .iter()
        .map(|json| {
            let title = json["title"].as_str().expect("a title");
            let panel = all
                .iter()
                .find(|p| p.title == title)
                .expect("the panel")
                .clone();
            let range = match json["timeFrom"].as_str() {
                Some(from) => dashboard::duration_seconds(from).expect("a duration"),
                None => WEEK,
            };
            let width = json["gridPos"]["w"].as_i64().expect("a width");
            let interval = dashboard::grafana_interval(range, width * PIXELS_PER_UNIT, &panel);
            Asked {
                range,
                interval,
                table: json["type"] == "table",
                panel,
            }
        })
        .collect()
}

impl Asked {
    /// The answer to query `i` for `account`: Grafana's range query (start and end aligned
    /// down to the step, as Grafana aligns them) or, for a table, its instant query at the end.
    async fn ask(
        &self,
        prometheus: &crate::backfill::Prometheus,
        i: usize,
        account: &str,
    ) -> Vec<Series> {
        let from = AT - self.range;
        let query = expand(
            &self.panel.exprs[i],
            account,
            self.interval,
            self.range,
            from,
        );
        let result = if self.table {
            prometheus
                .result(
                    "/api/v1/query",
                    &[("query", query), ("time", AT.to_string())],
                )
                .await
        } else {
            let step = self.interval;
            prometheus
                .result(
                    "/api/v1/query_range",
                    &[
                        ("query", query),
                        ("start", (from.div_euclid(step) * step).to_string()),
                        ("end", (AT.div_euclid(step) * step).to_string()),
                        ("step", step.to_string()),
                    ],
                )
                .await
        };
        series_of(&result)
    }
}

/// The single series of `answer` with `label` = `value`.
fn the<'a>(answer: &'a [Series], label: &str, value: &str) -> &'a Series {
    let found: Vec<&Series> = answer
        .iter()
        .filter(|s| s.labels.get(label).map(String::as_str) == Some(value))
        .collect();
    assert_eq!(found.len(), 1, "one series with {label}={value}");
    found[0]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus (Debian package prometheus)"]
async fn every_query_of_the_day_row_answers_the_simulators_day_from_remote_write() {
    let household = Household::start_at(AT).await.expect("household starts");
    let accounts: Vec<&str> = withings_sim::HOUSEHOLD.iter().map(|(n, _, _)| *n).collect();
    let vars = [
        ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0"),
        ("WITHINGS_TIMEOUT_SECONDS", "5"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    // The household's environment enables every collector.
    let config = Config::from_vars(household.environment(vars)).expect("valid configuration");
    let app =
        Arc::new(App::from_config_with_clock(&config, Clock::starting_at_unix(AT)).expect("app"));
    let server = common::bind(Arc::clone(&app)).await;
    let exporter = server.local_addr().expect("address").to_string();
    let dir = tempfile::tempdir().expect("temporary directory");
    let prometheus = prometheus(dir.path(), &exporter).await;

    // `serve`'s remote writer (main.rs, start_remote_writer), with the scraped instance.
    let url = prometheus.0.url("/api/v1/write");
    let writer = Writer::new(Destination::new(url.parse().expect("a URL"))).expect("writer");
    let registry = prometheus::Registry::new();
    let mut live = Live::new(
        Arc::clone(&app),
        writer.clone(),
        Some("withings"),
        Some(&exporter),
        None,
        &registry,
    )
    .expect("the settled writer");
    let (immediate, writing) =
        Immediate::new(&app, writer, Some("withings"), Some(&exporter), &registry)
            .expect("the immediate path");
    app.emit_to(immediate);
    let writing = tokio::spawn(writing);
    let served = common::serve(server);

    // Each person's probe reads the day and the night (the immediate path writes them);
    // the settled run writes the workouts, the ECGs and the nights' summaries.
    let http = common::http();
    for account in &accounts {
        let response = http
            .get(format!("http://{}/probe?account={account}", served.address))
            .send()
            .await
            .expect("probe");
        assert_eq!(response.status(), 200, "{account}");
        let person = app.account(account).expect("the account");
        assert!(
            matches!(live.run_account(&person).await, Run::Written(_)),
            "{account}: the settled run failed\n{}",
            prometheus.log_text()
        );
    }

    let json = dashboard::dashboard_json();
    let row = dashboard::row_panels(&json, dashboard::DAY_ROW);
    let panels = asked(&row);
    let titles: Vec<&str> = panels.iter().map(|p| p.panel.title.as_str()).collect();
    assert_eq!(titles, dashboard::PROVEN_BY_REMOTE_WRITE);

    // Every query of every panel has data for every person (but the ECG table for Grandma,
    // who has no ECG device), once the immediate path's last batch is in.
    let deadline = Instant::now() + DEADLINE;
    for asked in &panels {
        for account in &accounts {
            for (i, expr) in asked.panel.exprs.iter().enumerate() {
                if asked.panel.title == "ECGs" && *account == "grandma" {
                    assert!(asked.ask(&prometheus, i, account).await.is_empty());
                    continue;
                }
                while asked.ask(&prometheus, i, account).await.is_empty() {
                    assert!(
                        Instant::now() < deadline,
                        "{}: no data for {account}: {expr}\n{}",
                        asked.panel.title,
                        prometheus.log_text()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let panel = |title: &str| panels.iter().find(|p| p.panel.title == title).unwrap();

    // What the simulator served (the same for every person but the ECGs).
    let tz = TimeZone::get(TIMEZONE).expect("the household's time zone");
    let extras = demo_extras::household_extras(AT, TIMEZONE);
    let intraday: BTreeMap<i64, Value> = demo_extras::intraday(AT, &tz)
        .into_iter()
        .filter(|(_, s)| s["visible_at"].as_i64().is_none_or(|v| v <= AT))
        .collect();
    let night = demo_extras::last_night(AT, &tz);
    let of_field = |field: &str| -> BTreeMap<i64, f64> {
        intraday
            .iter()
            .filter_map(|(at, s)| Some((*at, s[field].as_f64()?)))
            .collect()
    };

    for account in ["alex", "sam"] {
        // Heart rate: every sample of the day at its own time, the watch's and the analyzer's.
        let heart = panel("Heart rate");
        let answer = heart.ask(&prometheus, 0, account).await;
        let watch = the(&answer, "device_model", demo_extras::WATCH.1);
        let shown: BTreeMap<i64, f64> = watch.points.iter().copied().collect();
        let expected = of_field("heart_rate");
        let mut checked = 0;
        for (at, bpm) in expected.range(AT - DAY..=AT) {
            if at.rem_euclid(heart.interval) == 0 {
                assert_eq!(shown.get(at), Some(bpm), "{account}: heart rate at {at}");
                checked += 1;
            }
        }
        assert!(checked >= 100, "{account}: {checked} samples checked");
        let answer = heart.ask(&prometheus, 1, account).await;
        let analyzer = the(&answer, "device_model", demo_extras::SLEEP_ANALYZER.1);
        let shown: BTreeMap<i64, f64> = analyzer.points.iter().copied().collect();
        let mut checked = 0;
        for segment in &night {
            for (minute, bpm) in segment["hr"].as_object().expect("hr") {
                let minute: i64 = minute.parse().expect("a time");
                assert_eq!(
                    shown.get(&minute),
                    bpm.as_f64().as_ref(),
                    "{account}: heart rate in bed at {minute}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 8 * 60, "{account}: the night's minutes");

        // The hypnogram: at every minute of the night the stage of the simulator's segment,
        // and nothing outside the night.
        let hypnogram = panel("Hypnogram");
        let answer = hypnogram.ask(&prometheus, 0, account).await;
        let stages = the(&answer, "device_model", demo_extras::SLEEP_ANALYZER.1);
        let bedtime = night[0]["startdate"].as_i64().unwrap();
        let wake = night.last().unwrap()["enddate"].as_i64().unwrap();
        let stage_at = |t: i64| {
            night
                .iter()
                .find(|s| {
                    s["startdate"].as_i64().unwrap() <= t && t < s["enddate"].as_i64().unwrap()
                })
                .map(|s| s["state"].as_f64().unwrap())
        };
        for (t, stage) in &stages.points {
            assert!(
                (bedtime..=wake).contains(t),
                "{account}: a stage at {t}, outside the night {bedtime}..{wake}"
            );
            if *t < wake {
                assert_eq!(Some(*stage), stage_at(*t), "{account}: stage at {t}");
            }
        }
        // 02:40 in Berlin, a known minute: the deep sleep of the night's third cycle (from
        // 02:00: light 25 minutes, then deep 30).
        let known = bedtime + 3 * 3600 + 40 * 60;
        assert_eq!(stage_at(known), Some(2.0));
        assert!(stages.points.contains(&(known, 2.0)), "{account}: 02:40");
        assert!(stages.points.len() as i64 >= (wake - bedtime) / 60);

        // Steps per hour: each bar is the sum of the slots that begin within its hour.
        let answer = panel("Steps per hour").ask(&prometheus, 0, account).await;
        let bars = the(&answer, "device_model", demo_extras::WATCH.1);
        assert_eq!(panel("Steps per hour").interval, 3600);
        let steps = of_field("steps");
        for (end, sum) in &bars.points {
            let expected: f64 = steps.range(end - 3600..*end).map(|(_, s)| s).sum();
            assert_eq!(*sum, expected, "{account}: steps in the hour before {end}");
        }
        // The range query's steps: Grafana aligns the range's start and end down to the hour.
        let hours_with_steps = ((AT - DAY).div_euclid(3600) * 3600..=AT.div_euclid(3600) * 3600)
            .step_by(3600)
            .filter(|end| steps.range(end - 3600..*end).next().is_some())
            .count();
        assert_eq!(
            bars.points.len(),
            hours_with_steps,
            "{account}: one bar an hour"
        );
        assert!(hours_with_steps >= 10);

        // SpO2 at night: each reading, as a ratio.
        let spo2 = panel("SpO2 at night");
        let answer = spo2.ask(&prometheus, 0, account).await;
        let shown: BTreeMap<i64, f64> = the(&answer, "device_model", demo_extras::WATCH.1)
            .points
            .iter()
            .copied()
            .collect();
        let mut checked = 0;
        for (at, percent) in of_field("spo2_auto").range(AT - DAY..=AT) {
            if at.rem_euclid(spo2.interval) == 0 {
                let value = shown.get(at).copied().unwrap_or(f64::NAN);
                assert!(
                    close(value, percent / 100.0),
                    "{account}: SpO2 at {at}: {value}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 20, "{account}: {checked} readings checked");

        // The workouts table: one row per workout of the week, its values per column.
        let workouts = panel("Workouts");
        let mut rows: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for i in 0..workouts.panel.exprs.len() {
            for series in workouts.ask(&prometheus, i, account).await {
                assert_eq!(series.points.len(), 1);
                let start = series.labels["start"].clone();
                let category = &series.labels["category"];
                rows.entry(format!("{start} {category}"))
                    .or_default()
                    .push(series.points[0].1);
            }
        }
        let mut expected = BTreeMap::new();
        for w in &extras.workouts {
            let start = w["startdate"].as_i64().unwrap();
            let data = &w["data"];
            let category = match w["category"].as_i64() {
                Some(1) => "walk",
                Some(2) => "run",
                other => panic!("a category the test does not know: {other:?}"),
            };
            expected.insert(
                format!("{start} {category}"),
                vec![
                    (start * 1000) as f64,
                    (w["enddate"].as_i64().unwrap() - start) as f64,
                    data["distance"].as_f64().unwrap(),
                    (data["calories"].as_f64().unwrap() * 4184.0 * 1000.0).round() / 1000.0,
                    data["hr_average"].as_f64().unwrap(),
                ],
            );
        }
        assert_eq!(expected.len(), 2);
        assert_eq!(rows, expected, "{account}: the workouts");
    }

    // The ECG table: Sam's AFib recording as 1, Alex's inconclusive as 2, at their time.
    let ecgs = panel("ECGs");
    for (account, afib, bpm) in [("sam", 1.0, 96.0), ("alex", 2.0, 71.0)] {
        let ecg = &household_ecg(account);
        let taken = ecg["timestamp"].as_i64().unwrap();
        let mut row = Vec::new();
        for i in 0..ecgs.panel.exprs.len() {
            let answer = ecgs.ask(&prometheus, i, account).await;
            assert_eq!(answer.len(), 1, "{account}: one recording");
            assert_eq!(answer[0].labels["taken"], taken.to_string());
            row.push(answer[0].points[0].1);
        }
        assert_eq!(row, [(taken * 1000) as f64, afib, bpm], "{account}");
        assert_eq!(ecg["heart_rate"].as_f64(), Some(bpm));
    }

    // HRV: each day's average of the watch's RMSSD, in seconds.
    let hrv = panel("Heart-rate variability (RMSSD) by day");
    assert_eq!(hrv.interval, DAY);
    let rmssd = of_field("rmssd");
    let answer = hrv.ask(&prometheus, 0, "sam").await;
    let daily = the(&answer, "device_model", demo_extras::WATCH.1);
    // The two days the watch's samples span (the simulator keeps two).
    assert_eq!(daily.points.len(), 2, "{:?}", daily.points);
    for (t, average) in &daily.points {
        let window: Vec<f64> = rmssd
            .range(t - DAY..=*t)
            .map(|(_, ms)| ms / 1000.0)
            .collect();
        let expected = window.iter().sum::<f64>() / window.len() as f64;
        assert!(
            close(*average, expected),
            "HRV on the day before {t}: {average} {expected}"
        );
    }

    // Resting heart rate: the lowest heart rate of the nights that ended in each day, of
    // every device, as RestingHeartRateRisen reads it.
    let resting = panel("Resting heart rate (night minimum) by day");
    let answer = resting.ask(&prometheus, 0, "sam").await;
    assert_eq!(answer.len(), 1, "one line, the devices merged");
    // The two nights before last night: last night ended less than 12 hours before AT,
    // so the settled run has not written it yet.
    assert_eq!(answer[0].points.len(), 2, "{:?}", answer[0].points);
    for (t, lowest) in &answer[0].points {
        let expected = extras
            .sleep
            .iter()
            .filter(|n| {
                let end = n["enddate"].as_i64().unwrap();
                t - DAY <= end && end <= *t
            })
            .filter_map(|n| n["data"]["hr_min"].as_f64())
            .fold(f64::INFINITY, f64::min);
        assert_eq!(
            *lowest, expected,
            "resting heart rate on the day before {t}"
        );
    }

    // Prometheus scrapes the same exporter now, through the filter of docs/dashboard.md: the
    // scraped copies of the samples written at their times are dropped, the gauges the
    // alerts and the stat panels read are kept.
    let scraped = async || -> Vec<String> {
        let result = prometheus
            .result(
                "/api/v1/query",
                &[(
                    "query",
                    r#"count by (__name__) ({__name__=~"withings_(intraday|sleep|workout|ecg)_.+", job="withings", account="sam"})"#
                        .to_owned(),
                )],
            )
            .await;
        result
            .iter()
            .filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_owned))
            .collect()
    };
    let deadline = Instant::now() + DEADLINE;
    let names = loop {
        let names = scraped().await;
        if names
            .iter()
            .any(|n| n == "withings_intraday_timestamp_seconds")
        {
            break names;
        }
        assert!(
            Instant::now() < deadline,
            "no scrape of sam: {names:?}\n{}",
            prometheus.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for kept in [
        "withings_intraday_timestamp_seconds",
        "withings_sleep_detail_timestamp_seconds",
        "withings_sleep_heart_rate_min_bpm",
        "withings_workout_start_timestamp_seconds",
        "withings_ecg_afib_classification",
    ] {
        assert!(
            names.iter().any(|n| n == kept),
            "{kept} not scraped: {names:?}"
        );
    }
    for dropped in [
        "withings_intraday_heart_rate_bpm",
        "withings_intraday_steps",
        "withings_intraday_spo2_ratio",
        "withings_intraday_hrv_rmssd_seconds",
        "withings_intraday_breathing_rate_per_minute",
        "withings_sleep_state",
        "withings_sleep_heart_rate_bpm",
        "withings_sleep_breathing_rate_per_minute",
        "withings_sleep_minute_snoring_seconds",
    ] {
        assert!(
            !names.iter().any(|n| n == dropped),
            "{dropped} scraped: {names:?}"
        );
    }

    writing.abort();
}

/// The ECG the simulator serves `account` (demo profile by name).
fn household_ecg(account: &str) -> Value {
    let (_, _, profile) = withings_sim::HOUSEHOLD
        .iter()
        .find(|(name, _, _)| *name == account)
        .expect("a member");
    demo_extras::ecgs(AT, TIMEZONE, profile.ecg_afib)
        .into_iter()
        .next()
        .expect("an ECG")
}

/// Why docs/dashboard.md asks for its scrape filter: without it, the Prometheus that takes the
/// remote writer's samples also stores, at every scrape, a copy of the latest value read so
/// far, in the same series. Three watch samples of 100 steps each in the last half hour: the
/// "Steps per hour" query adds every scraped copy of the latest one on top of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus (Debian package prometheus)"]
async fn without_the_scrape_filter_each_scraped_copy_adds_to_the_hours_steps() {
    use common::accounts::{directory_vars, unix_now, write_account};
    let sim = withings_sim::Simulator::start(withings_sim::SimulatorOptions::default())
        .await
        .expect("simulator starts");
    let dir = tempfile::tempdir().expect("temporary directory");
    let now = unix_now();
    let mut intraday = BTreeMap::new();
    for minutes in [30, 20, 10] {
        intraday.insert(
            now - minutes * 60,
            serde_json::json!({"deviceid": "w1", "model": "ScanWatch 2", "steps": 100}),
        );
    }
    sim.set_user_extras(
        "51",
        withings_sim::data::UserExtras {
            intraday,
            ..Default::default()
        },
    )
    .expect("extras");
    write_account(&sim, dir.path(), "sam", "51");
    let mut vars = directory_vars(&sim, dir.path());
    vars.push(("WITHINGS_COLLECTORS".into(), "measures,intraday".into()));
    let config = Config::from_vars(vars).expect("configuration");
    let app = Arc::new(App::from_config(&config).expect("app"));
    let server = common::bind(Arc::clone(&app)).await;
    let exporter = server.local_addr().expect("address").to_string();

    // A Prometheus scraping /sd as the shipped configuration does, without the filter.
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             storage:\n  tsdb:\n    out_of_order_time_window: 1d\n\
             scrape_configs:\n  - job_name: withings\n    http_sd_configs:\n      - url: http://{exporter}/sd\n        refresh_interval: 1s\n"
        ),
    )
    .expect("write prometheus.yml");
    let data = dir.path().join("data");
    let prometheus = crate::backfill::Prometheus(
        common::prometheus::start_daemon("prometheus", "prometheus", dir.path(), |port| {
            vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", data.display()),
                "--web.enable-remote-write-receiver".to_owned(),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ]
        })
        .await,
    );
    let url = prometheus.0.url("/api/v1/write");
    let writer = Writer::new(Destination::new(url.parse().expect("a URL"))).expect("writer");
    let (immediate, writing) = Immediate::new(
        &app,
        writer,
        Some("withings"),
        Some(&exporter),
        &prometheus::Registry::new(),
    )
    .expect("the immediate path");
    app.emit_to(immediate);
    let writing = tokio::spawn(writing);
    let _served = common::serve(server);

    // The three samples written at their times, and at least five scrapes after them.
    let count = |query: String| {
        let prometheus = &prometheus;
        async move {
            let result = prometheus
                .result("/api/v1/query", &[("query", query)])
                .await;
            result
                .first()
                .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    let deadline = Instant::now() + DEADLINE;
    while count(format!(
        "count_over_time(withings_intraday_steps{{account=\"sam\"}}[1h] @ {})",
        now - 5 * 60
    ))
    .await
        < 3.0
        || count(
            r#"count_over_time(withings_intraday_timestamp_seconds{account="sam"}[1h])"#.to_owned(),
        )
        .await
            < 5.0
    {
        assert!(
            Instant::now() < deadline,
            "no samples or scrapes\n{}",
            prometheus.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The panel's query for the hour before now: the 300 steps taken, and each copy again.
    let json = dashboard::dashboard_json();
    let steps = dashboard::row_panels(&json, dashboard::DAY_ROW)
        .into_iter()
        .find(|p| p["title"] == "Steps per hour")
        .and_then(|p| p["targets"][0]["expr"].as_str())
        .expect("the steps per hour query")
        .to_owned();
    let query = expand(&steps, "sam", 3600, DAY, now - DAY);
    let shown = count(query.clone()).await;
    assert!(
        shown >= 300.0 + 5.0 * 100.0,
        "{query}: {shown}, not only the 300 steps taken"
    );
    writing.abort();
}
