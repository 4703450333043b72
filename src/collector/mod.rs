//! Collectors the operator turns on with `WITHINGS_COLLECTORS`, the way node_exporter
//! enables its collectors: `measures` (getmeas, on by default), `activity`, `sleep` and
//! `devices`. Each is one file with the same shape: the parser of its answer, a state that
//! merges pages incrementally, and the metric families of that state. The request itself is
//! a method on [`WithingsClient`](crate::withings::WithingsClient), so that every call goes
//! through its send path (and the request budget there).
//!
//! Each enabled collector costs one request per account per fetch (more only while a
//! first sync pages through history).

pub mod activity;
pub mod devices;
pub mod sleep;

use crate::render::families::GaugeFamilies;
use prometheus::proto::MetricFamily;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;

/// How far before the latest `modified` seen a fetch starts again, so that a row written
/// while the previous answer was being built is not missed (as for getmeas).
pub const SYNC_OVERLAP_SECONDS: i64 = 300;

/// What a first sync asks for: rows modified in the last 30 days. The latest day and the
/// latest night are all these collectors show, and a whole history would be many pages.
pub const INITIAL_LOOKBACK_SECONDS: i64 = 30 * 86_400;

/// A sync that keeps saying `more` past this many pages is a broken upstream.
pub const MAX_PAGES: usize = 1000;

/// One kind of data from Withings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collector {
    Measures,
    Activity,
    Sleep,
    Devices,
}

impl Collector {
    pub const ALL: [Collector; 4] = [
        Collector::Measures,
        Collector::Activity,
        Collector::Sleep,
        Collector::Devices,
    ];

    /// The name in `WITHINGS_COLLECTORS` and in the `collector` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Measures => "measures",
            Self::Activity => "activity",
            Self::Sleep => "sleep",
            Self::Devices => "devices",
        }
    }

    /// The OAuth scope a token needs for this collector's endpoint.
    pub fn scope(self) -> &'static str {
        match self {
            Self::Measures => "user.metrics",
            Self::Activity | Self::Sleep => "user.activity",
            Self::Devices => "user.info",
        }
    }

    /// The notification `appli` codes that announce new data for this collector
    /// (`withings-api.md`, "Notifications"); devices have none.
    pub fn applis(self) -> &'static [i64] {
        match self {
            Self::Measures => &[1, 2, 4],
            Self::Activity => &[16],
            Self::Sleep => &[44],
            Self::Devices => &[],
        }
    }

    /// The API `action`, as in the `action` label of `withings_api_requests_total`.
    pub fn action(self) -> &'static str {
        match self {
            Self::Measures => "getmeas",
            Self::Activity => "getactivity",
            Self::Sleep => "getsummary",
            Self::Devices => "getdevice",
        }
    }

    /// The log line for a token that lacks this collector's scope.
    pub fn missing_scope_hint(self, account: &str) -> String {
        format!(
            "the token of account {account} lacks the {} scope the {} collector needs; run `auth --account {account}` again to grant it",
            self.scope(),
            self.name()
        )
    }
}

impl fmt::Display for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn valid_names() -> String {
    Collector::ALL
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectorsError {
    #[error("WITHINGS_COLLECTORS: unknown collector `{name}`; valid ones are {valid}")]
    Unknown { name: String, valid: String },
    #[error("WITHINGS_COLLECTORS is empty; name at least one of {0}")]
    Empty(String),
}

impl FromStr for Collector {
    type Err = CollectorsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let name = text.trim();
        Collector::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| CollectorsError::Unknown {
                // A name from the environment goes into a log line: one line, bounded.
                name: crate::text::one_line(&name.chars().take(64).collect::<String>())
                    .into_owned(),
                valid: valid_names(),
            })
    }
}

/// The enabled collectors, each once, in [`Collector::ALL`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collectors(Vec<Collector>);

impl Default for Collectors {
    fn default() -> Self {
        Self(vec![Collector::Measures])
    }
}

impl Collectors {
    /// Parses `WITHINGS_COLLECTORS`: comma-separated names, any case, repeats ignored.
    pub fn parse(text: &str) -> Result<Self, CollectorsError> {
        let mut enabled = Vec::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let collector: Collector = part.parse()?;
            if !enabled.contains(&collector) {
                enabled.push(collector);
            }
        }
        if enabled.is_empty() {
            return Err(CollectorsError::Empty(valid_names()));
        }
        enabled.sort();
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
        Self(Collector::ALL.to_vec())
    }

    pub fn contains(&self, collector: Collector) -> bool {
        self.0.contains(&collector)
    }

    pub fn iter(&self) -> impl Iterator<Item = Collector> + '_ {
        self.0.iter().copied()
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

    /// The notification `appli` codes of the enabled collectors.
    pub fn applis(&self) -> Vec<i64> {
        self.iter()
            .flat_map(|c| c.applis().iter().copied())
            .collect()
    }
}

