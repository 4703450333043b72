//! The text exposition from pieces: each metric family encoded on its own, so that what has
//! not changed since the last scrape is served as the bytes it was encoded to then, and only
//! the few families that differ on every scrape are encoded again (issue 18: a scrape from
//! state should cost little more than writing bytes).
//!
//! The text format is one family after another, so encoding families one by one and
//! concatenating them in the order [`super::families::encode`] sorts them gives exactly its
//! bytes; [`merge`] does that over several sorted lists of pieces.

use prometheus::proto::MetricFamily;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// One family's name and its encoded text.
#[derive(Debug, Clone, PartialEq)]
struct Piece {
    name: String,
    text: String,
}

/// Encoded families, sorted by name as [`super::families::encode`] sorts them (stably: of two
/// families of one name, the one added first comes first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pieces {
    pieces: Vec<Piece>,
    sorted: bool,
}

impl Pieces {
    pub fn new() -> Self {
        Self::default()
    }

    /// `families`, each encoded by the text encoder.
    pub fn encode(families: Vec<MetricFamily>) -> Self {
        let mut pieces = Self::new();
        pieces.extend(families);
        pieces.finish()
    }

    pub fn extend(&mut self, families: impl IntoIterator<Item = MetricFamily>) {
        for family in families {
            self.push(family);
        }
    }

    pub fn push(&mut self, family: MetricFamily) {
        let mut text = String::new();
        // Every family here is built by this crate with valid names, so encoding cannot
        // fail; if it ever did, the other families are better served than none.
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(std::slice::from_ref(&family), &mut text)
        {
            tracing::error!(error = %e, "encoding metrics failed");
            return;
        }
        self.push_text(family.name(), text);
    }

    /// A gauge family written straight to text, the bytes the text encoder writes for the
    /// same family: for the families that change on every scrape, where building the
    /// family first would cost more than the rest of the answer.
    pub fn push_gauge<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (&'a [(&'a str, &'a str)], f64)>,
    ) {
        self.push_samples(name, help, "gauge", samples);
    }

    /// [`Self::push_gauge`] for a counter: the samples in the order the registry gathers
    /// them, sorted by label values.
    pub fn push_counter<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (&'a [(&'a str, &'a str)], f64)>,
    ) {
        self.push_samples(name, help, "counter", samples);
    }

    fn push_samples<'a>(
        &mut self,
        name: &str,
        help: &str,
        kind: &str,
        samples: impl IntoIterator<Item = (&'a [(&'a str, &'a str)], f64)>,
    ) {
        let mut text = String::with_capacity(help.len() + 3 * name.len() + 48);
        if !help.is_empty() {
            let _ = writeln!(text, "# HELP {name} {}", escape(help, false));
        }
        let _ = writeln!(text, "# TYPE {name} {kind}");
        let mut any = false;
        for (labels, value) in samples {
            any = true;
            text.push_str(name);
            let mut separator = '{';
            for (label, label_value) in labels {
                let _ = write!(text, "{separator}{label}=\"{}\"", escape(label_value, true));
                separator = ',';
            }
            if !labels.is_empty() {
                text.push('}');
            }
            let _ = writeln!(text, " {value}");
        }
        // The text encoder refuses a family without samples.
        if any {
            self.push_text(name, text);
        }
    }

    fn push_text(&mut self, name: &str, text: String) {
        self.pieces.push(Piece {
            name: name.to_owned(),
            text,
        });
        self.sorted = false;
    }

    /// Sorts the pieces by name; [`merge`] takes only finished pieces.
    pub fn finish(mut self) -> Self {
        self.pieces.sort_by(|a, b| a.name.cmp(&b.name));
        self.sorted = true;
        self
    }

    fn len(&self) -> usize {
        self.pieces.iter().map(|p| p.text.len()).sum()
    }
}

/// The exposition of `parts`, each finished: the bytes [`super::families::encode`] writes for
/// the families of all the parts, in order, concatenated.
pub fn merge(parts: &[&Pieces]) -> String {
    debug_assert!(parts.iter().all(|p| p.sorted || p.pieces.len() < 2));
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    let mut next = vec![0usize; parts.len()];
    loop {
        // Of the parts' next pieces, the first by name; on a tie the earlier part's, as a
        // stable sort of the concatenation would have it.
        let mut best: Option<(usize, &Piece)> = None;
        for (i, part) in parts.iter().enumerate() {
            if let Some(piece) = part.pieces.get(next[i])
                && best.is_none_or(|(_, b)| piece.name < b.name)
            {
                best = Some((i, piece));
            }
        }
        let Some((i, piece)) = best else {
            return out;
        };
        out.push_str(&piece.text);
        next[i] += 1;
    }
}

