//! A simulated Withings API, faithful to `withings-api.md`: the demo runs against it, and the
//! tests use it as their only fake Withings, switching it into failure modes as they need.

pub mod data;
pub mod demo;
pub mod demo_extras;
pub mod history;
pub mod household;
pub mod notify;
pub mod oauth;
mod routes;

pub use oauth::OAuthOptions;
use routes::{envelope_reply, lock, serve, unix_now, unix_now_ms};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Url;

/// The body Withings sends, with HTTP 200, for an expired or invalid access token (the seed).
pub const EXPIRED_TOKEN_BODY: &str = r#"{"status":401,"body":{},"error":"XRequestID: Not provided invalid_token: The access token provided is invalid"}"#;

/// A way for the simulator to misbehave on a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// HTTP 200 with status 401, as the seed shows.
    ExpiredToken,
    /// HTTP 200 with any body status, an `error` text and optionally `wait_seconds`.
    Status {
        status: i64,
        error: String,
        wait_seconds: Option<i64>,
    },
    /// A non-200 HTTP answer, e.g. a proxy's HTML error page.
    Http { status: u16, body: String },
    /// An HTTP redirect (301, 302, 303, 307, 308) to `location`, as a hijacked DNS name or
    /// a misconfigured proxy could send: the client must not follow it.
    Redirect { status: u16, location: String },
    /// HTTP 200 with exactly this body: garbage, truncated JSON, the wrong shape.
    Body(String),
    /// Answer normally, but only after this long.
    Delay(Duration),
    /// HTTP 200 announcing this whole body, of which only the first half is sent before the
    /// connection is aborted: a connection reset in the middle of the body.
    ResetMidBody(String),
}

/// One request the simulator received, for tests to inspect.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Query string and form body parameters together.
    pub params: BTreeMap<String, String>,
    pub bearer: Option<String>,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    pub listen: SocketAddr,
    /// Access tokens the measure endpoint accepts.
    pub access_tokens: Vec<String>,
    /// Groups per `getmeas` page; beyond it the answer says `more` and gives an `offset`.
    pub page_size: usize,
    /// Generate demo readings as time passes.
    pub live: bool,
    pub timezone: String,
    /// The registered application and token lifetimes of the OAuth endpoints.
    pub oauth: OAuthOptions,
}

impl Default for SimulatorOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_tokens: vec!["test-access-token".into()],
            page_size: 500,
            live: false,
            timezone: "Europe/Berlin".into(),
            oauth: OAuthOptions::default(),
        }
    }
}

/// A measure group as stored: the JSON that is served, and what filtering needs from it.
#[derive(Debug, Clone)]
struct StoredGroup {
    json: Value,
    grpid: i64,
    date: i64,
    modified: i64,
    category: i64,
}

