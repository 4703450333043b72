//! Configuration from `WITHINGS_*` environment variables, validated once at start.

use crate::collector::measures::table::{DEFAULT_MEASTYPES, MEASURES, index_of};
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:19100";
pub const DEFAULT_API_URL: &str = "https://wbsapi.withings.net";
pub const DEFAULT_ACCOUNT_URL: &str = "https://account.withings.com";
/// Where `withings-exporter auth` listens for Withings' redirect unless told otherwise; it
/// must equal the callback URL registered for the application.
pub const DEFAULT_REDIRECT_URI: &str = "http://127.0.0.1:19101/callback";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The 2,062-group history of a real account is about 1 MiB in one answer; 32 MiB leaves
/// room for far larger accounts and only stops a broken or hostile upstream.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
/// Below this, even the smallest real answer (an error envelope) could be refused.
const MIN_RESPONSE_BYTES: usize = 1024;
pub const DEFAULT_TELEMETRY_PATH: &str = "/metrics";
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// One setting: its variable, the command-line flag that overrides it (exporter-toolkit's
/// name), its default and what it does. The one list that `--help` shows and that a
/// misspelt variable is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub variable: &'static str,
    pub flag: Option<&'static str>,
    pub default: &'static str,
    pub meaning: &'static str,
}

const fn setting(
    variable: &'static str,
    flag: Option<&'static str>,
    default: &'static str,
    meaning: &'static str,
) -> Setting {
    Setting {
        variable,
        flag,
        default,
        meaning,
    }
}

pub const SETTINGS: &[Setting] = &[
    setting(
        "WITHINGS_LISTEN_ADDRESS",
        Some("web.listen-address"),
        DEFAULT_LISTEN_ADDRESS,
        "where to serve; :PORT means all interfaces, a host name is resolved at start",
    ),
    setting(
        "WITHINGS_WEB_CONFIG_FILE",
        Some("web.config.file"),
        "",
        "exporter-toolkit web configuration: TLS and basic auth",
    ),
    setting(
        "WITHINGS_WEB_MAX_CONNECTIONS",
        None,
        "512",
        "HTTP connections open at once; at the cap the idlest is closed to make room",
    ),
    setting(
        "WITHINGS_TELEMETRY_PATH",
        Some("web.telemetry-path"),
        DEFAULT_TELEMETRY_PATH,
        "path under which the metrics are served",
    ),
    setting(
        "WITHINGS_LOG_LEVEL",
        Some("log.level"),
        DEFAULT_LOG_LEVEL,
        "log filter: error, warn, info, debug, trace, or target=level directives (RUST_LOG is read when this is unset)",
    ),
    setting(
        "WITHINGS_LOG_FORMAT",
        Some("log.format"),
        "logfmt",
        "log format: logfmt or json (one object per line)",
    ),
    setting(
        "WITHINGS_TOKEN_DIR",
        None,
        "",
        "a directory of accounts: each NAME.json in it is the account NAME, served on /probe?account=NAME and listed on /sd",
    ),
    setting(
        "WITHINGS_REQUESTS_PER_MINUTE",
        None,
        "100",
        "requests to Withings in any 60 seconds, all accounts and endpoints together (Withings allows 120 per application)",
    ),
    setting(
        "WITHINGS_COLLECTORS",
        None,
        "measures",
        "kinds of data to fetch, comma-separated: measures, activity, sleep, devices (each costs one request per account per fetch)",
    ),
    setting(
        "WITHINGS_ACCESS_TOKEN",
        None,
        "",
        "a fixed access token, used when no client credentials are set (expires after 3 hours)",
    ),
    setting(
        "WITHINGS_CLIENT_ID",
        None,
        "",
        "your Withings application's client id; with a client secret, tokens are refreshed",
    ),
    setting(
        "WITHINGS_CLIENT_SECRET",
        None,
        "",
        "the application's client secret",
    ),
    setting(
        "WITHINGS_CLIENT_SECRET_FILE",
        None,
        "",
        "a file holding the client secret instead",
    ),
    setting(
        "WITHINGS_TOKEN_FILE",
        None,
        "",
        "where the tokens are kept (on a persistent volume)",
    ),
    setting(
        "WITHINGS_REFRESH_TOKEN",
        None,
        "",
        "a refresh token to start from when the token file does not exist yet",
    ),
    setting(
        "WITHINGS_REDIRECT_URI",
        None,
        DEFAULT_REDIRECT_URI,
        "for auth: the callback URL registered for the application",
    ),
    setting(
        "WITHINGS_ACCOUNT_URL",
        None,
        DEFAULT_ACCOUNT_URL,
        "base of the authorization page",
    ),
    setting(
        "WITHINGS_API_URL",
        None,
        DEFAULT_API_URL,
        "the Withings API",
    ),
    setting(
        "WITHINGS_MEASTYPES",
        None,
        "every type in the measure table",
        "Withings measure types to fetch",
    ),
    setting(
        "WITHINGS_INCLUDE_AMBIGUOUS",
        None,
        "true",
        "whether readings marked ambiguous (attrib 1) count",
    ),
    setting(
        "WITHINGS_TIMEOUT_SECONDS",
        None,
        "20",
        "limit for each request to Withings",
    ),
    setting(
        "WITHINGS_CONNECT_TIMEOUT_SECONDS",
        None,
        "5",
        "limit for opening a connection to Withings",
    ),
    setting(
        "WITHINGS_MAX_RESPONSE_BYTES",
        None,
        "33554432",
        "Withings answers larger than this are refused",
    ),
    setting(
        "WITHINGS_MIN_FETCH_INTERVAL_SECONDS",
        None,
        "0",
        "scrapes sooner than this after the last fetch get its result",
    ),
    setting(
        "WITHINGS_CALLBACK_URL",
        None,
        "",
        "public HTTPS URL at which Withings notifies this exporter (push); a secret path segment is appended",
    ),
    setting(
        "WITHINGS_NOTIFY_MIN_INTERVAL_SECONDS",
        None,
        "30",
        "at most one notification-driven fetch per account in this interval",
    ),
    setting(
        "WITHINGS_SAFETY_POLL_SECONDS",
        None,
        "3600",
        "with notifications, a subscribed account is still fetched this often",
    ),
];

