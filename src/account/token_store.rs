//! The token file: the one place a rotated refresh token survives a restart.
//!
//! Withings replaces the refresh token on every refresh and soon kills the old one, so a
//! write that is lost or torn locks the user out. Every save therefore goes to a new file in
//! the same directory, is flushed to disk, renamed over the old one (atomic on POSIX), and
//! the directory entry is flushed too: a crash leaves the old file or the new one, whole.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// What the token file holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTokens {
    pub access_token: Secret,
    pub refresh_token: Secret,
    /// Unix seconds at which the access token expires.
    pub expires_at: i64,
    /// Unix seconds at which the pair was obtained; with `expires_at` it gives the lifetime,
    /// which decides how early to refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obtained_at: Option<i64>,
    #[serde(default)]
    pub userid: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTokens")
            .field("expires_at", &self.expires_at)
            .field("obtained_at", &self.obtained_at)
            .field("userid", &self.userid)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Why the content of a token file is not a token pair. `detail` never quotes the content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct MalformedTokens {
    pub detail: String,
}

impl StoredTokens {
    /// The pair in the content of a token file: what [`TokenStore::load`] reads, given as
    /// bytes so that it can be checked (and fuzzed) without a file.
    pub fn parse(bytes: &[u8]) -> Result<Self, MalformedTokens> {
        let malformed = |detail: String| MalformedTokens { detail };
        // serde_json's messages can quote a value ("invalid type: string \"...\""), and a
        // value here may be a token: report only where and what kind of error it was.
        // A missing field is named from our own list, never from serde's message.
        let tokens: StoredTokens = serde_json::from_slice(bytes).map_err(|e| {
            malformed(match crate::text::missing_field(&e, Self::FIELDS) {
                Some(field) => format!("{field} is missing"),
                None => format!(
                    "JSON {:?} error at line {} column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            })
        })?;
        if let Some(flaw) = crate::secret::token_flaw(tokens.refresh_token.expose()) {
            return Err(malformed(format!("refresh_token {flaw}")));
        }
        // Empty until the first refresh when the file was made from WITHINGS_REFRESH_TOKEN.
        if !tokens.access_token.is_empty()
            && let Some(flaw) = crate::secret::token_flaw(tokens.access_token.expose())
        {
            return Err(malformed(format!("access_token {flaw}")));
        }
        Ok(tokens)
    }

    /// The fields a token file must have.
    const FIELDS: &'static [&'static str] = &["access_token", "refresh_token", "expires_at"];

    /// Whether the pair should be refreshed at `now` (unix seconds): from a tenth of its
    /// lifetime before it expires, at most `max_margin` seconds before, so that a refresh
    /// that fails has time to be retried while the access token still works.
    pub fn refresh_due(&self, now: i64, max_margin: i64) -> bool {
        if self.access_token.is_empty() {
            return true;
        }
        let margin = match self.obtained_at {
            // Saturating: the file may hold any i64, and `expires_at` near i64::MAX with a
            // negative `obtained_at` overflowed (a panic in a debug build).
            Some(obtained) => max_margin.min(self.expires_at.saturating_sub(obtained).max(0) / 10),
            None => max_margin,
        };
        now >= self.expires_at.saturating_sub(margin)
    }
}

/// Why the token file could not be read or written. Messages name the file and what to
/// do, and never quote its content.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // `cause`, not `source`: the message already includes it, and a source would make
    // anyhow's `{:#}` print it twice.
    #[error("cannot read the token file {path}: {cause}; check the path and its permissions")]
    Read { path: PathBuf, cause: io::Error },
    #[error(
        "the token file {path} is not a valid token file ({detail}); it was left untouched: restore it from a backup, or delete it and run `withings-exporter auth`"
    )]
    Malformed { path: PathBuf, detail: String },
    #[error("cannot lock the token file {path} for a refresh: {cause}")]
    Lock { path: PathBuf, cause: io::Error },
    /// A FIFO, device or directory: reading it could block, or never end.
    #[error(
        "the token file {path} is {kind}, not a regular file, and was not read; point WITHINGS_TOKEN_FILE at the file `withings-exporter auth` writes"
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error(
        "the token file {path} is larger than {limit} bytes and was not read (a real one is a few hundred bytes); point WITHINGS_TOKEN_FILE at the file `withings-exporter auth` writes"
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(
        "cannot write the token file {path} ({step}: {cause}); the directory must exist and be writable by the exporter (mount a writable volume there)"
    )]
    Write {
        path: PathBuf,
        step: &'static str,
        cause: io::Error,
    },
}

/// Held while refreshing; the lock ends when it is dropped (or the process dies).
#[derive(Debug)]
pub struct RefreshLock {
    _file: File,
}

