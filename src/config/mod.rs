//! Configuration from `WITHINGS_*` environment variables, validated once at start.
//!
//! The ground floor above the tiny helpers: it says what was asked for and imports nothing of
//! the project above `secret`, `text` and `files`. Each component takes its own part:
//! [`ServerConfig`], [`WithingsConfig`], [`AccountsConfig`], [`CollectorsConfig`],
//! [`NotifyConfig`] and [`LogSettings`]. The one list of settings is [`settings::SETTINGS`].
//! Whether a collector or a measure type exists is for the floors that own those tables to
//! say (`collector::check`): here only their syntax is read.

pub mod parse;
pub mod settings;

use crate::secret::Secret;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

pub use parse::parse_callback_url;
pub use settings::{
    Flag, SETTINGS, Setting, edit_distance, flag_help, misspelt_variables, settings_help,
    with_overrides,
};

pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:19100";
pub const DEFAULT_API_URL: &str = "https://wbsapi.withings.net";
pub const DEFAULT_ACCOUNT_URL: &str = "https://account.withings.com";
/// Where `withings-exporter auth` listens for Withings' redirect unless told otherwise; it
/// must equal the callback URL registered for the application.
pub const DEFAULT_REDIRECT_URI: &str = "http://127.0.0.1:19101/callback";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The 2,062-group history of a real account is about 1 MiB in one answer; 32 MiB leaves
/// room for far larger accounts and only stops a broken or hostile upstream.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
/// Below this, even the smallest real answer (an error envelope) could be refused.
pub const MIN_RESPONSE_BYTES: usize = 1024;
pub const DEFAULT_TELEMETRY_PATH: &str = "/metrics";
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// The default of `WITHINGS_WEB_MAX_CONNECTIONS`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Above this, a connection cap means nothing: a process gets no more descriptors.
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;
/// Withings' limit for one application.
pub const WITHINGS_LIMIT_PER_MINUTE: u32 = 120;
/// The default leaves headroom under Withings' limit for `auth` runs and other tools using the
/// same application.
pub const DEFAULT_PER_MINUTE: u32 = 100;
/// The default of `WITHINGS_NOTIFY_MIN_INTERVAL_SECONDS`.
pub const DEFAULT_NOTIFY_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// The default of `WITHINGS_SAFETY_POLL_SECONDS`.
pub const DEFAULT_SAFETY_POLL: Duration = Duration::from_secs(3600);
/// The secret appended to the callback URL: 18 random bytes, 144 bits, 24 URL-safe base64
/// characters. Here because the URL's length is checked with it.
pub const CALLBACK_SECRET_BYTES: usize = 18;
/// Withings refuses longer callback URLs.
pub const MAX_CALLBACK_URL_LEN: usize = 255;

/// The filter variable every Rust program reads; `WITHINGS_LOG_LEVEL` wins over it.
pub const RUST_LOG: &str = "RUST_LOG";

/// Why the environment could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvironmentError {
    /// The value is never shown: it may be a secret.
    #[error(
        "{0}: the value is not valid UTF-8 (not shown, it may be a secret); set it again as plain text"
    )]
    NotUtf8(String),
}

/// The `WITHINGS_*` variables and `RUST_LOG`, as text. Every other variable is ignored
/// whatever it holds, so that a stray byte in someone else's variable cannot stop the
/// exporter; a non-UTF-8 one of ours is named, never printed.
pub fn environment(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<(String, String)>, EnvironmentError> {
    let mut ours = Vec::new();
    for (name, value) in vars {
        let name_bytes = name.as_encoded_bytes();
        if !name_bytes.starts_with(b"WITHINGS_") && name_bytes != RUST_LOG.as_bytes() {
            continue;
        }
        let Some(name) = name.to_str().map(str::to_owned) else {
            return Err(EnvironmentError::NotUtf8(
                name.to_string_lossy().into_owned(),
            ));
        };
        let Some(value) = value.to_str().map(str::to_owned) else {
            return Err(EnvironmentError::NotUtf8(name));
        };
        ours.push((name, value));
    }
    Ok(ours)
}

/// A configuration value that cannot be used, named by its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

pub(crate) fn invalid(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        message: message.into(),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `key=value` pairs, as exporter-toolkit's default.
    #[default]
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// The logging settings alone: read before anything else, so that what follows is logged
/// as asked. [`Config::from_vars`] checks them the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// A filter in `RUST_LOG`'s syntax, already checked.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: DEFAULT_LOG_LEVEL.to_owned(),
            format: LogFormat::default(),
        }
    }
}