/// Variables of settings being added on other branches: known, so that setting one is not
/// reported as a misspelling. Each moves into [`SETTINGS`] when the code that reads it lands.
const RESERVED_VARIABLES: &[&str] = &[];

/// The filter variable every Rust program reads; `WITHINGS_LOG_LEVEL` wins over it.
pub const RUST_LOG: &str = "RUST_LOG";

/// The `--help` section listing every setting with its variable and default.
pub fn settings_help() -> String {
    let mut text = String::from(
        "Settings (environment variables; a flag, where there is one, wins over its variable):\n",
    );
    for s in SETTINGS {
        let flag = s.flag.map(|f| format!(" (--{f})")).unwrap_or_default();
        let default = if s.default.is_empty() {
            String::new()
        } else {
            format!(" [default: {}]", s.default)
        };
        text.push_str(&format!(
            "  {}{flag}{default}\n      {}\n",
            s.variable, s.meaning
        ));
    }
    text
}

/// The help line of a flag: its setting's meaning, variable and default.
pub fn flag_help(variable: &str) -> String {
    match SETTINGS.iter().find(|s| s.variable == variable) {
        Some(s) if s.default.is_empty() => format!("{} [env: {}]", s.meaning, s.variable),
        Some(s) => format!(
            "{} [env: {}] [default: {}]",
            s.meaning, s.variable, s.default
        ),
        None => String::new(),
    }
}

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

/// The variables with the command line's values put in place of theirs: a flag wins.
pub fn with_overrides(
    vars: impl IntoIterator<Item = (String, String)>,
    overrides: impl IntoIterator<Item = (&'static str, String)>,
) -> Vec<(String, String)> {
    let mut map: BTreeMap<String, String> = vars.into_iter().collect();
    for (variable, value) in overrides {
        map.insert(variable.to_owned(), value);
    }
    map.into_iter().collect()
}

/// One warning per `WITHINGS_*` variable that is no setting, naming the closest one.
pub fn misspelt_variables(vars: &[(String, String)]) -> Vec<String> {
    let known = || {
        SETTINGS
            .iter()
            .map(|s| s.variable)
            .chain(RESERVED_VARIABLES.iter().copied())
    };
    vars.iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("WITHINGS_") && !known().any(|k| k == name.as_str()))
        .map(|name| {
            let closest = known()
                .min_by_key(|k| edit_distance(name, k))
                .unwrap_or(DEFAULT_LISTEN_ADDRESS);
            format!("{name} is not a setting and is ignored; did you mean {closest}?")
        })
        .collect()
}

/// Levenshtein distance over bytes (variable names are ASCII).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
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

impl LogSettings {
    pub fn from_vars(vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let get = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let level = match (
            non_empty(get("WITHINGS_LOG_LEVEL")),
            non_empty(get(RUST_LOG)),
        ) {
            (Some(level), _) => parse_log_level("WITHINGS_LOG_LEVEL", &level)?,
            (None, Some(level)) => parse_log_level(RUST_LOG, &level)?,
            (None, None) => DEFAULT_LOG_LEVEL.to_owned(),
        };
        let format = match non_empty(get("WITHINGS_LOG_FORMAT")) {
            Some(format) => parse_log_format(&format)?,
            None => LogFormat::default(),
        };
        Ok(Self { level, format })
    }
}

/// A configuration value that cannot be used, named by its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

fn invalid(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        message: message.into(),
    }
}

/// Everything the exporter needs to run, already checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_address: SocketAddr,
    pub api_url: Url,
    pub access_token: Option<Secret>,
    pub meastypes: Vec<i64>,
    pub include_ambiguous: bool,
    pub upstream_timeout: Duration,
    /// Token management (issue 3): see `tokens::TokenSource::from_config`.
    pub token_file: Option<std::path::PathBuf>,
    pub refresh_token: Option<Secret>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub account_url: Url,
    pub redirect_uri: Url,
    /// `WITHINGS_WEB_CONFIG_FILE`: TLS and basic auth, read by [`crate::http::web_config`].
    pub web_config_file: Option<PathBuf>,
    /// Time allowed to open a connection to Withings.
    pub connect_timeout: Duration,
    /// Withings answers larger than this are refused.
    pub max_response_bytes: usize,
    /// Scrapes sooner than this after the last fetch are served its result; zero fetches
    /// on every scrape.
    pub min_fetch_interval: Duration,
    /// `WITHINGS_TOKEN_DIR`: one account per `NAME.json` in it (issue 10).
    pub token_dir: Option<PathBuf>,
    /// `WITHINGS_REQUESTS_PER_MINUTE`: every request to Withings, all accounts together.
    pub requests_per_minute: u32,
    /// `WITHINGS_COLLECTORS`: measures, activity, sleep, devices.
    pub collectors: crate::collector::Collectors,
    /// `WITHINGS_TELEMETRY_PATH` / `--web.telemetry-path`: where the metrics are served.
    pub telemetry_path: String,
    /// `WITHINGS_LOG_LEVEL` (or `RUST_LOG`) and `WITHINGS_LOG_FORMAT`.
    pub log: LogSettings,
    /// `WITHINGS_WEB_MAX_CONNECTIONS`: HTTP connections open at once.
    pub web_max_connections: usize,
    /// `WITHINGS_CALLBACK_URL` (issue 12): where Withings notifies us, before the secret.
    pub callback_url: Option<Url>,
    /// `WITHINGS_NOTIFY_MIN_INTERVAL_SECONDS`.
    pub notify_min_interval: Duration,
    /// `WITHINGS_SAFETY_POLL_SECONDS`.
    pub safety_poll: Duration,
}

