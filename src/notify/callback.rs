//! The callback URL Withings notifies, and the secret path segment that is its only
//! protection: Withings does not sign notifications, so whoever knows the URL can send one.
//! The secret is generated once and kept beside the tokens, so that subscriptions made
//! before a restart still point at a path this exporter serves.

use crate::secret::Secret;
use base64::Engine;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use url::Url;

/// The file beside the tokens. A dot file: the account directory scan ignores those.
pub const SECRET_FILE: &str = ".notify-secret";
use crate::config::CALLBACK_SECRET_BYTES as SECRET_BYTES;
pub use crate::config::MAX_CALLBACK_URL_LEN as MAX_URL_LEN;
/// Shortest secret accepted from the file: 22 characters are 132 bits.
const MIN_SECRET_CHARS: usize = 22;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the notification secret {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "the notification secret {path} {why} and was not read; delete it to have a new one made, then restart (subscriptions are renewed)"
    )]
    Refused { path: PathBuf, why: String },
    #[error(
        "the notification secret {path} is not usable (it must hold at least 22 URL-safe base64 characters); delete it to have a new one made, then restart (subscriptions are renewed)"
    )]
    Malformed { path: PathBuf },
    #[error("cannot write the notification secret {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot generate a random secret: {0}")]
    Random(String),
}

pub use crate::config::parse::parse_callback_url;

/// The full callback: the configured URL, the secret, and the path this exporter serves.
pub struct Callback {
    base: Url,
    secret: Secret,
    /// The configured path without a trailing slash ("/withings/notify"; "" for the root).
    prefix: String,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted_url())
    }
}

impl Callback {
    pub fn new(base: Url, secret: Secret) -> Self {
        let prefix = base.path().trim_end_matches('/').to_owned();
        Self {
            base,
            secret,
            prefix,
        }
    }

    /// What `subscribe` sends to Withings. Never log it.
    pub fn full_url(&self) -> Secret {
        Secret::new(format!(
            "{}/{}",
            self.base.as_str().trim_end_matches('/'),
            self.secret.expose()
        ))
    }

    /// For log lines and the operator: the URL with `<redacted>` for the secret.
    pub fn redacted_url(&self) -> String {
        format!("{}/<redacted>", self.base.as_str().trim_end_matches('/'))
    }

    /// The path for log lines.
    pub fn redacted_path(&self) -> String {
        format!("{}/<redacted>", self.prefix)
    }

