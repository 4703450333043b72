//! The reference documentation against the code: every metric family the exporter can emit
//! is in docs/metrics.md with its type, and every family documented there exists.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_exporter::notify::callback::{self, Callback};
use withings_exporter::notify::{Notifier, NotifySettings};
use withings_sim::household::Household;

/// `# TYPE name type` of an exposition, into `out`.
fn collect_types(text: &str, out: &mut BTreeMap<String, String>) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                out.insert(name.to_owned(), kind.to_owned());
            }
        }
    }
}

/// Every family an exporter emits in some state: the demo household with every collector
/// and notifications on (each account's probe, after a notification, and `/metrics`); one
/// account that skips readings and is rate-limited (the families present only then); and
/// every measure of the measure table, which no single account has all of.
async fn emitted_families() -> BTreeMap<String, String> {
    let mut families = BTreeMap::new();

    let household = Household::start().await.expect("household starts");
    // Every collector of the list, so that a new one's families must be documented too.
    let every: Vec<&str> = withings_exporter::collector::ALL
        .iter()
        .map(|c| c.name())
        .collect();
    let vars = [
        ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0"),
        ("WITHINGS_COLLECTORS", every.join(",").as_str()),
        ("WITHINGS_TIMEOUT_SECONDS", "5"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let config = Config::from_vars(household.environment(vars)).expect("valid configuration");
    let app = Arc::new(App::from_config(&config).expect("app"));
    let server = common::serve(common::bind(Arc::clone(&app)).await);
    let address = server.address;
    let secret = callback::load_or_create_secret(&household.dir().join(callback::SECRET_FILE))
        .expect("secret");
    let secret_text = secret.expose().to_owned();
    let base = callback::parse_callback_url(&format!("http://{address}/withings/notify"))
        .expect("callback URL");
    app.set_notifier(Notifier::new(
        Callback::new(base, secret),
        NotifySettings {
            min_interval: Duration::from_secs(30),
            safety_poll: Duration::from_secs(3600),
            applis: app.collectors().applis(),
            subscribe_spacing: Duration::ZERO,
            reconcile_interval: Duration::from_secs(3 * 3600),
        },
        app.clock().clone(),
    ));
    let http = common::http();
    let (name, userid, _) = withings_sim::HOUSEHOLD[0];
    let notified = http
        .post(format!("http://{address}/withings/notify/{secret_text}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("userid={userid}&appli=1"))
        .send()
        .await
        .expect("notification");
    assert_eq!(notified.status(), 200);
    assert!(app.notifier().is_some());
    let mut probes = vec![format!("/probe?account={name}")];
    probes.extend(
        withings_sim::HOUSEHOLD
            .iter()
            .map(|(n, _, _)| format!("/probe?account={n}")),
    );
    probes.push("/metrics".into());
    for path in probes {
        let text = common::body_of(http.get(format!("http://{address}{path}"))).await;
        collect_types(&text, &mut families);
    }
    server.stop().await;

    // Readings skipped (an ambiguous one, left out on request), then a 601.
    let single = common::spawn_app_with(common::AppOptions {
        env: vec![("WITHINGS_INCLUDE_AMBIGUOUS", "false".into())],
        ..Default::default()
    })
    .await;
    single
        .simulator
        .load_fixture(&common::fixture("seed_getmeas.json"))
        .expect("seed fixture");
    collect_types(&single.scrape().await, &mut families);
    single
        .simulator
        .set_fault(Some(withings_sim::Fault::Status {
            status: 601,
            error: "Too many requests".into(),
            wait_seconds: Some(60),
        }));
    collect_types(&single.scrape().await, &mut families);
    single.shutdown().await;

    for def in withings_exporter::collector::measures::table::MEASURES {
        families.insert(def.metric.to_owned(), "gauge".to_owned());
    }
    // A workout with every field Withings gives (the demo's have no swim).
    let page = withings_exporter::collector::workouts::parse_getworkouts(
        br#"{"status":0,"body":{"series":[{"category":7,"model":94,"deviceid":"w",
            "startdate":1,"enddate":2,"date":"2020-01-01","modified":3,"data":{
            "calories":1,"hr_average":1,"hr_min":1,"hr_max":1,"hr_zone_0":1,"hr_zone_1":1,
            "hr_zone_2":1,"hr_zone_3":1,"pause_duration":1,"spo2_average":1,"steps":1,
            "distance":1,"elevation":1,"pool_laps":1,"strokes":1}}]}}"#,
    )
    .expect("a workout");
    // An intraday sample with every field Withings gives (the demo's watch has some).
    let intraday = withings_exporter::collector::intraday::parse_getintradayactivity(
        br#"{"status":0,"body":{"series":{"1":{"deviceid":"w","model":"ScanWatch 2",
            "heart_rate":1,"steps":1,"spo2_auto":1,"rmssd":1,"sdnn1":1,"hrv_quality":1,"rr":1,
            "chest_movement_rate":1,"elevation":1,"calories":1,"distance":1,"duration":1,
            "stroke":1,"pool_lap":1,"core_body_temperature":1}}}}"#,
    )
    .expect("an intraday sample");
    for sample in &intraday.samples {
        withings_exporter::collector::intraday::sample_series(sample, |name, _, _, _| {
            families.insert(name.to_owned(), "gauge".to_owned());
        });
    }
    // A night's segment with every per-minute series Withings gives.
    let night = withings_exporter::collector::sleep_detail::parse_get(
        br#"{"status":0,"body":{"series":[{"startdate":0,"enddate":60,"state":1,
            "model":"Aura Sensor V2","hash_deviceid":"a","hr":{"0":1},"rr":{"0":1},
            "snoring":{"0":1},"sdnn_1":{"0":1},"rmssd":{"0":1},"hrv_quality":{"0":1},
            "mvt_score":{"0":1},"chest_movement_rate":{"0":1},"breathing_sounds":{"0":1}}]}}"#,
    )
    .expect("a night");
    withings_exporter::collector::sleep_detail::page_series(&night, |name, _, _, _, _| {
        families.insert(name.to_owned(), "gauge".to_owned());
    });
    for workout in &page.workouts {
        withings_exporter::collector::workouts::workout_series(workout, &mut |name, _, _, _| {
            families.insert(name.to_owned(), "gauge".to_owned());
        });
    }
    families
}

