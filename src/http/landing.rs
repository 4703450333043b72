//! The landing page: the household (each person's latest readings, with their age and a
//! mark where a value is outside the alert rules' ranges), how each account stands, and,
//! with WITHINGS_PUBLIC_URL, the invites (issue 21). Server-rendered, no script. It shows
//! health data: with a web configuration it is behind basic auth. Never a secret.

use crate::app::{AccountState, AccountSummary, App};
use crate::http::html::{STYLE, escape, unix_to_text};
use crate::http::onboard::LandingInvites;
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};
use url::Url;

/// What the landing page shows besides the accounts' states.
#[derive(Debug, Default)]
pub struct Household {
    /// The invites and the landing page's CSRF token, when the exporter can invite.
    pub invites: Option<LandingInvites>,
    /// Basic auth guards the page.
    pub protected: bool,
    pub grafana_url: Option<Url>,
    /// Each account's latest readings, by account name.
    pub readings: Vec<(String, Vec<Reading>)>,
}

/// One latest value as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub label: &'static str,
    pub value: String,
    /// Unix time of the reading, when known.
    pub at: Option<f64>,
    /// "high", "low": outside the range the alert rules use.
    pub mark: Option<&'static str>,
}

/// The latest readings of every account, from what each holds (no request to Withings).
pub fn readings(app: &App) -> Vec<(String, Vec<Reading>)> {
    app.accounts()
        .iter()
        .map(|a| (a.name().to_owned(), readings_of(&a.families(None))))
        .collect()
}

/// The readings in `families`: the largest value across devices, as the alert rules take it.
pub fn readings_of(families: &[prometheus::proto::MetricFamily]) -> Vec<Reading> {
    let max = |name: &str, label: Option<(&str, &str)>| -> Option<f64> {
        families
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                label.is_none_or(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == k && l.value() == v)
                })
            })
            .map(|m| m.get_gauge().get_value())
            .filter(|v| v.is_finite())
            .reduce(f64::max)
    };
    let at = |measurement: &str| {
        max(
            "withings_measurement_timestamp_seconds",
            Some(("measurement", measurement)),
        )
    };
    let mut out = Vec::new();
    let systolic = max("withings_blood_pressure_mmhg", Some(("kind", "systolic")));
    let diastolic = max("withings_blood_pressure_mmhg", Some(("kind", "diastolic")));
    if let (Some(sys), Some(dia)) = (systolic, diastolic) {
        out.push(Reading {
            label: "Blood pressure",
            value: format!("{sys:.0}/{dia:.0} mmHg"),
            at: at("systolic_blood_pressure"),
            mark: if sys >= 140.0 || dia >= 90.0 {
                Some("high")
            } else if sys < 90.0 || dia < 60.0 {
                Some("low")
            } else {
                None
            },
        });
    }
    if let Some(v) = max("withings_heart_rate_bpm", None) {
        out.push(Reading {
            label: "Pulse",
            value: format!("{v:.0} bpm"),
            at: at("heart_rate"),
            mark: range(v, 50.0, 100.0, true),
        });
    }
    if let Some(v) = max("withings_spo2_ratio", None) {
        out.push(Reading {
            label: "SpO2",
            value: format!("{:.0} %", v * 100.0),
            at: at("spo2"),
            mark: (v < 0.92).then_some("low"),
        });
    }
    if let Some(v) = max("withings_body_temperature_celsius", None) {
        out.push(Reading {
            label: "Temperature",
            value: format!("{v:.1} °C"),
            at: at("body_temperature"),
            mark: range(v, 35.0, 38.0, false),
        });
    }
    if let Some(v) = max("withings_weight_grams", None) {
        out.push(Reading {
            label: "Weight",
            value: format!("{:.1} kg", v / 1000.0),
            at: at("weight"),
            mark: None,
        });
    }
    if let Some(v) = max("withings_activity_steps", None) {
        out.push(Reading {
            label: "Steps",
            value: format!("{v:.0}"),
            at: max("withings_activity_day_timestamp_seconds", None),
            mark: None,
        });
    }
    if let Some(v) = max("withings_sleep_asleep_seconds", None) {
        out.push(Reading {
            label: "Sleep",
            value: format!(
                "{} h {:02} min",
                (v / 3600.0) as i64,
                ((v % 3600.0) / 60.0) as i64
            ),
            at: max("withings_sleep_end_timestamp_seconds", None),
            mark: None,
        });
    }
    out
}

/// "low" below `low`, "high" above `high` (or at it, unless `strict_high`).
fn range(v: f64, low: f64, high: f64, strict_high: bool) -> Option<&'static str> {
    if v < low {
        Some("low")
    } else if v > high || (!strict_high && v >= high) {
        Some("high")
    } else {
        None
    }
}

/// "42 s ago", "3 min ago", "5 h ago", "2 d ago".
pub fn age(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 120.0 {
        format!("{s:.0} s ago")
    } else if s < 7200.0 {
        format!("{:.0} min ago", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.0} h ago", s / 3600.0)
    } else {
        format!("{:.0} d ago", s / 86_400.0)
    }
}

