//! Collectors: one per kind of Withings data, each one file (or folder) registered in
//! [`ALL`], the way node_exporter registers its collectors. The operator turns them on with
//! `WITHINGS_COLLECTORS`: `measures` (getmeas, on by default), `activity`, `sleep`,
//! `devices`, `workouts`, `intraday` (a watch's samples through the day), `sleep_detail` (the night
//! minute by minute), `heart` (ECGs) and `goals`.
//!
//! A collector says through [`Collector`] its name, the OAuth scope it needs, the
//! notification `appli` codes that concern it and its API action, and makes a per-account
//! [`State`] that knows how to ask Withings (endpoint and form, from its sync cursor), read
//! the answer, merge it and show it; a collector with a history says how to read and write
//! it for the backfill ([`History`]). The live fetch, the backfill, the subscriptions and
//! `auth`'s scopes iterate over [`ALL`]; nothing else names a collector. Every request
//! passes the Withings client ([`crate::withings`]), its budget and its 601 pause, and the
//! one pager and retry there.
//!
//! Each enabled collector costs one request per account per fetch (more only while a
//! first sync pages through history), but `goals`, asked at most once an hour.

pub mod activity;
pub mod devices;
pub mod goals;
pub mod heart;
pub mod intraday;
pub mod measures;
pub mod sleep;
pub mod sleep_detail;
pub mod workouts;

use crate::clock::Clock;
pub(crate) use crate::lock::lock;
use crate::render::families::GaugeFamilies;
use crate::secret::Secret;
pub use crate::withings::paging::Paged;
use crate::withings::paging::{BoxFuture, all_pages};
use crate::withings::{ApiError, Request, RequestError, TokenSupply, WithingsClient, authorized};
use prometheus::IntCounterVec;
use prometheus::proto::MetricFamily;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

pub use crate::withings::paging::{MAX_PAGES, SyncError};

/// How far before the latest `modified` (or `updatetime`) seen a fetch starts again, so
/// that a row written while the previous answer was being built is not missed.
pub const SYNC_OVERLAP_SECONDS: i64 = 300;

/// What a first sync of activity or sleep asks for: rows modified in the last 30 days. The
/// latest day and the latest night are all these collectors show, and a whole history
/// would be many pages.
pub const INITIAL_LOOKBACK_SECONDS: i64 = 30 * 86_400;

/// Every collector, in the order of the fetch and of the `collector` label. Adding a kind
/// of data is one file and one line here (see CONTRIBUTING.md).
pub static ALL: &[&dyn Collector] = &[
    &measures::Measures,
    &activity::Activity,
    &sleep::Sleep,
    &devices::Devices,
    &workouts::Workouts,
    &intraday::Intraday,
    &sleep_detail::SleepDetail,
    &heart::Heart,
    &goals::Goals,
];

/// One kind of data from Withings.
pub trait Collector: Send + Sync + 'static {
    /// The name in `WITHINGS_COLLECTORS` and in the `collector` label.
    fn name(&self) -> &'static str;

    /// The OAuth scope a token needs for this collector's endpoint.
    fn scope(&self) -> &'static str;

    /// The notification `appli` codes that announce new data for this collector
    /// (`withings-api.md`, "Notifications").
    fn applis(&self) -> &'static [i64];

    /// The API `action`, as in the `action` label of `withings_api_requests_total`.
    fn action(&self) -> &'static str;

    /// True for the collector whose failure is the fetch's (`withings_up`), on by default:
    /// it runs first, the others only once it worked (after a refused token they would each
    /// fail the same way), and a missing scope fails it like any other error.
    fn leads(&self) -> bool {
        false
    }

    /// The state of one account, empty.
    fn state(&self, settings: &Settings) -> Box<dyn State>;

    /// How its history is read for the backfill; `None` for a current state (devices).
    fn history(&self) -> Option<&dyn History> {
        None
    }
}

impl fmt::Debug for dyn Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The state of one collector for one account, behind its own locks: a sync never holds one
/// across a request, and a render never waits for a sync.
pub trait State: Send + Sync {
    /// Brings the state up to date: every page of one sync, merged by the collector's rules.
    fn sync<'a>(&'a self, fetch: &'a Fetch<'a>) -> BoxFuture<'a, Result<Synced, RequestError>>;

    /// The families served live.
    fn families(&self) -> Vec<MetricFamily>;
}

/// What the collectors read from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `WITHINGS_MEASTYPES` as the `meastypes` parameter of getmeas.
    pub meastypes: String,
    /// `WITHINGS_INCLUDE_AMBIGUOUS`.
    pub include_ambiguous: bool,
}

