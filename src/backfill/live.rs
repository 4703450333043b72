//! The running exporter's remote writer: each account's history as it arrives, written into
//! the store by remote write (`WITHINGS_REMOTE_WRITE_URL` or `_CONFIG_FILE`, with
//! `WITHINGS_REMOTE_WRITE_INSTANCE`). The scraped gauges stay as they are; this adds the
//! samples at their own times.
//!
//! It is the backfill, run again and again over a short window: every account's histories
//! (measures, activity, sleep, workouts, ECGs: whichever collectors are on) from a little
//! before where the last run stopped to [`SETTLE_SECONDS`] ago, through the same client, its
//! budget and its 601 pause, the same series and the same choice among samples. Values that
//! Withings may still revise (a day's steps, a night's summary) are written only once the
//! day is settled, stamped at its end as the file backfill does, so nothing is written twice
//! with a different value.
//!
//! Nothing is lost: each account's cursor (the time up to which the store acknowledged every
//! sample) is kept in `.remote-write.json` beside the tokens and moves only when a run was
//! written whole. A receiver that is down, or an exporter that restarts, costs nothing but
//! a later run: Withings keeps the history, and the next run reads again from the cursor.
//! Each run also reads [`LATE_SECONDS`] before the cursor, for readings that reach
//! Withings late (a watch that syncs the next day); the store takes the same value at the
//! same time again without harm.

use super::{Options, Target, run_remote};
use crate::account::tokens::TokenSource;
use crate::app::App;
use crate::backfill::openmetrics::HEAD_SECONDS;
use crate::collector::Emit;
use crate::remote_write::Writer;
use crate::remote_write::proto::{Label, Sample, TimeSeries};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long after a sample's time it is written: Withings revises a day's activity until
/// the day is over and synced, and a night's summary in the morning; 12 hours after a day's
/// end both have settled.
pub const SETTLE_SECONDS: i64 = 12 * 3600;

/// How far before its cursor each run reads again, for readings that reach Withings late
/// (a blood-pressure monitor or a watch out of reach of its phone syncs days later).
pub const LATE_SECONDS: i64 = 2 * 86_400;

/// The file of the cursors, beside the tokens.
pub const CURSORS_FILE: &str = ".remote-write.json";

/// The shortest time between two runs of one account.
pub const MIN_CYCLE: Duration = Duration::from_secs(3600);

/// The share of the request budget the writer plans for: a run of every account takes at
/// most this share of an hour's budget, and an account waits while less than half of the
/// minute's budget is free, so that probes keep theirs.
const BUDGET_SHARE: u32 = 4;

const CURSOR_METRIC: &str = "withings_remote_write_written_until_timestamp_seconds";
const RUNS_METRIC: &str = "withings_remote_write_account_runs_total";

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(
        "WITHINGS_REMOTE_WRITE_INSTANCE is not set: the series the exporter writes must carry the instance label Prometheus gives the scraped ones to join them; set it to the host:port Prometheus scrapes (for example withings-exporter:19100)"
    )]
    NoInstance,
    #[error("cannot register the remote writer's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Each account's cursor: every sample up to this unix time is in the store.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursors {
    accounts: BTreeMap<String, i64>,
}

/// Where the cursors are kept (none: in memory only, for tokens given in variables).
struct Store {
    path: Option<PathBuf>,
    cursors: Cursors,
}

