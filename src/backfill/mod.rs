//! `withings-exporter backfill`: an account's whole history as OpenMetrics text for
//! `promtool tsdb create-blocks-from openmetrics`, so that Prometheus holds the years before
//! the exporter was installed, in the series the live exporter scrapes into: `getmeas` for
//! the `measures` collector, `getactivity` and `getsummary` when the `activity` and `sleep`
//! collectors are on. Devices are a current state, not a history: not backfilled.
//!
//! Every request goes through the same [`WithingsClient`] as the live exporter, so the
//! request budget and the 601 pause hold; when either says "not now", the backfill waits
//! for the slot instead of failing. Readings are judged by the live exporter's own filters
//! ([`crate::account::readings`]), spooled to one temporary file per family while paging
//! ([`spool`]), then written family by family ([`openmetrics`]) into a temporary file next
//! to the output, renamed over it only once complete.

pub mod openmetrics;
mod progress;
mod spool;

use crate::account::readings::{group_readings, version_of};
use crate::account::state::{MergeOptions, MergeStats};
use crate::account::tokens::{TokenError, TokenSource};
use crate::app::accounts::{AccountSet, name_rule, valid_name};
use crate::clock::Clock;
use crate::collector::{Collector, Collectors, RowQuery, activity, sleep};
use crate::config::{Config, ConfigError};
use crate::withings::{ApiError, GetmeasPage, WithingsClient};
use openmetrics::{FamilyReport, OpenMetricsWriter, Window, WriteError};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Withings sold its first connected scale in 2009: one window before that catches any
/// reading entered by hand with an older date, then one window a year.
const FIRST_YEAR: i16 = 2009;
/// A window that keeps saying `more` past this many pages is a broken upstream.
const MAX_PAGES_PER_WINDOW: usize = 10_000;

/// Longest single sleep while waiting for the budget or a 601 pause.
const MAX_WAIT_STEP: Duration = Duration::from_millis(250);

/// The job of the shipped scrape configuration (prometheus/prometheus.yml).
pub const DEFAULT_JOB: &str = "withings";

/// The name `--account` takes for the one account of WITHINGS_TOKEN_FILE or
/// WITHINGS_ACCESS_TOKEN (served on /metrics, so its series carry no `account` label).
pub const DEFAULT_ACCOUNT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error("account {account}: {source}")]
    Api {
        account: String,
        #[source]
        source: ApiError,
    },
    #[error("account {account}: {source}")]
    Token {
        account: String,
        #[source]
        source: TokenError,
    },
    #[error("account {account}: {reason}")]
    Unusable { account: String, reason: String },
    #[error(
        "account {account}: Withings kept answering `more` for {pages} pages of one window; giving up"
    )]
    EndlessPagination { account: String, pages: usize },
    #[error("cannot spool readings to a temporary directory: {0}")]
    Spool(std::io::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("cannot write {}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One account to read.
pub struct Target {
    /// The account's name, for messages.
    pub name: String,
    /// The `account` label its series carry: the name in a directory of accounts, none for
    /// the single account of /metrics.
    pub label: Option<String>,
    pub tokens: TokenSource,
}

/// What to read and how to judge it.
#[derive(Debug, Clone)]
pub struct Options {
    pub meastypes: String,
    pub merge: MergeOptions,
    /// Unix seconds: readings before it are not read.
    pub since: Option<i64>,
    /// Unix seconds: the last [`openmetrics::HEAD_SECONDS`] before it are left out.
    pub now: i64,
    /// Draw a progress line on stderr.
    pub progress: bool,
    /// `WITHINGS_COLLECTORS`: which histories are read (measures, activity, sleep).
    pub collectors: Collectors,
    /// The labels Prometheus attaches to what it scrapes (`job`, `instance`): the dashboard
    /// selects and groups by them, so the backfilled series need the live ones' values.
    pub target_labels: Vec<(&'static str, String)>,
}

/// What a run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub families: Vec<FamilyReport>,
    /// Requests answered (`getmeas`, `getactivity`, `getsummary`).
    pub pages: u64,
    pub groups: u64,
    /// Activity rows (one day of one source) and sleep nights read.
    pub days: u64,
    pub nights: u64,
}

impl Summary {
    pub fn samples(&self) -> u64 {
        self.families.iter().map(|f| f.samples).sum()
    }

    /// Earliest and latest timestamp written.
    pub fn range(&self) -> Option<(i64, i64)> {
        self.families
            .iter()
            .filter_map(|f| f.range)
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
    }

    /// The one line printed at the end.
    pub fn line(&self, output: &Path) -> String {
        let per_family: Vec<String> = self
            .families
            .iter()
            .map(|f| format!("{} {}", f.name, f.samples))
            .collect();
        let range = match self.range() {
            Some((lo, hi)) => format!("from {} to {}", utc(lo), utc(hi)),
            None => "no reading in range".to_owned(),
        };
        format!(
            "backfill: wrote {} samples to {} ({} read), {range}: {}",
            self.samples(),
            output.display(),
            self.counts(),
            if per_family.is_empty() {
                "no family".to_owned()
            } else {
                per_family.join(", ")
            }
        )
    }
}

impl Summary {
    fn counts(&self) -> Counts {
        Counts {
            pages: self.pages,
            groups: self.groups,
            days: self.days,
            nights: self.nights,
        }
    }
}

fn utc(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.to_string())
}

/// `--since YYYY-MM-DD`, midnight UTC.
pub fn parse_since(text: &str) -> Result<i64, BackfillError> {
    let date: jiff::civil::Date = text.parse().map_err(|_| {
        BackfillError::Usage(format!("--since: {text:?} is not a date (YYYY-MM-DD)"))
    })?;
    date.to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_second())
        .map_err(|e| BackfillError::Usage(format!("--since: {e}")))
}