impl LogSettings {
    pub fn from_vars(vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut config = Config::default();
        settings::apply(&mut config, vars, settings::Part::Log)?;
        Ok(config.log)
    }
}

/// `http`'s part: where and how to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen_address: SocketAddr,
    /// `WITHINGS_WEB_CONFIG_FILE`: TLS and basic auth, read by the web configuration at
    /// start, where a bad file can be named with its key.
    pub web_config_file: Option<PathBuf>,
    /// `WITHINGS_TELEMETRY_PATH` / `--web.telemetry-path`: where the metrics are served.
    pub telemetry_path: String,
    /// `WITHINGS_WEB_MAX_CONNECTIONS`: HTTP connections open at once.
    pub max_connections: usize,
    /// `WITHINGS_PUBLIC_URL`: the exporter's address as a browser reaches it, for invite
    /// links and Withings' redirect back (`{public_url}/auth/callback`), without a trailing
    /// slash.
    pub public_url: Option<Url>,
    /// `WITHINGS_GRAFANA_URL`: the Grafana dashboard the landing page links to.
    pub grafana_url: Option<Url>,
}

/// The Withings application and how to talk to its API: the client's and `auth`'s part.
#[derive(Debug, Clone)]
pub struct WithingsConfig {
    pub api_url: Url,
    pub account_url: Url,
    pub redirect_uri: Url,
    /// Limit of each request to Withings; a scrape waits at most this long for one.
    pub upstream_timeout: Duration,
    /// Time allowed to open a connection to Withings.
    pub connect_timeout: Duration,
    /// Withings answers larger than this are refused.
    pub max_response_bytes: usize,
    /// `WITHINGS_REQUESTS_PER_MINUTE`: every request to Withings, all accounts together.
    pub requests_per_minute: u32,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
}

/// The application's credentials, for refreshing tokens.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Secret,
}

