//! `withings-exporter backfill`: an account's whole history as OpenMetrics text for
//! `promtool tsdb create-blocks-from openmetrics`, so that Prometheus holds the years before
//! the exporter was installed, in the series the live exporter scrapes into: the history of
//! every enabled collector that has one ([`crate::collector::History`]: `getmeas` for
//! `measures`, `getactivity` and `getsummary` for `activity` and `sleep`). Devices are a
//! current state, not a history: not backfilled.
//!
//! Every request goes through the same [`WithingsClient`] as the live exporter, so the
//! request budget and the 601 pause hold; when either says "not now", the backfill waits
//! for the slot instead of failing. Each collector writes its rows with the live exporter's
//! own filters and series, spooled to one temporary file per family while paging
//! ([`spool`]), then written family by family ([`openmetrics`]) into a temporary file next
//! to the output, renamed over it only once complete.

pub mod live;
pub mod openmetrics;
mod progress;
pub mod remote;
mod spool;

use crate::account::tokens::{TokenError, TokenSource};
use crate::app::accounts::{AccountSet, name_rule, valid_name};
use crate::clock::Clock;
use crate::collector::{self, Collectors, History, HistoryPage};
use crate::config::{Config, ConfigError};
use crate::remote_write::Writer;
use crate::withings::paging::{EndlessPagination, MAX_PAGES, Pager};
use crate::withings::{ApiError, Request, RequestError, StatusClass, WithingsClient, authorized};
use openmetrics::{FamilyReport, OpenMetricsWriter, Window, WriteError};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Withings sold its first connected scale in 2009: one window before that catches any
/// reading entered by hand with an older date, then one window a year.
const FIRST_YEAR: i16 = 2009;