const LOCK_POLL: Duration = Duration::from_millis(20);

impl StoreError {
    /// The refresh lock was held by another process for longer than the wait.
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, Self::Lock { cause, .. } if cause.kind() == io::ErrorKind::TimedOut)
    }
}

/// The token file at one path.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
    /// Whether the warning about a mode wider than 0600 was given: once per store, not on
    /// every load (the file is reloaded whenever it changes).
    warned_mode: Arc<AtomicBool>,
}

pub use crate::files::{MAX_TOKEN_FILE_BYTES, ReadRefusal, read_regular_file};

/// Distinguishes temporary files of saves that overlap within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TokenStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            warned_mode: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored pair, or `None` when there is no file yet. Anything else that is wrong
    /// with the file is an error: the caller must not write over a file it could not read,
    /// since that file may hold the only live refresh token.
    pub fn load(&self) -> Result<Option<StoredTokens>, StoreError> {
        let path = || self.path.clone();
        let (bytes, mode) = match read_regular_file(&self.path, MAX_TOKEN_FILE_BYTES) {
            Ok(read) => read,
            Err(ReadRefusal::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(ReadRefusal::Io(cause)) => {
                return Err(StoreError::Read {
                    path: path(),
                    cause,
                });
            }
            Err(ReadRefusal::NotAFile(kind)) => {
                return Err(StoreError::NotAFile { path: path(), kind });
            }
            Err(ReadRefusal::TooLarge) => {
                return Err(StoreError::TooLarge {
                    path: path(),
                    limit: MAX_TOKEN_FILE_BYTES,
                });
            }
        };
        if mode & 0o077 != 0 && !self.warned_mode.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                token_file = %self.path.display(),
                mode = format!("{:04o}", mode & 0o7777),
                "the token file can be read by other users than the exporter's; it holds the refresh token, which gives access to the account's health data: it is made 0600 at the next save (or run chmod 600 on it now)"
            );
        }
        StoredTokens::parse(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Malformed {
                path: self.path.clone(),
                detail: e.detail,
            })
    }

    /// Removes temporary files left by saves of processes that died mid-save (SIGKILL, power
    /// loss). Files of a process still running are left alone: it may be saving right now.
    pub fn remove_stale_temp_files(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let prefix = format!(".{}.tmp.", name.to_string_lossy());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
            if !alive {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The file's modification time, to notice that someone (`withings-exporter auth`)
    /// replaced it.
    pub fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }

    /// An exclusive advisory lock (`flock`) on the token file, for the length of a refresh,
    /// so that two processes sharing the file never refresh the same pair. Saves replace the
    /// file by rename, so a lock taken on the file a rename has since replaced guards nothing:
    /// the lock counts only once it is held on the file that is at the path now.
    pub async fn lock(&self, wait: Duration) -> Result<RefreshLock, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let deadline = Instant::now() + wait;
        let fail = |cause: io::Error| StoreError::Lock {
            path: self.path.clone(),
            cause,
        };
        loop {
            // Only a regular file is opened: a FIFO put in its place would block the open.
            let meta = std::fs::metadata(&self.path).map_err(fail)?;
            if !meta.file_type().is_file() {
                return Err(fail(io::Error::other("not a regular file")));
            }
            let file = File::open(&self.path).map_err(fail)?;
            match file.try_lock() {
                Ok(()) => {
                    let held = file.metadata().map_err(fail)?;
                    let current = std::fs::metadata(&self.path).map_err(fail)?;
                    if held.ino() == current.ino() && held.dev() == current.dev() {
                        return Ok(RefreshLock { _file: file });
                    }
                    // Replaced while we locked it: lock the new file instead.
                    continue;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return Err(fail(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "another process held the refresh lock for over {}s",
                                wait.as_secs()
                            ),
                        )));
                    }
                    // Another process is refreshing; its refresh takes one request to
                    // Withings, so polling briefly is cheap and needs no helper thread.
                    tokio::time::sleep(LOCK_POLL).await;
                }
                Err(std::fs::TryLockError::Error(cause)) => return Err(fail(cause)),
            }
        }
    }

    /// Replaces the file atomically and durably, mode 0600.
    pub fn save(&self, tokens: &StoredTokens) -> Result<(), StoreError> {
        let fail = |step: &'static str| {
            move |cause: io::Error| StoreError::Write {
                path: self.path.clone(),
                step,
                cause,
            }
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self.path.file_name().ok_or_else(|| {
            fail("naming the file")(io::Error::other("the path has no file name"))
        })?;
        let mut json = serde_json::to_vec_pretty(tokens)
            .map_err(|e| fail("encoding")(io::Error::other(e.to_string())))?;
        json.push(b'\n');
        let temp = dir.join(format!(
            ".{}.tmp.{}.{}",
            name.to_string_lossy(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            // Created 0600 from the start: a chmod afterwards would leave a window in which
            // the tokens are readable by others.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
                .map_err(fail("creating a temporary file"))?;
            file.write_all(&json).map_err(fail("writing"))?;
            file.sync_all().map_err(fail("flushing to disk"))?;
            std::fs::rename(&temp, &self.path).map_err(fail("renaming over the old file"))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        // Without this the rename itself may not survive a power loss.
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(fail("flushing the directory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn pair(n: u32) -> StoredTokens {
        StoredTokens {
            access_token: Secret::new(format!("access-{n}")),
            refresh_token: Secret::new(format!("refresh-{n}")),
            expires_at: 1_700_000_000 + i64::from(n),
            obtained_at: Some(1_699_990_000),
            userid: Some("12345".into()),
            scope: Some("user.metrics".into()),
        }
    }

    #[test]
    fn save_then_load_round_trips_with_mode_0600_and_no_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path().join("tokens.json"));
        assert!(store.load().unwrap().is_none());
        store.save(&pair(1)).unwrap();
        store.save(&pair(2)).unwrap();
        assert_eq!(store.load().unwrap(), Some(pair(2)));
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("tokens.json")]);
    }

    #[test]
    fn malformed_file_is_refused_without_quoting_it_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let cases = [
            &b"{\"access_token\":\"sekrit-a\",\"refresh_token\":"[..],
            b"{\"access_token\":\"sekrit-a\",\"refresh_token\":\"sekrit-r\",\"expires_at\":\"sekrit-x\"}",
            b"{\"access_token\":\"a\",\"refresh_token\":\"\",\"expires_at\":1}",
            b"\xff\xfe not utf-8",
        ];
        for content in cases {
            std::fs::write(&path, content).unwrap();
            let err = TokenStore::new(&path).load().unwrap_err();
            let line = err.to_string();
            assert!(matches!(err, StoreError::Malformed { .. }), "{line}");
            assert!(!line.contains("sekrit") && !line.contains('\n'), "{line}");
            assert!(line.contains("withings-exporter auth"), "{line}");
            assert_eq!(std::fs::read(&path).unwrap(), content);
        }
    }

    #[test]
    fn unwritable_location_is_a_clear_error_and_the_old_file_survives() {
        // Tests run as root, which ignores permission bits; a parent that is a regular
        // file (ENOTDIR) fails for everyone, like a missing or read-only volume would.
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-directory");
        std::fs::write(&blocker, b"x").unwrap();
        let store = TokenStore::new(blocker.join("tokens.json"));
        let err = store.save(&pair(1)).unwrap_err();
        let line = err.to_string();
        assert!(matches!(err, StoreError::Write { .. }), "{line}");
        assert!(
            line.contains("not-a-directory/tokens.json") && line.contains("writable"),
            "{line}"
        );
        assert!(!line.contains("refresh-1"), "{line}");

        // A failure after the old file exists leaves it whole: the rename never happened.
        let path = dir.path().join("tokens.json");
        let store = TokenStore::new(&path);
        store.save(&pair(1)).unwrap();
        // A directory where the file should be makes the rename fail (EISDIR) after the
        // temporary file was written and flushed.
        let blocked = TokenStore::new(dir.path().join("sub"));
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/keep"), b"x").unwrap();
        let err = blocked.save(&pair(2)).unwrap_err();
        assert!(err.to_string().contains("renaming"), "{err}");
        assert_eq!(store.load().unwrap(), Some(pair(1)));
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp.")
            })
            .count();
        assert_eq!(
            leftovers, 0,
            "the temporary file of a failed save is removed"
        );
    }

    #[test]
    fn stale_temporary_files_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path().join("tokens.json"));
        store.save(&pair(1)).unwrap();
        // No process has pid u32::MAX - 1 (Linux caps pids far lower); ours is alive.
        let dead = dir
            .path()
            .join(format!(".tokens.json.tmp.{}.0", u32::MAX - 1));
        let ours = dir
            .path()
            .join(format!(".tokens.json.tmp.{}.99", std::process::id()));
        let unrelated = dir.path().join(".other.json.tmp.1.0");
        for f in [&dead, &ours, &unrelated] {
            std::fs::write(f, b"{").unwrap();
        }
        store.remove_stale_temp_files();
        assert!(!dead.exists());
        assert!(ours.exists() && unrelated.exists());
        assert_eq!(store.load().unwrap(), Some(pair(1)));
    }

    #[test]
    fn debug_hides_tokens() {
        let shown = format!("{:?}", pair(7));
        assert!(
            !shown.contains("access-7") && !shown.contains("refresh-7"),
            "{shown}"
        );
    }
}
