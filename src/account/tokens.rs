//! Where the access token for each Withings call comes from: a fixed token, or a
//! [`TokenManager`] that refreshes it and keeps the rotated refresh token safe on disk.

use crate::account::token_store::{StoreError, StoredTokens, TokenStore};
use crate::config::{AccountsConfig, ConfigError, WithingsConfig};
use crate::secret::Secret;
use crate::withings::{ApiError, StatusClass, WithingsClient};
use prometheus::{IntCounterVec, Opts, Registry};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub use crate::withings::TokenError;

/// A problem found while setting up the token source at start: the program stops.
#[derive(Debug, thiserror::Error)]
pub enum TokenSetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot set up the Withings client: {0}")]
    Client(ApiError),
}

/// The registered application's credentials, needed to refresh.
pub use crate::config::ClientCredentials;

/// The source of access tokens.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A fixed `WITHINGS_ACCESS_TOKEN`: never refreshed, so `withings_token_valid` falls to 0
    /// when Withings stops accepting it.
    Static(Secret),
    /// Tokens from the token file, refreshed before they expire.
    Managed(Arc<TokenManager>),
    /// An account whose token file cannot be used (malformed, unreadable): it reports this
    /// error on every probe until the file is fixed, while the other accounts carry on.
    Unusable(String),
}