impl WithingsConfig {
    /// The application's credentials: both or neither must be set.
    pub fn client_credentials(&self) -> Result<Option<ClientCredentials>, ConfigError> {
        match (&self.client_id, &self.client_secret) {
            (Some(client_id), Some(client_secret)) => Ok(Some(ClientCredentials {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(invalid(
                "WITHINGS_CLIENT_SECRET",
                "not set while WITHINGS_CLIENT_ID is; set it (or WITHINGS_CLIENT_SECRET_FILE) to your Withings application's client secret",
            )),
            (None, Some(_)) => Err(invalid(
                "WITHINGS_CLIENT_ID",
                "not set while a client secret is; set it to your Withings application's client id",
            )),
        }
    }
}

/// Where the accounts and their tokens come from, and how often each is fetched.
#[derive(Debug, Clone, Default)]
pub struct AccountsConfig {
    /// `WITHINGS_TOKEN_DIR`: one account per `NAME.json` in it (issue 10).
    pub token_dir: Option<PathBuf>,
    /// The one account's token file (issue 3).
    pub token_file: Option<PathBuf>,
    pub access_token: Option<Secret>,
    pub refresh_token: Option<Secret>,
    /// Scrapes sooner than this after the last fetch are served its result; zero fetches
    /// on every scrape.
    pub min_fetch_interval: Duration,
}

/// The request ledger's file name: every process working on one token directory (or beside
/// one token file) counts its requests to Withings and Withings' 601 pause there, so that
/// together they keep to one budget (issue 22).
pub const BUDGET_LEDGER_FILE: &str = ".budget";

impl AccountsConfig {
    /// Where the processes sharing these tokens keep their common request ledger: in
    /// `WITHINGS_TOKEN_DIR`, or beside `WITHINGS_TOKEN_FILE`; none for tokens given in
    /// variables, which no other process can be sharing by their file.
    pub fn budget_ledger(&self) -> Option<PathBuf> {
        self.beside_tokens(BUDGET_LEDGER_FILE)
    }

    /// The file `name` kept with the tokens: in `WITHINGS_TOKEN_DIR`, or beside
    /// `WITHINGS_TOKEN_FILE`; none for tokens given in variables.
    pub fn beside_tokens(&self, name: &str) -> Option<PathBuf> {
        if let Some(dir) = &self.token_dir {
            return Some(dir.join(name));
        }
        let file = self.token_file.as_ref()?;
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        Some(dir.join(name))
    }

    /// The access token, or the error an operator needs when there is none.
    pub fn require_access_token(&self) -> Result<&Secret, ConfigError> {
        self.access_token.as_ref().ok_or_else(|| {
            invalid(
                "WITHINGS_ACCESS_TOKEN",
                "not set; set it to a Withings access token (or run `withings-exporter demo` to try the exporter without one)",
            )
        })
    }
}

/// What to fetch, as written: the collectors' names and the measure types are checked
/// against this version's tables by `collector::check`.
#[derive(Debug, Clone)]
pub struct CollectorsConfig {
    /// `WITHINGS_COLLECTORS`, each name trimmed, as given; `None`: the default (measures).
    pub names: Option<Vec<String>>,
    /// `WITHINGS_MEASTYPES`, each once, in the order given; `None`: every type in the
    /// measure table.
    pub meastypes: Option<Vec<i64>>,
    pub include_ambiguous: bool,
}

impl Default for CollectorsConfig {
    fn default() -> Self {
        Self {
            names: None,
            meastypes: None,
            include_ambiguous: true,
        }
    }
}

/// Withings notifications (issue 12).
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// `WITHINGS_CALLBACK_URL`: where Withings notifies us, before the secret.
    pub callback_url: Option<Url>,
    pub min_interval: Duration,
    pub safety_poll: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            callback_url: None,
            min_interval: DEFAULT_NOTIFY_MIN_INTERVAL,
            safety_poll: DEFAULT_SAFETY_POLL,
        }
    }
}

/// Prometheus remote write (issue 19): where to, and how (a file in the shape of one
/// Prometheus `remote_write` entry, read by the remote-write floor).
#[derive(Debug, Clone)]
pub struct RemoteWriteConfig {
    /// `WITHINGS_REMOTE_WRITE_URL`.
    pub url: Option<Url>,
    /// `WITHINGS_REMOTE_WRITE_CONFIG_FILE`.
    pub config_file: Option<PathBuf>,
    /// `WITHINGS_REMOTE_WRITE_INSTANCE`: the `instance` label Prometheus gives the scraped
    /// series, which the running exporter's written series must carry to join them.
    pub instance: Option<String>,
    /// `WITHINGS_REMOTE_WRITE_JOB`: likewise the `job` label (the shipped configuration's
    /// `withings` by default).
    pub job: String,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        Self {
            url: None,
            config_file: None,
            instance: None,
            job: DEFAULT_REMOTE_WRITE_JOB.to_owned(),
        }
    }
}

/// The job of the accounts in the shipped scrape configuration (prometheus/prometheus.yml).
pub const DEFAULT_REMOTE_WRITE_JOB: &str = "withings";

/// Everything the exporter needs to run, already checked, by the component that takes it.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub withings: WithingsConfig,
    pub accounts: AccountsConfig,
    pub collectors: CollectorsConfig,
    pub notify: NotifyConfig,
    pub remote_write: RemoteWriteConfig,
    /// `WITHINGS_LOG_LEVEL` (or `RUST_LOG`) and `WITHINGS_LOG_FORMAT`.
    pub log: LogSettings,
}