/// The variables as strings, so that each can be checked with a message of our own
/// (envy's would name a struct field, not the variable the operator has to fix).
#[derive(Deserialize, Default)]
struct Raw {
    listen_address: Option<String>,
    api_url: Option<String>,
    access_token: Option<String>,
    meastypes: Option<String>,
    include_ambiguous: Option<String>,
    timeout_seconds: Option<String>,
    token_file: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<String>,
    account_url: Option<String>,
    redirect_uri: Option<String>,
    web_config_file: Option<String>,
    connect_timeout_seconds: Option<String>,
    max_response_bytes: Option<String>,
    min_fetch_interval_seconds: Option<String>,
    token_dir: Option<String>,
    requests_per_minute: Option<String>,
    collectors: Option<String>,
    telemetry_path: Option<String>,
    web_max_connections: Option<String>,
    callback_url: Option<String>,
    notify_min_interval_seconds: Option<String>,
    safety_poll_seconds: Option<String>,
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
        let log = LogSettings::from_vars(&vars)?;
        let raw: Raw = envy::prefixed("WITHINGS_")
            .from_iter(vars)
            .map_err(|e| invalid("WITHINGS_*", e.to_string()))?;
        Self::from_raw(raw, log)
    }

    fn from_raw(raw: Raw, log: LogSettings) -> Result<Self, ConfigError> {
        let listen = non_empty(raw.listen_address).unwrap_or_else(|| DEFAULT_LISTEN_ADDRESS.into());
        let listen_address = parse_listen_address(&listen)?;
        let api_url = parse_api_url(
            "WITHINGS_API_URL",
            &non_empty(raw.api_url).unwrap_or_else(|| DEFAULT_API_URL.into()),
        )?;
        let access_token = token_var("WITHINGS_ACCESS_TOKEN", raw.access_token)?;
        let meastypes = match non_empty(raw.meastypes) {
            Some(list) => parse_meastypes(&list)?,
            None => DEFAULT_MEASTYPES.to_vec(),
        };
        let include_ambiguous = match non_empty(raw.include_ambiguous) {
            Some(v) => parse_bool("WITHINGS_INCLUDE_AMBIGUOUS", &v)?,
            None => true,
        };
        let upstream_timeout = match non_empty(raw.timeout_seconds) {
            Some(v) => parse_seconds("WITHINGS_TIMEOUT_SECONDS", &v)?,
            None => Duration::from_secs(20),
        };
        let client_secret = match (
            non_empty(raw.client_secret),
            non_empty(raw.client_secret_file),
        ) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "WITHINGS_CLIENT_SECRET_FILE",
                    "set together with WITHINGS_CLIENT_SECRET; set only one of them",
                ));
            }
            (Some(secret), None) => Some(Secret::new(secret.trim())),
            (None, Some(file)) => {
                let path = std::path::PathBuf::from(file.trim());
                let secret = crate::account::tokens::read_secret_file(&path).map_err(|e| {
                    invalid(
                        "WITHINGS_CLIENT_SECRET_FILE",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                if secret.is_empty() {
                    return Err(invalid(
                        "WITHINGS_CLIENT_SECRET_FILE",
                        format!("{} is empty", path.display()),
                    ));
                }
                Some(secret)
            }
            (None, None) => None,
        };
        let account_url = parse_api_url(
            "WITHINGS_ACCOUNT_URL",
            &non_empty(raw.account_url).unwrap_or_else(|| DEFAULT_ACCOUNT_URL.into()),
        )?;
        let redirect_uri = parse_redirect_uri(
            &non_empty(raw.redirect_uri).unwrap_or_else(|| DEFAULT_REDIRECT_URI.into()),
        )?;
        // Checked by web_config at start, where a bad file can be named with its key.
        let web_config_file = non_empty(raw.web_config_file).map(PathBuf::from);
        let connect_timeout = match non_empty(raw.connect_timeout_seconds) {
            Some(v) => parse_seconds("WITHINGS_CONNECT_TIMEOUT_SECONDS", &v)?,
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let max_response_bytes = match non_empty(raw.max_response_bytes) {
            Some(v) => parse_byte_limit("WITHINGS_MAX_RESPONSE_BYTES", &v)?,
            None => DEFAULT_MAX_RESPONSE_BYTES,
        };
        let min_fetch_interval = match non_empty(raw.min_fetch_interval_seconds) {
            Some(v) => parse_interval("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", &v)?,
            None => Duration::ZERO,
        };
        let token_dir = non_empty(raw.token_dir).map(|p| PathBuf::from(p.trim()));
        let token_file = non_empty(raw.token_file).map(|p| std::path::PathBuf::from(p.trim()));
        if token_dir.is_some() {
            for (variable, set) in [
                ("WITHINGS_TOKEN_FILE", token_file.is_some()),
                ("WITHINGS_ACCESS_TOKEN", access_token.is_some()),
                (
                    "WITHINGS_REFRESH_TOKEN",
                    non_empty(raw.refresh_token.clone()).is_some(),
                ),
            ] {
                if set {
                    return Err(invalid(
                        variable,
                        "set together with WITHINGS_TOKEN_DIR; use one or the other: WITHINGS_TOKEN_DIR serves every NAME.json in that directory as an account, the others serve one account",
                    ));
                }
            }
        }
        let requests_per_minute = match non_empty(raw.requests_per_minute) {
            Some(v) => parse_requests_per_minute(&v)?,
            None => crate::withings::budget::DEFAULT_PER_MINUTE,
        };
        let collectors = match non_empty(raw.collectors) {
            Some(list) => crate::collector::Collectors::parse(&list).map_err(|e| {
                invalid(
                    "WITHINGS_COLLECTORS",
                    e.to_string()
                        .trim_start_matches("WITHINGS_COLLECTORS: ")
                        .to_owned(),
                )
            })?,
            None => crate::collector::Collectors::default(),
        };
        let telemetry_path = match non_empty(raw.telemetry_path) {
            Some(path) => parse_telemetry_path(&path)?,
            None => DEFAULT_TELEMETRY_PATH.to_owned(),
        };
        let web_max_connections = match non_empty(raw.web_max_connections) {
            Some(v) => parse_max_connections(&v)?,
            None => crate::http::server::DEFAULT_MAX_CONNECTIONS,
        };
        let callback_url = non_empty(raw.callback_url)
            .map(|u| crate::notify::callback::parse_callback_url(&u))
            .transpose()?;
        let notify_min_interval = match non_empty(raw.notify_min_interval_seconds) {
            Some(v) => parse_seconds("WITHINGS_NOTIFY_MIN_INTERVAL_SECONDS", &v)?,
            None => crate::notify::DEFAULT_MIN_INTERVAL,
        };
        let safety_poll = match non_empty(raw.safety_poll_seconds) {
            Some(v) => parse_seconds("WITHINGS_SAFETY_POLL_SECONDS", &v)?,
            None => crate::notify::DEFAULT_SAFETY_POLL,
        };
        Ok(Self {
            callback_url,
            notify_min_interval,
            safety_poll,
            token_dir,
            requests_per_minute,
            collectors,
            listen_address,
            api_url,
            access_token,
            meastypes,
            include_ambiguous,
            upstream_timeout,
            token_file,
            refresh_token: token_var("WITHINGS_REFRESH_TOKEN", raw.refresh_token)?,
            client_id: non_empty(raw.client_id).map(|c| c.trim().to_owned()),
            client_secret,
            account_url,
            redirect_uri,
            web_config_file,
            connect_timeout,
            max_response_bytes,
            min_fetch_interval,
            telemetry_path,
            log,
            web_max_connections,
        })
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

    /// The application's credentials: both or neither must be set.
    pub fn client_credentials(
        &self,
    ) -> Result<Option<crate::account::tokens::ClientCredentials>, ConfigError> {
        match (&self.client_id, &self.client_secret) {
            (Some(client_id), Some(client_secret)) => {
                Ok(Some(crate::account::tokens::ClientCredentials {
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                }))
            }
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

    /// `meastypes` as Withings wants it: comma-separated.
    pub fn meastypes_param(&self) -> String {
        self.meastypes
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One line for the start-up log. Secrets appear only as set/unset.
    pub fn summary(&self) -> String {
        format!(
            "listen_address={} api_url={} meastypes={} include_ambiguous={} timeout_seconds={} connect_timeout_seconds={} max_response_bytes={} min_fetch_interval_seconds={} access_token={} web_config_file={}",
            self.listen_address,
            self.api_url,
            self.meastypes_param(),
            self.include_ambiguous,
            self.upstream_timeout.as_secs_f64(),
            self.connect_timeout.as_secs_f64(),
            self.max_response_bytes,
            self.min_fetch_interval.as_secs_f64(),
            if self.access_token.is_some() {
                "<set>"
            } else {
                "<unset>"
            },
            self.web_config_file
                .as_ref()
                .map_or_else(|| "<unset>".into(), |p| p.display().to_string()),
        ) + &format!(
            " token_dir={} requests_per_minute={} token_file={} refresh_token={} client_id={} client_secret={}",
            self.token_dir
                .as_ref()
                .map_or_else(|| "<unset>".into(), |p| p.display().to_string()),
            self.requests_per_minute,
            self.token_file
                .as_ref()
                .map_or_else(|| "<unset>".into(), |p| p.display().to_string()),
            if self.refresh_token.is_some() {
                "<set>"
            } else {
                "<unset>"
            },
            self.client_id.as_deref().unwrap_or("<unset>"),
            if self.client_secret.is_some() {
                "<set>"
            } else {
                "<unset>"
            },
        )
    }
}

/// A token variable, trimmed. One that could never work (a control character from a bad
/// paste would make every request fail) is refused at start; the message names the
/// variable and never shows the value.
fn token_var(variable: &'static str, value: Option<String>) -> Result<Option<Secret>, ConfigError> {
    let Some(value) = non_empty(value) else {
        return Ok(None);
    };
    let token = value.trim();
    match crate::secret::token_flaw(token) {
        Some(flaw) => Err(invalid(
            variable,
            format!(
                "{flaw}; a Withings token is a string of letters and digits, so check how it was pasted (its value is not shown)"
            ),
        )),
        None => Ok(Some(Secret::new(token))),
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn parse_listen_address(value: &str) -> Result<SocketAddr, ConfigError> {
    const VAR: &str = "WITHINGS_LISTEN_ADDRESS";
    let value = value.trim();
    // ":19100" is how Prometheus exporters are usually given an address: all interfaces.
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.to_owned()
    };
    if let Ok(address) = full.parse() {
        return Ok(address);
    }
    let bad = || {
        invalid(
            VAR,
            format!(
                "{value:?} is not a host:port address (for example 0.0.0.0:19100, localhost:19100 or [::]:19100)"
            ),
        )
    };
    // A host name: resolved once, now, so that a name that does not resolve stops the start
    // with its variable named rather than failing later at bind. Only a host:port reaches
    // the resolver.
    let (host, port) = full.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    let mut addresses = full.to_socket_addrs().map_err(|e| {
        invalid(
            VAR,
            format!(
                "cannot resolve host {host:?} ({e}); use an IP address or a name that resolves here"
            ),
        )
    })?;
    addresses
        .next()
        .ok_or_else(|| invalid(VAR, format!("host {host:?} resolves to no address")))
}

/// The metrics path: absolute, plain, and not one of the fixed routes.
fn parse_telemetry_path(value: &str) -> Result<String, ConfigError> {
    const VAR: &str = "WITHINGS_TELEMETRY_PATH";
    let path = value.trim();
    if !path.starts_with('/') || path.len() < 2 {
        return Err(invalid(
            VAR,
            format!("{path:?} is not a path below / (for example {DEFAULT_TELEMETRY_PATH})"),
        ));
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "?#%".contains(c))
    {
        return Err(invalid(
            VAR,
            format!("{path:?} must be a plain path, without spaces, ?, # or %"),
        ));
    }
    if path == "/-/healthy" || path == "/-/ready" {
        return Err(invalid(
            VAR,
            format!("{path} is already the health endpoint"),
        ));
    }
    Ok(path.to_owned())
}

const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A filter in `RUST_LOG`'s syntax. A bare word must be a level: tracing would read
/// `infoo` as a target name and log nothing, silently.
pub(crate) fn parse_log_level(variable: &'static str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    let bad = |why: String| {
        invalid(
            variable,
            format!(
                "{value:?} is not a log filter ({why}); use error, warn, info, debug or trace, or target=level directives such as withings_exporter=debug"
            ),
        )
    };
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.is_empty() && !directive.contains('[') => level,
            Some(_) => continue,
            None if directive.contains('[') => continue,
            None => directive,
        };
        if !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(bad(format!("{level:?} is not a level")));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map_err(|e| bad(e.to_string()))?;
    Ok(value.to_owned())
}

fn parse_log_format(value: &str) -> Result<LogFormat, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "logfmt" => Ok(LogFormat::Logfmt),
        "json" => Ok(LogFormat::Json),
        other => Err(invalid(
            "WITHINGS_LOG_FORMAT",
            format!("{other:?} is not a log format; use logfmt or json"),
        )),
    }
}

pub(crate) fn parse_api_url(variable: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value.trim()).map_err(|e| {
        invalid(
            variable,
            format!("not a URL ({e}); for example {DEFAULT_API_URL}"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            variable,
            format!("scheme {:?} is not http or https", url.scheme()),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            variable,
            "credentials in the URL are not supported; remove the user:password@ part",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(variable, "must not have a query or fragment"));
    }
    Ok(url)
}

fn parse_redirect_uri(value: &str) -> Result<Url, ConfigError> {
    const VAR: &str = "WITHINGS_REDIRECT_URI";
    let url = Url::parse(value.trim()).map_err(|e| {
        invalid(VAR, format!("not a URL ({e}); use the callback URL registered for your Withings application, e.g. {DEFAULT_REDIRECT_URI}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(VAR, "must be an http or https URL with a host"));
    }
    Ok(url)
}

fn parse_meastypes(value: &str) -> Result<Vec<i64>, ConfigError> {
    const VAR: &str = "WITHINGS_MEASTYPES";
    let supported = || {
        MEASURES
            .iter()
            .map(|m| format!("{} ({})", m.code, m.measurement))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut types = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        let code: i64 = part.parse().map_err(|_| {
            invalid(VAR, format!("{part:?} is not a measure type number; use a comma-separated list such as 9,10,11,54,71"))
        })?;
        if index_of(code).is_none() {
            return Err(invalid(
                VAR,
                format!(
                    "measure type {code} is not exported by this version; supported: {}",
                    supported()
                ),
            ));
        }
        if !types.contains(&code) {
            types.push(code);
        }
    }
    Ok(types)
}

fn parse_bool(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(invalid(
            variable,
            format!("{other:?} is not a boolean; use true or false"),
        )),
    }
}

pub(crate) fn parse_seconds(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            invalid(
                variable,
                format!("{value:?} is not a usable number of seconds: it must be more than 0 and at most 86400"),
            )
        })
}

/// Like [`parse_seconds`], but zero is allowed: it means "no interval".
fn parse_interval(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| invalid(variable, format!("{value:?} is not a number of seconds from 0 to 86400 (0 fetches on every scrape)")))
}

fn parse_requests_per_minute(value: &str) -> Result<u32, ConfigError> {
    use crate::withings::budget::{DEFAULT_PER_MINUTE, WITHINGS_LIMIT_PER_MINUTE};
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=WITHINGS_LIMIT_PER_MINUTE).contains(n))
        .ok_or_else(|| {
            invalid(
                "WITHINGS_REQUESTS_PER_MINUTE",
                format!("{value:?} is not a whole number from 1 to {WITHINGS_LIMIT_PER_MINUTE} (Withings allows {WITHINGS_LIMIT_PER_MINUTE} requests a minute for the whole application; the default {DEFAULT_PER_MINUTE} leaves room for `auth` runs)"),
            )
        })
}