pub fn page(
    accounts: &[AccountSummary],
    directory: bool,
    telemetry_path: &str,
    household: &Household,
) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut html = String::with_capacity(4096 + accounts.len() * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Withings Exporter</title>\n<style>{}</style></head>\n",
        STYLE
    );
    let _ = write!(
        html,
        "<body>\n<main>\n<h1>Withings Exporter</h1>\n<p>Version {}</p>\n",
        env!("CARGO_PKG_VERSION"),
    );
    if household.invites.is_some() && !household.protected {
        html.push_str("<p class=\"note\"><strong>Anyone who can reach this page can see it and invite people:</strong> set basic auth in WITHINGS_WEB_CONFIG_FILE to restrict it.</p>\n");
    }
    let by_name = |name: &str| {
        household
            .readings
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.as_slice())
            .unwrap_or(&[])
    };
    if directory && !accounts.is_empty() {
        html.push_str("<h2>Household</h2>\n");
        for a in accounts {
            household_section(&mut html, a, by_name(&a.name), household, now);
        }
    }
    html.push_str("<h2>Links</h2>\n<ul>\n");
    let _ = writeln!(
        html,
        "<li><a href=\"{}\">Metrics</a> (the exporter's own{})</li>",
        escape(telemetry_path.trim_start_matches('/')),
        if directory {
            ""
        } else {
            ", and the account's series"
        }
    );
    if directory {
        html.push_str("<li><a href=\"sd\">Service discovery</a> (Prometheus <code>http_sd_configs</code>)</li>\n");
    }
    html.push_str(
        "<li><a href=\"-/healthy\">Health</a></li>\n<li><a href=\"-/ready\">Readiness</a></li>\n</ul>\n",
    );
    let _ = writeln!(html, "<h2>Accounts ({})</h2>", accounts.len());
    if accounts.is_empty() {
        html.push_str(
            "<p>No account yet: add one with <code>withings-exporter auth --account NAME</code>",
        );
        if household.invites.is_some() {
            html.push_str(", or invite a person below");
        }
        html.push_str(".</p>\n");
    } else {
        html.push_str("<div class=\"scroll\">\n<table>\n<caption>How each account stands</caption>\n<tr><th scope=\"col\">Account</th><th scope=\"col\">State</th><th scope=\"col\">Last successful fetch</th><th scope=\"col\">Last notification</th><th scope=\"col\">Last error</th><th scope=\"col\">Probe</th></tr>\n");
        for a in accounts {
            let name = escape(&a.name);
            let _ = writeln!(
                html,
                "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"probe?account={name}\">probe</a></td></tr>",
                a.state.as_str(),
                a.last_success
                    .map_or_else(|| "never".into(), |t| age(now - t)),
                a.last_notification
                    .map_or_else(|| "never".into(), |t| age(now - t)),
                a.last_error.as_deref().map(escape).unwrap_or_default(),
            );
        }
        html.push_str("</table>\n</div>\n");
    }
    if directory {
        invites_section(&mut html, household.invites.as_ref());
    }
    html.push_str("</main>\n</body>\n</html>\n");
    html
}

fn household_section(
    html: &mut String,
    a: &AccountSummary,
    readings: &[Reading],
    household: &Household,
    now: f64,
) {
    let name = escape(&a.name);
    let _ = write!(
        html,
        "<section class=\"person\" aria-labelledby=\"person-{name}\">\n<h3 id=\"person-{name}\">{name}</h3>\n"
    );
    if readings.is_empty() {
        html.push_str("<p>No readings yet.</p>\n");
    } else {
        html.push_str("<dl>\n");
        for r in readings {
            let _ = write!(html, "<dt>{}</dt><dd>{}", r.label, escape(&r.value));
            if let Some(mark) = r.mark {
                let _ = write!(
                    html,
                    " <strong class=\"out\">({mark}: outside the alert range)</strong>"
                );
            }
            if let Some(at) = r.at {
                let _ = write!(html, ", {}", age(now - at));
            }
            html.push_str("</dd>\n");
        }
        html.push_str("</dl>\n");
    }
    let _ = writeln!(
        html,
        "<p>Token: {} · Last fetch: {} · Notifications: {}{}</p>",
        match a.state {
            AccountState::TokenInvalid => "needs re-authorizing",
            AccountState::Error => "token file unusable",
            _ => "ok",
        },
        a.last_success
            .map_or_else(|| "never".into(), |t| age(now - t)),
        a.last_notification
            .map_or_else(|| "none yet".into(), |t| format!("last {}", age(now - t))),
        a.last_error
            .as_deref()
            .map(|e| format!(" · Last error: {}", escape(e)))
            .unwrap_or_default(),
    );
    let _ = write!(html, "<p><a href=\"probe?account={name}\">Probe {name}</a>");
    if let Some(grafana) = &household.grafana_url {
        let mut url = grafana.clone();
        url.query_pairs_mut().append_pair("var-account", &a.name);
        let _ = write!(
            html,
            " · <a href=\"{}\">Dashboard of {name}</a>",
            escape(url.as_str())
        );
    }
    html.push_str("</p>\n");
    if let Some(invites) = &household.invites
        && matches!(a.state, AccountState::TokenInvalid | AccountState::Error)
    {
        let _ = writeln!(
            html,
            "<form method=\"post\" action=\"invites\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"account\" value=\"{name}\"><input type=\"hidden\" name=\"valid\" value=\"72h\"><button type=\"submit\">Re-authorize {name}</button></form>",
            csrf = escape(&invites.csrf),
        );
    }
    html.push_str("</section>\n");
}

