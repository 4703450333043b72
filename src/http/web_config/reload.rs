//! The configuration in force, and its reload on SIGHUP or when the file or a file it names
//! changes.

use super::file::{read_bounded, referenced_files};
use super::{ClientAuth, WebConfigError, WebSecurity};

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

/// A reload that took: what it turned off on purpose, for a warning instead of the info line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reloaded {
    pub(super) turned_off: Option<String>,
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
        self.apply().map(|_| ())
    }

    /// [`Self::reload`], saying what the new file turned off on purpose, if anything.
    ///
    /// A reload fails closed: a file that says nothing (empty, only comments, `~`), or that
    /// leaves out `basic_auth_users` or `client_auth_type` while they are in force, is taken
    /// for a mistake or a file caught half-written, and the configuration in force stays.
    /// Only the key written with nothing in it (`basic_auth_users: {}`,
    /// `client_auth_type: NoClientCert`) turns them off.
    pub(super) fn apply(&self) -> Result<Reloaded, WebConfigError> {
        let seen = fingerprint(&self.path).map(|d| d.as_ref().to_vec());
        if let Ok(mut last) = self.seen.lock() {
            *last = seen;
        }
        let security = WebSecurity::load(&self.path)?;
        let refuse = |key: Option<&str>, message: String| WebConfigError {
            file: self.path.clone(),
            key: key.map(str::to_owned),
            message,
        };
        if security.said.nothing {
            return Err(refuse(
                None,
                "is empty (or only comments, or `~`), as a file caught half-written is; the previous configuration stays in force. To turn basic auth off on purpose, write `basic_auth_users: {}`".into(),
            ));
        }
        let previous = self.current();
        if !previous.users.is_empty()
            && security.users.is_empty()
            && !security.said.no_users_on_purpose
        {
            return Err(refuse(
                Some("basic_auth_users"),
                "missing or empty, which would turn basic auth off; the previous users stay in force. To turn basic auth off on purpose, write `basic_auth_users: {}`".into(),
            ));
        }
        if previous.client_auth != ClientAuth::NoClientCert
            && security.client_auth == ClientAuth::NoClientCert
            && !security.said.client_auth_type
        {
            return Err(refuse(
                Some("tls_server_config.client_auth_type"),
                format!(
                    "missing, which would stop asking for client certificates ({:?} is in force); the previous configuration stays. To turn it off on purpose, write `client_auth_type: NoClientCert`",
                    previous.client_auth
                ),
            ));
        }
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
        let mut turned_off = Vec::new();
        if !previous.users.is_empty() && security.users.is_empty() {
            turned_off
                .push("basic auth (basic_auth_users: {}): every route is open without credentials");
        }
        if previous.client_auth != ClientAuth::NoClientCert
            && security.client_auth == ClientAuth::NoClientCert
        {
            turned_off.push("client certificates (client_auth_type: NoClientCert)");
        }
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(security),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(security),
        }
        Ok(Reloaded {
            turned_off: (!turned_off.is_empty()).then(|| turned_off.join("; ")),
        })
    }

    /// Reloads when the file or a file it names has changed since the last look, once per
    /// change: a broken file is reported once, not at every poll. Ok(true) when reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, WebConfigError> {
        self.apply_if_changed().map(|r| r.is_some())
    }

    fn apply_if_changed(&self) -> Result<Option<Reloaded>, WebConfigError> {
        let now = fingerprint(&self.path).map(|d| d.as_ref().to_vec());
        let changed = match self.seen.lock() {
            Ok(last) => *last != now,
            Err(_) => true,
        };
        if !changed {
            return Ok(None);
        }
        self.apply().map(Some)
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
            ReloadTrigger::FileChanged => this.apply_if_changed(),
            ReloadTrigger::Sighup => this.apply().map(Some),
        })
        .await;
        match outcome {
            Ok(Ok(Some(Reloaded {
                turned_off: Some(off),
            }))) => {
                tracing::warn!(
                    %trigger,
                    file = %self.path.display(),
                    "web configuration reloaded, and it turns off {off}"
                );
            }
            Ok(Ok(Some(Reloaded { turned_off: None }))) => {
                let current = self.current();
                tracing::info!(%trigger, users = current.users.len(), "web configuration reloaded");
            }
            Ok(Ok(None)) => {}
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