    /// The path prefix (the configured path and a slash) under which every request is a
    /// notification, whatever follows: exempt from basic auth, never logged as is.
    pub fn owns(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// Whether `path` is exactly the notification path with the right secret, compared in
    /// constant time so that timing does not tell how much of a guess was right.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return false;
        };
        constant_time_eq(rest.as_bytes(), self.secret.expose().as_bytes())
    }

    /// Whether a callback URL from Withings' `list` is ours.
    pub fn is_ours(&self, url: &str) -> bool {
        constant_time_eq(url.as_bytes(), self.full_url().expose().as_bytes())
    }

    /// Whether the URL points at this machine (the demo, tests).
    pub fn is_loopback(&self) -> bool {
        match self.base.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        }
    }

    /// What Withings will refuse in this URL, for the one warning at start; `None` when it is
    /// public HTTPS on 443 with a domain name.
    pub fn refusal_warning(&self) -> Option<String> {
        let mut problems = Vec::new();
        if self.base.scheme() != "https" {
            problems.push("it is not https".to_owned());
        }
        if self.base.port_or_known_default() != Some(443) {
            problems.push(format!(
                "its port is {}, not 443",
                self.base.port_or_known_default().unwrap_or(0)
            ));
        }
        if !matches!(self.base.host(), Some(url::Host::Domain(_))) {
            problems.push("its host is an IP address, not a domain name".to_owned());
        }
        (!problems.is_empty()).then(|| {
            format!(
                "WITHINGS_CALLBACK_URL {} will be refused by Withings: {} (Withings needs public HTTPS on port 443 with a domain name); accepted for tests and the demo",
                self.redacted_url(),
                problems.join(", ")
            )
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // The length of the secret is no secret (it is fixed); its content is.
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where the secret is kept: in `WITHINGS_TOKEN_DIR`, or beside `WITHINGS_TOKEN_FILE`.
pub fn secret_path(token_dir: Option<&Path>, token_file: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = token_dir {
        return Some(dir.join(SECRET_FILE));
    }
    let file = token_file?;
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty());
    Some(parent.unwrap_or(Path::new(".")).join(SECRET_FILE))
}

/// The longest secret file read: a secret is at most 128 characters.
const MAX_SECRET_FILE_BYTES: u64 = 1024;

/// The secret file's text, read as the token files are: a regular file only, bounded, never
/// blocking (a FIFO would hang the start, a link to `/dev/zero` fill the memory). `None`
/// when there is no file.
fn read_secret(path: &Path) -> Result<Option<String>, SecretError> {
    use crate::files::{ReadRefusal, read_regular_file};
    let refused = |why: String| SecretError::Refused {
        path: path.to_owned(),
        why,
    };
    match read_regular_file(path, MAX_SECRET_FILE_BYTES) {
        // Not UTF-8 is as unusable as too short: validate() says so without quoting it.
        Ok((bytes, _)) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(ReadRefusal::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(ReadRefusal::Io(cause)) => Err(SecretError::Read {
            path: path.to_owned(),
            cause,
        }),
        Err(ReadRefusal::NotAFile(kind)) => Err(refused(format!("is {kind}, not a regular file,"))),
        Err(ReadRefusal::TooLarge) => Err(refused(format!(
            "is larger than {MAX_SECRET_FILE_BYTES} bytes"
        ))),
    }
}

/// The secret in `path`, made (mode 0600, written whole or not at all) when there is none.
pub fn load_or_create_secret(path: &Path) -> Result<Secret, SecretError> {
    if let Some(text) = read_secret(path)? {
        return validate(path, &text);
    }
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::getrandom(&mut bytes).map_err(|e| SecretError::Random(e.to_string()))?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let write_err = |cause| SecretError::Write {
        path: path.to_owned(),
        cause,
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(secret.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        // A link fails if the file exists: two exporters starting at once keep one secret.
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(Secret::new(secret)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match read_secret(path)? {
            Some(text) => validate(path, &text),
            None => Err(SecretError::Read {
                path: path.to_owned(),
                cause: std::io::ErrorKind::NotFound.into(),
            }),
        },
        Err(cause) => Err(write_err(cause)),
    }
}

fn validate(path: &Path, text: &str) -> Result<Secret, SecretError> {
    let secret = text.trim();
    let url_safe = secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if secret.len() < MIN_SECRET_CHARS || secret.len() > 128 || !url_safe {
        return Err(SecretError::Malformed {
            path: path.to_owned(),
        });
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the notification secret can be read by other users; chmod 600 it"
        );
    }
    Ok(Secret::new(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_FILE);
        let first = load_or_create_secret(&path).unwrap();
        assert!(first.expose().len() >= 22);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create_secret(&path).unwrap();
        assert_eq!(first.expose(), again.expose());
        let other = load_or_create_secret(&dir.path().join("other")).unwrap();
        assert_ne!(first.expose(), other.expose());
    }

    #[test]
    fn a_short_secret_file_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_FILE);
        std::fs::write(&path, "short-guessable").unwrap();
        let e = load_or_create_secret(&path).unwrap_err().to_string();
        assert!(!e.contains("short-guessable"), "{e}");
    }

    /// Runs `f` on its own thread; fails the test if it has not returned within 10 s.
    fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading the secret blocked")
    }

    #[test]
    fn a_fifo_a_device_or_a_huge_file_as_the_secret_is_refused_unread() {
        // Bug 8: a FIFO hung the start, /dev/zero ran out of memory, a huge file was read whole.
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let huge = dir.path().join("huge");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(200 * 1024 * 1024)
            .unwrap();
        for (path, why) in [
            (fifo, "FIFO"),
            (zero, "character device"),
            (huge, "larger than"),
        ] {
            let p = path.clone();
            let e = within_deadline(move || load_or_create_secret(&p))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
            assert!(e.contains("delete it") && !e.contains('\n'), "{e}");
            // Refused, not replaced: the operator decides.
            assert!(std::fs::symlink_metadata(&path).is_ok());
        }
    }

    #[test]
    fn urls_are_checked_and_what_withings_refuses_is_warned_about() {
        assert!(parse_callback_url("ftp://x.org/n").is_err());
        assert!(parse_callback_url("https://u:p@x.org/n").is_err());
        assert!(parse_callback_url("https://x.org/n?a=1").is_err());
        assert!(parse_callback_url("https://x.org/").is_err());
        assert!(parse_callback_url("https://x.org").is_err());
        let long = format!("https://x.org/{}", "a".repeat(240));
        assert!(parse_callback_url(&long).is_err());
        let good = parse_callback_url("https://health.example.org/withings/notify/").unwrap();
        let cb = Callback::new(good, Secret::new("s".repeat(24)));
        assert!(cb.refusal_warning().is_none());
        assert!(cb.owns("/withings/notify/anything"));
        assert!(!cb.owns("/withings/notifyx"));
        assert!(cb.matches(&format!("/withings/notify/{}", "s".repeat(24))));
        assert!(!cb.matches("/withings/notify/sss"));
        let local = parse_callback_url("http://127.0.0.1:9101/withings/notify").unwrap();
        let w = Callback::new(local, Secret::new("s".repeat(24)))
            .refusal_warning()
            .unwrap();
        assert!(w.contains("not https") && w.contains("9101") && w.contains("IP address"));
        assert!(!w.contains(&"s".repeat(24)));
    }
}
