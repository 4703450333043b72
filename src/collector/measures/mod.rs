//! `measures`: `getmeas` (`{api}/measure`), the default collector: the latest value of every
//! measurement (weight, blood pressure, body composition, segments...).
//!
//! The first sync reads the whole history page by page, later ones ask for what changed
//! since the last answer (`lastupdate`), and every page is merged into the latest values as
//! it comes. Its rooms: the measure table ([`table`]), the answer ([`model`]), which
//! readings a group gives ([`readings`]), the latest values ([`state`]) and their families
//! ([`families`]).

pub mod families;
pub mod model;
pub mod readings;
pub mod state;
pub mod table;

use self::families::{TIMESTAMP_HELP, TIMESTAMP_METRIC, vital_families};
use self::model::{GetmeasPage, GetmeasQuery, parse_getmeas, window_request};
use self::readings::{MergeOptions, MergeStats, Reading, Slot, group_readings, version_of};
use self::state::LatestState;
use self::table::{MEASURES, position_name};
use super::{
    Collector, Fetch, History, HistoryPage, MAX_PAGES, SYNC_OVERLAP_SECONDS, Settings, Sink, State,
    Synced, Version, Window, lock,
};
use crate::withings::paging::{BoxFuture, Pager};
use crate::withings::{ApiError, Request, RequestError};
use prometheus::proto::MetricFamily;
use std::sync::Mutex;

pub use self::model::getmeas;

/// The `measures` collector.
pub struct Measures;

impl Collector for Measures {
    fn name(&self) -> &'static str {
        "measures"
    }
    fn scope(&self) -> &'static str {
        "user.metrics"
    }
    fn applis(&self) -> &'static [i64] {
        &[1, 2, 4]
    }
    fn action(&self) -> &'static str {
        model::ACTION
    }
    fn leads(&self) -> bool {
        true
    }
    fn state(&self, settings: &Settings) -> Box<dyn State> {
        Box::new(Live {
            meastypes: settings.meastypes.clone(),
            options: MergeOptions {
                include_ambiguous: settings.include_ambiguous,
            },
            latest: Mutex::new(LatestState::default()),
            cursor: tokio::sync::Mutex::new(SyncCursor::default()),
        })
    }
    fn history(&self) -> Option<&dyn History> {
        Some(self)
    }
}

/// Where the incremental sync stands. Kept apart from the readings so that renders never
/// wait for a fetch in progress.
#[derive(Debug, Default)]
struct SyncCursor {
    /// `updatetime` of the first page of the last complete sync; `None` until one completes.
    updatetime: Option<i64>,
    /// A correction retired a latest reading: the next sync reads the whole history again,
    /// into a fresh state, because the reading that now is the latest was sent long ago.
    rebuild: bool,
}

/// One account's latest readings.
struct Live {
    meastypes: String,
    options: MergeOptions,
    latest: Mutex<LatestState>,
    /// Held for a whole sync, so that two syncs never interleave their pages and cursors.
    cursor: tokio::sync::Mutex<SyncCursor>,
}

impl State for Live {
    fn sync<'a>(&'a self, fetch: &'a Fetch<'a>) -> BoxFuture<'a, Result<Synced, RequestError>> {
        Box::pin(self.sync_pages(fetch))
    }

    fn families(&self) -> Vec<MetricFamily> {
        vital_families(&lock(&self.latest))
    }
}

