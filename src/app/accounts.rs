//! The set of accounts, read from `WITHINGS_TOKEN_DIR`: every `NAME.json` there is one
//! account called `NAME`. The directory is scanned again every few seconds, so an account
//! authorized by `auth` in another container, or a restored backup, is served without a
//! restart, and a removed file stops being served.

use crate::account::Account;
use crate::lock::read;
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// What the operator may call an account: it becomes a label value and a file name.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The one-line reason a name is refused, for `auth --account` and `/probe`.
pub fn name_rule() -> &'static str {
    "an account name is 1 to 63 lowercase letters, digits, '-' or '_'"
}

/// Tells a file that changed from one that did not, without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn identity(path: &Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Identity {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

struct Entry {
    account: Arc<Account>,
    identity: Option<Identity>,
    /// Opened from a file it could not use: opened again when the file changes.
    unusable: bool,
    /// Not opened at all, and why (a symbolic link, a second file of one Withings user):
    /// opened again when the reason goes away.
    refused: Option<String>,
}

/// Who a token file belongs to, as far as its content tells: two files that share the
/// user id or the refresh token are one Withings refresh chain.
struct Holder {
    userid: Option<String>,
    refresh_token: crate::secret::Secret,
}

impl Holder {
    fn read(path: &Path) -> Option<Self> {
        let (bytes, _) =
            crate::files::read_regular_file(path, crate::files::MAX_TOKEN_FILE_BYTES).ok()?;
        let tokens = crate::account::token_store::StoredTokens::parse(&bytes).ok()?;
        Some(Self {
            userid: tokens.userid,
            refresh_token: tokens.refresh_token,
        })
    }

    fn same_chain(&self, other: &Self) -> bool {
        self.refresh_token == other.refresh_token
            || self.userid.as_deref().is_some_and(|u| !u.is_empty()) && self.userid == other.userid
    }
}

/// Why a file named like an account is not opened as one.
fn refusals(
    files: &BTreeMap<String, PathBuf>,
    served: impl Fn(&str) -> bool,
) -> BTreeMap<String, String> {
    let mut refused = BTreeMap::new();
    let mut candidates = Vec::new();
    for (name, path) in files {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            refused.insert(
                name.clone(),
                format!(
                    "{} is a symbolic link, which is not read in WITHINGS_TOKEN_DIR (a link makes two accounts of one refresh chain, which locks the person out): put the account's own file there, written by `withings-exporter auth --account {name}`",
                    path.display()
                ),
            );
            continue;
        }
        if let Some(holder) = Holder::read(path) {
            // Accounts already served keep their file; among the others the older file
            // (then the name) goes first: a copy is refused, not its original.
            let rank = (!served(name), meta.modified().ok());
            candidates.push((rank, name, path, holder));
        }
    }
    candidates.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    let mut kept: Vec<(&String, &PathBuf, Holder)> = Vec::new();
    for (_, name, path, holder) in candidates {
        match kept.iter().find(|(_, _, k)| k.same_chain(&holder)) {
            Some((other, other_path, _)) => {
                refused.insert(
                    name.clone(),
                    format!(
                        "{} holds the same Withings user as {} (account {other:?}), and two accounts refreshing one user's tokens lock that person out: this newer file is not served; delete it, or if it should be someone else, run `withings-exporter auth --account {name}` signed in as that person",
                        path.display(),
                        other_path.display()
                    ),
                );
            }
            None => kept.push((name, path, holder)),
        }
    }
    refused
}

/// What one scan changed, for the log and the tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub added: Vec<String>,
    pub reopened: Vec<String>,
    pub removed: Vec<String>,
}

pub struct AccountSet {
    dir: PathBuf,
    accounts: RwLock<BTreeMap<String, Entry>>,
    /// Files already warned about, so that a stray file costs one line, not one a scan.
    warned: Mutex<HashSet<OsString>>,
    /// The directory itself could not be read at the last scan (one line per episode).
    unreadable: Mutex<bool>,
}

