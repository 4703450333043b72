//! Reading one value: durations, lists, URLs, secret files. Each error names its variable
//! and never shows a secret.

use super::{
    CALLBACK_SECRET_BYTES, ConfigError, DEFAULT_API_URL, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_PER_MINUTE, DEFAULT_REDIRECT_URI, DEFAULT_TELEMETRY_PATH,
    LogFormat, MAX_CALLBACK_URL_LEN, MAX_CONNECTIONS_LIMIT, MIN_RESPONSE_BYTES,
    WITHINGS_LIMIT_PER_MINUTE, invalid,
};
use crate::secret::Secret;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// A token variable, trimmed. One that could never work (a control character from a bad
/// paste would make every request fail) is refused at start; the message names the
/// variable and never shows the value.
pub(super) fn token_var(variable: &'static str, value: &str) -> Result<Secret, ConfigError> {
    let token = value.trim();
    match crate::secret::token_flaw(token) {
        Some(flaw) => Err(invalid(
            variable,
            format!(
                "{flaw}; a Withings token is a string of letters and digits, so check how it was pasted (its value is not shown)"
            ),
        )),
        None => Ok(Secret::new(token)),
    }
}

/// A path from a variable: surrounding whitespace is not part of it.
pub(super) fn parse_path(value: &str) -> PathBuf {
    PathBuf::from(value.trim())
}

/// `WITHINGS_CLIENT_SECRET_FILE`: read now, with the guards every secret file gets.
pub(super) fn parse_client_secret_file(value: &str) -> Result<Secret, ConfigError> {
    const VAR: &str = "WITHINGS_CLIENT_SECRET_FILE";
    let path = parse_path(value);
    let secret = crate::files::read_secret_file(&path)
        .map_err(|e| invalid(VAR, format!("cannot read {}: {e}", path.display())))?;
    if secret.is_empty() {
        return Err(invalid(VAR, format!("{} is empty", path.display())));
    }
    Ok(secret)
}

