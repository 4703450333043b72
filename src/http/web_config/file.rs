//! Reading the file: the YAML as written, checked strictly, and the files it names.

use super::WebConfigError;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The file as written. `Option<Value>` fields are keys exporter-toolkit accepts and we refuse.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) tls_server_config: Option<RawTls>,
    #[serde(default, deserialize_with = "unique_users")]
    pub(super) basic_auth_users: Option<Vec<(String, String)>>,
    pub(super) http_server_config: Option<serde_norway::Value>,
    pub(super) rate_limit: Option<serde_norway::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) client_auth_type: Option<String>,
    pub(super) client_ca_file: Option<String>,
    pub(super) min_version: Option<String>,
    pub(super) max_version: Option<String>,
    cert: Option<serde_norway::Value>,
    key: Option<serde_norway::Value>,
    client_ca: Option<serde_norway::Value>,
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
    prefer_server_cipher_suites: Option<serde_norway::Value>,
    client_allowed_sans: Option<serde_norway::Value>,
}

impl RawTls {
    pub(super) fn is_empty(&self) -> bool {
        self.cert_file.is_none()
            && self.key_file.is_none()
            && self.client_auth_type.is_none()
            && self.client_ca_file.is_none()
            && self.min_version.is_none()
            && self.max_version.is_none()
            && self.unsupported().is_none()
    }

    pub(super) fn unsupported(&self) -> Option<(&'static str, &'static str)> {
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

/// Whether the file turns TLS on, read without loading certificates or hashing anything: for
/// a client of the server (the `healthcheck` subcommand) that only needs the scheme.
pub fn tls_configured(path: &Path) -> Result<bool, WebConfigError> {
    let text = read(path, path, None)?;
    let raw = parse(path, &text)?;
    Ok(raw.tls_server_config.is_some_and(|tls| !tls.is_empty()))
}

pub(super) fn parse(path: &Path, text: &[u8]) -> Result<RawFile, WebConfigError> {
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

/// The web configuration and the certificates, keys and CAs it names are read no larger than
/// this: a whole CA bundle is a few hundred KiB.
pub(super) const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a file of the web configuration as the token files are read: a regular file only,
/// at most [`MAX_FILE_BYTES`], never blocking (a FIFO put in place of a certificate must not
/// wedge the reload, and every later one, behind a read that never ends).
pub(super) fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use crate::files::{ReadRefusal, read_regular_file};
    match read_regular_file(path, MAX_FILE_BYTES) {
        Ok((bytes, _)) => Ok(bytes),
        Err(ReadRefusal::Io(e)) => Err(e.to_string()),
        Err(ReadRefusal::NotAFile(kind)) => Err(format!(
            "it is {kind}, not a regular file, and was not read; put a regular file there"
        )),
        Err(ReadRefusal::TooLarge) => Err(format!(
            "it is larger than {MAX_FILE_BYTES} bytes and was not read"
        )),
    }
}

pub(super) fn read(
    config: &Path,
    path: &Path,
    key: Option<&str>,
) -> Result<Vec<u8>, WebConfigError> {
    read_bounded(path).map_err(|e| WebConfigError {
        file: config.to_owned(),
        key: key.map(str::to_owned),
        message: format!("cannot read {} ({e})", path.display()),
    })
}

/// exporter-toolkit resolves relative paths against the directory of the configuration file,
/// so a file and its certificates can move together.
pub(super) fn resolve(config: &Path, value: &str) -> PathBuf {
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
pub(super) fn referenced_files(path: &Path, text: &[u8]) -> Vec<PathBuf> {
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
