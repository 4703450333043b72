//! Invite links (issue 21): a person links their own Withings account from their own phone.
//!
//! An invite is a random token (256 bits, URL-safe base64) for one account name, valid for a
//! while and once. The store keeps only SHA-256 hashes of the tokens, in one file of the
//! token directory ([`INVITES_FILE`], mode 0600, replaced atomically, kept across restarts),
//! so that a copy of the directory opens no invite. Opening the link's button binds a fresh
//! `state` (also kept as a hash) to the invite; Withings' redirect back to the exporter is
//! only acted on with a state bound to an invite still open. A re-authorization invite is
//! bound to the Withings user the account already belongs to.

use crate::secret::Secret;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The store's file in `WITHINGS_TOKEN_DIR` (not an account: account names have no dot).
pub const INVITES_FILE: &str = ".invites.json";
/// Held while the store is read and rewritten, by the server and `invite` alike.
const LOCK_FILE: &str = ".invites.lock";
/// How long an invite is valid when `--valid` is not given.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(72 * 3600);
/// The longest validity accepted: a link lying around for months is a liability.
pub const MAX_VALIDITY: Duration = Duration::from_secs(30 * 86_400);
/// How long the button's `state` waits for Withings' redirect: a person signing in on a
/// phone, perhaps resetting a password.
pub const STATE_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Used, revoked and expired invites are kept this long (so that their link says so rather
/// than "unknown"), then dropped.
const KEEP_CLOSED: i64 = 30 * 86_400;
/// A store larger than this is refused unread (a real one is a few KiB).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why an invite link cannot be used. The text is for the person holding the link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "This invite link is not known here: it may be mistyped or cut short, or it was replaced by a newer one. Ask for a new link."
    )]
    Unknown,
    #[error("This invite link expired. Ask for a new link.")]
    Expired,
    #[error("This invite link was revoked. Ask for a new link.")]
    Revoked,
    #[error(
        "This invite link was already used: links work once. If the account still needs linking, ask for a new link."
    )]
    Used,
    #[error(
        "This sign-in does not belong to an invite that is still open (the page was reloaded, opened twice, or the address was changed). Open your invite link again and press the button once."
    )]
    UnknownState,
}

/// What went wrong with the store itself, one line with what to do.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error("{0}")]
    Refused(Refusal),
    #[error(
        "cannot {step} the invite store {path}: {cause}; check that WITHINGS_TOKEN_DIR is writable by the exporter"
    )]
    Io {
        path: PathBuf,
        step: &'static str,
        cause: std::io::Error,
    },
    #[error(
        "the invite store {path} is not readable ({reason}); move it away (open invites are then lost) and create them again"
    )]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "{0:?} is not a validity: use hours (72, 72h), minutes (30m), days (7d) or seconds (90s)"
    )]
    BadValidity(String),
    #[error(
        "no randomness from the operating system ({0}), so no invite link can be made safely; check that /dev/urandom (or getrandom) is available to the exporter"
    )]
    NoRandomness(String),
    #[error("the validity {0} is too long: at most 30 days (30d)")]
    TooLong(String),
}

impl From<Refusal> for InviteError {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

/// One invite as it may be shown: no token, no hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub account: String,
    pub created: i64,
    pub expires: i64,
    /// A re-authorization: only this Withings user may complete it.
    pub userid: Option<String>,
    /// Identifies the invite inside the store (the first characters of its hash; not
    /// enough to open it).
    id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    account: String,
    token_sha256: String,
    created: i64,
    expires: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    userid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state_expires: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked: Option<i64>,
}

impl Record {
    fn view(&self) -> Invite {
        Invite {
            account: self.account.clone(),
            created: self.created,
            expires: self.expires,
            userid: self.userid.clone(),
            id: self.token_sha256.clone(),
        }
    }

    fn is_open(&self, now: i64) -> bool {
        self.usable(now).is_ok()
    }

