//! SIGHUP: reload what can be reloaded, with or without a web configuration.
//!
//! Without a handler, SIGHUP's default action ends the process, and `systemctl reload` (the
//! unit's `ExecReload`) sends SIGHUP: the handler must be installed whatever is configured.

use crate::http::web_config::{ReloadTrigger, WebConfig};
use std::sync::Arc;

/// Something else to reload on SIGHUP (the account directory, say); it logs its own outcome.
pub type ReloadHook = Box<dyn Fn() + Send + Sync>;

/// Installs the SIGHUP handler now (call it within the runtime, before the server announces
/// itself) and spawns the task that reloads `web`, then runs each hook, on every SIGHUP.
/// With nothing to reload, each SIGHUP is logged and changes nothing.
pub fn spawn_reload_on_hangup(web: Option<Arc<WebConfig>>, hooks: Vec<ReloadHook>) {
    #[cfg(unix)]
    {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => signal,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; a SIGHUP would end the process");
                return;
            }
        };
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                if web.is_none() && hooks.is_empty() {
                    tracing::info!(
                        trigger = %ReloadTrigger::Sighup,
                        "nothing to reload (no WITHINGS_WEB_CONFIG_FILE); carrying on"
                    );
                }
                if let Some(web) = &web {
                    Arc::clone(web).reload_logged(ReloadTrigger::Sighup).await;
                }
                for hook in &hooks {
                    hook();
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (web, hooks);
}