impl Default for Config {
    /// What an empty environment asks for.
    fn default() -> Self {
        let url = |text: &str| Url::parse(text).unwrap_or_else(|_| unreachable!("{text}"));
        Self {
            server: ServerConfig {
                listen_address: SocketAddr::from(([0, 0, 0, 0], 19100)),
                web_config_file: None,
                telemetry_path: DEFAULT_TELEMETRY_PATH.to_owned(),
                max_connections: DEFAULT_MAX_CONNECTIONS,
                public_url: None,
                grafana_url: None,
            },
            withings: WithingsConfig {
                api_url: url(DEFAULT_API_URL),
                account_url: url(DEFAULT_ACCOUNT_URL),
                redirect_uri: url(DEFAULT_REDIRECT_URI),
                upstream_timeout: DEFAULT_TIMEOUT,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
                requests_per_minute: DEFAULT_PER_MINUTE,
                client_id: None,
                client_secret: None,
            },
            accounts: AccountsConfig::default(),
            collectors: CollectorsConfig::default(),
            notify: NotifyConfig::default(),
            remote_write: RemoteWriteConfig::default(),
            log: LogSettings::default(),
        }
    }
}

impl Config {
    /// Reads the process environment (only `WITHINGS_*` and `RUST_LOG`).
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars =
            environment(std::env::vars_os()).map_err(|e| invalid("WITHINGS_*", e.to_string()))?;
        Self::from_vars(vars)
    }

    /// Reads the given variables; tests use this instead of touching the environment.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut config = Self::default();
        settings::apply(&mut config, &vars, settings::Part::All)?;
        parse::check_route_overlap(
            &config.server.telemetry_path,
            config.notify.callback_url.as_ref(),
        )?;
        Ok(config)
    }

    /// The access token, or the error an operator needs when there is none.
    pub fn require_access_token(&self) -> Result<&Secret, ConfigError> {
        self.accounts.require_access_token()
    }

    /// The application's credentials: both or neither must be set.
    pub fn client_credentials(&self) -> Result<Option<ClientCredentials>, ConfigError> {
        self.withings.client_credentials()
    }

    /// `meastypes` as written, comma-separated; the measure table's default when unset.
    fn meastypes_shown(&self) -> String {
        match &self.collectors.meastypes {
            Some(types) => types
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(","),
            None => String::new(),
        }
    }

    /// One line for the start-up log. Secrets appear only as set/unset. `meastypes` is the
    /// checked list the caller passes: the measure table is not this floor's.
    pub fn summary_with(&self, meastypes: &str) -> String {
        let (server, withings, accounts) = (&self.server, &self.withings, &self.accounts);
        let set = |is: bool| if is { "<set>" } else { "<unset>" };
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or_else(|| "<unset>".into(), |p| p.display().to_string())
        };
        format!(
            "listen_address={} api_url={} meastypes={} include_ambiguous={} timeout_seconds={} connect_timeout_seconds={} max_response_bytes={} min_fetch_interval_seconds={} access_token={} web_config_file={}",
            server.listen_address,
            withings.api_url,
            meastypes,
            self.collectors.include_ambiguous,
            withings.upstream_timeout.as_secs_f64(),
            withings.connect_timeout.as_secs_f64(),
            withings.max_response_bytes,
            accounts.min_fetch_interval.as_secs_f64(),
            set(accounts.access_token.is_some()),
            path(&server.web_config_file),
        ) + &format!(
            " token_dir={} requests_per_minute={} token_file={} refresh_token={} client_id={} client_secret={}",
            path(&accounts.token_dir),
            withings.requests_per_minute,
            path(&accounts.token_file),
            set(accounts.refresh_token.is_some()),
            withings.client_id.as_deref().unwrap_or("<unset>"),
            set(withings.client_secret.is_some()),
        )
    }

    /// [`Self::summary_with`] the meastypes as written (empty when unset).
    pub fn summary(&self) -> String {
        self.summary_with(&self.meastypes_shown())
    }
}

#[cfg(test)]
mod tests;