impl StoredGroup {
    fn from_json(json: Value) -> Result<Self, SimulatorError> {
        let int = |key: &str| json.get(key).and_then(Value::as_i64);
        let grpid = int("grpid").ok_or(SimulatorError::Group("grpid"))?;
        let date = int("date").ok_or(SimulatorError::Group("date"))?;
        if !json.get("measures").is_some_and(Value::is_array) {
            return Err(SimulatorError::Group("measures"));
        }
        Ok(Self {
            modified: int("modified").or(int("created")).unwrap_or(date),
            category: int("category").unwrap_or(1),
            grpid,
            date,
            json,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("a measure group lacks a valid `{0}`")]
    Group(&'static str),
    #[error("not a getmeas response or measuregrps array: {0}")]
    Fixture(String),
}

/// One simulated Withings user: their readings, and the demo generator that adds to them.
#[derive(Default)]
struct User {
    groups: Vec<StoredGroup>,
    live: Option<(demo::Live, Profile)>,
    /// Activity, sleep and devices of the user, beside the groups.
    extras: data::UserExtras,
    /// Generate demo activity, sleep and devices as time passes.
    live_extras: bool,
    /// Until when the arrivals of the generated data were notified (`None`: never yet).
    extras_notified_until: Option<i64>,
}

impl User {
    /// The demo extras of this live user as they stand at `now`.
    fn live_extras_at(&self, now: i64, timezone: &str) -> data::UserExtras {
        let ecg_afib = self.live.as_ref().and_then(|(_, profile)| profile.ecg_afib);
        let mut extras = demo_extras::household_extras(now, timezone);
        extras.ecgs = demo_extras::ecgs(now, timezone, ecg_afib);
        extras
    }
}

/// How one member of the demo household differs from the generator's person: which devices
/// they use and how their numbers are shifted.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Added to grpids so that members never share a group id.
    pub index: i64,
    pub devices: &'static [&'static str],
    pub systolic_shift: i64,
    pub pulse_shift: i64,
    /// The classification of the ECG their watch took yesterday (0 negative, 1 atrial
    /// fibrillation, 2 inconclusive), `None` for a member without an ECG device.
    pub ecg_afib: Option<i64>,
}

impl Profile {
    /// The generator's groups as this member measures them, or `None` for another's device.
    fn personalize(&self, mut group: Value) -> Option<Value> {
        let model = group["model"].as_str().unwrap_or_default();
        if !self.devices.contains(&model) {
            return None;
        }
        if let Some(grpid) = group["grpid"].as_i64() {
            group["grpid"] = json!(grpid + self.index * 1_000_000_000_000);
        }
        if let Some(measures) = group["measures"].as_array_mut() {
            for m in measures {
                let shift = match m["type"].as_i64() {
                    Some(10) => self.systolic_shift,
                    Some(9) => self.systolic_shift / 2,
                    Some(11) => self.pulse_shift,
                    _ => 0,
                };
                if let Some(v) = m["value"].as_i64() {
                    m["value"] = json!(v + shift);
                }
            }
        }
        Some(group)
    }
}

/// The demo household: two adults and a grandparent, with a blood-pressure monitor, a
/// thermometer and a watch between them, and a scale alex steps on every morning.
pub const HOUSEHOLD: [(&str, &str, Profile); 3] = [
    (
        "alex",
        "1001",
        Profile {
            index: 1,
            devices: &["ScanWatch 2", "Thermo", "Body+"],
            systolic_shift: 0,
            pulse_shift: -4,
            ecg_afib: Some(2),
        },
    ),
    (
        "sam",
        "1002",
        Profile {
            index: 2,
            devices: &["ScanWatch 2", "BPM Connect"],
            systolic_shift: -6,
            pulse_shift: 3,
            ecg_afib: Some(1),
        },
    ),
    (
        "grandma",
        "1003",
        Profile {
            index: 3,
            devices: &["BPM Connect", "Thermo"],
            systolic_shift: 14,
            pulse_shift: -2,
            ecg_afib: None,
        },
    ),
];

struct Inner {
    /// By Withings user id.
    users: BTreeMap<String, User>,
    /// The user of `set_groups` and the other single-user calls, and of the fixed tokens
    /// given in the options.
    default_user: String,
    /// Fixed access tokens (never expiring), each for one user.
    tokens: HashMap<String, String>,
    /// Bytes of every answer's body, for benchmarks.
    response_bytes: u64,
    /// Scopes each access token was not granted, for the collectors' endpoints.
    denied_scopes: HashMap<String, BTreeSet<String>>,
    /// Misbehaviour of a collector endpoint, by path ("/v2/sleep").
    endpoint_faults: BTreeMap<String, Fault>,
    fault: Option<Fault>,
    once: VecDeque<Fault>,
    requests: Vec<RecordedRequest>,
    page_size: usize,
    timezone: String,
    clock: Option<i64>,
    oauth: oauth::OAuth,
    token_fault: Option<Fault>,
    token_once: VecDeque<Fault>,
    /// While true, measure requests are recorded, then wait: tests use it to keep a fetch in
    /// flight for exactly as long as they need.
    hold: watch::Sender<bool>,
    /// The same for the token endpoint, to keep a refresh in flight.
    token_hold: watch::Sender<bool>,
    /// Users whose every request (by its access token) is recorded, then waits: one
    /// person's requests stalling while the others' are answered.
    held_users: watch::Sender<BTreeSet<String>>,
    /// Notification subscriptions (issue 12).
    notify: notify::Subscriptions,
}

impl Inner {
    fn user(&mut self, userid: &str) -> &mut User {
        self.users.entry(userid.to_owned()).or_default()
    }

    /// The user whose data `token` opens, if it is valid now.
    fn user_of(&mut self, token: &str) -> Option<String> {
        if let Some(userid) = self.tokens.get(token) {
            return Some(userid.clone());
        }
        let now = self.now_ms();
        self.oauth.accept_access(token, now)
    }

