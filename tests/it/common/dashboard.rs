//! The PromQL queries of the shipped Grafana dashboard, ready to send to Prometheus.
//!
//! Shared by the modules that need it (tests/it/alert_rules.rs, tests/it/stack.rs), so that
//! there is one copy of the expansion rules and a query added to the dashboard is checked
//! everywhere.
#![allow(dead_code)] // each test module uses a different part

use std::path::Path;

/// Relative to the repository root.
pub const DASHBOARD: &str = "grafana/dashboards/withings.json";

/// Dashboard variables and the values they take in tests. `${x}` before `$x` so that the
/// braced form is not half-replaced. `.*` for `$job`/`$instance` is what Grafana's "All"
/// sends, and for `$account` the variable's allValue; `1m` for the interval variables is
/// what Grafana computes for a 1 h range; `0` for the range's start (`$__from`, unix
/// milliseconds), which keeps every event.
const VARIABLES: &[(&str, &str)] = &[
    ("${__from}", "0"),
    ("$__from", "0"),
    ("${__rate_interval}", "1m"),
    ("$__rate_interval", "1m"),
    ("${__interval}", "1m"),
    ("$__interval", "1m"),
    ("${__range}", "1h"),
    ("$__range", "1h"),
    ("${account}", ".*"),
    ("$account", ".*"),
    ("${instance}", ".*"),
    ("$instance", ".*"),
    ("${job}", ".*"),
    ("$job", ".*"),
];

/// Replaces the dashboard variables of `expr` by the values above.
pub fn expand(expr: &str) -> String {
    let mut query = expr.to_owned();
    for (variable, value) in VARIABLES {
        query = query.replace(variable, value);
    }
    query
}

/// One panel of the dashboard (rows included, panels inside rows too).
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    /// `timeseries`, `stat`, `table`, `row`…
    pub kind: String,
    /// The panel's "Min interval" (`interval`), e.g. "2m".
    pub min_interval: Option<String>,
    /// Its non-empty target expressions, variables not expanded.
    pub exprs: Vec<String>,
}

/// The shipped dashboard, parsed.
pub fn dashboard_json() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("dashboard is valid JSON")
}

/// All panels of `dashboard` as JSON, including panels nested in (collapsed) rows, in
/// dashboard order.
pub fn all_panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    fn walk<'a>(panels: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every panel of `grafana/dashboards/withings.json`, in dashboard order.
pub fn panels() -> Vec<Panel> {
    let dashboard = dashboard_json();
    all_panels(&dashboard)
        .into_iter()
        .map(|panel| Panel {
            title: panel["title"].as_str().unwrap_or("<untitled>").to_owned(),
            kind: panel["type"].as_str().unwrap_or("").to_owned(),
            min_interval: panel["interval"].as_str().map(str::to_owned),
            exprs: panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .filter(|e| !e.trim().is_empty())
                .map(str::to_owned)
                .collect(),
        })
        .collect()
}

/// Every non-empty target expression of the dashboard, variables not expanded, each with the
/// title of its panel.
pub fn raw_exprs_with_titles() -> Vec<(String, String)> {
    panels()
        .into_iter()
        .flat_map(|p| {
            let title = p.title;
            p.exprs.into_iter().map(move |e| (title.clone(), e))
        })
        .collect()
}

/// Every non-empty PromQL query of the panels of `grafana/dashboards/withings.json`
/// (including panels inside rows), in dashboard order, with the dashboard variables
/// expanded (see [`expand`]), each with the title of its panel.
pub fn dashboard_queries_with_titles() -> Vec<(String, String)> {
    panels()
        .into_iter()
        .flat_map(|p| {
            let title = p.title;
            p.exprs
                .into_iter()
                .map(move |e| (title.clone(), expand(&e)))
        })
        .collect()
}

/// The scrape interval of the shipped Grafana data source (`timeInterval` in
/// grafana/provisioning/datasources/prometheus.yml): Grafana's floor for `$__interval`.
pub const DATASOURCE_SCRAPE_SECONDS: i64 = 60;

