//! Single-flight fetching: scrapes that arrive while a fetch from Withings is running wait
//! for that fetch's result instead of starting their own, so the load on Withings does not
//! grow with the number of scrapers.
//!
//! The fetch runs in a task of its own. A scrape that gives up (its deadline passed, its
//! client went away) stops waiting, but the fetch goes on and its result still reaches the
//! state and the scrapes that come next.

use crate::clock::Clock;
use crate::lock::lock;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How a scrape gets its fetch result.
pub enum Ticket<T> {
    /// The last fetch started less than the minimum interval ago: its result, as it was.
    Recent(T),
    /// A fetch is running; `started` tells whether this call started it or joined it.
    Wait {
        result: watch::Receiver<Option<T>>,
        started: bool,
    },
    /// A fetch was due but `admit` refused to start one: the last result, if any.
    Refused(Option<T>),
}

/// Why a wait for a fetch ended without its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// The waiter's budget ran out first; the fetch goes on.
    Deadline,
    /// The fetch task ended without a result (it panicked, or the runtime is shutting down).
    Abandoned,
}

struct State<T> {
    running: Option<watch::Receiver<Option<T>>>,
    /// When the last completed fetch started, and its result.
    last: Option<(Instant, T)>,
}

pub struct SingleFlight<T> {
    state: Arc<Mutex<State<T>>>,
    clock: Clock,
    min_interval: Duration,
    /// Whether a result says something new; one that does not (a fetch the request budget
    /// held back before anything was sent) leaves the last one standing.
    news: fn(&T) -> bool,
}

/// Clears the running fetch if its task ends without finishing (a panic, or the runtime
/// dropping it), so that the next scrape starts a new fetch rather than wait on a dead one.
/// It owns the sender so that waiters learn of the end only after `running` is cleared.
struct RunningGuard<T> {
    state: Arc<Mutex<State<T>>>,
    sender: watch::Sender<Option<T>>,
    armed: bool,
}

impl<T> Drop for RunningGuard<T> {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.state).running = None;
        }
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// `min_interval` zero means every call that finds no fetch running starts one.
    pub fn new(clock: Clock, min_interval: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                running: None,
                last: None,
            })),
            clock,
            min_interval,
            news: |_| true,
        }
    }

    /// Only results for which `news` is true replace the last one: a result that says
    /// nothing of the upstream (held back before any request went out) is handed to the
    /// scrapes that waited for it, but later ones are served the last real result.
    pub fn keeping_only_news(mut self, news: fn(&T) -> bool) -> Self {
        self.news = news;
        self
    }

    /// Joins the running fetch, serves a recent result, or starts `fetch()` in a new task.
    /// Must be called from within a Tokio runtime.
    pub fn ticket<F, Fut>(&self, fetch: F) -> Ticket<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.ticket_if(|| Some(()), |()| fetch())
    }

    /// Like [`SingleFlight::ticket`], but a new fetch starts only if `admit()` says yes
    /// (the application's fair share of the request budget), and is handed what the yes
    /// came with (which collectors to run); joining a running fetch or
    /// serving a recent one needs no admission, since it costs nothing.
    pub fn ticket_if<A, W, F, Fut>(&self, admit: A, fetch: F) -> Ticket<T>
    where
        A: FnOnce() -> Option<W>,
        F: FnOnce(W) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        if let Some(running) = &state.running {
            return Ticket::Wait {
                result: running.clone(),
                started: false,
            };
        }
        if !self.min_interval.is_zero()
            && let Some((at, result)) = &state.last
            && now.saturating_duration_since(*at) < self.min_interval
        {
            return Ticket::Recent(result.clone());
        }
        let Some(admitted) = admit() else {
            return Ticket::Refused(state.last.as_ref().map(|(_, r)| r.clone()));
        };
        let (tx, rx) = watch::channel(None);
        state.running = Some(rx.clone());
        drop(state);
        let mut guard = RunningGuard {
            state: Arc::clone(&self.state),
            sender: tx,
            armed: true,
        };
        let fetching = fetch(admitted);
        let news = self.news;
        tokio::spawn(async move {
            let result = fetching.await;
            {
                let mut state = lock(&guard.state);
                state.running = None;
                if news(&result) {
                    state.last = Some((now, result.clone()));
                }
            }
            guard.armed = false;
            // Nobody waiting is fine: the result is kept in `last` for the next scrape.
            let _ = guard.sender.send(Some(result));
        });
        Ticket::Wait {
            result: rx,
            started: true,
        }
    }

    /// The result of the last completed fetch, if any.
    pub fn last(&self) -> Option<T> {
        lock(&self.state).last.as_ref().map(|(_, r)| r.clone())
    }
}

