//! `basic_auth_users`: the check of an `Authorization` header against bcrypt hashes, its
//! cache of successes and its limits under a flood.

use super::WebConfigError;
use crate::secret::Secret;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Successful verifications remembered at once; see [`BasicAuth`].
pub(super) const AUTH_CACHE_CAPACITY: usize = 64;

/// bcrypt checks that run at once: one, so that a flood of guesses takes one core.
pub const CONCURRENT_CHECKS: usize = 1;
/// Checks waiting or running at once; beyond, a request is answered 429 at once instead of
/// queueing behind the others.
pub const MAX_PENDING_CHECKS: usize = 8;
/// Checks waiting or running at once for one client address (an IPv6 /64): a flood from
/// one address leaves the other slots to everyone else.
pub const MAX_PENDING_PER_ADDRESS: usize = 2;
/// Failed checks allowed per client address within [`FAILURE_WINDOW`]; past it, the address
/// is answered 429 without a check until the window ends.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered at once; bounded so that a flood from many
/// addresses cannot grow the memory.
pub(super) const TRACKED_ADDRESSES: usize = 4096;
/// bcrypt uses the first 72 bytes of a password and ignores the rest.
pub const MAX_PASSWORD_BYTES: usize = 72;
/// Costs above this make a first login take seconds of CPU; warned about at load.
pub const HIGHEST_SENSIBLE_COST: u32 = 12;

/// `WWW-Authenticate` of every 401: the same for every failure, so it tells nothing.
pub const CHALLENGE: &str = "Basic realm=\"withings-exporter\"";

/// The `basic_auth_users` of a configuration, and the check of an `Authorization` header.
///
/// Timing: an unknown user's password is checked against the hash of highest cost in the
/// file, so a failure takes as long whether the user exists or not, and the comparison of the
/// bcrypt output is constant-time (the `bcrypt` crate uses `subtle`). That check is never a
/// success: a password that matches another user's hash under an unknown name is denied like
/// any other, and counted as a failure. Loading the file computes no bcrypt at all.
///
/// Cache: bcrypt at cost 10 costs 50-100 ms of CPU, which a Prometheus scraping every few
/// seconds would pay on every scrape. Like exporter-toolkit we remember verified credentials,
/// but only successes, keyed by HMAC-SHA256 (with a key drawn at start) of user, hash and
/// password, never the password itself. The trade-off: someone able to read this process's
/// memory could test guesses against a cached entry at HMAC speed instead of bcrypt speed;
/// such a reader already sees the Withings token and the health data, so the cache adds
/// little. Failures are not cached, so a flood of wrong guesses cannot evict Prometheus'
/// entry and each guess costs a full bcrypt. A reload builds a new `BasicAuth`, which starts
/// with an empty cache.
///
/// Floods: [`CONCURRENT_CHECKS`] bcrypt checks run at once, and the permit travels into the
/// blocking task, so a client that hangs up does not free it while its check still runs. At
/// most [`MAX_PENDING_CHECKS`] checks wait or run, [`MAX_PENDING_PER_ADDRESS`] of them for one
/// address; beyond, the answer is 429 at once. An address with [`MAX_FAILURES_PER_ADDRESS`]
/// failures within [`FAILURE_WINDOW`] gets 429 without a bcrypt check until the window
/// ends, except for credentials the cache already holds: those cost nothing to check and are
/// let in, so that a guesser behind the same proxy cannot lock Prometheus out. The price: a
/// locked-out address can still try guesses against the cache, at network speed, and one
/// gets in only if it is a password already proved right. There is no per-user limit on
/// purpose: it would let anyone lock Prometheus' own user out.
pub struct BasicAuth {
    pub(super) users: HashMap<String, Secret>,
    /// Checked when the user is unknown (the costliest user's hash); None when there are no
    /// users.
    pub(super) dummy: Option<Secret>,
    cache_key: ring::hmac::Key,
    pub(super) verified: Mutex<HashSet<[u8; 32]>>,
    limiter: Arc<CheckLimiter>,
    /// Users whose cost is above [`HIGHEST_SENSIBLE_COST`], with that cost.
    costly: Vec<(String, u32)>,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&str> = self.users.keys().map(String::as_str).collect();
        users.sort_unstable();
        f.debug_struct("BasicAuth").field("users", &users).finish()
    }
}

