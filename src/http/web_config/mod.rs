//! `WITHINGS_WEB_CONFIG_FILE`: TLS and basic authentication for the HTTP server, in the YAML
//! format of Prometheus' exporter-toolkit, re-read while running.
//!
//! The file is read strictly, as exporter-toolkit does (`yaml.UnmarshalStrict`): a key it does
//! not know is an error, so a typo cannot silently leave `/metrics` open. Keys that
//! exporter-toolkit knows but this exporter does not implement are refused by name rather than
//! ignored, for the same reason.

mod basic_auth;
mod file;
mod reload;
#[cfg(test)]
mod tests;
mod tls;

pub use basic_auth::{
    AuthOutcome, BasicAuth, CHALLENGE, CONCURRENT_CHECKS, CheckStats, FAILURE_WINDOW,
    HIGHEST_SENSIBLE_COST, MAX_FAILURES_PER_ADDRESS, MAX_PASSWORD_BYTES, MAX_PENDING_CHECKS,
    MAX_PENDING_PER_ADDRESS,
};
pub use file::tls_configured;
pub use reload::{DEFAULT_POLL_INTERVAL, ReloadTrigger, WebConfig};
pub use tls::ClientAuth;

use file::{RawFile, parse, read};
use tls::build_tls;

use rustls::server::ServerConfig;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A web configuration file that cannot be used: the file, the key (when one is at fault) and
/// what to do about it, on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct WebConfigError {
    pub file: PathBuf,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for WebConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(key) = &self.key {
            write!(f, "{}: ", crate::text::one_line(key))?;
        }
        // Parser messages can span lines; the operator gets one.
        f.write_str(&crate::text::one_line(&self.message.replace('\n', " ")))
    }
}

/// The security the server applies, ready to use: built once per (re)load.
pub struct WebSecurity {
    /// Present when the server speaks HTTPS only.
    pub tls: Option<Arc<ServerConfig>>,
    pub users: BasicAuth,
    /// What the file's TLS section asked for; kept for the start-up log.
    pub client_auth: ClientAuth,
    /// What the file said, for a reload to tell a file that turns something off on purpose
    /// from one that is empty or half-written.
    said: Said,
}

/// What a file says about turning things off, beyond the configuration it builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Said {
    /// No key at all: an empty or comment-only file, `~`, `---`.
    nothing: bool,
    /// `basic_auth_users: {}`: basic auth off, written on purpose.
    no_users_on_purpose: bool,
    /// `client_auth_type` written in the TLS section (any value).
    client_auth_type: bool,
}

impl WebSecurity {
    /// One line for the log when a user's bcrypt cost is above [`HIGHEST_SENSIBLE_COST`];
    /// logged at every load of the file, not at every check.
    pub fn cost_warning(&self) -> Option<String> {
        self.users.cost_warning()
    }
}

impl fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSecurity")
            .field("tls", &self.tls.is_some())
            .field("client_auth", &self.client_auth)
            .field("users", &self.users)
            .finish()
    }
}

impl WebSecurity {
    /// No TLS, no users: what the server does without a web configuration file.
    pub fn open() -> Self {
        Self {
            tls: None,
            users: BasicAuth::none(),
            client_auth: ClientAuth::NoClientCert,
            said: Said::default(),
        }
    }

    /// Reads and checks the file and everything it names.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text = read(path, path, None)?;
        Self::from_bytes(path, &text)
    }

    /// Checks the content `text` of the file at `path` and everything it names; `path` is
    /// where relative file names are resolved from and what error messages name.
    pub fn from_bytes(path: &Path, text: &[u8]) -> Result<Self, WebConfigError> {
        let raw = parse(path, text)?;
        Self::build(path, raw)
    }

    fn build(path: &Path, raw: RawFile) -> Result<Self, WebConfigError> {
        let err = |key: &str, message: String| WebConfigError {
            file: path.to_owned(),
            key: Some(key.to_owned()),
            message,
        };
        if raw.http_server_config.is_some() {
            return Err(err(
                "http_server_config",
                "not supported by withings-exporter (it serves HTTP/1.1 and sets no extra headers); remove it".into(),
            ));
        }
        if raw.rate_limit.is_some() {
            return Err(err(
                "rate_limit",
                "not supported by withings-exporter; remove it (Prometheus scrapes at a fixed interval anyway)".into(),
            ));
        }
        let said = Said {
            nothing: raw.basic_auth_users.is_none() && raw.tls_server_config.is_none(),
            no_users_on_purpose: raw.basic_auth_users.as_ref().is_some_and(Vec::is_empty),
            client_auth_type: raw
                .tls_server_config
                .as_ref()
                .is_some_and(|tls| tls.client_auth_type.is_some()),
        };
        let users = BasicAuth::new(path, raw.basic_auth_users.unwrap_or_default())?;
        let (tls, client_auth) = match raw.tls_server_config {
            Some(tls) if !tls.is_empty() => build_tls(path, &tls)?,
            _ => (None, ClientAuth::NoClientCert),
        };
        Ok(Self {
            tls,
            users,
            client_auth,
            said,
        })
    }
}