/// Where samples that Withings will not revise go the moment a fetch reads them (a watch's
/// intraday samples, a night's minutes): the running exporter's remote writer, when one is
/// configured. Best effort: what it cannot write, the settled history written later
/// carries anyway.
pub trait Emit: Send + Sync {
    /// One sample of family `(name, help)` of `account`, with the collector's labels, at
    /// unix time `at`.
    fn sample(
        &self,
        account: &str,
        family: (&'static str, &'static str),
        labels: &[(&'static str, &str)],
        at: i64,
        value: f64,
    );
}

/// What a sync may use: one account's tokens, through the application's client.
pub struct Fetch<'a> {
    /// The account's name, for log lines.
    pub account: &'a str,
    pub client: &'a WithingsClient,
    pub tokens: &'a dyn TokenSupply,
    /// The account's clock; tests pin it.
    pub clock: &'a Clock,
    /// `withings_groups_skipped_total{reason}` of the account.
    pub skipped: &'a IntCounterVec,
    /// Where final samples go as they are read, if anywhere.
    pub emit: Option<&'a dyn Emit>,
}

impl Fetch<'_> {
    /// Unix seconds by the account's clock.
    pub fn now(&self) -> i64 {
        self.clock.unix_seconds()
    }

    /// One request with the account's token, asked again once with a fresh token if
    /// Withings says it expired.
    pub async fn call<T>(
        &self,
        request: &Request,
        parse: fn(&[u8]) -> Result<T, ApiError>,
    ) -> Result<T, RequestError> {
        authorized(self.tokens, |token: Secret| async move {
            self.client.call(&token, request, parse).await
        })
        .await
    }