/// Unix seconds of January 1st of `year`, UTC.
fn year_start(year: i16) -> Option<i64> {
    jiff::civil::date(year, 1, 1)
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_second())
}

fn year_of(seconds: i64) -> i16 {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC).year())
        .unwrap_or(FIRST_YEAR)
}

/// The dated windows (inclusive) the history is read in: one before 2009, then a year each,
/// up to `window.until`. Dated windows let the progress line say how far the run has come.
pub fn windows(window: Window) -> Vec<(i64, i64)> {
    let mut starts = Vec::new();
    let first = window.since.unwrap_or(0).max(0);
    starts.push(first);
    let mut year = year_of(first).max(FIRST_YEAR - 1) + 1;
    while let Some(start) = year_start(year) {
        if start > window.until {
            break;
        }
        if start > first {
            starts.push(start);
        }
        year += 1;
    }
    if first > window.until {
        return Vec::new();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let end = starts.get(i + 1).map_or(window.until, |next| next - 1);
            (s, end)
        })
        .collect()
}

/// The accounts to read and the client to read them with, from the configuration.
pub struct Plan {
    pub client: WithingsClient,
    pub targets: Vec<Target>,
    pub options: Options,
}

impl Plan {
    /// `account`: a name of WITHINGS_TOKEN_DIR, or [`DEFAULT_ACCOUNT`] without one; `all`:
    /// every account of WITHINGS_TOKEN_DIR.
    pub fn from_config(
        config: &Config,
        account: Option<&str>,
        all: bool,
        since: Option<i64>,
        now: i64,
    ) -> Result<Self, BackfillError> {
        let client = crate::withings::client_from_config(&config.withings, Clock::default())
            .map_err(|e| BackfillError::Api {
                account: account.unwrap_or(DEFAULT_ACCOUNT).to_owned(),
                source: e,
            })?;
        let targets = match (&config.accounts.token_dir, account, all) {
            (_, Some(_), true) => {
                return Err(BackfillError::Usage(
                    "give either --account NAME or --all, not both".into(),
                ));
            }
            (_, None, false) => {
                return Err(BackfillError::Usage(
                    "say which account: --account NAME (see `withings-exporter accounts`), or --all".into(),
                ));
            }
            (Some(dir), account, all) => {
                let credentials = config.client_credentials()?.ok_or_else(|| ConfigError {
                    variable: "WITHINGS_CLIENT_ID",
                    message: "not set; WITHINGS_TOKEN_DIR needs WITHINGS_CLIENT_ID and WITHINGS_CLIENT_SECRET (or WITHINGS_CLIENT_SECRET_FILE) to refresh each account's tokens".into(),
                })?;
                let files = AccountSet::new(dir).files().map_err(|e| {
                    BackfillError::Usage(format!(
                        "WITHINGS_TOKEN_DIR: cannot read {}: {e}",
                        dir.display()
                    ))
                })?;
                let chosen: Vec<(String, PathBuf)> = match account {
                    Some(name) if !valid_name(name) => {
                        return Err(BackfillError::Usage(format!(
                            "--account {name:?}: {}",
                            name_rule()
                        )));
                    }
                    Some(name) => match files.get(name) {
                        Some(path) => vec![(name.to_owned(), path.clone())],
                        None => {
                            return Err(BackfillError::Usage(format!(
                                "--account {name}: no {name}.json in WITHINGS_TOKEN_DIR ({}); `withings-exporter accounts` lists them",
                                dir.display()
                            )));
                        }
                    },
                    None if all && files.is_empty() => {
                        return Err(BackfillError::Usage(format!(
                            "--all: WITHINGS_TOKEN_DIR ({}) holds no account",
                            dir.display()
                        )));
                    }
                    None => files.into_iter().collect(),
                };
                chosen
                    .into_iter()
                    .map(|(name, path)| Target {
                        tokens: TokenSource::for_account_file(&path, &credentials, &client),
                        label: Some(name.clone()),
                        name,
                    })
                    .collect()
            }
            (None, Some(name), _) if name != DEFAULT_ACCOUNT => {
                return Err(BackfillError::Usage(format!(
                    "--account {name}: WITHINGS_TOKEN_DIR is not set, so the only account is `{DEFAULT_ACCOUNT}` (WITHINGS_TOKEN_FILE or WITHINGS_ACCESS_TOKEN)"
                )));
            }
            (None, _, _) => {
                let tokens = TokenSource::from_config(&config.accounts, &config.withings, &client)
                    .map_err(|e| BackfillError::Unusable {
                        account: DEFAULT_ACCOUNT.to_owned(),
                        reason: e.to_string(),
                    })?;
                vec![Target {
                    name: DEFAULT_ACCOUNT.to_owned(),
                    label: None,
                    tokens,
                }]
            }
        };
        let (collectors, meastypes) = crate::collector::check(&config.collectors)?;
        Ok(Self {
            client,
            targets,
            options: Options {
                meastypes: meastypes
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                merge: MergeOptions {
                    include_ambiguous: config.collectors.include_ambiguous,
                },
                since,
                now,
                progress: false,
                collectors,
                target_labels: vec![("job", DEFAULT_JOB.to_owned())],
            },
        })
    }

