//! One scrape: fetch what changed from Withings, merge it into the latest-values state,
//! and render the exposition. Data flows one way: scrape → fetch → merge → render.

use crate::collector::{self, single_gauge};
use crate::config::Config;
use crate::state::{LatestState, MergeOptions, MergeStats};
use crate::tokens::TokenSource;
use crate::withings::{ApiError, ClientOptions, GetmeasQuery, WithingsClient};
use prometheus::{IntCounterVec, Opts, Registry};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use url::Url;

/// How far before the previous answer's `updatetime` an incremental fetch starts, so that a
/// group uploaded while that answer was being built is not missed.
pub const SYNC_OVERLAP_SECONDS: i64 = 300;

/// A sync that keeps saying `more` past this many pages is a broken upstream, not a history.
const MAX_PAGES: usize = 1000;

/// What the exporter needs beyond the token.
#[derive(Debug, Clone)]
pub struct ExporterSettings {
    pub api_url: Url,
    pub meastypes: String,
    pub include_ambiguous: bool,
    pub client: ClientOptions,
}

impl ExporterSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            api_url: config.api_url.clone(),
            meastypes: config.meastypes_param(),
            include_ambiguous: config.include_ambiguous,
            client: ClientOptions {
                request_timeout: config.upstream_timeout,
                ..ClientOptions::default()
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Token(#[from] crate::tokens::TokenError),
    #[error("Withings kept answering `more` after {0} pages; the sync was abandoned")]
    EndlessPagination(usize),
}

impl FetchError {
    fn status_label(&self) -> Option<String> {
        match self {
            Self::Api(e) => Some(e.status_label()),
            _ => None,
        }
    }
}

/// Where the incremental sync stands. Kept apart from the readings so that renders never
/// wait for a fetch in progress.
#[derive(Debug, Default)]
struct SyncCursor {
    /// `updatetime` of the first page of the last complete sync; `None` until one completes.
    updatetime: Option<i64>,
}

/// Facts about the last answers, exposed as gauges.
#[derive(Debug, Default)]
struct Health {
    /// `None` until Withings has said anything about the token.
    token_valid: Option<bool>,
    last_success: Option<f64>,
}

pub struct Exporter {
    client: WithingsClient,
    tokens: TokenSource,
    meastypes: String,
    merge_options: MergeOptions,
    state: Mutex<LatestState>,
    health: Mutex<Health>,
    /// Held for a whole sync, so that two syncs never interleave their pages and cursors.
    cursor: tokio::sync::Mutex<SyncCursor>,
    registry: Registry,
    api_requests: IntCounterVec,
    groups_skipped: IntCounterVec,
}

/// How one scrape's fetch went.
#[derive(Debug)]
pub struct ScrapeOutcome {
    pub result: Result<MergeStats, FetchError>,
    pub duration: Duration,
}

impl Exporter {
    pub fn new(settings: ExporterSettings, tokens: TokenSource) -> Result<Self, ApiError> {
        let client = WithingsClient::new(&settings.api_url, settings.client)?;
        let registry = Registry::new();
        let api_requests = IntCounterVec::new(
            Opts::new(
                "withings_api_requests_total",
                "Requests made to the Withings API, by action and answer: the body status, or http_error, timeout, transport_error, invalid_response.",
            ),
            &["action", "status"],
        )
        .expect("static metric definition");
        let groups_skipped = IntCounterVec::new(
            Opts::new(
                "withings_groups_skipped_total",
                "Measure groups or measures received from Withings and not used, by reason (counted each time they are received).",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(api_requests.clone()))
            .expect("first registration");
        registry
            .register(Box::new(groups_skipped.clone()))
            .expect("first registration");
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new(
                "withings_exporter_build_info",
                "Always 1; the version label tells which exporter is running.",
            ),
            &["version"],
        )
        .expect("static metric definition");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry
            .register(Box::new(build_info))
            .expect("first registration");
        tokens.register(&registry).expect("first registration");
        Ok(Self {
            client,
            tokens,
            meastypes: settings.meastypes,
            merge_options: MergeOptions {
                include_ambiguous: settings.include_ambiguous,
            },
            state: Mutex::new(LatestState::default()),
            health: Mutex::new(Health::default()),
            cursor: tokio::sync::Mutex::new(SyncCursor::default()),
            registry,
            api_requests,
            groups_skipped,
        })
    }

    /// A scrape: sync with Withings, then render everything.
    pub async fn scrape(&self) -> String {
        let outcome = self.fetch().await;
        self.render(Some(&outcome))
    }

    /// Brings the state up to date with Withings. Never panics and never loses state: a
    /// failure leaves the last known readings in place.
    pub async fn fetch(&self) -> ScrapeOutcome {
        let started = Instant::now();
        let result = self.sync().await;
        match &result {
            Ok(_) => {
                let mut health = lock(&self.health);
                health.token_valid = Some(true);
                health.last_success = Some(unix_now_f64());
            }
            Err(e) => {
                // A refused refresh token means no token works until a re-authorization.
                if matches!(e, FetchError::Api(api) if api.is_auth_failure())
                    || matches!(e, FetchError::Token(t) if t.is_permanent())
                {
                    lock(&self.health).token_valid = Some(false);
                }
                tracing::warn!(
                    status = e.status_label().as_deref().unwrap_or("none"),
                    error = %e,
                    "fetching measures from Withings failed; serving the last known values"
                );
            }
        }
        ScrapeOutcome {
            result,
            duration: started.elapsed(),
        }
    }

    async fn sync(&self) -> Result<MergeStats, FetchError> {
        let mut cursor = self.cursor.lock().await;
        let lastupdate = cursor
            .updatetime
            .map_or(0, |t| (t - SYNC_OVERLAP_SECONDS).max(0));
        let mut token = self.tokens.access_token().await?;
        let mut retried_auth = false;
        let mut offset = None;
        let mut first_updatetime = None;
        let mut total = MergeStats::default();
        let mut pages = 0;
        loop {
            let query = GetmeasQuery {
                meastypes: self.meastypes.clone(),
                lastupdate,
                offset,
            };
            let answer = self.client.getmeas(&token, &query).await;
            self.count_request("getmeas", &answer);
            let page = match answer {
                Ok(page) => page,
                Err(e) if e.is_auth_failure() && !retried_auth => {
                    // One retry with a fresh token, if the source can make one.
                    retried_auth = true;
                    match self.tokens.after_auth_failure(&token).await? {
                        Some(fresh) => {
                            token = fresh;
                            continue;
                        }
                        None => return Err(e.into()),
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
            let stats = lock(&self.state).merge(&page.groups, self.merge_options);
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
        cursor.updatetime = Some(first_updatetime.unwrap_or_else(unix_now));
        Ok(total)
    }

    fn count_request<T>(&self, action: &str, answer: &Result<T, ApiError>) {
        let status = match answer {
            Ok(_) => "0".to_owned(),
            Err(e) => e.status_label(),
        };
        self.api_requests
            .with_label_values(&[action, status.as_str()])
            .inc();
    }

    fn count_skipped(&self, stats: &MergeStats) {
        for (reason, n) in [
            ("inconclusive", stats.skipped_inconclusive),
            ("ambiguous", stats.skipped_ambiguous),
            ("out_of_range", stats.skipped_out_of_range),
            ("not_a_measure", stats.skipped_not_real),
        ] {
            if n > 0 {
                self.groups_skipped
                    .with_label_values(&[reason])
                    .inc_by(n as u64);
            }
        }
    }

    /// The exposition. With an outcome, it includes that scrape's `withings_up` and duration;
    /// without (a HEAD request, say), only the state.
    pub fn render(&self, outcome: Option<&ScrapeOutcome>) -> String {
        let build_started = Instant::now();
        let mut families = self.registry.gather();
        families.extend(collector::vital_families(&lock(&self.state)));
        let health = lock(&self.health);
        if let Some(valid) = health.token_valid {
            families.push(single_gauge(
                "withings_token_valid",
                "1 when Withings accepted the access token at the last request, 0 when it answered an authentication failure (absent until Withings has answered).",
                if valid { 1.0 } else { 0.0 },
            ));
        }
        if let Some(t) = health.last_success {
            families.push(single_gauge(
                "withings_last_success_timestamp_seconds",
                "Unix time of the last successful fetch from Withings.",
                t,
            ));
        }
        drop(health);
        if let Some(expiry) = self.tokens.expiry() {
            families.push(single_gauge(
                "withings_token_expiry_timestamp_seconds",
                "Unix time the current access token expires.",
                expiry as f64,
            ));
        }
        if let Some(outcome) = outcome {
            families.push(single_gauge(
                "withings_up",
                "1 when this scrape's fetch from Withings succeeded, 0 when it failed (the vitals are then the last known ones).",
                if outcome.result.is_ok() { 1.0 } else { 0.0 },
            ));
            families.push(single_gauge(
                "withings_scrape_duration_seconds",
                "Time this scrape spent fetching from Withings and building the answer.",
                (outcome.duration + build_started.elapsed()).as_secs_f64(),
            ));
        }
        collector::encode(families)
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data (readings,
/// flags) is still consistent, so keep serving rather than cascade the panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
