//! Where and how to write, from the configuration: `WITHINGS_REMOTE_WRITE_URL`, or
//! `WITHINGS_REMOTE_WRITE_CONFIG_FILE`, a YAML file in the shape of one entry of Prometheus'
//! `remote_write` list (a subset: see docs/remote-write.md). Unknown keys are an error, so a
//! misspelt or unsupported setting is never silently ignored. Secrets are read from files
//! with the guards every secret file gets, and held as [`Secret`]s.

use super::writer::{Auth, Destination, Options};
use crate::config::RemoteWriteConfig;
use crate::files::{ReadRefusal, read_regular_file, read_secret_file};
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// The configuration file, like Prometheus' own, is small.
const MAX_FILE_BYTES: u64 = 64 * 1024;
/// A PEM bundle of CA certificates, or a certificate chain.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

const VAR: &str = "WITHINGS_REMOTE_WRITE_CONFIG_FILE";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    url: Option<String>,
    remote_timeout: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    basic_auth: Option<BasicAuth>,
    authorization: Option<Authorization>,
    bearer_token_file: Option<PathBuf>,
    tls_config: Option<TlsConfig>,
    queue_config: Option<QueueConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuth {
    username: String,
    password_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Authorization {
    #[serde(rename = "type")]
    kind: Option<String>,
    credentials_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsConfig {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueConfig {
    max_samples_per_send: Option<usize>,
    max_shards: Option<usize>,
    min_backoff: Option<String>,
    max_backoff: Option<String>,
    retry_on_http_429: Option<bool>,
}

/// A Prometheus duration: `30s`, `100ms`, `1m30s`, `2h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let millis = match &rest[..unit] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        rest = &rest[unit..];
        total += Duration::from_millis(n.checked_mul(millis)?);
    }
    Some(total)
}

/// The destination the configuration gives, or `None` when it sets none. `url` (a command
/// line's `--remote-write URL`) comes before WITHINGS_REMOTE_WRITE_URL, which comes before
/// the file's `url`; the file's other settings hold whichever URL is used.
pub fn destination(
    config: &RemoteWriteConfig,
    url: Option<Url>,
) -> Result<Option<Destination>, SettingsError> {
    let url = url.or_else(|| config.url.clone());
    let Some(path) = &config.config_file else {
        return Ok(url.map(Destination::new));
    };
    from_file(path, url).map(Some)
}

fn fail(path: &Path, key: &str, message: impl std::fmt::Display) -> SettingsError {
    if key.is_empty() {
        SettingsError(format!("{VAR}: {}: {message}", path.display()))
    } else {
        SettingsError(format!("{VAR}: {}: {key}: {message}", path.display()))
    }
}

fn read_file(path: &Path, key: &str, file: &Path, limit: u64) -> Result<Vec<u8>, SettingsError> {
    match read_regular_file(file, limit) {
        Ok((bytes, _)) => Ok(bytes),
        Err(ReadRefusal::Io(e)) => Err(fail(
            path,
            key,
            format!("cannot read {}: {e}", file.display()),
        )),
        Err(ReadRefusal::NotAFile(kind)) => Err(fail(
            path,
            key,
            format!("{} is {kind}, not a regular file", file.display()),
        )),
        Err(ReadRefusal::TooLarge) => Err(fail(
            path,
            key,
            format!("{} is larger than {limit} bytes", file.display()),
        )),
    }
}

fn read_secret(path: &Path, key: &str, file: &Path) -> Result<Secret, SettingsError> {
    let secret = read_secret_file(file)
        .map_err(|e| fail(path, key, format!("cannot read {}: {e}", file.display())))?;
    if secret.is_empty() {
        return Err(fail(path, key, format!("{} is empty", file.display())));
    }
    Ok(secret)
}

fn duration(path: &Path, key: &str, text: Option<&str>) -> Result<Option<Duration>, SettingsError> {
    text.map(|t| {
        parse_duration(t).filter(|d| !d.is_zero()).ok_or_else(|| {
            fail(
                path,
                key,
                format!("{t:?} is not a duration such as 30s, 100ms or 1m"),
            )
        })
    })
    .transpose()
}

/// Reads and checks the file at `path`.
pub fn from_file(path: &Path, url: Option<Url>) -> Result<Destination, SettingsError> {
    let bytes = read_file(path, "", path, MAX_FILE_BYTES)?;
    let file: File = serde_norway::from_slice(&bytes).map_err(|e| fail(path, "", e))?;
    let url = match (url, &file.url) {
        (Some(url), _) => url,
        (None, Some(text)) => {
            let url = Url::parse(text.trim())
                .map_err(|e| fail(path, "url", format!("not a URL ({e})")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(fail(
                    path,
                    "url",
                    format!("scheme {:?} is not http or https", url.scheme()),
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(fail(
                    path,
                    "url",
                    "credentials in the URL are not supported; use basic_auth",
                ));
            }
            url
        }
        (None, None) => {
            return Err(fail(
                path,
                "url",
                "missing; the remote-write endpoint, e.g. http://prometheus:9090/api/v1/write",
            ));
        }
    };
    let mut destination = Destination::new(url);
    let mut options = Options::default();
    if let Some(timeout) = duration(path, "remote_timeout", file.remote_timeout.as_deref())? {
        options.timeout = timeout;
    }
    for (name, value) in file.headers {
        destination.headers.push((name, Secret::new(value)));
    }
    let auths = [
        file.basic_auth.is_some(),
        file.authorization.is_some(),
        file.bearer_token_file.is_some(),
    ];
    if auths.iter().filter(|a| **a).count() > 1 {
        return Err(fail(
            path,
            "",
            "basic_auth, authorization and bearer_token_file are alternatives; set only one",
        ));
    }
    if let Some(basic) = file.basic_auth {
        let password = match &basic.password_file {
            Some(file) => read_secret(path, "basic_auth.password_file", file)?,
            None => Secret::new(""),
        };
        if basic.username.contains(':') {
            return Err(fail(path, "basic_auth.username", "must not contain ':'"));
        }
        destination.auth = Some(Auth::Basic {
            username: basic.username,
            password,
        });
    }
    if let Some(authorization) = file.authorization {
        let kind = authorization.kind.unwrap_or_else(|| "Bearer".to_owned());
        if kind.eq_ignore_ascii_case("basic") {
            return Err(fail(
                path,
                "authorization.type",
                "Basic is set with basic_auth",
            ));
        }
        destination.auth = Some(Auth::Authorization {
            kind,
            credentials: read_secret(
                path,
                "authorization.credentials_file",
                &authorization.credentials_file,
            )?,
        });
    }
    if let Some(file) = &file.bearer_token_file {
        destination.auth = Some(Auth::Authorization {
            kind: "Bearer".to_owned(),
            credentials: read_secret(path, "bearer_token_file", file)?,
        });
    }
    if let Some(tls) = file.tls_config {
        if tls.insecure_skip_verify {
            return Err(fail(
                path,
                "tls_config.insecure_skip_verify",
                "true is not supported: give the receiver's CA in ca_file instead",
            ));
        }
        if let Some(ca) = &tls.ca_file {
            destination.ca_pem = Some(read_file(path, "tls_config.ca_file", ca, MAX_PEM_BYTES)?);
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read_file(path, "tls_config.cert_file", cert, MAX_PEM_BYTES)?;
                pem.push(b'\n');
                pem.extend(read_file(path, "tls_config.key_file", key, MAX_PEM_BYTES)?);
                let pem = String::from_utf8(pem).map_err(|_| {
                    fail(
                        path,
                        "tls_config",
                        "cert_file and key_file must be PEM text",
                    )
                })?;
                destination.identity_pem = Some(Secret::new(pem));
            }
            (None, None) => {}
            _ => {
                return Err(fail(
                    path,
                    "tls_config",
                    "cert_file and key_file go together: set both for a client certificate",
                ));
            }
        }
    }
    if let Some(queue) = file.queue_config {
        if let Some(n) = queue.max_samples_per_send {
            if n == 0 {
                return Err(fail(
                    path,
                    "queue_config.max_samples_per_send",
                    "must be at least 1",
                ));
            }
            options.max_samples_per_send = n;
        }
        if let Some(n) = queue.max_shards {
            if n == 0 {
                return Err(fail(path, "queue_config.max_shards", "must be at least 1"));
            }
            options.max_in_flight = n;
        }
        if let Some(d) = duration(
            path,
            "queue_config.min_backoff",
            queue.min_backoff.as_deref(),
        )? {
            options.min_backoff = d;
        }
        if let Some(d) = duration(
            path,
            "queue_config.max_backoff",
            queue.max_backoff.as_deref(),
        )? {
            options.max_backoff = d;
        }
        if options.max_backoff < options.min_backoff {
            return Err(fail(
                path,
                "queue_config.max_backoff",
                "is less than min_backoff",
            ));
        }
        if let Some(retry) = queue.retry_on_http_429 {
            options.retry_on_429 = retry;
        }
    }
    destination.options = options;
    Ok(destination)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_prometheus_writes_them() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        for bad in ["", "s", "10", "10x", "1.5s", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