/// What `WITHINGS_COLLECTORS` and `WITHINGS_MEASTYPES` ask for, checked against the tables
/// of this version (which `config`, below them, cannot see). Called wherever a
/// configuration is read, so that a name or code that does not exist stops the start.
pub fn check(
    config: &crate::config::CollectorsConfig,
) -> Result<(Collectors, Vec<i64>), crate::config::ConfigError> {
    let meastypes = crate::render::measures::checked_meastypes(config.meastypes.as_deref())?;
    Ok((Collectors::from_config(config)?, meastypes))
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

/// What a page said about the pages after it.
pub trait Paged {
    fn more(&self) -> bool;
    fn offset(&self) -> Option<i64>;
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

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SyncError<E> {
    #[error(transparent)]
    Fetch(E),
    #[error("Withings kept answering `more` after {0} pages; the sync was abandoned")]
    EndlessPagination(usize),
}

/// Fetches every page of one sync, from `first` on, following `more`/`offset` as getmeas
/// does: an offset that does not move forward, or too many pages, is a broken upstream.
/// `fetch` makes the request (the caller's closure decides the token and counts it). The
/// pages are returned in order, for the caller to merge under its own lock: no lock is held
/// across a request.
pub async fn fetch_pages<P, F, Fut, E>(
    first: SyncQuery,
    mut fetch: F,
) -> Result<Vec<P>, SyncError<E>>
where
    P: Paged,
    F: FnMut(SyncQuery) -> Fut,
    Fut: Future<Output = Result<P, E>>,
{
    let mut query = first;
    let mut pages = Vec::new();
    loop {
        let page = fetch(query).await.map_err(SyncError::Fetch)?;
        let (more, next) = (page.more(), page.offset());
        pages.push(page);
        if !more {
            return Ok(pages);
        }
        match next {
            Some(next) if query.offset.is_none_or(|o| next > o) && pages.len() < MAX_PAGES => {
                query.offset = Some(next);
            }
            _ => return Err(SyncError::EndlessPagination(pages.len())),
        }
    }
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

/// The `device_id` label: the hashed id Withings gives, "" for a phone tracker without one.
pub(crate) fn device_id(hash: Option<String>, plain: Option<String>) -> String {
    hash.filter(|h| !h.is_empty()).or(plain).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_checked_against_the_tables() {
        let read = |pairs: &[(&str, &str)]| {
            crate::config::Config::from_vars(
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .unwrap()
            .collectors
        };
        let (collectors, meastypes) = check(&read(&[])).unwrap();
        assert_eq!(collectors, Collectors::default());
        assert_eq!(
            meastypes
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(","),
            "1,4,5,6,8,9,10,11,12,54,71,73,76,77,88,91,123,130,135,136,137,138,139,155,167,168,169,170,173,174,175,196,226,227,229"
        );
        let (collectors, meastypes) = check(&read(&[
            ("WITHINGS_COLLECTORS", "Sleep, measures,sleep"),
            ("WITHINGS_MEASTYPES", "10,9"),
        ]))
        .unwrap();
        assert_eq!(collectors, Collectors::parse("measures,sleep").unwrap());
        assert_eq!(meastypes, vec![10, 9]);
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
    fn default_is_measures_only() {
        let c = Collectors::default();
        assert_eq!(c.iter().collect::<Vec<_>>(), [Collector::Measures]);
        assert_eq!(c.scopes(), "user.metrics");
        assert_eq!(c.applis(), [1, 2, 4]);
    }

    #[test]
    fn parse_dedups_sorts_and_ignores_case_and_spaces() {
        let c = Collectors::parse(" Sleep,devices,,measures , sleep,activity").unwrap();
        assert_eq!(c.iter().collect::<Vec<_>>(), Collector::ALL);
        assert_eq!(c.scopes(), "user.metrics,user.activity,user.info");
        assert_eq!(c.applis(), [1, 2, 4, 16, 44]);
        let only = Collectors::parse("sleep").unwrap();
        assert!(only.contains(Collector::Sleep) && !only.contains(Collector::Measures));
        assert_eq!(only.scopes(), "user.activity");
    }

    #[test]
    fn unknown_or_empty_is_a_one_line_error_listing_valid_names() {
        let err = Collectors::parse("measures,heartrate\nINJECTED").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("heartrate"), "{text}");
        assert!(
            text.contains("measures, activity, sleep, devices"),
            "{text}"
        );
        for empty in ["", " , ,"] {
            let err = Collectors::parse(empty).unwrap_err();
            assert!(matches!(err, CollectorsError::Empty(_)), "{err}");
        }
    }

    #[test]
    fn missing_scope_hint_names_the_account_scope_and_command() {
        let hint = Collector::Devices.missing_scope_hint("alice");
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