fn parse_byte_limit(variable: &'static str, value: &str) -> Result<usize, ConfigError> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n >= MIN_RESPONSE_BYTES)
        .ok_or_else(|| {
            invalid(
                variable,
                format!("{value:?} is not a whole number of bytes of at least {MIN_RESPONSE_BYTES} (the default is {DEFAULT_MAX_RESPONSE_BYTES})"),
            )
        })
}

/// Above this, a connection cap means nothing: a process gets no more descriptors.
const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

fn parse_max_connections(value: &str) -> Result<usize, ConfigError> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_CONNECTIONS_LIMIT).contains(n))
        .ok_or_else(|| {
            invalid(
                "WITHINGS_WEB_MAX_CONNECTIONS",
                format!(
                    "{value:?} is not a whole number of connections from 1 to {MAX_CONNECTIONS_LIMIT} (the default is {}); keep it below the file descriptor limit (LimitNOFILE)",
                    crate::http::server::DEFAULT_MAX_CONNECTIONS
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_has_a_default_and_refuses_nonsense() {
        let c = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(c.web_max_connections, 512);
        let c = Config::from_vars(vars(&[("WITHINGS_WEB_MAX_CONNECTIONS", " 64 ")])).unwrap();
        assert_eq!(c.web_max_connections, 64);
        for bad in ["0", "-1", "many", "1e3", "2000000"] {
            let e = Config::from_vars(vars(&[("WITHINGS_WEB_MAX_CONNECTIONS", bad)])).unwrap_err();
            assert_eq!(e.variable, "WITHINGS_WEB_MAX_CONNECTIONS", "{bad}");
            assert!(e.to_string().contains("from 1 to"), "{e}");
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = Config::from_vars(vars(&[("WITHINGS_ACCESS_TOKEN", "t")])).unwrap();
        assert_eq!(c.listen_address.to_string(), DEFAULT_LISTEN_ADDRESS);
        assert_eq!(c.api_url.as_str(), "https://wbsapi.withings.net/");
        assert_eq!(
            c.meastypes_param(),
            "1,4,5,6,8,9,10,11,12,54,71,73,76,77,88,91,123,130,135,136,137,138,139,155,167,168,169,170,173,174,175,196,226,227,229"
        );
        assert!(c.include_ambiguous);
        assert_eq!(c.require_access_token().unwrap().expose(), "t");
        assert_eq!(c.upstream_timeout, Duration::from_secs(20));
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES);
        assert_eq!(c.min_fetch_interval, Duration::ZERO);
    }

    #[test]
    fn a_token_with_a_control_character_is_refused_by_name_without_its_value() {
        for variable in ["WITHINGS_ACCESS_TOKEN", "WITHINGS_REFRESH_TOKEN"] {
            for bad in [
                "abc\u{1b}[31mdef-sekrit",
                "abc\ndef-sekrit",
                "abc\u{7f}-sekrit",
                "ab é-sekrit",
            ] {
                let err = Config::from_vars(vars(&[(variable, bad)])).unwrap_err();
                assert_eq!(err.variable, variable);
                let line = err.to_string();
                assert!(!line.contains("sekrit") && !line.contains('\n'), "{line:?}");
            }
        }
        // Surrounding whitespace (a trailing newline from `$(cat file)`) is not part of it.
        let c = Config::from_vars(vars(&[("WITHINGS_ACCESS_TOKEN", " abc123\n")])).unwrap();
        assert_eq!(c.require_access_token().unwrap().expose(), "abc123");
    }

    #[test]
    fn sync_settings() {
        let c = Config::from_vars(vars(&[
            ("WITHINGS_CONNECT_TIMEOUT_SECONDS", "1.5"),
            ("WITHINGS_MAX_RESPONSE_BYTES", "65536"),
            ("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "30"),
        ]))
        .unwrap();
        assert_eq!(c.connect_timeout, Duration::from_millis(1500));
        assert_eq!(c.max_response_bytes, 65536);
        assert_eq!(c.min_fetch_interval, Duration::from_secs(30));
        let zero =
            Config::from_vars(vars(&[("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "0")])).unwrap();
        assert_eq!(zero.min_fetch_interval, Duration::ZERO);
        let summary = c.summary();
        assert!(
            summary.contains("min_fetch_interval_seconds=30")
                && summary.contains("max_response_bytes=65536"),
            "{summary}"
        );
    }

    #[test]
    fn explicit_values() {
        let c = Config::from_vars(vars(&[
            ("WITHINGS_LISTEN_ADDRESS", ":8080"),
            ("WITHINGS_API_URL", "https://wbsapi.us.withingsmed.net"),
            ("WITHINGS_MEASTYPES", " 10, 9 ,10"),
            ("WITHINGS_INCLUDE_AMBIGUOUS", "false"),
            ("WITHINGS_TIMEOUT_SECONDS", "2.5"),
            ("UNRELATED", "x"),
        ]))
        .unwrap();
        assert_eq!(c.listen_address.to_string(), "0.0.0.0:8080");
        assert_eq!(c.meastypes, vec![10, 9]);
        assert!(!c.include_ambiguous);
        assert_eq!(c.upstream_timeout, Duration::from_millis(2500));
        assert!(c.access_token.is_none());
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases = [
            ("WITHINGS_LISTEN_ADDRESS", "localhost"),
            ("WITHINGS_API_URL", "not a url"),
            ("WITHINGS_API_URL", "ftp://example.com"),
            ("WITHINGS_API_URL", "https://user:pw@example.com"),
            ("WITHINGS_MEASTYPES", "9,ten"),
            ("WITHINGS_MEASTYPES", "9,2"),
            ("WITHINGS_INCLUDE_AMBIGUOUS", "maybe"),
            ("WITHINGS_TIMEOUT_SECONDS", "-1"),
            ("WITHINGS_TIMEOUT_SECONDS", "NaN"),
            ("WITHINGS_CONNECT_TIMEOUT_SECONDS", "0"),
            ("WITHINGS_MAX_RESPONSE_BYTES", "1MB"),
            ("WITHINGS_MAX_RESPONSE_BYTES", "100"),
            ("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "-1"),
            ("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "soon"),
        ];
        for (var, value) in cases {
            let err = Config::from_vars(vars(&[(var, value)])).unwrap_err();
            assert_eq!(err.variable, var, "{value}: {err}");
            let line = err.to_string();
            assert!(line.starts_with(var) && !line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn missing_token_is_reported_with_what_to_do() {
        let c = Config::from_vars(vars(&[])).unwrap();
        let err = c.require_access_token().unwrap_err();
        assert_eq!(err.variable, "WITHINGS_ACCESS_TOKEN");
        assert!(err.to_string().contains("demo"));
    }

    #[test]
    fn token_variables() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, "file-secret-value\n").unwrap();
        let file_var = secret_file.display().to_string();
        let c = Config::from_vars(vars(&[
            ("WITHINGS_CLIENT_ID", "cid"),
            ("WITHINGS_CLIENT_SECRET_FILE", &file_var),
            ("WITHINGS_TOKEN_FILE", "/data/tokens.json"),
            ("WITHINGS_REFRESH_TOKEN", "refresh-value"),
        ]))
        .unwrap();
        let creds = c.client_credentials().unwrap().unwrap();
        assert_eq!(creds.client_secret.expose(), "file-secret-value");
        assert_eq!(c.redirect_uri.as_str(), DEFAULT_REDIRECT_URI);
        assert_eq!(c.account_url.as_str(), "https://account.withings.com/");
        let shown = format!("{c:?} {}", c.summary());
        for secret in ["file-secret-value", "refresh-value"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            c.summary().contains("client_secret=<set>")
                && c.summary().contains("refresh_token=<set>")
        );

        let both = Config::from_vars(vars(&[
            ("WITHINGS_CLIENT_SECRET", "s"),
            ("WITHINGS_CLIENT_SECRET_FILE", &file_var),
        ]))
        .unwrap_err();
        assert_eq!(both.variable, "WITHINGS_CLIENT_SECRET_FILE");
        let missing = Config::from_vars(vars(&[(
            "WITHINGS_CLIENT_SECRET_FILE",
            "/nonexistent/secret",
        )]))
        .unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/secret"),
            "{missing}"
        );
        let half = Config::from_vars(vars(&[("WITHINGS_CLIENT_ID", "cid")])).unwrap();
        assert_eq!(
            half.client_credentials().unwrap_err().variable,
            "WITHINGS_CLIENT_SECRET"
        );
        for (var, value) in [
            ("WITHINGS_REDIRECT_URI", "not a url"),
            ("WITHINGS_ACCOUNT_URL", "ftp://x"),
        ] {
            assert_eq!(
                Config::from_vars(vars(&[(var, value)]))
                    .unwrap_err()
                    .variable,
                var
            );
        }
    }

    #[test]
    fn web_config_file_is_taken_as_a_path_and_summarised() {
        let c = Config::from_vars(vars(&[(
            "WITHINGS_WEB_CONFIG_FILE",
            "/etc/withings/web.yml",
        )]))
        .unwrap();
        assert_eq!(
            c.web_config_file.as_deref(),
            Some(std::path::Path::new("/etc/withings/web.yml"))
        );
        assert!(
            c.summary()
                .contains("web_config_file=/etc/withings/web.yml")
        );
        let unset = Config::from_vars(vars(&[("WITHINGS_WEB_CONFIG_FILE", " ")])).unwrap();
        assert!(unset.web_config_file.is_none());
        assert!(unset.summary().contains("web_config_file=<unset>"));
    }

    #[test]
    fn secrets_stay_out_of_debug_and_summary() {
        let c = Config::from_vars(vars(&[("WITHINGS_ACCESS_TOKEN", "very-secret-token")])).unwrap();
        for shown in [format!("{c:?}"), c.summary()] {
            assert!(!shown.contains("very-secret-token"), "{shown}");
        }
        assert!(c.summary().contains("access_token=<set>"));
    }

    #[test]
    fn a_zero_timeout_is_refused_with_the_real_bounds() {
        let err = Config::from_vars(vars(&[("WITHINGS_TIMEOUT_SECONDS", "0")])).unwrap_err();
        let line = err.to_string();
        assert!(
            line.contains("more than 0 and at most 86400") && !line.contains("between 0"),
            "{line}"
        );
    }

    #[test]
    fn a_host_name_in_the_listen_address_is_resolved() {
        let c = Config::from_vars(vars(&[("WITHINGS_LISTEN_ADDRESS", "localhost:19100")])).unwrap();
        assert!(c.listen_address.ip().is_loopback(), "{}", c.listen_address);
        assert_eq!(c.listen_address.port(), 19100);
        // No name that needs a DNS server: tests contact nothing beyond loopback.
        for bad in ["localhost", "localhost:port", ":x", "localhost:70000"] {
            let err = Config::from_vars(vars(&[("WITHINGS_LISTEN_ADDRESS", bad)])).unwrap_err();
            assert_eq!(err.variable, "WITHINGS_LISTEN_ADDRESS", "{bad}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn telemetry_path_and_log_settings() {
        let c = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(c.telemetry_path, "/metrics");
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Logfmt);
        let c = Config::from_vars(vars(&[
            ("WITHINGS_TELEMETRY_PATH", "/withings/metrics"),
            ("WITHINGS_LOG_FORMAT", "JSON"),
            ("RUST_LOG", "debug"),
        ]))
        .unwrap();
        assert_eq!(c.telemetry_path, "/withings/metrics");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "debug");
        // WITHINGS_LOG_LEVEL wins over RUST_LOG.
        let c = Config::from_vars(vars(&[
            ("WITHINGS_LOG_LEVEL", "warn,withings_exporter=debug"),
            ("RUST_LOG", "trace"),
        ]))
        .unwrap();
        assert_eq!(c.log.level, "warn,withings_exporter=debug");
        for (var, value) in [
            ("WITHINGS_TELEMETRY_PATH", "metrics"),
            ("WITHINGS_TELEMETRY_PATH", "/"),
            ("WITHINGS_TELEMETRY_PATH", "/a b"),
            ("WITHINGS_TELEMETRY_PATH", "/-/healthy"),
            ("WITHINGS_LOG_FORMAT", "text"),
            ("WITHINGS_LOG_LEVEL", "infoo"),
            ("WITHINGS_LOG_LEVEL", "withings_exporter=loud"),
            ("RUST_LOG", "verbose"),
        ] {
            let err = Config::from_vars(vars(&[(var, value)])).unwrap_err();
            assert_eq!(err.variable, var, "{value}: {err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn flags_override_their_variables_before_validation() {
        let merged = with_overrides(
            vars(&[
                ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:1"),
                ("WITHINGS_API_URL", "http://127.0.0.1:2"),
            ]),
            [("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:3".to_owned())],
        );
        let c = Config::from_vars(merged).unwrap();
        assert_eq!(c.listen_address.to_string(), "127.0.0.1:3");
        assert_eq!(c.api_url.as_str(), "http://127.0.0.1:2/");
        let bad = with_overrides(vars(&[]), [("WITHINGS_LISTEN_ADDRESS", "x".to_owned())]);
        assert_eq!(
            Config::from_vars(bad).unwrap_err().variable,
            "WITHINGS_LISTEN_ADDRESS"
        );
    }

    #[test]
    fn only_our_variables_are_read_and_a_non_utf8_one_is_named_not_shown() {
        use std::os::unix::ffi::OsStringExt;
        let os = |s: &str| OsString::from(s);
        let garbage = || OsString::from_vec(b"se\xffcret-value".to_vec());
        let read = environment([
            (os("WITHINGS_API_URL"), os("http://x")),
            (os("RUST_LOG"), os("debug")),
            (os("UNRELATED"), garbage()),
            (OsString::from_vec(b"\xff".to_vec()), os("x")),
            (os("PATH"), os("/bin")),
        ])
        .unwrap();
        assert_eq!(
            read,
            vars(&[("WITHINGS_API_URL", "http://x"), ("RUST_LOG", "debug")])
        );
        let err = environment([(os("WITHINGS_CLIENT_SECRET"), garbage())]).unwrap_err();
        assert_eq!(
            err,
            EnvironmentError::NotUtf8("WITHINGS_CLIENT_SECRET".into())
        );
        let line = err.to_string();
        assert!(
            line.starts_with("WITHINGS_CLIENT_SECRET:") && !line.contains("cret-value"),
            "{line}"
        );
    }

    #[test]
    fn a_misspelt_variable_gets_the_closest_name() {
        let warnings = misspelt_variables(&vars(&[
            ("WITHINGS_LISTEN_ADRESS", ":1"),
            ("WITHINGS_CLIENTID", "x"),
            ("WITHINGS_ACCESS_TOKEN", "t"),
            ("WITHINGS_TOKEN_DIR", "/d"),
            ("WITHINGS_WEB_MAX_CONNECTIONS", "10"),
            ("RUST_LOG", "info"),
        ]));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("WITHINGS_LISTEN_ADRESS ")
                && warnings[0].ends_with("did you mean WITHINGS_LISTEN_ADDRESS?"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].ends_with("did you mean WITHINGS_CLIENT_ID?"),
            "{warnings:?}"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn help_lists_every_setting_with_its_default() {
        let help = settings_help();
        for s in SETTINGS {
            assert!(help.contains(s.variable), "{}", s.variable);
            if !s.default.is_empty() {
                assert!(
                    help.contains(&format!("[default: {}]", s.default)),
                    "{}",
                    s.variable
                );
            }
        }
        assert!(
            help.contains(
                "WITHINGS_LISTEN_ADDRESS (--web.listen-address) [default: 0.0.0.0:19100]"
            )
        );
    }
}
