//! One person's incremental fetch: the first sync reads the whole history page by page, later
//! ones ask for what changed since the last answer (`lastupdate`), and every page is merged
//! into the latest values as it comes.

use super::state::{LatestState, MergeStats};
use super::{Account, FetchError, lock};
use crate::withings::GetmeasQuery;

/// How far before the previous answer's `updatetime` an incremental fetch starts, so that a
/// group uploaded while that answer was being built is not missed.
pub const SYNC_OVERLAP_SECONDS: i64 = 300;

/// A sync that keeps saying `more` past this many pages is a broken upstream, not a history.
const MAX_PAGES: usize = 1000;

/// Where the incremental sync stands. Kept apart from the readings so that renders never
/// wait for a fetch in progress.
#[derive(Debug, Default)]
pub(super) struct SyncCursor {
    /// `updatetime` of the first page of the last complete sync; `None` until one completes.
    updatetime: Option<i64>,
    /// A correction retired a latest reading: the next sync reads the whole history again,
    /// into a fresh state, because the reading that now is the latest was sent long ago.
    rebuild: bool,
}

impl Account {
    pub(super) async fn sync(&self) -> Result<MergeStats, FetchError> {
        let mut cursor = self.cursor.lock().await;
        let lastupdate = match cursor.updatetime {
            Some(t) if !cursor.rebuild => (t - SYNC_OVERLAP_SECONDS).max(0),
            _ => 0,
        };
        // A rebuild fills a fresh state and swaps it in only when complete, so that scrapes
        // meanwhile keep the readings they had.
        let mut rebuilt = cursor.rebuild.then(LatestState::default);
        let mut token = self.tokens.access_token().await?;
        let mut retried_auth = false;
        let mut offset = None;
        let mut first_updatetime = None;
        let mut total = MergeStats::default();
        let mut pages = 0;
        loop {
            let query = GetmeasQuery {
                meastypes: self.settings.meastypes.clone(),
                lastupdate,
                offset,
            };
            let page = match self.client.getmeas(&token, &query).await {
                Ok(page) => page,
                Err(e) if e.is_auth_failure() && !retried_auth => {
                    // One retry with a fresh token, if the source can make one.
                    retried_auth = true;
                    match self.tokens.after_auth_failure(&token).await {
                        Ok(Some(fresh)) => {
                            token = fresh;
                            continue;
                        }
                        // Only a fixed token has no source of fresh ones.
                        Ok(None) => return Err(FetchError::FixedTokenRejected(e)),
                        // Withings refused the token just now and no other can be used:
                        // whatever kept the refresh from helping, the token is not valid.
                        Err(refresh) => {
                            lock(&self.health).token_valid = Some(false);
                            return Err(refresh.into());
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            };
            pages += 1;
            first_updatetime = first_updatetime.or(page.updatetime);
            if page.malformed_groups > 0 {
                self.groups_skipped
                    .with_label_values(&["malformed"])
                    .inc_by(page.malformed_groups as u64);
            }
            // Pages are merged as they come: a reading is true whether or not the rest of
            // the history arrives, and merging is idempotent if the sync is redone.
            let now = self.clock.unix_seconds();
            let options = self.settings.merge_options;
            let stats = match rebuilt.as_mut() {
                Some(fresh) => fresh.merge_at(&page.groups, options, now),
                None => lock(&self.state).merge_at(&page.groups, options, now),
            };
            if stats.needs_full_sync && rebuilt.is_none() {
                tracing::info!(
                    account = %self.name,
                    "Withings corrected a measure group that held a latest reading; reading the whole history again"
                );
                cursor.rebuild = true;
            }
            self.count_skipped(&stats);
            total.groups += stats.groups;
            total.updated += stats.updated;
            if !page.more {
                break;
            }
            match page.offset {
                Some(next) if offset.is_none_or(|o| next > o) && pages < MAX_PAGES => {
                    offset = Some(next);
                }
                _ => return Err(FetchError::EndlessPagination(pages)),
            }
        }
        // Only a complete sync moves the cursor; a failed one is redone from the old cursor.
        cursor.updatetime = Some(first_updatetime.unwrap_or_else(|| self.clock.unix_seconds()));
        if let Some(fresh) = rebuilt {
            *lock(&self.state) = fresh;
            cursor.rebuild = false;
        }
        Ok(total)
    }

    fn count_skipped(&self, stats: &MergeStats) {
        for (reason, n) in [
            ("inconclusive", stats.skipped_inconclusive),
            ("ambiguous", stats.skipped_ambiguous),
            ("out_of_range", stats.skipped_out_of_range),
            ("not_a_measure", stats.skipped_not_real),
            ("implausible", stats.skipped_implausible),
            ("future", stats.skipped_future),
            ("unknown_position", stats.skipped_unknown_position),
        ] {
            if n > 0 {
                self.groups_skipped
                    .with_label_values(&[reason])
                    .inc_by(n as u64);
            }
        }
    }
}
