//! The application's request budget: Withings allows 120 requests a minute per application,
//! shared by every user and every endpoint (`withings-api.md`, "Several people under one
//! application"). Every request the exporter makes takes a slot here first, in the client,
//! so that no path (a probe, a refresh, a flood of scrapes) can spend more.
//!
//! The budget is a sliding window: a request may go out only if fewer than `per_minute`
//! requests went out in the 60 seconds before it. A fixed per-minute counter would allow
//! twice the budget across a minute boundary; Withings' own window is not documented, so the
//! strict reading is the safe one.
//!
//! The limit is the application's, not the process's: exporters, `backfill`, `auth` and
//! `notify` working on one token directory spend one budget. They count it together in a
//! [`Ledger`], a small file in that directory (`.budget`, mode 0600) holding the times of
//! the last minute's requests and the end of Withings' 601 pause, read and rewritten under
//! an exclusive `flock` for every request. Without a usable ledger a process counts its own
//! requests alone, as before, and says so once.

use crate::clock::Clock;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The window Withings' limit is stated over.
pub const WINDOW: Duration = Duration::from_secs(60);
pub use crate::config::{DEFAULT_PER_MINUTE, WITHINGS_LIMIT_PER_MINUTE};

/// The first line of every ledger: a file without it was not written by us.
const LEDGER_HEADER: &str = "withings-exporter request ledger v1";
/// A ledger holds at most the application's limit of times (120 lines of 14 digits) and one
/// pause: anything larger than this is not one, and is not read further.
pub const MAX_LEDGER_BYTES: u64 = 8 * 1024;
/// The longest 601 pause a ledger may hold: twice the longest wait `ratelimit` honours
/// (an hour), room for its jitter. A later end is a corrupt (or hostile) file, not
/// Withings' word.
const MAX_LEDGER_PAUSE: Duration = Duration::from_secs(2 * 3600);
/// How long a request waits for another process's hold on the ledger (a few microseconds
/// each) before it is held back as if the budget were spent.
const LOCK_PATIENCE: Duration = Duration::from_millis(50);

/// Why a ledger could not be used; the process then counts its own requests alone.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open it: {0}")]
    Open(io::Error),
    #[error("it is {0}, not a regular file")]
    NotAFile(&'static str),
    #[error("cannot lock, read or write it: {0}")]
    Io(io::Error),
}

impl LedgerError {
    /// The directory is missing (or not one), or no byte can be written to it.
    fn place_gone_or_full(&self) -> bool {
        let (Self::Open(e) | Self::Io(e)) = self else {
            return false;
        };
        matches!(
            e.raw_os_error(),
            Some(libc::ENOENT | libc::ENOTDIR | libc::ENOSPC | libc::EFBIG | libc::EDQUOT)
        )
    }
}

/// What one look at the ledger found, after dropping the requests older than a minute.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Entries {
    /// Unix milliseconds of each request in the window, oldest first.
    sent: Vec<u64>,
    /// Unix milliseconds when Withings' 601 pause ends, while one lasts.
    pause_until: Option<u64>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Entries {
    /// Reads a ledger's text as of `now` (unix milliseconds). `Err` names what is wrong
    /// with a file that is not a ledger we wrote: it is then counted as full.
    fn parse(bytes: &[u8], now: u64) -> Result<Self, &'static str> {
        let mut entries = Self::default();
        if bytes.is_empty() {
            return Ok(entries);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "not text")?;
        let mut lines = text.lines();
        if lines.next() != Some(LEDGER_HEADER) {
            return Err("no ledger header");
        }
        let window = millis(WINDOW);
        for line in lines {
            let (pause, number) = match line.strip_prefix("pause ") {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let at: u64 = number.parse().map_err(|_| "a line that is not a time")?;
            if pause {
                if at > now.saturating_add(millis(MAX_LEDGER_PAUSE)) {
                    return Err("a 601 pause longer than any Withings asks for");
                }
                entries.pause_until = Some(at).filter(|&until| until > now);
            } else {
                // A time a minute or more ahead of ours is no request of this machine.
                if at >= now.saturating_add(window) {
                    return Err("a request time in the future");
                }
                if now.saturating_sub(at) < window {
                    entries.sent.push(at);
                }
            }
        }
        if entries.sent.len() > WITHINGS_LIMIT_PER_MINUTE as usize {
            return Err("more requests in a minute than Withings allows");
        }
        entries.sent.sort_unstable();
        Ok(entries)
    }

    /// A ledger counted as full for the next minute: what a corrupt file is replaced by,
    /// so that no process overspends while the true count is unknown.
    fn full(now: u64, per_minute: u32) -> Self {
        Self {
            sent: vec![now; per_minute.max(1) as usize],
            pause_until: None,
        }
    }

    fn text(&self) -> String {
        let mut out = String::with_capacity(40 + 16 * self.sent.len());
        out.push_str(LEDGER_HEADER);
        out.push('\n');
        if let Some(until) = self.pause_until {
            out.push_str(&format!("pause {until}\n"));
        }
        for at in &self.sent {
            out.push_str(&at.to_string());
            out.push('\n');
        }
        out
    }

    /// Takes a slot at `now` if fewer than `per_minute` requests are in the window, or says
    /// how long until one frees.
    fn take(&mut self, now: u64, per_minute: u32) -> Result<(), Duration> {
        let per_minute = per_minute.max(1) as usize;
        if self.sent.len() < per_minute {
            self.sent.push(now);
            return Ok(());
        }
        // The slot that frees first is the one `per_minute` places from the newest.
        let oldest = self.sent[self.sent.len() - per_minute];
        Err(Duration::from_millis(
            oldest.saturating_add(millis(WINDOW)).saturating_sub(now),
        ))
    }
}