fn invites_section(html: &mut String, invites: Option<&LandingInvites>) {
    html.push_str("<h2>Add a person</h2>\n");
    let Some(invites) = invites else {
        html.push_str("<p>To invite a person from here, set WITHINGS_PUBLIC_URL (the address browsers reach this exporter at) and register <code>{WITHINGS_PUBLIC_URL}/auth/callback</code> as your Withings application's callback.</p>\n");
        return;
    };
    let csrf = escape(&invites.csrf);
    let _ = write!(
        html,
        "<p>The person gets a link to open on their own phone or computer; they sign in to Withings as themselves.</p>\n<form method=\"post\" action=\"invites\">\n<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n<p><label for=\"invite-account\">Name (lowercase letters, digits, - and _)</label><br><input id=\"invite-account\" name=\"account\" required pattern=\"[a-z0-9_-]{{1,63}}\" autocomplete=\"off\"></p>\n<p><label for=\"invite-valid\">Link valid for</label><br><select id=\"invite-valid\" name=\"valid\"><option value=\"1h\">1 hour</option><option value=\"24h\">1 day</option><option value=\"72h\" selected>3 days</option><option value=\"7d\">7 days</option></select></p>\n<p><button type=\"submit\">Create invite link</button></p>\n</form>\n"
    );
    if let Some(error) = &invites.error {
        let _ = writeln!(html, "<p class=\"out\">{}</p>", escape(error));
    }
    html.push_str("<h3>Open invites</h3>\n");
    if invites.open.is_empty() {
        html.push_str("<p>None.</p>\n");
        return;
    }
    html.push_str("<ul class=\"invites\">\n");
    for i in &invites.open {
        let name = escape(&i.account);
        let _ = writeln!(
            html,
            "<li>{name}{}: expires {} ({}) <form method=\"post\" action=\"invites/revoke\" style=\"display:inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"account\" value=\"{name}\"><button type=\"submit\" class=\"secondary\" aria-label=\"Revoke the invite of {name}\">Revoke</button></form></li>",
            if i.userid.is_some() {
                " (re-authorization)"
            } else {
                ""
            },
            unix_to_text(i.expires),
            crate::invite::remaining(i.expires - invites.now),
        );
    }
    html.push_str("</ul>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_unix() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    #[test]
    fn errors_are_escaped_and_ages_read_well() {
        let page = page(
            &[AccountSummary {
                name: "mom".into(),
                state: AccountState::Failing,
                last_success: None,
                last_error: Some("<script>alert(1)</script>\nnext".into()),
                last_notification: Some(now_unix() - 42.0),
            }],
            true,
            "/metrics",
            &Household::default(),
        );
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;") && page.contains("probe?account=mom"));
        assert!(page.contains("Last notification") && page.contains("<td>42 s ago</td>"));
        assert_eq!(age(42.4), "42 s ago");
        assert_eq!(age(600.0), "10 min ago");
        assert_eq!(age(3.0 * 86_400.0), "3 d ago");
    }

    #[test]
    fn each_person_links_to_their_probe_and_dashboard_and_marks_out_of_range_values() {
        let summary = AccountSummary {
            name: "mom".into(),
            state: AccountState::TokenInvalid,
            last_success: None,
            last_error: None,
            last_notification: None,
        };
        let reading = Reading {
            label: "Pulse",
            value: "120 bpm".into(),
            at: Some(now_unix() - 600.0),
            mark: range(120.0, 50.0, 100.0, true),
        };
        let household = Household {
            invites: Some(LandingInvites {
                open: Vec::new(),
                csrf: "token".into(),
                now: 0,
                error: None,
            }),
            protected: true,
            grafana_url: Some(Url::parse("https://grafana.example.org/d/withings").unwrap()),
            readings: vec![("mom".into(), vec![reading])],
        };
        let page = page(&[summary], true, "/metrics", &household);
        assert!(
            page.contains("href=\"https://grafana.example.org/d/withings?var-account=mom\""),
            "{page}"
        );
        assert!(
            page.contains("Pulse</dt><dd>120 bpm <strong class=\"out\">(high"),
            "{page}"
        );
        assert!(page.contains("10 min ago"), "{page}");
        assert!(page.contains("Re-authorize mom") && page.contains("needs re-authorizing"));
        assert!(
            !page.contains("Anyone who can reach"),
            "basic auth guards it: {page}"
        );
        assert_eq!(range(49.0, 50.0, 100.0, true), Some("low"));
        assert_eq!(range(100.0, 50.0, 100.0, true), None);
        assert_eq!(range(38.0, 35.0, 38.0, false), Some("high"));
    }
}
