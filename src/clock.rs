//! The clock behind the exporter's scheduling decisions (the minimum fetch interval, the
//! rate-limit backoff) and behind every wall-clock reading on the fetch → merge → render
//! path (sync cursors, the "dated in the future" filter, `withings_last_success_...`).
//!
//! The monotonic side is the monotonic clock plus an offset that only moves forward. Tests
//! advance the offset to step past a 601's `wait_seconds` or a fetch interval, so they never
//! sleep to wait for time to pass; in a running exporter the offset stays 0. The wall-clock
//! side is the system's unix time plus the same offset, or, for a clock a test pinned with
//! [`Clock::starting_at_unix`], that fixed instant plus the offset: it does not move with
//! real time at all, so that an exposition made at a pinned instant is the same on every
//! run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_nanos: Arc<AtomicU64>,
    /// The unix time (since the epoch) a test pinned this clock at; `None` follows the
    /// system clock.
    pinned_unix: Option<Duration>,
}

impl Clock {
    /// A clock whose unix time is `unix_seconds` now and stays there until [`Self::advance`]
    /// moves it; the monotonic side is the real one, as for [`Clock::default`]. A time
    /// before 1970 is taken as 1970.
    pub fn starting_at_unix(unix_seconds: i64) -> Self {
        Self {
            offset_nanos: Arc::default(),
            pinned_unix: Some(Duration::from_secs(
                u64::try_from(unix_seconds).unwrap_or(0),
            )),
        }
    }

    /// Whether a test pinned this clock's unix time.
    pub fn is_pinned(&self) -> bool {
        self.pinned_unix.is_some()
    }

    pub fn now(&self) -> Instant {
        let real = Instant::now();
        // An offset too large for the platform's Instant is a test asking for the far
        // future; the real time is the only safe answer then.
        real.checked_add(self.offset()).unwrap_or(real)
    }

    fn offset(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Ordering::Relaxed))
    }

    /// Time since the unix epoch: the system's (or the pinned instant), plus the offset.
    pub fn unix_time(&self) -> Duration {
        let base = self.pinned_unix.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
        });
        base.saturating_add(self.offset())
    }

    /// Unix time in whole seconds (rounded down).
    pub fn unix_seconds(&self) -> i64 {
        i64::try_from(self.unix_time().as_secs()).unwrap_or(i64::MAX)
    }

    /// Unix time in seconds, with the fraction.
    pub fn unix_seconds_f64(&self) -> f64 {
        self.unix_time().as_secs_f64()
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
        let unix_now = self.unix_seconds_f64();
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

    #[test]
    fn a_pinned_clock_stays_at_its_instant_until_advanced() {
        let clock = Clock::starting_at_unix(1_780_000_000);
        assert!(clock.is_pinned());
        assert_eq!(clock.unix_seconds(), 1_780_000_000);
        assert_eq!(clock.unix_seconds_f64(), 1_780_000_000.0);
        let other = clock.clone();
        other.advance(Duration::from_millis(61_500));
        assert_eq!(clock.unix_seconds(), 1_780_000_061);
        assert_eq!(clock.unix_seconds_f64(), 1_780_000_061.5);
        let in_a_minute = clock.now() + Duration::from_secs(60);
        let at = clock.unix_seconds_at(in_a_minute);
        assert!((at - 1_780_000_121.5).abs() < 1.0, "{at}");
        // Before 1970 is 1970, not a panic.
        assert_eq!(Clock::starting_at_unix(-5).unix_seconds(), 0);
    }

    #[test]
    fn the_default_clock_is_the_system_time_plus_the_offset() {
        let clock = Clock::default();
        assert!(!clock.is_pinned());
        let system = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        let before = system() as i64;
        let now = clock.unix_seconds();
        assert!(now >= before && now <= system() as i64, "{now} {before}");
        clock.advance(Duration::from_secs(7200));
        let later = clock.unix_seconds();
        assert!(later >= before + 7200 && later <= system() as i64 + 7200);
    }
}
