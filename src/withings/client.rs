use super::budget::{Budget, Ledger};
use super::model::{Envelope, TokenBody};
use super::ratelimit::RateLimiter;
use super::{ApiError, StatusClass};
use crate::clock::Clock;
use crate::secret::Secret;
use bytes::{Bytes, BytesMut};
use prometheus::{IntCounterVec, Opts, Registry};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// What every request to Withings passes through, shared by every account and every
/// endpoint of one application: the request budget, the 601 pause and the request counts.
#[derive(Debug)]
pub struct Limits {
    /// The clock the budget and the pause follow; tests advance it.
    pub clock: Clock,
    pub budget: Budget,
    pub pause: RateLimiter,
    requests: IntCounterVec,
    held_back: IntCounterVec,
}

impl Limits {
    /// The limits of a process with nobody to share them with.
    pub fn new(per_minute: u32, clock: Clock) -> Self {
        Self::shared(per_minute, clock, None)
    }

    /// The limits of a process sharing its budget and 601 pause with every other process
    /// that keeps its ledger at `ledger` (the token directory's `.budget`).
    pub fn shared(per_minute: u32, clock: Clock, ledger: Option<std::path::PathBuf>) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "withings_api_requests_total",
                "Requests made to the Withings API, by action and answer: the body status, or http_error, redirect, timeout, transport_error, invalid_response, too_large (over WITHINGS_MAX_RESPONSE_BYTES).",
            ),
            &["action", "status"],
        )
        .expect("static metric definition");
        let held_back = IntCounterVec::new(
            Opts::new(
                "withings_api_requests_held_back_total",
                "Requests to Withings not made, by reason: budget (WITHINGS_REQUESTS_PER_MINUTE spent for now), rate_limited (waiting out a 601).",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        for reason in ["budget", "rate_limited"] {
            held_back.with_label_values(&[reason]);
        }
        let mut budget = Budget::new(per_minute, clock.clone());
        let mut pause = RateLimiter::new(clock.clone());
        if let Some(path) = ledger {
            let ledger = Arc::new(Ledger::new(path));
            budget = budget.with_ledger(Arc::clone(&ledger));
            pause = pause.with_ledger(ledger);
        }
        Self {
            budget,
            pause,
            clock,
            requests,
            held_back,
        }
    }

    /// Adds the request counters to the application's registry.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.held_back.clone()))
    }

    /// Admits one request, or says why not; the only door to Withings.
    fn admit(&self) -> Result<(), ApiError> {
        if let Some(left) = self.pause.remaining() {
            self.held_back.with_label_values(&["rate_limited"]).inc();
            return Err(ApiError::Paused(left));
        }
        self.budget.try_take().map_err(|wait| {
            self.held_back.with_label_values(&["budget"]).inc();
            ApiError::BudgetExhausted(wait)
        })
    }

    /// Records how a request that went out was answered; a 601 pauses every account.
    fn answered<T>(&self, action: &str, answer: &Result<T, ApiError>) {
        let status = match answer {
            Ok(_) => "0".to_owned(),
            Err(e) => e.status_label(),
        };
        self.requests
            .with_label_values(&[action, status.as_str()])
            .inc();
        match answer {
            Err(
                e @ ApiError::Status {
                    class: StatusClass::RateLimited,
                    wait_seconds,
                    ..
                },
            ) => {
                let wait = self.pause.rate_limited(*wait_seconds);
                // One line per 601: it says what happens next, for every account.
                tracing::warn!(
                    action,
                    status = status.as_str(),
                    wait_seconds = wait.as_secs_f64(),
                    error = %e,
                    "Withings is rate-limiting this application; no request for any account until the wait has passed, serving the last known values meanwhile"
                );
            }
            // Only an answer from Withings ends a backoff; a transport failure says nothing.
            Ok(_) | Err(ApiError::Status { .. }) => self.pause.answered(),
            Err(_) => {}
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(super::budget::DEFAULT_PER_MINUTE, Clock::default())
    }
}

/// Limits on every call to Withings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Answers larger than this are refused rather than buffered: a full history of a real
    /// account is a few MiB, so this only stops a broken or hostile upstream.
    pub max_body_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            max_body_bytes: 32 * 1024 * 1024,
        }
    }
}