    /// Milliseconds, so that tests can give access tokens lifetimes under a second; follows
    /// `set_clock` when it is set.
    fn now_ms(&self) -> i64 {
        self.clock
            .map_or_else(unix_now_ms, |s| s.saturating_mul(1000))
    }
}

/// A running simulator. Cloning gives another handle to the same one.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
    stop: Arc<watch::Sender<bool>>,
}

impl Simulator {
    /// Binds and starts serving on the current Tokio runtime.
    pub async fn start(options: SimulatorOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let default_user = options.oauth.userid.clone();
        let mut users = BTreeMap::new();
        users.insert(
            default_user.clone(),
            User {
                groups: Vec::new(),
                extras: data::UserExtras::default(),
                live_extras: options.live,
                extras_notified_until: None,
                live: options.live.then(|| {
                    (
                        demo::Live::starting_at(unix_now()),
                        Profile {
                            index: 0,
                            devices: &["BPM Connect", "ScanWatch 2", "Thermo"],
                            systolic_shift: 0,
                            pulse_shift: 0,
                            ecg_afib: Some(0),
                        },
                    )
                }),
            },
        );
        let inner = Arc::new(Mutex::new(Inner {
            tokens: options
                .access_tokens
                .into_iter()
                .map(|t| (t, default_user.clone()))
                .collect(),
            users,
            default_user,
            response_bytes: 0,
            denied_scopes: HashMap::new(),
            endpoint_faults: BTreeMap::new(),
            fault: None,
            once: VecDeque::new(),
            requests: Vec::new(),
            page_size: options.page_size.max(1),
            timezone: options.timezone,
            clock: None,
            oauth: oauth::OAuth::new(options.oauth),
            token_fault: None,
            token_once: VecDeque::new(),
            hold: watch::Sender::new(false),
            token_hold: watch::Sender::new(false),
            held_users: watch::Sender::new(BTreeSet::new()),
            notify: notify::Subscriptions::default(),
        }));
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, Arc::clone(&inner), stopped));
        Ok(Self {
            inner,
            addr,
            stop: Arc::new(stop),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give the exporter as `WITHINGS_API_URL`.
    pub fn url(&self) -> Url {
        // A SocketAddr always makes a valid http URL.
        Url::parse(&format!("http://{}/", self.addr)).expect("socket address URL")
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the stored history of the default user.
    pub fn set_groups(&self, groups: Vec<Value>) -> Result<(), SimulatorError> {
        let user = self.lock().default_user.clone();
        self.set_user_groups(&user, groups)
    }

    /// Adds a group for the default user, or replaces the one with the same `grpid` (a
    /// correction).
    pub fn upsert_group(&self, group: Value) -> Result<(), SimulatorError> {
        let user = self.lock().default_user.clone();
        self.upsert_user_group(&user, group)
    }

    /// Adds a user (with no readings) if there is none with this id.
    pub fn add_user(&self, userid: &str) {
        self.lock().user(userid);
    }

    /// Adds a member of the demo household: a user whose readings are generated as time
    /// passes, as `profile` measures them.
    pub fn add_live_user(&self, userid: &str, profile: Profile) {
        let mut inner = self.lock();
        let now = inner.clock.unwrap_or_else(unix_now);
        let user = inner.user(userid);
        user.live = Some((demo::Live::starting_at(now), profile));
        user.live_extras = true;
    }

    /// Replaces the stored history of `userid` (creating the user).
    pub fn set_user_groups(&self, userid: &str, groups: Vec<Value>) -> Result<(), SimulatorError> {
        let stored = groups
            .into_iter()
            .map(StoredGroup::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        self.lock().user(userid).groups = stored;
        Ok(())
    }

    /// Adds a group for `userid`, or replaces the one with the same `grpid`.
    pub fn upsert_user_group(&self, userid: &str, group: Value) -> Result<(), SimulatorError> {
        let group = StoredGroup::from_json(group)?;
        let mut inner = self.lock();
        let user = inner.user(userid);
        match user.groups.iter_mut().find(|g| g.grpid == group.grpid) {
            Some(existing) => *existing = group,
            None => user.groups.push(group),
        }
        Ok(())
    }

    /// Replaces the default user's activity days, sleep nights and devices.
    pub fn set_extras(&self, extras: data::UserExtras) -> Result<(), data::ExtrasError> {
        let user = self.lock().default_user.clone();
        self.set_user_extras(&user, extras)
    }

    /// Replaces `userid`'s activity days, sleep nights and devices.
    pub fn set_user_extras(
        &self,
        userid: &str,
        extras: data::UserExtras,
    ) -> Result<(), data::ExtrasError> {
        extras.validate()?;
        self.lock().user(userid).extras = extras;
        Ok(())
    }

    /// The default user's activity days, sleep nights and devices as served now.
    pub fn extras(&self) -> data::UserExtras {
        let mut inner = self.lock();
        let user = inner.default_user.clone();
        inner.user(&user).extras.clone()
    }

    /// Marks `token` as not granted `scope` ("user.activity", "user.info"): the endpoints
    /// that need it answer status 277.
    pub fn deny_scope(&self, token: &str, scope: &str) {
        self.lock()
            .denied_scopes
            .entry(token.to_owned())
            .or_default()
            .insert(scope.to_owned());
    }

    /// Misbehave on every request to one collector endpoint ("/v2/measure", "/v2/sleep",
    /// "/v2/user") from now on (`None` to behave again).
    pub fn set_endpoint_fault(&self, path: &str, fault: Option<Fault>) {
        let mut inner = self.lock();
        match fault {
            Some(f) => inner.endpoint_faults.insert(path.to_owned(), f),
            None => inner.endpoint_faults.remove(path),
        };
    }

    /// The user whose browser session the authorization page sees: the next authorization
    /// code is for them, as at Withings, where a browser still signed in as one person
    /// silently authorizes that person again.
    pub fn sign_in(&self, userid: &str) {
        let mut inner = self.lock();
        inner.user(userid);
        inner.oauth.sign_in(userid);
    }

    /// Whether the authorization page asks who signs in ("sign in as" one of the users, or
    /// "decline") instead of authorizing the signed-in user at once: for browsers.
    pub fn set_interactive_authorization(&self, interactive: bool) {
        self.lock().oauth.set_interactive(interactive);
    }

    /// Loads a captured answer: a whole `getmeas` envelope, or a bare `measuregrps` array.
    pub fn load_fixture(&self, text: &str) -> Result<(), SimulatorError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| SimulatorError::Fixture(e.to_string()))?;
        let groups = match value {
            Value::Array(groups) => groups,
            Value::Object(mut envelope) => match envelope
                .get_mut("body")
                .and_then(|b| b.get_mut("measuregrps"))
                .map(Value::take)
            {
                Some(Value::Array(groups)) => groups,
                _ => return Err(SimulatorError::Fixture("no body.measuregrps array".into())),
            },
            _ => {
                return Err(SimulatorError::Fixture(
                    "neither an object nor an array".into(),
                ));
            }
        };
        self.set_groups(groups)
    }

    /// Misbehave on every measure request from now on (`None` to behave again).
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.lock().fault = fault;
    }

    /// Misbehave on the next measure request only; queued faults come before `set_fault`'s.
    pub fn push_fault(&self, fault: Fault) {
        self.lock().once.push_back(fault);
    }

    /// Accept `token` from now on, for the default user.
    pub fn add_access_token(&self, token: &str) {
        let mut inner = self.lock();
        let user = inner.default_user.clone();
        inner.tokens.insert(token.to_owned(), user);
    }

    /// Accept `token` from now on, for `userid`.
    pub fn add_access_token_for(&self, token: &str, userid: &str) {
        let mut inner = self.lock();
        inner.user(userid);
        inner.tokens.insert(token.to_owned(), userid.to_owned());
    }

    /// Stop accepting `token`, as when it expires.
    pub fn revoke_access_token(&self, token: &str) {
        self.lock().tokens.remove(token);
    }

    /// Fixes the simulator's clock (`updatetime`); `None` follows the real clock.
    pub fn set_clock(&self, unix_seconds: Option<i64>) {
        self.lock().clock = unix_seconds;
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// How many requests reached `path` (e.g. "/measure").
    pub fn request_count(&self, path: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// The requests recorded since the start or the last call, forgotten by the simulator:
    /// a long run counts them as it goes without the record growing.
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut self.lock().requests)
    }

    pub fn clear_requests(&self) {
        let mut inner = self.lock();
        inner.requests.clear();
        inner.response_bytes = 0;
    }

    /// Bytes of the answers' bodies since the start (or [`Simulator::clear_requests`]).
    pub fn response_bytes(&self) -> usize {
        usize::try_from(self.lock().response_bytes).unwrap_or(usize::MAX)
    }

    /// Issues a token pair as if the default user had just authorized: (access, refresh,
    /// expires_in).
    pub fn issue_token_pair(&self) -> (String, String, i64) {
        let user = self.lock().default_user.clone();
        self.issue_token_pair_for(&user)
    }

    /// Issues a token pair for `userid` as if they had just authorized.
    pub fn issue_token_pair_for(&self, userid: &str) -> (String, String, i64) {
        let mut inner = self.lock();
        inner.user(userid);
        let now = inner.now_ms();
        inner.oauth.issue_pair(now, userid)
    }

    /// The registered application's client id and secret.
    pub fn client_credentials(&self) -> (String, String) {
        self.lock().oauth.credentials()
    }

    /// How many requests reached Withings' endpoints in any 60-second window, at most: what
    /// the application's rate limit sees.
    pub fn max_requests_in_any_minute(&self) -> usize {
        let inner = self.lock();
        let times: Vec<std::time::Instant> = inner.requests.iter().map(|r| r.at).collect();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= Duration::from_secs(60) {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    /// Whether a refresh with this refresh token would be accepted now (asking does not
    /// use it up).
    pub fn refresh_token_usable(&self, token: &str) -> bool {
        let inner = self.lock();
        inner.oauth.refresh_usable(token, inner.now_ms())
    }

    /// Requests the token endpoint (`/v2/oauth2`) has answered or refused, faults included.
    pub fn token_request_count(&self) -> usize {
        self.request_count("/v2/oauth2")
    }

    /// Lifetime of access tokens issued from now on.
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.lock().oauth.set_access_token_lifetime(lifetime);
    }

    /// Changes the callback URL registered for the application.
    pub fn set_redirect_uri(&self, uri: &str) {
        self.lock().oauth.set_redirect_uri(uri);
    }

    /// Misbehave on every token-endpoint request from now on (`None` to behave again).
    pub fn set_token_fault(&self, fault: Option<Fault>) {
        self.lock().token_fault = fault;
    }

    /// Misbehave on the next token-endpoint request only.
    pub fn push_token_fault(&self, fault: Fault) {
        self.lock().token_once.push_back(fault);
    }

    /// Holds every measure request (already received ones too) until [`Simulator::release`].
    pub fn hold(&self) {
        self.lock().hold.send_replace(true);
    }

    /// Lets held measure requests, and those after, be answered.
    pub fn release(&self) {
        self.lock().hold.send_replace(false);
    }

    /// Holds every request made with an access token of `userid` (already received ones
    /// too) until [`Simulator::release_user`]; the other users' are answered.
    pub fn hold_user(&self, userid: &str) {
        self.lock().held_users.send_modify(|users| {
            users.insert(userid.to_owned());
        });
    }

    /// Lets `userid`'s held requests, and those after, be answered.
    pub fn release_user(&self, userid: &str) {
        self.lock().held_users.send_modify(|users| {
            users.remove(userid);
        });
    }

    /// Holds every token-endpoint request (already received ones too) until
    /// [`Simulator::release_token_endpoint`].
    pub fn hold_token_endpoint(&self) {
        self.lock().token_hold.send_replace(true);
    }

    /// Lets held token-endpoint requests, and those after, be answered.
    pub fn release_token_endpoint(&self) {
        self.lock().token_hold.send_replace(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_members_day_is_made_at_each_request_and_taken_requests_are_forgotten() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = Simulator::start(SimulatorOptions::default()).await.unwrap();
        let t = 1_697_844_600;
        sim.set_clock(Some(t));
        sim.add_live_user("1001", HOUSEHOLD[0].2);
        let (access, _, _) = sim.issue_token_pair_for("1001");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let samples = || async {
            let text = http
                .post(format!("{}v2/measure", sim.url()))
                .bearer_auth(&access)
                .form(&[
                    ("action", "getintradayactivity".to_owned()),
                    ("startdate", (t - 3 * 3600).to_string()),
                    ("enddate", (t + 2 * 3600).to_string()),
                ])
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let body: Value = serde_json::from_str(&text).unwrap();
            body["body"]["series"].as_object().map_or(0, |s| s.len())
        };
        let before = samples().await;
        // An hour on, the watch has synced twice more: what is listed is made for now.
        sim.set_clock(Some(t + 3600));
        let after = samples().await;
        assert!(before > 0 && after > before, "{before} then {after}");
        let taken = sim.take_requests();
        assert_eq!(taken.len(), 2);
        assert!(taken.iter().all(|r| r.path == "/v2/measure"));
        assert!(sim.take_requests().is_empty());
        assert_eq!(sim.request_count("/v2/measure"), 0);
        sim.stop();
    }
}
