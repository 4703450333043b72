//! Withings notifications (push) driving the fetch (issue 12).
//!
//! With `WITHINGS_CALLBACK_URL` set, every account is kept subscribed ([`subscribe`]) for
//! the `appli` codes its collectors need; Withings then POSTs to the callback when an
//! account has new data ([`receiver`]), and a subscribed account is fetched only then, or
//! when its safety poll is due (the application's schedule, `app::admission::schedule`,
//! which this module tells what arrives). A notification is a hint, never data: it only
//! makes the account's normal, authenticated fetch start sooner, at most once per
//! `WITHINGS_NOTIFY_MIN_INTERVAL_SECONDS`, within the request budget.

pub mod api;
pub mod callback;
pub mod cli;
pub mod receiver;
pub mod subscribe;

use crate::account::tokens::TokenSource;
use crate::account::{Account, Admission, Wake};
use crate::app::App;
use crate::app::admission::Notifications;
use crate::app::admission::schedule::Schedule;
use crate::clock::Clock;
use crate::render::families::{GaugeFamilies, single_gauge};
pub use api::{Subscription, parse_ack, parse_list};
use callback::Callback;
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::config::{DEFAULT_NOTIFY_MIN_INTERVAL as DEFAULT_MIN_INTERVAL, DEFAULT_SAFETY_POLL};
/// How often each account's subscriptions are listed again: Withings cancels a subscription
/// after repeated failed deliveries, and says so only in `list`.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(3 * 3600);
/// Between two `subscribe` calls: Withings refuses quick successions more often.
pub const SUBSCRIBE_SPACING: Duration = Duration::from_secs(3);
/// A notification is four short fields; anything much larger is not one.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// The `appli` codes Withings documents; any other value is counted as `other`, so that a
/// forged field cannot grow the label set.
const KNOWN_APPLIS: [i64; 9] = [1, 2, 4, 16, 44, 46, 50, 51, 54];

/// The `appli` label value: a documented code, or `other`.
pub fn appli_label(appli: Option<i64>) -> String {
    match appli {
        Some(a) if KNOWN_APPLIS.contains(&a) => a.to_string(),
        Some(_) => "other".into(),
        None => "none".into(),
    }
}

/// What the notifications need beyond the callback.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub min_interval: Duration,
    pub safety_poll: Duration,
    /// The `appli` codes the enabled collectors need.
    pub applis: Vec<i64>,
    pub subscribe_spacing: Duration,
    pub reconcile_interval: Duration,
}

impl NotifySettings {
    /// `applis`: the notification categories of the enabled collectors (WITHINGS_COLLECTORS).
    pub fn from_config(config: &crate::config::NotifyConfig, applis: Vec<i64>) -> Self {
        Self {
            min_interval: config.min_interval,
            safety_poll: config.safety_poll,
            applis,
            subscribe_spacing: SUBSCRIBE_SPACING,
            reconcile_interval: RECONCILE_INTERVAL,
        }
    }
}

/// How one account's subscriptions stand.
#[derive(Debug, Default, Clone)]
struct SubState {
    in_place: BTreeSet<i64>,
    /// When to list again; `None`: at once (a new account).
    next_check: Option<Instant>,
    failures: u32,
    /// A check of this account is running: the next round leaves it alone.
    checking: bool,
    /// The last check listed the subscriptions and was held back by the budget while
    /// subscribing: the next one goes on from `in_place` instead of listing again.
    resume: bool,
}

/// The notifications of one application.
pub struct Notifier {
    callback: Callback,
    settings: NotifySettings,
    /// The application's schedule of this notifier's accounts: the notifier tells it what
    /// arrives, the application's admission reads it.
    schedule: Arc<Schedule>,
    clock: Clock,
    outcomes: IntCounterVec,
    subs: Mutex<HashMap<String, SubState>>,
    /// Notified fetches started by [`trigger_due`] and not yet ended: they run detached, and
    /// a caller that drives time itself (the cost bench) must know when they are done.
    in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("callback", &self.callback)
            .finish_non_exhaustive()
    }
}