/// The families docs/metrics.md documents: each table row whose first cell is one
/// backticked name, with the type in the second cell.
fn documented_families(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| `name` | type | labels | meaning |" splits into ["", name, type, ...].
        if cells.len() < 4 || !cells[0].is_empty() {
            continue;
        }
        let Some(name) = cells[1].strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
            continue;
        };
        if name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            let previous = out.insert(name.to_owned(), cells[2].to_owned());
            assert!(previous.is_none(), "docs/metrics.md documents {name} twice");
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_family_is_documented_and_every_documented_one_exists() {
    let emitted = emitted_families().await;
    let documented = documented_families(&common::read_repo_file("docs/metrics.md"));
    assert!(emitted.len() > 60, "{emitted:?}");
    let undocumented: Vec<String> = emitted
        .iter()
        .filter(|(name, _)| !documented.contains_key(*name))
        .map(|(name, kind)| format!("| `{name}` | {kind} | | |"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "families emitted but missing from docs/metrics.md:\n{}",
        undocumented.join("\n")
    );
    for (name, kind) in &documented {
        match emitted.get(name) {
            None => panic!("docs/metrics.md documents {name}, which the exporter never emits"),
            Some(emitted) => assert_eq!(kind, emitted, "docs/metrics.md: the type of {name}"),
        }
    }
}

#[test]
fn every_setting_is_in_the_configuration_reference() {
    let text = common::read_repo_file("docs/configuration.md");
    for setting in withings_exporter::config::SETTINGS {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("| `{}`", setting.variable))),
            "{} has no row in docs/configuration.md",
            setting.variable
        );
    }
}

/// The number of alerting rules the README and docs/alerts.md give is the rules file's, and
/// docs/alerts.md has a row for every alert.
#[test]
fn the_alert_count_and_rows_match_the_rules_file() {
    let rules = common::read_repo_file("prometheus/rules/withings.rules.yml");
    let names: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    let said = format!("{} alerting rules", names.len());
    for file in ["README.md", "docs/alerts.md"] {
        let text = common::read_repo_file(file).replace('\n', " ");
        assert!(text.contains(&said), "{file} does not say {said:?}");
    }
    let alerts = common::read_repo_file("docs/alerts.md");
    for name in names {
        assert!(
            alerts.contains(&format!("| `{name}` |")),
            "docs/alerts.md has no row for {name}"
        );
    }
}