    pub async fn run(&self, output: &Path) -> Result<Summary, BackfillError> {
        run(&self.client, &self.targets, &self.options, output).await
    }
}

/// The `startdateymd`/`enddateymd` of one dated window for `getactivity` and `getsummary`:
/// its UTC days. The windows' days follow each other with no gap, so each row (selected by
/// its own date) comes in exactly one; only the first and last windows (`edges`) take one
/// more day outwards, since a row's date is a local day that may be a day off UTC's. What
/// falls outside the window is dropped when writing, by its timestamp.
pub fn days_of(span: (i64, i64), (first, last): (bool, bool)) -> Option<(String, String)> {
    let day = |seconds: i64| {
        jiff::Timestamp::from_second(seconds)
            .ok()
            .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date())
    };
    let mut start = day(span.0)?;
    let mut end = day(span.1)?;
    if first {
        start = start.yesterday().unwrap_or(start);
    }
    if last {
        end = end.tomorrow().unwrap_or(end);
    }
    Some((start.to_string(), end.to_string()))
}

/// Where a run stands: requests answered and rows read.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    pages: u64,
    groups: u64,
    days: u64,
    nights: u64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pages, {} groups, {} days, {} nights",
            self.pages, self.groups, self.days, self.nights
        )
    }
}

/// Whose samples are spooled, with which labels.
struct Who<'a> {
    account: u32,
    label: Option<&'a str>,
    target_labels: &'a [(&'static str, String)],
}

/// What a collector gives for one row: `put(name, help, labels, value)` per sample.
type Put<'p> = &'p mut crate::collector::Put<'p>;

impl Who<'_> {
    /// Spools the samples of one activity day or sleep night, all at `at`.
    fn spool(
        &self,
        spool: &mut spool::Spool,
        (at, modified): (i64, Option<i64>),
        series: impl FnOnce(Put<'_>),
    ) -> Result<(), BackfillError> {
        let mut failed = None;
        series(&mut |name, help, labels, value| {
            if failed.is_none()
                && let Err(e) = spool.push_collected(
                    self.account,
                    self.label,
                    self.target_labels,
                    (name, help),
                    labels,
                    at,
                    modified,
                    value,
                )
            {
                failed = Some(e);
            }
        });
        failed.map_or(Ok(()), |e| Err(BackfillError::Spool(e)))
    }
}