/// The answer to an `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Allowed,
    /// 401: no credentials, or wrong ones.
    Denied,
    /// 429: too many failures from this address, or too many checks pending; try again after
    /// this long.
    Throttled {
        retry_after: Duration,
    },
}

/// What the checks have done so far, for tests and benchmarks: the limits are asserted on
/// these counts, not on timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckStats {
    /// bcrypt checks running now.
    pub running: usize,
    /// The most that ever ran at once.
    pub peak_running: usize,
    /// bcrypt checks completed (the client may have hung up before).
    pub completed: u64,
    /// Requests answered 429.
    pub throttled: u64,
}

/// Admission of bcrypt checks: a semaphore for the checks themselves, counts of pending
/// checks, and the failures of each address.
pub(super) struct CheckLimiter {
    permits: Arc<tokio::sync::Semaphore>,
    pub(super) state: Mutex<LimiterState>,
    running: std::sync::atomic::AtomicUsize,
    peak_running: std::sync::atomic::AtomicUsize,
    completed: std::sync::atomic::AtomicU64,
    throttled: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
pub(super) struct LimiterState {
    pub(super) pending: usize,
    pub(super) pending_by_address: HashMap<std::net::IpAddr, usize>,
    /// Per address: when its window started, and its failures in it.
    pub(super) failures: HashMap<std::net::IpAddr, (std::time::Instant, u32)>,
}

/// A place among the pending checks, given back when dropped: when the request gives up
/// before its check starts, or when the blocking check ends.
pub(super) struct PendingSlot {
    limiter: Arc<CheckLimiter>,
    address: std::net::IpAddr,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        if let Ok(mut state) = self.limiter.state.lock() {
            state.pending = state.pending.saturating_sub(1);
            if let Some(n) = state.pending_by_address.get_mut(&self.address) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    state.pending_by_address.remove(&self.address);
                }
            }
        }
    }
}

/// The unit that limits apply to: an IPv4 address, or the /64 of an IPv6 address (one host
/// usually has a whole /64 to pick from).
pub(super) fn client_key(address: std::net::IpAddr) -> std::net::IpAddr {
    match address {
        std::net::IpAddr::V4(v4) => v4.into(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.into(),
            None => std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)).into(),
        },
    }
}

impl CheckLimiter {
    pub(super) fn new() -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CHECKS)),
            state: Mutex::new(LimiterState::default()),
            running: 0.into(),
            peak_running: 0.into(),
            completed: 0.into(),
            throttled: 0.into(),
        }
    }

    fn throttle(&self, retry_after: Duration) -> AuthOutcome {
        self.throttled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        AuthOutcome::Throttled {
            retry_after: retry_after.max(Duration::from_secs(1)),
        }
    }

    /// How long the address must still wait, when it has used up its failures.
    fn locked_out(&self, address: std::net::IpAddr) -> Option<Duration> {
        let state = self.state.lock().ok()?;
        let (start, failures) = state.failures.get(&address)?;
        let left = FAILURE_WINDOW.checked_sub(start.elapsed())?;
        (*failures >= MAX_FAILURES_PER_ADDRESS).then_some(left)
    }

    pub(super) fn record_failure(&self, address: std::net::IpAddr) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = std::time::Instant::now();
        if !state.failures.contains_key(&address) && state.failures.len() >= TRACKED_ADDRESSES {
            state
                .failures
                .retain(|_, (start, _)| now.duration_since(*start) < FAILURE_WINDOW);
            if state.failures.len() >= TRACKED_ADDRESSES {
                // Full of live entries: this address goes untracked; the pending limits
                // still bound what it can cost.
                return;
            }
        }
        let entry = state.failures.entry(address).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    pub(super) fn admit(self: &Arc<Self>, address: std::net::IpAddr) -> Option<PendingSlot> {
        let mut state = self.state.lock().ok()?;
        let mine = state.pending_by_address.get(&address).copied().unwrap_or(0);
        if state.pending >= MAX_PENDING_CHECKS || mine >= MAX_PENDING_PER_ADDRESS {
            return None;
        }
        state.pending += 1;
        *state.pending_by_address.entry(address).or_insert(0) += 1;
        Some(PendingSlot {
            limiter: Arc::clone(self),
            address,
        })
    }

    fn stats(&self) -> CheckStats {
        use std::sync::atomic::Ordering::Relaxed;
        CheckStats {
            running: self.running.load(Relaxed),
            peak_running: self.peak_running.load(Relaxed),
            completed: self.completed.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
        }
    }
}

