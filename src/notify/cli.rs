//! `withings-exporter notify list|subscribe|revoke [--account NAME]`: one line per
//! subscription, the secret never printed.

use super::Notifier;
use crate::app::App;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    List,
    Subscribe,
    Revoke,
}

/// A callback URL as the operator may see it: ours with `<redacted>`, another one by its
/// host only (its path may hold another application's secret).
fn shown(n: &Notifier, url: &str) -> String {
    if n.callback().is_ours(url) {
        return format!("{} (this exporter)", n.callback().redacted_url());
    }
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
    {
        Some(host) => format!("another callback at {host}"),
        None => "an unreadable callback".into(),
    }
}

/// Runs `action` for `account` (or every account) and returns the lines to print; an
/// account that fails gives one line saying why, and the others go on.
pub async fn run(
    app: &Arc<App>,
    action: Action,
    account: Option<&str>,
) -> Result<Vec<String>, String> {
    let Some(n) = app.notifier() else {
        return Err("WITHINGS_CALLBACK_URL is not set: notifications are off".into());
    };
    let accounts = match account {
        Some(name) => vec![
            app.account(name)
                .ok_or_else(|| format!("no account {name:?}"))?,
        ],
        None => app.accounts(),
    };
    let client = app.client();
    let ours = n.callback().full_url();
    let mut lines = Vec::new();
    for account in accounts {
        let name = account.name().to_owned();
        let listed = super::api::list(client, account.tokens())
            .await
            .map_err(|e| e.to_string());
        let listed = match listed {
            Ok(v) => v,
            Err(e) => {
                lines.push(format!(
                    "account={name} error: {}",
                    crate::text::one_line(&e)
                ));
                continue;
            }
        };
        match action {
            Action::List => {
                if listed.is_empty() {
                    lines.push(format!("account={name} no subscription"));
                }
                for s in &listed {
                    lines.push(format!(
                        "account={name} appli={} callback={} comment={:?}",
                        s.appli,
                        shown(n, &s.callbackurl),
                        crate::text::one_line(s.comment.as_deref().unwrap_or(""))
                    ));
                }
            }
            Action::Subscribe => match super::subscribe::check_account(n, app, &account).await {
                super::subscribe::Checked::InPlace { subscribed_now } => {
                    for appli in &n.settings().applis {
                        let what = if subscribed_now.contains(appli) { "subscribed" } else { "already subscribed" };
                        lines.push(format!("account={name} appli={appli} {what} at {}", n.callback().redacted_url()));
                    }
                }
                super::subscribe::Checked::HeldBack => lines.push(format!("account={name} not sent: the request budget is spent or Withings asked to wait (601); try again")),
                super::subscribe::Checked::Failed(e) => lines.push(format!("account={name} error: {}", crate::text::one_line(&e))),
            },
            Action::Revoke => {
                for s in listed.iter().filter(|s| n.callback().is_ours(&s.callbackurl)) {
                    match super::api::revoke(client, account.tokens(), &ours, s.appli).await {
                        Ok(()) => lines.push(format!("account={name} appli={} revoked", s.appli)),
                        Err(e) => lines.push(format!("account={name} appli={} error: {}", s.appli, crate::text::one_line(&e.to_string()))),
                    }
                }
            }
        }
    }
    Ok(lines)
}
