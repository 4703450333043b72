//! Onboarding from a phone (issue 21): the invite links, the page they open, Withings'
//! redirect back to `/auth/callback`, and the landing page's "Add a person" forms.
//!
//! The invite and callback routes are outside basic auth (the person invited has no
//! password) and rate-limited per address; everything they answer carries
//! `Referrer-Policy: no-referrer`, a Content-Security-Policy without script,
//! `X-Frame-Options: DENY` and `Cache-Control: no-store`. The code exchange, the user-id
//! checks and the token file are `auth`'s ([`crate::auth::Authorization`]).

use crate::app::App;
use crate::app::accounts::{name_rule, valid_name};
use crate::auth::{AuthError, AuthSettings, Authorization};
use crate::config::{AccountsConfig, CollectorsConfig, Config, ConfigError, WithingsConfig};
pub use crate::http::html::harden;
use crate::http::html::{escape, page, unix_to_text};
use crate::invite::{Invite, InviteError, InviteStore, Refusal};
use crate::secret::Secret;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use std::collections::HashMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use url::Url;

/// Why an invite could not be made or listed. One line with what to do.
#[derive(Debug, thiserror::Error)]
pub enum OnboardError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Invite(#[from] InviteError),
    #[error("{0:?} is not an account name: {rule}", rule = name_rule())]
    BadName(String),
}

/// The invites of `WITHINGS_TOKEN_DIR`, with their links under `WITHINGS_PUBLIC_URL`.
#[derive(Debug, Clone)]
pub struct Invites {
    store: InviteStore,
    dir: PathBuf,
    public_url: Url,
}

impl Invites {
    pub fn from_config(config: &Config) -> Result<Self, OnboardError> {
        let dir = config.accounts.token_dir.clone().ok_or_else(|| ConfigError {
            variable: "WITHINGS_TOKEN_DIR",
            message: "not set; invites add accounts to that directory: set it to the directory the exporter serves accounts from".into(),
        })?;
        let public_url = config.server.public_url.clone().ok_or_else(|| ConfigError {
            variable: "WITHINGS_PUBLIC_URL",
            message: "not set; set it to the exporter's address as a browser reaches it (e.g. https://health.example.org) and register {WITHINGS_PUBLIC_URL}/auth/callback as the callback of your Withings application".into(),
        })?;
        Ok(Self::new(dir, public_url))
    }

    pub fn new(dir: PathBuf, public_url: Url) -> Self {
        Self {
            store: InviteStore::in_dir(&dir),
            dir,
            public_url,
        }
    }

    pub fn store(&self) -> &InviteStore {
        &self.store
    }

    /// `{public}/{path}`.
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.public_url.as_str().trim_end_matches('/'))
    }

    /// Where Withings sends the browser back: register it for the application.
    pub fn callback_url(&self) -> Result<Url, OnboardError> {
        Url::parse(&self.url("auth/callback")).map_err(|e| {
            OnboardError::Config(ConfigError {
                variable: "WITHINGS_PUBLIC_URL",
                message: format!("{{URL}}/auth/callback is not a URL: {e}"),
            })
        })
    }

    /// A new link for `account`. An account that exists already with a Withings user is
    /// re-authorized: the link accepts only that user. Returns the link (secret) and whether
    /// it re-authorizes.
    pub fn create(
        &self,
        account: &str,
        valid: Duration,
        now: i64,
    ) -> Result<(Secret, bool), OnboardError> {
        if !valid_name(account) {
            return Err(OnboardError::BadName(crate::text::one_line(account).into()));
        }
        let userid = self.userid_of(account);
        let reauthorize = userid.is_some();
        let token = self.store.create(account, valid, userid, now)?;
        let link = Secret::new(self.url(&format!("invite/{}", token.expose())));
        Ok((link, reauthorize))
    }

    fn userid_of(&self, account: &str) -> Option<String> {
        let path = self.dir.join(format!("{account}.json"));
        crate::account::token_store::TokenStore::new(path)
            .load()
            .ok()
            .flatten()
            .and_then(|t| t.userid)
    }

    pub fn revoke(&self, account: &str, now: i64) -> Result<usize, OnboardError> {
        Ok(self.store.revoke(account, now)?)
    }

    pub fn open(&self, now: i64) -> Result<Vec<Invite>, OnboardError> {
        Ok(self.store.open(now)?)
    }

    /// `invite --list`: one line per open invite, no link.
    pub fn listing(&self, now: i64) -> Result<String, OnboardError> {
        let open = self.open(now)?;
        if open.is_empty() {
            return Ok("no open invite\n".into());
        }
        let mut out = String::new();
        for i in open {
            let _ = writeln!(
                out,
                "{}\texpires {} ({}){}",
                i.account,
                unix_to_text(i.expires),
                crate::invite::remaining(i.expires - now),
                if i.userid.is_some() {
                    "\tre-authorization"
                } else {
                    ""
                }
            );
        }
        Ok(out)
    }
}

