//! What belongs to the application rather than to one person: the set of accounts and its
//! directory watcher ([`accounts`]), which account may fetch when ([`admission`]: the fair
//! share of the request budget and the notification schedule), the
//! Withings client every account uses (whose limits are the application's), and the
//! exporter's own metrics.

pub mod accounts;
pub mod admission;

use crate::account::tokens::{ClientCredentials, TokenSetupError, TokenSource};
use crate::account::{Account, AccountSettings, Admission, ProbeOutcome, ServedFrom, Shared, Wake};
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::render::exposition::{self, Pieces, Sampled};
use crate::withings::{ApiError, Limits, WithingsClient};
use accounts::{AccountSet, ScanReport};
use admission::schedule::Schedule;
use admission::share::FairShare;
use admission::{Gate, Notifications};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts, Registry};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// How often the token directory is read again: well within the 10 seconds in which a new
/// account file must be picked up.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(3);
/// How many accounts fetch at once. Each fetch is bounded by the scrape budget and the
/// request budget; the bound keeps a thousand accounts probed at once from opening a
/// thousand connections.
pub const MAX_CONCURRENT_FETCHES: usize = 32;
/// The name of the one account of `WITHINGS_TOKEN_FILE`/`WITHINGS_ACCESS_TOKEN`, for
/// `/probe?account=default` and the landing page.
pub const SINGLE_ACCOUNT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tokens(#[from] TokenSetupError),
    #[error("cannot set up the Withings client: {0}")]
    Client(ApiError),
    #[error(
        "cannot read WITHINGS_TOKEN_DIR {path}: {cause}; create it (mode 0700) and run `withings-exporter auth --account NAME` to add an account"
    )]
    TokenDir {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// How much of a refused account name a 400 repeats.
const MAX_ECHOED_NAME_CHARS: usize = 64;

/// One warning at start when the token directory can be written by its group or by others:
/// they could put a token file of their own there (an account the exporter would serve) or
/// swap one.
fn warn_if_others_can_write(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            tracing::warn!(
                path = %dir.display(),
                "the token directory can be written by other users (mode {mode:03o}): they could add or replace a token file; chmod 700 it"
            );
        }
    }
}

/// Why a probe was refused; the answer is HTTP 400 with this line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("the account parameter is missing: use /probe?account=NAME")]
    Missing,
    #[error("{0:?} is not an account name: {rule}", rule = accounts::name_rule())]
    Malformed(String),
    #[error("no account {0:?}: add it with `withings-exporter auth --account {0}`")]
    Unknown(String),
    /// Single-account mode: `auth --account` needs a token directory, so it is no advice.
    #[error(
        "no account {0:?}: this exporter serves one account (WITHINGS_TOKEN_FILE or WITHINGS_ACCESS_TOKEN), on /metrics or /probe?account={SINGLE_ACCOUNT}; to serve several people, set WITHINGS_TOKEN_DIR instead and add each with `withings-exporter auth --account NAME`"
    )]
    NotTheSingleAccount(String),
}

/// Where the accounts come from.
enum Source {
    /// `WITHINGS_TOKEN_FILE` or `WITHINGS_ACCESS_TOKEN`: one account, served on `/metrics`.
    Single(Arc<Account>),
    /// `WITHINGS_TOKEN_DIR`.
    Directory {
        set: AccountSet,
        credentials: ClientCredentials,
    },
}

/// How an account stands, for `withings_accounts` and the landing page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountState {
    /// Not fetched yet.
    Pending,
    Ok,
    /// The last fetch failed, for a reason that may pass.
    Failing,
    /// Withings refused the token; a new authorization is needed.
    TokenInvalid,
    /// The token file cannot be used.
    Error,
}

impl AccountState {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Ok,
        Self::Failing,
        Self::TokenInvalid,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ok => "ok",
            Self::Failing => "failing",
            Self::TokenInvalid => "token_invalid",
            Self::Error => "error",
        }
    }

    pub fn of(account: &Account) -> Self {
        if account.tokens().file_problem().is_some() {
            return Self::Error;
        }
        let health = account.health();
        match (health.token_valid, &health.last_error, health.last_success) {
            (Some(false), _, _) => Self::TokenInvalid,
            (_, Some(_), _) => Self::Failing,
            (_, None, Some(_)) => Self::Ok,
            _ => Self::Pending,
        }
    }
}