/// The request ledger shared by every process on one token directory: see the module's
/// documentation. Every operation opens the file afresh (so a replaced file is seen at
/// once), locks it, and closes it again.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    /// Whether the operator was told the ledger is unusable, or was found corrupt.
    warned_unusable: AtomicBool,
    warned_corrupt: AtomicBool,
}

impl Ledger {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            warned_unusable: AtomicBool::new(false),
            warned_corrupt: AtomicBool::new(false),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the ledger (creating it 0600), never following a link nor blocking on a FIFO,
    /// and takes the lock: exclusive to change it, shared to read it.
    fn open_locked(&self, exclusive: bool) -> Result<Option<File>, LedgerError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => LedgerError::NotAFile("a symbolic link"),
                _ => LedgerError::Open(e),
            })?;
        let meta = file.metadata().map_err(LedgerError::Io)?;
        if !meta.file_type().is_file() {
            return Err(LedgerError::NotAFile("a special file"));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(LedgerError::Io)?;
        }
        let operation = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        let deadline = Instant::now() + LOCK_PATIENCE;
        loop {
            // SAFETY: flock on a descriptor this function owns; the lock goes with it.
            if unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } == 0 {
                return Ok(Some(file));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(LedgerError::Io(e));
            }
            if Instant::now() >= deadline {
                // Someone holds it far longer than anyone of ours would: count as full.
                return Ok(None);
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn read(
        &self,
        file: &mut File,
        now: u64,
    ) -> Result<Result<Entries, &'static str>, LedgerError> {
        let mut bytes = Vec::new();
        file.by_ref()
            .take(MAX_LEDGER_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(LedgerError::Io)?;
        if bytes.len() as u64 > MAX_LEDGER_BYTES {
            return Ok(Err("larger than any ledger"));
        }
        Ok(Entries::parse(&bytes, now))
    }

    /// Rewrites the ledger in place (`old_len`: its length as read), cutting it only when it
    /// shrinks: a minute's ledger keeps about the same length, and every truncation costs.
    fn write(file: &File, entries: &Entries, old_len: u64) -> Result<(), LedgerError> {
        use std::os::unix::fs::FileExt;
        let text = entries.text();
        file.write_all_at(text.as_bytes(), 0)
            .map_err(LedgerError::Io)?;
        if (text.len() as u64) < old_len {
            file.set_len(text.len() as u64).map_err(LedgerError::Io)?;
        }
        Ok(())
    }

    fn corrupt(&self, why: &str) {
        if !self.warned_corrupt.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                path = %self.path.display(),
                problem = why,
                "the request ledger shared by the processes on this token directory was not one this exporter wrote; it was replaced, counting the budget as spent for one minute so that no process overspends it (nothing to do unless something else writes this file)"
            );
        }
    }

    /// Changes the ledger under the exclusive lock: `change` sees the requests of the last
    /// minute as of `now`; a corrupt ledger is replaced by a full one first. `None`: another
    /// holder kept the lock too long.
    fn update<T>(
        &self,
        now: Duration,
        per_minute: u32,
        change: impl FnOnce(&mut Entries) -> T,
    ) -> Result<Option<T>, LedgerError> {
        let now = millis(now);
        let Some(mut file) = self.open_locked(true)? else {
            return Ok(None);
        };
        let read = self.read(&mut file, now)?;
        // Where the read stopped: the ledger's length (or past the limit, when too large).
        let old_len = std::io::Seek::stream_position(&mut file).map_err(LedgerError::Io)?;
        let (mut entries, corrupt) = match read {
            Ok(entries) => (entries, false),
            Err(why) => {
                self.corrupt(why);
                (Entries::full(now, per_minute), true)
            }
        };
        let before = entries.clone();
        let out = change(&mut entries);
        // Nothing taken (a refusal): the file stays as it is; what expired in it is
        // dropped by every reader anyway.
        if corrupt || entries != before {
            Self::write(&file, &entries, old_len)?;
        }
        Ok(Some(out))
    }

    /// Reads the ledger under a shared lock; a corrupt one reads as full (`None` entries).
    fn look(&self, now: Duration) -> Result<Option<Entries>, LedgerError> {
        let now = millis(now);
        let Some(mut file) = self.open_locked(false)? else {
            return Ok(None);
        };
        Ok(self.read(&mut file, now)?.ok())
    }

    /// Takes a slot for a request at unix time `now`, if every process together made fewer
    /// than `per_minute` in the minute before; else how long until one frees.
    pub fn take(
        &self,
        now: Duration,
        per_minute: u32,
    ) -> Result<Result<(), Duration>, LedgerError> {
        let now_ms = millis(now);
        Ok(self
            .update(now, per_minute, |e| e.take(now_ms, per_minute))?
            .unwrap_or(Err(Duration::from_millis(1))))
    }

    /// Requests every process made in the minute before unix time `now`; a corrupt or busy
    /// ledger counts as `per_minute`.
    pub fn used(&self, now: Duration, per_minute: u32) -> Result<usize, LedgerError> {
        Ok(self
            .look(now)?
            .map_or(per_minute as usize, |e| e.sent.len()))
    }

    /// When (unix time) Withings' 601 pause ends, as any process on the ledger heard it.
    pub fn pause_until(&self, now: Duration) -> Result<Option<Duration>, LedgerError> {
        Ok(self
            .look(now)?
            .and_then(|e| e.pause_until)
            .map(Duration::from_millis))
    }

    /// Records a 601 pause lasting until unix time `until`, for every process; a longer one
    /// already recorded stays.
    pub fn pause(&self, now: Duration, until: Duration) -> Result<(), LedgerError> {
        let until = millis(until);
        self.update(now, WITHINGS_LIMIT_PER_MINUTE, |e| {
            e.pause_until = e.pause_until.max(Some(until));
        })?;
        Ok(())
    }

    /// Says once, for this process, that the ledger cannot be used and what that means.
    /// A token directory that is gone or full is not said again here: the token files'
    /// own errors say it, with what to do.
    pub fn unusable(&self, error: &LedgerError) {
        if error.place_gone_or_full() {
            tracing::debug!(path = %self.path.display(), error = %error, "request ledger unusable");
            return;
        }
        if !self.warned_unusable.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                path = %self.path.display(),
                error = %error,
                "cannot use the request ledger shared by the processes on this token directory; this process counts its own requests alone, so exporters, backfill and auth running together may exceed WITHINGS_REQUESTS_PER_MINUTE: remove it if it is not a regular file, and make the token directory writable by this user"
            );
        }
    }
}