/// `withings_notifications_total` outcomes.
pub const OUTCOMES: [&str; 9] = [
    "accepted",
    "coalesced",
    "ignored_appli",
    "unknown_userid",
    "malformed",
    "too_large",
    "wrong_secret",
    "wrong_method",
    "head",
];

impl Notifier {
    pub fn new(callback: Callback, settings: NotifySettings, clock: Clock) -> Self {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "withings_notifications_total",
                "Requests on the notification path, by appli and outcome: accepted (a fetch is scheduled), coalesced (one was already waiting), ignored_appli (no enabled collector needs it), unknown_userid, malformed, too_large, wrong_secret, wrong_method, head (Withings checking the URL). Only accepted and coalesced can lead to a fetch.",
            ),
            &["appli", "outcome"],
        )
        .expect("static metric definition");
        for outcome in OUTCOMES {
            outcomes.with_label_values(&["none", outcome]);
        }
        Self {
            schedule: Arc::new(Schedule::new(
                clock.clone(),
                settings.min_interval,
                settings.safety_poll,
            )),
            callback,
            settings,
            clock,
            outcomes,
            subs: Mutex::new(HashMap::new()),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many notified fetches are running now.
    pub fn fetches_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The notifier the configuration asks for, with its secret read or made beside the
    /// tokens; `None` without `WITHINGS_CALLBACK_URL`. Logs the one warning when Withings
    /// would refuse the URL.
    pub fn from_config(
        config: &crate::config::NotifyConfig,
        accounts: &crate::config::AccountsConfig,
        applis: Vec<i64>,
        clock: Clock,
    ) -> Result<Option<Self>, NotifyError> {
        let Some(base) = &config.callback_url else {
            return Ok(None);
        };
        let path = callback::secret_path(
            accounts.token_dir.as_deref(),
            accounts.token_file.as_deref(),
        )
        .ok_or(NotifyError::NoSecretPlace)?;
        let secret = callback::load_or_create_secret(&path)?;
        let callback = Callback::new(base.clone(), secret);
        if callback.is_loopback() {
            // A test or the demo on purpose, with a simulator sending the notifications:
            // said, not warned about.
            tracing::info!(
                "WITHINGS_CALLBACK_URL {} is on this machine: notifications from a simulator reach it (the demo, tests); Withings itself sends them only to public HTTPS on port 443 with a domain name",
                callback.redacted_url()
            );
        } else if let Some(warning) = callback.refusal_warning() {
            tracing::warn!("{warning}");
        }
        Ok(Some(Self::new(
            callback,
            NotifySettings::from_config(config, applis),
            clock,
        )))
    }

    pub fn callback(&self) -> &Callback {
        &self.callback
    }

    pub fn settings(&self) -> &NotifySettings {
        &self.settings
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn outcomes(&self) -> &IntCounterVec {
        &self.outcomes
    }

    fn count(&self, appli: Option<i64>, outcome: &str) {
        self.outcomes
            .with_label_values(&[appli_label(appli).as_str(), outcome])
            .inc();
    }

    /// The `appli` codes of `account`'s subscriptions found in place at the last check.
    pub fn in_place(&self, account: &str) -> BTreeSet<i64> {
        self.lock_subs()
            .get(account)
            .map(|s| s.in_place.clone())
            .unwrap_or_default()
    }

    fn lock_subs(&self) -> std::sync::MutexGuard<'_, HashMap<String, SubState>> {
        crate::lock::lock(&self.subs)
    }

    /// This account's notification families, for its probe.
    pub fn account_families(&self, account: &str) -> Vec<MetricFamily> {
        let in_place = self.in_place(account);
        let mut g = GaugeFamilies::new();
        for appli in &self.settings.applis {
            g.push(
                "withings_notification_subscribed",
                "1 when this account's notification subscription for the appli is in place at Withings (as of the last `notify list`), 0 while it is missing; a subscribed account is fetched on notification and by the safety poll (WITHINGS_SAFETY_POLL_SECONDS) only.",
                &[("appli", &appli.to_string())],
                if in_place.contains(appli) { 1.0 } else { 0.0 },
            );
        }
        let mut out = g.finish();
        if let Some(at) = self.schedule.last_notification(account) {
            out.push(single_gauge(
                "withings_last_notification_timestamp_seconds",
                "Unix time of the last notification accepted for this account.",
                at,
            ));
        }
        out
    }
}

