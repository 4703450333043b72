//! One person: a Withings account's token source, one state per enabled collector, and the
//! shared fetch. Nothing here is shared with another account but the Withings client, whose
//! limits (the request budget and the 601 pause) belong to the application.
//!
//! A probe runs one way: probe → account → collector → client (budget) → Withings → merge
//! → render.

mod collectors;
pub mod flight;
pub mod token_store;
pub mod tokens;

pub use crate::collector::SYNC_OVERLAP_SECONDS;

use self::flight::{Missed, SingleFlight, Ticket};
use self::tokens::{TokenError, TokenSource};
use crate::clock::Clock;
use crate::collector::Synced;
use crate::config::{AccountsConfig, CollectorsConfig, ConfigError, WithingsConfig};
use crate::render::exposition::{Pieces, StateCache};
use crate::render::families::{self, single_gauge};
use crate::withings::{ApiError, WithingsClient};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts, Registry};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, watch};

/// How long a probe still waits for its fetch once the exporter shuts down: well inside the
/// time the server drains connections, so the answer always goes out.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What one account's fetch needs beyond its token.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// What the collectors read from the configuration.
    pub collector: crate::collector::Settings,
    /// `WITHINGS_MIN_FETCH_INTERVAL_SECONDS`.
    pub min_fetch_interval: Duration,
    /// Cap on the budget a scrape-timeout header gives: `WITHINGS_TIMEOUT_SECONDS`.
    pub scrape_budget_cap: Duration,
    /// `WITHINGS_COLLECTORS`: which kinds of data each fetch brings.
    pub collectors: crate::collector::Collectors,
}

impl AccountSettings {
    pub fn from_config(
        accounts: &AccountsConfig,
        collectors: &CollectorsConfig,
        withings: &WithingsConfig,
    ) -> Result<Self, ConfigError> {
        let (enabled, collector) = crate::collector::check(collectors)?;
        Ok(Self {
            collector,
            min_fetch_interval: accounts.min_fetch_interval,
            scrape_budget_cap: withings.upstream_timeout,
            collectors: enabled,
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Withings refused a fixed `WITHINGS_ACCESS_TOKEN`, which nothing here can renew.
    #[error(
        "{0}; a fixed WITHINGS_ACCESS_TOKEN stops working 3 hours after it was issued: to have the exporter refresh tokens itself, set WITHINGS_CLIENT_ID, WITHINGS_CLIENT_SECRET and WITHINGS_TOKEN_FILE, run `withings-exporter auth` once, and unset WITHINGS_ACCESS_TOKEN"
    )]
    FixedTokenRejected(ApiError),
    #[error("Withings kept answering `more` after {0} pages; the sync was abandoned")]
    EndlessPagination(usize),
    #[error(
        "the scrape's time budget of {0:?} ran out before Withings answered; the fetch goes on in the background"
    )]
    ScrapeDeadline(Duration),
    #[error("the exporter is shutting down; serving the last known values")]
    ShuttingDown,
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

    /// True when this fetch never reached Withings because the application held it back.
    pub fn held_back(&self) -> bool {
        matches!(self, Self::Api(e) if e.not_sent())
    }
}

/// Which of an account's collectors a fetch runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Wake {
    /// Every enabled collector: a scrape's fetch, a safety poll, an account not subscribed.
    #[default]
    All,
    /// Only the collectors these notification `appli` codes announce new data for: a push
    /// about a night costs the sleep requests, not the day's, the ECGs' and the goals'.
    Applis(BTreeSet<i64>),
}

impl Wake {
    /// Whether a fetch woken this way runs `collector`.
    pub fn runs(&self, collector: &dyn crate::collector::Collector) -> bool {
        match self {
            Self::All => true,
            Self::Applis(applis) => collector.applis().iter().any(|a| applis.contains(a)),
        }
    }
}

/// The application's say on whether an account may start a fetch now, and which of its
/// collectors that fetch runs: its fair share of the request budget, and what the
/// notifications announced. Asked only when a fetch would really start.
pub trait Admission: Send + Sync {
    /// `None`: no fetch now.
    fn admit(&self, account: &str) -> Option<Wake>;

    /// Told where a probe's data comes from as soon as that is known, before any wait.
    fn served(&self, _account: &str, _from: ServedFrom) {}

    /// Why `admit` said no, as the probe's `served_from`.
    fn refused_as(&self, _account: &str) -> ServedFrom {
        ServedFrom::Budget
    }
}

/// Admits every fetch; the budget in the client still bounds them.
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(&self, _account: &str) -> Option<Wake> {
        Some(Wake::All)
    }
}

