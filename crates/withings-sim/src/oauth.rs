//! The simulator's OAuth authority: the authorization page (by default a signed-in user who
//! always consents; interactive, a "sign in as" choice of the users and a "decline"), the
//! token endpoint, access-token expiry and refresh-token rotation, as `withings-api.md`
//! ("Tokens") describes them.

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use url::Url;

/// How long an authorization code can be exchanged.
pub const CODE_LIFETIME_MS: i64 = 30_000;
/// How long a replaced refresh token keeps working if the new access token is never used.
pub const SUPERSEDED_REFRESH_LIFETIME_MS: i64 = 8 * 3600 * 1000;

/// The one application registered with the simulator.
#[derive(Debug, Clone)]
pub struct OAuthOptions {
    pub client_id: String,
    pub client_secret: String,
    /// The callback URL registered for the application; `redirect_uri` must equal it.
    pub redirect_uri: String,
    /// Lifetime of issued access tokens (3 hours at Withings). `expires_in` is its whole
    /// seconds, so a lifetime under a second is announced as 0.
    pub access_token_lifetime: Duration,
    pub userid: String,
}

impl Default for OAuthOptions {
    fn default() -> Self {
        Self {
            client_id: "test-client-id".into(),
            client_secret: "test-client-secret".into(),
            redirect_uri: "http://127.0.0.1:19101/callback".into(),
            access_token_lifetime: Duration::from_secs(10_800),
            userid: "12345".into(),
        }
    }
}

#[derive(Debug)]
struct Code {
    userid: String,
    issued_ms: i64,
    redirect_uri: String,
    scope: String,
    used: bool,
}

#[derive(Debug)]
struct Access {
    userid: String,
    expires_ms: i64,
    used: bool,
}

#[derive(Debug)]
enum RefreshState {
    Active,
    /// Replaced: dies once `successor` (the access token issued with its replacement) is
    /// used, or 8 hours after the replacement was issued.
    Superseded {
        successor: String,
        since_ms: i64,
    },
}

#[derive(Debug)]
pub(crate) struct OAuth {
    options: OAuthOptions,
    codes: HashMap<String, Code>,
    access: HashMap<String, Access>,
    /// Refresh token → its state, scope and user.
    refresh: HashMap<String, (RefreshState, String, String)>,
    serial: u64,
    /// The user the authorization page sees as signed in.
    signed_in: String,
    /// The authorization page asks who signs in, and whether they consent, instead of
    /// redirecting at once (for browsers: the demo and the browser tests).
    interactive: bool,
}

/// What the authorize endpoint does with a request.
pub(crate) enum Authorize {
    Redirect(String),
    /// Withings shows an error page rather than redirecting to an unregistered URI.
    ErrorPage(String),
    /// The sign-in and consent page (HTML).
    Page(String),
}

impl OAuth {
    pub(crate) fn new(options: OAuthOptions) -> Self {
        Self {
            signed_in: options.userid.clone(),
            options,
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            serial: 0,
            interactive: false,
        }
    }

    fn next(&mut self, kind: &str) -> String {
        self.serial += 1;
        // Unique and recognisable in test output; the secrecy of simulated tokens is moot.
        format!(
            "sim-{kind}-{}-{:x}",
            self.serial,
            self.serial.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        )
    }

    pub(crate) fn set_redirect_uri(&mut self, uri: &str) {
        self.options.redirect_uri = uri.to_owned();
    }

    pub(crate) fn set_access_token_lifetime(&mut self, lifetime: Duration) {
        self.options.access_token_lifetime = lifetime;
    }

    pub(crate) fn set_interactive(&mut self, interactive: bool) {
        self.interactive = interactive;
    }

    pub(crate) fn sign_in(&mut self, userid: &str) {
        userid.clone_into(&mut self.signed_in);
    }

    pub(crate) fn credentials(&self) -> (String, String) {
        (
            self.options.client_id.clone(),
            self.options.client_secret.clone(),
        )
    }