impl Notifications for Notifier {
    fn account_families(&self, account: &str) -> Vec<MetricFamily> {
        Notifier::account_families(self, account)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The notifier in the application: handed down to it, found again here.
impl App {
    /// Turns notifications on (once); their counter joins `/metrics`.
    pub fn set_notifier(&self, notifier: Notifier) {
        let schedule = Arc::clone(&notifier.schedule);
        let outcomes = notifier.outcomes.clone();
        self.notifications_on(schedule, Arc::new(notifier), outcomes);
    }

    pub fn notifier(&self) -> Option<&Notifier> {
        self.admission()
            .notifications()
            .and_then(|n| n.as_any().downcast_ref::<Notifier>())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(
        "WITHINGS_CALLBACK_URL needs WITHINGS_TOKEN_DIR or WITHINGS_TOKEN_FILE: its secret is kept beside the tokens"
    )]
    NoSecretPlace,
    #[error(transparent)]
    Secret(#[from] callback::SecretError),
}

/// The account of a Withings user id, from each account's token file.
pub fn account_for_userid(app: &App, userid: &str) -> Option<Arc<Account>> {
    app.accounts().into_iter().find(|a| match a.tokens() {
        TokenSource::Managed(m) => m.userid() == Some(userid),
        _ => false,
    })
}

/// The admission of a notification's fetch: the application's (the budget's fair share),
/// without counting it as a scrape.
struct Triggered<'a>(&'a App, &'a Notifier);

impl Admission for Triggered<'_> {
    fn admit(&self, account: &str) -> Option<Wake> {
        let admitted = self.0.admit(account);
        if admitted.is_none() {
            self.1.schedule.refused(account);
        }
        admitted
    }
}

/// Counts one notified fetch for as long as it lives, however its task ends.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts, each in a task of its own, the fetches notifications asked for and whose
/// minimum interval has passed. Through the account's single flight: a probe running at the
/// same time shares the fetch.
pub fn trigger_due(app: &Arc<App>) -> usize {
    let Some(n) = app.notifier() else {
        return 0;
    };
    let due = n.schedule.take_due();
    let mut started = 0;
    for name in due {
        let Some(account) = app.account(&name) else {
            continue;
        };
        started += 1;
        let app = Arc::clone(app);
        let in_flight = InFlight::enter(&n.in_flight);
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let Some(n) = app.notifier() else { return };
            let admission = Triggered(&app, n);
            let _ = account.probe(&admission, None).await;
        });
    }
    started
}

/// Every second: the notified fetches that waited for their interval or the budget. Until
/// the exporter shuts down.
pub async fn run_triggers(app: Arc<App>) {
    let mut shutdown = app.shutting_down();
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
        trigger_due(&app);
    }
}

/// Turns notifications on when the configuration asks for them: the notifier, its
/// fetch triggers and its subscription upkeep, until shutdown. Nothing without
/// `WITHINGS_CALLBACK_URL`.
/// `accounts`: where the tokens are, beside which the secret is kept.
pub fn start(
    config: &crate::config::NotifyConfig,
    accounts: &crate::config::AccountsConfig,
    app: &Arc<App>,
) -> Result<bool, NotifyError> {
    let Some(notifier) = Notifier::from_config(
        config,
        accounts,
        app.collectors().applis(),
        app.clock().clone(),
    )?
    else {
        return Ok(false);
    };
    tracing::info!(
        path = %notifier.callback().redacted_path(),
        applis = ?notifier.settings().applis,
        "Withings notifications on: subscribed accounts are fetched on notification and every WITHINGS_SAFETY_POLL_SECONDS"
    );
    app.set_notifier(notifier);
    tokio::spawn(run_triggers(Arc::clone(app)));
    tokio::spawn(subscribe::run(Arc::clone(app)));
    Ok(true)
}
