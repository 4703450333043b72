//! When a subscribed account is fetched: on a notification (at most once per
//! `WITHINGS_NOTIFY_MIN_INTERVAL_SECONDS`) or when the safety poll is due, and otherwise not
//! at all: its probes are answered from its state. Accounts not (yet) subscribed are left to
//! the fair share, exactly as without notifications.
//!
//! A notification's fetch runs only the collectors of the `appli` codes that arrived since
//! the last fetch ([`Wake::Applis`]); the safety poll, counted from the last fetch of every
//! collector, runs them all, so that a collector no notification announces (goals, devices)
//! is still read at that pace however busy the others are.

use crate::account::Wake;
use crate::clock::Clock;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone)]
struct Entry {
    /// Every needed subscription is in place.
    subscribed: bool,
    /// A notification arrived and its fetch has not been started yet.
    pending: bool,
    /// A notification's fetch was asked for and the next admission starts it.
    triggered: bool,
    /// The `appli` codes notified since the last fetch started.
    woken: BTreeSet<i64>,
    /// The last fetch of every collector: the safety poll counts from it.
    last_full_fetch: Option<Instant>,
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

    /// A notification of `appli` for `account`; true when no fetch was waiting for one
    /// already.
    pub fn notified(&self, account: &str, appli: i64) -> bool {
        let now = self.clock.unix_seconds_at(self.clock.now());
        self.with(account, |e| {
            e.last_notification = Some(now);
            e.woken.insert(appli);
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
            e.subscribed.then(|| e.triggered || self.poll_due(e, now))
        })
        .flatten()
    }

    fn poll_due(&self, e: &Entry, now: Instant) -> bool {
        e.last_full_fetch
            .is_none_or(|at| now.saturating_duration_since(at) >= self.safety_poll)
    }

    /// Whether a fetch of `e` starting at `now` runs only the notified collectors: for a
    /// subscribed account whose safety poll is not due.
    fn notified_only(&self, e: &Entry, now: Instant) -> bool {
        e.subscribed && e.triggered && !e.woken.is_empty() && !self.poll_due(e, now)
    }

    /// Which collectors a fetch of `account` starting now would run (see [`Self::started`]).
    pub fn upcoming(&self, account: &str) -> Wake {
        let now = self.clock.now();
        self.read(account, |e| {
            if self.notified_only(e, now) {
                Wake::Applis(e.woken.clone())
            } else {
                Wake::All
            }
        })
        .unwrap_or_default()
    }

    /// A fetch of `account` was admitted: which collectors it runs. Only those of the
    /// notifications, for a subscribed account whose safety poll is not due; otherwise all
    /// of them. The fetch starting now reads whatever the notifications so far announced
    /// (Withings sends one once the data is stored), so none of them waits for another.
    pub fn started(&self, account: &str) -> Wake {
        let now = self.clock.now();
        self.with(account, |e| {
            let wake = if self.notified_only(e, now) {
                Wake::Applis(std::mem::take(&mut e.woken))
            } else {
                e.last_full_fetch = Some(now);
                e.woken.clear();
                Wake::All
            };
            e.triggered = false;
            e.pending = false;
            wake
        })
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
        assert_eq!(s.started("a"), Wake::All);
        assert_eq!(s.wants("a"), Some(false));
        assert!(s.notified("a", 4));
        assert!(!s.notified("a", 4));
        assert_eq!(s.take_due(), vec!["a".to_owned()]);
        assert_eq!(s.wants("a"), Some(true));
        assert_eq!(s.started("a"), Wake::Applis([4].into()));
        assert_eq!(s.wants("a"), Some(false));
        // Within the interval a notification waits.
        assert!(s.notified("a", 1));
        assert!(s.take_due().is_empty());
        clock.advance(Duration::from_secs(30));
        assert_eq!(s.take_due().len(), 1);
        assert_eq!(s.started("a"), Wake::Applis([1].into()));
        clock.advance(Duration::from_secs(3600));
        assert_eq!(s.wants("a"), Some(true));
    }

    #[test]
    fn a_notified_fetch_wakes_its_applis_and_the_safety_poll_every_collector() {
        let clock = Clock::default();
        let s = Schedule::new(
            clock.clone(),
            Duration::from_secs(30),
            Duration::from_secs(3600),
        );
        s.set_subscribed("a", true);
        assert_eq!(s.started("a"), Wake::All);
        // Two kinds of news before the fetch: one fetch, of both.
        assert!(s.notified("a", 44));
        assert!(!s.notified("a", 54));
        assert_eq!(s.take_due(), vec!["a".to_owned()]);
        // What the admission counts the fetch as, before it starts, is what it runs.
        assert_eq!(s.upcoming("a"), Wake::Applis([44, 54].into()));
        assert_eq!(s.started("a"), Wake::Applis([44, 54].into()));
        assert_eq!(s.upcoming("a"), Wake::All);
        // Notified fetches every half hour do not hold back the safety poll: it counts
        // from the last fetch of every collector.
        for _ in 0..3 {
            clock.advance(Duration::from_secs(1800));
            s.notified("a", 16);
            assert_eq!(s.take_due(), vec!["a".to_owned()]);
            let wake = s.started("a");
            if wake == Wake::All {
                assert_eq!(s.wants("a"), Some(false));
                return;
            }
            assert_eq!(wake, Wake::Applis([16].into()));
        }
        panic!("the safety poll never ran every collector");
    }

    #[test]
    fn an_account_not_subscribed_or_a_scrape_without_news_fetches_everything() {
        let clock = Clock::default();
        let s = Schedule::new(
            clock.clone(),
            Duration::from_secs(30),
            Duration::from_secs(3600),
        );
        // Not subscribed (yet): a notification still makes the fetch sooner, of everything.
        assert!(s.notified("b", 16));
        s.take_due();
        assert_eq!(s.started("b"), Wake::All);
        // A notification's fetch refused by the budget keeps its applis for the next turn.
        s.set_subscribed("b", true);
        s.notified("b", 54);
        clock.advance(Duration::from_secs(30));
        assert_eq!(s.take_due(), vec!["b".to_owned()]);
        s.refused("b");
        clock.advance(Duration::from_secs(30));
        assert_eq!(s.take_due(), vec!["b".to_owned()]);
        assert_eq!(s.started("b"), Wake::Applis([54].into()));
    }
}
