//! The configuration in force, and its reload on SIGHUP or when the file or a file it names
//! changes.

use super::file::{read_bounded, referenced_files};
use super::{WebConfigError, WebSecurity};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How often the watcher looks for a changed file when no SIGHUP comes.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// A digest of the file and of every file it names, to notice any of them changing. Read
/// with the same guards as a load: a FIFO or a huge file never blocks the watcher.
fn fingerprint(path: &Path) -> Option<ring::digest::Digest> {
    let text = read_bounded(path).ok()?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&(text.len() as u64).to_be_bytes());
    ctx.update(&text);
    for file in referenced_files(path, &text) {
        match read_bounded(&file) {
            Ok(bytes) => {
                ctx.update(&(bytes.len() as u64).to_be_bytes());
                ctx.update(&bytes);
            }
            // A missing file is a state too: its return must count as a change.
            Err(_) => ctx.update(&u64::MAX.to_be_bytes()),
        }
    }
    Some(ctx.finish())
}

/// The web configuration in force, re-loadable while the server runs.
///
/// Whether the server speaks TLS is fixed at start (a listener is HTTP or HTTPS); a reload
/// that would switch it is refused. Within TLS, a reload applies new certificates, keys,
/// client CAs and settings to the connections accepted after it, as exporter-toolkit does by
/// reading the configuration at each handshake.
pub struct WebConfig {
    path: PathBuf,
    tls: bool,
    current: RwLock<Arc<WebSecurity>>,
    seen: Mutex<Option<Vec<u8>>>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("path", &self.path)
            .field("current", &self.current())
            .finish()
    }
}

/// What started a reload, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    Sighup,
    FileChanged,
}

impl fmt::Display for ReloadTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sighup => "SIGHUP",
            Self::FileChanged => "file changed",
        })
    }
}

impl WebConfig {
    /// Loads the file; an error here should stop the program.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, WebConfigError> {
        let path = path.into();
        let seen = fingerprint(&path).map(|d| d.as_ref().to_vec());
        let security = WebSecurity::load(&path)?;
        warn_about_costs(&path, &security);
        Ok(Self {
            tls: security.tls.is_some(),
            path,
            current: RwLock::new(Arc::new(security)),
            seen: Mutex::new(seen),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the server speaks HTTPS, for the life of the process.
    pub fn tls_enabled(&self) -> bool {
        self.tls
    }

    /// The configuration to apply to the next connection or request.
    pub fn current(&self) -> Arc<WebSecurity> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the file now. On error the configuration in force stays as it was.
    /// Blocking: file reads, and a bcrypt hash for the unknown-user check.
    pub fn reload(&self) -> Result<(), WebConfigError> {
        let seen = fingerprint(&self.path).map(|d| d.as_ref().to_vec());
        if let Ok(mut last) = self.seen.lock() {
            *last = seen;
        }
        let security = WebSecurity::load(&self.path)?;
        if security.tls.is_some() != self.tls {
            return Err(WebConfigError {
                file: self.path.clone(),
                key: Some("tls_server_config".into()),
                message: format!(
                    "a reload cannot switch TLS {} (the listener is {} from the start); restart withings-exporter to apply this change",
                    if self.tls { "off" } else { "on" },
                    if self.tls { "HTTPS" } else { "HTTP" },
                ),
            });
        }
        warn_about_costs(&self.path, &security);
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(security),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(security),
        }
        Ok(())
    }

    /// Reloads when the file or a file it names has changed since the last look, once per
    /// change: a broken file is reported once, not at every poll. Ok(true) when reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, WebConfigError> {
        let now = fingerprint(&self.path).map(|d| d.as_ref().to_vec());
        let changed = match self.seen.lock() {
            Ok(last) => *last != now,
            Err(_) => true,
        };
        if !changed {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// The polling task, to spawn: reloads when a change is seen at a poll, logging each
    /// outcome on one line, for ever. SIGHUP is [`crate::http::signals`]' business, so that it
    /// is handled with or without a web configuration.
    pub async fn watch(self: Arc<Self>, poll: Duration) {
        let mut ticks = tokio::time::interval(poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            Arc::clone(&self)
                .reload_logged(ReloadTrigger::FileChanged)
                .await;
        }
    }

    /// Reloads off the async workers (file reads and a bcrypt hash) and logs the outcome on
    /// one line: on SIGHUP always, on a poll only when something changed.
    pub async fn reload_logged(self: Arc<Self>, trigger: ReloadTrigger) {
        let this = Arc::clone(&self);
        let outcome = tokio::task::spawn_blocking(move || match trigger {
            ReloadTrigger::FileChanged => this.reload_if_changed(),
            ReloadTrigger::Sighup => this.reload().map(|()| true),
        })
        .await;
        match outcome {
            Ok(Ok(true)) => {
                let current = self.current();
                tracing::info!(%trigger, users = current.users.len(), "web configuration reloaded");
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(
                %trigger,
                "web configuration not reloaded, keeping the previous one: {e}"
            ),
            Err(e) => tracing::error!(%trigger, error = %e, "web configuration reload failed"),
        }
    }
}

/// One warning line per load of the file, when a cost makes logins slow.
fn warn_about_costs(path: &Path, security: &WebSecurity) {
    if let Some(warning) = security.cost_warning() {
        tracing::warn!(file = %path.display(), "{warning}");
    }
}