#[derive(Debug)]
pub struct Budget {
    per_minute: u32,
    clock: Clock,
    /// When each request in the current window was let through, oldest first: this
    /// process's own, what it counts by when there is no usable ledger.
    sent: Mutex<VecDeque<Instant>>,
    /// The ledger every process on the token directory counts in, if there is one.
    ledger: Option<Arc<Ledger>>,
}

impl Budget {
    pub fn new(per_minute: u32, clock: Clock) -> Self {
        Self {
            per_minute: per_minute.max(1),
            clock,
            sent: Mutex::new(VecDeque::with_capacity(per_minute as usize)),
            ledger: None,
        }
    }

    /// This budget, counted with every other process's requests in `ledger`.
    pub fn with_ledger(mut self, ledger: Arc<Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    pub fn ledger(&self) -> Option<&Arc<Ledger>> {
        self.ledger.as_ref()
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Instant>> {
        crate::lock::lock(&self.sent)
    }

    fn expire(sent: &mut VecDeque<Instant>, now: Instant) {
        while sent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= WINDOW)
        {
            sent.pop_front();
        }
    }

    /// Takes a slot for one request now, or says how long until one frees up.
    pub fn try_take(&self) -> Result<(), Duration> {
        let now = self.clock.now();
        let mut sent = self.lock();
        Self::expire(&mut sent, now);
        if let Some(ledger) = &self.ledger {
            match ledger.take(self.clock.unix_time(), self.per_minute) {
                Ok(taken) => {
                    if taken.is_ok() {
                        sent.push_back(now);
                    }
                    return taken;
                }
                Err(e) => ledger.unusable(&e),
            }
        }
        if sent.len() < self.per_minute as usize {
            sent.push_back(now);
            return Ok(());
        }
        let oldest = sent.front().copied().unwrap_or(now);
        Err((oldest + WINDOW).saturating_duration_since(now))
    }

    /// Requests let through in the last 60 seconds.
    pub fn used(&self) -> usize {
        if let Some(ledger) = &self.ledger {
            match ledger.used(self.clock.unix_time(), self.per_minute) {
                Ok(used) => return used,
                Err(e) => ledger.unusable(&e),
            }
        }
        let now = self.clock.now();
        let mut sent = self.lock();
        Self::expire(&mut sent, now);
        sent.len()
    }

    /// Slots free right now.
    pub fn free(&self) -> usize {
        (self.per_minute as usize).saturating_sub(self.used())
    }

    /// Takes a slot, waiting for one as long as `max_wait` allows. For work that may wait
    /// (a backfill, subscriptions); scrapes never wait, they are answered from state.
    pub async fn take_waiting(&self, max_wait: Duration) -> Result<(), Duration> {
        let deadline = Instant::now() + max_wait;
        loop {
            match self.try_take() {
                Ok(()) => return Ok(()),
                Err(wait) => {
                    let now = Instant::now();
                    if now + wait > deadline {
                        return Err(wait);
                    }
                    // The slot frees at a known instant: sleeping until then is the wait
                    // itself, not a guess.
                    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_window_of_sixty_seconds_holds_more_than_the_budget() {
        let clock = Clock::default();
        let budget = Budget::new(3, clock.clone());
        for _ in 0..3 {
            assert_eq!(budget.try_take(), Ok(()));
        }
        let wait = budget.try_take().unwrap_err();
        assert!(wait <= WINDOW && wait > Duration::from_secs(59), "{wait:?}");
        clock.advance(Duration::from_secs(30));
        assert!(budget.try_take().is_err());
        assert_eq!(budget.free(), 0);
        clock.advance(Duration::from_secs(30));
        // The first three are now a minute old: their slots are free again, all at once.
        assert_eq!(budget.free(), 3);
        for _ in 0..3 {
            assert_eq!(budget.try_take(), Ok(()));
        }
        assert!(budget.try_take().is_err());
    }

    #[test]
    fn slots_free_in_the_order_they_were_taken() {
        let clock = Clock::default();
        let budget = Budget::new(2, clock.clone());
        budget.try_take().unwrap();
        clock.advance(Duration::from_secs(20));
        budget.try_take().unwrap();
        let wait = budget.try_take().unwrap_err();
        assert!(wait <= Duration::from_secs(40) && wait > Duration::from_secs(39));
        clock.advance(Duration::from_secs(40));
        assert_eq!(budget.used(), 1);
        budget.try_take().unwrap();
        assert!(budget.try_take().is_err());
    }

    fn shared(dir: &Path, per_minute: u32, clock: &Clock) -> Budget {
        Budget::new(per_minute, clock.clone())
            .with_ledger(Arc::new(Ledger::new(dir.join(".budget"))))
    }

    #[test]
    fn two_processes_on_one_ledger_spend_one_budget() {
        let dir = tempfile::tempdir().unwrap();
        // Two processes: two ledgers on one file, each with a budget of its own.
        let clock = Clock::default();
        let (a, b) = (shared(dir.path(), 5, &clock), shared(dir.path(), 5, &clock));
        let mut taken = 0;
        for _ in 0..10 {
            taken += usize::from(a.try_take().is_ok()) + usize::from(b.try_take().is_ok());
        }
        assert_eq!(
            taken, 5,
            "two processes took {taken} slots of a budget of 5"
        );
        assert_eq!((a.used(), b.used(), a.free()), (5, 5, 0));
        let wait = b.try_take().unwrap_err();
        assert!(wait > Duration::from_secs(59) && wait <= WINDOW, "{wait:?}");
        clock.advance(WINDOW);
        assert_eq!(a.free(), 5);
        assert!(b.try_take().is_ok());
        assert_eq!(a.used(), 1);
        let mode = std::fs::metadata(dir.path().join(".budget"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn two_processes_hammering_one_ledger_never_overspend() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let taken: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    s.spawn(move || {
                        let budget = shared(&path, 20, &Clock::default());
                        (0..50).filter(|_| budget.try_take().is_ok()).count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(taken, 20);
    }

    #[test]
    fn a_601_pause_is_heard_by_every_process_on_the_ledger() {
        use super::super::ratelimit::RateLimiter;
        let dir = tempfile::tempdir().unwrap();
        let ledger = || Arc::new(Ledger::new(dir.path().join(".budget")));
        let clock = Clock::default();
        let a = RateLimiter::new(clock.clone()).with_ledger(ledger());
        let b = RateLimiter::new(clock.clone()).with_ledger(ledger());
        a.rate_limited(Some(30));
        let left = b.remaining().expect("the other process pauses too");
        assert!(
            left > Duration::from_secs(29) && left <= Duration::from_secs(37),
            "{left:?}"
        );
        assert!(b.resume_at_unix().is_some());
        // An answer to the other process ends its own backoff, not the application's pause.
        b.answered();
        assert!(b.remaining().is_some());
        clock.advance(Duration::from_secs(40));
        assert!(a.remaining().is_none() && b.remaining().is_none());
    }

    #[test]
    fn a_corrupt_ledger_counts_as_full_for_a_minute_then_heals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".budget");
        let clock = Clock::default();
        for case in 0..7 {
            let now = clock.unix_time().as_millis();
            let garbage = match case {
                0 => b"\x00\xff not a ledger".to_vec(),
                1 => b"hello\n1\n".to_vec(),
                2 => format!("{LEDGER_HEADER}\nten past three\n").into_bytes(),
                // A request dated an hour ahead would hold a slot for an hour.
                3 => format!("{LEDGER_HEADER}\n{}\n", now + 3_600_000).into_bytes(),
                // A 601 pause for a year.
                4 => format!("{LEDGER_HEADER}\npause {}\n", now + 365 * 86_400_000).into_bytes(),
                // More requests than Withings allows in a minute.
                5 => format!("{LEDGER_HEADER}\n{}", format!("{now}\n").repeat(500)).into_bytes(),
                // Too large to be a ledger at all.
                _ => vec![b'1'; 1 << 20],
            };
            std::fs::write(&path, &garbage).unwrap();
            let budget = shared(dir.path(), 5, &clock);
            assert_eq!(budget.used(), 5, "a corrupt ledger reads as full");
            assert!(
                budget.try_take().is_err(),
                "nothing is sent on a corrupt ledger"
            );
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(len < 200, "the corrupt ledger was replaced ({len} bytes)");
            clock.advance(WINDOW);
            assert!(
                budget.try_take().is_ok(),
                "a minute later the budget is whole again"
            );
            assert_eq!(budget.used(), 1);
        }
    }

    #[test]
    fn without_a_usable_ledger_a_process_counts_its_own_requests() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::default();
        // A missing directory: nothing is created, the budget holds in-process.
        let missing = shared(&dir.path().join("gone"), 2, &clock);
        assert!(missing.try_take().is_ok() && missing.try_take().is_ok());
        assert!(missing.try_take().is_err());
        assert_eq!(missing.used(), 2);
        assert!(!dir.path().join("gone").exists());
        // A symbolic link in the ledger's place is not followed.
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(".budget")).unwrap();
        let linked = shared(dir.path(), 1, &clock);
        assert!(linked.try_take().is_ok() && linked.try_take().is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    }

    #[test]
    fn a_fifo_in_place_of_the_ledger_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".budget");
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let budget = shared(dir.path(), 1, &Clock::default());
        assert!(budget.try_take().is_ok() && budget.try_take().is_err());
    }

    #[test]
    fn a_zero_budget_is_one() {
        let budget = Budget::new(0, Clock::default());
        assert_eq!(budget.per_minute(), 1);
        assert!(budget.try_take().is_ok());
        assert!(budget.try_take().is_err());
    }
}
