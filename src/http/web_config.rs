//! `WITHINGS_WEB_CONFIG_FILE`: TLS and basic authentication for the HTTP server, in the YAML
//! format of Prometheus' exporter-toolkit, re-read while running.
//!
//! The file is read strictly, as exporter-toolkit does (`yaml.UnmarshalStrict`): a key it does
//! not know is an error, so a typo cannot silently leave `/metrics` open. Keys that
//! exporter-toolkit knows but this exporter does not implement are refused by name rather than
//! ignored, for the same reason.

use crate::secret::Secret;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How often the watcher looks for a changed file when no SIGHUP comes.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Successful verifications remembered at once; see [`BasicAuth`].
const AUTH_CACHE_CAPACITY: usize = 64;

/// bcrypt checks that run at once: one, so that a flood of guesses takes one core.
pub const CONCURRENT_CHECKS: usize = 1;
/// Checks waiting or running at once; beyond, a request is answered 429 at once instead of
/// queueing behind the others.
pub const MAX_PENDING_CHECKS: usize = 8;
/// Checks waiting or running at once for one client address (an IPv6 /64): a flood from
/// one address leaves the other slots to everyone else.
pub const MAX_PENDING_PER_ADDRESS: usize = 2;
/// Failed checks allowed per client address within [`FAILURE_WINDOW`]; past it, the address
/// is answered 429 without a check until the window ends.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered at once; bounded so that a flood from many
/// addresses cannot grow the memory.
const TRACKED_ADDRESSES: usize = 4096;
/// bcrypt uses the first 72 bytes of a password and ignores the rest.
pub const MAX_PASSWORD_BYTES: usize = 72;
/// Costs above this make a first login take seconds of CPU; warned about at load.
pub const HIGHEST_SENSIBLE_COST: u32 = 12;

/// `WWW-Authenticate` of every 401: the same for every failure, so it tells nothing.
pub const CHALLENGE: &str = "Basic realm=\"withings-exporter\"";

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

/// The file as written. `Option<Value>` fields are keys exporter-toolkit accepts and we refuse.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tls_server_config: Option<RawTls>,
    #[serde(default, deserialize_with = "unique_users")]
    basic_auth_users: Option<Vec<(String, String)>>,
    http_server_config: Option<serde_norway::Value>,
    rate_limit: Option<serde_norway::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    cert: Option<serde_norway::Value>,
    key: Option<serde_norway::Value>,
    client_ca: Option<serde_norway::Value>,
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
    prefer_server_cipher_suites: Option<serde_norway::Value>,
    client_allowed_sans: Option<serde_norway::Value>,
}

impl RawTls {
    fn is_empty(&self) -> bool {
        self.cert_file.is_none()
            && self.key_file.is_none()
            && self.client_auth_type.is_none()
            && self.client_ca_file.is_none()
            && self.min_version.is_none()
            && self.max_version.is_none()
            && self.unsupported().is_none()
    }

    fn unsupported(&self) -> Option<(&'static str, &'static str)> {
        const INLINE: &str = "inline PEM is not supported by withings-exporter; put it in a file and use cert_file, key_file or client_ca_file";
        const SUITES: &str =
            "not supported by withings-exporter, which uses rustls' safe defaults; remove it";
        [
            ("cert", self.cert.is_some(), INLINE),
            ("key", self.key.is_some(), INLINE),
            ("client_ca", self.client_ca.is_some(), INLINE),
            ("cipher_suites", self.cipher_suites.is_some(), SUITES),
            ("curve_preferences", self.curve_preferences.is_some(), SUITES),
            (
                "prefer_server_cipher_suites",
                self.prefer_server_cipher_suites.is_some(),
                SUITES,
            ),
            (
                "client_allowed_sans",
                self.client_allowed_sans.is_some(),
                "not supported by withings-exporter; issue client certificates from a dedicated CA instead, and remove it",
            ),
        ]
        .into_iter()
        .find(|(_, present, _)| *present)
        .map(|(key, _, message)| (key, message))
    }
}

/// A YAML mapping of user to hash; a user written twice is an error, as in exporter-toolkit,
/// because which of the two hashes would apply is not obvious to the reader of the file.
fn unique_users<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<(String, String)>>, D::Error> {
    struct Users;
    impl<'de> serde::de::Visitor<'de> for Users {
        type Value = Option<Vec<(String, String)>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping of user name to bcrypt hash")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut users: Vec<(String, String)> = Vec::new();
            while let Some((user, hash)) = map.next_entry::<String, String>()? {
                if users.iter().any(|(u, _)| *u == user) {
                    return Err(serde::de::Error::custom(format!(
                        "user {user:?} is listed twice; keep one entry"
                    )));
                }
                users.push((user, hash));
            }
            Ok(Some(users))
        }
    }
    d.deserialize_option(Users)
}

/// What exporter-toolkit's `client_auth_type` asks of a client, named as in Go's `crypto/tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    /// Asks for a certificate, accepts any or none; the chain is not checked.
    RequestClientCert,
    /// Requires a certificate; the chain is not checked.
    RequireAnyClientCert,
    /// Accepts no certificate; a certificate given must chain to `client_ca_file`.
    VerifyClientCertIfGiven,
    /// Requires a certificate chaining to `client_ca_file`: mutual TLS.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    const NAMES: &'static str = "NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert";

    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "" | "NoClientCert" => Self::NoClientCert,
            "RequestClientCert" => Self::RequestClientCert,
            "RequireAnyClientCert" => Self::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => Self::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => Self::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    fn verifies(self) -> bool {
        matches!(
            self,
            Self::VerifyClientCertIfGiven | Self::RequireAndVerifyClientCert
        )
    }
}

