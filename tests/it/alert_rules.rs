//! Checks of the monitoring files shipped with the exporter:
//! `prometheus/` (alert rules, their unit tests, example Prometheus and
//! Alertmanager configs) and `grafana/dashboards/withings.json`.
//!
//! Tests that run external programs (`promtool` from the Debian package
//! `prometheus`, `amtool` from `prometheus-alertmanager`) are `#[ignore]`d;
//! run them with `cargo test --test it alert_rules:: -- --include-ignored`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::dashboard;
use dashboard::{DASHBOARD, all_panels, dashboard_queries, raw_exprs_with_titles};

const RULES: &str = "prometheus/rules/withings.rules.yml";
const RULE_TESTS: &str = "prometheus/rules/withings.rules.test.yml";
const PROMETHEUS_CONFIG: &str = "prometheus/prometheus.yml";
const ALERTMANAGER_CONFIG: &str = "prometheus/alertmanager.yml";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Runs `program args...` in the repository root and panics, showing its
/// output, unless it exits successfully.
fn run_ok(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (install the Debian packages prometheus and prometheus-alertmanager)")
        });
    assert!(
        output.status.success(),
        "`{program} {}` failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

fn combined_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ------------------------------------------------------------------ dashboard

/// The vector selectors of a PromQL expression: `(metric name, text between
/// the braces)`, the name being empty for a bare `{...}` selector and the
/// matchers empty for a selector without braces. A small tokenizer, good
/// enough for the queries of this project: it skips strings, comments, range
/// brackets, numbers/durations, function and aggregation names, keywords and
/// the label lists of `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`.
fn vector_selectors(expr: &str) -> Vec<(String, String)> {
    // Operators and aggregations (the latter can be followed by `by (...)`
    // before their parenthesis, so they are not recognised by the `(`).
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
        "start",
        "end",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LIST_KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut selectors = Vec::new();
    let mut i = 0;

    // Index just after the block opened at `start` by `open`, skipping strings.
    let skip_block = |start: usize, open: char, close: char| -> usize {
        let mut depth = 0;
        let mut j = start;
        while j < chars.len() {
            let c = chars[j];
            if c == '"' || c == '\'' || c == '`' {
                j = skip_string(&chars, j);
                continue;
            }
            if c == open {
                depth += 1;
            } else if c == close {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            j += 1;
        }
        panic!("unbalanced {open}{close} in {expr:?}");
    };
    let next_non_space = |from: usize| -> usize {
        let mut j = from;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };

    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '$' {
            // A Grafana variable (`$__from`, `${__interval}`), not a selector.
            if chars.get(i + 1) == Some(&'{') {
                i = skip_block(i + 1, '{', '}');
            } else {
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '[' {
            i = skip_block(i, '[', ']');
        } else if c == '{' {
            let end = skip_block(i, '{', '}');
            selectors.push((String::new(), chars[i + 1..end - 1].iter().collect()));
            i = end;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let next = next_non_space(i);
            let next_char = chars.get(next).copied();
            if LABEL_LIST_KEYWORDS.contains(&ident.as_str()) {
                if next_char == Some('(') {
                    i = skip_block(next, '(', ')');
                }
            } else if next_char == Some('(') || KEYWORDS.contains(&ident.as_str()) {
                // function call, aggregation or operator keyword
            } else if next_char == Some('{') {
                let end = skip_block(next, '{', '}');
                selectors.push((ident, chars[next + 1..end - 1].iter().collect()));
                i = end;
            } else {
                selectors.push((ident, String::new()));
            }
        } else {
            i += 1;
        }
    }
    selectors
}

/// Index just after the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut j = start + 1;
    while j < chars.len() {
        if chars[j] == '\\' && quote != '`' {
            j += 2;
            continue;
        }
        if chars[j] == quote {
            return j + 1;
        }
        j += 1;
    }
    panic!(
        "unterminated string in {:?}",
        chars.iter().collect::<String>()
    );
}

/// The matchers of a selector body, whitespace outside strings removed:
/// `job =~ "$job", kind="x"` -> {`job=~"$job"`, `kind="x"`}.
fn matchers(body: &str) -> BTreeSet<String> {
    let chars: Vec<char> = body.chars().collect();
    let mut out = BTreeSet::new();
    let mut current = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            let end = skip_string(&chars, i);
            current.extend(&chars[i..end]);
            i = end;
            continue;
        }
        if c == ',' {
            out.insert(std::mem::take(&mut current));
        } else if !c.is_whitespace() {
            current.push(c);
        }
        i += 1;
    }
    out.insert(current);
    out.remove("");
    out
}