/// One account as the landing page shows it: no readings, no secrets.
#[derive(Debug, Clone)]
pub struct AccountSummary {
    pub name: String,
    pub state: AccountState,
    pub last_success: Option<f64>,
    pub last_error: Option<String>,
    /// Unix time of the last notification (issue 12).
    pub last_notification: Option<f64>,
}

pub struct App {
    client: WithingsClient,
    shared: Shared,
    settings: AccountSettings,
    source: Source,
    /// Which account may fetch now: the fair share and, with Withings notifications
    /// (WITHINGS_CALLBACK_URL, issue 12), their schedule.
    gate: Gate,
    registry: Registry,
    scrapes: IntCounterVec,
    shutdown: watch::Sender<bool>,
    /// The process' own metrics, read from `/proc` at most once a second.
    process: Sampled,
    process_collector: Option<Box<dyn prometheus::core::Collector>>,
}

const SCRAPES_METRIC: &str = "withings_scrapes_total";
const SCRAPES_HELP: &str = "Scrapes and probes by where their data came from: new_fetch (started a fetch from Withings), shared_fetch (joined a fetch already running), recent_fetch (sooner than WITHINGS_MIN_FETCH_INTERVAL_SECONDS after the last), rate_limited (no fetch: waiting out a 601), budget (no fetch: the request budget is spent, or accounts with older data go first), subscribed (no fetch: the account's notification subscriptions are in place, and neither a notification nor the safety poll asks for one).";

/// How long the process' own metrics are served before `/proc` is read again.
pub const PROCESS_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The process' own metrics (CPU, memory, file descriptors...), where the platform has them.
fn process_collector() -> Option<Box<dyn prometheus::core::Collector>> {
    #[cfg(target_os = "linux")]
    return Some(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ));
    #[cfg(not(target_os = "linux"))]
    None
}

impl App {
    /// The application the configuration asks for: one account, or a directory of them.
    pub fn from_config(config: &Config) -> Result<Self, AppError> {
        Self::from_config_with_clock(config, Clock::default())
    }

    /// [`Self::from_config`] on `clock` (tests pin it with [`Clock::starting_at_unix`]): the
    /// budget, the fetch intervals, the tokens' expiry and every wall-clock reading of the
    /// accounts' fetches follow it.
    pub fn from_config_with_clock(config: &Config, clock: Clock) -> Result<Self, AppError> {
        let client = Self::client_for(config, clock)?;
        let settings =
            || AccountSettings::from_config(&config.accounts, &config.collectors, &config.withings);
        match &config.accounts.token_dir {
            Some(dir) => {
                let credentials = config.client_credentials()?.ok_or_else(|| ConfigError {
                    variable: "WITHINGS_CLIENT_ID",
                    message: "not set; WITHINGS_TOKEN_DIR needs WITHINGS_CLIENT_ID and WITHINGS_CLIENT_SECRET (or WITHINGS_CLIENT_SECRET_FILE) of your Withings application to refresh each account's tokens".into(),
                })?;
                if let Err(cause) = std::fs::read_dir(dir) {
                    return Err(AppError::TokenDir {
                        path: dir.clone(),
                        cause,
                    });
                }
                warn_if_others_can_write(dir);
                Ok(Self::directory(settings()?, client, dir, credentials))
            }
            None => {
                let tokens = TokenSource::from_config(&config.accounts, &config.withings, &client)?;
                Ok(Self::single(settings()?, client, tokens))
            }
        }
    }

    /// One account with the given token source, the rest from `config`.
    pub fn with_tokens(config: &Config, tokens: TokenSource) -> Result<Self, AppError> {
        let client = Self::client_for(config, Clock::default())?;
        Ok(Self::single(
            AccountSettings::from_config(&config.accounts, &config.collectors, &config.withings)?,
            client,
            tokens,
        ))
    }

    /// The application's client, sharing its budget through the token directory's ledger.
    fn client_for(config: &Config, clock: Clock) -> Result<WithingsClient, AppError> {
        WithingsClient::from_config(&config.withings, config.accounts.budget_ledger(), clock)
            .map_err(AppError::Client)
    }