    /// Hands a sample Withings will not revise to the remote writer, if there is one.
    pub fn emit(
        &self,
        family: (&'static str, &'static str),
        labels: &[(&'static str, &str)],
        at: i64,
        value: f64,
    ) {
        if let Some(emit) = self.emit {
            emit.sample(self.account, family, labels, at, value);
        }
    }

    /// Counts `n` rows or measures not used, for `reason`.
    pub fn skip(&self, reason: &str, n: usize) {
        if n > 0 {
            self.skipped.with_label_values(&[reason]).inc_by(n as u64);
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Synced {
    /// Rows (measure groups, days, nights, devices) read.
    pub groups: usize,
    /// Latest values that changed.
    pub updated: usize,
}

/// One dated window of a history: its unix seconds (inclusive) and, for the collectors
/// that select by day, its days (YYYY-MM-DD, inclusive).
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    pub span: (i64, i64),
    pub days: Option<(&'a str, &'a str)>,
}

/// How a collector's history is read: the same series as live, one sample per row.
pub trait History: Sync {
    /// Selects rows by day (`startdateymd`/`enddateymd`) rather than by unix seconds: such
    /// a collector has no window before the first Withings devices.
    fn by_days(&self) -> bool;

    /// What its rows are called on the backfill's progress line and summary, plural
    /// ("groups", "nights").
    fn rows(&self) -> &'static str;

    /// The longest span of unix seconds one request may ask for (intraday data: a day), for
    /// a history that does not select by day; `None`: any.
    fn max_span(&self) -> Option<i64> {
        None
    }

    /// How far back a backfill without `--since` reads this history, in seconds; `None`:
    /// all of it. A day a request makes years of intraday samples thousands of requests, so
    /// that history asks for `--since` to go further back.
    fn reach(&self) -> Option<i64> {
        None
    }

    /// The request of one page of `window`.
    fn request(&self, settings: &Settings, window: Window<'_>, offset: Option<i64>) -> Request;

    /// Reads one answer.
    fn parse(&self, body: &[u8]) -> Result<Box<dyn HistoryPage>, ApiError>;
}

/// One page of a history, read.
pub trait HistoryPage: Paged + Send {
    /// Writes its samples to `out`, judged as the live exporter judges them at `now`;
    /// returns how many rows it held.
    fn write(&self, settings: &Settings, now: i64, out: &mut dyn Sink) -> std::io::Result<usize>;

    /// Rows of the page that were malformed and skipped (not among those `write` counts).
    fn malformed_rows(&self) -> usize {
        0
    }
}

/// Which version of a sample this is, for the backfill to keep the one the live exporter
/// would show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// A sample of a measure group's version `modified`: older versions of the group are
    /// left out, wherever in the paging they came.
    Group { grpid: i64, modified: i64 },
    /// A row with no versions: of two samples of a series at one second, the greater
    /// `modified` is kept.
    Row { modified: Option<i64> },
}

/// Where a history's samples go.
pub trait Sink {
    /// The account has version `modified` of group `grpid`, whether or not it gives any
    /// sample (an inconclusive correction still retires the old values).
    fn saw_version(&mut self, grpid: i64, modified: i64);

    /// One sample of family `(name, help)` with the collector's labels, at `at`.
    fn sample(
        &mut self,
        family: (&'static str, &'static str),
        labels: &[(&'static str, &str)],
        at: i64,
        version: Version,
        value: f64,
    ) -> std::io::Result<()>;
}

fn position(collector: &dyn Collector) -> usize {
    ALL.iter()
        .position(|c| c.name() == collector.name())
        .unwrap_or(usize::MAX)
}

/// The log line for a token that lacks `collector`'s scope.
pub fn missing_scope_hint(collector: &dyn Collector, account: &str) -> String {
    format!(
        "the token of account {account} lacks the {} scope the {} collector needs; run `auth --account {account}` again to grant it",
        collector.scope(),
        collector.name()
    )
}

fn valid_names() -> String {
    ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectorsError {
    #[error("WITHINGS_COLLECTORS: unknown collector `{name}`; valid ones are {valid}")]
    Unknown { name: String, valid: String },
    #[error("WITHINGS_COLLECTORS is empty; name at least one of {0}")]
    Empty(String),
}

/// The collector named `text` (any case).
pub fn named(text: &str) -> Result<&'static dyn Collector, CollectorsError> {
    let name = text.trim();
    ALL.iter()
        .copied()
        .find(|c| c.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| CollectorsError::Unknown {
            // A name from the environment goes into a log line: one line, bounded.
            name: crate::text::one_line(&name.chars().take(64).collect::<String>()).into_owned(),
            valid: valid_names(),
        })
}

/// The enabled collectors, each once, in [`ALL`] order.
#[derive(Clone)]
pub struct Collectors(Vec<&'static dyn Collector>);

impl fmt::Debug for Collectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl PartialEq for Collectors {
    fn eq(&self, other: &Self) -> bool {
        self.names().eq(other.names())
    }
}

impl Eq for Collectors {}

impl Default for Collectors {
    /// The leading collector only: `measures`.
    fn default() -> Self {
        Self(ALL.iter().copied().filter(|c| c.leads()).collect())
    }
}

impl Collectors {
    /// Parses `WITHINGS_COLLECTORS`: comma-separated names, any case, repeats ignored.
    pub fn parse(text: &str) -> Result<Self, CollectorsError> {
        let mut enabled: Vec<&'static dyn Collector> = Vec::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let collector = named(part)?;
            if !enabled.iter().any(|c| c.name() == collector.name()) {
                enabled.push(collector);
            }
        }
        if enabled.is_empty() {
            return Err(CollectorsError::Empty(valid_names()));
        }
        enabled.sort_by_key(|c| position(*c));
        Ok(Self(enabled))
    }

    /// `WITHINGS_COLLECTORS` (read by `config`) checked against [`Collector::ALL`]; the
    /// default when unset.
    pub fn from_config(
        config: &crate::config::CollectorsConfig,
    ) -> Result<Self, crate::config::ConfigError> {
        let Some(names) = &config.names else {
            return Ok(Self::default());
        };
        Self::parse(&names.join(",")).map_err(|e| crate::config::ConfigError {
            variable: "WITHINGS_COLLECTORS",
            message: e
                .to_string()
                .trim_start_matches("WITHINGS_COLLECTORS: ")
                .to_owned(),
        })
    }

    /// Every collector.
    pub fn all() -> Self {
        Self(ALL.to_vec())
    }

    /// Whether the collector named `name` is on.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|c| c.name() == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &'static dyn Collector> + '_ {
        self.0.iter().copied()
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.iter().map(|c| c.name())
    }

    /// The scopes `auth` asks for, comma-separated as Withings wants them, each once.
    pub fn scopes(&self) -> String {
        let mut scopes: Vec<&str> = Vec::new();
        for c in self.iter() {
            if !scopes.contains(&c.scope()) {
                scopes.push(c.scope());
            }
        }
        scopes.join(",")
    }

    /// The notification `appli` codes of the enabled collectors, each once.
    pub fn applis(&self) -> Vec<i64> {
        let mut out: Vec<i64> = Vec::new();
        // Workouts and activity share 16: one subscription serves both.
        for appli in self.iter().flat_map(|c| c.applis().iter().copied()) {
            if !out.contains(&appli) {
                out.push(appli);
            }
        }
        out
    }
}

/// What `WITHINGS_COLLECTORS` and `WITHINGS_MEASTYPES` ask for, checked against the tables
/// of this version (which `config`, below them, cannot see), with the collectors' settings.
/// Called wherever a configuration is read, so that a name or code that does not exist stops
/// the start.
pub fn check(
    config: &crate::config::CollectorsConfig,
) -> Result<(Collectors, Settings), crate::config::ConfigError> {
    let meastypes = measures::table::checked_meastypes(config.meastypes.as_deref())?;
    let settings = Settings {
        meastypes: meastypes
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        include_ambiguous: config.include_ambiguous,
    };
    Ok((Collectors::from_config(config)?, settings))
}

/// The parameters of one page of an incremental `getactivity` or `getsummary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncQuery {
    /// Rows created or modified after this unix time.
    pub lastupdate: i64,
    /// The `offset` of the previous page when it said `more`.
    pub offset: Option<i64>,
}

/// Which rows one page of `getactivity` or `getsummary` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowQuery<'a> {
    /// The collectors' incremental sync: rows created or modified since `lastupdate`.
    Since(SyncQuery),
    /// The history backfill: the rows dated from `start` to `end` (YYYY-MM-DD, inclusive),
    /// from `offset` on; `lastupdate` cannot select a range of days.
    Days {
        start: &'a str,
        end: &'a str,
        offset: Option<i64>,
    },
}

impl From<SyncQuery> for RowQuery<'_> {
    fn from(query: SyncQuery) -> Self {
        Self::Since(query)
    }
}

impl From<&SyncQuery> for RowQuery<'_> {
    fn from(query: &SyncQuery) -> Self {
        Self::Since(*query)
    }
}

/// The samples of one row as the live families show them: `put(name, help, labels, value)`
/// once per sample.
pub type Put<'a> = dyn FnMut(&'static str, &'static str, &[(&'static str, &str)], f64) + 'a;

