//! Sharing the request budget fairly between accounts.
//!
//! The budget itself (in the Withings client) only says how many requests may go out; on its
//! own it would hand them to whichever probes happen to arrive just as a slot frees, so with
//! more accounts than the budget can serve, some would be refreshed every minute and others
//! never. Here a fetch may start only if the free slots outnumber the accounts that wait for
//! data older than this account's: the account whose data is oldest goes first, and probes
//! that are not admitted are answered at once from the last fetch.
//!
//! "Waiting" means probed recently: an account nobody scrapes reserves nothing.

use crate::clock::Clock;
use crate::withings::Limits;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An account counts as waiting for this long after its last probe: two scrape intervals
/// of the shipped configuration.
pub const DEMAND_WINDOW: Duration = Duration::from_secs(120);
/// Entries of accounts not probed for this long are forgotten (removed accounts).
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When this account's last fetch was admitted; `None` before its first.
    last_fetch: Option<Instant>,
    last_probe: Instant,
}

#[derive(Debug)]
pub struct FairShare {
    limits: Arc<Limits>,
    clock: Clock,
    /// Requests a whole fetch makes: one per enabled collector.
    cost: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl FairShare {
    pub fn new(limits: Arc<Limits>, clock: Clock, cost: usize) -> Self {
        Self {
            limits,
            clock,
            cost: cost.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl FairShare {
    /// A whole fetch for `account` may start now: its share of the budget allows one.
    pub fn admit(&self, account: &str) -> bool {
        self.admit_costing(account, self.cost)
    }

    /// A fetch of `cost` requests for `account` may start now (a notification's fetch runs
    /// only some collectors, and counting it as a whole one would hold back the others').
    pub fn admit_costing(&self, account: &str, cost: usize) -> bool {
        let now = self.clock.now();
        let mut entries = crate::lock::lock(&self.entries);
        let mine = {
            let entry = entries.entry(account.to_owned()).or_insert(Entry {
                last_fetch: None,
                last_probe: now,
            });
            entry.last_probe = now;
            entry.last_fetch
        };
        // Counted in whole fetches: a fetch that could make only some of its requests would
        // leave its other collectors behind.
        let free = self.limits.budget.free() / cost.max(1);
        if free == 0 {
            return false;
        }
        // `None` (never fetched) is older than any instant; two never-fetched accounts are
        // equally old, and neither yields to the other.
        let older_waiting = entries
            .iter()
            .filter(|(name, e)| {
                name.as_str() != account
                    && now.saturating_duration_since(e.last_probe) <= DEMAND_WINDOW
                    && match (e.last_fetch, mine) {
                        (None, Some(_)) => true,
                        (Some(theirs), Some(mine)) => theirs < mine,
                        (_, None) => false,
                    }
            })
            .count();
        if older_waiting >= free {
            return false;
        }
        if let Some(entry) = entries.get_mut(account) {
            entry.last_fetch = Some(now);
        }
        if entries.len() > 64 {
            entries.retain(|_, e| now.saturating_duration_since(e.last_probe) < FORGET_AFTER);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spends the slots `admit` granted, as the fetch would.
    fn fetch_if_admitted(share: &FairShare, limits: &Limits, name: &str) -> bool {
        let admitted = share.admit(name);
        if admitted {
            limits.budget.try_take().unwrap();
        }
        admitted
    }

    #[test]
    fn with_more_accounts_than_budget_the_oldest_go_first_and_none_starves() {
        let clock = Clock::default();
        let limits = Arc::new(Limits::new(10, clock.clone()));
        let share = FairShare::new(Arc::clone(&limits), clock.clone(), 1);
        let names: Vec<String> = (0..30).map(|i| format!("a{i:02}")).collect();
        let mut fetched_at: HashMap<String, Vec<u64>> = HashMap::new();
        // Every account is probed every 60 s, spread over the minute, for 6 minutes: the
        // budget serves 10 a minute, so each of the 30 must be fetched about every 3 minutes.
        for tick in 0..180u64 {
            let name = &names[(tick % 30) as usize];
            if fetch_if_admitted(&share, &limits, name) {
                fetched_at.entry(name.clone()).or_default().push(tick * 2);
            }
            clock.advance(Duration::from_secs(2));
        }
        for name in &names {
            let times = fetched_at.get(name).map_or(&[][..], Vec::as_slice);
            assert!(
                !times.is_empty(),
                "{name} was never fetched: {fetched_at:?}"
            );
            assert!(times.len() <= 3, "{name} fetched {} times", times.len());
        }
        let total: usize = fetched_at.values().map(Vec::len).sum();
        assert!(total <= 60, "{total} fetches in 6 minutes at 10 a minute");
    }

    #[test]
    fn a_single_hot_account_is_held_to_the_budget_not_beyond() {
        let clock = Clock::default();
        let limits = Arc::new(Limits::new(5, clock.clone()));
        let share = FairShare::new(Arc::clone(&limits), clock.clone(), 1);
        let admitted = (0..100)
            .filter(|_| fetch_if_admitted(&share, &limits, "flood"))
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn a_fetch_of_some_collectors_is_admitted_at_its_own_cost() {
        let clock = Clock::default();
        let limits = Arc::new(Limits::new(12, clock.clone()));
        // A whole fetch is nine requests.
        let share = FairShare::new(Arc::clone(&limits), clock.clone(), 9);
        for _ in 0..5 {
            limits.budget.try_take().unwrap();
        }
        // Seven free: no whole fetch, but a notification's fetch of three collectors.
        assert!(!share.admit("a"));
        assert!(share.admit_costing("a", 3));
        for _ in 0..6 {
            limits.budget.try_take().unwrap();
        }
        assert!(!share.admit_costing("a", 3));
        assert!(share.admit_costing("a", 1));
    }

    #[test]
    fn an_account_nobody_probes_reserves_nothing() {
        let clock = Clock::default();
        let limits = Arc::new(Limits::new(2, clock.clone()));
        let share = FairShare::new(Arc::clone(&limits), clock.clone(), 1);
        assert!(share.admit("old"));
        // "old" is probed once and then never again: "new" fetched later must not keep
        // yielding to it after the demand window.
        clock.advance(Duration::from_secs(1));
        assert!(fetch_if_admitted(&share, &limits, "new"));
        clock.advance(DEMAND_WINDOW + Duration::from_secs(61));
        assert!(fetch_if_admitted(&share, &limits, "new"));
    }
}
