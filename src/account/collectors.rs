//! One person's activity, sleep and devices: the collectors beside `measures` that the
//! operator turns on with `WITHINGS_COLLECTORS`. Each costs one request per fetch (more while a
//! first sync pages), through the same client and budget as `getmeas`.
//!
//! A collector whose endpoint refuses the token for lack of a scope reports
//! `withings_collector_up{collector} 0` and tells the operator once to authorize again; the
//! other collectors, and the account's `withings_up`, carry on.

use super::{Account, FetchError, lock};
use crate::collector::activity::ActivityState;
use crate::collector::devices::DevicesState;
use crate::collector::sleep::SleepState;
use crate::collector::{Collector, Merged, SyncError, fetch_pages};
use crate::render::families::gauge_by_label;
use crate::secret::Secret;
use crate::withings::{ApiError, StatusClass};
use prometheus::proto::MetricFamily;
use std::collections::{BTreeMap, BTreeSet};

/// The states of the collectors other than `measures`, and how each last went.
#[derive(Debug, Default)]
pub(super) struct Extras {
    activity: ActivityState,
    sleep: SleepState,
    devices: DevicesState,
    /// Whether each enabled collector's last fetch worked; absent before its first.
    up: BTreeMap<Collector, bool>,
    /// Collectors already reported as lacking a scope: one line, not one per fetch.
    scope_reported: BTreeSet<Collector>,
}

impl Account {
    /// Fetches every enabled collector but `measures`. The first failure that is not a
    /// missing scope is returned, after the others have had their turn: one collector's
    /// trouble does not hold back another's data.
    pub(super) async fn sync_extras(&self) -> Result<(), FetchError> {
        let collectors: Vec<Collector> = self
            .settings
            .collectors
            .iter()
            .filter(|c| *c != Collector::Measures)
            .collect();
        if collectors.is_empty() {
            return Ok(());
        }
        let token = self.tokens.access_token().await?;
        let mut first_error = None;
        for collector in collectors {
            let outcome = self.sync_one(collector, &token).await;
            let mut extras = lock(&self.extras);
            match outcome {
                Ok(malformed) => {
                    extras.up.insert(collector, true);
                    extras.scope_reported.remove(&collector);
                    drop(extras);
                    if malformed > 0 {
                        self.groups_skipped
                            .with_label_values(&["malformed"])
                            .inc_by(malformed as u64);
                    }
                }
                Err(e) => {
                    extras.up.insert(collector, false);
                    let missing_scope = matches!(
                        &e,
                        FetchError::Api(api) if api.class() == Some(StatusClass::Unauthorized)
                    );
                    if missing_scope {
                        if extras.scope_reported.insert(collector) {
                            tracing::warn!(
                                account = %self.name,
                                collector = collector.name(),
                                error = %e,
                                "{}",
                                collector.missing_scope_hint(&self.name)
                            );
                        }
                    } else if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One collector's sync; merges under the lock only once the pages are in, so that no
    /// lock is held across a request. Returns the count of malformed rows skipped.
    async fn sync_one(&self, collector: Collector, token: &Secret) -> Result<usize, FetchError> {
        let now = self.clock.unix_seconds();
        let merged: Vec<Merged> = match collector {
            Collector::Measures => return Ok(0),
            Collector::Activity => {
                let first = lock(&self.extras).activity.query(now);
                let pages = fetch_pages(first, |q| async move {
                    self.client.getactivity(token, &q).await
                })
                .await
                .map_err(sync_error)?;
                let mut extras = lock(&self.extras);
                pages
                    .into_iter()
                    .map(|p| extras.activity.merge(p))
                    .collect()
            }
            Collector::Sleep => {
                let first = lock(&self.extras).sleep.query(now);
                let pages = fetch_pages(first, |q| async move {
                    self.client.getsleepsummary(token, &q).await
                })
                .await
                .map_err(sync_error)?;
                let mut extras = lock(&self.extras);
                pages.into_iter().map(|p| extras.sleep.merge(p)).collect()
            }
            Collector::Devices => {
                let page = self.client.getdevice(token).await?;
                vec![lock(&self.extras).devices.merge(page)]
            }
        };
        Ok(merged.iter().map(|m| m.malformed).sum())
    }

    /// The collectors' families and `withings_collector_up`.
    pub(super) fn extra_families(&self, measures_up: Option<bool>) -> Vec<MetricFamily> {
        let extras = lock(&self.extras);
        let mut out = Vec::new();
        let mut up: Vec<(&str, f64)> = Vec::new();
        for collector in self.settings.collectors.iter() {
            let state = match collector {
                Collector::Measures => measures_up,
                other => extras.up.get(&other).copied(),
            };
            if let Some(state) = state {
                up.push((collector.name(), if state { 1.0 } else { 0.0 }));
            }
            match collector {
                Collector::Measures => {}
                Collector::Activity => out.extend(extras.activity.families()),
                Collector::Sleep => out.extend(extras.sleep.families()),
                Collector::Devices => out.extend(extras.devices.families()),
            }
        }
        if !up.is_empty() {
            out.push(gauge_by_label(
                "withings_collector_up",
                "1 when the collector's last fetch from Withings worked, 0 when it failed (for a missing scope, run `withings-exporter auth --account NAME` again); absent before its first fetch.",
                "collector",
                up,
            ));
        }
        out
    }
}

fn sync_error(e: SyncError<ApiError>) -> FetchError {
    match e {
        SyncError::Fetch(api) => FetchError::Api(api),
        SyncError::EndlessPagination(pages) => FetchError::EndlessPagination(pages),
    }
}