/// One row of an activity or sleep history: one period (a day, a night) of one source.
pub trait SourceRow {
    /// Orders the periods of one source; the greatest is the latest.
    type Period: Ord;
    /// `(device_id, device_model)`: a phone tracker has no id, and two of them (Google Fit
    /// and Samsung Health) must stay apart, so the model is part of the source.
    fn source(&self) -> (&str, &str);
    fn period(&self) -> Self::Period;
    fn modified(&self) -> Option<i64>;
    /// When the row stands in history: a day's totals at its last second, a night at its
    /// end (when the live exporter starts showing them), a workout at its start, an ECG at
    /// its recording.
    fn written_at(&self) -> i64;
    /// The row's samples, a value the source does not measure left out.
    fn series(&self, put: &mut Put<'_>);
}

/// A page of rows, and how many rows of it made no sense.
pub trait RowPage: Paged {
    type Row: SourceRow;
    fn into_rows(self) -> (Vec<Self::Row>, usize);
}

/// The state of the activity and sleep collectors: the latest row of each source, and where
/// the sync stands.
#[derive(Debug, Clone)]
pub struct Latest<R> {
    latest: BTreeMap<(String, String), R>,
    cursor: Cursor,
}

impl<R> Default for Latest<R> {
    fn default() -> Self {
        Self {
            latest: BTreeMap::new(),
            cursor: Cursor::default(),
        }
    }
}

impl<R: SourceRow> Latest<R> {
    /// The first page's query of the next fetch.
    pub fn query(&self, now: i64) -> SyncQuery {
        self.cursor.query(now)
    }

    /// Merges one page: each source keeps its latest period; a row for the same period
    /// replaces it (today's activity keeps changing, a night may be sent again) unless it is
    /// older by `modified`. Two sources that report the same period stay two series: a phone
    /// and a watch, or two sleep devices, are never added together.
    pub fn merge<P: RowPage<Row = R>>(&mut self, page: P) -> Merged {
        let more = page.more();
        let (rows, malformed) = page.into_rows();
        let count = rows.len();
        for row in rows {
            self.cursor.saw(row.modified());
            let (id, model) = row.source();
            let key = (id.to_owned(), model.to_owned());
            let replace = match self.latest.get(&key) {
                None => true,
                Some(old) if row.period() != old.period() => row.period() > old.period(),
                Some(old) => !matches!(
                    (row.modified(), old.modified()),
                    (Some(new), Some(old)) if new < old
                ),
            };
            if replace {
                self.latest.insert(key, row);
            }
        }
        if !more {
            self.cursor.commit();
        }
        Merged {
            rows: count,
            malformed,
            complete: !more,
        }
    }

    /// The latest row of each source.
    pub fn rows(&self) -> impl Iterator<Item = &R> {
        self.latest.values()
    }