/// Invite and callback requests one address may make per window.
pub const RATE_LIMIT: u32 = 30;
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; beyond, the oldest windows are forgotten.
const RATE_ADDRESSES: usize = 4096;

#[derive(Debug, Default)]
struct RateLimiter {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    /// None when allowed; otherwise how long to wait.
    fn check(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut windows = crate::lock::lock(&self.windows);
        if windows.len() >= RATE_ADDRESSES {
            windows.retain(|_, (start, _)| now.duration_since(*start) < RATE_WINDOW);
            if windows.len() >= RATE_ADDRESSES {
                windows.clear();
            }
        }
        let (start, count) = windows.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= RATE_WINDOW {
            *start = now;
            *count = 0;
        }
        *count += 1;
        (*count > RATE_LIMIT).then(|| RATE_WINDOW.saturating_sub(now.duration_since(*start)))
    }
}

/// The onboarding side of the server.
pub struct Onboarding {
    invites: Invites,
    withings: WithingsConfig,
    accounts: AccountsConfig,
    collectors: CollectorsConfig,
    scopes: String,
    csrf: ring::hmac::Key,
    limiter: RateLimiter,
    grafana_url: Option<Url>,
}

impl std::fmt::Debug for Onboarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Onboarding")
            .field("public_url", &self.invites.public_url.as_str())
            .finish_non_exhaustive()
    }
}

/// What the landing page needs to show the invites and their forms.
#[derive(Clone)]
pub struct LandingInvites {
    pub open: Vec<Invite>,
    pub csrf: String,
    pub now: i64,
    pub error: Option<String>,
}

impl std::fmt::Debug for LandingInvites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LandingInvites")
            .field("open", &self.open)
            .field("csrf", &"<redacted>")
            .field("now", &self.now)
            .field("error", &self.error)
            .finish()
    }
}

impl Onboarding {
    /// None when the exporter cannot onboard (no token directory or no public URL: the
    /// landing page says what to set). Credentials are checked when someone uses a link.
    pub fn from_config(config: &Config) -> Option<Self> {
        let invites = Invites::from_config(config).ok()?;
        let scopes = crate::collector::Collectors::from_config(&config.collectors)
            .map(|c| c.scopes())
            .unwrap_or_else(|_| crate::auth::default_scopes());
        let mut key = [0u8; 32];
        if getrandom::getrandom(&mut key).is_err() {
            use ring::rand::SecureRandom;
            ring::rand::SystemRandom::new().fill(&mut key).ok()?;
        }
        Some(Self {
            invites,
            withings: config.withings.clone(),
            accounts: config.accounts.clone(),
            collectors: config.collectors.clone(),
            scopes,
            csrf: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            limiter: RateLimiter::default(),
            grafana_url: config.server.grafana_url.clone(),
        })
    }

    pub fn invites(&self) -> &Invites {
        &self.invites
    }

    pub fn grafana_url(&self) -> Option<&Url> {
        self.grafana_url.as_ref()
    }

    /// Whether this server answers `path` here, outside basic auth.
    pub fn owns(path: &str) -> bool {
        path == "/auth/callback" || path.starts_with("/invite/")
    }