/// One account's paging, counted and drawn.
struct Read<'r, 'a> {
    reader: &'r mut Reader<'a>,
    progress: &'r mut progress::Progress,
    counts: &'r mut Counts,
}

impl Read<'_, '_> {
    /// Every page of one dated window: `fetch(token, offset)` asks for one, `take` spools
    /// it and says whether Withings has `more` and from which `offset`. An offset that does
    /// not move forward, or too many pages, is a broken upstream.
    async fn window<P, F, Fut>(
        &mut self,
        mut fetch: F,
        mut take: impl FnMut(P, &mut Counts) -> Result<(bool, Option<i64>), BackfillError>,
    ) -> Result<(), BackfillError>
    where
        F: FnMut(crate::secret::Secret, Option<i64>) -> Fut,
        Fut: std::future::Future<Output = Result<P, ApiError>>,
    {
        let mut offset = None;
        let mut window_pages = 0;
        let target: &Target = self.reader.target;
        let name = &target.name;
        loop {
            let page = self.reader.call(|token| fetch(token, offset)).await?;
            self.counts.pages += 1;
            window_pages += 1;
            let (more, next) = take(page, self.counts)?;
            self.progress.page(name, self.counts);
            if !more {
                break;
            }
            match next {
                Some(next)
                    if offset.is_none_or(|o| next > o) && window_pages < MAX_PAGES_PER_WINDOW =>
                {
                    offset = Some(next);
                }
                _ => {
                    return Err(BackfillError::EndlessPagination {
                        account: name.clone(),
                        pages: window_pages,
                    });
                }
            }
        }
        self.progress.window_done(name, self.counts);
        Ok(())
    }
}

