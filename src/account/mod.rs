//! One scrape: fetch what changed from Withings, merge it into the latest-values state,
//! and render the exposition. Data flows one way: scrape → fetch → merge → render.

pub mod flight;
pub mod state;
pub mod token_store;
pub mod tokens;

use self::flight::{Missed, SingleFlight, Ticket};
use self::state::{LatestState, MergeOptions, MergeStats};
use self::tokens::TokenSource;
use crate::clock::Clock;
use crate::config::Config;
use crate::render::families::{self, single_gauge};
use crate::withings::ratelimit::RateLimiter;
use crate::withings::{ApiError, ClientOptions, GetmeasQuery, StatusClass, WithingsClient};
use prometheus::{IntCounterVec, Opts, Registry};
use std::sync::{Arc, Mutex};
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
    /// `WITHINGS_MIN_FETCH_INTERVAL_SECONDS`.
    pub min_fetch_interval: Duration,
}

impl ExporterSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            api_url: config.api_url.clone(),
            meastypes: config.meastypes_param(),
            include_ambiguous: config.include_ambiguous,
            client: ClientOptions {
                request_timeout: config.upstream_timeout,
                connect_timeout: config.connect_timeout,
                max_body_bytes: config.max_response_bytes,
            },
            min_fetch_interval: config.min_fetch_interval,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Token(#[from] self::tokens::TokenError),
    /// Withings refused a fixed `WITHINGS_ACCESS_TOKEN`, which nothing here can renew.
    #[error(
        "{0}; a fixed WITHINGS_ACCESS_TOKEN stops working 3 hours after it was issued: to have the exporter refresh tokens itself, set WITHINGS_CLIENT_ID, WITHINGS_CLIENT_SECRET and WITHINGS_TOKEN_FILE, run `withings-exporter auth` once, and unset WITHINGS_ACCESS_TOKEN"
    )]
    FixedTokenRejected(ApiError),
    #[error("Withings kept answering `more` after {0} pages; the sync was abandoned")]
    EndlessPagination(usize),
    #[error("Withings answered 601 (too many requests); no request is made for another {0:.0?}")]
    RateLimited(Duration),
    #[error(
        "the scrape's time budget of {0:?} ran out before Withings answered; the fetch goes on in the background"
    )]
    ScrapeDeadline(Duration),
    #[error("the fetch from Withings ended without a result")]
    Abandoned,
}