/// Where a probe's data came from, the `served_from` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedFrom {
    /// Started a fetch from Withings.
    NewFetch,
    /// Joined a fetch already running for this account.
    SharedFetch,
    /// Served the last fetch, sooner than WITHINGS_MIN_FETCH_INTERVAL_SECONDS after it.
    RecentFetch,
    /// No fetch: every account waits out a 601.
    RateLimited,
    /// No fetch: the request budget is spent, or other accounts with older data go first.
    Budget,
    /// No fetch: the account's notification subscriptions are in place and neither a
    /// notification nor the safety poll asks for one (issue 12).
    Subscribed,
}

impl ServedFrom {
    pub const ALL: [Self; 6] = [
        Self::NewFetch,
        Self::SharedFetch,
        Self::RecentFetch,
        Self::RateLimited,
        Self::Budget,
        Self::Subscribed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewFetch => "new_fetch",
            Self::SharedFetch => "shared_fetch",
            Self::RecentFetch => "recent_fetch",
            Self::RateLimited => "rate_limited",
            Self::Budget => "budget",
            Self::Subscribed => "subscribed",
        }
    }
}

/// How one probe's fetch went.
#[derive(Debug)]
pub struct ProbeOutcome {
    pub result: Result<Synced, FetchError>,
    pub duration: Duration,
    pub served_from: ServedFrom,
}

/// Facts about the last answers, exposed as gauges and on the landing page.
#[derive(Debug, Default, Clone)]
pub struct Health {
    /// `None` until Withings has said anything about the token.
    pub token_valid: Option<bool>,
    pub last_success: Option<f64>,
    /// The last fetch's error, in one line; `None` after a success.
    pub last_error: Option<String>,
}

pub struct Account {
    name: String,
    client: WithingsClient,
    tokens: TokenSource,
    settings: AccountSettings,
    collectors: collectors::Collectors,
    health: Mutex<Health>,
    registry: Registry,
    groups_skipped: IntCounterVec,
    clock: Clock,
    flights: SingleFlight<Result<Synced, FetchError>>,
    /// Bounds how many accounts fetch at once, shared by the application's accounts.
    fetch_slots: Arc<Semaphore>,
    /// Turns true when the exporter shuts down: waiting probes answer at once.
    shutdown: watch::Receiver<bool>,
    emit: Arc<std::sync::OnceLock<Arc<dyn crate::collector::Emit>>>,
    /// [`Self::state_families`], encoded once per fetch or change of the token source.
    exposed: StateCache<TokenMark>,
}

/// What the token source shows, which changes outside a fetch too (a refresh for a
/// notification subscription): its expiry and how many refreshes it attempted.
type TokenMark = (Option<i64>, u64);

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What an account needs from the application.
#[derive(Clone)]
pub struct Shared {
    /// Where final samples go as fetches read them, once the application is told.
    pub emit: Arc<std::sync::OnceLock<Arc<dyn crate::collector::Emit>>>,
    pub client: WithingsClient,
    pub clock: Clock,
    pub fetch_slots: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
}

