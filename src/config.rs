//! Configuration from `WITHINGS_*` environment variables, validated once at start.

use crate::render::measures::{DEFAULT_MEASTYPES, MEASURES, index_of};
use crate::secret::Secret;
use serde::Deserialize;
use std::net::SocketAddr;
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
    /// `WITHINGS_WEB_MAX_CONNECTIONS`: HTTP connections open at once.
    pub web_max_connections: usize,
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
    web_max_connections: Option<String>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the given variables; tests use this instead of touching the environment.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let raw: Raw = envy::prefixed("WITHINGS_")
            .from_iter(vars)
            .map_err(|e| invalid("WITHINGS_*", e.to_string()))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        let listen = non_empty(raw.listen_address).unwrap_or_else(|| DEFAULT_LISTEN_ADDRESS.into());
        let listen_address = parse_listen_address(&listen)?;
        let api_url = parse_api_url(
            "WITHINGS_API_URL",
            &non_empty(raw.api_url).unwrap_or_else(|| DEFAULT_API_URL.into()),
        )?;
        let access_token = non_empty(raw.access_token).map(|t| Secret::new(t.trim()));
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
        let web_max_connections = match non_empty(raw.web_max_connections) {
            Some(v) => parse_max_connections(&v)?,
            None => crate::http::server::DEFAULT_MAX_CONNECTIONS,
        };
        Ok(Self {
            listen_address,
            api_url,
            access_token,
            meastypes,
            include_ambiguous,
            upstream_timeout,
            token_file: non_empty(raw.token_file).map(|p| std::path::PathBuf::from(p.trim())),
            refresh_token: non_empty(raw.refresh_token).map(|t| Secret::new(t.trim())),
            client_id: non_empty(raw.client_id).map(|c| c.trim().to_owned()),
            client_secret,
            account_url,
            redirect_uri,
            web_config_file,
            connect_timeout,
            max_response_bytes,
            min_fetch_interval,
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
            " token_file={} refresh_token={} client_id={} client_secret={}",
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
    full.parse().map_err(|_| {
        invalid(
            VAR,
            format!("{value:?} is not a host:port address (for example 0.0.0.0:19100, 127.0.0.1:19100 or [::]:19100)"),
        )
    })
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
                format!("{value:?} is not a number of seconds between 0 and 86400"),
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
        assert_eq!(c.meastypes_param(), "9,10,11,54,71");
        assert!(c.include_ambiguous);
        assert_eq!(c.require_access_token().unwrap().expose(), "t");
        assert_eq!(c.upstream_timeout, Duration::from_secs(20));
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES);
        assert_eq!(c.min_fetch_interval, Duration::ZERO);
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
            ("WITHINGS_MEASTYPES", "9,1"),
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
}
