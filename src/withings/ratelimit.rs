//! Honouring Withings' status 601, "too many requests" (`withings-api.md`, "Envelope").
//!
//! The limit is 120 requests a minute per application, shared by every user of it, so one
//! exporter that keeps asking while refused eats the budget of all the others. After a 601
//! no request goes out until `wait_seconds` has passed or, when Withings gives none, until
//! an exponential backoff with jitter has.
//!
//! The pause is the application's: every process on one token directory keeps it in the
//! request ledger ([`super::budget::Ledger`]) as well as here, and none sends until the
//! longest pause any of them heard has passed.

use super::budget::Ledger;
use crate::clock::Clock;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// First backoff when a 601 carries no `wait_seconds`. Withings has been seen answering 601
/// "Same arguments in less than 10 seconds", so retrying sooner than this is refused anyway.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Longest backoff of our own choosing: a scrape interval or two, not the rest of the day.
pub const BACKOFF_CAP: Duration = Duration::from_secs(600);
/// Longest `wait_seconds` taken at its word: a garbled value must not silence the exporter
/// for days.
pub const MAX_HONOURED_WAIT: Duration = Duration::from_secs(3600);
/// Up to this fraction is added to every wait, never taken off, so that exporters sharing one
/// application and refused together do not all come back in the same second.
pub const JITTER: f64 = 0.2;

/// The backoff state machine. Time comes in as an argument, so it is tested without waiting.
#[derive(Debug, Default)]
pub struct Backoff {
    until: Option<Instant>,
    consecutive: u32,
}

impl Backoff {
    /// How long requests must still wait, if they must.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    pub fn until(&self, now: Instant) -> Option<Instant> {
        self.remaining(now).and(self.until)
    }

    /// Records a 601; returns how long no request may go out. `jitter` is in `[0, 1)`.
    pub fn rate_limited(
        &mut self,
        now: Instant,
        wait_seconds: Option<i64>,
        jitter: f64,
    ) -> Duration {
        self.consecutive = self.consecutive.saturating_add(1);
        let base = match wait_seconds
            .and_then(|w| u64::try_from(w).ok())
            .filter(|&w| w > 0)
        {
            Some(w) => Duration::from_secs(w).min(MAX_HONOURED_WAIT),
            None => {
                let doublings = self.consecutive.saturating_sub(1).min(16);
                BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_CAP)
            }
        };
        let wait = base.mul_f64(1.0 + JITTER * jitter.clamp(0.0, 1.0));
        self.until = now.checked_add(wait);
        wait
    }

    /// Withings answered something other than a 601: the next 601 starts the backoff afresh.
    pub fn answered(&mut self) {
        self.consecutive = 0;
        self.until = None;
    }
}

/// A fresh number in `[0, 1)`. `RandomState` is seeded per process and stepped per instance,
/// which is plenty to spread retries without a random-number crate.
pub fn jitter() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The backoff shared by every fetch of one exporter.
#[derive(Debug)]
pub struct RateLimiter {
    clock: Clock,
    backoff: Mutex<Backoff>,
    /// Where the other processes on the token directory hear of this process's 601s, and
    /// this one of theirs.
    ledger: Option<Arc<Ledger>>,
}

impl RateLimiter {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            backoff: Mutex::new(Backoff::default()),
            ledger: None,
        }
    }

    /// This pause, shared with every other process on `ledger`.
    pub fn with_ledger(mut self, ledger: Arc<Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// The end of the pause another process recorded, as an instant of this clock.
    fn shared_until(&self, now: Instant) -> Option<Instant> {
        let ledger = self.ledger.as_ref()?;
        let unix_now = self.clock.unix_time();
        match ledger.pause_until(unix_now) {
            Ok(until) => until
                .and_then(|until| until.checked_sub(unix_now))
                .filter(|left| !left.is_zero())
                .and_then(|left| now.checked_add(left)),
            Err(e) => {
                ledger.unusable(&e);
                None
            }
        }
    }

    /// The end of the pause, this process's or another's, while one lasts.
    fn until(&self, now: Instant) -> Option<Instant> {
        let own = self.lock().until(now);
        own.max(self.shared_until(now))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Backoff> {
        crate::lock::lock(&self.backoff)
    }

    /// `Some(time left)` while requests to Withings must wait.
    pub fn remaining(&self) -> Option<Duration> {
        let now = self.clock.now();
        self.until(now)
            .map(|until| until.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Unix time requests may resume, while backing off.
    pub fn resume_at_unix(&self) -> Option<f64> {
        let now = self.clock.now();
        let until = self.until(now)?;
        Some(self.clock.unix_seconds_at(until))
    }

    pub fn rate_limited(&self, wait_seconds: Option<i64>) -> Duration {
        let wait = self
            .lock()
            .rate_limited(self.clock.now(), wait_seconds, jitter());
        if let Some(ledger) = &self.ledger {
            let now = self.clock.unix_time();
            if let Err(e) = ledger.pause(now, now.saturating_add(wait)) {
                ledger.unusable(&e);
            }
        }
        wait
    }

    pub fn answered(&self) {
        self.lock().answered();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_seconds_is_honoured_never_shortened() {
        let now = Instant::now();
        for jitter in [0.0, 0.5, 0.999] {
            let mut b = Backoff::default();
            let wait = b.rate_limited(now, Some(30), jitter);
            assert!(
                wait >= Duration::from_secs(30) && wait <= Duration::from_secs(36),
                "{wait:?}"
            );
            assert!(b.remaining(now + Duration::from_secs(29)).is_some());
            assert!(b.remaining(now + wait).is_none());
        }
    }

    #[test]
    fn without_wait_seconds_the_backoff_doubles_up_to_a_cap() {
        let now = Instant::now();
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..10)
            .map(|_| b.rate_limited(now, None, 0.0).as_secs())
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 600, 600, 600, 600]);
        // Any other answer resets it.
        b.answered();
        assert!(b.remaining(now).is_none());
        assert_eq!(b.rate_limited(now, None, 0.0), BACKOFF_BASE);
        // Nonsense wait_seconds fall back to the backoff; huge ones are capped.
        assert_eq!(b.rate_limited(now, Some(0), 0.0), Duration::from_secs(20));
        assert_eq!(b.rate_limited(now, Some(-5), 0.0), Duration::from_secs(40));
        assert_eq!(b.rate_limited(now, Some(i64::MAX), 0.0), MAX_HONOURED_WAIT);
    }

    #[test]
    fn jitter_only_lengthens_and_stays_in_range() {
        let now = Instant::now();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
            let wait = Backoff::default().rate_limited(now, None, j);
            assert!(wait >= BACKOFF_BASE && wait < BACKOFF_BASE.mul_f64(1.0 + JITTER));
            seen.insert(wait);
        }
        assert!(seen.len() > 1, "jitter never varied");
    }

    #[test]
    fn limiter_follows_its_clock() {
        let clock = Clock::default();
        let limiter = RateLimiter::new(clock.clone());
        assert!(limiter.remaining().is_none() && limiter.resume_at_unix().is_none());
        limiter.rate_limited(Some(60));
        assert!(limiter.remaining().is_some() && limiter.resume_at_unix().is_some());
        clock.advance(Duration::from_secs(73));
        assert!(limiter.remaining().is_none() && limiter.resume_at_unix().is_none());
    }
}