impl AccountSet {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            accounts: RwLock::new(BTreeMap::new()),
            warned: Mutex::new(HashSet::new()),
            unreadable: Mutex::new(false),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        read(&self.accounts)
            .get(name)
            .map(|e| Arc::clone(&e.account))
    }

    /// Every account, by name.
    pub fn all(&self) -> Vec<Arc<Account>> {
        read(&self.accounts)
            .values()
            .map(|e| Arc::clone(&e.account))
            .collect()
    }

    pub fn len(&self) -> usize {
        read(&self.accounts).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The account files now in the directory, by account name; other files are warned
    /// about once. Dot files (the token store's temporary files among them) are not ours to
    /// judge and are passed over silently.
    pub fn files(&self) -> std::io::Result<BTreeMap<String, PathBuf>> {
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let Ok(entry) = entry else { continue };
            let file_name = entry.file_name();
            let text = file_name.to_str();
            if text.is_some_and(|t| t.starts_with('.')) {
                continue;
            }
            let name = text
                .and_then(|t| t.strip_suffix(".json"))
                .filter(|n| valid_name(n));
            let is_file = entry
                .file_type()
                .is_ok_and(|t| t.is_file() || t.is_symlink());
            match name {
                Some(name) if is_file => {
                    found.insert(name.to_owned(), entry.path());
                }
                _ => {
                    let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
                    if warned.insert(file_name.clone()) {
                        tracing::warn!(
                            dir = %self.dir.display(),
                            file = %file_name.to_string_lossy(),
                            "ignoring this file in WITHINGS_TOKEN_DIR: only NAME.json files are accounts ({})",
                            name_rule()
                        );
                    }
                }
            }
        }
        Ok(found)
    }

    /// Brings the set in line with the directory. `open` makes the account for a file;
    /// it is called for new files and for changed files of accounts that were unusable
    /// (a working account follows changes to its own file by itself).
    /// `open` gets the reason when the file must not be opened (it then makes an account that
    /// reports this reason and never fetches).
    pub fn scan(&self, open: impl Fn(&str, &Path, Option<&str>) -> Arc<Account>) -> ScanReport {
        let mut report = ScanReport::default();
        let files = match self.files() {
            Ok(files) => {
                let mut unreadable = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
                if *unreadable {
                    tracing::info!(dir = %self.dir.display(), "WITHINGS_TOKEN_DIR can be read again");
                    *unreadable = false;
                }
                files
            }
            Err(e) => {
                let mut unreadable = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
                if !*unreadable {
                    tracing::error!(dir = %self.dir.display(), error = %e, "cannot read WITHINGS_TOKEN_DIR; serving the accounts already known until it can be read (check the path and its permissions)");
                    *unreadable = true;
                }
                return report;
            }
        };
        let mut accounts = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        accounts.retain(|name, _| {
            let keep = files.contains_key(name);
            if !keep {
                report.removed.push(name.clone());
            }
            keep
        });
        let mut refused = refusals(&files, |name| {
            accounts
                .get(name)
                .is_some_and(|e| e.refused.is_none() && !e.unusable)
        });
        for (name, path) in files {
            let now = identity(&path);
            let refusal = refused.remove(&name);
            match accounts.get(&name) {
                Some(entry)
                    if entry.refused == refusal
                        && (!entry.unusable
                            || entry.refused.is_some()
                            || entry.identity == now) =>
                {
                    // A running account whose file broke is reported now, not at its next
                    // fetch (the file is read only when it changed).
                    entry.account.tokens().file_problem();
                    continue;
                }
                Some(_) => report.reopened.push(name.clone()),
                None => report.added.push(name.clone()),
            }
            let account = open(&name, &path, refusal.as_deref());
            let unusable = matches!(
                account.tokens(),
                crate::account::tokens::TokenSource::Unusable(_)
            );
            if let crate::account::tokens::TokenSource::Unusable(reason) = account.tokens() {
                tracing::error!(account = %name, error = %reason, "this account cannot be served until its token file is fixed; the other accounts carry on");
            }
            accounts.insert(
                name,
                Entry {
                    account,
                    identity: now,
                    unusable,
                    refused: refusal,
                },
            );
        }
        drop(accounts);
        report
    }
}