    fn usable(&self, now: i64) -> Result<(), Refusal> {
        if self.revoked.is_some() {
            Err(Refusal::Revoked)
        } else if self.used.is_some() {
            Err(Refusal::Used)
        } else if now >= self.expires {
            Err(Refusal::Expired)
        } else {
            Ok(())
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    invites: Vec<Record>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The invites of one token directory.
#[derive(Debug, Clone)]
pub struct InviteStore {
    dir: PathBuf,
}

impl InviteStore {
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(INVITES_FILE)
    }

    /// A new invite for `account`, valid `valid` from `now`; an open invite for the same
    /// account is revoked (one link per person at a time). Returns the token, to be put in
    /// the link and shown once.
    pub fn create(
        &self,
        account: &str,
        valid: Duration,
        userid: Option<String>,
        now: i64,
    ) -> Result<Secret, InviteError> {
        let token = random_token(32)?;
        let hash = sha256_hex(token.expose());
        let expires = now.saturating_add(i64::try_from(valid.as_secs()).unwrap_or(i64::MAX));
        self.update(now, |stored| {
            for r in &mut stored.invites {
                if r.account == account && r.is_open(now) {
                    r.revoked = Some(now);
                }
            }
            stored.invites.push(Record {
                account: account.to_owned(),
                token_sha256: hash,
                created: now,
                expires,
                userid,
                state_sha256: None,
                state_expires: None,
                used: None,
                revoked: None,
            });
            Ok(())
        })?;
        Ok(token)
    }

    /// The invites still open, soonest expiry first.
    pub fn open(&self, now: i64) -> Result<Vec<Invite>, InviteError> {
        let stored = self.read()?;
        let mut open: Vec<Invite> = stored
            .invites
            .iter()
            .filter(|r| r.is_open(now))
            .map(Record::view)
            .collect();
        open.sort_by(|a, b| (a.expires, &a.account).cmp(&(b.expires, &b.account)));
        Ok(open)
    }

    /// Revokes the open invites of `account`; how many there were.
    pub fn revoke(&self, account: &str, now: i64) -> Result<usize, InviteError> {
        let mut count = 0;
        self.update(now, |stored| {
            for r in &mut stored.invites {
                if r.account == account && r.is_open(now) {
                    r.revoked = Some(now);
                    count += 1;
                }
            }
            Ok(())
        })?;
        Ok(count)
    }

    /// The open invite `token` opens, or why it opens none.
    pub fn check(&self, token: &str, now: i64) -> Result<Invite, InviteError> {
        let hash = sha256_hex(token);
        let stored = self.read()?;
        let record = stored
            .invites
            .iter()
            .find(|r| r.token_sha256 == hash)
            .ok_or(Refusal::Unknown)?;
        record.usable(now)?;
        Ok(record.view())
    }

    /// The button was pressed: binds a fresh `state` to the open invite `token` (replacing
    /// an earlier one) and returns it, for the authorization URL.
    pub fn begin(&self, token: &str, now: i64) -> Result<(Invite, Secret), InviteError> {
        let hash = sha256_hex(token);
        let state = random_token(16)?;
        let state_hash = sha256_hex(state.expose());
        let lifetime = i64::try_from(STATE_LIFETIME.as_secs()).unwrap_or(i64::MAX);
        let invite = self.update(now, |stored| {
            let record = stored
                .invites
                .iter_mut()
                .find(|r| r.token_sha256 == hash)
                .ok_or(Refusal::Unknown)?;
            record.usable(now)?;
            record.state_sha256 = Some(state_hash);
            record.state_expires = Some(now.saturating_add(lifetime).min(record.expires));
            Ok(record.view())
        })?;
        Ok((invite, state))
    }

    /// Withings' redirect came back with `state`: the open invite it is bound to. The state
    /// is spent (a second redirect with it is refused) but the invite stays open until
    /// [`Self::complete`], so that a person who declined, or signed in as someone else, can
    /// press the button again.
    pub fn take_state(&self, state: &str, now: i64) -> Result<Invite, InviteError> {
        let hash = sha256_hex(state);
        self.update(now, |stored| {
            let record = stored
                .invites
                .iter_mut()
                .find(|r| r.state_sha256.as_deref() == Some(hash.as_str()))
                .ok_or(Refusal::UnknownState)?;
            let fresh = record.state_expires.is_some_and(|t| now < t);
            record.state_sha256 = None;
            record.state_expires = None;
            record.usable(now)?;
            if !fresh {
                return Err(Refusal::UnknownState.into());
            }
            Ok(record.view())
        })
    }

    /// The account was written: the invite is used.
    pub fn complete(&self, invite: &Invite, now: i64) -> Result<(), InviteError> {
        self.update(now, |stored| {
            if let Some(r) = stored
                .invites
                .iter_mut()
                .find(|r| r.token_sha256 == invite.id)
            {
                r.used = Some(now);
                r.state_sha256 = None;
            }
            Ok(())
        })
    }

    fn read(&self) -> Result<Stored, InviteError> {
        let path = self.path();
        match crate::files::read_regular_file(&path, MAX_FILE_BYTES) {
            Ok((bytes, _)) => serde_json::from_slice(&bytes).map_err(|e| InviteError::Malformed {
                path,
                reason: e.to_string(),
            }),
            Err(crate::files::ReadRefusal::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Stored::default())
            }
            Err(crate::files::ReadRefusal::Io(cause)) => Err(InviteError::Io {
                path,
                step: "read",
                cause,
            }),
            Err(crate::files::ReadRefusal::NotAFile(kind)) => Err(InviteError::Malformed {
                path,
                reason: format!("it is {kind}"),
            }),
            Err(crate::files::ReadRefusal::TooLarge) => Err(InviteError::Malformed {
                path,
                reason: format!("larger than {MAX_FILE_BYTES} bytes"),
            }),
        }
    }

    /// Reads, changes and writes the store under its lock. `change`'s error is returned and
    /// nothing is written... except that a refusal after a change (a spent state) keeps it.
    fn update<T>(
        &self,
        now: i64,
        change: impl FnOnce(&mut Stored) -> Result<T, InviteError>,
    ) -> Result<T, InviteError> {
        let io = |step: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |cause: std::io::Error| InviteError::Io { path, step, cause }
        };
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("lock", &lock_path))?;
        lock.lock().map_err(io("lock", &lock_path))?;
        let mut stored = self.read()?;
        let before = serde_json::to_vec(&stored.invites).unwrap_or_default();
        let result = change(&mut stored);
        stored
            .invites
            .retain(|r| r.is_open(now) || now - closed_at(r) < KEEP_CLOSED);
        let after = serde_json::to_vec(&stored.invites).unwrap_or_default();
        if before != after {
            self.write(&stored)?;
        }
        drop(lock);
        result
    }

    fn write(&self, stored: &Stored) -> Result<(), InviteError> {
        let path = self.path();
        let fail = |step: &'static str| {
            let path = path.clone();
            move |cause: std::io::Error| InviteError::Io { path, step, cause }
        };
        let mut json = serde_json::to_vec_pretty(stored)
            .map_err(|e| fail("encode")(std::io::Error::other(e.to_string())))?;
        json.push(b'\n');
        let temp = self.dir.join(format!(
            "{INVITES_FILE}.tmp.{}.{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
                .map_err(fail("create a temporary file beside"))?;
            file.write_all(&json).map_err(fail("write"))?;
            file.sync_all().map_err(fail("flush"))?;
            std::fs::rename(&temp, &path).map_err(fail("replace"))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }
}

