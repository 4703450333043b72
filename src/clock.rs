//! The clock behind the exporter's scheduling decisions: the minimum fetch interval and the
//! rate-limit backoff.
//!
//! It is the monotonic clock, plus an offset that only moves forward. Tests advance the
//! offset to step past a 601's `wait_seconds` or a fetch interval, so they never sleep to
//! wait for time to pass; in a running exporter the offset stays 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_nanos: Arc<AtomicU64>,
}

impl Clock {
    pub fn now(&self) -> Instant {
        let real = Instant::now();
        let offset = Duration::from_nanos(self.offset_nanos.load(Ordering::Relaxed));
        // An offset too large for the platform's Instant is a test asking for the far
        // future; the real time is the only safe answer then.
        real.checked_add(offset).unwrap_or(real)
    }

    /// Moves this clock (and every clone of it) forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .offset_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                Some(o.saturating_add(by))
            });
    }

    /// Unix time, in seconds, of `at` (an instant of this clock), for timestamp gauges.
    pub fn unix_seconds_at(&self, at: Instant) -> f64 {
        let now = self.now();
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        match at.checked_duration_since(now) {
            Some(ahead) => unix_now + ahead.as_secs_f64(),
            None => unix_now - now.duration_since(at).as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_clone_forward() {
        let clock = Clock::default();
        let other = clock.clone();
        let before = other.now();
        clock.advance(Duration::from_secs(3600));
        assert!(other.now() >= before + Duration::from_secs(3600));
        clock.advance(Duration::MAX);
        // Saturated, not wrapped, and still usable.
        assert!(other.now() >= before);
    }

    #[test]
    fn unix_time_of_a_future_instant_is_ahead_of_now() {
        let clock = Clock::default();
        let in_a_minute = clock.now() + Duration::from_secs(60);
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let at = clock.unix_seconds_at(in_a_minute);
        assert!((at - unix_now - 60.0).abs() < 5.0, "{at} vs {unix_now}");
    }
}
