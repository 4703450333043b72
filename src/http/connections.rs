//! The server's connections: a cap on how many are open, which one to close when a new client
//! needs room, and accept errors logged once per episode.
//!
//! Idle connections must not starve scrapes: a client that opens connections and sends
//! nothing would otherwise hold the cap (or every file descriptor) until hyper's header
//! timeout. So when the cap is reached, or accept runs out of descriptors, the connection
//! idle the longest is closed. A connection with a request in flight is never closed that way:
//! when all are busy, new clients wait in the kernel's backlog.

use bytes::Bytes;
use http_body_util::Full;
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The open connections and the cap on them.
pub struct Connections {
    permits: Arc<Semaphore>,
    table: Mutex<HashMap<u64, Arc<Tracker>>>,
    next_id: AtomicU64,
    epoch: Instant,
    open: AtomicUsize,
    peak_open: AtomicUsize,
    closed_idle: AtomicU64,
}

/// What the connections have done so far; tests assert on these counts, not on timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionStats {
    pub max: usize,
    pub open: usize,
    pub peak_open: usize,
    /// Idle connections closed to make room for new ones.
    pub closed_idle: u64,
}

/// One connection's state, shared by its task and the table.
pub struct Tracker {
    requests_in_flight: AtomicUsize,
    /// Milliseconds since [`Connections::epoch`] at the last request's end (or the accept).
    last_active_ms: AtomicU64,
    closing: AtomicBool,
    close: Notify,
    epoch: Instant,
}

impl Tracker {
    /// Marks a request in flight until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> BusyGuard {
        self.requests_in_flight.fetch_add(1, Relaxed);
        BusyGuard(Arc::clone(self))
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Relaxed);
    }
}

/// A request in flight on a connection.
pub struct BusyGuard(Arc<Tracker>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.requests_in_flight.fetch_sub(1, Relaxed);
    }
}

/// A place under the cap, held by the connection's task; the connection leaves the table
/// when it is dropped.
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    id: u64,
    tracker: Arc<Tracker>,
    _permit: OwnedSemaphorePermit,
}

impl ConnectionSlot {
    pub fn tracker(&self) -> Arc<Tracker> {
        Arc::clone(&self.tracker)
    }

    /// Completes when the server wants this connection closed to make room.
    pub fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        let tracker = Arc::clone(&self.tracker);
        async move { tracker.close.notified().await }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut table) = self.connections.table.lock() {
            table.remove(&self.id);
        }
        self.connections.open.fetch_sub(1, Relaxed);
    }
}

impl Connections {
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.max(1))),
            table: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
            peak_open: AtomicUsize::new(0),
            closed_idle: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            max: self.permits.available_permits() + self.open.load(Relaxed),
            open: self.open.load(Relaxed),
            peak_open: self.peak_open.load(Relaxed),
            closed_idle: self.closed_idle.load(Relaxed),
        }
    }

    /// A place for a new connection, when one is free.
    pub fn try_open(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        Some(self.register(permit))
    }

    /// A place for a new connection, once one is free.
    pub async fn open(self: &Arc<Self>) -> ConnectionSlot {
        match Arc::clone(&self.permits).acquire_owned().await {
            Ok(permit) => self.register(permit),
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }

    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> ConnectionSlot {
        let id = self.next_id.fetch_add(1, Relaxed);
        let tracker = Arc::new(Tracker {
            requests_in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            close: Notify::new(),
            epoch: self.epoch,
        });
        tracker.touch();
        if let Ok(mut table) = self.table.lock() {
            table.insert(id, Arc::clone(&tracker));
        }
        let open = self.open.fetch_add(1, Relaxed) + 1;
        self.peak_open.fetch_max(open, Relaxed);
        ConnectionSlot {
            connections: Arc::clone(self),
            id,
            tracker,
            _permit: permit,
        }
    }

    /// Asks the connection idle the longest (no request in flight) to close; false when
    /// every connection is busy.
    pub fn close_idlest(&self) -> bool {
        let Ok(table) = self.table.lock() else {
            return false;
        };
        let idlest = table
            .values()
            .filter(|t| t.requests_in_flight.load(Relaxed) == 0 && !t.closing.load(Relaxed))
            .min_by_key(|t| t.last_active_ms.load(Relaxed));
        let Some(tracker) = idlest else {
            return false;
        };
        tracker.closing.store(true, Relaxed);
        // notify_one keeps the wake-up if the task is not waiting yet.
        tracker.close.notify_one();
        self.closed_idle.fetch_add(1, Relaxed);
        true
    }
}