/// The exporter's own metrics (its `/metrics`): no account label, so an `account` filter
/// would hide them as soon as one account is selected.
const EXPORTER_METRICS: &[&str] = &[
    "withings_exporter_build_info",
    "withings_api_requests_total",
    "withings_rate_limited",
    "withings_request_budget_per_minute",
    "withings_requests_in_window",
    "withings_accounts",
];

/// Series both with an account label (the accounts' targets) and without (the exporter's
/// own target): filtered with `account=~"$account|"`, the empty alternative keeping the
/// exporter's.
const MIXED_METRICS: &[&str] = &["up", "withings_scrapes_total"];

/// Problems with the `job`/`instance`/`account` filtering of one dashboard expression.
fn selector_problems(expr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut filtered = 0;
    for (name, body) in vector_selectors(expr) {
        if name.is_empty() {
            problems.push(format!("bare selector {{{body}}}"));
            continue;
        }
        if !(name.starts_with("withings_") || name == "up") {
            problems.push(format!("selector of unexpected metric {name}"));
            continue;
        }
        let m = matchers(&body);
        for required in [r#"job=~"$job""#, r#"instance=~"$instance""#] {
            if !m.contains(required) {
                problems.push(format!("{name}{{{body}}} lacks {required}"));
            }
        }
        let account_matchers: Vec<&String> =
            m.iter().filter(|m| m.starts_with("account")).collect();
        let expected = if EXPORTER_METRICS.contains(&name.as_str()) {
            None
        } else if MIXED_METRICS.contains(&name.as_str()) {
            Some(r#"account=~"$account|""#)
        } else {
            Some(r#"account=~"$account""#)
        };
        match expected {
            None if !account_matchers.is_empty() => problems.push(format!(
                "{name}{{{body}}} is an exporter metric without account label, filtered on account"
            )),
            Some(required) if account_matchers != [required] => {
                problems.push(format!("{name}{{{body}}} lacks {required}"));
            }
            _ => {}
        }
        filtered += 1;
    }
    if filtered == 0 {
        problems.push("no withings_* or up selector".to_owned());
    }
    problems
}

#[test]
fn vector_selector_parser_self_test() {
    let expr = r#"sum by (action, status) (rate(withings_api_requests_total{job=~"$job", instance=~"$instance"}[$__rate_interval])) * 60
        and on(instance, job) label_replace(time() - withings_up{instance="a,b}"} offset 5m, "kind", "$1", "measurement", "(.*)") # up{x="y"}
        or up"#;
    assert_eq!(
        vector_selectors(expr),
        vec![
            (
                "withings_api_requests_total".to_owned(),
                r#"job=~"$job", instance=~"$instance""#.to_owned()
            ),
            ("withings_up".to_owned(), r#"instance="a,b}""#.to_owned()),
            ("up".to_owned(), String::new()),
        ]
    );
    // Grafana's variables are not selectors.
    assert_eq!(
        vector_selectors(r#"withings_up{job=~"$job"} >= $__from / 1000 + ${__to}"#),
        vec![("withings_up".to_owned(), r#"job=~"$job""#.to_owned())]
    );
    assert!(
        selector_problems(r#"max without(device_id) (withings_spo2_ratio{ job =~ "$job" , instance=~"$instance", account =~ "$account"})"#)
            .is_empty()
    );
    assert_eq!(
        selector_problems(r#"time() - withings_up{job=~"$job", account=~"$account"} > 1 or up{instance=~"$instance", account=~"$account|"}"#)
            .len(),
        2
    );
    assert_eq!(selector_problems(r#"time() - withings_up"#).len(), 3);
    // Per-account series need the account filter, the exporter's own must not have it,
    // the mixed ones need the empty alternative.
    let filtered = r#"job=~"$job", instance=~"$instance""#;
    assert_eq!(
        selector_problems(&format!("withings_token_valid{{{filtered}}}")).len(),
        1
    );
    assert_eq!(
        selector_problems(&format!(
            r#"withings_rate_limited{{{filtered}, account=~"$account"}}"#
        ))
        .len(),
        1
    );
    assert!(selector_problems(&format!("withings_rate_limited{{{filtered}}}")).is_empty());
    assert_eq!(
        selector_problems(&format!(r#"up{{{filtered}, account=~"$account"}}"#)).len(),
        1
    );
    assert!(selector_problems(&format!(r#"up{{{filtered}, account=~"$account|"}}"#)).is_empty());
    assert_eq!(selector_problems(r#"{__name__="withings_up"}"#).len(), 2);
    assert_eq!(selector_problems("vector(1)").len(), 1);
}

/// The table panel's column `name` has a non-empty unit among its field overrides.
fn assert_column_has_a_unit(table: &serde_json::Value, name: &str) {
    let title = table["title"].as_str().unwrap_or("a table");
    let unit = table["fieldConfig"]["overrides"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["matcher"]["options"] == name)
        .and_then(|o| {
            o["properties"]
                .as_array()?
                .iter()
                .find(|p| p["id"] == "unit")
        })
        .unwrap_or_else(|| panic!("{title}: column {name:?} has no unit"));
    assert!(
        unit["value"].as_str().is_some_and(|u| !u.is_empty()),
        "{title}: column {name:?} has an empty unit"
    );
}

#[test]
fn dashboard_provisions_without_import_placeholders() {
    let text = read(DASHBOARD);
    let dashboard = dashboard::dashboard_json();
    assert!(
        dashboard.get("__inputs").is_none(),
        "dashboard must not have __inputs"
    );
    assert!(
        dashboard.get("__requires").is_none(),
        "dashboard must not have __requires"
    );
    assert!(
        !text.contains("${DS_"),
        "dashboard must not reference ${{DS_...}} import variables"
    );
    assert_eq!(
        dashboard["uid"], "withings-exporter",
        "stable dashboard uid"
    );
    assert!(
        dashboard["id"].is_null(),
        "provisioned dashboards must not carry a database id"
    );
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
}

#[test]
fn dashboard_has_datasource_job_instance_and_account_variables() {
    let dashboard = dashboard::dashboard_json();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("variable {name} missing"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");

    let query_text = |v: &Value| -> String {
        match &v["query"] {
            Value::String(s) => s.clone(),
            other => other["query"].as_str().unwrap_or_default().to_owned(),
        }
    };
    // Both the exporter's own job (build info) and the accounts' job (withings_up): with
    // http_sd they differ, with a single account they are one job.
    let job = variable("job");
    assert_eq!(job["type"], "query");
    assert_eq!(
        query_text(job),
        r#"label_values({__name__=~"withings_up|withings_exporter_build_info"}, job)"#
    );
    let instance = variable("instance");
    assert_eq!(instance["type"], "query");
    assert_eq!(
        query_text(instance),
        r#"label_values({__name__=~"withings_up|withings_exporter_build_info", job=~"$job"}, instance)"#
    );
    let account = variable("account");
    assert_eq!(account["type"], "query");
    assert_eq!(
        query_text(account),
        r#"label_values(withings_up{job=~"$job", instance=~"$instance"}, account)"#
    );
    assert_eq!(account["datasource"]["uid"], "${datasource}");
    assert_eq!(account["multi"], true);
    assert_eq!(account["includeAll"], true);
    // Every account selector is also filtered on job and instance, so `.*` cannot reach
    // another exporter's series; it matches the single-account series, which have no
    // account label (Grafana's own All, the list of values, would not).
    assert_eq!(account["allValue"], ".*");
    let position = |name: &str| variables.iter().position(|v| v["name"] == name);
    assert!(
        position("instance") < position("account"),
        "account is chained after instance"
    );
    for v in [job, instance] {
        assert_eq!(
            v["datasource"]["uid"], "${datasource}",
            "{} datasource",
            v["name"]
        );
        // A custom allValue of ".*" would make up{job=~"$job"} match every
        // target of the Prometheus server.
        assert!(
            v.get("allValue").is_none_or(Value::is_null),
            "{} has an allValue",
            v["name"]
        );
    }
}

#[test]
fn dashboard_panels_use_the_datasource_variable() {
    let dashboard = dashboard::dashboard_json();
    let expected = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    for panel in all_panels(&dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = &panel["title"];
        assert_eq!(panel["datasource"], expected, "datasource of panel {title}");
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title} has no targets"));
        assert!(!targets.is_empty(), "panel {title} has no targets");
        for target in targets {
            assert_eq!(
                target["datasource"], expected,
                "datasource of a target of panel {title}"
            );
        }
    }
}

#[test]
fn dashboard_panels_have_unit_and_description() {
    let dashboard = dashboard::dashboard_json();
    let mut problems = Vec::new();
    for panel in all_panels(&dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("<untitled>");
        if panel["description"]
            .as_str()
            .is_none_or(|d| d.trim().is_empty())
        {
            problems.push(format!("panel {title:?} has no description"));
        }
        if panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_none_or(|u| u.trim().is_empty())
        {
            problems.push(format!("panel {title:?} has no unit"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn dashboard_queries_filter_on_job_and_instance() {
    let exprs = raw_exprs_with_titles();
    assert!(exprs.len() >= 10, "only {} queries found", exprs.len());
    let mut problems = Vec::new();
    for (title, expr) in &exprs {
        for problem in selector_problems(expr) {
            problems.push(format!("panel {title:?}: {problem}\n    {expr}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn dashboard_queries_are_fully_expanded() {
    let queries = dashboard_queries();
    assert_eq!(queries.len(), raw_exprs_with_titles().len());
    for query in &queries {
        for leftover in ["$__", "$job", "$instance", "$account", "${"] {
            assert!(!query.contains(leftover), "{leftover} left in {query}");
        }
    }
}

#[test]
fn dashboard_covers_the_metric_contract() {
    let text = read(DASHBOARD);
    for metric in [
        "withings_blood_pressure_mmhg",
        "withings_heart_rate_bpm",
        "withings_spo2_ratio",
        "withings_body_temperature_celsius",
        "withings_measurement_timestamp_seconds",
        "withings_token_valid",
        "withings_up",
        "withings_scrape_duration_seconds",
        "withings_exporter_build_info",
        "withings_api_requests_total",
        "withings_last_success_timestamp_seconds",
        "withings_request_budget_per_minute",
        "withings_requests_in_window",
        "withings_accounts",
        "withings_rate_limited",
    ] {
        assert!(text.contains(metric), "dashboard does not show {metric}");
    }
}

/// The household overview: one row per account, built from instant table queries merged
/// on their labels. Each query must keep exactly the labels the rows are merged on (a
/// vital's device labels would split an account over several rows).
#[test]
fn dashboard_household_overview_is_one_row_per_account() {
    let dashboard = dashboard::dashboard_json();
    let table = all_panels(&dashboard)
        .into_iter()
        .find(|p| p["title"] == "Household overview")
        .expect("a Household overview panel");
    assert_eq!(table["type"], "table");
    let transformations: Vec<&str> = table["transformations"]
        .as_array()
        .expect("transformations")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(transformations, ["merge", "organize"]);
    let organize = &table["transformations"][1]["options"];
    let targets = table["targets"].as_array().expect("targets");
    let mut shown = String::new();
    for target in targets {
        let expr = target["expr"].as_str().unwrap_or_default();
        let refid = target["refId"].as_str().unwrap_or_default();
        assert_eq!(target["instant"], true, "{refid} is not instant: {expr}");
        assert_eq!(target["format"], "table", "{refid} is not a table: {expr}");
        assert!(
            expr.contains("max by (account, instance, job) ("),
            "{refid} does not keep one series per account: {expr}"
        );
        // Every column has a name and a unit.
        let name = organize["renameByName"][format!("Value #{refid}")]
            .as_str()
            .unwrap_or_else(|| panic!("column {refid} not renamed"));
        assert_column_has_a_unit(table, name);
        shown.push_str(expr);
    }
    for metric in [
        "withings_blood_pressure_mmhg{",
        "withings_heart_rate_bpm{",
        "withings_spo2_ratio{",
        "withings_body_temperature_celsius{",
        "withings_token_valid{",
        "time() - max by (account, instance, job) (withings_last_success_timestamp_seconds{",
    ] {
        assert!(shown.contains(metric), "overview does not show {metric}");
    }
    // The age of every vital shown.
    for measurement in [
        "systolic_blood_pressure",
        "heart_rate",
        "spo2",
        "body_temperature",
    ] {
        assert!(
            shown.contains(&format!(
                r#"time() - max by (account, instance, job) (withings_measurement_timestamp_seconds{{job=~"$job", instance=~"$instance", account=~"$account", measurement="{measurement}"}})"#
            )),
            "overview does not show the age of {measurement}"
        );
    }
    assert_eq!(organize["renameByName"]["account"], "Account");
}

#[test]
#[ignore = "needs promtool (Debian package prometheus)"]
fn dashboard_queries_are_valid_promql() {
    let queries = dashboard_queries();
    assert!(!queries.is_empty());
    // promtool parses every rule expression; JSON is valid YAML.
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": q}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("dashboard_queries.rules.yml");
    std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap()).expect("write rules");
    let output = run_ok("promtool", &["check", "rules", path.to_str().unwrap()]);
    let text = combined_output(&output);
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "unexpected promtool output:\n{text}"
    );
}

// -------------------------------------------------------------- alert rules

/// Names of the alerts defined in the rules file, in order.
fn alert_names() -> Vec<String> {
    read(RULES)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

/// The text of each alert rule, from its `- alert:` line to the next rule.
fn alert_blocks() -> Vec<(String, String)> {
    let rules = read(RULES);
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in rules.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            blocks.push((name.trim().to_owned(), String::new()));
        } else if trimmed.starts_with("- name:") || trimmed.starts_with("- record:") {
            blocks.push((String::new(), String::new()));
        } else if let Some((_, body)) = blocks.last_mut() {
            // Drop YAML comments (they would satisfy the checks below).
            if !trimmed.starts_with('#') {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    blocks.retain(|(name, _)| !name.is_empty());
    blocks
}

#[test]
fn alert_rules_have_severity_annotations_and_freshness_join() {
    let blocks = alert_blocks();
    assert!(blocks.len() >= 13, "only {} alerts", blocks.len());
    let vitals = [
        "withings_blood_pressure_mmhg",
        "withings_heart_rate_bpm",
        "withings_spo2_ratio",
        "withings_body_temperature_celsius",
    ];
    let mut problems = Vec::new();
    for (name, body) in &blocks {
        if !["severity: critical", "severity: warning", "severity: info"]
            .iter()
            .any(|s| body.contains(s))
        {
            problems.push(format!("{name}: no severity critical/warning/info"));
        }
        for annotation in ["summary:", "description:"] {
            if !body.contains(annotation) {
                problems.push(format!("{name}: no {annotation}"));
            }
        }
        if vitals.iter().any(|v| body.contains(v)) {
            if !body.contains("{{ $value") {
                problems.push(format!("{name}: annotations do not show the value"));
            }
            // Only recent readings may fire.
            for needle in [
                "withings_measurement_timestamp_seconds{measurement=",
                "time() - ",
                "< 86400",
                "and on(instance, job, account",
            ] {
                if !body.contains(needle) {
                    problems.push(format!("{name}: vital alert without `{needle}`"));
                }
            }
            if !body.contains("max without(device_id, device_model)") {
                problems.push(format!("{name}: device labels not dropped"));
            }
        }
    }
    for expected in [
        "WithingsExporterDown",
        "WithingsTokenInvalid",
        "WithingsFetchFailing",
        "WithingsNoRecentBloodPressureReading",
        "BloodPressureHigh",
        "BloodPressureCrisis",
        "BloodPressureLow",
        "SpO2Low",
        "SpO2CriticallyLow",
        "BodyTemperatureFever",
        "BodyTemperatureHypothermia",
        "HeartRateHigh",
        "HeartRateLow",
    ] {
        if !blocks.iter().any(|(name, _)| name == expected) {
            problems.push(format!("alert {expected} missing"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Alerts on the exporter's own metrics (its `/metrics`, no account label).
const EXPORTER_ALERTS: &[&str] = &[
    "WithingsExporterDown",
    "WithingsRateLimited",
    "WithingsRequestBudgetSaturated",
    "WithingsAccountFileError",
    "WithingsRemoteWriteFailing",
    "WithingsRemoteWriteFallingBehind",
];

#[test]
fn per_account_alerts_name_the_account_and_join_on_it() {
    let blocks = alert_blocks();
    let mut problems = Vec::new();
    for (name, body) in &blocks {
        let summary = body
            .lines()
            .find_map(|l| l.trim().strip_prefix("summary:"))
            .unwrap_or_default();
        let per_account = !EXPORTER_ALERTS.contains(&name.as_str());
        if per_account && !summary.contains("$labels.account") {
            problems.push(format!("{name}: summary does not name the account"));
        }
        if !per_account && body.contains("$labels.account") {
            problems.push(format!("{name}: exporter alert names an account"));
        }
        // All the accounts of an exporter share instance and job: a join without
        // `account` mixes people.
        for (i, _) in body.match_indices(" on(") {
            let labels = &body[i + 4..i + 4 + body[i + 4..].find(')').unwrap_or(0)];
            if !labels.split(',').any(|l| l.trim() == "account") {
                problems.push(format!("{name}: on({labels}) without account"));
            }
        }
        for aggregation in [" by (", " by(", "without("] {
            for (i, _) in body.match_indices(aggregation) {
                let rest = &body[i + aggregation.len()..];
                let labels = &rest[..rest.find(')').unwrap_or(0)];
                if aggregation.contains("by") && !labels.split(',').any(|l| l.trim() == "account") {
                    problems.push(format!("{name}: by ({labels}) without account"));
                }
                if labels.split(',').any(|l| l.trim() == "account") && !aggregation.contains("by") {
                    problems.push(format!("{name}: drops the account label"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// For every per-account alert, a unit test with series of several accounts (one
/// exporter) where it fires for one account only: promtool compares the whole list of
/// firing alerts, so the others are known not to fire.
#[test]
fn every_per_account_alert_has_a_two_account_unit_test() {
    let tests = read(RULE_TESTS);
    // (alert, accounts of its test group, accounts in its expected alerts)
    let mut cases: Vec<(String, BTreeSet<String>, BTreeSet<String>)> = Vec::new();
    let mut group_accounts = BTreeSet::new();
    let account_value = |line: &str, key: &str| -> Option<String> {
        let start = line.find(key)? + key.len();
        let end = start + line[start..].find('"')?;
        Some(line[start..end].to_owned())
    };
    for line in tests.lines() {
        let trimmed = line.trim().trim_start_matches("- ");
        if trimmed.starts_with("name:") {
            group_accounts.clear();
        } else if trimmed.starts_with("series:") {
            if let Some(account) = account_value(trimmed, r#"account=""#) {
                group_accounts.insert(account);
            }
        } else if let Some(name) = trimmed.strip_prefix("alertname:") {
            cases.push((
                name.trim().to_owned(),
                group_accounts.clone(),
                BTreeSet::new(),
            ));
        } else if trimmed.starts_with("exp_labels:")
            && let (Some(account), Some(case)) =
                (account_value(trimmed, r#"account: ""#), cases.last_mut())
        {
            case.2.insert(account);
        }
    }
    let mut problems = Vec::new();
    for alert in alert_names() {
        if EXPORTER_ALERTS.contains(&alert.as_str()) {
            continue;
        }
        let found = cases.iter().any(|(name, accounts, firing)| {
            *name == alert && accounts.len() >= 2 && firing.len() == 1
        });
        if !found {
            problems.push(format!(
                "{alert}: no test with two accounts where it fires for one only"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn prometheus_config_discovers_the_accounts() {
    let config = read(PROMETHEUS_CONFIG);
    let active: String = config
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    for needle in [
        "  - job_name: withings\n    http_sd_configs:\n      - url: http://withings-exporter:19100/sd\n",
        "  - job_name: withings-exporter\n    static_configs:\n",
        "scrape_interval: 60s",
    ] {
        assert!(active.contains(needle), "prometheus.yml lacks {needle:?}");
    }
    // The single-account alternative stays documented.
    assert!(config.contains("#     - targets:\n  #         - withings-exporter:19100"));
}

#[test]
fn every_alert_has_firing_and_non_firing_unit_tests() {
    let tests = read(RULE_TESTS);
    let mut firing = BTreeSet::new();
    let mut not_firing = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in tests.lines() {
        let trimmed = line.trim().trim_start_matches("- ");
        if let Some(name) = trimmed.strip_prefix("alertname:") {
            current = Some(name.trim().to_owned());
        } else if let Some(rest) = trimmed.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts without alertname");
            if rest.trim() == "[]" {
                not_firing.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    let mut problems = Vec::new();
    for alert in alert_names() {
        if !firing.contains(&alert) {
            problems.push(format!("{alert}: no test where it fires"));
        }
        if !not_firing.contains(&alert) {
            problems.push(format!("{alert}: no test where it does not fire"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
#[ignore = "needs promtool (Debian package prometheus)"]
fn promtool_check_rules() {
    let output = run_ok("promtool", &["check", "rules", RULES]);
    let text = combined_output(&output);
    let expected = format!("SUCCESS: {} rules found", alert_names().len());
    assert!(
        text.contains(&expected),
        "expected {expected:?} in:\n{text}"
    );
}

#[test]
#[ignore = "needs promtool (Debian package prometheus)"]
fn promtool_test_rules() {
    let output = run_ok("promtool", &["test", "rules", RULE_TESTS]);
    let text = combined_output(&output);
    assert!(
        text.contains("SUCCESS"),
        "unexpected promtool output:\n{text}"
    );
}

#[test]
#[ignore = "needs promtool (Debian package prometheus)"]
fn promtool_check_prometheus_config() {
    // The example and the demo's (README, "The demo's whole day in a local Prometheus").
    for config in [PROMETHEUS_CONFIG, "prometheus/demo.yml"] {
        let output = run_ok("promtool", &["check", "config", config]);
        let text = combined_output(&output);
        assert!(
            text.contains("SUCCESS: 1 rule files found"),
            "{config} must load the rules file:\n{text}"
        );
    }
}

#[test]
#[ignore = "needs amtool (Debian package prometheus-alertmanager)"]
fn amtool_check_alertmanager_config() {
    let output = run_ok("amtool", &["check-config", ALERTMANAGER_CONFIG]);
    let text = combined_output(&output);
    assert!(
        text.contains("SUCCESS"),
        "unexpected amtool output:\n{text}"
    );
}

#[test]
#[ignore = "needs amtool (Debian package prometheus-alertmanager)"]
fn alertmanager_routes_by_severity() {
    // Critical alerts take the critical sub-route, others the root route;
    // both end at the default receiver of the example config.
    for labels in [
        ["alertname=BloodPressureCrisis", "severity=critical"],
        ["alertname=BloodPressureHigh", "severity=warning"],
    ] {
        let mut args = vec![
            "config",
            "routes",
            "test",
            "--config.file",
            ALERTMANAGER_CONFIG,
            "--verify.receivers=default",
        ];
        args.extend(labels);
        run_ok("amtool", &args);
    }
}

// ------------------------------------------------------------------ the Day row

/// Issue 20's "Day" row: repeated for each account (collapsed, so that a practice's hundred
/// people do not load at once), the heart rate over 24 hours with the hypnogram directly
/// beneath on the same time axis, steps per hour, SpO2 at night, the workouts and ECG tables
/// and the HRV and resting-heart-rate trends; its panels are exactly the ones the remote-write
/// test proves.
#[test]
fn dashboard_day_row_is_one_per_account_with_the_hypnogram_under_the_heart_rate() {
    let dashboard = dashboard::dashboard_json();
    let row = all_panels(&dashboard)
        .into_iter()
        .find(|p| p["type"] == "row" && p["title"] == dashboard::DAY_ROW)
        .expect("the Day row");
    assert_eq!(row["repeat"], "account");
    assert_eq!(row["collapsed"], true);
    let panels = dashboard::row_panels(&dashboard, dashboard::DAY_ROW);
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    assert_eq!(titles, dashboard::PROVEN_BY_REMOTE_WRITE);
    let panel = |title: &str| *panels.iter().find(|p| p["title"] == title).unwrap();
    let expr = |title: &str, i: usize| {
        panel(title)["targets"][i]["expr"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // The graphs of the day look back over exactly their step (at least a minute, the
    // night's resolution), or an hour for the steps; the trends over a day; the tables over
    // the whole range, to list its events. None shows a value older than its window.
    for p in &panels {
        let title = p["title"].as_str().unwrap();
        for target in p["targets"].as_array().unwrap() {
            let query = target["expr"].as_str().unwrap();
            let window = match title {
                "Steps per hour" => "[1h] offset 1ms)",
                "Workouts" | "ECGs" => ")[$__range:$__interval])",
                _ => "[$__interval])",
            };
            assert!(query.contains(window), "{title}: {query}");
        }
        let floor = match title {
            "Steps per hour" => "1h",
            "Heart-rate variability (RMSSD) by day"
            | "Resting heart rate (night minimum) by day" => "1d",
            _ => "1m",
        };
        assert_eq!(p["interval"], floor, "{title}");
    }

    // The hypnogram beneath the heart rate: same left edge, width and time range.
    let heart = panel("Heart rate");
    let hypnogram = panel("Hypnogram");
    assert_eq!(heart["type"], "timeseries");
    assert_eq!(hypnogram["type"], "state-timeline");
    for key in ["x", "w"] {
        assert_eq!(heart["gridPos"][key], hypnogram["gridPos"][key], "{key}");
    }
    assert_eq!(
        hypnogram["gridPos"]["y"].as_i64(),
        Some(heart["gridPos"]["y"].as_i64().unwrap() + heart["gridPos"]["h"].as_i64().unwrap())
    );
    for title in ["Heart rate", "Hypnogram", "Steps per hour", "SpO2 at night"] {
        assert_eq!(panel(title)["timeFrom"], "24h", "{title}");
    }
    assert!(expr("Heart rate", 0).contains("withings_intraday_heart_rate_bpm{"));
    assert!(expr("Heart rate", 1).contains("withings_sleep_heart_rate_bpm{"));
    assert!(expr("Hypnogram", 0).contains("withings_sleep_state{"));
    // Every stage Withings numbers (docs/metrics.md) named, with its own colour.
    let mappings = &hypnogram["fieldConfig"]["defaults"]["mappings"][0]["options"];
    let mut colours = BTreeSet::new();
    for (value, text) in [
        ("0", "Awake"),
        ("1", "Light"),
        ("2", "Deep"),
        ("3", "REM"),
        ("4", "Manual"),
        ("5", "Unspecified"),
        ("15", "Out of bed"),
    ] {
        assert_eq!(mappings[value]["text"], text, "stage {value}");
        colours.insert(
            mappings[value]["color"]
                .as_str()
                .expect("a colour")
                .to_owned(),
        );
    }
    assert!(
        colours.len() >= 5,
        "the four stages and out of bed apart: {colours:?}"
    );

    // Steps per hour: the slots that begin within each hour, one bar an hour.
    let steps = panel("Steps per hour");
    assert_eq!(steps["interval"], "1h");
    assert_eq!(
        steps["fieldConfig"]["defaults"]["custom"]["drawStyle"],
        "bars"
    );
    assert!(
        expr("Steps per hour", 0).starts_with("sum_over_time(withings_intraday_steps{")
            && expr("Steps per hour", 0).ends_with("}[1h] offset 1ms)")
    );
    assert!(expr("SpO2 at night", 0).contains("withings_intraday_spo2_ratio{"));

    // The tables: every event of the range, a column per query, each with a name and unit.
    for (title, metrics) in [
        (
            "Workouts",
            &[
                "withings_workout_start_timestamp_seconds",
                "withings_workout_duration_seconds",
                "withings_workout_distance_meters",
                "withings_workout_energy_joules",
                "withings_workout_heart_rate_average_bpm",
            ][..],
        ),
        (
            "ECGs",
            &[
                "withings_ecg_timestamp_seconds",
                "withings_ecg_afib_classification",
                "withings_ecg_heart_rate_bpm",
            ][..],
        ),
    ] {
        let table = panel(title);
        assert_eq!(table["type"], "table");
        let rename = &table["transformations"][1]["options"]["renameByName"];
        // The event's time first, then each column once.
        let index = table["transformations"][1]["options"]["indexByName"]
            .as_object()
            .expect("a column order");
        let mut order: Vec<i64> = index.values().filter_map(Value::as_i64).collect();
        order.sort_unstable();
        assert_eq!(
            order,
            (0..index.len() as i64).collect::<Vec<_>>(),
            "{title}"
        );
        assert_eq!(index["Value #A"], 0, "{title}");
        for (i, (target, metric)) in table["targets"]
            .as_array()
            .unwrap()
            .iter()
            .zip(metrics)
            .enumerate()
        {
            let query = target["expr"].as_str().unwrap();
            assert_eq!(target["instant"], true, "{title} {i}");
            assert_eq!(target["format"], "table", "{title} {i}");
            assert!(
                query.contains(&format!("last_over_time({metric}{{")),
                "{query}"
            );
            assert!(query.contains("count_values without() ("), "{query}");
            assert!(query.contains(">= $__from / 1000)"), "{query}");
            assert!(query.contains(")[$__range:$__interval])"), "{query}");
            let refid = target["refId"].as_str().unwrap();
            let name = rename[format!("Value #{refid}")].as_str().expect("renamed");
            assert_column_has_a_unit(table, name);
        }
    }
    let classification = panel("ECGs")["fieldConfig"]["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["matcher"]["options"] == "Classification")
        .expect("the classification column")["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "mappings")
        .expect("its value mappings")["value"][0]["options"]
        .clone();
    assert_eq!(classification["0"]["text"], "Negative");
    assert_eq!(classification["1"]["text"], "Atrial fibrillation");
    assert_eq!(classification["2"]["text"], "Inconclusive");

    // The trends over days; resting heart rate as the alert RestingHeartRateRisen has it.
    for title in [
        "Heart-rate variability (RMSSD) by day",
        "Resting heart rate (night minimum) by day",
    ] {
        assert_eq!(panel(title)["interval"], "1d", "{title}");
    }
    assert!(
        expr("Heart-rate variability (RMSSD) by day", 0)
            .starts_with("avg_over_time(withings_intraday_hrv_rmssd_seconds{")
    );
    let resting =
        "min without(device_id, device_model) (min_over_time(withings_sleep_heart_rate_min_bpm";
    assert!(expr("Resting heart rate (night minimum) by day", 0).starts_with(resting));
    assert!(
        read(RULES).contains(resting),
        "the alert no longer defines it so"
    );
}
