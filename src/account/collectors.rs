//! One person's collectors: the state of each enabled one, fetched in the order of
//! [`crate::collector::ALL`], through the same client and budget.
//!
//! A collector whose endpoint refuses the token for lack of a scope reports
//! `withings_collector_up{collector} 0` and tells the operator once to authorize again; the
//! other collectors, and the account's `withings_up`, carry on. The leading collector
//! (`measures`) is the exception: its failure, whatever it is, is the fetch's.

use super::{Account, FetchError, Wake};
use crate::collector::{Collector, Fetch, Settings, State, Synced, lock, missing_scope_hint};
use crate::render::families::gauge_by_label;
use crate::withings::{KeptToken, RequestError, StatusClass};
use prometheus::proto::MetricFamily;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// The enabled collectors of one account, their states, and how each last went.
pub(super) struct Collectors {
    enabled: Vec<(&'static dyn Collector, Box<dyn State>)>,
    /// Whether each enabled collector's last fetch worked; absent before its first.
    up: Mutex<BTreeMap<&'static str, bool>>,
    /// Collectors already reported as lacking a scope: one line, not one per fetch.
    scope_reported: Mutex<BTreeSet<&'static str>>,
}

impl Collectors {
    pub(super) fn new(enabled: &crate::collector::Collectors, settings: &Settings) -> Self {
        Self {
            enabled: enabled.iter().map(|c| (c, c.state(settings))).collect(),
            up: Mutex::new(BTreeMap::new()),
            scope_reported: Mutex::new(BTreeSet::new()),
        }
    }
}

impl Account {
    /// Fetches every enabled collector that `wake` names. The leading one goes first and its failure is the
    /// fetch's; the others run only once it worked (after a refused token they would each
    /// fail the same way). Of the others, the first failure that is not a missing scope is
    /// returned, after the rest have had their turn: one collector's trouble does not hold
    /// back another's data.
    pub(super) async fn sync_collectors(&self, wake: &Wake) -> Result<Synced, FetchError> {
        let tokens = KeptToken::new(&self.tokens);
        let fetch = Fetch {
            account: &self.name,
            client: &self.client,
            tokens: &tokens,
            clock: &self.clock,
            skipped: &self.groups_skipped,
            emit: self.emit.get().map(|e| e.as_ref()),
        };
        let mut total = Synced::default();
        let mut first_error = None;
        let (leading, others): (Vec<_>, Vec<_>) = self
            .collectors
            .enabled
            .iter()
            .filter(|(c, _)| wake.runs(*c))
            .partition(|(c, _)| c.leads());
        for (collector, state) in leading.into_iter().chain(others) {
            let outcome = match state.sync(&fetch).await.map_err(|e| self.fetch_error(e)) {
                // Held back by the budget before any request went out: nothing is known of
                // this collector, and the others would be held back the same way.
                Err(e) if e.held_back() => return Err(e),
                outcome => outcome,
            };
            if !collector.leads()
                && let Err(e @ FetchError::Token(_)) = outcome
            {
                // No token to be had says nothing of this collector: it keeps its last
                // `withings_collector_up`, and the others would fail the same way.
                return Err(e);
            }
            lock(&self.collectors.up).insert(collector.name(), outcome.is_ok());
            match outcome {
                Ok(synced) => {
                    lock(&self.collectors.scope_reported).remove(collector.name());
                    total.groups += synced.groups;
                    total.updated += synced.updated;
                }
                Err(e) if collector.leads() => return Err(e),
                Err(e) => {
                    let missing_scope = matches!(
                        &e,
                        FetchError::Api(api) if api.class() == Some(StatusClass::Unauthorized)
                    );
                    if missing_scope {
                        if lock(&self.collectors.scope_reported).insert(collector.name()) {
                            tracing::warn!(
                                account = %self.name,
                                collector = collector.name(),
                                error = %e,
                                "{}",
                                missing_scope_hint(*collector, &self.name)
                            );
                        }
                    } else if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
        }
        first_error.map_or(Ok(total), Err)
    }

    /// What a failed request means for the account.
    fn fetch_error(&self, e: RequestError) -> FetchError {
        match e {
            RequestError::Api(api) => FetchError::Api(api),
            // Only a fixed token has no source of fresh ones.
            RequestError::Rejected(api) => FetchError::FixedTokenRejected(api),
            RequestError::Token(t) => FetchError::Token(t),
            // Withings refused the token just now and no other can be used: whatever kept
            // the refresh from helping, the token is not valid.
            RequestError::Refresh(t) => {
                lock(&self.health).token_valid = Some(false);
                FetchError::Token(t)
            }
            RequestError::EndlessPagination(pages) => FetchError::EndlessPagination(pages),
        }
    }

    /// The collectors' families and `withings_collector_up`.
    pub(super) fn collector_families(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        let mut up: Vec<(&str, f64)> = Vec::new();
        let states = lock(&self.collectors.up).clone();
        for (collector, state) in &self.collectors.enabled {
            if let Some(ok) = states.get(collector.name()) {
                up.push((collector.name(), if *ok { 1.0 } else { 0.0 }));
            }
            out.extend(state.families());
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

impl std::fmt::Debug for Collectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.enabled.iter().map(|(c, _)| c.name()))
            .finish()
    }
}