/// The security the server applies, ready to use: built once per (re)load.
pub struct WebSecurity {
    /// Present when the server speaks HTTPS only.
    pub tls: Option<Arc<ServerConfig>>,
    pub users: BasicAuth,
    /// What the file's TLS section asked for; kept for the start-up log.
    pub client_auth: ClientAuth,
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
        let users = BasicAuth::new(path, raw.basic_auth_users.unwrap_or_default())?;
        let (tls, client_auth) = match raw.tls_server_config {
            Some(tls) if !tls.is_empty() => build_tls(path, &tls)?,
            _ => (None, ClientAuth::NoClientCert),
        };
        Ok(Self {
            tls,
            users,
            client_auth,
        })
    }
}

/// Whether the file turns TLS on, read without loading certificates or hashing anything: for
/// a client of the server (the `healthcheck` subcommand) that only needs the scheme.
pub fn tls_configured(path: &Path) -> Result<bool, WebConfigError> {
    let text = read(path, path, None)?;
    let raw = parse(path, &text)?;
    Ok(raw.tls_server_config.is_some_and(|tls| !tls.is_empty()))
}

fn parse(path: &Path, text: &[u8]) -> Result<RawFile, WebConfigError> {
    // An empty file configures nothing, as in exporter-toolkit; the YAML parser would call it
    // a missing document.
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(RawFile::default());
    }
    serde_norway::from_slice::<Option<RawFile>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| WebConfigError {
            file: path.to_owned(),
            key: None,
            message: format!(
                "not a valid web configuration ({e}); see the exporter-toolkit web configuration format"
            ),
        })
}

fn read(config: &Path, path: &Path, key: Option<&str>) -> Result<Vec<u8>, WebConfigError> {
    std::fs::read(path).map_err(|e| WebConfigError {
        file: config.to_owned(),
        key: key.map(str::to_owned),
        message: format!("cannot read {} ({e})", path.display()),
    })
}

/// exporter-toolkit resolves relative paths against the directory of the configuration file,
/// so a file and its certificates can move together.
fn resolve(config: &Path, value: &str) -> PathBuf {
    let value = Path::new(value);
    if value.is_absolute() {
        return value.to_owned();
    }
    config
        .parent()
        .map_or_else(|| value.to_owned(), |dir| dir.join(value))
}

/// The files a configuration names, resolved; the watcher re-reads them to notice a renewed
/// certificate. Unparsable text names none.
fn referenced_files(path: &Path, text: &[u8]) -> Vec<PathBuf> {
    let Ok(raw) = parse(path, text) else {
        return Vec::new();
    };
    let Some(tls) = raw.tls_server_config else {
        return Vec::new();
    };
    [tls.cert_file, tls.key_file, tls.client_ca_file]
        .into_iter()
        .flatten()
        .filter(|p| !p.is_empty())
        .map(|p| resolve(path, &p))
        .collect()
}

type TlsParts = (Option<Arc<ServerConfig>>, ClientAuth);