impl FetchError {
    fn status_label(&self) -> Option<String> {
        match self {
            Self::Api(e) | Self::FixedTokenRejected(e) => Some(e.status_label()),
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
    /// A correction retired a latest reading: the next sync reads the whole history again,
    /// into a fresh state, because the reading that now is the latest was sent long ago.
    rebuild: bool,
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
    clock: Clock,
    rate_limit: RateLimiter,
    flights: SingleFlight<Result<MergeStats, FetchError>>,
    /// Cap on the budget a scrape-timeout header gives: `WITHINGS_TIMEOUT_SECONDS`.
    scrape_budget: Duration,
    scrapes: IntCounterVec,
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
                "Requests made to the Withings API, by action and answer: the body status, or http_error, timeout, transport_error, invalid_response, too_large (over WITHINGS_MAX_RESPONSE_BYTES).",
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
        let scrapes = IntCounterVec::new(
            Opts::new(
                "withings_scrapes_total",
                "Scrapes of /metrics by where their data came from: new_fetch (started a fetch from Withings), shared_fetch (joined a fetch already running), recent_fetch (served the last fetch, sooner than WITHINGS_MIN_FETCH_INTERVAL_SECONDS after it), rate_limited (no fetch: backing off after a 601).",
            ),
            &["served_from"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(scrapes.clone()))
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
        let clock = Clock::default();
        Ok(Self {
            scrape_budget: client.options().request_timeout,
            rate_limit: RateLimiter::new(clock.clone()),
            flights: SingleFlight::new(clock.clone(), settings.min_fetch_interval),
            clock,
            scrapes,
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
    pub async fn scrape(self: &Arc<Self>) -> String {
        self.scrape_within(None).await
    }

    /// A scrape that waits for Withings at most `budget` (and never more than
    /// `WITHINGS_TIMEOUT_SECONDS`); past it, the answer has the last known values and
    /// `withings_up 0`. Concurrent scrapes share one fetch; see [`self::flight`].
    pub async fn scrape_within(self: &Arc<Self>, budget: Option<Duration>) -> String {
        let started = Instant::now();
        let result = self.shared_fetch(budget).await;
        self.render(Some(&ScrapeOutcome {
            result,
            duration: started.elapsed(),
        }))
    }

    async fn shared_fetch(
        self: &Arc<Self>,
        budget: Option<Duration>,
    ) -> Result<MergeStats, FetchError> {
        if let Some(left) = self.rate_limit.remaining() {
            self.scrapes.with_label_values(&["rate_limited"]).inc();
            return Err(FetchError::RateLimited(left));
        }
        let exporter = Arc::clone(self);
        let ticket = self
            .flights
            .ticket(move || async move { exporter.fetch().await.result });
        let mut result = match ticket {
            Ticket::Recent(result) => {
                self.scrapes.with_label_values(&["recent_fetch"]).inc();
                return result;
            }
            Ticket::Wait { result, started } => {
                let source = if started { "new_fetch" } else { "shared_fetch" };
                self.scrapes.with_label_values(&[source]).inc();
                result
            }
        };
        // Without a budget (no scrape-timeout header) the scrape waits for the fetch, whose
        // every request is bounded by WITHINGS_TIMEOUT_SECONDS; that way the fetch's own
        // timeout, not a race with it, decides what a slow upstream is reported as.
        let budget = budget.map(|b| b.min(self.scrape_budget));
        match flight::wait(&mut result, budget).await {
            Ok(result) => result,
            Err(Missed::Deadline) => {
                let budget = budget.unwrap_or_default();
                tracing::warn!(
                    budget_seconds = budget.as_secs_f64(),
                    "Withings did not answer within the scrape's budget; serving the last known values"
                );
                Err(FetchError::ScrapeDeadline(budget))
            }
            Err(Missed::Abandoned) => Err(FetchError::Abandoned),
        }
    }

    /// The clock behind the fetch interval and the rate-limit backoff; tests advance it.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Brings the state up to date with Withings. Never panics and never loses state: a
    /// failure leaves the last known readings in place. While backing off after a 601 it
    /// makes no request at all.
    pub async fn fetch(&self) -> ScrapeOutcome {
        let started = Instant::now();
        if let Some(left) = self.rate_limit.remaining() {
            return ScrapeOutcome {
                result: Err(FetchError::RateLimited(left)),
                duration: started.elapsed(),
            };
        }
        let result = self.sync().await;
        // One line per failure: a 601 gets its own, which says what happens next.
        let mut logged = false;
        match &result {
            Err(
                e @ FetchError::Api(ApiError::Status {
                    class: StatusClass::RateLimited,
                    wait_seconds,
                    ..
                }),
            ) => {
                let wait = self.rate_limit.rate_limited(*wait_seconds);
                tracing::warn!(
                    status = e.status_label().as_deref().unwrap_or("none"),
                    wait_seconds = wait.as_secs_f64(),
                    error = %e,
                    "Withings is rate-limiting this application; no request until the wait has passed, serving the last known values meanwhile"
                );
                logged = true;
            }
            _ => self.rate_limit.answered(),
        }
        match &result {
            Ok(_) => {
                let mut health = lock(&self.health);
                health.token_valid = Some(true);
                health.last_success = Some(unix_now_f64());
            }
            Err(e) => {
                // A refused refresh token means no token works until a re-authorization.
                if matches!(e, FetchError::Api(api) | FetchError::FixedTokenRejected(api) if api.is_auth_failure())
                    || matches!(e, FetchError::Token(t) if t.is_permanent())
                {
                    lock(&self.health).token_valid = Some(false);
                }
                if !logged {
                    tracing::warn!(
                        status = e.status_label().as_deref().unwrap_or("none"),
                        error = %e,
                        "fetching measures from Withings failed; serving the last known values"
                    );
                }
            }
        }
        ScrapeOutcome {
            result,
            duration: started.elapsed(),
        }
    }

    async fn sync(&self) -> Result<MergeStats, FetchError> {
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
            let stats = match rebuilt.as_mut() {
                Some(fresh) => fresh.merge(&page.groups, self.merge_options),
                None => lock(&self.state).merge(&page.groups, self.merge_options),
            };
            if stats.needs_full_sync && rebuilt.is_none() {
                tracing::info!(
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
        cursor.updatetime = Some(first_updatetime.unwrap_or_else(unix_now));
        if let Some(fresh) = rebuilt {
            *lock(&self.state) = fresh;
            cursor.rebuild = false;
        }
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
        families.extend(families::vital_families(&lock(&self.state)));
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
        let resume_at = self.rate_limit.resume_at_unix();
        families.push(single_gauge(
            "withings_rate_limited",
            "1 while the exporter makes no request to Withings because it answered 601 (too many requests), 0 otherwise.",
            if resume_at.is_some() { 1.0 } else { 0.0 },
        ));
        if let Some(at) = resume_at {
            families.push(single_gauge(
                "withings_rate_limit_resume_timestamp_seconds",
                "Unix time requests to Withings resume after a 601 (present only while backing off).",
                at,
            ));
        }
        if let Some(outcome) = outcome {
            families.push(single_gauge(
                "withings_up",
                "1 when the fetch from Withings behind this scrape succeeded, 0 when it failed, ran out of the scrape's time or was held back by a rate limit (the vitals are then the last known ones). Concurrent scrapes share one fetch, and with WITHINGS_MIN_FETCH_INTERVAL_SECONDS a scrape sooner than that after the last fetch reports that fetch's result.",
                if outcome.result.is_ok() { 1.0 } else { 0.0 },
            ));
            families.push(single_gauge(
                "withings_scrape_duration_seconds",
                "Time this scrape spent waiting for Withings (or for the fetch it shared) and building the answer; near 0 when it was served the last fetch under WITHINGS_MIN_FETCH_INTERVAL_SECONDS.",
                (outcome.duration + build_started.elapsed()).as_secs_f64(),
            ));
        }
        families::encode(families)
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