/// 601s answered in a row to one request before the backfill gives up: each is waited out
/// (Withings' `wait_seconds`, at most an hour, or the client's own backoff from 10 s when
/// it gives none, capped at 10 minutes), so this bounds the wait at a few hours at most.
const MAX_RATE_LIMITED_IN_A_ROW: u32 = 10;

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
        "account {account}: Withings kept answering `more` for {pages} pages of one window, more than any real history holds; giving up (a fault at Withings' end: try again later)"
    )]
    EndlessPagination { account: String, pages: usize },
    #[error("cannot spool readings to a temporary directory: {0}")]
    Spool(std::io::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    RemoteWrite(#[from] crate::remote_write::WriteError),
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
    /// What the collectors read from the configuration (measure types, ambiguous groups).
    pub settings: collector::Settings,
    /// Unix seconds: readings before it are not read.
    pub since: Option<i64>,
    /// Unix seconds: the last [`openmetrics::HEAD_SECONDS`] before it are left out.
    pub now: i64,
    /// Draw a progress line on stderr.
    pub progress: bool,
    /// `WITHINGS_COLLECTORS`: which histories are read (those of the enabled collectors
    /// that have one).
    pub collectors: Collectors,
    /// The labels Prometheus attaches to what it scrapes (`job`, `instance`): the dashboard
    /// selects and groups by them, so the backfilled series need the live ones' values.
    pub target_labels: Vec<(&'static str, String)>,
}

/// What a run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub families: Vec<FamilyReport>,
    /// Requests answered and rows read.
    pub counts: Counts,
    /// What remote write did, when the samples went there.
    pub remote: Option<crate::remote_write::Report>,
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

    /// The one line printed at the end; `output` names where the samples went.
    pub fn line(&self, output: &str) -> String {
        let per_family: Vec<String> = self
            .families
            .iter()
            .map(|f| format!("{} {}", f.name, f.samples))
            .collect();
        let range = match self.range() {
            Some((lo, hi)) => format!("from {} to {}", utc(lo), utc(hi)),
            None => "no reading in range".to_owned(),
        };
        let malformed = match self.counts.malformed {
            0 => String::new(),
            1 => "; 1 malformed row skipped".to_owned(),
            n => format!("; {n} malformed rows skipped"),
        };
        let dropped = match self.remote.as_ref().map_or(0, |r| r.dropped_total()) {
            0 => String::new(),
            n => format!("; {n} samples refused by the receiver, left out (see the log)"),
        };
        format!(
            "backfill: wrote {} samples to {output} ({} read{malformed}{dropped}), {range}: {}",
            self.samples() - self.remote.as_ref().map_or(0, |r| r.dropped_total()),
            self.counts,
            if per_family.is_empty() {
                "no family".to_owned()
            } else {
                per_family.join(", ")
            }
        )
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
        let client = WithingsClient::from_config(
            &config.withings,
            config.accounts.budget_ledger(),
            Clock::default(),
        )
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
        let (collectors, settings) = collector::check(&config.collectors)?;
        Ok(Self {
            client,
            targets,
            options: Options {
                settings,
                since,
                now,
                progress: false,
                collectors,
                target_labels: vec![("job", DEFAULT_JOB.to_owned())],
            },
        })
    }

    pub async fn run(&self, output: Output<'_>) -> Result<Summary, BackfillError> {
        match output {
            Output::File(path) => run(&self.client, &self.targets, &self.options, path).await,
            Output::RemoteWrite(writer) => {
                run_remote(&self.client, &self.targets, &self.options, writer).await
            }
        }
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

/// Where a run stands: requests answered, and rows read by what each history calls them
/// (groups, days, nights), in the order of [`collector::ALL`], every one of the enabled
/// collectors shown even when it read nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Requests answered.
    pub pages: u64,
    rows: Vec<(&'static str, u64)>,
    /// Activity days and sleep nights that were malformed and skipped.
    pub malformed: u64,
}

impl Counts {
    /// The counts of a run that reads `histories`: each shown even when it read nothing.
    pub fn of<'h>(histories: impl IntoIterator<Item = &'h dyn History>) -> Self {
        let mut rows: Vec<(&'static str, u64)> = Vec::new();
        for history in histories {
            if !rows.iter().any(|(unit, _)| *unit == history.rows()) {
                rows.push((history.rows(), 0));
            }
        }
        Self {
            pages: 0,
            rows,
            malformed: 0,
        }
    }
}

impl Counts {
    /// Rows read that a history calls `unit` ("groups", "days", "nights").
    pub fn rows(&self, unit: &str) -> u64 {
        self.rows
            .iter()
            .find(|(u, _)| *u == unit)
            .map_or(0, |(_, n)| *n)
    }

    fn add(&mut self, unit: &'static str, n: u64) {
        match self.rows.iter_mut().find(|(u, _)| *u == unit) {
            Some((_, total)) => *total += n,
            None => self.rows.push((unit, n)),
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} pages", self.pages)?;
        for (unit, n) in &self.rows {
            write!(f, ", {n} {unit}")?;
        }
        Ok(())
    }
}

/// Where a backfill writes.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// An OpenMetrics file for promtool.
    File(&'a Path),
    /// A remote-write receiver.
    RemoteWrite(&'a Writer),
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
    let (spool, counts, window) = read(client, targets, options).await?;
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
        counts,
        remote: None,
    })
}

/// [`run`], the samples sent by remote write instead: the same samples at the same
/// timestamps. The spool is read back on a blocking thread, in batches the writer sends
/// as they come; dropping the future (Ctrl-C) stops both and removes the spool.
pub async fn run_remote(
    client: &WithingsClient,
    targets: &[Target],
    options: &Options,
    writer: &Writer,
) -> Result<Summary, BackfillError> {
    let (spool, counts, window) = read(client, targets, options).await?;
    let (families, receivers) = remote::channels(
        window,
        writer.options().max_samples_per_send,
        writer.options().max_in_flight,
    );
    let reading = tokio::task::spawn_blocking(move || {
        let mut families = families;
        let reports = spool.write_to(&mut families)?;
        families.finish()?;
        Ok::<_, WriteError>(reports)
    });
    let sent = remote::send_all(writer, receivers).await;
    // The sender's error first: when it stops, the reading side only sees closed channels.
    let report = sent?;
    let families = match reading.await {
        Ok(result) => result?,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => return Err(WriteError::Closed.into()),
    };
    Ok(Summary {
        families,
        counts,
        remote: Some(report),
    })
}

/// Reads every target's history into a spool.
async fn read(
    client: &WithingsClient,
    targets: &[Target],
    options: &Options,
) -> Result<(spool::Spool, Counts, Window), BackfillError> {
    let window = Window::before_head(options.now, options.since);
    let spans = windows(window);
    let histories: Vec<&dyn History> = options
        .collectors
        .iter()
        .filter_map(|c| c.history())
        .collect();
    let day_spans = spans
        .iter()
        .filter(|s| year_start(FIRST_YEAR).is_none_or(|first| s.1 >= first))
        .count();
    let per_target: usize = histories
        .iter()
        .map(|h| match (h.by_days(), h.max_span()) {
            (true, _) => day_spans,
            (false, None) => spans.len(),
            (false, Some(max)) => spans
                .iter()
                .map(|&s| reached(*h, s, max, options.since, window.until).len())
                .sum(),
        })
        .sum();
    let mut spool = spool::Spool::new().map_err(BackfillError::Spool)?;
    let mut progress = progress::Progress::new(options.progress, targets.len() * per_target);
    let mut counts = Counts::of(histories.iter().copied());
    for (index, target) in targets.iter().enumerate() {
        if let TokenSource::Unusable(reason) = &target.tokens {
            return Err(BackfillError::Unusable {
                account: target.name.clone(),
                reason: reason.clone(),
            });
        }
        let mut read = Read {
            client,
            target,
            options,
            sink: spool::ForAccount {
                spool: &mut spool,
                account: u32::try_from(index).unwrap_or(u32::MAX),
                label: target.label.as_deref(),
                target: &options.target_labels,
            },
            progress: &mut progress,
            counts: &mut counts,
        };
        for &span in &spans {
            // No Withings device tracked activity or sleep before its first scale: the
            // window before 2009 holds only measures entered by hand with an old date.
            let before_devices = year_start(FIRST_YEAR).is_some_and(|first| span.1 < first);
            let edges = (Some(&span) == spans.first(), Some(&span) == spans.last());
            let days = days_of(span, edges).filter(|_| !before_devices);
            for &history in &histories {
                let window = match (&days, history.by_days()) {
                    (_, false) => {
                        // A history whose requests answer a bounded span (a day of intraday
                        // samples) reads the window in pieces.
                        if let Some(max) = history.max_span() {
                            for piece in reached(history, span, max, options.since, window.until) {
                                let window = collector::Window {
                                    span: piece,
                                    days: None,
                                };
                                read.window(history, window).await?;
                            }
                            continue;
                        }
                        collector::Window { span, days: None }
                    }
                    (Some((start, end)), true) => collector::Window {
                        span,
                        days: Some((start, end)),
                    },
                    (None, true) => continue,
                };
                read.window(history, window).await?;
            }
        }
    }
    progress.finish();
    Ok((spool, counts, window))
}

/// The pieces of `span` a history of bounded requests reads: without `--since`, only those
/// within its [`History::reach`] of the window's end.
fn reached(
    history: &dyn History,
    span: (i64, i64),
    max: i64,
    since: Option<i64>,
    until: i64,
) -> Vec<(i64, i64)> {
    let floor = match (since, history.reach()) {
        (None, Some(reach)) => until.saturating_sub(reach),
        _ => i64::MIN,
    };
    if span.1 < floor {
        return Vec::new();
    }
    pieces((span.0.max(floor), span.1), max)
}

/// `span` (inclusive) cut into consecutive pieces of at most `max` seconds.
fn pieces((start, end): (i64, i64), max: i64) -> Vec<(i64, i64)> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut from = start;
    while from <= end {
        let to = from.saturating_add(max - 1).min(end);
        out.push((from, to));
        if to == i64::MAX {
            break;
        }
        from = to + 1;
    }
    out
}

/// One account's history, read window by window into the spool.
struct Read<'r> {
    client: &'r WithingsClient,
    target: &'r Target,
    options: &'r Options,
    sink: spool::ForAccount<'r>,
    progress: &'r mut progress::Progress,
    counts: &'r mut Counts,
}