/// Grafana's `roundInterval` (grafana-data rangeutil): the interval of a step, in ms,
/// rounded to a "nice" one.
pub fn round_interval(ms: i64) -> i64 {
    const TABLE: &[(i64, i64)] = &[
        (15, 10),
        (35, 20),
        (75, 50),
        (150, 100),
        (350, 200),
        (750, 500),
        (1_500, 1_000),
        (3_500, 2_000),
        (7_500, 5_000),
        (12_500, 10_000),
        (17_500, 15_000),
        (25_000, 20_000),
        (45_000, 30_000),
        (90_000, 60_000),
        (210_000, 120_000),
        (450_000, 300_000),
        (750_000, 600_000),
        (1_050_000, 900_000),
        (1_500_000, 1_200_000),
        (2_700_000, 1_800_000),
        (5_400_000, 3_600_000),
        (9_000_000, 7_200_000),
        (16_200_000, 10_800_000),
        (32_400_000, 21_600_000),
        (86_400_000, 43_200_000),
        (172_800_000, 86_400_000),
        (604_800_000, 86_400_000),
        (1_814_400_000, 604_800_000),
    ];
    match TABLE.iter().find(|(limit, _)| ms <= *limit) {
        Some((_, rounded)) => *rounded,
        None if ms < 3_628_800_000 => 2_592_000_000,
        None => 31_536_000_000,
    }
}

/// "2m", "30s", "1h", "1d" in seconds.
pub fn duration_seconds(text: &str) -> Option<i64> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = number.parse().ok()?;
    Some(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        "w" => n * 604_800,
        _ => return None,
    })
}

/// The `$__interval` (and step) Grafana gives a panel showing `range_seconds` in
/// `max_data_points` points: the range divided by the points, rounded, and no less than
/// the panel's Min interval or else the data source's scrape interval.
pub fn grafana_interval(range_seconds: i64, max_data_points: i64, panel: &Panel) -> i64 {
    let rounded = round_interval(range_seconds * 1000 / max_data_points.max(1)) / 1000;
    let floor = panel
        .min_interval
        .as_deref()
        .and_then(duration_seconds)
        .unwrap_or(DATASOURCE_SCRAPE_SECONDS);
    rounded.max(floor).max(1)
}

/// `expr` as Grafana sends it for a panel whose `$__interval` is `interval` seconds over a
/// range of `range` seconds: `$__rate_interval` is max($__interval + scrape interval,
/// 4 × scrape interval); the other variables as in [`expand`].
pub fn expand_for(expr: &str, interval: i64, range: i64) -> String {
    let rate = (interval + DATASOURCE_SCRAPE_SECONDS).max(4 * DATASOURCE_SCRAPE_SECONDS);
    let mut query = expr.to_owned();
    for (variable, value) in [
        ("${__rate_interval}", rate),
        ("$__rate_interval", rate),
        ("${__interval}", interval),
        ("$__interval", interval),
        ("${__range}", range),
        ("$__range", range),
    ] {
        query = query.replace(variable, &format!("{value}s"));
    }
    expand(&query)
}

/// The queries of [`dashboard_queries_with_titles`] without the titles.
pub fn dashboard_queries() -> Vec<String> {
    dashboard_queries_with_titles()
        .into_iter()
        .map(|(_, query)| query)
        .collect()
}

/// The title of the row repeated for each account: a person's day, workouts, ECGs and
/// trends.
pub const DAY_ROW: &str = "Day: $account";

/// The panels of [`DAY_ROW`]. Their series are samples at their own times, which only
/// remote write brings (a scrape shows the latest): `dashboard_day::` proves every one of
/// their queries against a real Prometheus fed by remote write, with the values checked,
/// and the scrape-only stack test (`stack::prometheus_and_alertmanager_get_dashboard_data_and_alerts`)
/// leaves exactly these out. `alert_rules::dashboard_day_row_*` checks that this list is the
/// row's panels.
pub const PROVEN_BY_REMOTE_WRITE: &[&str] = &[
    "Heart rate",
    "Hypnogram",
    "Steps per hour",
    "SpO2 at night",
    "Workouts",
    "ECGs",
    "Heart-rate variability (RMSSD) by day",
    "Resting heart rate (night minimum) by day",
];

/// The panels nested in the row titled `title`, as JSON, in dashboard order.
pub fn row_panels<'a>(dashboard: &'a serde_json::Value, title: &str) -> Vec<&'a serde_json::Value> {
    let row = all_panels(dashboard)
        .into_iter()
        .find(|p| p["type"] == "row" && p["title"] == title)
        .unwrap_or_else(|| panic!("no row {title:?}"));
    row["panels"].as_array().into_iter().flatten().collect()
}