impl TokenSource {
    /// Chooses the source the configuration asks for; see the README's table of token
    /// variables. Creates the token file from `WITHINGS_REFRESH_TOKEN` when there is none.
    pub fn from_config(
        accounts: &AccountsConfig,
        withings: &WithingsConfig,
        client: &WithingsClient,
    ) -> Result<Self, TokenSetupError> {
        let missing = |variable: &'static str, message: &str| ConfigError {
            variable,
            message: message.to_owned(),
        };
        // The container image sets WITHINGS_TOKEN_FILE for everyone; only a file that exists
        // says the user meant to use it.
        let file_exists = accounts.token_file.as_ref().is_some_and(|p| p.exists());
        let Some(credentials) = withings.client_credentials()? else {
            if let Some(token) = &accounts.access_token {
                if file_exists || accounts.refresh_token.is_some() {
                    tracing::warn!(
                        "WITHINGS_CLIENT_ID and WITHINGS_CLIENT_SECRET are not set, so tokens cannot be refreshed: using the fixed WITHINGS_ACCESS_TOKEN and ignoring WITHINGS_TOKEN_FILE/WITHINGS_REFRESH_TOKEN"
                    );
                }
                return Ok(Self::Static(token.clone()));
            }
            if file_exists || accounts.refresh_token.is_some() {
                return Err(missing(
                    "WITHINGS_CLIENT_ID",
                    "not set; refreshing tokens needs WITHINGS_CLIENT_ID and WITHINGS_CLIENT_SECRET (or WITHINGS_CLIENT_SECRET_FILE) of your Withings application",
                )
                .into());
            }
            return Err(missing(
                "WITHINGS_ACCESS_TOKEN",
                "no token configured; set WITHINGS_CLIENT_ID, WITHINGS_CLIENT_SECRET and WITHINGS_TOKEN_FILE and run `withings-exporter auth`, or set a fixed WITHINGS_ACCESS_TOKEN (or run `withings-exporter demo` to try the exporter without an account)",
            )
            .into());
        };
        let Some(path) = &accounts.token_file else {
            return Err(missing(
                "WITHINGS_TOKEN_FILE",
                "not set; with client credentials the exporter refreshes tokens and must save each new refresh token: set it to a file on a persistent volume",
            )
            .into());
        };
        let manager = TokenManager::open(
            client.clone(),
            credentials,
            TokenStore::new(path),
            accounts.refresh_token.clone(),
            RefreshPolicy::default(),
        )?;
        Ok(Self::Managed(Arc::new(manager)))
    }

    /// The source for one account of `WITHINGS_TOKEN_DIR`: its file, refreshed with the
    /// application's credentials, or, when the file cannot be used, an account that says why.
    pub fn for_account_file(
        path: &Path,
        credentials: &ClientCredentials,
        client: &WithingsClient,
    ) -> Self {
        let opened = TokenManager::open(
            client.clone(),
            credentials.clone(),
            TokenStore::new(path),
            None,
            RefreshPolicy::default(),
        );
        match opened {
            Ok(mut manager) => {
                manager.account = path
                    .file_stem()
                    .map(|stem| stem.to_string_lossy().into_owned());
                Self::Managed(Arc::new(manager))
            }
            Err(e) => Self::Unusable(crate::text::one_line(&e.to_string()).into_owned()),
        }
    }

    /// The token to use for the next call.
    pub async fn access_token(&self) -> Result<Secret, TokenError> {
        match self {
            Self::Static(token) => Ok(token.clone()),
            Self::Managed(manager) => manager.access_token().await,
            Self::Unusable(reason) => Err(TokenError::Unavailable(reason.clone())),
        }
    }

    /// Called when Withings rejected `rejected` as expired or invalid. Returns a fresh token
    /// to retry with, or `None` when this source cannot produce one.
    pub async fn after_auth_failure(
        &self,
        rejected: &Secret,
    ) -> Result<Option<Secret>, TokenError> {
        match self {
            Self::Static(_) | Self::Unusable(_) => Ok(None),
            Self::Managed(manager) => manager.after_auth_failure(rejected).await.map(Some),
        }
    }

    /// Why this source's token file cannot be used now, when it cannot.
    pub fn file_problem(&self) -> Option<String> {
        match self {
            Self::Static(_) => None,
            Self::Unusable(reason) => Some(reason.clone()),
            Self::Managed(manager) => manager.file_problem(),
        }
    }

    /// Unix time the current access token expires, when known.
    pub fn expiry(&self) -> Option<i64> {
        match self {
            Self::Static(_) | Self::Unusable(_) => None,
            Self::Managed(manager) => manager.expiry(),
        }
    }

    /// How many refreshes this source attempted, whatever their outcome: with
    /// [`Self::expiry`], what a cached exposition must notice.
    pub fn refresh_attempts(&self) -> u64 {
        match self {
            Self::Static(_) | Self::Unusable(_) => 0,
            Self::Managed(manager) => OUTCOMES
                .iter()
                .map(|o| manager.refreshes.with_label_values(&[o]).get())
                .sum(),
        }
    }

    /// Adds this source's metrics to the exporter's registry.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        match self {
            Self::Static(_) | Self::Unusable(_) => Ok(()),
            Self::Managed(manager) => registry.register(Box::new(manager.refreshes.clone())),
        }
    }
}

/// When to refresh and how to back off.
#[derive(Debug, Clone)]
pub struct RefreshPolicy {
    /// Refresh when less than this, or a tenth of the token's lifetime if that is shorter,
    /// remains. The tenth keeps short-lived tokens from being refreshed on every call.
    pub max_margin: Duration,
    /// First wait after a transient failure; doubles with each further failure.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            max_margin: Duration::from_secs(300),
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(300),
        }
    }
}

/// How long a refresh waits for another process's refresh of the same account.
const REFRESH_LOCK_WAIT: Duration = Duration::from_secs(30);

/// `withings_token_refreshes_total` outcomes.
const OUTCOMES: [&str; 4] = [
    "success",
    "transient_error",
    "permanent_error",
    "save_error",
];

/// Owns the token pair: refreshes it one request at a time and saves every new pair before
/// using it.
pub struct TokenManager {
    client: WithingsClient,
    credentials: ClientCredentials,
    store: TokenStore,
    policy: RefreshPolicy,
    /// Held across a refresh request, so that concurrent callers wait for its result instead
    /// of refreshing again: a second refresh would rotate the pair the first one just got.
    state: tokio::sync::Mutex<State>,
    /// Mirrors `state.current.expires_at` for renders, which must not wait on a refresh.
    expiry: AtomicI64,
    refreshes: IntCounterVec,
    /// The Withings user of the token file when it was opened: notifications name it.
    userid: Option<String>,
    /// The account's name in WITHINGS_TOKEN_DIR; `None` for WITHINGS_TOKEN_FILE.
    account: Option<String>,
    /// Whether the token file as it is now can be read: see [`TokenManager::file_problem`].
    file_check: std::sync::Mutex<FileCheck>,
}