/// A comma-separated list of names, each trimmed, blanks dropped, as given: which names
/// exist is for the floor that holds them to say, and its message quotes them as written.
pub(super) fn parse_names(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) fn parse_listen_address(value: &str) -> Result<SocketAddr, ConfigError> {
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
pub(super) fn parse_telemetry_path(value: &str) -> Result<String, ConfigError> {
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
    if path == "/probe" || path == "/sd" {
        return Err(invalid(
            VAR,
            format!(
                "{path} is already a route of its own; choose another path, e.g. {DEFAULT_TELEMETRY_PATH}"
            ),
        ));
    }
    Ok(path.to_owned())
}

/// The routes that always exist, besides the metrics path.
pub const FIXED_ROUTES: [&str; 5] = ["/", "/probe", "/sd", "/-/healthy", "/-/ready"];

/// Every path under the notification path is answered without credentials (Withings cannot
/// send any): no other route may be that path or lie below it, or it would be open too.
pub(super) fn check_route_overlap(
    telemetry_path: &str,
    callback: Option<&Url>,
) -> Result<(), ConfigError> {
    let Some(callback) = callback else {
        return Ok(());
    };
    let prefix = callback.path().trim_end_matches('/');
    let overlaps = |route: &str| {
        route == prefix
            || route
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if overlaps(telemetry_path) {
        return Err(invalid(
            "WITHINGS_TELEMETRY_PATH",
            format!(
                "{telemetry_path} lies on the notification path {prefix} of WITHINGS_CALLBACK_URL, which is served without credentials; choose a metrics path outside {prefix}/"
            ),
        ));
    }
    if let Some(route) = FIXED_ROUTES.iter().find(|r| overlaps(r)) {
        return Err(invalid(
            "WITHINGS_CALLBACK_URL",
            format!(
                "its path {prefix} holds the route {route}, and every path under it is served without credentials; choose a path of its own, e.g. /withings/notify"
            ),
        ));
    }
    Ok(())
}

const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A filter in `RUST_LOG`'s syntax. A bare word must be a level: tracing would read
/// `infoo` as a target name and log nothing, silently.
pub(super) fn parse_log_level(variable: &'static str, value: &str) -> Result<String, ConfigError> {
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

pub(super) fn parse_log_format(value: &str) -> Result<LogFormat, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "logfmt" => Ok(LogFormat::Logfmt),
        "json" => Ok(LogFormat::Json),
        other => Err(invalid(
            "WITHINGS_LOG_FORMAT",
            format!("{other:?} is not a log format; use logfmt or json"),
        )),
    }
}

pub(super) fn parse_api_url(variable: &'static str, value: &str) -> Result<Url, ConfigError> {
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

pub(super) fn parse_redirect_uri(value: &str) -> Result<Url, ConfigError> {
    const VAR: &str = "WITHINGS_REDIRECT_URI";
    let url = Url::parse(value.trim()).map_err(|e| {
        invalid(VAR, format!("not a URL ({e}); use the callback URL registered for your Withings application, e.g. {DEFAULT_REDIRECT_URI}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(VAR, "must be an http or https URL with a host"));
    }
    Ok(url)
}

/// `WITHINGS_PUBLIC_URL`, `WITHINGS_GRAFANA_URL`: an http(s) URL with a host, no
/// credentials, no fragment; the public URL also no query, and no trailing slash kept.
pub(super) fn parse_public_url(var: &'static str, value: &str) -> Result<Url, ConfigError> {
    let mut url = Url::parse(value.trim()).map_err(|e| {
        invalid(
            var,
            format!("not a URL ({e}); for example https://health.example.org"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(var, "must be an http or https URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(var, "must not hold credentials"));
    }
    if url.fragment().is_some() || (var == "WITHINGS_PUBLIC_URL" && url.query().is_some()) {
        return Err(invalid(var, "must not have a query or fragment"));
    }
    if var == "WITHINGS_PUBLIC_URL" {
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
    }
    Ok(url)
}

pub(super) fn parse_meastypes(value: &str) -> Result<Vec<i64>, ConfigError> {
    const VAR: &str = "WITHINGS_MEASTYPES";
    let mut types = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        let code: i64 = part.parse().map_err(|_| {
            invalid(VAR, format!("{part:?} is not a measure type number; use a comma-separated list such as 9,10,11,54,71"))
        })?;
        if !types.contains(&code) {
            types.push(code);
        }
    }
    Ok(types)
}

pub(super) fn parse_bool(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(invalid(
            variable,
            format!("{other:?} is not a boolean; use true or false"),
        )),
    }
}

pub(super) fn parse_seconds(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
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
pub(super) fn parse_interval(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| invalid(variable, format!("{value:?} is not a number of seconds from 0 to 86400 (0 fetches on every scrape)")))
}

pub(super) fn parse_requests_per_minute(value: &str) -> Result<u32, ConfigError> {
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

pub(super) fn parse_byte_limit(variable: &'static str, value: &str) -> Result<usize, ConfigError> {
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

pub(super) fn parse_max_connections(value: &str) -> Result<usize, ConfigError> {
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
                    DEFAULT_MAX_CONNECTIONS
                ),
            )
        })
}

/// `WITHINGS_CALLBACK_URL`, checked: an http(s) URL with a host, without credentials, query
/// or fragment, short enough for Withings once the secret is appended. Whether Withings
/// will accept it (https, port 443, a domain name) is the notifier's's say.
pub fn parse_callback_url(value: &str) -> Result<Url, ConfigError> {
    const VAR: &str = "WITHINGS_CALLBACK_URL";
    let invalid = |message: String| ConfigError {
        variable: VAR,
        message,
    };
    let mut url = Url::parse(value.trim()).map_err(|e| {
        invalid(format!(
            "not a URL ({e}); for example https://health.example.org/withings/notify"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            "must be an https URL with a host name, e.g. https://health.example.org/withings/notify".into(),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "must not hold credentials: Withings cannot send them; the secret path segment protects it".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment".into()));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    // The whole path below it is exempt from basic auth: never the root.
    if path.is_empty() {
        return Err(invalid(
            "needs a path, e.g. https://health.example.org/withings/notify: every path under it is the notification path".into(),
        ));
    }
    url.set_path(&path);
    let with_secret = url.as_str().trim_end_matches('/').len() + 1 + encoded_len();
    if with_secret > MAX_CALLBACK_URL_LEN {
        return Err(invalid(format!(
            "is {with_secret} characters long with the {}-character secret appended; Withings accepts at most {MAX_CALLBACK_URL_LEN}",
            encoded_len()
        )));
    }
    Ok(url)
}

fn encoded_len() -> usize {
    (CALLBACK_SECRET_BYTES * 4).div_ceil(3)
}