fn build_tls(path: &Path, tls: &RawTls) -> Result<TlsParts, WebConfigError> {
    let err = |key: &str, message: String| WebConfigError {
        file: path.to_owned(),
        key: Some(format!("tls_server_config.{key}")),
        message,
    };
    if let Some((key, message)) = tls.unsupported() {
        return Err(err(key, message.into()));
    }
    let cert_file = match tls.cert_file.as_deref() {
        Some(p) if !p.is_empty() => resolve(path, p),
        _ => {
            return Err(err(
                "cert_file",
                "missing; TLS needs the server certificate (PEM) in cert_file".into(),
            ));
        }
    };
    let key_file = match tls.key_file.as_deref() {
        Some(p) if !p.is_empty() => resolve(path, p),
        _ => {
            return Err(err(
                "key_file",
                "missing; TLS needs the server's private key (PEM) in key_file".into(),
            ));
        }
    };
    let client_auth_name = tls.client_auth_type.as_deref().unwrap_or("");
    let client_auth = ClientAuth::parse(client_auth_name).ok_or_else(|| {
        err(
            "client_auth_type",
            format!(
                "{client_auth_name:?} is not a client auth type; use {}",
                ClientAuth::NAMES
            ),
        )
    })?;
    let versions = protocol_versions(tls).map_err(|(key, message)| err(key, message))?;

    let certs_pem = read(path, &cert_file, Some("tls_server_config.cert_file"))?;
    let certs = CertificateDer::pem_slice_iter(&certs_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            err(
                "cert_file",
                format!("{} is not a PEM certificate ({e})", cert_file.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(err(
            "cert_file",
            format!(
                "{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                cert_file.display()
            ),
        ));
    }
    let key_pem = read(path, &key_file, Some("tls_server_config.key_file"))?;
    // The key's own parse error could quote key material; name the file only.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        err(
            "key_file",
            format!(
                "{} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1)",
                key_file.display()
            ),
        )
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ClientCertVerifier> = match (client_auth, tls.client_ca_file.as_deref()) {
        (ClientAuth::NoClientCert, Some(ca)) if !ca.is_empty() => {
            return Err(err(
                "client_ca_file",
                "set without a client_auth_type that uses it; set client_auth_type to RequireAndVerifyClientCert (or VerifyClientCertIfGiven), or remove client_ca_file".into(),
            ));
        }
        (ClientAuth::NoClientCert, _) => WebPkiClientVerifier::no_client_auth(),
        (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, _) => {
            Arc::new(UncheckedClientCert {
                mandatory: client_auth == ClientAuth::RequireAnyClientCert,
                algorithms: provider.signature_verification_algorithms,
            })
        }
        (_, None) | (_, Some("")) => {
            return Err(err(
                "client_ca_file",
                format!(
                    "missing; client_auth_type {client_auth_name} checks client certificates against the CA certificates (PEM) in client_ca_file"
                ),
            ));
        }
        (_, Some(ca)) => {
            debug_assert!(client_auth.verifies());
            let ca_file = resolve(path, ca);
            let pem = read(path, &ca_file, Some("tls_server_config.client_ca_file"))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let added = cert
                    .map_err(|e| e.to_string())
                    .and_then(|c| roots.add(c).map_err(|e| e.to_string()));
                if let Err(e) = added {
                    return Err(err(
                        "client_ca_file",
                        format!("{} is not a PEM CA certificate ({e})", ca_file.display()),
                    ));
                }
            }
            if roots.is_empty() {
                return Err(err(
                    "client_ca_file",
                    format!("{} holds no PEM certificate", ca_file.display()),
                ));
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let builder = if client_auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder.build().map_err(|e| {
                err(
                    "client_ca_file",
                    format!("{} cannot verify clients ({e})", ca_file.display()),
                )
            })?
        }
    };

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| err("min_version", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            err(
                "key_file",
                format!(
                    "{} does not go with {} ({e}); give the key of that certificate",
                    key_file.display(),
                    cert_file.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Some(Arc::new(config)), client_auth))
}

type VersionError = (&'static str, String);

fn protocol_versions(
    tls: &RawTls,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, VersionError> {
    fn rank(key: &'static str, value: Option<&str>, default: u8) -> Result<u8, VersionError> {
        match value {
            None | Some("") => Ok(default),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(v @ ("TLS10" | "TLS11")) => Err((
                key,
                format!("{v} is obsolete and not offered by withings-exporter; use TLS12 or TLS13"),
            )),
            Some(v) => Err((
                key,
                format!("{v:?} is not a TLS version; use TLS12 or TLS13"),
            )),
        }
    }
    let min = rank("min_version", tls.min_version.as_deref(), 12)?;
    let max = rank("max_version", tls.max_version.as_deref(), 13)?;
    if min > max {
        return Err((
            "max_version",
            "is lower than min_version; no TLS version is left".into(),
        ));
    }
    Ok(
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, version)| version)
            .collect(),
    )
}

/// `RequestClientCert` and `RequireAnyClientCert`: the client must prove it holds the key of
/// the certificate it sends, but the certificate itself is not checked, as in Go.
#[derive(Debug)]
struct UncheckedClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for UncheckedClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The `basic_auth_users` of a configuration, and the check of an `Authorization` header.
///
/// Timing: an unknown user's password is checked against the hash of highest cost in the
/// file, so a failure takes as long whether the user exists or not, and the comparison of the
/// bcrypt output is constant-time (the `bcrypt` crate uses `subtle`). That check is never a
/// success: a password that matches another user's hash under an unknown name is denied like
/// any other, and counted as a failure. Loading the file computes no bcrypt at all.
///
/// Cache: bcrypt at cost 10 costs 50-100 ms of CPU, which a Prometheus scraping every few
/// seconds would pay on every scrape. Like exporter-toolkit we remember verified credentials,
/// but only successes, keyed by HMAC-SHA256 (with a key drawn at start) of user, hash and
/// password, never the password itself. The trade-off: someone able to read this process's
/// memory could test guesses against a cached entry at HMAC speed instead of bcrypt speed;
/// such a reader already sees the Withings token and the health data, so the cache adds
/// little. Failures are not cached, so a flood of wrong guesses cannot evict Prometheus'
/// entry and each guess costs a full bcrypt. A reload builds a new `BasicAuth`, which starts
/// with an empty cache.
///
/// Floods: [`CONCURRENT_CHECKS`] bcrypt checks run at once, and the permit travels into the
/// blocking task, so a client that hangs up does not free it while its check still runs. At
/// most [`MAX_PENDING_CHECKS`] checks wait or run, [`MAX_PENDING_PER_ADDRESS`] of them for one
/// address; beyond, the answer is 429 at once. An address with [`MAX_FAILURES_PER_ADDRESS`]
/// failures within [`FAILURE_WINDOW`] gets 429 without a check (not even against the cache,
/// which would otherwise test its guesses for free) until the window ends. There is no
/// per-user limit on purpose: it would let anyone lock Prometheus' own user out.
pub struct BasicAuth {
    users: HashMap<String, Secret>,
    /// Checked when the user is unknown (the costliest user's hash); None when there are no
    /// users.
    dummy: Option<Secret>,
    cache_key: ring::hmac::Key,
    verified: Mutex<HashSet<[u8; 32]>>,
    limiter: Arc<CheckLimiter>,
    /// Users whose cost is above [`HIGHEST_SENSIBLE_COST`], with that cost.
    costly: Vec<(String, u32)>,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&str> = self.users.keys().map(String::as_str).collect();
        users.sort_unstable();
        f.debug_struct("BasicAuth").field("users", &users).finish()
    }
}

/// The answer to an `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Allowed,
    /// 401: no credentials, or wrong ones.
    Denied,
    /// 429: too many failures from this address, or too many checks pending; try again after
    /// this long.
    Throttled {
        retry_after: Duration,
    },
}

/// What the checks have done so far, for tests and benchmarks: the limits are asserted on
/// these counts, not on timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckStats {
    /// bcrypt checks running now.
    pub running: usize,
    /// The most that ever ran at once.
    pub peak_running: usize,
    /// bcrypt checks completed (the client may have hung up before).
    pub completed: u64,
    /// Requests answered 429.
    pub throttled: u64,
}