/// A response body that keeps its connection marked busy until hyper has sent it.
pub struct TrackedBody {
    inner: Full<Bytes>,
    _busy: BusyGuard,
}

impl TrackedBody {
    pub fn new(inner: Full<Bytes>, busy: BusyGuard) -> Self {
        Self { inner, _busy: busy }
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Accept errors, logged once when they start and once when accepting works again: out of
/// file descriptors, accept fails on every try, and a line per try would flood the log.
#[derive(Default)]
pub struct AcceptErrors {
    /// The first and the last error of the episode, and how many there were.
    episode: Option<(Instant, Instant, u64)>,
}

/// Accepting again counts as recovered only this long after the last error: out of
/// descriptors, accepts and errors alternate while idle connections are being closed.
const RECOVERED_AFTER: Duration = Duration::from_secs(1);

impl AcceptErrors {
    pub fn failed(&mut self, error: &std::io::Error) {
        let now = Instant::now();
        match &mut self.episode {
            Some((_, last, count)) => {
                *last = now;
                *count += 1;
            }
            None => {
                let advice = if Self::is_out_of_descriptors(error) {
                    "; closing idle connections to make room (raise LimitNOFILE / ulimit -n, or lower WITHINGS_WEB_MAX_CONNECTIONS)"
                } else {
                    ""
                };
                tracing::warn!(%error, "accepting connections fails{advice}; logged again only when it recovers");
                self.episode = Some((now, now, 1));
            }
        }
    }

    pub fn accepted(&mut self) {
        if let Some((first, last, count)) = self.episode
            && last.elapsed() >= RECOVERED_AFTER
        {
            tracing::info!(
                failures = count,
                "accepting connections again after {:.1} s of errors",
                last.duration_since(first).as_secs_f64()
            );
            self.episode = None;
        }
    }

    /// EMFILE or ENFILE (the same numbers on Linux, macOS and the BSDs).
    pub fn is_out_of_descriptors(error: &std::io::Error) -> bool {
        cfg!(unix) && matches!(error.raw_os_error(), Some(23 | 24))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idlest_free_connection_is_closed_first_and_busy_ones_never() {
        let connections = Arc::new(Connections::new(3));
        let a = connections.try_open().unwrap();
        let b = connections.try_open().unwrap();
        let c = connections.try_open().unwrap();
        assert!(connections.try_open().is_none());
        a.tracker.last_active_ms.store(5, Relaxed);
        b.tracker.last_active_ms.store(1, Relaxed);
        c.tracker.last_active_ms.store(0, Relaxed);
        let _busy = c.tracker.busy();
        c.tracker.last_active_ms.store(0, Relaxed);
        assert!(connections.close_idlest());
        assert!(b.tracker.closing.load(Relaxed));
        assert!(connections.close_idlest());
        assert!(a.tracker.closing.load(Relaxed));
        // Only the busy one is left.
        assert!(!connections.close_idlest());
        assert!(!c.tracker.closing.load(Relaxed));
        drop(b);
        let stats = connections.stats();
        assert_eq!((stats.open, stats.peak_open, stats.max), (2, 3, 3));
        assert_eq!(stats.closed_idle, 2);
        assert!(connections.try_open().is_some());
    }

    #[test]
    fn out_of_descriptors_is_told_apart() {
        assert!(AcceptErrors::is_out_of_descriptors(
            &std::io::Error::from_raw_os_error(24)
        ));
        assert!(!AcceptErrors::is_out_of_descriptors(
            &std::io::Error::from_raw_os_error(103)
        ));
    }
}