impl Read<'_> {
    /// Every page of one dated window of one collector's history, spooled as it comes.
    async fn window(
        &mut self,
        history: &dyn History,
        window: collector::Window<'_>,
    ) -> Result<(), BackfillError> {
        let name = &self.target.name;
        let mut pager = Pager::new(MAX_PAGES);
        loop {
            let request = history.request(&self.options.settings, window, pager.offset());
            let page = self.call(&request, history).await?;
            self.counts.pages += 1;
            let rows = page
                .write(&self.options.settings, self.options.now, &mut self.sink)
                .map_err(BackfillError::Spool)? as u64;
            self.counts.add(history.rows(), rows);
            self.counts.malformed += page.malformed_rows() as u64;
            self.progress.page(name, &*self.counts);
            match pager.turn(page.more(), page.offset()) {
                Ok(true) => {}
                Ok(false) => break,
                Err(EndlessPagination(pages)) => {
                    return Err(BackfillError::EndlessPagination {
                        account: name.clone(),
                        pages,
                    });
                }
            }
        }
        self.progress.window_done(name, &*self.counts);
        Ok(())
    }

    /// One request with the account's access token, waiting out the budget and any 601
    /// pause, refreshing the token once if Withings refuses it.
    async fn call(
        &self,
        request: &Request,
        history: &dyn History,
    ) -> Result<Box<dyn HistoryPage>, BackfillError> {
        let client = self.client;
        let account = || self.target.name.clone();
        let mut rate_limited = 0u32;
        loop {
            let answer = authorized(&self.target.tokens, |token| async move {
                client
                    .call(&token, request, |body: &[u8]| history.parse(body))
                    .await
            })
            .await;
            match answer {
                Ok(page) => return Ok(page),
                // Waiting for a slot is what a backfill is for, unlike a scrape. Asked again
                // in short steps rather than slept through: the limits' clock decides when
                // the slot is free (tests move it), and nothing is sent while it is not.
                Err(RequestError::Api(
                    ApiError::BudgetExhausted(wait) | ApiError::Paused(wait),
                )) => {
                    tokio::time::sleep(wait.clamp(Duration::from_millis(10), MAX_WAIT_STEP)).await;
                }
                // A 601 paused the client for Withings' `wait_seconds` (or its own backoff):
                // the next turn waits it out like a spent budget, then asks again.
                Err(RequestError::Api(ApiError::Status {
                    class: StatusClass::RateLimited,
                    ..
                })) if rate_limited < MAX_RATE_LIMITED_IN_A_ROW => {
                    rate_limited += 1;
                }
                Err(RequestError::Api(source) | RequestError::Rejected(source)) => {
                    return Err(BackfillError::Api {
                        account: account(),
                        source,
                    });
                }
                Err(RequestError::Token(source) | RequestError::Refresh(source)) => {
                    return Err(BackfillError::Token {
                        account: account(),
                        source,
                    });
                }
                Err(RequestError::EndlessPagination(pages)) => {
                    return Err(BackfillError::EndlessPagination {
                        account: account(),
                        pages,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_history_reads_its_window_in_pieces_and_without_since_only_its_reach() {
        assert_eq!(pieces((0, 9), 4), [(0, 3), (4, 7), (8, 9)]);
        assert_eq!(pieces((5, 5), 86_400), [(5, 5)]);
        let intraday = &collector::intraday::Intraday;
        let day = 86_400;
        let until = 1_000 * day;
        // Without --since: the last year only, a day a request.
        let all = reached(intraday, (0, until), day, None, until);
        assert_eq!(all.len(), 366);
        assert_eq!(all.first().map(|p| p.0), Some(until - 365 * day));
        assert_eq!(all.last().map(|p| p.1), Some(until));
        assert!(reached(intraday, (0, 10 * day), day, None, until).is_empty());
        // With it, from there.
        assert_eq!(
            reached(intraday, (0, until), day, Some(0), until).len(),
            1_001
        );
    }
}