/// Admission of bcrypt checks: a semaphore for the checks themselves, counts of pending
/// checks, and the failures of each address.
struct CheckLimiter {
    permits: Arc<tokio::sync::Semaphore>,
    state: Mutex<LimiterState>,
    running: std::sync::atomic::AtomicUsize,
    peak_running: std::sync::atomic::AtomicUsize,
    completed: std::sync::atomic::AtomicU64,
    throttled: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct LimiterState {
    pending: usize,
    pending_by_address: HashMap<std::net::IpAddr, usize>,
    /// Per address: when its window started, and its failures in it.
    failures: HashMap<std::net::IpAddr, (std::time::Instant, u32)>,
}

/// A place among the pending checks, given back when dropped: when the request gives up
/// before its check starts, or when the blocking check ends.
struct PendingSlot {
    limiter: Arc<CheckLimiter>,
    address: std::net::IpAddr,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        if let Ok(mut state) = self.limiter.state.lock() {
            state.pending = state.pending.saturating_sub(1);
            if let Some(n) = state.pending_by_address.get_mut(&self.address) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    state.pending_by_address.remove(&self.address);
                }
            }
        }
    }
}

/// The unit that limits apply to: an IPv4 address, or the /64 of an IPv6 address (one host
/// usually has a whole /64 to pick from).
fn client_key(address: std::net::IpAddr) -> std::net::IpAddr {
    match address {
        std::net::IpAddr::V4(v4) => v4.into(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.into(),
            None => std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)).into(),
        },
    }
}

impl CheckLimiter {
    fn new() -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CHECKS)),
            state: Mutex::new(LimiterState::default()),
            running: 0.into(),
            peak_running: 0.into(),
            completed: 0.into(),
            throttled: 0.into(),
        }
    }

    fn throttle(&self, retry_after: Duration) -> AuthOutcome {
        self.throttled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        AuthOutcome::Throttled {
            retry_after: retry_after.max(Duration::from_secs(1)),
        }
    }

    /// How long the address must still wait, when it has used up its failures.
    fn locked_out(&self, address: std::net::IpAddr) -> Option<Duration> {
        let state = self.state.lock().ok()?;
        let (start, failures) = state.failures.get(&address)?;
        let left = FAILURE_WINDOW.checked_sub(start.elapsed())?;
        (*failures >= MAX_FAILURES_PER_ADDRESS).then_some(left)
    }

    fn record_failure(&self, address: std::net::IpAddr) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = std::time::Instant::now();
        if !state.failures.contains_key(&address) && state.failures.len() >= TRACKED_ADDRESSES {
            state
                .failures
                .retain(|_, (start, _)| now.duration_since(*start) < FAILURE_WINDOW);
            if state.failures.len() >= TRACKED_ADDRESSES {
                // Full of live entries: this address goes untracked; the pending limits
                // still bound what it can cost.
                return;
            }
        }
        let entry = state.failures.entry(address).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    fn admit(self: &Arc<Self>, address: std::net::IpAddr) -> Option<PendingSlot> {
        let mut state = self.state.lock().ok()?;
        let mine = state.pending_by_address.get(&address).copied().unwrap_or(0);
        if state.pending >= MAX_PENDING_CHECKS || mine >= MAX_PENDING_PER_ADDRESS {
            return None;
        }
        state.pending += 1;
        *state.pending_by_address.entry(address).or_insert(0) += 1;
        Some(PendingSlot {
            limiter: Arc::clone(self),
            address,
        })
    }

    fn stats(&self) -> CheckStats {
        use std::sync::atomic::Ordering::Relaxed;
        CheckStats {
            running: self.running.load(Relaxed),
            peak_running: self.peak_running.load(Relaxed),
            completed: self.completed.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
        }
    }
}

impl BasicAuth {
    /// No users: every request is let through.
    pub fn none() -> Self {
        Self {
            users: HashMap::new(),
            dummy: None,
            cache_key: cache_key(),
            verified: Mutex::new(HashSet::new()),
            limiter: Arc::new(CheckLimiter::new()),
            costly: Vec::new(),
        }
    }

