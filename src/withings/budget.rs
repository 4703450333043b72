//! The application's request budget: Withings allows 120 requests a minute per application,
//! shared by every user and every endpoint (`withings-api.md`, "Several people under one
//! application"). Every request the exporter makes takes a slot here first, in the client,
//! so that no path (a probe, a refresh, a flood of scrapes) can spend more.
//!
//! The budget is a sliding window: a request may go out only if fewer than `per_minute`
//! requests went out in the 60 seconds before it. A fixed per-minute counter would allow
//! twice the budget across a minute boundary; Withings' own window is not documented, so the
//! strict reading is the safe one.

use crate::clock::Clock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window Withings' limit is stated over.
pub const WINDOW: Duration = Duration::from_secs(60);
pub use crate::config::{DEFAULT_PER_MINUTE, WITHINGS_LIMIT_PER_MINUTE};

#[derive(Debug)]
pub struct Budget {
    per_minute: u32,
    clock: Clock,
    /// When each request in the current window was let through, oldest first.
    sent: Mutex<VecDeque<Instant>>,
}

impl Budget {
    pub fn new(per_minute: u32, clock: Clock) -> Self {
        Self {
            per_minute: per_minute.max(1),
            clock,
            sent: Mutex::new(VecDeque::with_capacity(per_minute as usize)),
        }
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
        if sent.len() < self.per_minute as usize {
            sent.push_back(now);
            return Ok(());
        }
        let oldest = sent.front().copied().unwrap_or(now);
        Err((oldest + WINDOW).saturating_duration_since(now))
    }

    /// Requests let through in the last 60 seconds.
    pub fn used(&self) -> usize {
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

    #[test]
    fn a_zero_budget_is_one() {
        let budget = Budget::new(0, Clock::default());
        assert_eq!(budget.per_minute(), 1);
        assert!(budget.try_take().is_ok());
        assert!(budget.try_take().is_err());
    }
}
