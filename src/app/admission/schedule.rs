//! When a subscribed account is fetched: on a notification (at most once per
//! `WITHINGS_NOTIFY_MIN_INTERVAL_SECONDS`) or when the safety poll is due, and otherwise not
//! at all: its probes are answered from its state. Accounts not (yet) subscribed are left to
//! the fair share, exactly as without notifications.

use crate::clock::Clock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    /// Every needed subscription is in place.
    subscribed: bool,
    /// A notification arrived and its fetch has not been started yet.
    pending: bool,
    /// A notification's fetch was asked for and the next admission starts it.
    triggered: bool,
    last_fetch: Option<Instant>,
    last_trigger: Option<Instant>,
    last_notification: Option<f64>,
}

#[derive(Debug)]
pub struct Schedule {
    clock: Clock,
    min_interval: Duration,
    safety_poll: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Schedule {
    pub fn new(clock: Clock, min_interval: Duration, safety_poll: Duration) -> Self {
        Self {
            clock,
            min_interval,
            safety_poll,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, account: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut entries = crate::lock::lock(&self.entries);
        f(entries.entry(account.to_owned()).or_default())
    }

    fn read<T>(&self, account: &str, f: impl FnOnce(&Entry) -> T) -> Option<T> {
        let entries = crate::lock::lock(&self.entries);
        entries.get(account).map(f)
    }

    pub fn set_subscribed(&self, account: &str, subscribed: bool) {
        self.with(account, |e| e.subscribed = subscribed);
    }

    pub fn is_subscribed(&self, account: &str) -> bool {
        self.read(account, |e| e.subscribed).unwrap_or(false)
    }

    pub fn last_notification(&self, account: &str) -> Option<f64> {
        self.read(account, |e| e.last_notification).flatten()
    }

    /// A notification for `account`; true when no fetch was waiting for one already.
    pub fn notified(&self, account: &str) -> bool {
        let now = self.clock.unix_seconds_at(self.clock.now());
        self.with(account, |e| {
            e.last_notification = Some(now);
            let fresh = !e.pending && !e.triggered;
            e.pending = true;
            fresh
        })
    }

    /// The accounts whose notified fetch may start now: one per account per minimum
    /// interval, however many notifications came. Marks them triggered.
    pub fn take_due(&self) -> Vec<String> {
        let now = self.clock.now();
        let mut entries = crate::lock::lock(&self.entries);
        let mut due = Vec::new();
        for (name, e) in entries.iter_mut() {
            let interval_passed = e
                .last_trigger
                .is_none_or(|at| now.saturating_duration_since(at) >= self.min_interval);
            if e.pending && interval_passed {
                e.pending = false;
                e.triggered = true;
                e.last_trigger = Some(now);
                due.push(name.clone());
            }
        }
        due
    }

    /// Whether a fetch of `account` may start, as far as notifications go: `None` for an
    /// account that is not subscribed (the fair share alone decides), else whether a
    /// notification asked for one or the safety poll is due.
    pub fn wants(&self, account: &str) -> Option<bool> {
        let now = self.clock.now();
        self.read(account, |e| {
            e.subscribed.then(|| {
                e.triggered
                    || e.last_fetch
                        .is_none_or(|at| now.saturating_duration_since(at) >= self.safety_poll)
            })
        })
        .flatten()
    }

    /// A fetch of `account` was admitted.
    pub fn started(&self, account: &str) {
        let now = self.clock.now();
        self.with(account, |e| {
            e.last_fetch = Some(now);
            e.triggered = false;
        });
    }

    /// A notification's fetch was not admitted (the budget): it waits for the next turn.
    pub fn refused(&self, account: &str) {
        self.with(account, |e| {
            if e.triggered {
                e.triggered = false;
                e.pending = true;
            }
        });
    }

    /// Forgets removed accounts.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        crate::lock::lock(&self.entries).retain(|name, _| keep(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscribed_account_fetches_on_notification_or_safety_poll_only() {
        let clock = Clock::default();
        let s = Schedule::new(
            clock.clone(),
            Duration::from_secs(30),
            Duration::from_secs(3600),
        );
        assert_eq!(s.wants("a"), None);
        s.set_subscribed("a", true);
        // Never fetched: the safety poll is due at once.
        assert_eq!(s.wants("a"), Some(true));
        s.started("a");
        assert_eq!(s.wants("a"), Some(false));
        assert!(s.notified("a"));
        assert!(!s.notified("a"));
        assert_eq!(s.take_due(), vec!["a".to_owned()]);
        assert_eq!(s.wants("a"), Some(true));
        s.started("a");
        assert_eq!(s.wants("a"), Some(false));
        // Within the interval a notification waits.
        assert!(s.notified("a"));
        assert!(s.take_due().is_empty());
        clock.advance(Duration::from_secs(30));
        assert_eq!(s.take_due().len(), 1);
        s.started("a");
        clock.advance(Duration::from_secs(3600));
        assert_eq!(s.wants("a"), Some(true));
    }
}