fn closed_at(r: &Record) -> i64 {
    r.used.or(r.revoked).unwrap_or(r.expires)
}

/// `bytes` random bytes as URL-safe base64 without padding. Without randomness from the
/// operating system no invite can be safe, so that is an error rather than a predictable
/// link.
fn random_token(bytes: usize) -> Result<Secret, InviteError> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| InviteError::NoRandomness(e.to_string()))?;
    Ok(Secret::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&buf),
    ))
}

fn sha256_hex(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `token` looks like one of ours (so that junk is refused before any file is read).
pub fn plausible_token(token: &str) -> bool {
    (16..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `--valid`: `72`, `72h`, `30m`, `7d`, `90s`; at most [`MAX_VALIDITY`].
pub fn parse_validity(text: &str) -> Result<Duration, InviteError> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => (&t[..at], &t[at..]),
        None => (t, "h"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| InviteError::BadValidity(text.to_owned()))?;
    let unit = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(InviteError::BadValidity(text.to_owned())),
    };
    let seconds = n.saturating_mul(unit);
    if seconds == 0 {
        return Err(InviteError::BadValidity(text.to_owned()));
    }
    let valid = Duration::from_secs(seconds);
    if valid > MAX_VALIDITY {
        return Err(InviteError::TooLong(text.to_owned()));
    }
    Ok(valid)
}

/// "in 3 d", "in 5 h", "in 12 min"; "expired" for the past.
pub fn remaining(seconds: i64) -> String {
    match seconds {
        s if s <= 0 => "expired".into(),
        s if s < 120 => format!("in {s} s"),
        s if s < 7200 => format!("in {} min", s / 60),
        s if s < 172_800 => format!("in {} h", s / 3600),
        s => format!("in {} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const NOW: i64 = 1_800_000_000;
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn the_store_keeps_hashes_only_mode_0600_and_survives_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = InviteStore::in_dir(dir.path());
        let token = store.create("dad", DAY, None, NOW).unwrap();
        assert!(token.expose().len() >= 43, "256 bits in base64url");
        assert!(plausible_token(token.expose()));
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(token.expose()), "{text}");
        assert!(text.contains(&sha256_hex(token.expose())));
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = InviteStore::in_dir(dir.path());
        let invite = again.check(token.expose(), NOW + 10).unwrap();
        assert_eq!(invite.account, "dad");
        assert_eq!(invite.expires, NOW + 86_400);
        assert_eq!(again.open(NOW).unwrap().len(), 1);
        assert!(!format!("{invite:?}").contains(token.expose()));
    }

    #[test]
    fn expiry_revocation_single_use_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = InviteStore::in_dir(dir.path());
        let token = store.create("dad", DAY, None, NOW).unwrap();
        let t = token.expose();
        assert!(matches!(
            store.check(t, NOW + 86_400),
            Err(InviteError::Refused(Refusal::Expired))
        ));
        assert!(matches!(
            store.check("nope-nope-nope-nope-nope", NOW),
            Err(InviteError::Refused(Refusal::Unknown))
        ));
        let (_, state) = store.begin(t, NOW).unwrap();
        // A state not bound to any invite, or bound and spent, is refused.
        assert!(matches!(
            store.take_state("forged-state-value", NOW),
            Err(InviteError::Refused(Refusal::UnknownState))
        ));
        let invite = store.take_state(state.expose(), NOW + 1).unwrap();
        assert!(matches!(
            store.take_state(state.expose(), NOW + 2),
            Err(InviteError::Refused(Refusal::UnknownState))
        ));
        // The invite stays open until completed, then is used.
        let (_, state2) = store.begin(t, NOW + 3).unwrap();
        assert_ne!(state, state2);
        store.complete(&invite, NOW + 4).unwrap();
        assert!(matches!(
            store.check(t, NOW + 5),
            Err(InviteError::Refused(Refusal::Used))
        ));
        // Completing spends the state pressed since, too.
        assert!(matches!(
            store.take_state(state2.expose(), NOW + 5),
            Err(InviteError::Refused(Refusal::UnknownState))
        ));
        // A state older than its lifetime is refused.
        let token = store.create("mum", DAY, None, NOW).unwrap();
        let (_, state) = store.begin(token.expose(), NOW).unwrap();
        let late = NOW + STATE_LIFETIME.as_secs() as i64;
        assert!(matches!(
            store.take_state(state.expose(), late),
            Err(InviteError::Refused(Refusal::UnknownState))
        ));
        // A new invite for the same account revokes the old one; so does revoke.
        let newer = store
            .create("mum", DAY, Some("42".into()), NOW + 1)
            .unwrap();
        assert!(matches!(
            store.check(token.expose(), NOW + 2),
            Err(InviteError::Refused(Refusal::Revoked))
        ));
        assert_eq!(
            store
                .check(newer.expose(), NOW + 2)
                .unwrap()
                .userid
                .as_deref(),
            Some("42")
        );
        assert_eq!(store.revoke("mum", NOW + 3).unwrap(), 1);
        assert!(matches!(
            store.check(newer.expose(), NOW + 4),
            Err(InviteError::Refused(Refusal::Revoked))
        ));
        assert!(store.open(NOW + 4).unwrap().is_empty());
    }

    #[test]
    fn validities() {
        assert_eq!(
            parse_validity("72").unwrap(),
            Duration::from_secs(72 * 3600)
        );
        assert_eq!(parse_validity("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_validity("7d").unwrap(), 7 * DAY);
        assert_eq!(parse_validity("90s").unwrap(), Duration::from_secs(90));
        for bad in ["", "0", "h", "3 weeks", "-1h", "1y"] {
            assert!(parse_validity(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_validity("31d"),
            Err(InviteError::TooLong(_))
        ));
        assert_eq!(remaining(-5), "expired");
        assert_eq!(remaining(3 * 86_400 + 5), "in 3 d");
    }
}