    fn new(path: &Path, entries: Vec<(String, String)>) -> Result<Self, WebConfigError> {
        let mut users = HashMap::with_capacity(entries.len());
        let mut costly = Vec::new();
        for (user, hash) in entries {
            let err = |message: String| WebConfigError {
                file: path.to_owned(),
                key: Some(format!("basic_auth_users.{user}")),
                message,
            };
            if user.is_empty() || user.contains(':') {
                return Err(err(
                    "a user name must be non-empty and without ':' (HTTP basic auth splits on it)"
                        .into(),
                ));
            }
            // The parser's own message is enough; the hash is not quoted back.
            let parts: bcrypt::HashParts = hash.parse().map_err(|e: bcrypt::BcryptError| {
                err(format!(
                    "not a bcrypt hash ({e}); generate one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                ))
            })?;
            let cost = parts.get_cost();
            if !(4..=31).contains(&cost) {
                return Err(err(format!(
                    "bcrypt cost {cost} is outside 4-31; generate the hash again"
                )));
            }
            if cost > HIGHEST_SENSIBLE_COST {
                costly.push((user.clone(), cost));
            }
            users.insert(user, Secret::new(hash));
        }
        costly.sort();
        // No bcrypt at load: hashing a dummy at the highest cost made a file with one
        // cost-19 hash take a minute to load and a cost-31 one days (fuzzing found it).
        // An unknown user is checked against the costliest real hash instead (ties broken
        // by name, so the choice does not depend on the map's order).
        let dummy = users
            .iter()
            .filter_map(|(name, hash)| {
                let cost = hash.expose().parse::<bcrypt::HashParts>().ok()?.get_cost();
                Some(((cost, std::cmp::Reverse(name)), hash))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, hash)| hash.clone());
        Ok(Self {
            users,
            dummy,
            cache_key: cache_key(),
            verified: Mutex::new(HashSet::new()),
            limiter: Arc::new(CheckLimiter::new()),
            costly,
        })
    }

    /// True when no user is configured: no request needs credentials.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// What the checks of this configuration have done so far.
    pub fn check_stats(&self) -> CheckStats {
        self.limiter.stats()
    }

    fn cost_warning(&self) -> Option<String> {
        let highest = self.costly.iter().map(|(_, cost)| *cost).max()?;
        let users: Vec<String> = self
            .costly
            .iter()
            .map(|(user, cost)| format!("{} (cost {cost})", crate::text::one_line(user)))
            .collect();
        Some(format!(
            "bcrypt cost above {HIGHEST_SENSIBLE_COST} for {}: each first login (and each unknown user) costs about {} times a cost-10 check, seconds of CPU; hash again with `htpasswd -nBC 10`",
            users.join(", "),
            1u64 << (highest - 10).min(30)
        ))
    }

    /// Whether an `Authorization` header value, sent from `peer`, names a configured user
    /// with the right password. Always allowed without users.
    pub async fn check(&self, authorization: Option<&[u8]>, peer: std::net::IpAddr) -> AuthOutcome {
        let Some(dummy) = &self.dummy else {
            return AuthOutcome::Allowed;
        };
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return AuthOutcome::Denied;
        };
        let address = client_key(peer);
        if let Some(left) = self.limiter.locked_out(address) {
            return self.limiter.throttle(left);
        }
        // bcrypt would compare only the first 72 bytes: a longer password, with any suffix,
        // would pass. It can never be what was hashed, so it is refused unchecked.
        if password.len() > MAX_PASSWORD_BYTES {
            self.limiter.record_failure(address);
            return AuthOutcome::Denied;
        }
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|u| self.users.get(u));
        let hash = known.unwrap_or(dummy).clone();
        let key = self.cache_entry(&user, &hash, &password);
        if known.is_some() && self.is_cached(&key) {
            return AuthOutcome::Allowed;
        }
        let Some(slot) = self.limiter.admit(address) else {
            return self.limiter.throttle(Duration::from_secs(1));
        };
        let Ok(permit) = Arc::clone(&self.limiter.permits).acquire_owned().await else {
            return AuthOutcome::Denied;
        };
        let limiter = Arc::clone(&self.limiter);
        // bcrypt is CPU for tens of milliseconds: off the async workers. The permit and the
        // slot live as long as the check, not as long as the request, which the client can
        // end at any time.
        let matched = tokio::task::spawn_blocking(move || {
            use std::sync::atomic::Ordering::Relaxed;
            let running = limiter.running.fetch_add(1, Relaxed) + 1;
            limiter.peak_running.fetch_max(running, Relaxed);
            let matched = bcrypt::verify(&password, hash.expose()).unwrap_or(false);
            limiter.running.fetch_sub(1, Relaxed);
            limiter.completed.fetch_add(1, Relaxed);
            if !matched {
                limiter.record_failure(address);
            }
            drop((permit, slot));
            matched
        })
        .await
        .unwrap_or(false);
        if matched && known.is_some() {
            self.remember(key);
            AuthOutcome::Allowed
        } else {
            if matched {
                // Another user's password under an unknown name: still no user.
                self.limiter.record_failure(address);
            }
            AuthOutcome::Denied
        }
    }

    fn cache_entry(&self, user: &[u8], hash: &Secret, password: &[u8]) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.cache_key);
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        for part in [user, hash.expose().as_bytes(), password] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn is_cached(&self, key: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .map(|cache| cache.contains(key))
            .unwrap_or(false)
    }

    fn remember(&self, key: [u8; 32]) {
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= AUTH_CACHE_CAPACITY
                && let Some(old) = cache.iter().next().copied()
            {
                cache.remove(&old);
            }
            cache.insert(key);
        }
    }
}

fn cache_key() -> ring::hmac::Key {
    // Key::generate fails only without a system RNG, in which case TLS would not work either;
    // a fixed fallback still keeps passwords out of the cache.
    ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
        .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"withings-exporter"))
}