    pub fn families(&self) -> Vec<MetricFamily> {
        let mut out = GaugeFamilies::new();
        for row in self.latest.values() {
            row.series(&mut |name, help, labels, value| out.push(name, help, labels, value));
        }
        out.finish()
    }
}

/// What merging one page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    /// Rows that were read (whether or not they replaced what the state had).
    pub rows: usize,
    /// Rows that made no sense and were skipped; count them in `withings_groups_skipped_total`.
    pub malformed: usize,
    /// This was the last page: the state's cursor moved, and the next fetch starts from it.
    pub complete: bool,
}

/// Fetches every page of one sync, from `first` on, following `more`/`offset` with the one
/// pager ([`crate::withings::paging`]). `fetch` makes the request (the caller's closure
/// decides the token and counts it).
pub async fn fetch_pages<P, F, Fut, E>(
    first: SyncQuery,
    mut fetch: F,
) -> Result<Vec<P>, SyncError<E>>
where
    P: Paged,
    F: FnMut(SyncQuery) -> Fut,
    Fut: std::future::Future<Output = Result<P, E>>,
{
    all_pages(first.offset, |offset| fetch(SyncQuery { offset, ..first })).await
}

/// The request of one page of a collector that selects rows by `lastupdate` or by day
/// (getactivity, getsummary): `action` at `path`, and `data_fields` when given.
pub fn row_request(
    path: &'static str,
    action: &'static str,
    query: RowQuery<'_>,
    data_fields: Option<&str>,
) -> Request {
    let mut request = Request::new(path, action);
    let offset = match query {
        RowQuery::Since(q) => {
            request = request.field("lastupdate", q.lastupdate);
            q.offset
        }
        RowQuery::Days { start, end, offset } => {
            request = request
                .field("startdateymd", start)
                .field("enddateymd", end);
            offset
        }
    };
    request = request.offset(offset);
    match data_fields {
        Some(fields) => request.field("data_fields", fields),
        None => request,
    }
}

/// The live state of a collector that keeps the latest row of each source (activity,
/// sleep): its rows, and how to ask for and read a page of them.
pub struct LatestRows<P: RowPage> {
    latest: Mutex<Latest<P::Row>>,
    request: fn(RowQuery<'_>) -> Request,
    parse: fn(&[u8]) -> Result<P, ApiError>,
}

impl<P: RowPage> LatestRows<P> {
    pub fn new(
        request: fn(RowQuery<'_>) -> Request,
        parse: fn(&[u8]) -> Result<P, ApiError>,
    ) -> Self {
        Self {
            latest: Mutex::new(Latest::default()),
            request,
            parse,
        }
    }
}

impl<P> State for LatestRows<P>
where
    P: RowPage + Send + 'static,
    P::Row: Send + Sync,
{
    /// Every page of the sync, then merged under the lock at once: a sync that fails half
    /// way leaves the state as it was, to be redone from the same cursor.
    fn sync<'a>(&'a self, fetch: &'a Fetch<'a>) -> BoxFuture<'a, Result<Synced, RequestError>> {
        Box::pin(async move {
            let first = lock(&self.latest).query(fetch.now());
            let pages = fetch_pages(first, |q| async move {
                fetch.call(&(self.request)(q.into()), self.parse).await
            })
            .await?;
            let merged: Vec<Merged> = {
                let mut latest = lock(&self.latest);
                pages.into_iter().map(|p| latest.merge(p)).collect()
            };
            fetch.skip("malformed", merged.iter().map(|m| m.malformed).sum());
            Ok(Synced {
                groups: merged.iter().map(|m| m.rows).sum(),
                updated: 0,
            })
        })
    }

    fn families(&self) -> Vec<MetricFamily> {
        lock(&self.latest).families()
    }
}

/// The rows of a day-selecting history `window` from `offset` on.
pub fn days(window: Window<'_>, offset: Option<i64>) -> RowQuery<'_> {
    let (start, end) = window.days.unwrap_or_default();
    RowQuery::Days { start, end, offset }
}

/// A sample of a high-resolution history: `put(name, help, labels, at, value)`.
pub type PutAt<'a> = dyn FnMut(&'static str, &'static str, &[(&'static str, &str)], i64, f64) + 'a;