    fn csrf_for(&self, purpose: &str) -> String {
        let tag = ring::hmac::sign(&self.csrf, purpose.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    fn csrf_ok(&self, purpose: &str, given: Option<&str>) -> bool {
        let Some(given) = given else { return false };
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(given) else {
            return false;
        };
        ring::hmac::verify(&self.csrf, purpose.as_bytes(), &tag).is_ok()
    }

    /// The landing page's view of the invites.
    pub fn landing(&self, now: i64) -> LandingInvites {
        let (open, error) = match self.invites.open(now) {
            Ok(open) => (open, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        LandingInvites {
            open,
            csrf: self.csrf_for("landing"),
            now,
            error,
        }
    }

    /// `/invite/TOKEN` and `/auth/callback`.
    pub async fn handle(
        &self,
        app: &Arc<App>,
        req: Request<Incoming>,
        peer: IpAddr,
    ) -> Response<Full<Bytes>> {
        if let Some(wait) = self.limiter.check(peer, Instant::now()) {
            tracing::debug!("invite request refused: too many from one address");
            let mut response = page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                "<p>Too many attempts from your address. Wait a minute and open your link again.</p>",
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
            return response;
        }
        let now = app.clock().unix_seconds();
        let path = req.uri().path().to_owned();
        if path == "/auth/callback" {
            // GET only: the exchange is not for a HEAD (a link checker) to trigger.
            if req.method() != Method::GET {
                return not_allowed("GET");
            }
            return self.callback(app, req.uri().query(), now).await;
        }
        let token = path.trim_start_matches("/invite/").to_owned();
        if !crate::invite::plausible_token(&token) {
            return refusal(&Refusal::Unknown);
        }
        match *req.method() {
            Method::GET | Method::HEAD => match self.invites.store.check(&token, now) {
                Ok(invite) => self.invite_page(&invite, &token),
                Err(e) => store_error(&e),
            },
            Method::POST => {
                let form = match read_form(req).await {
                    Ok(form) => form,
                    Err(response) => return response,
                };
                if !self.csrf_ok(
                    &format!("invite:{token}"),
                    form.get("csrf").map(String::as_str),
                ) {
                    return page(
                        StatusCode::FORBIDDEN,
                        "Please start again",
                        "<p>This form is out of date. Open your invite link again and press the button.</p>",
                    );
                }
                self.start(app, &token, now)
            }
            _ => not_allowed("GET, HEAD, POST"),
        }
    }

    fn settings(&self, account: &str) -> Result<AuthSettings, OnboardError> {
        let mut settings =
            AuthSettings::for_account(&self.withings, &self.accounts, &self.collectors, account)?;
        settings.redirect_uri = self.invites.callback_url()?;
        settings.scopes = self.scopes.clone();
        Ok(settings)
    }

    fn invite_page(&self, invite: &Invite, token: &str) -> Response<Full<Bytes>> {
        let host = self
            .invites
            .public_url
            .host_str()
            .unwrap_or("this exporter");
        let mut body = String::new();
        let _ = writeln!(
            body,
            "<p>You were invited to link your Withings account to <strong>{host}</strong>, the health exporter of the person who sent you this link, as <strong>{account}</strong>.</p>",
            host = escape(host),
            account = escape(&invite.account),
        );
        body.push_str("<h2>What will be shared</h2>\n<ul>\n");
        for scope in self.scopes.split(',') {
            let _ = writeln!(body, "<li>{}</li>", escape(scope_in_words(scope)));
        }
        body.push_str("</ul>\n<p>The exporter reads these from Withings regularly; the person who runs it can see them. You can withdraw the access at any time in your Withings account (Settings, Partner apps).</p>\n");
        if invite.userid.is_some() {
            body.push_str("<p>This link renews the access of an account that is already linked: sign in as the same person as before.</p>\n");
        }
        let _ = write!(
            body,
            "<h2>Sign in as yourself</h2>\n<p>The button opens Withings' sign-in page. Sign in with <em>your own</em> Withings login. If this browser is signed in to Withings as someone else, sign out there first (or use a private window).</p>\n<form method=\"post\" action=\"{token}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\">Continue to Withings</button></form>\n<p class=\"note\">This link works once, until {expires}.</p>\n",
            token = escape(token),
            csrf = self.csrf_for(&format!("invite:{token}")),
            expires = unix_to_text(invite.expires),
        );
        let mut response = page(StatusCode::OK, "Link your Withings account", &body);
        // The button's form is redirected to Withings' authorization page.
        let withings = self.withings.account_url.origin().ascii_serialization();
        if let Ok(csp) =
            HeaderValue::from_str(&crate::http::html::content_security_policy(Some(&withings)))
        {
            response
                .headers_mut()
                .insert(HeaderName::from_static("content-security-policy"), csp);
        }
        response
    }

    /// The button: a fresh state for the invite, and off to Withings.
    fn start(&self, app: &App, token: &str, now: i64) -> Response<Full<Bytes>> {
        let (invite, state) = match self.invites.store.begin(token, now) {
            Ok(begun) => begun,
            Err(e) => return store_error(&e),
        };
        let settings = match self.settings(&invite.account) {
            Ok(s) => s,
            Err(e) => return server_problem(&e.to_string()),
        };
        // The URL is all that is needed: no request is made before the redirect back.
        let client = app.client().clone();
        let url = Authorization::with_state(settings, client, &state).url();
        let mut response = page(
            StatusCode::SEE_OTHER,
            "Continue to Withings",
            "<p>Continue to Withings' sign-in page.</p>",
        );
        if let Ok(location) = HeaderValue::from_str(url.as_str()) {
            response.headers_mut().insert(LOCATION, location);
        }
        response
    }

    async fn callback(
        &self,
        app: &Arc<App>,
        query: Option<&str>,
        now: i64,
    ) -> Response<Full<Bytes>> {
        let params: HashMap<String, String> = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let Some(state) = params.get("state").filter(|s| !s.is_empty()) else {
            return refusal(&Refusal::UnknownState);
        };
        let invite = match self.invites.store.take_state(state, now) {
            Ok(invite) => invite,
            Err(e) => return store_error(&e),
        };
        let account = escape(&invite.account);
        if let Some(error) = params.get("error") {
            tracing::info!(account = %invite.account, "invite: Withings did not authorize (the person declined or Withings refused); nothing written");
            let reason = if error == "access_denied" {
                "You declined the access, so nothing was linked.".to_owned()
            } else {
                format!(
                    "Withings did not authorize the access ({}), so nothing was linked.",
                    escape(&crate::text::cut(error, 80))
                )
            };
            return page(
                StatusCode::OK,
                "Not linked",
                &format!(
                    "<p>{reason}</p><p>Your invite link still works until {}: open it again if you change your mind.</p>",
                    unix_to_text(invite.expires)
                ),
            );
        }
        let Some(code) = params.get("code").filter(|c| !c.is_empty()) else {
            return page(
                StatusCode::BAD_REQUEST,
                "Not linked",
                "<p>Withings sent no authorization code. Open your invite link again.</p>",
            );
        };
        let settings = match self.settings(&invite.account) {
            Ok(s) => s,
            Err(e) => return server_problem(&e.to_string()),
        };
        let authorization =
            Authorization::with_state(settings, app.client().clone(), &state_secret(state));
        let tokens = match authorization.exchange(&Secret::new(code.as_str())).await {
            Ok(tokens) => tokens,
            Err(e) => return self.exchange_refused(&invite, &e),
        };
        if let Err(e) = self.invites.store.complete(&invite, now) {
            tracing::warn!(account = %invite.account, error = %e, "invite: the account was written but the invite could not be marked used; revoke it with `withings-exporter invite --revoke NAME`");
        }
        let report = app.scan();
        tracing::info!(account = %invite.account, userid = tokens.userid.as_deref().unwrap_or("?"), added = report.added.len(), "invite: account linked");
        page(
            StatusCode::OK,
            "Done",
            &format!(
                "<p>Done: your Withings account is linked as <strong>{account}</strong>. Your data appears in the exporter within a minute.</p><p>You can close this page.</p>"
            ),
        )
    }

    fn exchange_refused(&self, invite: &Invite, e: &AuthError) -> Response<Full<Bytes>> {
        tracing::warn!(account = %invite.account, error = %e, "invite: nothing written");
        let again = format!(
            "Your invite link still works until {}.",
            unix_to_text(invite.expires)
        );
        let body = match e {
            AuthError::SameUser { other, .. } => format!(
                "<p>Nothing was saved: this Withings account is already linked here as <strong>{}</strong>.</p><p>The browser was probably still signed in to Withings as that person. Sign out of Withings (or use a private window), open your invite link again and sign in as yourself. {again}</p>",
                escape(other)
            ),
            AuthError::OtherUser { account, .. } => format!(
                "<p>Nothing was saved: <strong>{}</strong> belongs to another Withings user than the one who signed in.</p><p>Sign out of Withings, open your link again and sign in as the same person as before. {again}</p>",
                escape(account)
            ),
            AuthError::CodeRefused(_) => format!(
                "<p>Nothing was saved: Withings refused the sign-in code (it is valid for 30 seconds and once).</p><p>Open your invite link again. {again}</p>"
            ),
            AuthError::RedirectMismatch(_) | AuthError::BadClient(_) => {
                "<p>Nothing was saved: the exporter's Withings application is not set up for this address. Tell the person who sent you the link; their log says what to fix.</p>".into()
            }
            _ => format!(
                "<p>Nothing was saved: the sign-in could not be completed. Try again in a moment. {again}</p>"
            ),
        };
        page(StatusCode::BAD_REQUEST, "Not linked", &body)
    }

    /// The landing page's POSTs: `/invites` (create) and `/invites/revoke`. Behind basic
    /// auth when a web configuration sets users, and with the landing page's CSRF token.
    /// Returns the page to show (the new link), or a redirect back.
    pub async fn landing_post(
        &self,
        app: &Arc<App>,
        req: Request<Incoming>,
        path: &str,
    ) -> Response<Full<Bytes>> {
        let form = match read_form(req).await {
            Ok(form) => form,
            Err(response) => return response,
        };
        if !self.csrf_ok("landing", form.get("csrf").map(String::as_str)) {
            return page(
                StatusCode::FORBIDDEN,
                "Please start again",
                "<p>This form is out of date: go back to the <a href=\"./\">landing page</a>, reload it and try again.</p>",
            );
        }
        let now = app.clock().unix_seconds();
        let account = form.get("account").map(|a| a.trim()).unwrap_or("");
        match path {
            "/invites/revoke" => {
                if let Err(e) = self.invites.revoke(account, now) {
                    return server_problem(&e.to_string());
                }
                tracing::info!(account, "invite revoked from the landing page");
                let mut response = page(
                    StatusCode::SEE_OTHER,
                    "Revoked",
                    "<p>Revoked. <a href=\"./\">Back</a></p>",
                );
                response
                    .headers_mut()
                    .insert(LOCATION, HeaderValue::from_static("./"));
                response
            }
            _ => {
                let valid = form.get("valid").map_or("72h", String::as_str);
                let valid = match crate::invite::parse_validity(valid) {
                    Ok(v) => v,
                    Err(e) => return bad_form(&e.to_string()),
                };
                match self.invites.create(account, valid, now) {
                    Ok((link, reauthorize)) => {
                        tracing::info!(
                            account,
                            reauthorize,
                            "invite created from the landing page"
                        );
                        self.link_page(account, &link, reauthorize, now + valid.as_secs() as i64)
                    }
                    Err(e @ OnboardError::BadName(_)) => bad_form(&e.to_string()),
                    Err(e) => server_problem(&e.to_string()),
                }
            }
        }
    }

    fn link_page(
        &self,
        account: &str,
        link: &Secret,
        reauthorize: bool,
        expires: i64,
    ) -> Response<Full<Bytes>> {
        let link = link.expose();
        let qr = qr_svg(link);
        let body = format!(
            "<p>{what} <strong>{account}</strong>. Send this link to the person (a message, or let them scan the code with their phone's camera). It works once, until {expires}.</p>\n<p><label for=\"link\">Invite link</label><br><input id=\"link\" class=\"link\" type=\"text\" readonly value=\"{link}\"></p>\n<figure>{qr}<figcaption>The same link as a QR code</figcaption></figure>\n<p><a href=\"./\">Back to the household</a></p>\n",
            what = if reauthorize {
                "Re-authorization link for"
            } else {
                "Invite link for"
            },
            account = escape(account),
            expires = unix_to_text(expires),
            link = escape(link),
        );
        page(StatusCode::OK, "Invite link", &body)
    }
}

fn state_secret(state: &str) -> Secret {
    Secret::new(state)
}

/// The scope in plain words, for the invite page.
pub fn scope_in_words(scope: &str) -> &str {
    match scope {
        "user.metrics" => {
            "Your measurements: weight and body composition, blood pressure, heart rate, SpO2, temperature."
        }
        "user.activity" => {
            "Your activity and sleep: steps, distance, calories, sleep duration and stages."
        }
        "user.info" => "Your devices: their model and battery level.",
        other => other,
    }
}

/// An SVG QR code of `text` (the invite link), drawn as one path: no script, no image
/// request.
pub fn qr_svg(text: &str) -> String {
    use qrcode::{EcLevel, QrCode};
    let Ok(code) = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M) else {
        return String::new();
    };
    let width = code.width();
    let quiet = 4;
    let size = width + 2 * quiet;
    let mut path = String::new();
    for (i, color) in code.to_colors().iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (x, y) = (i % width + quiet, i / width + quiet);
            let _ = write!(path, "M{x} {y}h1v1h-1z");
        }
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" width=\"240\" height=\"240\" role=\"img\" aria-label=\"QR code of the invite link\" shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>"
    )
}

/// The form of a POST: at most 8 KiB, within 10 seconds.
async fn read_form(
    req: Request<Incoming>,
) -> Result<HashMap<String, String>, Response<Full<Bytes>>> {
    let body = Limited::new(req.into_body(), 8 * 1024).collect();
    match tokio::time::timeout(Duration::from_secs(10), body).await {
        Ok(Ok(collected)) => Ok(url::form_urlencoded::parse(&collected.to_bytes())
            .into_owned()
            .collect()),
        _ => Err(bad_form("the form could not be read")),
    }
}

fn bad_form(message: &str) -> Response<Full<Bytes>> {
    page(
        StatusCode::BAD_REQUEST,
        "Not done",
        &format!("<p>{}</p><p><a href=\"./\">Back</a></p>", escape(message)),
    )
}

fn server_problem(message: &str) -> Response<Full<Bytes>> {
    tracing::warn!(error = message, "onboarding: cannot go on");
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Not done",
        "<p>The exporter cannot complete this now. Tell the person who runs it: its log says what to fix.</p>",
    )
}