impl Live {
    async fn sync_pages(&self, fetch: &Fetch<'_>) -> Result<Synced, RequestError> {
        let mut cursor = self.cursor.lock().await;
        let lastupdate = match cursor.updatetime {
            Some(t) if !cursor.rebuild => (t - SYNC_OVERLAP_SECONDS).max(0),
            _ => 0,
        };
        // A rebuild fills a fresh state and swaps it in only when complete, so that scrapes
        // meanwhile keep the readings they had.
        let mut rebuilt = cursor.rebuild.then(LatestState::default);
        let mut pager = Pager::new(MAX_PAGES);
        let mut first_updatetime = None;
        let mut total = Synced::default();
        loop {
            let query = GetmeasQuery {
                meastypes: self.meastypes.clone(),
                lastupdate,
                offset: pager.offset(),
            };
            let page = fetch.call(&query.request(), parse_getmeas).await?;
            first_updatetime = first_updatetime.or(page.updatetime);
            fetch.skip("malformed", page.malformed_groups);
            // Pages are merged as they come: a reading is true whether or not the rest of
            // the history arrives, and merging is idempotent if the sync is redone.
            let now = fetch.now();
            let stats = match rebuilt.as_mut() {
                Some(fresh) => fresh.merge_at(&page.groups, self.options, now),
                None => lock(&self.latest).merge_at(&page.groups, self.options, now),
            };
            if stats.needs_full_sync && rebuilt.is_none() {
                tracing::info!(
                    account = %fetch.account,
                    "Withings corrected a measure group that held a latest reading; reading the whole history again"
                );
                cursor.rebuild = true;
            }
            count_skipped(fetch, &stats);
            total.groups += stats.groups;
            total.updated += stats.updated;
            if !pager.turn(page.more, page.offset)? {
                break;
            }
        }
        // Only a complete sync moves the cursor; a failed one is redone from the old cursor.
        cursor.updatetime = Some(first_updatetime.unwrap_or_else(|| fetch.now()));
        if let Some(fresh) = rebuilt {
            *lock(&self.latest) = fresh;
            cursor.rebuild = false;
        }
        Ok(total)
    }
}

fn count_skipped(fetch: &Fetch<'_>, stats: &MergeStats) {
    for (reason, n) in [
        ("inconclusive", stats.skipped_inconclusive),
        ("ambiguous", stats.skipped_ambiguous),
        ("out_of_range", stats.skipped_out_of_range),
        ("not_a_measure", stats.skipped_not_real),
        ("implausible", stats.skipped_implausible),
        ("future", stats.skipped_future),
        ("unknown_position", stats.skipped_unknown_position),
    ] {
        fetch.skip(reason, n);
    }
}

impl History for Measures {
    /// Groups are selected by their date in unix seconds, so the window before the first
    /// devices (readings entered by hand with an old date) is read too.
    fn by_days(&self) -> bool {
        false
    }
    fn rows(&self) -> &'static str {
        "groups"
    }
    fn request(&self, settings: &Settings, window: Window<'_>, offset: Option<i64>) -> Request {
        window_request(&settings.meastypes, window.span, offset)
    }
    fn parse(&self, body: &[u8]) -> Result<Box<dyn HistoryPage>, ApiError> {
        Ok(Box::new(parse_getmeas(body)?))
    }
}

impl HistoryPage for GetmeasPage {
    /// Every reading the live exporter would have taken from these groups, by its filters,
    /// at its date; the backfill keeps only each group's newest version.
    fn write(&self, settings: &Settings, now: i64, out: &mut dyn Sink) -> std::io::Result<usize> {
        let options = MergeOptions {
            include_ambiguous: settings.include_ambiguous,
        };
        let mut stats = MergeStats::default();
        for group in &self.groups {
            out.saw_version(group.grpid, version_of(group));
            let mut failed = None;
            group_readings(group, options, now, &mut stats, |slot, reading| {
                if failed.is_none()
                    && let Err(e) = write_reading(out, slot, &reading)
                {
                    failed = Some(e);
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(self.groups.len())
    }
}

/// One reading as the live exporter exposes it: its value in the measure's family with the
/// same labels, and its date in `withings_measurement_timestamp_seconds`.
fn write_reading(out: &mut dyn Sink, slot: Slot, reading: &Reading) -> std::io::Result<()> {
    let Some(def) = MEASURES.get(slot.index) else {
        return Ok(());
    };
    let position = slot.position.and_then(position_name);
    let version = Version::Group {
        grpid: reading.grpid,
        modified: reading.modified,
    };
    let mut labels: Vec<(&'static str, &str)> = def.labels.to_vec();
    if let Some(position) = position {
        labels.push(("position", position));
    }
    labels.push(("device_id", &reading.device_id));
    labels.push(("device_model", &reading.device_model));
    out.sample(
        (def.metric, def.help),
        &labels,
        reading.date,
        version,
        reading.value,
    )?;
    let mut labels = vec![("measurement", def.measurement)];
    if let Some(position) = position {
        labels.push(("position", position));
    }
    out.sample(
        (TIMESTAMP_METRIC, TIMESTAMP_HELP),
        &labels,
        reading.date,
        version,
        reading.date as f64,
    )
}