/// The token file as last checked: which version of it (so that an unchanged file is not
/// read again) and why it cannot be used, if it cannot.
#[derive(Default)]
struct FileCheck {
    seen: Option<(Option<SystemTime>, u64, u64)>,
    problem: Option<String>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("client_id", &self.credentials.client_id)
            .field("token_file", &self.store.path())
            .finish_non_exhaustive()
    }
}

struct State {
    /// The pair on disk, in use.
    current: StoredTokens,
    /// A refreshed pair whose save failed. Withings keeps the old refresh token alive until
    /// the new access token is first used, so as long as this pair is not used, the pair on
    /// disk still works: a crash loses nothing. Using it before it is saved would kill the
    /// only refresh token on disk. No further refresh is made while it exists, since that
    /// would rotate away a pair we still hold.
    unsaved: Option<StoredTokens>,
    /// After a transient failure, no refresh before this instant.
    retry_at: Option<Instant>,
    failures: u32,
    /// Withings refused the refresh token: no more refresh requests until the token file
    /// changes (someone ran `withings-exporter auth`).
    rejected: Option<String>,
    file_mtime: Option<SystemTime>,
}

impl TokenManager {
    /// Starts from the token file; when there is none, from `bootstrap` (a refresh token),
    /// writing the file at once so that an unwritable location fails at start, not after
    /// the first rotation.
    pub fn open(
        client: WithingsClient,
        credentials: ClientCredentials,
        store: TokenStore,
        bootstrap: Option<Secret>,
        policy: RefreshPolicy,
    ) -> Result<Self, TokenSetupError> {
        store.remove_stale_temp_files();
        let current = match store.load()? {
            Some(tokens) => {
                if bootstrap.is_some() {
                    tracing::info!(
                        token_file = %store.path().display(),
                        "using the token file; WITHINGS_REFRESH_TOKEN is ignored since the file holds a newer pair"
                    );
                }
                tokens
            }
            None => {
                let Some(refresh_token) = bootstrap else {
                    return Err(ConfigError {
                        variable: "WITHINGS_TOKEN_FILE",
                        message: format!(
                            "{} does not exist; run `withings-exporter auth` to create it, or set WITHINGS_REFRESH_TOKEN to start from a refresh token",
                            store.path().display()
                        ),
                    }
                    .into());
                };
                let tokens = StoredTokens {
                    access_token: Secret::new(""),
                    refresh_token,
                    expires_at: 0,
                    obtained_at: None,
                    userid: None,
                    scope: None,
                };
                store.save(&tokens)?;
                tracing::info!(token_file = %store.path().display(), "created the token file from WITHINGS_REFRESH_TOKEN");
                tokens
            }
        };
        Ok(Self::new(client, credentials, store, current, policy))
    }

    /// A manager holding `current`, which must already be in `store`.
    pub fn new(
        client: WithingsClient,
        credentials: ClientCredentials,
        store: TokenStore,
        current: StoredTokens,
        policy: RefreshPolicy,
    ) -> Self {
        let refreshes = IntCounterVec::new(
            Opts::new(
                "withings_token_refreshes_total",
                "Access-token refreshes attempted, by outcome: success, transient_error (retried with backoff), permanent_error (re-authorization needed), save_error (the new pair could not be saved and is not used).",
            ),
            &["outcome"],
        )
        .expect("static metric definition");
        for outcome in OUTCOMES {
            refreshes.with_label_values(&[outcome]);
        }
        let file_mtime = store.modified();
        let userid = current.userid.clone();
        Self {
            userid,
            account: None,
            file_check: std::sync::Mutex::new(FileCheck::default()),
            client,
            credentials,
            expiry: AtomicI64::new(expiry_gauge(&current)),
            store,
            policy,
            state: tokio::sync::Mutex::new(State {
                current,
                unsaved: None,
                retry_at: None,
                failures: 0,
                rejected: None,
                file_mtime,
            }),
            refreshes,
        }
    }

    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    /// The Withings user id of the token file, when it names one.
    pub fn userid(&self) -> Option<&str> {
        self.userid.as_deref()
    }