/// `withings-exporter accounts`: one line per account file, with no secret: name, Withings
/// user id, when the access token expires, and whether the file can be used.
pub fn listing(dir: &Path) -> Result<String, std::io::Error> {
    use crate::account::token_store::TokenStore;
    use std::fmt::Write;
    let set = AccountSet::new(dir);
    let files = set.files().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read WITHINGS_TOKEN_DIR {}: {e}", dir.display()),
        )
    })?;
    let mut out = String::new();
    if files.is_empty() {
        let _ = writeln!(
            out,
            "no accounts in {}: add one with `withings-exporter auth --account NAME`",
            dir.display()
        );
    }
    let width = files.keys().map(String::len).max().unwrap_or(0).max(7);
    for (name, path) in files {
        let line = match TokenStore::new(&path).load() {
            Ok(Some(tokens)) => format!(
                "user={} expires={} file=ok",
                tokens.userid.as_deref().unwrap_or("unknown"),
                expiry_text(tokens.expires_at),
            ),
            Ok(None) => "file=missing".to_owned(),
            Err(e) => format!(
                "file=unusable error={:?}",
                crate::text::one_line(&e.to_string())
            ),
        };
        let _ = writeln!(out, "{name:<width$} {line}");
    }
    Ok(out)
}

/// An expiry as UTC date and time, or `none` for a file that holds only a refresh token.
fn expiry_text(unix: i64) -> String {
    if unix <= 0 {
        return "none".into();
    }
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_two_files_of_one_user_the_newer_is_refused_and_a_tie_goes_by_name() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, userid: &str, refresh: &str, age: u64| {
            let path = dir.path().join(format!("{name}.json"));
            let body = format!(
                r#"{{"access_token":"a{refresh}","refresh_token":"{refresh}","expires_at":1,"userid":"{userid}"}}"#
            );
            std::fs::write(&path, body).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age))
                .unwrap();
            path
        };
        let mut files = BTreeMap::new();
        // The same user id with another refresh token (a copy from before a refresh).
        files.insert("zed".to_owned(), write("zed", "7", "refresh0001", 50));
        files.insert("amy".to_owned(), write("amy", "7", "refresh0002", 10));
        // The same refresh token without a user id, the same age: by name.
        files.insert("bob".to_owned(), write("bob", "", "refresh0003", 5));
        files.insert("bea".to_owned(), write("bea", "", "refresh0003", 5));
        files.insert("solo".to_owned(), write("solo", "8", "refresh0004", 5));
        let refused = refusals(&files, |_| false);
        assert_eq!(refused.keys().collect::<Vec<_>>(), ["amy", "bob"]);
        assert!(refused["amy"].contains("zed.json"), "{}", refused["amy"]);
        // An account already served keeps its file, however old the copy.
        let refused = refusals(&files, |name| name == "amy");
        assert_eq!(refused.keys().collect::<Vec<_>>(), ["bob", "zed"]);
    }

    #[test]
    fn expiry_dates_are_utc() {
        assert_eq!(expiry_text(0), "none");
        assert_eq!(expiry_text(1_690_491_663), "2023-07-27T21:01:03Z");
        assert_eq!(expiry_text(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn names_are_what_a_label_and_a_file_name_can_both_carry() {
        for good in ["mom", "ben", "patient-017", "a_b", "x", &"a".repeat(63)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "Mom",
            "ben.json",
            "a b",
            "../x",
            "é",
            &"a".repeat(64),
            "mom\n",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