/// Reads every target's history and writes it to `output`, which appears only complete:
/// the text goes to a temporary file in the same directory, renamed at the end. Dropping the
/// future (Ctrl-C) leaves neither that file nor the spool behind.
pub async fn run(
    client: &WithingsClient,
    targets: &[Target],
    options: &Options,
    output: &Path,
) -> Result<Summary, BackfillError> {
    let window = Window::before_head(options.now, options.since);
    let spans = windows(window);
    let enabled = |c| usize::from(options.collectors.contains(c));
    let day_spans = spans
        .iter()
        .filter(|s| year_start(FIRST_YEAR).is_none_or(|first| s.1 >= first))
        .count();
    let per_target = enabled(Collector::Measures) * spans.len()
        + (enabled(Collector::Activity) + enabled(Collector::Sleep)) * day_spans;
    let mut spool = spool::Spool::new().map_err(BackfillError::Spool)?;
    let mut progress = progress::Progress::new(options.progress, targets.len() * per_target);
    let mut counts = Counts::default();
    for (index, target) in targets.iter().enumerate() {
        if let TokenSource::Unusable(reason) = &target.tokens {
            return Err(BackfillError::Unusable {
                account: target.name.clone(),
                reason: reason.clone(),
            });
        }
        let account = u32::try_from(index).unwrap_or(u32::MAX);
        let mut reader = Reader { target };
        let who = Who {
            account,
            label: target.label.as_deref(),
            target_labels: &options.target_labels,
        };
        let mut read = Read {
            reader: &mut reader,
            progress: &mut progress,
            counts: &mut counts,
        };
        for &span in &spans {
            if options.collectors.contains(Collector::Measures) {
                read.window(
                    |token, offset| async move {
                        client
                            .getmeas_window(&token, &options.meastypes, span, offset)
                            .await
                    },
                    |page: GetmeasPage, counts| {
                        let mut stats = MergeStats::default();
                        for group in &page.groups {
                            counts.groups += 1;
                            spool.saw_version(account, group.grpid, version_of(group));
                            let mut failed = None;
                            group_readings(
                                group,
                                options.merge,
                                options.now,
                                &mut stats,
                                |slot, r| {
                                    if failed.is_none()
                                        && let Err(e) = spool.push(
                                            account,
                                            who.label,
                                            who.target_labels,
                                            slot,
                                            &r,
                                        )
                                    {
                                        failed = Some(e);
                                    }
                                },
                            );
                            if let Some(e) = failed {
                                return Err(BackfillError::Spool(e));
                            }
                        }
                        Ok((page.more, page.offset))
                    },
                )
                .await?;
            }
            // No Withings device tracked activity or sleep before its first scale: the
            // window before 2009 holds only measures entered by hand with an old date.
            let before_devices = year_start(FIRST_YEAR).is_some_and(|first| span.1 < first);
            let edges = (Some(&span) == spans.first(), Some(&span) == spans.last());
            let Some((start, end)) = days_of(span, edges).filter(|_| !before_devices) else {
                continue;
            };
            let days = |offset| RowQuery::Days {
                start: &start,
                end: &end,
                offset,
            };
            if options.collectors.contains(Collector::Activity) {
                read.window(
                    |token, offset| async move { client.getactivity(&token, days(offset)).await },
                    |page: activity::ActivityPage, counts| {
                        for day in &page.days {
                            counts.days += 1;
                            who.spool(&mut spool, (day.day_end, day.modified), |put| {
                                activity::day_series(day, put);
                            })?;
                        }
                        Ok((page.more, page.offset))
                    },
                )
                .await?;
            }
            if options.collectors.contains(Collector::Sleep) {
                read.window(
                    |token, offset| async move {
                        client.getsleepsummary(&token, days(offset)).await
                    },
                    |page: sleep::SleepPage, counts| {
                        for night in &page.nights {
                            counts.nights += 1;
                            who.spool(&mut spool, (night.enddate, night.modified), |put| {
                                sleep::night_series(night, put);
                            })?;
                        }
                        Ok((page.more, page.offset))
                    },
                )
                .await?;
            }
        }
    }
    progress.finish();
    let output_error = |source| BackfillError::Output {
        path: output.to_path_buf(),
        source,
    };
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".withings-backfill-")
        .suffix(".om.tmp")
        .tempfile_in(dir)
        .map_err(output_error)?;
    let mut writer = OpenMetricsWriter::new(BufWriter::new(temp), window);
    let families = spool.write_to(&mut writer)?;
    let temp = writer
        .finish()?
        .into_inner()
        .map_err(|e| output_error(e.into_error()))?;
    temp.persist(output).map_err(|e| output_error(e.error))?;
    Ok(Summary {
        families,
        pages: counts.pages,
        groups: counts.groups,
        days: counts.days,
        nights: counts.nights,
    })
}

/// One account's pages, with its token.
struct Reader<'a> {
    target: &'a Target,
}

impl Reader<'_> {
    /// One request made by `request` with the account's access token, waiting out the
    /// budget and any 601 pause, refreshing the token once if Withings refuses it.
    async fn call<T, F, Fut>(&mut self, mut request: F) -> Result<T, BackfillError>
    where
        F: FnMut(crate::secret::Secret) -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let token_error = |source| BackfillError::Token {
            account: self.target.name.clone(),
            source,
        };
        let mut retried_auth = false;
        loop {
            // Asked for every request, not kept: the token source refreshes the pair before
            // it expires, where a kept copy would spend a request on a 401 once it had.
            let token = self
                .target
                .tokens
                .access_token()
                .await
                .map_err(token_error)?;
            let answer = request(token.clone()).await;
            match answer {
                Ok(page) => return Ok(page),
                // Waiting for a slot is what a backfill is for, unlike a scrape. Asked again
                // in short steps rather than slept through: the limits' clock decides when
                // the slot is free (tests move it), and nothing is sent while it is not.
                Err(ApiError::BudgetExhausted(wait) | ApiError::Paused(wait)) => {
                    tokio::time::sleep(wait.clamp(Duration::from_millis(10), MAX_WAIT_STEP)).await;
                }
                Err(e) if e.is_auth_failure() && !retried_auth => {
                    retried_auth = true;
                    match self.target.tokens.after_auth_failure(&token).await {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            return Err(BackfillError::Api {
                                account: self.target.name.clone(),
                                source: e,
                            });
                        }
                        Err(refresh) => return Err(token_error(refresh)),
                    }
                }
                Err(source) => {
                    return Err(BackfillError::Api {
                        account: self.target.name.clone(),
                        source,
                    });
                }
            }
        }
    }
}