/// Writes the samples `series` gives, each at its own time (a minute of a night, an
/// intraday sample), to `out`: rows without versions.
pub fn write_each(out: &mut dyn Sink, series: impl FnOnce(&mut PutAt<'_>)) -> std::io::Result<()> {
    let mut failed = None;
    series(&mut |name, help, labels, at, value| {
        if failed.is_none()
            && let Err(e) = out.sample(
                (name, help),
                labels,
                at,
                Version::Row { modified: None },
                value,
            )
        {
            failed = Some(e);
        }
    });
    failed.map_or(Ok(()), Err)
}

/// Writes the samples `series` gives for one row (a day, a night) to `out`, all at `at`.
/// A history page's rows, each at [`SourceRow::written_at`]; how many.
pub fn write_rows<R: SourceRow>(rows: &[R], out: &mut dyn Sink) -> std::io::Result<usize> {
    for row in rows {
        write_row(out, row.written_at(), row.modified(), |put| row.series(put))?;
    }
    Ok(rows.len())
}

fn write_row(
    out: &mut dyn Sink,
    at: i64,
    modified: Option<i64>,
    series: impl FnOnce(&mut Put<'_>),
) -> std::io::Result<()> {
    let mut failed = None;
    series(&mut |name, help, labels, value| {
        if failed.is_none()
            && let Err(e) = out.sample((name, help), labels, at, Version::Row { modified }, value)
        {
            failed = Some(e);
        }
    });
    failed.map_or(Ok(()), Err)
}

/// Where an incremental sync stands, shared by activity and sleep: the `modified` of the
/// newest row merged, moved into the cursor only when a sync's last page arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    committed: Option<i64>,
    pending: Option<i64>,
}

impl Cursor {
    /// The first page's query of the next sync.
    pub fn query(&self, now: i64) -> SyncQuery {
        let lastupdate = match self.committed {
            Some(t) => (t - SYNC_OVERLAP_SECONDS).max(0),
            None => (now - INITIAL_LOOKBACK_SECONDS).max(0),
        };
        SyncQuery {
            lastupdate,
            offset: None,
        }
    }

    pub fn saw(&mut self, modified: Option<i64>) {
        self.pending = self.pending.max(modified);
    }

    /// The last page arrived. A row seen in an earlier, failed sync was seen again by this
    /// one (it started from the old cursor), so taking the maximum loses nothing.
    pub fn commit(&mut self) {
        self.committed = self.committed.max(self.pending);
    }

    pub fn committed(&self) -> Option<i64> {
        self.committed
    }
}

/// The body of a paged answer whose rows are `series` (getsummary, getworkouts, the heart
/// list): the rows read one by one, so that a malformed one is skipped, not fatal.
#[derive(serde::Deserialize)]
pub(crate) struct SeriesBody<'a> {
    #[serde(borrow, default)]
    pub series: Vec<&'a serde_json::value::RawValue>,
    #[serde(default, deserialize_with = "crate::withings::lenient::flag")]
    pub more: bool,
    #[serde(default, deserialize_with = "crate::withings::lenient::opt_int")]
    pub offset: Option<i64>,
}

/// Each row of an answer made into a `Row` by `make` (`None`, or a row that is not a
/// `Raw`: it made no sense); the rows, and how many made no sense.
pub(crate) fn rows_of<'a, Raw: serde::Deserialize<'a>, Row>(
    action: &'static str,
    rows: Vec<&'a serde_json::value::RawValue>,
    what: &str,
    make: impl Fn(Raw) -> Option<Row>,
) -> (Vec<Row>, usize) {
    let mut out = Vec::with_capacity(rows.len());
    let mut malformed = 0;
    for row in rows {
        match crate::withings::row_as::<Raw>(action, row, what).and_then(&make) {
            Some(row) => out.push(row),
            None => malformed += 1,
        }
    }
    (out, malformed)
}

/// What of a window read again the remote writer was already handed: each device's sample
/// times, so that a fetch re-reading the window for late syncs emits only the samples the
/// last reads had not (a late sync's older ones included), none twice. By device and time,
/// not by series: a sample's fields arrive together, and a night of minutes stays a few
/// hundred entries an account.
#[derive(Debug, Default)]
pub(crate) struct Emitted(std::collections::BTreeSet<(i64, u64)>);

impl Emitted {
    /// The device of a sample's labels.
    fn device(labels: &[(&str, &str)]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        for (name, value) in labels {
            if matches!(*name, "device_id" | "device_model") {
                (name, value).hash(&mut hasher);
            }
        }
        hasher.finish()
    }