    pub fn expiry(&self) -> Option<i64> {
        Some(self.expiry.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// Why the token file, as it is on disk now, cannot be used (malformed, unreadable, not
    /// a regular file), or `None` when it can (or is gone). The file is read again only when
    /// it changed; a file found broken is reported at ERROR once, and is never written over:
    /// no refresh is made until it is fixed, and the last known values stay served.
    pub fn file_problem(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let version = std::fs::metadata(self.store.path())
            .ok()
            .map(|m| (m.modified().ok(), m.len(), m.ino()));
        let mut check = self.file_check.lock().unwrap_or_else(|e| e.into_inner());
        if check.seen.is_some() && check.seen == version {
            return check.problem.clone();
        }
        check.seen = version;
        let problem = match self.store.load() {
            Ok(_) => None,
            // The volume is gone (its path is now a file): nothing to write over; a save
            // fails and holds its pair, see `State::unsaved`.
            Err(StoreError::Read { cause, .. })
                if cause.kind() == std::io::ErrorKind::NotADirectory =>
            {
                None
            }
            Err(e) => Some(crate::text::one_line(&e.to_string()).into_owned()),
        };
        match (&check.problem, &problem) {
            (None, Some(reason)) => tracing::error!(
                account = self.who(),
                error = %reason,
                "the token file of a running account cannot be used; it is not written over and no refresh is made until it is fixed, and the last known values stay served"
            ),
            (Some(_), None) => tracing::info!(
                account = self.who(),
                token_file = %self.store.path().display(),
                "the token file can be used again"
            ),
            _ => {}
        }
        check.problem.clone_from(&problem);
        problem
    }

    /// The access token to use now, refreshing first when it is about to expire.
    pub async fn access_token(&self) -> Result<Secret, TokenError> {
        let mut st = self.state.lock().await;
        self.settle(&mut st);
        let now = self.unix_now();
        let usable = !st.current.access_token.is_empty() && now < st.current.expires_at;
        if let Some(reason) = &st.rejected {
            return Err(TokenError::ReauthorizationNeeded(reason.clone()));
        }
        if st.unsaved.is_some() {
            return if usable {
                Ok(st.current.access_token.clone())
            } else {
                Err(TokenError::NotSaved(format!(
                    "see the error about {}",
                    self.store.path().display()
                )))
            };
        }
        if !self.due(&st.current, now) {
            return Ok(st.current.access_token.clone());
        }
        if let Some(wait) = backoff_left(&st) {
            return if usable {
                Ok(st.current.access_token.clone())
            } else {
                Err(TokenError::RefreshFailed(format!(
                    "next attempt in {:.1}s",
                    wait.as_secs_f64()
                )))
            };
        }
        match self.refresh(&mut st).await {
            Ok(token) => Ok(token),
            // A token that still works is better than none while a refresh can be retried.
            Err(e) if usable && !e.is_permanent() => Ok(st.current.access_token.clone()),
            Err(e) => Err(e),
        }
    }

    /// Withings rejected `rejected`: refresh, unless another caller already did.
    pub async fn after_auth_failure(&self, rejected: &Secret) -> Result<Secret, TokenError> {
        let mut st = self.state.lock().await;
        self.settle(&mut st);
        if st.current.access_token != *rejected && !st.current.access_token.is_empty() {
            // Replaced while this caller waited for the lock: the single flight's result.
            return Ok(st.current.access_token.clone());
        }
        if let Some(reason) = &st.rejected {
            return Err(TokenError::ReauthorizationNeeded(reason.clone()));
        }
        if st.unsaved.is_some() {
            return Err(TokenError::NotSaved(format!(
                "see the error about {}",
                self.store.path().display()
            )));
        }
        if let Some(wait) = backoff_left(&st) {
            return Err(TokenError::RefreshFailed(format!(
                "next attempt in {:.1}s",
                wait.as_secs_f64()
            )));
        }
        self.refresh(&mut st).await
    }

    /// The application's wall clock, which the client carries: a test that pins or advances
    /// it sees tokens expire on the same time line as everything else it fetches.
    /// The account, for log lines: its name in a token directory, the single account's
    /// `default` otherwise (the name `backfill --account` takes for it).
    fn who(&self) -> &str {
        self.account.as_deref().unwrap_or("default")
    }

    fn unix_now(&self) -> i64 {
        self.client.limits().clock.unix_seconds()
    }

    fn due(&self, tokens: &StoredTokens, now: i64) -> bool {
        let max = i64::try_from(self.policy.max_margin.as_secs()).unwrap_or(i64::MAX);
        tokens.refresh_due(now, max)
    }

    /// Saves a pending pair, and picks up a token file replaced from outside.
    fn settle(&self, st: &mut State) {
        if let Some(pending) = &st.unsaved {
            if self.file_problem().is_some() {
                return;
            }
            match self.store.save(pending) {
                Ok(()) => {
                    tracing::info!(account = self.who(), token_file = %self.store.path().display(), "saved the refreshed token pair after an earlier failure; using it now");
                    if let Some(pending) = st.unsaved.take() {
                        self.adopt(st, pending);
                    }
                }
                Err(e) => {
                    tracing::error!(account = self.who(), error = %e, "still cannot save the refreshed token pair; keeping the previous pair, which stays valid until the new one is used");
                }
            }
            return;
        }
        let mtime = self.store.modified();
        if mtime == st.file_mtime {
            return;
        }
        st.file_mtime = mtime;
        match self.store.load() {
            Ok(Some(tokens)) if tokens != st.current => {
                tracing::info!(account = self.who(), token_file = %self.store.path().display(), "the token file was replaced; using its tokens");
                st.rejected = None;
                st.failures = 0;
                st.retry_at = None;
                self.expiry.store(expiry_gauge(&tokens), Ordering::Relaxed);
                st.current = tokens;
            }
            Ok(_) => {}
            // Keep the pair in memory: it is the best there is, and it is never written
            // over a file this process could not read (see `file_problem`, which reports it).
            Err(e) => {
                // A broken file is reported there, at ERROR; what is left (its volume gone)
                // is only warned about: the next save says whether it is back.
                if self.file_problem().is_none() {
                    tracing::warn!(account = self.who(), error = %e, "the token file changed and cannot be used; keeping the tokens in memory");
                }
            }
        }
    }

    fn adopt(&self, st: &mut State, tokens: StoredTokens) {
        self.expiry.store(expiry_gauge(&tokens), Ordering::Relaxed);
        st.current = tokens;
        st.file_mtime = self.store.modified();
    }

    async fn refresh(&self, st: &mut State) -> Result<Secret, TokenError> {
        // Another exporter (or a backfill) sharing this token file may be refreshing the same
        // pair: two refreshes of one refresh token fork the rotation and one of them is lost.
        // The lock makes them take turns, and the one that waited uses the pair the other saved.
        let _lock = match self.store.lock(REFRESH_LOCK_WAIT).await {
            Ok(lock) => Some(lock),
            // Another process holds the lock for too long: do not refresh under it.
            Err(e) if e.is_lock_timeout() => {
                tracing::warn!(account = self.who(), error = %e, "cannot lock the token file for a refresh; retrying later");
                return Err(TokenError::RefreshFailed(e.to_string()));
            }
            // No file to lock (its volume is gone, say): no other process can be using it
            // either. Refresh anyway; the save will fail and hold the pair in memory unused,
            // which keeps the pair this process has valid.
            Err(e) => {
                tracing::debug!(account = self.who(), error = %e, "refreshing without the token file's lock");
                None
            }
        };
        // A refresh saves its new pair over the file: never over one that cannot be read,
        // which may hold the only live refresh token (restored from a backup, half-written).
        if let Some(problem) = self.file_problem() {
            return Err(TokenError::Unavailable(problem));
        }
        if let Ok(Some(on_disk)) = self.store.load()
            && on_disk.refresh_token != st.current.refresh_token
            && !on_disk.access_token.is_empty()
        {
            tracing::info!(account = self.who(), token_file = %self.store.path().display(), "another process refreshed this account's tokens; using the pair it saved");
            let token = on_disk.access_token.clone();
            st.rejected = None;
            st.failures = 0;
            st.retry_at = None;
            self.adopt(st, on_disk);
            return Ok(token);
        }
        let answer = self
            .client
            .request_token(&[
                ("grant_type", "refresh_token"),
                ("client_id", &self.credentials.client_id),
                ("client_secret", self.credentials.client_secret.expose()),
                ("refresh_token", st.current.refresh_token.expose()),
            ])
            .await;
        let body = match answer {
            Ok(body) => body,
            // Never sent (the request budget, a 601 pause): not a failure of the refresh, so no
            // backoff; the next call tries again.
            Err(e) if e.not_sent() => return Err(TokenError::RefreshFailed(e.to_string())),
            Err(e) if is_permanent(&e) => {
                self.count("permanent_error");
                let mut reason = e.to_string();
                // Logged once: from now on callers get the error without another request.
                match &self.account {
                    Some(account) => {
                        tracing::error!(
                            account = %account,
                            error = %reason,
                            token_file = %self.store.path().display(),
                            "Withings refused the refresh token, so no new access token can be had: run `withings-exporter auth --account {account}` to authorize again (the running exporter picks up the new file); if the error names the client, check WITHINGS_CLIENT_ID and WITHINGS_CLIENT_SECRET"
                        );
                        // Shown on the landing page and in every probe's error: what to run.
                        reason =
                            format!("{reason}; run `withings-exporter auth --account {account}`");
                    }
                    None => tracing::error!(
                        error = %reason,
                        token_file = %self.store.path().display(),
                        "Withings refused the refresh token, so no new access token can be had: run `withings-exporter auth` with this WITHINGS_TOKEN_FILE to authorize again (the running exporter picks up the new file); if the error names the client, check WITHINGS_CLIENT_ID and WITHINGS_CLIENT_SECRET"
                    ),
                }
                st.rejected = Some(reason.clone());
                st.file_mtime = self.store.modified();
                return Err(TokenError::ReauthorizationNeeded(reason));
            }
            Err(e) => {
                self.count("transient_error");
                st.failures = st.failures.saturating_add(1);
                let wait_seconds = match &e {
                    ApiError::Status { wait_seconds, .. } => {
                        wait_seconds.and_then(|w| u64::try_from(w).ok())
                    }
                    _ => None,
                };
                let delay = backoff(&self.policy, st.failures, wait_seconds);
                st.retry_at = Some(Instant::now() + delay);
                tracing::warn!(account = self.who(), error = %e, retry_in_seconds = delay.as_secs_f64(), "refreshing the access token failed; keeping the current tokens and retrying later");
                return Err(TokenError::RefreshFailed(e.to_string()));
            }
        };
        st.failures = 0;
        st.retry_at = None;
        let now = self.unix_now();
        let fresh = StoredTokens {
            access_token: body.access_token,
            refresh_token: body.refresh_token,
            expires_at: now.saturating_add(body.expires_in),
            obtained_at: Some(now),
            userid: body.userid.or_else(|| st.current.userid.clone()),
            scope: body.scope.or_else(|| st.current.scope.clone()),
        };
        // Saved before it is used: see `State::unsaved`.
        match self.store.save(&fresh) {
            Ok(()) => {
                self.count("success");
                let token = fresh.access_token.clone();
                tracing::info!(
                    account = self.who(),
                    expires_at = fresh.expires_at,
                    "refreshed the access token and saved the new pair"
                );
                self.adopt(st, fresh);
                Ok(token)
            }
            Err(e) => {
                self.count("save_error");
                tracing::error!(account = self.who(), error = %e, "the refreshed token pair could not be saved; it is held in memory and not used until it is saved, and the saved pair stays valid meanwhile");
                st.unsaved = Some(fresh);
                Err(TokenError::NotSaved(e.to_string()))
            }
        }
    }

    fn count(&self, outcome: &str) {
        self.refreshes.with_label_values(&[outcome]).inc();
    }
}

/// On the token endpoint, a refused refresh token comes as "invalid parameters" (e.g. 503),
/// a refused client as that or an authentication status; none improves by retrying.
fn is_permanent(e: &ApiError) -> bool {
    matches!(
        e.class(),
        Some(StatusClass::Auth | StatusClass::Unauthorized | StatusClass::InvalidParams)
    )
}

fn backoff_left(st: &State) -> Option<Duration> {
    st.retry_at
        .and_then(|at| at.checked_duration_since(Instant::now()))
        .filter(|d| !d.is_zero())
}

/// Exponential, capped, with jitter so that many exporters of one application (they share
/// its rate limit) do not retry in step; never shorter than Withings' `wait_seconds`.
fn backoff(policy: &RefreshPolicy, failures: u32, wait_seconds: Option<u64>) -> Duration {
    let exp = policy
        .backoff_base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(policy.backoff_cap);
    let mut bytes = [0u8; 4];
    let fraction = match getrandom::getrandom(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
        Err(_) => 1.0,
    };
    let jittered = exp.mul_f64(0.5 + 0.5 * fraction);
    jittered.max(Duration::from_secs(wait_seconds.unwrap_or(0)))
}

fn expiry_gauge(tokens: &StoredTokens) -> i64 {
    if tokens.access_token.is_empty() {
        0
    } else {
        tokens.expires_at
    }
}

pub use crate::files::read_secret_file;

impl crate::withings::TokenSupply for TokenSource {
    fn token(&self) -> crate::withings::paging::BoxFuture<'_, Result<Secret, TokenError>> {
        Box::pin(self.access_token())
    }

    fn refreshed<'a>(
        &'a self,
        rejected: &'a Secret,
    ) -> crate::withings::paging::BoxFuture<'a, Result<Option<Secret>, TokenError>> {
        Box::pin(self.after_auth_failure(rejected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_wait_seconds() {
        let policy = RefreshPolicy {
            max_margin: Duration::from_secs(300),
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(300),
        };
        for failures in 1..=12 {
            let d = backoff(&policy, failures, None);
            let full = Duration::from_secs(2u64 << (failures - 1)).min(Duration::from_secs(300));
            assert!(d >= full / 2 && d <= full, "{failures}: {d:?} vs {full:?}");
        }
        assert!(backoff(&policy, 1, Some(60)) >= Duration::from_secs(60));
    }

    #[test]
    fn permanent_and_transient_token_endpoint_failures() {
        let status = |s: i64| ApiError::Status {
            status: s,
            class: StatusClass::of(s),
            message: String::new(),
            wait_seconds: None,
        };
        for s in [503, 293, 401, 214] {
            assert!(is_permanent(&status(s)), "{s}");
        }
        for e in [
            status(522),
            status(524),
            status(601),
            ApiError::Http {
                status: 502,
                url: "http://127.0.0.1:1/v2/oauth2".into(),
            },
            ApiError::Transport("refused".into()),
            ApiError::Timeout(Duration::from_secs(1)),
        ] {
            assert!(!is_permanent(&e), "{e:?}");
        }
    }
}
