//! Keeping every account subscribed: `notify list`, then `notify subscribe` for each needed
//! `appli` that is missing, a few seconds apart, at start, for a new account, and every few
//! hours (Withings cancels subscriptions whose deliveries keep failing and never says so
//! but in `list`). A refusal is retried with backoff; the account is polled meanwhile.

use super::{Notifier, SubState};
use crate::account::Account;
use crate::app::App;
use crate::withings::{ApiError, RequestError};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The first retry after a refusal; doubled each time, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(60);
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The comment Withings stores with each subscription.
pub const COMMENT: &str = "withings-exporter";

/// How one account's check went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Every needed subscription is in place (some may have just been made).
    InPlace { subscribed_now: Vec<i64> },
    /// Not sent: the request budget or a 601; tried again at the next round, no backoff.
    HeldBack,
    /// Withings refused (or could not be reached); retried with backoff.
    Failed(String),
}

/// One notify call's failure in words; a request held back is [`HELD_BACK`].
fn failed(e: RequestError) -> String {
    match e {
        RequestError::Api(e) | RequestError::Rejected(e) => describe(&e),
        e => e.to_string(),
    }
}

const HELD_BACK: &str = "\u{0}held back";

fn describe(e: &ApiError) -> String {
    if e.not_sent() {
        return HELD_BACK.into();
    }
    match e {
        ApiError::Status { status: 293, .. } => "Withings could not reach the callback URL (status 293): it needs public HTTPS on port 443 with a domain name, the path answering HEAD with 200; check WITHINGS_CALLBACK_URL and the reverse proxy".into(),
        e => e.to_string(),
    }
}

/// Lists `account`'s subscriptions and subscribes what is missing.
pub async fn check_account(n: &Notifier, app: &App, account: &Account) -> Checked {
    check(n, app, account, false).await.0
}

/// [`check_account`]; with `resume`, from the subscriptions the last check listed instead
/// of listing again: when the budget holds subscribes back, a list at every retry would
/// spend the budget they wait for (1,000 new accounts cost 3 to 7 times the 7,000
/// requests they need). Also says whether the subscriptions in place are known (listed
/// now, or resumed), for the next check to resume from.
async fn check(n: &Notifier, app: &App, account: &Account, resume: bool) -> (Checked, bool) {
    let client = app.client();
    let ours = n.callback().full_url();
    let mut in_place: BTreeSet<i64> = if resume {
        n.in_place(account.name())
    } else {
        let listed = match super::api::list(client, account.tokens())
            .await
            .map_err(failed)
        {
            Ok(listed) => listed,
            Err(e) if e == HELD_BACK => return (Checked::HeldBack, false),
            Err(e) => return (Checked::Failed(e), false),
        };
        listed
            .iter()
            .filter(|s| n.callback().is_ours(&s.callbackurl))
            .map(|s| s.appli)
            .filter(|a| n.settings().applis.contains(a))
            .collect()
    };
    n.record(account.name(), &in_place);
    let missing: Vec<i64> = n
        .settings()
        .applis
        .iter()
        .copied()
        .filter(|a| !in_place.contains(a))
        .collect();
    let mut subscribed_now = Vec::new();
    for (i, appli) in missing.into_iter().enumerate() {
        if i > 0 && !n.settings().subscribe_spacing.is_zero() {
            tokio::time::sleep(n.settings().subscribe_spacing).await;
        }
        let ours = &ours;
        match super::api::subscribe(client, account.tokens(), ours, appli, COMMENT)
            .await
            .map_err(failed)
        {
            Ok(()) => {
                in_place.insert(appli);
                subscribed_now.push(appli);
                n.record(account.name(), &in_place);
            }
            Err(e) if e == HELD_BACK => return (Checked::HeldBack, true),
            Err(e) => return (Checked::Failed(e), true),
        }
    }
    (Checked::InPlace { subscribed_now }, true)
}