impl Store {
    /// Reads the file; one that cannot be read is reported and replaced at the next
    /// success, its accounts starting again from a day before settled.
    fn open(path: Option<PathBuf>) -> Self {
        let cursors = match &path {
            Some(p) => match crate::files::read_regular_file(p, 1 << 20) {
                Ok((bytes, _)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    tracing::error!(file = %p.display(), error = %e, "the remote writer's cursors cannot be read; each account starts again from two days before its settled time, and the file is written anew at the next success");
                    Cursors::default()
                }),
                Err(crate::files::ReadRefusal::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    Cursors::default()
                }
                Err(e) => {
                    tracing::error!(file = %p.display(), error = ?e, "the remote writer's cursors cannot be read; each account starts again from two days before its settled time");
                    Cursors::default()
                }
            },
            None => Cursors::default(),
        };
        Self { path, cursors }
    }

    fn get(&self, account: &str) -> Option<i64> {
        self.cursors.accounts.get(account).copied()
    }

    /// Moves `account`'s cursor and saves the file (0600, replaced whole).
    fn set(&mut self, account: &str, until: i64) -> std::io::Result<()> {
        self.cursors.accounts.insert(account.to_owned(), until);
        let Some(path) = &self.path else {
            return Ok(());
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // tempfile makes it 0600; the rename replaces the file whole.
        let mut temp = tempfile::Builder::new()
            .prefix(".remote-write-")
            .suffix(".tmp")
            .tempfile_in(dir)?;
        serde_json::to_writer(&mut temp, &self.cursors)?;
        temp.as_file().sync_all()?;
        temp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The writer of a running exporter.
pub struct Live {
    app: Arc<App>,
    writer: Writer,
    labels: Vec<(&'static str, String)>,
    store: Store,
    written_until: IntGaugeVec,
    runs: IntCounterVec,
}

/// What one run of one account did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Written up to this unix time.
    Written(i64),
    /// Not run (its token file cannot be used).
    Skipped,
    /// Failed; its cursor stays where it was.
    Failed,
}

impl Live {
    /// The writer for `app`, its cursors in `cursors` (see
    /// [`crate::config::AccountsConfig::beside_tokens`]); its metrics and the writer's join
    /// the exporter's own.
    pub fn new(
        app: Arc<App>,
        writer: Writer,
        job: Option<&str>,
        instance: Option<&str>,
        cursors: Option<PathBuf>,
        registry: &Registry,
    ) -> Result<Self, LiveError> {
        let instance = instance
            .filter(|i| !i.is_empty())
            .ok_or(LiveError::NoInstance)?;
        let written_until = IntGaugeVec::new(
            Opts::new(
                CURSOR_METRIC,
                "Unix time up to which every sample of the account is in the remote-write store; time() minus it is how far behind the account is (at least the 12 hours a day takes to settle).",
            ),
            &["account"],
        )?;
        let runs = IntCounterVec::new(
            Opts::new(
                RUNS_METRIC,
                "Runs of the remote writer for each account, by result: ok (written and acknowledged), failed (the cursor stays; the next run reads again from it).",
            ),
            &["account", "result"],
        )?;
        registry.register(Box::new(written_until.clone()))?;
        registry.register(Box::new(runs.clone()))?;
        writer.register(registry)?;
        let store = Store::open(cursors);
        for (account, until) in &store.cursors.accounts {
            written_until.with_label_values(&[account]).set(*until);
        }
        Ok(Self {
            app,
            writer,
            labels: vec![
                ("job", job.unwrap_or(super::DEFAULT_JOB).to_owned()),
                ("instance", instance.to_owned()),
            ],
            store,
            written_until,
            runs,
        })
    }

    /// One run of `account`: its histories from [`LATE_SECONDS`] before its cursor (or, the
    /// first time, before the settled time) to [`SETTLE_SECONDS`] ago.
    pub async fn run_account(&mut self, account: &crate::account::Account) -> Run {
        if matches!(account.tokens(), TokenSource::Unusable(_)) {
            return Run::Skipped;
        }
        let name = account.name().to_owned();
        let settled = self.app.clock().unix_seconds() - SETTLE_SECONDS;
        let from = self.store.get(&name).unwrap_or(settled).min(settled) - LATE_SECONDS;
        let options = Options {
            settings: self.app.collector_settings().clone(),
            since: Some(from.max(0)),
            // The backfill leaves out the head block's last hours before `now`: here the
            // samples after the settled time.
            now: settled + HEAD_SECONDS,
            progress: false,
            collectors: self.app.collectors().clone(),
            target_labels: self.labels.clone(),
        };
        let target = Target {
            label: self.app.is_directory().then(|| name.clone()),
            name: name.clone(),
            tokens: account.tokens().clone(),
        };
        match run_remote(self.app.client(), &[target], &options, &self.writer).await {
            Ok(summary) => {
                if let Err(e) = self.store.set(&name, settled) {
                    // Written, but the cursor is not saved: a restart writes these again,
                    // the same values at the same times.
                    tracing::warn!(account = %name, error = %e, "the remote writer's cursor cannot be saved; after a restart this account's recent history is written again (harmless)");
                }
                self.written_until.with_label_values(&[&name]).set(settled);
                self.runs.with_label_values(&[&name, "ok"]).inc();
                tracing::debug!(account = %name, samples = summary.samples(), "remote write: written up to the settled time");
                Run::Written(settled)
            }
            Err(e) => {
                self.runs.with_label_values(&[&name, "failed"]).inc();
                tracing::warn!(account = %name, error = %e, "remote write of this account failed; nothing is lost: the next run reads again from where the store has every sample");
                Run::Failed
            }
        }
    }

    /// How long one round of every account may take: at least [`MIN_CYCLE`], and long
    /// enough that its requests (about one per history collector and account, three for a
    /// history read a day a request) stay within a quarter of an hour's budget.
    pub fn cycle(&self, accounts: usize) -> Duration {
        // A history of bounded requests (a day of intraday samples) reads the run's window
        // (the late-sync days and about a day more) in several.
        let per_account: u64 = self
            .app
            .collectors()
            .iter()
            .filter_map(|c| c.history())
            .map(|h| match h.max_span() {
                Some(span) => {
                    let window = u64::try_from(LATE_SECONDS + 86_400).unwrap_or(u64::MAX);
                    window.div_ceil(u64::try_from(span).unwrap_or(1).max(1))
                }
                None => 1,
            })
            .sum::<u64>()
            .max(1);
        let per_hour = u64::from(self.app.limits().budget.per_minute()) * 60;
        let requests = accounts as u64 * per_account;
        let hours = (requests * u64::from(BUDGET_SHARE)).div_ceil(per_hour.max(1));
        MIN_CYCLE.max(Duration::from_secs(3600 * hours))
    }

    /// Runs every account in turn, forever: a round every [`Self::cycle`], each account
    /// waiting while less than half of the minute's budget is free.
    pub async fn run(mut self) {
        loop {
            let accounts = self.app.accounts();
            let cycle = self.cycle(accounts.len());
            let started = tokio::time::Instant::now();
            for account in &accounts {
                self.wait_for_budget().await;
                self.run_account(account).await;
            }
            tokio::time::sleep_until(started + cycle).await;
        }
    }

    async fn wait_for_budget(&self) {
        let budget = &self.app.limits().budget;
        while budget.free() * 2 < budget.per_minute() as usize {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Samples waiting for the immediate path at most; beyond, they are left to the settled
/// run (counted).
const QUEUE: usize = 20_000;

/// One sample waiting to be written: its labels (`__name__` included) and its time.
struct Pending {
    labels: Vec<(String, String)>,
    at: i64,
    value: f64,
}

/// The immediate path: samples Withings will not revise (a watch's intraday samples, a
/// night's minutes), written the moment a fetch reads them, so that a late sync reaches the
/// store within seconds. Best effort: a sample it cannot write (the queue is full, the
/// receiver is down) is written anyway by the settled run 12 hours on.
pub struct Immediate {
    tx: tokio::sync::mpsc::Sender<Pending>,
    labels: Vec<(&'static str, String)>,
    account_label: bool,
    dropped: IntCounter,
}

impl Emit for Immediate {
    fn sample(
        &self,
        account: &str,
        family: (&'static str, &'static str),
        labels: &[(&'static str, &str)],
        at: i64,
        value: f64,
    ) {
        let mut all: Vec<(String, String)> = Vec::with_capacity(labels.len() + 4);
        all.push(("__name__".to_owned(), family.0.to_owned()));
        all.extend(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        if self.account_label {
            all.push(("account".to_owned(), account.to_owned()));
        }
        all.extend(
            self.labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone())),
        );
        all.sort();
        if self
            .tx
            .try_send(Pending {
                labels: all,
                at,
                value,
            })
            .is_err()
        {
            self.dropped.inc();
        }
    }
}

impl Immediate {
    /// The immediate path of `writer` for `app` (labels as [`Live`]'s), and the task that
    /// writes what it is handed, in batches of what has arrived meanwhile.
    pub fn new(
        app: &App,
        writer: Writer,
        job: Option<&str>,
        instance: Option<&str>,
        registry: &Registry,
    ) -> Result<(Arc<Self>, impl std::future::Future<Output = ()> + use<>), LiveError> {
        let instance = instance
            .filter(|i| !i.is_empty())
            .ok_or(LiveError::NoInstance)?;
        let dropped = IntCounter::with_opts(Opts::new(
            "withings_remote_write_immediate_dropped_total",
            "Final samples (intraday, a night's minutes) the immediate path could not queue; the settled run writes them 12 hours on.",
        ))?;
        registry.register(Box::new(dropped.clone()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let immediate = Arc::new(Self {
            tx,
            labels: vec![
                ("job", job.unwrap_or(super::DEFAULT_JOB).to_owned()),
                ("instance", instance.to_owned()),
            ],
            account_label: app.is_directory(),
            dropped,
        });
        Ok((immediate, write_as_handed(writer, rx)))
    }
}

/// Writes the samples handed to the immediate path: each batch what has arrived while the
/// last was sent, a series' samples in time order, one value a time.
async fn write_as_handed(writer: Writer, mut rx: tokio::sync::mpsc::Receiver<Pending>) {
    let max = writer.options().max_samples_per_send.max(1);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut series: BTreeMap<Vec<(String, String)>, BTreeMap<i64, f64>> = BTreeMap::new();
        for p in batch {
            series.entry(p.labels).or_default().insert(p.at, p.value);
        }
        let series: Vec<TimeSeries> = series
            .into_iter()
            .map(|(labels, samples)| TimeSeries {
                labels: labels
                    .into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect(),
                samples: samples
                    .into_iter()
                    .map(|(at, value)| Sample {
                        value,
                        timestamp: at.saturating_mul(1000),
                    })
                    .collect(),
            })
            .collect();
        if let Err(e) = writer.send(series, Vec::new()).await {
            tracing::debug!(error = %e, "remote write: the immediate path could not write a batch; the settled run writes it later");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursors_are_kept_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CURSORS_FILE);
        let mut store = Store::open(Some(path.clone()));
        assert_eq!(store.get("mom"), None);
        store.set("mom", 1_700_000_000).unwrap();
        store.set("dad", 1_700_000_500).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = Store::open(Some(path.clone()));
        assert_eq!(again.get("mom"), Some(1_700_000_000));
        assert_eq!(again.get("dad"), Some(1_700_000_500));
        // A broken file starts afresh rather than stopping the writer.
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(Store::open(Some(path)).get("mom"), None);
        // Without a place beside the tokens, in memory only.
        let mut memory = Store::open(None);
        memory.set("default", 5).unwrap();
        assert_eq!(memory.get("default"), Some(5));
    }
}