    /// Issues a pair directly, as if `userid` had authorized; for tests that start from a
    /// token file.
    pub(crate) fn issue_pair(&mut self, now_ms: i64, userid: &str) -> (String, String, i64) {
        let scope = "user.metrics".to_owned();
        self.new_pair(now_ms, &scope, userid)
    }

    fn new_pair(&mut self, now_ms: i64, scope: &str, userid: &str) -> (String, String, i64) {
        let access = self.next("access");
        let refresh = self.next("refresh");
        let lifetime_ms =
            i64::try_from(self.options.access_token_lifetime.as_millis()).unwrap_or(i64::MAX);
        self.access.insert(
            access.clone(),
            Access {
                userid: userid.to_owned(),
                expires_ms: now_ms.saturating_add(lifetime_ms),
                used: false,
            },
        );
        self.refresh.insert(
            refresh.clone(),
            (RefreshState::Active, scope.to_owned(), userid.to_owned()),
        );
        (access, refresh, lifetime_ms / 1000)
    }

    /// The user whose data this access token opens now, if any; marks it used, which kills
    /// the refresh token it replaced.
    pub(crate) fn accept_access(&mut self, token: &str, now_ms: i64) -> Option<String> {
        match self.access.get_mut(token) {
            Some(a) if now_ms < a.expires_ms => {
                a.used = true;
                Some(a.userid.clone())
            }
            _ => None,
        }
    }

    /// Whether a refresh request with `token` would succeed now, without making one.
    pub(crate) fn refresh_usable(&self, token: &str, now_ms: i64) -> bool {
        match self.refresh.get(token) {
            Some((RefreshState::Active, _, _)) => true,
            Some((
                RefreshState::Superseded {
                    successor,
                    since_ms,
                },
                _,
                _,
            )) => {
                now_ms < since_ms.saturating_add(SUPERSEDED_REFRESH_LIFETIME_MS)
                    && !self.access.get(successor).is_some_and(|a| a.used)
            }
            None => false,
        }
    }

    /// `/oauth2_user/authorize2`: by default the signed-in user consents at once. Interactive,
    /// a GET shows a page with a button per user of `users` ("sign in as") and a "decline";
    /// the page posts back here with `userid` (a code for that user) or `decline` (a redirect
    /// with `error=access_denied` and the state, as Withings sends when the user refuses).
    pub(crate) fn authorize(
        &mut self,
        params: &BTreeMap<String, String>,
        now_ms: i64,
        users: &[String],
    ) -> Authorize {
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
        if get("client_id") != self.options.client_id {
            return Authorize::ErrorPage("invalid_client: unknown client_id".into());
        }
        let redirect_uri = get("redirect_uri");
        if redirect_uri != self.options.redirect_uri {
            return Authorize::ErrorPage(
                "redirect_uri_mismatch: the redirect_uri does not match the callback URL registered for this application".into(),
            );
        }
        let Ok(mut target) = Url::parse(redirect_uri) else {
            return Authorize::ErrorPage("invalid redirect_uri".into());
        };
        let scope = get("scope");
        let state = get("state");
        if get("response_type") != "code" || !scope.split(',').any(|s| s.trim() == "user.metrics") {
            let error = if get("response_type") != "code" {
                "unsupported_response_type"
            } else {
                "invalid_scope"
            };
            target
                .query_pairs_mut()
                .append_pair("error", error)
                .append_pair("state", state);
            return Authorize::Redirect(target.into());
        }
        let mut userid = self.signed_in.clone();
        if self.interactive {
            if params.contains_key("decline") {
                target
                    .query_pairs_mut()
                    .append_pair("error", "access_denied")
                    .append_pair("state", state);
                return Authorize::Redirect(target.into());
            }
            match params.get("userid") {
                Some(chosen) if users.contains(chosen) => chosen.clone_into(&mut userid),
                _ => return Authorize::Page(sign_in_page(params, users)),
            }
        }
        let code = self.next("code");
        self.codes.insert(
            code.clone(),
            Code {
                userid,
                issued_ms: now_ms,
                redirect_uri: redirect_uri.to_owned(),
                scope: scope.to_owned(),
                used: false,
            },
        );
        target
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", state);
        Authorize::Redirect(target.into())
    }