fn store_error(e: &InviteError) -> Response<Full<Bytes>> {
    match e {
        InviteError::Refused(r) => refusal(r),
        other => server_problem(&other.to_string()),
    }
}

fn refusal(r: &Refusal) -> Response<Full<Bytes>> {
    let (status, title) = match r {
        Refusal::Unknown => (StatusCode::NOT_FOUND, "Unknown invite link"),
        Refusal::Expired => (StatusCode::GONE, "Invite link expired"),
        Refusal::Revoked => (StatusCode::GONE, "Invite link revoked"),
        Refusal::Used => (StatusCode::GONE, "Invite link already used"),
        Refusal::UnknownState => (StatusCode::BAD_REQUEST, "Sign-in not recognised"),
    };
    page(
        status,
        title,
        &format!("<p>{}</p><p>Nothing was saved.</p>", escape(&r.to_string())),
    )
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = page(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "<p>Method not allowed.</p>",
    );
    response
        .headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_counts_per_address_and_window() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..RATE_LIMIT {
            assert_eq!(limiter.check(a, t0), None);
        }
        assert!(limiter.check(a, t0).is_some());
        assert_eq!(
            limiter.check(b, t0),
            None,
            "another address is not held back"
        );
        assert_eq!(limiter.check(a, t0 + RATE_WINDOW), None, "a new window");
    }

    #[test]
    fn the_qr_code_is_an_svg_without_script() {
        let svg =
            qr_svg("https://health.example.org/invite/abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG");
        assert!(
            svg.starts_with("<svg") && svg.contains("<path d=\"M"),
            "{svg}"
        );
        assert!(!svg.contains("script"));
    }
}