/// One request to an endpoint of the API: its path under `WITHINGS_API_URL`, the
/// `action` label it is counted under, and its form. The form carries the parameters (and
/// the callback URL of `notify`, our secret) in the body, so nothing secret is in a URL;
/// `Debug` names the fields without their values for the same reason.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    pub path: &'static str,
    /// The `action` label of `withings_api_requests_total`.
    pub action: &'static str,
    pub form: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("path", &self.path)
            .field("action", &self.action)
            .field(
                "form",
                &self.form.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Request {
    /// A request whose form says `action=action`.
    pub fn new(path: &'static str, action: &'static str) -> Self {
        Self {
            path,
            action,
            form: vec![("action", action.to_owned())],
        }
    }

    /// Names the request `label` in `withings_api_requests_total` rather than by its form's
    /// action, where two endpoints share an action (`list` of notify and of heart).
    pub fn labelled(mut self, label: &'static str) -> Self {
        self.action = label;
        self
    }

    /// Adds one field to the form.
    pub fn field(mut self, name: &'static str, value: impl ToString) -> Self {
        self.form.push((name, value.to_string()));
        self
    }

    /// Adds `offset` when there is one (every page but the first).
    pub fn offset(self, offset: Option<i64>) -> Self {
        match offset {
            Some(offset) => self.field("offset", offset),
            None => self,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WithingsClient {
    http: reqwest::Client,
    oauth_url: Url,
    /// The base every endpoint's path is joined to.
    api_url: Url,
    options: ClientOptions,
    limits: Arc<Limits>,
}

impl WithingsClient {
    /// A client with a budget of its own (the default requests a minute), for a process that
    /// makes a few requests (`auth`); an exporter shares one [`Limits`] between all its
    /// clients with [`WithingsClient::with_limits`].
    pub fn new(api_url: &Url, options: ClientOptions) -> Result<Self, ApiError> {
        Self::with_limits(api_url, options, Arc::new(Limits::default()))
    }

    pub fn with_limits(
        api_url: &Url,
        options: ClientOptions,
        limits: Arc<Limits>,
    ) -> Result<Self, ApiError> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("withings-exporter/", env!("CARGO_PKG_VERSION")))
            // Withings never redirects. Following one would export another host's readings,
            // and re-send the client secret and refresh token there (307/308 keep the body).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::Transport(error_chain(&e)))?;
        Ok(Self {
            http,
            oauth_url: join(api_url, "v2/oauth2"),
            api_url: api_url.clone(),
            options,
            limits,
        })
    }

    /// The client of an application, with its budget following `clock`, from the
    /// configuration: the exporter's and the backfill's. With a `ledger` (the accounts'
    /// [`crate::config::AccountsConfig::budget_ledger`]) the budget and the 601 pause are
    /// shared with every other process keeping the same one.
    pub fn from_config(
        config: &crate::config::WithingsConfig,
        ledger: Option<std::path::PathBuf>,
        clock: Clock,
    ) -> Result<Self, ApiError> {
        let limits = Arc::new(Limits::shared(config.requests_per_minute, clock, ledger));
        Self::with_limits(
            &config.api_url,
            ClientOptions {
                request_timeout: config.upstream_timeout,
                connect_timeout: config.connect_timeout,
                max_body_bytes: config.max_response_bytes,
            },
            limits,
        )
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// One request to an endpoint, with `token` in the `Authorization` header: admitted by
    /// the 601 pause and the budget, sent, read by `parse`, counted. Every endpoint's form
    /// and answer live with its reader (a collector, `notify`); every request passes here.
    pub async fn call<T>(
        &self,
        token: &Secret,
        request: &Request,
        parse: impl FnOnce(&[u8]) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let http = self
            .http
            .post(join(&self.api_url, request.path))
            .bearer_auth(token.expose())
            .form(&request.form);
        self.send_counted(request.action, http, parse).await
    }

    /// One request through the application's limits: admitted by the 601 pause and the
    /// budget, sent, parsed, counted.
    async fn send_counted<T>(
        &self,
        action: &'static str,
        request: reqwest::RequestBuilder,
        parse: impl FnOnce(&[u8]) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        self.limits.admit()?;
        let answer = match self.send(request).await {
            Ok(body) => parse(&body),
            Err(e) => Err(e),
        };
        self.limits.answered(action, &answer);
        answer
    }

    /// `action=requesttoken` with the given form fields (grant type, client credentials,
    /// code or refresh token). Secrets travel only in the form body.
    pub async fn request_token(&self, form: &[(&str, &str)]) -> Result<TokenBody, ApiError> {
        let mut fields = Vec::with_capacity(form.len() + 1);
        fields.push(("action", "requesttoken"));
        fields.extend_from_slice(form);
        let request = self.http.post(self.oauth_url.clone()).form(&fields);
        self.send_counted("requesttoken", request, parse_token)
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Bytes, ApiError> {
        let mut response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(ApiError::Redirect {
                status: status.as_u16(),
                host: location_host(&response),
            });
        }
        if !status.is_success() {
            return Err(ApiError::Http {
                status: status.as_u16(),
                url: public_url(response.url()),
            });
        }
        let limit = self.options.max_body_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(ApiError::TooLarge { limit });
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            if body.len() + chunk.len() > limit {
                return Err(ApiError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    fn transport(&self, e: &reqwest::Error) -> ApiError {
        if e.is_timeout() {
            ApiError::Timeout(self.options.request_timeout)
        } else {
            ApiError::Transport(error_chain(e))
        }
    }
}

/// Makes ring the process's TLS provider. reqwest is built without a bundled one so that no
/// C toolchain beyond gcc is needed (ring builds with cc; aws-lc wants cmake), and it panics
/// when building a client with none installed. Call before building any `reqwest::Client`;
/// a second call changes nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where a redirect pointed, as far as it can be told without quoting the rest of the
/// `Location` (its path and query could hold anything, a token included).
fn location_host(response: &reqwest::Response) -> String {
    let Some(location) = response.headers().get(reqwest::header::LOCATION) else {
        return "no Location".into();
    };
    let target = location
        .to_str()
        .ok()
        .and_then(|l| response.url().join(l).ok());
    // A parsed host is a domain, IPv4 or IPv6 address: nothing that could forge a log line.
    match target
        .as_ref()
        .and_then(|u| u.host_str().map(|h| (h, u.port())))
    {
        Some((host, Some(port))) => format!("{host}:{port}"),
        Some((host, None)) => host.to_owned(),
        None => "an unreadable Location".into(),
    }
}

/// The URL as scheme://host[:port]/path: enough to tell which endpoint failed. Ours never
/// carry a query or credentials (`WITHINGS_API_URL` may not have them), but a message is no
/// place to find out.
fn public_url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{prefix}/{path}"));
    url
}

/// reqwest's own message is terse ("error sending request"); the cause is further down the
/// chain ("Connection refused"). URLs are dropped: they carry no secret, but they do not help.
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// serde would happily read a struct from a JSON array, field by field; Withings answers are
/// objects, so anything else is the wrong shape.
pub(crate) fn expect_object(action: &'static str, text: &[u8], what: &str) -> Result<(), ApiError> {
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(ApiError::InvalidResponse {
            action,
            detail: format!("{what} is not a JSON object"),
        }),
    }
}

fn envelope<'a>(action: &'static str, body: &'a [u8]) -> Result<Envelope<'a>, ApiError> {
    expect_object(action, body, "the answer")?;
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidResponse {
            action,
            detail: e.to_string(),
        })?;
    if envelope.status != 0 {
        let body_wait = envelope
            .body
            .and_then(|b| serde_json::from_str::<super::model::WaitBody>(b.get()).ok())
            .and_then(|b| b.wait_seconds);
        return Err(ApiError::Status {
            status: envelope.status,
            class: StatusClass::of(envelope.status),
            message: envelope
                .error_text()
                .unwrap_or_else(|| "no error text".into()),
            wait_seconds: envelope.wait_seconds.or(body_wait),
        });
    }
    Ok(envelope)
}

/// Whether an answer says status 0, whatever its body (`notify subscribe` and `revoke` may
/// send none); any other status is an [`ApiError::Status`].
pub(crate) fn success_status(action: &'static str, body: &[u8]) -> Result<(), ApiError> {
    envelope(action, body).map(drop)
}

/// The `body` object of a status-0 answer; any other status is an [`ApiError::Status`].
pub(crate) fn success_body<'a>(
    action: &'static str,
    body: &'a [u8],
) -> Result<&'a RawValue, ApiError> {
    let raw = envelope(action, body)?
        .body
        .ok_or_else(|| ApiError::InvalidResponse {
            action,
            detail: "status 0 without a body".into(),
        })?;
    expect_object(action, raw.get().as_bytes(), "body")?;
    Ok(raw)
}

/// The `body` of a status-0 answer, read as `T`.
pub(crate) fn success_body_as<'a, T: serde::Deserialize<'a>>(
    action: &'static str,
    body: &'a [u8],
) -> Result<T, ApiError> {
    serde_json::from_str(success_body(action, body)?.get()).map_err(|e| ApiError::InvalidResponse {
        action,
        detail: e.to_string(),
    })
}

/// One row of a list in an answer (a group, a day, a night, a device) read as `T`, or
/// `None` when it is not an object or does not fit: the caller skips it and counts it as
/// malformed, so that one bad row does not fail the whole answer.
pub(crate) fn row_as<'a, T: serde::Deserialize<'a>>(
    action: &'static str,
    row: &'a RawValue,
    what: &str,
) -> Option<T> {
    expect_object(action, row.get().as_bytes(), what).ok()?;
    serde_json::from_str(row.get()).ok()
}

/// Parses a `requesttoken` answer.
pub fn parse_token(body: &[u8]) -> Result<TokenBody, ApiError> {
    const ACTION: &str = "requesttoken";
    let raw = success_body(ACTION, body)?;
    let invalid = |detail: String| ApiError::InvalidResponse {
        action: ACTION,
        detail,
    };
    // serde_json's messages can quote a string value ("invalid type: string \"...\""), and
    // this body carries tokens: report only the kind of error and where it is, or the name
    // of a missing field, which is ours, not the input's.
    let token: TokenBody = serde_json::from_str(raw.get()).map_err(|e| {
        invalid(match crate::text::missing_field(&e, TokenBody::FIELDS) {
            Some(field) => format!("the token body has no {field}"),
            None => format!(
                "{:?} error in the token body at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        })
    })?;
    // Saving such a pair would replace a working refresh token with one that cannot work
    // (an empty one makes the token file unusable at the next start), and a lifetime that
    // is not positive would make every call refresh again.
    for (field, value) in [
        ("access_token", &token.access_token),
        ("refresh_token", &token.refresh_token),
    ] {
        if let Some(flaw) = crate::secret::token_flaw(value.expose()) {
            return Err(invalid(format!("{field} {flaw}")));
        }
    }
    if token.expires_in <= 0 {
        return Err(invalid(format!(
            "expires_in is {}, not a positive number of seconds",
            token.expires_in
        )));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answer_with_string_userid_parses_and_debug_hides_tokens() {
        let body = br#"{"status":0,"body":{"userid":"12345","access_token":"new-access-token","refresh_token":"new-refresh-token","expires_in":10800,"scope":"user.metrics","token_type":"Bearer"}}"#;
        let token = parse_token(body).unwrap();
        assert_eq!(token.userid.as_deref(), Some("12345"));
        assert_eq!(token.access_token.expose(), "new-access-token");
        let shown = format!("{token:?}");
        assert!(!shown.contains("new-access-token") && !shown.contains("new-refresh-token"));
    }

    #[test]
    fn bad_token_answer_does_not_echo_the_body() {
        for body in [
            &br#"{"status":0,"body":{"access_token":"sekrit-value","expires_in":"soon"}}"#[..],
            br#"{"status":0,"body":{"access_token":"a","refresh_token":"b","expires_in":1,"scope":["sekrit-value"]}}"#,
            br#"{"status":0,"body":{"access_token":{"sekrit-value":1}}}"#,
        ] {
            let err = parse_token(body).unwrap_err();
            assert!(!err.to_string().contains("sekrit"), "{err}");
        }
    }

    #[test]
    fn an_error_field_that_is_not_text_is_described_not_quoted() {
        for (error, kind) in [
            (
                r#"{"refresh_token":"sekrit-refresh-value"}"#,
                "an object of 40 bytes",
            ),
            (r#"["sekrit-refresh-value"]"#, "an array of 24 bytes"),
            ("12345", "a number of 5 bytes"),
            ("true", "a boolean of 4 bytes"),
        ] {
            let body = format!(r#"{{"status":503,"error":{error}}}"#);
            let line = parse_token(body.as_bytes()).unwrap_err().to_string();
            assert!(line.contains(&format!("error field is {kind}")), "{line}");
            assert!(
                !line.contains("sekrit") && !line.contains("12345"),
                "{line}"
            );
        }
    }

    #[test]
    fn endpoint_urls_keep_a_path_prefix() {
        let base = Url::parse("http://127.0.0.1:1/prefix/").unwrap();
        assert_eq!(
            join(&base, "measure").as_str(),
            "http://127.0.0.1:1/prefix/measure"
        );
        let base = Url::parse("https://wbsapi.withings.net").unwrap();
        assert_eq!(
            join(&base, "v2/oauth2").as_str(),
            "https://wbsapi.withings.net/v2/oauth2"
        );
    }
}