/// Waits for a fetch's result, at most `budget` if one is given.
pub async fn wait<T: Clone>(
    result: &mut watch::Receiver<Option<T>>,
    budget: Option<Duration>,
) -> Result<T, Missed> {
    let done = result.wait_for(Option::is_some);
    let outcome = match budget {
        Some(budget) => match tokio::time::timeout(budget, done).await {
            Ok(outcome) => outcome,
            Err(_) => return Err(Missed::Deadline),
        },
        None => done.await,
    };
    match outcome {
        Ok(done) => done.as_ref().cloned().ok_or(Missed::Abandoned),
        Err(_) => Err(Missed::Abandoned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Notify;

    async fn result_of(ticket: Ticket<usize>) -> Result<usize, Missed> {
        match ticket {
            Ticket::Recent(r) => Ok(r),
            Ticket::Refused(r) => r.ok_or(Missed::Abandoned),
            Ticket::Wait { mut result, .. } => {
                wait(&mut result, Some(Duration::from_secs(30))).await
            }
        }
    }

    #[tokio::test]
    async fn a_result_that_is_no_news_leaves_the_last_one_standing() {
        // Odd numbers stand for fetches held back before any request: no news.
        let flight =
            SingleFlight::new(Clock::default(), Duration::ZERO).keeping_only_news(|r| r % 2 == 0);
        assert_eq!(result_of(flight.ticket(|| async { 2 })).await, Ok(2));
        // The scrape that waited for the held-back fetch is told what happened to it...
        assert_eq!(result_of(flight.ticket(|| async { 3 })).await, Ok(3));
        // ...but a scrape served the last result gets the last real one.
        assert_eq!(flight.last(), Some(2));
        assert_eq!(
            result_of(flight.ticket_if(|| None::<()>, |()| async { 5 })).await,
            Ok(2)
        );
        assert_eq!(result_of(flight.ticket(|| async { 4 })).await, Ok(4));
        assert_eq!(flight.last(), Some(4));
    }

    #[tokio::test]
    async fn callers_during_a_fetch_share_it_and_later_ones_start_anew() {
        let flight = SingleFlight::new(Clock::default(), Duration::ZERO);
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let start = || {
            let runs = Arc::clone(&runs);
            let gate = Arc::clone(&gate);
            async move {
                gate.notified().await;
                runs.fetch_add(1, Ordering::SeqCst) + 1
            }
        };
        let tickets: Vec<_> = (0..10).map(|_| flight.ticket(start)).collect();
        let started = tickets
            .iter()
            .filter(|t| matches!(t, Ticket::Wait { started: true, .. }))
            .count();
        assert_eq!(started, 1);
        gate.notify_one();
        for t in tickets {
            assert_eq!(result_of(t).await, Ok(1));
        }
        gate.notify_one();
        assert_eq!(result_of(flight.ticket(start)).await, Ok(2));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_cancel_the_fetch() {
        let flight = SingleFlight::new(Clock::default(), Duration::ZERO);
        let gate = Arc::new(Notify::new());
        let g = Arc::clone(&gate);
        let Ticket::Wait { mut result, .. } = flight.ticket(|| async move {
            g.notified().await;
            7usize
        }) else {
            panic!("nothing ran before, so this starts a fetch");
        };
        assert_eq!(
            wait(&mut result, Some(Duration::from_millis(1))).await,
            Err(Missed::Deadline)
        );
        drop(result);
        gate.notify_one();
        let mut later = None;
        for _ in 0..1000 {
            later = flight.last();
            if later.is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(later, Some(7));
    }

    #[tokio::test]
    async fn within_the_minimum_interval_the_last_result_is_served() {
        let clock = Clock::default();
        let flight = SingleFlight::new(clock.clone(), Duration::from_secs(60));
        let runs = Arc::new(AtomicUsize::new(0));
        let start = || {
            let runs = Arc::clone(&runs);
            async move { runs.fetch_add(1, Ordering::SeqCst) + 1 }
        };
        assert_eq!(result_of(flight.ticket(start)).await, Ok(1));
        assert!(matches!(flight.ticket(start), Ticket::Recent(1)));
        clock.advance(Duration::from_secs(61));
        assert_eq!(result_of(flight.ticket(start)).await, Ok(2));
    }

    #[tokio::test]
    async fn a_refused_admission_starts_nothing_and_serves_the_last_result() {
        let flight = SingleFlight::new(Clock::default(), Duration::ZERO);
        assert!(matches!(
            flight.ticket_if(|| None::<()>, |()| async { 1usize }),
            Ticket::Refused(None)
        ));
        assert_eq!(result_of(flight.ticket(|| async { 2usize })).await, Ok(2));
        assert!(matches!(
            flight.ticket_if(|| None::<()>, |()| async { 3usize }),
            Ticket::Refused(Some(2))
        ));
    }

    #[tokio::test]
    async fn a_fetch_that_panics_does_not_block_the_next_one() {
        let flight: SingleFlight<usize> = SingleFlight::new(Clock::default(), Duration::ZERO);
        let first = flight.ticket(|| async { panic!("simulated bug in a fetch") });
        assert_eq!(result_of(first).await, Err(Missed::Abandoned));
        assert_eq!(result_of(flight.ticket(|| async { 3 })).await, Ok(3));
    }
}
