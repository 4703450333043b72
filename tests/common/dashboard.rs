//! The PromQL queries of the shipped Grafana dashboard, ready to send to Prometheus.
//!
//! Included with `#[path = "common/dashboard.rs"] mod dashboard;` by the test binaries that
//! need it (tests/alert_rules.rs, tests/stack.rs), so that there is one copy of the
//! expansion rules and a query added to the dashboard is checked everywhere.
#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;

/// Relative to the repository root.
pub const DASHBOARD: &str = "grafana/dashboards/withings.json";

/// Dashboard variables and the values they take in tests. `${x}` before `$x` so that the
/// braced form is not half-replaced. `.*` for `$job`/`$instance` is what Grafana's "All"
/// sends, and for `$account` the variable's allValue; `1m` for the interval variables is
/// what Grafana computes for a 1 h range.
const VARIABLES: &[(&str, &str)] = &[
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

/// Every non-empty PromQL query of the panels of `grafana/dashboards/withings.json`
/// (including panels inside rows), in dashboard order, with the dashboard variables
/// expanded (see [`expand`]), each with the title of its panel.
pub fn dashboard_queries_with_titles() -> Vec<(String, String)> {
    fn collect(panels: &serde_json::Value, queries: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("<untitled>");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                if expr.trim().is_empty() {
                    continue;
                }
                queries.push((title.to_owned(), expand(expr)));
            }
            if let Some(nested) = panel.get("panels") {
                collect(nested, queries);
            }
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).expect("dashboard is valid JSON");
    let mut queries = Vec::new();
    collect(&dashboard["panels"], &mut queries);
    queries
}

/// The queries of [`dashboard_queries_with_titles`] without the titles.
pub fn dashboard_queries() -> Vec<String> {
    dashboard_queries_with_titles()
        .into_iter()
        .map(|(_, query)| query)
        .collect()
}