impl BasicAuth {
    /// No users: every request is let through.
    pub fn none() -> Self {
        Self {
            users: HashMap::new(),
            dummy: None,
            cache_key: cache_key(),
            verified: Mutex::new(HashSet::new()),
            limiter: Arc::new(CheckLimiter::new()),
            costly: Vec::new(),
        }
    }

    pub(super) fn new(path: &Path, entries: Vec<(String, String)>) -> Result<Self, WebConfigError> {
        let mut users = HashMap::with_capacity(entries.len());
        let mut costly = Vec::new();
        for (user, hash) in entries {
            let err = |message: String| WebConfigError {
                file: path.to_owned(),
                key: Some(format!("basic_auth_users.{user}")),
                message,
            };
            if user.is_empty() || user.contains(':') {
                return Err(err(
                    "a user name must be non-empty and without ':' (HTTP basic auth splits on it)"
                        .into(),
                ));
            }
            // The parser's own message is enough; the hash is not quoted back.
            let parts: bcrypt::HashParts = hash.parse().map_err(|e: bcrypt::BcryptError| {
                err(format!(
                    "not a bcrypt hash ({e}); generate one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                ))
            })?;
            let cost = parts.get_cost();
            if !(4..=31).contains(&cost) {
                return Err(err(format!(
                    "bcrypt cost {cost} is outside 4-31; generate the hash again"
                )));
            }
            if cost > HIGHEST_SENSIBLE_COST {
                costly.push((user.clone(), cost));
            }
            users.insert(user, Secret::new(hash));
        }
        costly.sort();
        // No bcrypt at load: hashing a dummy at the highest cost made a file with one
        // cost-19 hash take a minute to load and a cost-31 one days (fuzzing found it).
        // An unknown user is checked against the costliest real hash instead (ties broken
        // by name, so the choice does not depend on the map's order).
        let dummy = users
            .iter()
            .filter_map(|(name, hash)| {
                let cost = hash.expose().parse::<bcrypt::HashParts>().ok()?.get_cost();
                Some(((cost, std::cmp::Reverse(name)), hash))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, hash)| hash.clone());
        Ok(Self {
            users,
            dummy,
            cache_key: cache_key(),
            verified: Mutex::new(HashSet::new()),
            limiter: Arc::new(CheckLimiter::new()),
            costly,
        })
    }

    /// True when no user is configured: no request needs credentials.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// What the checks of this configuration have done so far.
    pub fn check_stats(&self) -> CheckStats {
        self.limiter.stats()
    }

    pub(super) fn cost_warning(&self) -> Option<String> {
        let highest = self.costly.iter().map(|(_, cost)| *cost).max()?;
        let users: Vec<String> = self
            .costly
            .iter()
            .map(|(user, cost)| format!("{} (cost {cost})", crate::text::one_line(user)))
            .collect();
        Some(format!(
            "bcrypt cost above {HIGHEST_SENSIBLE_COST} for {}: each first login (and each unknown user) costs about {} times a cost-10 check, seconds of CPU; hash again with `htpasswd -nBC 10`",
            users.join(", "),
            1u64 << (highest - 10).min(30)
        ))
    }

    /// Whether an `Authorization` header value, sent from `peer`, names a configured user
    /// with the right password. Always allowed without users.
    pub async fn check(&self, authorization: Option<&[u8]>, peer: std::net::IpAddr) -> AuthOutcome {
        let Some(dummy) = &self.dummy else {
            return AuthOutcome::Allowed;
        };
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return AuthOutcome::Denied;
        };
        let address = client_key(peer);
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|u| self.users.get(u));
        let hash = known.unwrap_or(dummy).clone();
        let key = self.cache_entry(&user, &hash, &password);
        // Credentials already verified cost nothing to check: let them in even from a
        // locked-out address, so that Prometheus behind a proxy shared with a guesser keeps
        // scraping. (Only a password already proved right is ever in the cache.)
        if known.is_some() && self.is_cached(&key) {
            return AuthOutcome::Allowed;
        }
        if let Some(left) = self.limiter.locked_out(address) {
            return self.limiter.throttle(left);
        }
        // bcrypt would compare only the first 72 bytes: a longer password, with any suffix,
        // would pass. It can never be what was hashed, so it is refused unchecked.
        if password.len() > MAX_PASSWORD_BYTES {
            self.limiter.record_failure(address);
            return AuthOutcome::Denied;
        }
        let Some(slot) = self.limiter.admit(address) else {
            return self.limiter.throttle(Duration::from_secs(1));
        };
        let Ok(permit) = Arc::clone(&self.limiter.permits).acquire_owned().await else {
            return AuthOutcome::Denied;
        };
        let limiter = Arc::clone(&self.limiter);
        // bcrypt is CPU for tens of milliseconds: off the async workers. The permit and the
        // slot live as long as the check, not as long as the request, which the client can
        // end at any time.
        let matched = tokio::task::spawn_blocking(move || {
            use std::sync::atomic::Ordering::Relaxed;
            let running = limiter.running.fetch_add(1, Relaxed) + 1;
            limiter.peak_running.fetch_max(running, Relaxed);
            let matched = bcrypt::verify(&password, hash.expose()).unwrap_or(false);
            limiter.running.fetch_sub(1, Relaxed);
            limiter.completed.fetch_add(1, Relaxed);
            if !matched {
                limiter.record_failure(address);
            }
            drop((permit, slot));
            matched
        })
        .await
        .unwrap_or(false);
        if matched && known.is_some() {
            self.remember(key);
            AuthOutcome::Allowed
        } else {
            if matched {
                // Another user's password under an unknown name: still no user.
                self.limiter.record_failure(address);
            }
            AuthOutcome::Denied
        }
    }

    pub(super) fn cache_entry(&self, user: &[u8], hash: &Secret, password: &[u8]) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.cache_key);
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        for part in [user, hash.expose().as_bytes(), password] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn is_cached(&self, key: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .map(|cache| cache.contains(key))
            .unwrap_or(false)
    }

    pub(super) fn remember(&self, key: [u8; 32]) {
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= AUTH_CACHE_CAPACITY
                && let Some(old) = cache.iter().next().copied()
            {
                cache.remove(&old);
            }
            cache.insert(key);
        }
    }
}

fn cache_key() -> ring::hmac::Key {
    // Key::generate fails only without a system RNG, in which case TLS would not work either;
    // a fixed fallback still keeps passwords out of the cache.
    ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
        .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"withings-exporter"))
}

/// `Basic base64(user:password)`, the scheme name in any case.
pub(super) fn parse_basic(header: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    use base64::Engine;
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}