/// `Basic base64(user:password)`, the scheme name in any case.
fn parse_basic(header: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    use base64::Engine;
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// A digest of the file and of every file it names, to notice any of them changing.
fn fingerprint(path: &Path) -> Option<ring::digest::Digest> {
    let text = std::fs::read(path).ok()?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&(text.len() as u64).to_be_bytes());
    ctx.update(&text);
    for file in referenced_files(path, &text) {
        match std::fs::read(&file) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A self-signed server certificate and key, written as cert.pem and key.pem.
    fn cert_files(dir: &Path) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        write(dir, "cert.pem", &cert.pem());
        write(dir, "key.pem", &key.serialize_pem());
    }

    fn load_text(text: &str) -> (tempfile::TempDir, Result<WebSecurity, WebConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        cert_files(dir.path());
        let path = write(dir.path(), "web.yml", text);
        let loaded = WebSecurity::load(&path);
        (dir, loaded)
    }

    fn error_of(text: &str) -> WebConfigError {
        match load_text(text).1 {
            Ok(security) => panic!("accepted {text:?}: {security:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_file_and_empty_sections_configure_nothing() {
        for text in [
            "",
            "\n",
            "---\n",
            "tls_server_config: {}\nbasic_auth_users: {}\n",
        ] {
            let security = load_text(text).1.unwrap();
            assert!(security.tls.is_none(), "{text:?}");
            assert!(security.users.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn tls_configured_tells_the_scheme_without_loading() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("", false),
            ("tls_server_config: {}\n", false),
            ("basic_auth_users: {}\n", false),
            // The certificate need not exist: only the scheme is asked for.
            (
                "tls_server_config:\n  cert_file: none.pem\n  key_file: none.pem\n",
                true,
            ),
        ];
        for (text, tls) in cases {
            let path = write(dir.path(), "web.yml", text);
            assert_eq!(tls_configured(&path), Ok(tls), "{text:?}");
        }
        let path = write(dir.path(), "web.yml", "tls_server_config: [\n");
        assert!(tls_configured(&path).is_err());
        assert!(tls_configured(&dir.path().join("absent.yml")).is_err());
    }

    #[test]
    fn relative_certificate_paths_are_resolved_against_the_file() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let (_dir, loaded) = load_text(&format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS13\nbasic_auth_users:\n  alice: {hash}\n"
        ));
        let security = loaded.unwrap();
        let tls = security.tls.expect("TLS configured");
        assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(security.users.len(), 1);
    }

    #[test]
    fn each_invalid_file_names_the_file_and_the_key() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let tls = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
        let cases: Vec<(String, Option<&str>, &str)> = vec![
            (
                "basic_auth_users: [unclosed\n".into(),
                None,
                "not a valid web configuration",
            ),
            (
                "basic_auth_user:\n  alice: x\n".into(),
                None,
                "unknown field",
            ),
            (
                "tls_server_config:\n  cert_fle: cert.pem\n".into(),
                None,
                "unknown field",
            ),
            (
                "basic_auth_users:\n  alice: not-a-hash\n".into(),
                Some("basic_auth_users.alice"),
                "not a bcrypt hash",
            ),
            (
                "basic_auth_users:\n  alice: 5f4dcc3b5aa765d61d8327deb882cf99\n".into(),
                Some("basic_auth_users.alice"),
                "not a bcrypt hash",
            ),
            (
                format!("basic_auth_users:\n  alice: {hash}\n  alice: {hash}\n"),
                None,
                "listed twice",
            ),
            (
                format!("basic_auth_users:\n  'a:b': {hash}\n"),
                Some("basic_auth_users.a:b"),
                "without ':'",
            ),
            (
                "tls_server_config:\n  cert_file: missing.pem\n  key_file: key.pem\n".into(),
                Some("tls_server_config.cert_file"),
                "cannot read",
            ),
            (
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: missing.pem\n".into(),
                Some("tls_server_config.key_file"),
                "cannot read",
            ),
            (
                "tls_server_config:\n  key_file: key.pem\n".into(),
                Some("tls_server_config.cert_file"),
                "missing",
            ),
            (
                "tls_server_config:\n  cert_file: key.pem\n  key_file: key.pem\n".into(),
                Some("tls_server_config.cert_file"),
                "no PEM certificate",
            ),
            (
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: cert.pem\n".into(),
                Some("tls_server_config.key_file"),
                "no usable PEM private key",
            ),
            (
                format!("{tls}  client_auth_type: RequireClientCert\n"),
                Some("tls_server_config.client_auth_type"),
                "RequireAndVerifyClientCert",
            ),
            (
                format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"),
                Some("tls_server_config.client_ca_file"),
                "missing",
            ),
            (
                format!("{tls}  client_ca_file: cert.pem\n"),
                Some("tls_server_config.client_ca_file"),
                "without a client_auth_type",
            ),
            (
                format!("{tls}  min_version: TLS11\n"),
                Some("tls_server_config.min_version"),
                "obsolete",
            ),
            (
                format!("{tls}  min_version: TLS13\n  max_version: TLS12\n"),
                Some("tls_server_config.max_version"),
                "lower than min_version",
            ),
            (
                format!("{tls}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
                Some("tls_server_config.cipher_suites"),
                "not supported",
            ),
            (
                "http_server_config:\n  http2: false\n".into(),
                Some("http_server_config"),
                "not supported",
            ),
        ];
        for (text, key, needle) in cases {
            let e = error_of(&text);
            assert!(e.file.ends_with("web.yml"), "{text:?}: {e}");
            assert_eq!(e.key.as_deref(), key, "{text:?}: {e}");
            let line = e.to_string();
            assert!(line.contains(needle), "{text:?}: {line}");
            assert!(line.contains("web.yml"), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        cert_files(dir.path());
        let other = rcgen::KeyPair::generate().unwrap();
        write(dir.path(), "other.pem", &other.serialize_pem());
        let path = write(
            dir.path(),
            "web.yml",
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: other.pem\n",
        );
        let e = WebSecurity::load(&path).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls_server_config.key_file"), "{e}");
        assert!(e.to_string().contains("does not go with"), "{e}");
    }

    #[test]
    fn errors_never_quote_a_hash_or_a_key() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        // Truncated: parses as YAML, fails as bcrypt.
        let broken = &hash[..50];
        let e = error_of(&format!("basic_auth_users:\n  alice: {broken}\n"));
        assert!(!e.to_string().contains(broken), "{e}");
        let security = load_text(&format!("basic_auth_users:\n  alice: {hash}\n"))
            .1
            .unwrap();
        assert!(!format!("{security:?}").contains(&hash[7..]));
    }

    #[test]
    fn basic_header_parsing() {
        use base64::Engine;
        let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let header = format!("Basic {}", encode("alice:pa:ss"));
        assert_eq!(
            parse_basic(header.as_bytes()),
            Some((b"alice".to_vec(), b"pa:ss".to_vec()))
        );
        let lower = format!("basic {}", encode("bob:"));
        assert_eq!(
            parse_basic(lower.as_bytes()),
            Some((b"bob".to_vec(), Vec::new()))
        );
        for bad in [
            format!("Bearer {}", encode("alice:pw")),
            format!("Basic {}", encode("no-colon")),
            "Basic !!!not-base64".to_string(),
            "Basic".to_string(),
        ] {
            assert_eq!(parse_basic(bad.as_bytes()), None, "{bad}");
        }
    }

    fn header(user: &str, password: &str) -> Vec<u8> {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
        .into_bytes()
    }

    const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    async fn allows(auth: &BasicAuth, authorization: Option<&[u8]>) -> bool {
        auth.check(authorization, LOCAL).await == AuthOutcome::Allowed
    }

    fn address(i: usize) -> std::net::IpAddr {
        std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).into()
    }

    fn one_user(password: &str, cost: u32) -> BasicAuth {
        let hash = bcrypt::hash(password, cost).unwrap();
        BasicAuth::new(Path::new("web.yml"), vec![("alice".into(), hash)]).unwrap()
    }

    /// Clients that hang up while their check runs: the checks that go on without them still
    /// count against the limit, so the checks running at once never exceed it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_of_clients_that_hang_up_still_run_one_at_a_time() {
        let auth = Arc::new(one_user("right", 8));
        for round in 0..6 {
            let attempts: Vec<_> = (0..16)
                .map(|i| {
                    let auth = Arc::clone(&auth);
                    tokio::spawn(async move {
                        let wrong = header("alice", &format!("wrong-{round}-{i}"));
                        // Hangs up long before a cost-8 check ends.
                        let _ = tokio::time::timeout(
                            Duration::from_millis(1),
                            auth.check(Some(&wrong), address(round * 16 + i)),
                        )
                        .await;
                    })
                })
                .collect();
            for attempt in attempts {
                attempt.await.unwrap();
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while auth.check_stats().running > 0 {
            assert!(std::time::Instant::now() < deadline, "checks never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stats = auth.check_stats();
        assert!(stats.completed >= 1, "{stats:?}");
        assert!(stats.peak_running <= CONCURRENT_CHECKS, "{stats:?}");
        // The pending limit refused the rest at once rather than queueing them.
        assert!(stats.throttled >= 1, "{stats:?}");
        assert!(allows(&auth, Some(&header("alice", "right"))).await);
    }

    #[tokio::test]
    async fn a_password_longer_than_bcrypt_reads_is_refused() {
        let real: String = "p".repeat(MAX_PASSWORD_BYTES);
        let auth = one_user(&real, 4);
        assert!(allows(&auth, Some(&header("alice", &real))).await);
        for suffix in ["x", "anything at all"] {
            let longer = format!("{real}{suffix}");
            // bcrypt alone would accept it: it reads 72 bytes.
            assert!(bcrypt::verify(&longer, auth.users["alice"].expose()).unwrap());
            assert!(
                !allows(&auth, Some(&header("alice", &longer))).await,
                "{suffix}"
            );
        }
    }

    #[tokio::test]
    async fn an_address_that_keeps_failing_is_refused_without_a_check() {
        let auth = one_user("right", 4);
        let attacker = address(1);
        for i in 0..MAX_FAILURES_PER_ADDRESS {
            let wrong = header("alice", &format!("guess-{i}"));
            assert_eq!(
                auth.check(Some(&wrong), attacker).await,
                AuthOutcome::Denied
            );
        }
        let checked = auth.check_stats().completed;
        let right = header("alice", "right");
        // Even the right password, even cached, until the window ends: a locked-out address
        // must not test guesses against the cache for free.
        assert!(allows(&auth, Some(&right)).await);
        match auth.check(Some(&right), attacker).await {
            AuthOutcome::Throttled { retry_after } => {
                assert!(retry_after >= Duration::from_secs(1));
                assert!(retry_after <= FAILURE_WINDOW);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            auth.check_stats().completed,
            checked + 1,
            "only LOCAL's check ran"
        );
        // Another address is not affected.
        assert!(auth.check(Some(&right), address(2)).await == AuthOutcome::Allowed);
    }

    #[test]
    fn limits_apply_to_an_ipv4_address_or_an_ipv6_64() {
        let v6 = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(client_key(v6("2001:db8:1:2:3:4:5:6")), v6("2001:db8:1:2::"));
        assert_eq!(client_key(v6("::ffff:192.0.2.7")), v6("192.0.2.7"));
        assert_eq!(client_key(v6("192.0.2.7")), v6("192.0.2.7"));
    }

    #[test]
    fn the_pending_checks_are_bounded_overall_and_per_address() {
        let limiter = Arc::new(CheckLimiter::new());
        let mine: Vec<_> = (0..MAX_PENDING_PER_ADDRESS)
            .map(|_| limiter.admit(address(0)).unwrap())
            .collect();
        assert!(limiter.admit(address(0)).is_none());
        let others: Vec<_> = (1..MAX_PENDING_CHECKS - MAX_PENDING_PER_ADDRESS + 1)
            .map(|i| limiter.admit(address(i)).unwrap())
            .collect();
        assert!(limiter.admit(address(99)).is_none());
        drop(others);
        drop(mine);
        assert!(limiter.admit(address(0)).is_some());
        let state = limiter.state.lock().unwrap();
        assert_eq!(state.pending, 0);
        assert!(state.pending_by_address.is_empty());
    }

    #[test]
    fn the_failures_of_a_bounded_number_of_addresses_are_remembered() {
        let limiter = CheckLimiter::new();
        for i in 0..TRACKED_ADDRESSES * 2 {
            limiter.record_failure(address(i));
        }
        assert_eq!(
            limiter.state.lock().unwrap().failures.len(),
            TRACKED_ADDRESSES
        );
    }

    #[test]
    fn costs_above_twelve_are_warned_about_once_per_load() {
        let cheap = bcrypt::hash("x", 4).unwrap();
        // A cost-13 hash without spending seconds making it: the dummy is hashed at 13 anyway.
        let dear = cheap.replacen("$04$", "$13$", 1);
        let auth = BasicAuth::new(
            Path::new("web.yml"),
            vec![("cheap".into(), cheap.clone()), ("dear".into(), dear)],
        )
        .unwrap();
        let warning = auth.cost_warning().expect("a warning");
        assert!(warning.contains("dear (cost 13)"), "{warning}");
        assert!(!warning.contains("cheap"), "{warning}");
        assert!(!warning.contains(&cheap[7..]), "{warning}");
        let twelve = BasicAuth::new(
            Path::new("web.yml"),
            vec![("u".into(), cheap.replacen("$04$", "$12$", 1))],
        )
        .unwrap();
        assert_eq!(twelve.cost_warning(), None);
    }

    #[tokio::test]
    async fn only_the_right_user_and_password_pass() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let auth = BasicAuth::new(Path::new("web.yml"), vec![("alice".into(), hash)]).unwrap();
        assert!(allows(&auth, Some(&header("alice", "right"))).await);
        // Again, now from the cache.
        assert!(allows(&auth, Some(&header("alice", "right"))).await);
        assert!(!allows(&auth, Some(&header("alice", "wrong"))).await);
        assert!(!allows(&auth, Some(&header("bob", "right"))).await);
        assert!(!allows(&auth, Some(&header("alice", ""))).await);
        assert!(!allows(&auth, None).await);
        assert!(allows(&BasicAuth::none(), None).await);
    }

    #[tokio::test]
    async fn htpasswd_and_go_hash_prefixes_are_accepted() {
        // htpasswd writes $2y$, Go's bcrypt $2a$; the algorithm is the same as $2b$.
        let hash = bcrypt::hash("pw", 4).unwrap();
        assert!(hash.starts_with("$2b$"), "{hash}");
        for prefix in ["$2y$", "$2a$"] {
            let other = format!("{prefix}{}", &hash[4..]);
            let auth = BasicAuth::new(Path::new("web.yml"), vec![("u".into(), other)]).unwrap();
            assert!(allows(&auth, Some(&header("u", "pw"))).await, "{prefix}");
            assert!(!allows(&auth, Some(&header("u", "pW"))).await, "{prefix}");
        }
    }

    #[test]
    fn the_dummy_hash_costs_as_much_as_the_dearest_user() {
        let auth = BasicAuth::new(
            Path::new("web.yml"),
            vec![
                ("a".into(), bcrypt::hash("x", 4).unwrap()),
                ("b".into(), bcrypt::hash("y", 5).unwrap()),
            ],
        )
        .unwrap();
        let dummy: bcrypt::HashParts = auth.dummy.as_ref().unwrap().expose().parse().unwrap();
        assert_eq!(dummy.get_cost(), 5);
    }

    /// The check of an unknown user runs against the costliest real hash, so a real user's
    /// password under a name that is not in the file matches it: that is still a denial, and a
    /// failure of that address.
    #[tokio::test]
    async fn another_users_password_under_an_unknown_name_is_denied() {
        let auth = one_user("right", 4);
        assert!(allows(&auth, Some(&header("alice", "right"))).await);
        let attacker = address(7);
        for name in ["mallory", "Alice", ""] {
            assert_eq!(
                auth.check(Some(&header(name, "right")), attacker).await,
                AuthOutcome::Denied,
                "{name:?}"
            );
        }
        assert_eq!(auth.check_stats().completed, 4);
        for _ in 3..MAX_FAILURES_PER_ADDRESS {
            let _ = auth
                .check(Some(&header("mallory", "right")), attacker)
                .await;
        }
        // Counted as failures: the address is now refused without a check.
        assert!(matches!(
            auth.check(Some(&header("alice", "right")), attacker).await,
            AuthOutcome::Throttled { .. }
        ));
    }

    #[test]
    fn the_cache_holds_a_bounded_number_of_digests_not_passwords() {
        let auth = BasicAuth::none();
        let hash = Secret::new("h");
        for i in 0..(AUTH_CACHE_CAPACITY * 3) {
            auth.remember(auth.cache_entry(b"u", &hash, i.to_string().as_bytes()));
        }
        assert_eq!(auth.verified.lock().unwrap().len(), AUTH_CACHE_CAPACITY);
        let a = auth.cache_entry(b"ab", &hash, b"c");
        let b = auth.cache_entry(b"a", &hash, b"bc");
        assert_ne!(a, b);
    }

    #[test]
    fn a_bad_reload_keeps_the_previous_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("pw", 4).unwrap();
        let path = write(
            dir.path(),
            "web.yml",
            &format!("basic_auth_users:\n  alice: {hash}\n"),
        );
        let web = WebConfig::load(&path).unwrap();
        assert_eq!(web.reload_if_changed(), Ok(false));
        write(dir.path(), "web.yml", "basic_auth_users:\n  alice: nope\n");
        let e = web.reload_if_changed().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("basic_auth_users.alice"));
        assert_eq!(web.current().users.len(), 1);
        // Reported once per change, not at every poll.
        assert_eq!(web.reload_if_changed(), Ok(false));
        write(
            dir.path(),
            "web.yml",
            &format!("basic_auth_users:\n  alice: {hash}\n  bob: {hash}\n"),
        );
        assert_eq!(web.reload_if_changed(), Ok(true));
        assert_eq!(web.current().users.len(), 2);
    }

    #[test]
    fn a_reload_cannot_switch_tls_on_or_off() {
        let dir = tempfile::tempdir().unwrap();
        cert_files(dir.path());
        let path = write(dir.path(), "web.yml", "");
        let web = WebConfig::load(&path).unwrap();
        assert!(!web.tls_enabled());
        write(
            dir.path(),
            "web.yml",
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n",
        );
        let e = web.reload().unwrap_err();
        assert!(e.to_string().contains("restart"), "{e}");
        assert!(web.current().tls.is_none());
    }

    #[test]
    fn a_renewed_certificate_counts_as_a_change() {
        let dir = tempfile::tempdir().unwrap();
        cert_files(dir.path());
        let path = write(
            dir.path(),
            "web.yml",
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n",
        );
        let web = WebConfig::load(&path).unwrap();
        let before = web.current();
        assert_eq!(web.reload_if_changed(), Ok(false));
        cert_files(dir.path());
        assert_eq!(web.reload_if_changed(), Ok(true));
        assert!(!Arc::ptr_eq(&before, &web.current()));
    }
}