impl Account {
    pub fn new(
        name: impl Into<String>,
        tokens: TokenSource,
        settings: AccountSettings,
        shared: Shared,
    ) -> Self {
        let registry = Registry::new();
        let groups_skipped = IntCounterVec::new(
            Opts::new(
                "withings_groups_skipped_total",
                "Measure groups or measures received from Withings and not used, by reason (counted each time they are received).",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(groups_skipped.clone()))
            .expect("first registration");
        tokens.register(&registry).expect("first registration");
        Self {
            name: name.into(),
            // A fetch the request budget held back before anything went out says nothing
            // of the account: the probes served its last fetch keep the last real result.
            flights: SingleFlight::new(shared.clock.clone(), settings.min_fetch_interval)
                .keeping_only_news(|r| !matches!(r, Err(e) if e.held_back())),
            client: shared.client,
            clock: shared.clock,
            fetch_slots: shared.fetch_slots,
            shutdown: shared.shutdown,
            emit: shared.emit,
            tokens,
            collectors: collectors::Collectors::new(&settings.collectors, &settings.collector),
            settings,
            health: Mutex::new(Health::default()),
            registry,
            groups_skipped,
            exposed: StateCache::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    pub fn health(&self) -> Health {
        lock(&self.health).clone()
    }

    /// The clock behind the fetch interval; tests advance it.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A probe: brings the account up to date if the application admits a fetch, waiting
    /// at most `budget` (and never more than `WITHINGS_TIMEOUT_SECONDS`); past it, or when
    /// no fetch may start, the answer has the last known values. Concurrent probes share
    /// one fetch; see [`flight`].
    pub async fn probe(
        self: &Arc<Self>,
        admission: &dyn Admission,
        budget: Option<Duration>,
    ) -> ProbeOutcome {
        let started = Instant::now();
        let (result, served_from) = self.shared_fetch(admission, budget).await;
        if served_from != ServedFrom::NewFetch && served_from != ServedFrom::SharedFetch {
            admission.served(&self.name, served_from);
        }
        ProbeOutcome {
            result,
            duration: started.elapsed(),
            served_from,
        }
    }

    async fn shared_fetch(
        self: &Arc<Self>,
        admission: &dyn Admission,
        budget: Option<Duration>,
    ) -> (Result<Synced, FetchError>, ServedFrom) {
        if let Some(left) = self.client.limits().pause.remaining() {
            return (
                Err(FetchError::Api(ApiError::Paused(left))),
                ServedFrom::RateLimited,
            );
        }
        let account = Arc::clone(self);
        let ticket = self.flights.ticket_if(
            || admission.admit(&self.name),
            move |wake| async move { account.fetch_woken(&wake).await },
        );
        let mut result = match ticket {
            Ticket::Recent(result) => return (result, ServedFrom::RecentFetch),
            // Held back by the budget: the last fetch's result stands, and `served_from`
            // tells why nothing new came. An account never fetched has nothing to stand on.
            Ticket::Refused(last) => {
                let result = last.unwrap_or(Err(FetchError::Api(ApiError::BudgetExhausted(
                    Duration::ZERO,
                ))));
                return (result, admission.refused_as(&self.name));
            }
            Ticket::Wait { result, started } => {
                let source = if started {
                    ServedFrom::NewFetch
                } else {
                    ServedFrom::SharedFetch
                };
                admission.served(&self.name, source);
                (result, source)
            }
        };
        let served_from = result.1;
        // Without a budget (no scrape-timeout header) the probe waits for the fetch, whose
        // every request is bounded by WITHINGS_TIMEOUT_SECONDS; that way the fetch's own
        // timeout, not a race with it, decides what a slow upstream is reported as.
        let budget = budget.map(|b| b.min(self.settings.scrape_budget_cap));
        let mut shutdown = self.shutdown.clone();
        let waited = tokio::select! {
            waited = flight::wait(&mut result.0, budget) => Some(waited),
            _ = shutdown.wait_for(|down| *down) => None,
        };
        // Shutting down: a fetch about to finish still gets to, but one waiting on a slow
        // Withings is not waited for; the probe is answered with the last known values
        // while its connection is still being drained.
        let outcome = match waited {
            Some(waited) => waited,
            None => match tokio::time::timeout(SHUTDOWN_GRACE, flight::wait(&mut result.0, budget))
                .await
            {
                Ok(waited) => waited,
                Err(_) => return (Err(FetchError::ShuttingDown), served_from),
            },
        };
        let result = match outcome {
            Ok(result) => result,
            Err(Missed::Deadline) => {
                let budget = budget.unwrap_or_default();
                tracing::warn!(
                    account = %self.name,
                    budget_seconds = budget.as_secs_f64(),
                    "Withings did not answer within the scrape's budget; serving the last known values"
                );
                Err(FetchError::ScrapeDeadline(budget))
            }
            Err(Missed::Abandoned) => Err(FetchError::Abandoned),
        };
        (result, served_from)
    }

    /// Brings the state up to date with Withings. Never panics and never loses state: a
    /// failure leaves the last known readings in place.
    pub async fn fetch(&self) -> Result<Synced, FetchError> {
        self.fetch_woken(&Wake::All).await
    }

    /// [`Account::fetch`] of the collectors `wake` names.
    pub async fn fetch_woken(&self, wake: &Wake) -> Result<Synced, FetchError> {
        // Everything a fetch changes is exposed: scrapes meanwhile render afresh, and the
        // first one after it encodes the new state.
        let _changing = self.exposed.changing();
        // The semaphore is never closed; without a permit the fetch would still be bounded
        // by the budget, so going on is safe.
        let _slot = self.fetch_slots.acquire().await.ok();
        let result = self.sync_collectors(wake).await;
        let mut health = lock(&self.health);
        match &result {
            Ok(_) => {
                health.token_valid = Some(true);
                health.last_success = Some(self.clock.unix_seconds_f64());
                health.last_error = None;
            }
            // Held back before anything was sent: nothing new is known about this account.
            Err(e) if e.held_back() => {}
            Err(e) => {
                // A refused refresh token means no token works until a re-authorization.
                if matches!(e, FetchError::Api(api) | FetchError::FixedTokenRejected(api) if api.is_auth_failure())
                    || matches!(e, FetchError::Token(t) if t.is_permanent())
                {
                    health.token_valid = Some(false);
                }
                health.last_error = Some(crate::text::one_line(&e.to_string()).into_owned());
                // A 601 was logged where it was answered, in the client.
                if !matches!(e, FetchError::Api(ApiError::Status { status: 601, .. })) {
                    tracing::warn!(
                        account = %self.name,
                        status = e.status_label().as_deref().unwrap_or("none"),
                        error = %e,
                        "fetching measures from Withings failed; serving the last known values"
                    );
                }
            }
        }
        result
    }

    /// This account's families: its readings and how its token and fetches stand, and with
    /// an outcome that probe's `withings_up`, duration and source.
    pub fn families(&self, outcome: Option<&ProbeOutcome>) -> Vec<MetricFamily> {
        let build_started = Instant::now();
        let mut out = self.state_families();
        if let Some(outcome) = outcome {
            for (name, help, label, value) in scrape_samples(outcome, build_started) {
                out.push(match label {
                    Some((label, label_value)) => {
                        families::labelled_gauge(name, help, label, label_value, value)
                    }
                    None => single_gauge(name, help, value),
                });
            }
        }
        out
    }

    /// [`Self::families`] as encoded pieces: those from state as encoded at the last change
    /// of it, and the scrape's own (to which the caller may add more).
    pub fn exposition(&self, outcome: Option<&ProbeOutcome>) -> (Arc<Pieces>, Pieces) {
        let build_started = Instant::now();
        let mark = (self.tokens.expiry(), self.tokens.refresh_attempts());
        let state = self.exposed.get(mark, || self.state_families());
        let mut scrape = Pieces::new();
        if let Some(outcome) = outcome {
            for (name, help, label, value) in scrape_samples(outcome, build_started) {
                let label = label.as_ref().map(std::slice::from_ref);
                scrape.push_gauge(name, help, [(label.unwrap_or_default(), value)]);
            }
        }
        (state, scrape)
    }

    /// Everything this account shows that only a fetch or the token source changes.
    fn state_families(&self) -> Vec<MetricFamily> {
        let mut out = self.registry.gather();
        out.extend(self.collector_families());
        let health = lock(&self.health).clone();
        if let Some(valid) = health.token_valid {
            out.push(single_gauge(
                "withings_token_valid",
                "1 when Withings accepted the access token at the last request, 0 when it answered an authentication failure (absent until Withings has answered).",
                if valid { 1.0 } else { 0.0 },
            ));
        }
        if let Some(t) = health.last_success {
            out.push(single_gauge(
                "withings_last_success_timestamp_seconds",
                "Unix time of the last successful fetch from Withings.",
                t,
            ));
        }
        if let Some(expiry) = self.tokens.expiry() {
            out.push(single_gauge(
                "withings_token_expiry_timestamp_seconds",
                "Unix time the current access token expires.",
                expiry as f64,
            ));
        }
        out
    }
}

pub(crate) use crate::lock::lock;

/// One scrape's own gauges, `(name, help, label, value)`: `withings_up`, its source and
/// its duration (to now from `build_started`).
type ScrapeSample = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    f64,
);

fn scrape_samples(outcome: &ProbeOutcome, build_started: Instant) -> [ScrapeSample; 3] {
    [
        (
            "withings_up",
            "1 when the fetch from Withings behind this scrape succeeded, 0 when it failed, ran out of the scrape's time or was held back by a rate limit (the values are then the last known ones). Concurrent scrapes share one fetch; a scrape served from the last fetch (WITHINGS_MIN_FETCH_INTERVAL_SECONDS, or the request budget) reports that fetch's result.",
            None,
            if outcome.result.is_ok() { 1.0 } else { 0.0 },
        ),
        (
            "withings_scrape_served_from",
            "Where this scrape's data came from (always 1): new_fetch, shared_fetch (joined a running fetch), recent_fetch (under WITHINGS_MIN_FETCH_INTERVAL_SECONDS), rate_limited (waiting out a 601), budget (the request budget is spent for now or accounts with older data go first), subscribed (notifications are in place: fetched on notification and by the safety poll only).",
            Some(("served_from", outcome.served_from.as_str())),
            1.0,
        ),
        (
            "withings_scrape_duration_seconds",
            "Time this scrape spent waiting for Withings (or for the fetch it shared) and building the answer; near 0 when it was served the last fetch.",
            None,
            (outcome.duration + build_started.elapsed()).as_secs_f64(),
        ),
    ]
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