/// The text encoder's escaping: backslash and newline everywhere, the double quote in label
/// values too.
fn escape(value: &str, quote: bool) -> Cow<'_, str> {
    // A scan without an early exit, which the compiler turns into wide compares: the help
    // texts are long and written on every scrape, and almost never need escaping.
    let special = value.bytes().fold(false, |found, b| {
        found | (b == b'\\') | (b == b'\n') | (quote & (b == b'"'))
    });
    if !special {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// What one source (an account) exposes from its state, encoded once per change of it.
///
/// Whatever changes that state marks it: [`StateCache::changing`] around the change (a
/// fetch), and a `key` that the reader passes for what can change without such a mark (the
/// token source's expiry and refresh count). While a change is under way nothing is served
/// from the cache or stored in it, so that a scrape then sees what a full render would.
#[derive(Debug, Default)]
pub struct StateCache<K> {
    /// Moves at the end of every change.
    version: AtomicU64,
    /// Changes under way.
    changing: AtomicUsize,
    cached: Mutex<Option<Cached<K>>>,
}

#[derive(Debug)]
struct Cached<K> {
    version: u64,
    key: K,
    pieces: Arc<Pieces>,
}

/// Marks a change under way until dropped; dropping it, however the change ended (a fetch
/// abandoned at shutdown too), makes the next scrape render again.
#[must_use = "the change is over as soon as this is dropped"]
pub struct Changing<'a> {
    version: &'a AtomicU64,
    changing: &'a AtomicUsize,
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        // The version moves before the change stops counting as under way: a reader that
        // sees no change under way sees the new version.
        self.version.fetch_add(1, Ordering::SeqCst);
        self.changing.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<K: PartialEq> StateCache<K> {
    pub fn new() -> Self {
        Self {
            version: AtomicU64::new(0),
            changing: AtomicUsize::new(0),
            cached: Mutex::new(None),
        }
    }

    /// Marks a change of the state under way until the guard is dropped.
    pub fn changing(&self) -> Changing<'_> {
        self.changing.fetch_add(1, Ordering::SeqCst);
        Changing {
            version: &self.version,
            changing: &self.changing,
        }
    }

    /// The pieces of the state as of now: those encoded last time when nothing changed
    /// since (same version, same `key`, no change under way), else `render()`'s, encoded.
    pub fn get(&self, key: K, render: impl FnOnce() -> Vec<MetricFamily>) -> Arc<Pieces> {
        // The version is read before anything of the state, so that a change ending while
        // this renders leaves a version the stored pieces do not match.
        let version = self.version.load(Ordering::SeqCst);
        let quiet = self.changing.load(Ordering::SeqCst) == 0;
        if quiet
            && let Some(c) = self.lock().as_ref()
            && c.version == version
            && c.key == key
        {
            return Arc::clone(&c.pieces);
        }
        let pieces = Arc::new(Pieces::encode(render()));
        if quiet {
            let mut cached = self.lock();
            // A render that started earlier must not replace a newer one.
            if cached.as_ref().is_none_or(|c| c.version <= version) {
                *cached = Some(Cached {
                    version,
                    key,
                    pieces: Arc::clone(&pieces),
                });
            }
        }
        pieces
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached<K>>> {
        // A panic while this was held left either the old pieces or the new ones: both
        // are whole.
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Families that are expensive to gather and may be a little old (the process' own metrics,
/// read from `/proc`): gathered at most once per `interval`, encoded then.
#[derive(Debug)]
pub struct Sampled {
    interval: std::time::Duration,
    last: Mutex<Option<(std::time::Instant, Arc<Pieces>)>>,
}

impl Sampled {
    pub fn new(interval: std::time::Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
        }
    }

    pub fn get(&self, gather: impl FnOnce() -> Vec<MetricFamily>) -> Arc<Pieces> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, pieces)) = last.as_ref()
            && at.elapsed() < self.interval
        {
            return Arc::clone(pieces);
        }
        // Gathered under the lock: concurrent scrapes wait for one reading of /proc rather
        // than each making their own.
        let pieces = Arc::new(Pieces::encode(gather()));
        *last = Some((std::time::Instant::now(), Arc::clone(&pieces)));
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::families::{GaugeFamilies, encode, single_gauge};
    use prometheus::{IntCounterVec, Opts, Registry};

    fn gauge_via_encoder(name: &str, help: &str, samples: &[(&[(&str, &str)], f64)]) -> String {
        let mut g = GaugeFamilies::new();
        for (labels, value) in samples {
            g.push(name, help, labels, *value);
        }
        encode(g.finish())
    }

    fn gauge_direct(name: &str, help: &str, samples: &[(&[(&str, &str)], f64)]) -> String {
        let mut pieces = Pieces::new();
        pieces.push_gauge(name, help, samples.iter().map(|(l, v)| (*l, *v)));
        merge(&[&pieces.finish()])
    }

    #[test]
    fn a_gauge_written_straight_is_what_the_encoder_writes() {
        let values = [
            0.0,
            -0.0,
            1.0,
            0.1,
            1.0 / 3.0,
            1e21,
            1e-7,
            -123.456,
            1_700_000_000.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
        ];
        let helps = ["plain", "with \\ backslash, \"quotes\" and\na newline", ""];
        let labels: [&[(&str, &str)]; 4] = [
            &[],
            &[("served_from", "recent_fetch")],
            &[("a", "x \"y\" \\ z\n"), ("b", "é ünïcode")],
            &[("state", "")],
        ];
        for help in helps {
            for l in labels {
                for v in values {
                    let samples = [(l, v)];
                    assert_eq!(
                        gauge_direct("withings_x", help, &samples),
                        gauge_via_encoder("withings_x", help, &samples),
                        "help {help:?}, labels {l:?}, value {v}"
                    );
                }
                let samples = [(l, 1.0), (l, 2.5)];
                assert_eq!(
                    gauge_direct("withings_x", help, &samples),
                    gauge_via_encoder("withings_x", help, &samples)
                );
            }
        }
        assert_eq!(gauge_direct("withings_x", "h", &[]), "");
    }

    #[test]
    fn a_counter_written_straight_is_what_the_registry_gathers() {
        let registry = Registry::new();
        let c = IntCounterVec::new(Opts::new("withings_c_total", "a \\ counter"), &["l"]).unwrap();
        for (l, n) in [("b", 3), ("a", 0), ("c\"", 12_345_678_901)] {
            c.with_label_values(&[l]).inc_by(n);
        }
        registry.register(Box::new(c)).unwrap();
        let mut pieces = Pieces::new();
        let labels = [[("l", "a")], [("l", "b")], [("l", "c\"")]];
        pieces.push_counter(
            "withings_c_total",
            "a \\ counter",
            labels
                .iter()
                .zip([0.0, 3.0, 12_345_678_901.0])
                .map(|(l, v)| (&l[..], v)),
        );
        assert_eq!(merge(&[&pieces.finish()]), encode(registry.gather()));
    }

    fn counter(name: &str, labels: &[&str]) -> Vec<MetricFamily> {
        let registry = Registry::new();
        let c = IntCounterVec::new(Opts::new(name, "a counter"), &["l"]).unwrap();
        for l in labels {
            c.with_label_values(&[l]).inc();
        }
        registry.register(Box::new(c)).unwrap();
        registry.gather()
    }

    #[test]
    fn merged_pieces_are_the_encoding_of_all_the_families() {
        let a = vec![
            single_gauge("withings_b", "b", 1.0),
            single_gauge("withings_d", "d", 2.0),
            single_gauge("withings_same", "first", 3.0),
        ];
        let b = counter("withings_a_total", &["x", "y"]);
        let c = vec![
            single_gauge("withings_same", "second", 4.0),
            single_gauge("withings_z", "z", 5.0),
            single_gauge("withings_c", "c", 6.0),
        ];
        let all: Vec<MetricFamily> = a.iter().chain(&b).chain(&c).cloned().collect();
        let merged = merge(&[&Pieces::encode(a), &Pieces::encode(b), &Pieces::encode(c)]);
        assert_eq!(merged, encode(all));
        assert!(merged.find("first").unwrap() < merged.find("second").unwrap());
        assert_eq!(merge(&[]), "");
        assert_eq!(merge(&[&Pieces::new()]), "");
    }

    #[test]
    fn the_cache_serves_the_last_render_until_the_state_changes() {
        let cache = StateCache::<u32>::new();
        let renders = std::cell::Cell::new(0);
        let render = |v: f64| {
            renders.set(renders.get() + 1);
            vec![single_gauge("withings_v", "v", v)]
        };
        let first = cache.get(0, || render(1.0));
        assert_eq!(*cache.get(0, || render(2.0)), *first);
        assert_eq!(renders.get(), 1);
        // A change of the key renders again.
        assert!(merge(&[&cache.get(1, || render(2.0))]).contains("withings_v 2\n"));
        assert_eq!(renders.get(), 2);
        // While a change is under way every scrape renders, and none is kept.
        let change = cache.changing();
        assert!(merge(&[&cache.get(1, || render(3.0))]).contains("withings_v 3\n"));
        assert!(merge(&[&cache.get(1, || render(4.0))]).contains("withings_v 4\n"));
        assert_eq!(renders.get(), 4);
        drop(change);
        // After it, the first scrape renders and the next is served from the cache.
        assert!(merge(&[&cache.get(1, || render(5.0))]).contains("withings_v 5\n"));
        assert!(merge(&[&cache.get(1, || render(6.0))]).contains("withings_v 5\n"));
        assert_eq!(renders.get(), 5);
    }

    #[test]
    fn a_sample_is_kept_for_its_interval() {
        let sampled = Sampled::new(std::time::Duration::from_secs(3600));
        let first = sampled.get(|| vec![single_gauge("withings_p", "p", 1.0)]);
        let again = sampled.get(|| vec![single_gauge("withings_p", "p", 2.0)]);
        assert_eq!(*first, *again);
        let always = Sampled::new(std::time::Duration::ZERO);
        always.get(|| vec![single_gauge("withings_p", "p", 1.0)]);
        let fresh = always.get(|| vec![single_gauge("withings_p", "p", 2.0)]);
        assert!(merge(&[&fresh]).contains("withings_p 2\n"));
    }
}
