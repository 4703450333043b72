//! The landing page: what the exporter serves and how each account stands. No readings and
//! no secrets: anyone who can reach the page may see it.

use crate::app::AccountSummary;
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Escapes text for HTML; account names are safe by their rule, error text is not.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
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

pub fn page(accounts: &[AccountSummary], directory: bool, telemetry_path: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut html = String::with_capacity(2048 + accounts.len() * 256);
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Withings Exporter</title>\n");
    html.push_str("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}</style></head>\n");
    let _ = write!(
        html,
        "<body>\n<h1>Withings Exporter</h1>\n<p>Version {}</p>\n<ul>\n<li><a href=\"{}\">Metrics</a> (the exporter's own{})</li>\n",
        env!("CARGO_PKG_VERSION"),
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
        html.push_str("<p>No account yet: add one with <code>withings-exporter auth --account NAME</code>.</p>\n");
    } else {
        html.push_str("<table>\n<tr><th>Account</th><th>State</th><th>Last successful fetch</th><th>Last notification</th><th>Last error</th><th>Probe</th></tr>\n");
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
        html.push_str("</table>\n");
    }
    html.push_str("</body>\n</html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AccountState;

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
        );
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;") && page.contains("probe?account=mom"));
        assert!(page.contains("Last notification") && page.contains("<td>42 s ago</td>"));
        assert_eq!(age(42.4), "42 s ago");
        assert_eq!(age(600.0), "10 min ago");
        assert_eq!(age(3.0 * 86_400.0), "3 d ago");
    }
}