impl Notifier {
    /// Notes which subscriptions of `account` are in place, and whether all are.
    pub(super) fn record(&self, account: &str, in_place: &BTreeSet<i64>) {
        let all = !self.settings.applis.is_empty()
            && self.settings.applis.iter().all(|a| in_place.contains(a));
        self.lock_subs()
            .entry(account.to_owned())
            .or_default()
            .in_place = in_place.clone();
        self.schedule.set_subscribed(account, all);
    }

    /// The accounts whose check is due (new ones, every [`RECONCILE_INTERVAL`]
    /// (super::RECONCILE_INTERVAL), failed ones after their backoff) and not running
    /// already, marked running.
    fn take_due(&self, app: &App) -> Vec<Arc<Account>> {
        let accounts = app.accounts();
        let names: BTreeSet<String> = accounts.iter().map(|a| a.name().to_owned()).collect();
        self.schedule.retain(|name| names.contains(name));
        let now = self.clock.now();
        let mut subs = self.lock_subs();
        subs.retain(|name, _| names.contains(name));
        accounts
            .into_iter()
            .filter(|account| {
                if !matches!(
                    account.tokens(),
                    crate::account::tokens::TokenSource::Managed(_)
                ) {
                    return false;
                }
                let state = subs.entry(account.name().to_owned()).or_default();
                let due = !state.checking && state.next_check.is_none_or(|at| now >= at);
                state.checking |= due;
                due
            })
            .collect()
    }

    /// Checks one account taken by [`Self::take_due`] and schedules its next check.
    async fn check_one(&self, app: &App, account: &Account) {
        let resume = self
            .lock_subs()
            .get(account.name())
            .is_some_and(|s| s.resume);
        let (outcome, listed) = check(self, app, account, resume).await;
        let now = self.clock.now();
        let mut subs = self.lock_subs();
        let state: &mut SubState = subs.entry(account.name().to_owned()).or_default();
        state.checking = false;
        state.resume = listed && outcome == Checked::HeldBack;
        match outcome {
            Checked::InPlace { subscribed_now } => {
                if state.failures > 0 || !subscribed_now.is_empty() {
                    tracing::info!(account = %account.name(), applis = ?subscribed_now, "subscribed to Withings notifications");
                }
                state.failures = 0;
                state.next_check = Some(now + self.settings.reconcile_interval);
            }
            Checked::HeldBack => {
                state.next_check = Some(now + Duration::from_secs(10));
            }
            Checked::Failed(reason) => {
                // One line per failure streak, not one per retry.
                if state.failures == 0 {
                    tracing::error!(
                        account = %account.name(),
                        callback = %self.callback.redacted_url(),
                        error = %crate::text::one_line(&reason),
                        "subscribing to Withings notifications failed; retrying with backoff, and polling the account meanwhile"
                    );
                }
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1u32 << state.failures.min(10))
                    .min(MAX_BACKOFF);
                state.failures = state.failures.saturating_add(1);
                state.next_check = Some(now + backoff);
            }
        }
    }

    /// Checks every account whose check is due, all at once (each spacing its own
    /// subscribes), and waits for them. Returns how many were checked.
    pub async fn reconcile_due(&self, app: &App) -> usize {
        let due = self.take_due(app);
        join_all(due.iter().map(|account| self.check_one(app, account))).await;
        due.len()
    }
}

/// Runs the futures at once, in this task, until every one has ended.
async fn join_all<F: Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Every few seconds, the accounts whose subscription check is due, each in a task of its
/// own: an account whose answers stall (up to WITHINGS_TIMEOUT_SECONDS a request) delays
/// neither the others' checks nor the next round's. Until shutdown.
pub async fn run(app: Arc<App>) {
    let mut shutdown = app.shutting_down();
    loop {
        if let Some(n) = app.notifier() {
            for account in n.take_due(&app) {
                let app = Arc::clone(&app);
                tokio::spawn(async move {
                    let mut shutdown = app.shutting_down();
                    if let Some(n) = app.notifier() {
                        tokio::select! {
                            () = n.check_one(&app, &account) => {}
                            _ = shutdown.wait_for(|down| *down) => {}
                        }
                    }
                });
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
    }
}