    fn build(
        settings: AccountSettings,
        client: WithingsClient,
        source: impl FnOnce(&AccountSettings, &Shared) -> Source,
    ) -> Self {
        let clock = client.limits().clock.clone();
        let registry = Registry::new();
        let scrapes = IntCounterVec::new(Opts::new(SCRAPES_METRIC, SCRAPES_HELP), &["served_from"])
            .expect("static metric definition");
        for source in ServedFrom::ALL {
            scrapes.with_label_values(&[source.as_str()]);
        }
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
        client
            .limits()
            .register(&registry)
            .expect("first registration");
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Shared {
            emit: Arc::default(),
            client: client.clone(),
            clock: clock.clone(),
            fetch_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_FETCHES)),
            shutdown: shutdown_rx,
        };
        Self {
            source: source(&settings, &shared),
            gate: Gate::new(FairShare::new(
                Arc::clone(client.limits()),
                clock,
                settings.collectors.iter().count(),
            )),
            client,
            shared,
            settings,
            registry,
            scrapes,
            shutdown,
            process: Sampled::new(PROCESS_SAMPLE_INTERVAL),
            process_collector: process_collector(),
        }
    }

    /// Turns notifications on (once): subscribed accounts follow `schedule`, the
    /// notifications' families join each probe and their `outcomes` counter `/metrics`.
    pub fn notifications_on(
        &self,
        schedule: Arc<Schedule>,
        notifications: Arc<dyn Notifications>,
        outcomes: IntCounterVec,
    ) {
        let _ = self.registry.register(Box::new(outcomes));
        self.gate.notifications_on(schedule, notifications);
    }

    /// Which account may fetch now.
    pub fn admission(&self) -> &Gate {
        &self.gate
    }

    /// Turns true when the exporter shuts down.
    pub fn shutting_down(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    fn notify_families(&self, account: &Account) -> Vec<MetricFamily> {
        self.gate
            .notifications()
            .map(|n| n.account_families(account.name()))
            .unwrap_or_default()
    }

    /// One account, served on `/metrics` as before accounts existed.
    pub fn single(settings: AccountSettings, client: WithingsClient, tokens: TokenSource) -> Self {
        Self::build(settings, client, |settings, shared| {
            Source::Single(Arc::new(Account::new(
                SINGLE_ACCOUNT,
                tokens,
                settings.clone(),
                shared.clone(),
            )))
        })
    }

    /// Every `NAME.json` in `dir`, read now and again at every [`App::scan`].
    pub fn directory(
        settings: AccountSettings,
        client: WithingsClient,
        dir: &Path,
        credentials: ClientCredentials,
    ) -> Self {
        let app = Self::build(settings, client, |_, _| Source::Directory {
            set: AccountSet::new(dir),
            credentials,
        });
        app.read_token_dir();
        app
    }

    /// The measure types asked of Withings (`WITHINGS_MEASTYPES`), comma-separated.
    pub fn meastypes(&self) -> &str {
        &self.settings.collector.meastypes
    }

    /// The enabled collectors (`WITHINGS_COLLECTORS`), checked.
    pub fn collectors(&self) -> &crate::collector::Collectors {
        &self.settings.collectors
    }

    pub fn client(&self) -> &WithingsClient {
        &self.client
    }

    /// From now on, fetches hand the samples Withings will not revise to `emit` as they
    /// read them (the remote writer); once.
    pub fn emit_to(&self, emit: Arc<dyn crate::collector::Emit>) {
        let _ = self.shared.emit.set(emit);
    }

    /// What the collectors read from the configuration (measure types, ambiguous groups).
    pub fn collector_settings(&self) -> &crate::collector::Settings {
        &self.settings.collector
    }

    /// The registry of the exporter's own metrics (`/metrics`), for the parts that start
    /// beside the application (the remote writer).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn limits(&self) -> &Arc<Limits> {
        self.client.limits()
    }

    /// The clock behind fetch intervals, the budget and the 601 pause; tests advance it.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Whether accounts come from `WITHINGS_TOKEN_DIR`.
    pub fn is_directory(&self) -> bool {
        matches!(self.source, Source::Directory { .. })
    }

    /// The one account of the single-account configuration.
    pub fn single_account(&self) -> Option<&Arc<Account>> {
        match &self.source {
            Source::Single(account) => Some(account),
            Source::Directory { .. } => None,
        }
    }

    pub fn account(&self, name: &str) -> Option<Arc<Account>> {
        match &self.source {
            Source::Single(account) => (name == SINGLE_ACCOUNT).then(|| Arc::clone(account)),
            Source::Directory { set, .. } => set.get(name),
        }
    }

    /// Every account, by name.
    pub fn accounts(&self) -> Vec<Arc<Account>> {
        match &self.source {
            Source::Single(account) => vec![Arc::clone(account)],
            Source::Directory { set, .. } => set.all(),
        }
    }

    /// Reads the token directory again, saying which accounts came and went; nothing in
    /// the single-account configuration.
    pub fn scan(&self) -> ScanReport {
        let report = self.read_token_dir();
        for name in &report.added {
            tracing::info!(account = %name, "serving a new account");
        }
        for name in &report.removed {
            tracing::info!(account = %name, "its token file is gone; no longer serving this account");
        }
        report
    }

    /// [`Self::scan`] without the lines about accounts coming and going: the first read,
    /// which `serve` reports in one line and the commands (`notify`, `backfill`...) do not
    /// report at all, since they serve nothing.
    fn read_token_dir(&self) -> ScanReport {
        let Source::Directory { set, credentials } = &self.source else {
            return ScanReport::default();
        };
        set.scan(|name, path, refused| {
            let tokens = match refused {
                Some(reason) => TokenSource::Unusable(reason.to_owned()),
                None => TokenSource::for_account_file(path, credentials, &self.client),
            };
            Arc::new(Account::new(
                name,
                tokens,
                self.settings.clone(),
                self.shared.clone(),
            ))
        })
    }

    /// Scans the token directory every `interval` until shutdown.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        if !self.is_directory() {
            return;
        }
        let mut shutdown = self.shutdown.subscribe();
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|down| *down) => return,
            }
            // Reading a directory of small files blocks briefly; not on a worker that
            // answers probes.
            let app = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || app.scan()).await;
        }
    }

    /// From now on, probes waiting for Withings answer at once with the last known values.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// `GET /probe?account=NAME`: that account's series, without an account label.
    pub async fn probe(
        &self,
        name: Option<&str>,
        budget: Option<Duration>,
    ) -> Result<String, ProbeError> {
        let name = name.ok_or(ProbeError::Missing)?;
        if !accounts::valid_name(name) {
            // Echoed in the 400: 64 characters at most, marked when cut.
            return Err(ProbeError::Malformed(crate::text::cut(
                name,
                MAX_ECHOED_NAME_CHARS,
            )));
        }
        let account = self.account(name).ok_or_else(|| {
            if self.is_directory() {
                ProbeError::Unknown(name.to_owned())
            } else {
                ProbeError::NotTheSingleAccount(name.to_owned())
            }
        })?;
        let outcome = account.probe(self, budget).await;
        let (state, mut scrape) = account.exposition(Some(&outcome));
        scrape.extend(self.notify_families(&account));
        Ok(exposition::merge(&[&state, &scrape.finish()]))
    }

    /// A probe of `account` through the application's fair share; for tests and benchmarks
    /// that look at the outcome rather than the text.
    pub async fn probe_outcome(
        &self,
        account: &Arc<Account>,
        budget: Option<Duration>,
    ) -> ProbeOutcome {
        account.probe(self, budget).await
    }

    /// `GET /metrics`: the exporter's own metrics and, with one account, that account's
    /// series exactly as before accounts existed (its fetch included).
    pub async fn metrics(&self, budget: Option<Duration>) -> String {
        let outcome = match &self.source {
            Source::Single(account) => Some(account.probe(self, budget).await),
            Source::Directory { .. } => None,
        };
        self.metrics_text(outcome.as_ref())
    }

    /// What `/metrics` shows without fetching (a HEAD request).
    pub fn metrics_now(&self) -> String {
        self.metrics_text(None)
    }

    /// `/metrics` with the single account's probe `outcome`, if any.
    fn metrics_text(&self, outcome: Option<&ProbeOutcome>) -> String {
        let mut account = None;
        if let Source::Single(single) = &self.source {
            let (state, mut scrape) = single.exposition(outcome);
            if outcome.is_some() {
                scrape.extend(self.notify_families(single));
            }
            account = Some((state, scrape.finish()));
        }
        let own = self.own_pieces();
        let process = self.process.get(|| {
            self.process_collector
                .as_ref()
                .map(|c| c.collect())
                .unwrap_or_default()
        });
        match &account {
            Some((state, scrape)) => exposition::merge(&[state, scrape, &own, &process]),
            None => exposition::merge(&[&own, &process]),
        }
    }

    fn own_pieces(&self) -> Pieces {
        let mut out = Pieces::encode(self.registry.gather());
        // Outside the registry: it moves on every scrape, and gathering it through the
        // registry cost more than the rest of a scrape from state.
        let mut sources = ServedFrom::ALL.map(|s| s.as_str());
        sources.sort_unstable();
        let labels = sources.map(|s| [("served_from", s)]);
        out.push_counter(
            SCRAPES_METRIC,
            SCRAPES_HELP,
            labels.iter().map(|l| {
                (
                    &l[..],
                    self.scrapes.with_label_values(&[l[0].1]).get() as f64,
                )
            }),
        );
        let limits = self.limits();
        out.push_gauge(
            "withings_request_budget_per_minute",
            "Requests to Withings the exporter may make in any 60 seconds, all accounts and endpoints together (WITHINGS_REQUESTS_PER_MINUTE; Withings allows 120 per application).",
            [(&[][..], f64::from(limits.budget.per_minute()))],
        );
        out.push_gauge(
            "withings_requests_in_window",
            "Requests made to Withings in the last 60 seconds.",
            [(&[][..], limits.budget.used() as f64)],
        );
        let resume_at = limits.pause.resume_at_unix();
        out.push_gauge(
            "withings_rate_limited",
            "1 while the exporter makes no request to Withings, for any account, because it answered 601 (too many requests), 0 otherwise.",
            [(&[][..], if resume_at.is_some() { 1.0 } else { 0.0 })],
        );
        if let Some(at) = resume_at {
            out.push_gauge(
                "withings_rate_limit_resume_timestamp_seconds",
                "Unix time requests to Withings resume after a 601 (present only while backing off).",
                [(&[][..], at)],
            );
        }
        let accounts = self.accounts();
        let mut counts = [0usize; AccountState::ALL.len()];
        for account in &accounts {
            let state = AccountState::of(account);
            if let Some(i) = AccountState::ALL.iter().position(|s| *s == state) {
                counts[i] += 1;
            }
        }
        let labels = AccountState::ALL.map(|s| [("state", s.as_str())]);
        out.push_gauge(
            "withings_accounts",
            "Accounts served, by state: pending (not fetched yet), ok (last fetch succeeded), failing (last fetch failed), token_invalid (re-authorization needed), error (token file unusable).",
            labels.iter().zip(counts).map(|(l, n)| (&l[..], n as f64)),
        );
        out.finish()
    }

    /// `GET /sd`: one Prometheus HTTP service-discovery target per account, at `target` (the
    /// host and port Prometheus reached this exporter at), scraped on `/probe`.
    pub fn service_discovery(&self, target: &str) -> String {
        #[derive(Serialize)]
        struct Group<'a> {
            targets: [&'a str; 1],
            labels: Labels<'a>,
        }
        #[derive(Serialize)]
        struct Labels<'a> {
            #[serde(rename = "__metrics_path__")]
            metrics_path: &'static str,
            #[serde(rename = "__param_account")]
            param_account: &'a str,
            account: &'a str,
        }
        // The single account is on /metrics already; listing it would scrape it twice.
        let accounts = if self.is_directory() {
            self.accounts()
        } else {
            Vec::new()
        };
        let groups: Vec<Group> = accounts
            .iter()
            .map(|a| Group {
                targets: [target],
                labels: Labels {
                    metrics_path: "/probe",
                    param_account: a.name(),
                    account: a.name(),
                },
            })
            .collect();
        serde_json::to_string(&groups).unwrap_or_else(|_| "[]".into())
    }

    /// The accounts for the landing page.
    pub fn summaries(&self) -> Vec<AccountSummary> {
        self.accounts()
            .iter()
            .map(|a| {
                let health = a.health();
                let last_error = a.tokens().file_problem().or(health.last_error);
                AccountSummary {
                    name: a.name().to_owned(),
                    state: AccountState::of(a),
                    last_success: health.last_success,
                    last_error,
                    last_notification: self
                        .gate
                        .schedule()
                        .and_then(|s| s.last_notification(a.name())),
                }
            })
            .collect()
    }
}

impl Admission for App {
    fn admit(&self, account: &str) -> Option<Wake> {
        self.gate.admit(account, |wake| {
            self.settings
                .collectors
                .iter()
                .filter(|c| wake.runs(*c))
                .count()
        })
    }

    fn refused_as(&self, account: &str) -> ServedFrom {
        self.gate.refused_as(account)
    }

    fn served(&self, _account: &str, from: ServedFrom) {
        self.scrapes.with_label_values(&[from.as_str()]).inc();
    }
}