    /// `POST /v2/oauth2`: the envelope to answer.
    pub(crate) fn token_endpoint(
        &mut self,
        params: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> Value {
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
        let invalid = |error: &str| json!({"status": 503, "body": {}, "error": format!("Invalid Params: {error}")});
        if get("action") != "requesttoken" {
            return json!({"status": 2554, "body": {}, "error": "Not implemented"});
        }
        if get("client_id") != self.options.client_id
            || get("client_secret") != self.options.client_secret
        {
            return invalid("invalid client_id or client_secret");
        }
        let (access, refresh, expires_in, scope, userid) = match get("grant_type") {
            "authorization_code" => {
                let redirect_uri = get("redirect_uri");
                let Some(code) = self.codes.get_mut(get("code")) else {
                    return invalid("invalid code");
                };
                if code.used || now_ms >= code.issued_ms + CODE_LIFETIME_MS {
                    return invalid("invalid code: the code is expired or was already used");
                }
                if redirect_uri != code.redirect_uri {
                    return invalid("redirect_uri_mismatch");
                }
                code.used = true;
                let scope = code.scope.clone();
                let userid = code.userid.clone();
                let (a, r, e) = self.new_pair(now_ms, &scope, &userid);
                (a, r, e, scope, userid)
            }
            "refresh_token" => {
                let old = get("refresh_token").to_owned();
                if !self.refresh_usable(&old, now_ms) {
                    return invalid("invalid refresh_token");
                }
                let (scope, userid) = self
                    .refresh
                    .get(&old)
                    .map(|(_, s, u)| (s.clone(), u.clone()))
                    .unwrap_or_default();
                let (a, r, e) = self.new_pair(now_ms, &scope, &userid);
                self.refresh.insert(
                    old,
                    (
                        RefreshState::Superseded {
                            successor: a.clone(),
                            since_ms: now_ms,
                        },
                        scope.clone(),
                        userid.clone(),
                    ),
                );
                (a, r, e, scope, userid)
            }
            _ => return invalid("grant_type"),
        };
        json!({
            "status": 0,
            "body": {
                "userid": userid,
                "access_token": access,
                "refresh_token": refresh,
                "expires_in": expires_in,
                "scope": scope,
                "csrf_token": "sim-csrf",
                "token_type": "Bearer",
            }
        })
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The simulated sign-in and consent page: the request's parameters carried in hidden
/// fields, one button per user, and a decline.
fn sign_in_page(params: &BTreeMap<String, String>, users: &[String]) -> String {
    let mut hidden = String::new();
    for key in [
        "response_type",
        "client_id",
        "scope",
        "state",
        "redirect_uri",
    ] {
        if let Some(value) = params.get(key) {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{key}\" value=\"{}\">",
                html_escape(value)
            ));
        }
    }
    let mut buttons = String::new();
    for user in users {
        let user = html_escape(user);
        buttons.push_str(&format!(
            "<li><button type=\"submit\" name=\"userid\" value=\"{user}\">Sign in as user {user}</button></li>"
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Withings (simulated): sign in</title></head><body><main><h1>Withings (simulated)</h1><p>An application asks to read: {scope}.</p><form method=\"post\" action=\"/oauth2_user/authorize2\">{hidden}<h2>Sign in and allow</h2><ul>{buttons}</ul><p><button type=\"submit\" name=\"decline\" value=\"1\">Decline</button></p></form></main></body></html>\n",
        scope = html_escape(params.get("scope").map_or("", String::as_str)),
    )
}