    /// Hands to `fetch`'s remote writer the samples `series` lists that no earlier read of
    /// the window did, and forgets the times before `from`, which no later read asks again.
    pub(crate) fn emit_new(
        &mut self,
        fetch: &Fetch<'_>,
        from: i64,
        series: impl FnOnce(
            &mut dyn FnMut(&'static str, &'static str, &[(&'static str, &str)], i64, f64),
        ),
    ) {
        if fetch.emit.is_none() {
            return;
        }
        self.0 = self.0.split_off(&(from, 0));
        let mut fresh = Vec::new();
        series(&mut |name, help, labels, at, value| {
            let key = (at, Self::device(labels));
            if !self.0.contains(&key) {
                fetch.emit((name, help), labels, at, value);
                fresh.push(key);
            }
        });
        self.0.extend(fresh);
    }
}

/// Where a fetch of a history answered a bounded span at a time (intraday samples, a
/// night's minutes) starts: `late` before the newest time seen, but no earlier than one
/// `span` before `now`; a span before `now` the first time.
pub(crate) fn bounded_since(newest: Option<i64>, now: i64, late: i64, span: i64) -> i64 {
    let earliest = now - span + 1;
    newest.map_or(earliest, |n| n - late).max(earliest)
}

/// The `device_id` label: the hashed id Withings gives, "" for a phone tracker without one.
pub(crate) fn device_id(hash: Option<String>, plain: Option<String>) -> String {
    hash.filter(|h| !h.is_empty()).or(plain).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(c: &Collectors) -> Vec<&'static str> {
        c.names().collect()
    }

    #[test]
    fn the_help_of_withings_collectors_names_every_collector_in_the_list() {
        // `config`, below this floor, cannot read the list: its help text is written by hand,
        // and this keeps it equal to the list.
        let row = crate::config::SETTINGS
            .iter()
            .find(|s| s.variable == "WITHINGS_COLLECTORS")
            .unwrap();
        let listed = row
            .meaning
            .split_once(": ")
            .and_then(|(_, rest)| rest.split_once(" ("))
            .map(|(names, _)| names)
            .unwrap();
        let names: Vec<&str> = ALL.iter().map(|c| c.name()).collect();
        assert_eq!(listed, names.join(", "));
    }

    #[test]
    fn the_configuration_is_checked_against_the_tables() {
        let read = |pairs: &[(&str, &str)]| {
            crate::config::Config::from_vars(
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .unwrap()
            .collectors
        };
        let (collectors, settings) = check(&read(&[])).unwrap();
        assert_eq!(collectors, Collectors::default());
        assert!(settings.include_ambiguous);
        assert_eq!(
            settings.meastypes,
            "1,4,5,6,8,9,10,11,12,54,71,73,76,77,88,91,123,130,135,136,137,138,139,155,167,168,169,170,173,174,175,196,226,227,229"
        );
        let (collectors, settings) = check(&read(&[
            ("WITHINGS_COLLECTORS", "Sleep, measures,sleep"),
            ("WITHINGS_MEASTYPES", "10,9"),
        ]))
        .unwrap();
        assert_eq!(collectors, Collectors::parse("measures,sleep").unwrap());
        assert_eq!(settings.meastypes, "10,9");
        for (var, value) in [
            ("WITHINGS_MEASTYPES", "9,2"),
            ("WITHINGS_COLLECTORS", "measures,steps"),
            ("WITHINGS_COLLECTORS", " , "),
        ] {
            let err = check(&read(&[(var, value)])).unwrap_err();
            assert_eq!(err.variable, var, "{value}: {err}");
            let line = err.to_string();
            assert!(line.starts_with(var) && !line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn a_bounded_fetch_starts_late_before_the_newest_but_never_beyond_a_span() {
        // First time: the last span.
        assert_eq!(bounded_since(None, 100_000, 3_600, 86_400), 13_601);
        // Then an hour before the newest seen...
        assert_eq!(bounded_since(Some(99_000), 100_000, 3_600, 86_400), 95_400);
        // ...but never more than a span back, after a long gap.
        assert_eq!(bounded_since(Some(1_000), 100_000, 3_600, 86_400), 13_601);
    }

    #[test]
    fn default_is_measures_only() {
        let c = Collectors::default();
        assert_eq!(names(&c), ["measures"]);
        assert_eq!(c.scopes(), "user.metrics");
        assert_eq!(c.applis(), [1, 2, 4]);
    }

    #[test]
    fn parse_dedups_sorts_and_ignores_case_and_spaces() {
        let c = Collectors::parse(
            " Sleep,devices,,goals, HEART,measures , workouts,sleep,activity,intraday,SLEEP_detail",
        )
        .unwrap();
        assert_eq!(
            names(&c),
            [
                "measures",
                "activity",
                "sleep",
                "devices",
                "workouts",
                "intraday",
                "sleep_detail",
                "heart",
                "goals"
            ]
        );
        assert_eq!(c, Collectors::all());
        assert_eq!(c.scopes(), "user.metrics,user.activity,user.info");
        assert_eq!(c.applis(), [1, 2, 4, 16, 44, 54]);
        let only = Collectors::parse("sleep").unwrap();
        assert!(only.contains("sleep") && !only.contains("measures"));
        assert_eq!(only.scopes(), "user.activity");
    }

    #[test]
    fn unknown_or_empty_is_a_one_line_error_listing_valid_names() {
        let err = Collectors::parse("measures,heartrate\nINJECTED").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("heartrate"), "{text}");
        assert!(
            text.contains(
                "measures, activity, sleep, devices, workouts, intraday, sleep_detail, heart, goals"
            ),
            "{text}"
        );
        for empty in ["", " , ,"] {
            let err = Collectors::parse(empty).unwrap_err();
            assert!(matches!(err, CollectorsError::Empty(_)), "{err}");
        }
    }

    #[test]
    fn every_collector_says_what_it_needs_and_only_measures_leads() {
        let said: Vec<_> = ALL
            .iter()
            .map(|c| {
                (
                    c.name(),
                    c.scope(),
                    c.applis(),
                    c.action(),
                    c.leads(),
                    c.history().is_some(),
                )
            })
            .collect();
        assert_eq!(
            said,
            [
                (
                    "measures",
                    "user.metrics",
                    &[1, 2, 4][..],
                    "getmeas",
                    true,
                    true
                ),
                (
                    "activity",
                    "user.activity",
                    &[16][..],
                    "getactivity",
                    false,
                    true
                ),
                (
                    "sleep",
                    "user.activity",
                    &[44][..],
                    "getsummary",
                    false,
                    true
                ),
                ("devices", "user.info", &[][..], "getdevice", false, false),
                (
                    "workouts",
                    "user.activity",
                    &[16][..],
                    "getworkouts",
                    false,
                    true
                ),
                (
                    "intraday",
                    "user.activity",
                    &[16][..],
                    "getintradayactivity",
                    false,
                    true
                ),
                (
                    "sleep_detail",
                    "user.activity",
                    &[44][..],
                    "sleep_get",
                    false,
                    true
                ),
                (
                    "heart",
                    "user.metrics",
                    &[54][..],
                    "heart_list",
                    false,
                    true
                ),
                ("goals", "user.info", &[][..], "getgoals", false, false),
            ]
        );
    }

    #[test]
    fn missing_scope_hint_names_the_account_scope_and_command() {
        let hint = missing_scope_hint(&devices::Devices, "alice");
        assert!(hint.contains("user.info") && hint.contains("auth --account alice"));
    }

    #[test]
    fn cursor_moves_only_on_commit_and_starts_with_a_lookback() {
        let now = 1_700_000_000;
        let mut cursor = Cursor::default();
        assert_eq!(cursor.query(now).lastupdate, now - INITIAL_LOOKBACK_SECONDS);
        cursor.saw(Some(1_699_999_000));
        cursor.saw(None);
        assert_eq!(cursor.query(now).lastupdate, now - INITIAL_LOOKBACK_SECONDS);
        cursor.commit();
        assert_eq!(
            cursor.query(now).lastupdate,
            1_699_999_000 - SYNC_OVERLAP_SECONDS
        );
    }

    struct Page(bool, Option<i64>);
    impl Paged for Page {
        fn more(&self) -> bool {
            self.0
        }
        fn offset(&self) -> Option<i64> {
            self.1
        }
    }

    #[tokio::test]
    async fn fetch_pages_follows_offsets_and_stops_a_loop() {
        let mut asked = Vec::new();
        let pages = fetch_pages(
            SyncQuery {
                lastupdate: 5,
                offset: None,
            },
            |q| {
                asked.push(q);
                let page = match q.offset {
                    None => Page(true, Some(2)),
                    Some(2) => Page(true, Some(4)),
                    _ => Page(false, Some(0)),
                };
                async move { Ok::<_, ()>(page) }
            },
        )
        .await
        .unwrap();
        assert_eq!(pages.len(), 3);
        assert_eq!(
            asked
                .iter()
                .map(|q| (q.lastupdate, q.offset))
                .collect::<Vec<_>>(),
            [(5, None), (5, Some(2)), (5, Some(4))]
        );
        let stuck = fetch_pages(
            SyncQuery {
                lastupdate: 0,
                offset: None,
            },
            |_| async { Ok::<_, ()>(Page(true, Some(3))) },
        )
        .await;
        assert_eq!(stuck.err(), Some(SyncError::EndlessPagination(2)));
        let failed = fetch_pages(
            SyncQuery {
                lastupdate: 0,
                offset: None,
            },
            |_| async { Err::<Page, _>("down") },
        )
        .await;
        assert_eq!(failed.err(), Some(SyncError::Fetch("down")));
    }
}
