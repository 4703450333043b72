//! The client side of remote write 1.0: bounded requests, a bounded number in flight,
//! retries with exponential backoff and jitter on what may pass (5xx, 429, network errors,
//! timeouts), `Retry-After` honoured, no retry on other 4xx, and a 400 split in halves until
//! the samples the receiver refuses are isolated: those are dropped, counted and logged once,
//! the rest is written.

use super::encode::{self, Invalid};
use super::proto::{MetricMetadata, TimeSeries};
use crate::secret::Secret;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use url::Url;

/// What the receiver's error body is cut to in a message.
const MAX_ERROR_CHARS: usize = 200;
/// Bytes of a receiver's error body read at most.
const MAX_ERROR_BYTES: usize = 4096;
/// Samples of one batch refused one by one, none written, before the writer concludes the
/// receiver refuses everything.
const MAX_REFUSED_ALONE: u64 = 32;
/// The longest `Retry-After` obeyed: a receiver asking for more is asked again after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

pub const SAMPLES_METRIC: &str = "withings_remote_write_samples_total";
pub const DROPPED_METRIC: &str = "withings_remote_write_samples_dropped_total";
pub const REQUESTS_METRIC: &str = "withings_remote_write_requests_total";
pub const RETRIES_METRIC: &str = "withings_remote_write_retries_total";
pub const LAST_SUCCESS_METRIC: &str = "withings_remote_write_last_success_timestamp_seconds";

/// How requests are cut and retried; Prometheus' `queue_config` names and defaults where it
/// has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Samples in one request at most (`max_samples_per_send`).
    pub max_samples_per_send: usize,
    /// Requests in flight at once at most, over every caller of one writer (`max_shards`).
    pub max_in_flight: usize,
    /// One request's time limit (`remote_timeout`).
    pub timeout: Duration,
    /// First wait before a retry (`min_backoff`), doubled at each retry up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Retry a 429 (`retry_on_http_429`, true as in Prometheus since 2.40): otherwise a 429
    /// drops the batch like another 4xx.
    pub retry_on_429: bool,
    /// How long one request is retried before the writer gives up on it (`None`: never).
    pub give_up_after: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_samples_per_send: 2_000,
            max_in_flight: 4,
            timeout: Duration::from_secs(30),
            min_backoff: Duration::from_millis(30),
            max_backoff: Duration::from_secs(5),
            retry_on_429: true,
            give_up_after: Some(Duration::from_secs(15 * 60)),
        }
    }
}

/// How the writer proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    Basic {
        username: String,
        password: Secret,
    },
    /// `Authorization: TYPE CREDENTIALS` (`Bearer` for `bearer_token_file`).
    Authorization {
        kind: String,
        credentials: Secret,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Self::Authorization { kind, .. } => f
                .debug_struct("Authorization")
                .field("kind", kind)
                .field("credentials", &"<redacted>")
                .finish(),
        }
    }
}

/// Where to write and how: everything a writer is built from.
#[derive(Debug, Clone)]
pub struct Destination {
    pub url: Url,
    /// Extra headers (`X-Scope-OrgID`...): their values may be secrets, never shown.
    pub headers: Vec<(String, Secret)>,
    pub auth: Option<Auth>,
    /// PEM: the CA certificates the receiver's certificate must chain to (instead of the
    /// system's), and the client certificate with its key.
    pub ca_pem: Option<Vec<u8>>,
    pub identity_pem: Option<Secret>,
    pub options: Options,
}

impl Destination {
    pub fn new(url: Url) -> Self {
        Self {
            url,
            headers: Vec::new(),
            auth: None,
            ca_pem: None,
            identity_pem: None,
            options: Options::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("remote write: cannot set up the client: {0}")]
    Setup(String),
    /// A 4xx other than 400 and (retried) 429: the receiver will not take these samples
    /// whatever the writer does (wrong URL, credentials, tenant...).
    #[error(
        "remote write to {url}: the receiver refused the samples for good ({status}: {message}); check the URL and credentials"
    )]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    /// A 400 for every sample tried alone: a setting at the receiver's end, not the data.
    #[error(
        "remote write to {url}: the receiver refused each of {refused} samples sent alone (400: {message}); for a Prometheus, set storage.tsdb.out_of_order_time_window to cover the history (docs/remote-write.md)"
    )]
    RefusesAll {
        url: String,
        refused: u64,
        message: String,
    },
    #[error(
        "remote write to {url}: gave up after {attempts} attempts over {seconds} s; last: {last}; is the receiver up?"
    )]
    GaveUp {
        url: String,
        attempts: u32,
        seconds: u64,
        last: String,
    },
}

/// What one [`Writer::send`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub sent: u64,
    /// Dropped by reason: refused by the receiver with a 400 (`rejected`), or not valid for
    /// remote write (`invalid`: label names...).
    pub dropped: Vec<(&'static str, u64)>,
    pub requests: u64,
    pub retries: u64,
}

impl Report {
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    fn drop(&mut self, reason: &'static str, n: u64) {
        match self.dropped.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, total)) => *total += n,
            None => self.dropped.push((reason, n)),
        }
    }

    pub fn add(&mut self, other: &Report) {
        self.sent += other.sent;
        self.requests += other.requests;
        self.retries += other.retries;
        for (reason, n) in &other.dropped {
            self.drop(reason, *n);
        }
    }
}

/// The writer's own metrics.
#[derive(Clone)]
struct Metrics {
    samples: IntCounterVec,
    dropped: IntCounterVec,
    requests: IntCounterVec,
    retries: IntCounter,
    last_success: IntGauge,
}

/// Request outcomes, as the `result` label of [`REQUESTS_METRIC`].
const REQUEST_RESULTS: [&str; 5] = [
    "success",
    "server_error",
    "rate_limited",
    "network_error",
    "client_error",
];

impl Metrics {
    fn new() -> Self {
        let samples = IntCounterVec::new(
            Opts::new(
                SAMPLES_METRIC,
                "Samples handed to remote write, by what became of them: sent (acknowledged by the receiver), dropped (see withings_remote_write_samples_dropped_total) or failed (not delivered: the receiver refused them for good or stayed unreachable).",
            ),
            &["result"],
        )
        .expect("static metric definition");
        for result in ["sent", "dropped", "failed"] {
            samples.with_label_values(&[result]);
        }
        let dropped = IntCounterVec::new(
            Opts::new(
                DROPPED_METRIC,
                "Samples remote write left out, by reason: rejected (the receiver answered 400 for them alone), invalid (a label name remote write does not allow).",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        for reason in ["rejected", "invalid"] {
            dropped.with_label_values(&[reason]);
        }
        let requests = IntCounterVec::new(
            Opts::new(
                REQUESTS_METRIC,
                "Remote-write requests answered or failed, by result: success, server_error (5xx), rate_limited (429), network_error (no answer, timeouts included), client_error (other 4xx).",
            ),
            &["result"],
        )
        .expect("static metric definition");
        for result in REQUEST_RESULTS {
            requests.with_label_values(&[result]);
        }
        Self {
            samples,
            dropped,
            requests,
            retries: IntCounter::new(
                RETRIES_METRIC,
                "Remote-write requests sent again after a 5xx, a 429 or a network error.",
            )
            .expect("static metric definition"),
            last_success: IntGauge::new(
                LAST_SUCCESS_METRIC,
                "When a remote-write request last succeeded, in unix seconds; 0 before the first.",
            )
            .expect("static metric definition"),
        }
    }
}

/// A remote-write client. Cheap to clone: the clones share the connection pool, the limit
/// of requests in flight and the metrics.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    url: Url,
    /// The URL as shown in messages: no credentials, query or fragment.
    shown: String,
    headers: HeaderMap,
    options: Options,
    slots: Semaphore,
    metrics: Metrics,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("url", &self.inner.shown)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// One attempt's outcome.
enum Attempt {
    Success,
    /// Try again, after at least this long if the receiver said so.
    Retry {
        result: &'static str,
        after: Option<Duration>,
        message: String,
    },
    /// A 400: the request holds samples the receiver refuses.
    BadRequest(String),
    Refused {
        status: u16,
        message: String,
    },
}

impl Writer {
    pub fn new(destination: Destination) -> Result<Self, WriteError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let options = destination.options.clone();
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("withings-exporter/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &destination.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| WriteError::Setup(format!("the CA file is not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(WriteError::Setup("the CA file holds no certificate".into()));
            }
            builder = builder.tls_certs_only(certs);
        }
        if let Some(pem) = &destination.identity_pem {
            let identity = reqwest::Identity::from_pem(pem.expose().as_bytes()).map_err(|_| {
                WriteError::Setup(
                    "the client certificate and key are not a PEM certificate and private key"
                        .into(),
                )
            })?;
            builder = builder.identity(identity);
        }
        let client = builder
            .build()
            .map_err(|e| WriteError::Setup(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(
            reqwest::header::CONTENT_ENCODING,
            HeaderValue::from_static("snappy"),
        );
        headers.insert(
            HeaderName::from_static("x-prometheus-remote-write-version"),
            HeaderValue::from_static("0.1.0"),
        );
        for (name, value) in &destination.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| WriteError::Setup(format!("header {name:?}: not a header name")))?;
            if reserved_header(&header) {
                return Err(WriteError::Setup(format!(
                    "header {name}: set by remote write itself, it cannot be given"
                )));
            }
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| WriteError::Setup(format!("header {name}: not a header value")))?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        if let Some(auth) = &destination.auth {
            let text = match auth {
                Auth::Basic { username, password } => {
                    use base64::Engine;
                    let pair = format!("{username}:{}", password.expose());
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    )
                }
                Auth::Authorization { kind, credentials } => {
                    format!("{kind} {}", credentials.expose())
                }
            };
            let mut value = HeaderValue::from_str(&text).map_err(|_| {
                WriteError::Setup(
                    "the credentials hold a character a header cannot carry (a newline?)".into(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                shown: public_url(&destination.url),
                url: destination.url,
                headers,
                slots: Semaphore::new(options.max_in_flight.max(1)),
                options,
                metrics: Metrics::new(),
            }),
        })
    }

    /// Adds the writer's metrics to `registry` (once).
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        let m = &self.inner.metrics;
        registry.register(Box::new(m.samples.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.last_success.clone()))
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The URL written to, without credentials or query: for messages.
    pub fn shown_url(&self) -> &str {
        &self.inner.shown
    }

    /// Sends `series` (labels in any order, `__name__` among them; samples in any order) in
    /// requests of at most `max_samples_per_send`, one after the other so that a series'
    /// samples arrive in time order; the requests of several callers share the
    /// `max_in_flight` slots. `metadata` goes with the first request.
    ///
    /// Returns once every sample is written or dropped; an error when the receiver refuses
    /// for good or stays unreachable past `give_up_after` (the samples not yet written are
    /// counted as failed).
    pub async fn send(
        &self,
        series: Vec<TimeSeries>,
        mut metadata: Vec<MetricMetadata>,
    ) -> Result<Report, WriteError> {
        let mut report = Report::default();
        let mut ready = Vec::with_capacity(series.len());
        let mut invalid: Option<Invalid> = None;
        for s in series {
            let n = s.samples.len() as u64;
            match encode::prepare(s) {
                Ok(s) => ready.push(s),
                Err(why) => {
                    invalid.get_or_insert(why);
                    report.drop("invalid", n);
                }
            }
        }
        let m = &self.inner.metrics;
        if let Some(why) = invalid {
            let n = report.dropped_total();
            m.samples.with_label_values(&["dropped"]).inc_by(n);
            m.dropped.with_label_values(&["invalid"]).inc_by(n);
            tracing::warn!(
                samples = n,
                reason = %why,
                "remote write: series left out, remote write cannot carry them"
            );
        }
        let batches = encode::batches(ready, self.inner.options.max_samples_per_send);
        let total: u64 = batches.iter().map(|b| encode::sample_count(b) as u64).sum();
        let invalid_dropped = report.dropped_total();
        let mut rejected: Option<String> = None;
        for batch in batches {
            let meta = std::mem::take(&mut metadata);
            if let Err(e) = self
                .write_splitting(batch, meta, &mut report, &mut rejected)
                .await
            {
                // What was neither written nor dropped on purpose is lost to this call.
                let done = report.sent + (report.dropped_total() - invalid_dropped);
                m.samples
                    .with_label_values(&["failed"])
                    .inc_by(total.saturating_sub(done));
                return Err(e);
            }
        }
        if let Some(message) = rejected {
            tracing::warn!(
                samples = report.dropped.iter().find(|(r, _)| *r == "rejected").map_or(0, |(_, n)| *n),
                url = %self.inner.shown,
                receiver = %message,
                "remote write: the receiver refused some samples (400); they are left out, the rest is written"
            );
        }
        Ok(report)
    }

    /// One batch, split in halves on a 400 until the refused samples stand alone.
    async fn write_splitting(
        &self,
        batch: Vec<TimeSeries>,
        metadata: Vec<MetricMetadata>,
        report: &mut Report,
        rejected: &mut Option<String>,
    ) -> Result<(), WriteError> {
        let m = &self.inner.metrics;
        // A receiver that refuses every sample (a Prometheus without an out-of-order window
        // refuses every sample older than its head) would cost two requests a sample: once
        // this many samples stand refused alone and none of the batch went through, stop.
        let mut isolated = 0u64;
        let mut written = false;
        // Depth-first, left half first: the samples of a series stay in time order.
        let mut stack = vec![(batch, metadata)];
        while let Some((batch, metadata)) = stack.pop() {
            let n = encode::sample_count(&batch) as u64;
            if n == 0 {
                continue;
            }
            let (body, batch) = encode::body(batch, metadata);
            match self.write_retrying(body, report).await? {
                None => {
                    written = true;
                    report.sent += n;
                    m.samples.with_label_values(&["sent"]).inc_by(n);
                }
                Some(message) if !written && isolated >= MAX_REFUSED_ALONE => {
                    return Err(WriteError::RefusesAll {
                        url: self.inner.shown.clone(),
                        refused: isolated,
                        message,
                    });
                }
                Some(message) => match encode::halves(batch) {
                    Some((first, second)) => {
                        stack.push((second, Vec::new()));
                        stack.push((first, Vec::new()));
                    }
                    None => {
                        isolated += n;
                        rejected.get_or_insert(message);
                        report.drop("rejected", n);
                        m.samples.with_label_values(&["dropped"]).inc_by(n);
                        m.dropped.with_label_values(&["rejected"]).inc_by(n);
                    }
                },
            }
        }
        Ok(())
    }

    /// One body, retried while it may pass. `Ok(None)`: written; `Ok(Some(message))`: a 400.
    async fn write_retrying(
        &self,
        body: Vec<u8>,
        report: &mut Report,
    ) -> Result<Option<String>, WriteError> {
        let inner = &*self.inner;
        let m = &inner.metrics;
        let body = bytes::Bytes::from(body);
        let started = tokio::time::Instant::now();
        let mut attempts = 0u32;
        let mut backoff = inner.options.min_backoff;
        loop {
            attempts += 1;
            report.requests += 1;
            let attempt = {
                let _slot = inner.slots.acquire().await;
                self.attempt(body.clone()).await
            };
            let (result, after, message) = match attempt {
                Attempt::Success => {
                    m.requests.with_label_values(&["success"]).inc();
                    m.last_success.set(unix_now());
                    return Ok(None);
                }
                Attempt::BadRequest(message) => {
                    m.requests.with_label_values(&["client_error"]).inc();
                    return Ok(Some(message));
                }
                Attempt::Refused { status, message } => {
                    m.requests.with_label_values(&["client_error"]).inc();
                    return Err(WriteError::Refused {
                        url: inner.shown.clone(),
                        status,
                        message,
                    });
                }
                Attempt::Retry {
                    result,
                    after,
                    message,
                } => (result, after, message),
            };
            m.requests.with_label_values(&[result]).inc();
            // A `Retry-After: 0` makes no tight loop: never sooner than min_backoff.
            let wait = after
                .map(|a| a.max(inner.options.min_backoff))
                .unwrap_or_else(|| jitter(backoff))
                .min(MAX_RETRY_AFTER);
            backoff = (backoff * 2).min(inner.options.max_backoff);
            if inner
                .options
                .give_up_after
                .is_some_and(|limit| started.elapsed() + wait > limit)
            {
                return Err(WriteError::GaveUp {
                    url: inner.shown.clone(),
                    attempts,
                    seconds: started.elapsed().as_secs(),
                    last: message,
                });
            }
            tracing::debug!(url = %inner.shown, attempts, wait_ms = wait.as_millis() as u64, last = %message, "remote write: retrying");
            tokio::time::sleep(wait).await;
            report.retries += 1;
            m.retries.inc();
        }
    }

    async fn attempt(&self, body: bytes::Bytes) -> Attempt {
        let inner = &*self.inner;
        let response = inner
            .client
            .post(inner.url.clone())
            .headers(inner.headers.clone())
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    result: "network_error",
                    after: None,
                    message: if e.is_timeout() {
                        format!("no answer within {} s", inner.options.timeout.as_secs_f64())
                    } else {
                        error_chain(&e)
                    },
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            // The body of a success is not read: nothing in it matters.
            return Attempt::Success;
        }
        let after = retry_after(response.headers());
        let message = format!("{status}: {}", error_text(response).await);
        if status.is_server_error() {
            Attempt::Retry {
                result: "server_error",
                after,
                message,
            }
        } else if status == StatusCode::TOO_MANY_REQUESTS && inner.options.retry_on_429 {
            Attempt::Retry {
                result: "rate_limited",
                after,
                message,
            }
        } else if status == StatusCode::BAD_REQUEST {
            Attempt::BadRequest(message)
        } else {
            Attempt::Refused {
                status: status.as_u16(),
                message,
            }
        }
    }
}

/// Headers the writer sets itself.
fn reserved_header(name: &HeaderName) -> bool {
    use reqwest::header;
    [
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::CONTENT_LENGTH,
        header::USER_AGENT,
        header::AUTHORIZATION,
        header::HOST,
    ]
    .contains(name)
        || name.as_str() == "x-prometheus-remote-write-version"
}

/// The start of a receiver's error body, on one line.
async fn error_text(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BYTES);
    let text = String::from_utf8_lossy(&body);
    let text = crate::text::one_line(text.trim());
    if text.is_empty() {
        "no message".to_owned()
    } else {
        crate::text::cut(&text, MAX_ERROR_CHARS)
    }
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(text)
        .ok()?;
    let left = at.as_second().saturating_sub(unix_now());
    Some(Duration::from_secs(left.max(0) as u64).min(MAX_RETRY_AFTER))
}

/// A wait between half `backoff` and `backoff`, drawn at random: writers that failed together
/// do not come back together.
fn jitter(backoff: Duration) -> Duration {
    let mut bytes = [0u8; 4];
    let fraction = match getrandom::getrandom(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
        Err(_) => 1.0,
    };
    backoff.mul_f64(0.5 + fraction / 2.0)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// scheme://host[:port]/path: no credentials, query or fragment.
pub fn public_url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

fn error_chain(e: &reqwest::Error) -> String {
    // reqwest's own text ends with the URL, which may carry a query: not shown.
    let mut text = if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert("retry-after", HeaderValue::from_static("999999"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        let soon = jiff::Timestamp::from_second(unix_now() + 60).unwrap();
        let text = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&soon)
            .unwrap();
        headers.insert("retry-after", HeaderValue::from_str(&text).unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(j >= Duration::from_millis(500) && j <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn secrets_are_not_in_debug() {
        let mut d =
            Destination::new(Url::parse("https://u:pw@example.com/api/v1/write?k=v").unwrap());
        d.auth = Some(Auth::Basic {
            username: "me".into(),
            password: Secret::new("hunter2"),
        });
        d.headers
            .push(("X-Scope-OrgID".into(), Secret::new("tenant-secret")));
        let w = Writer::new(d.clone()).unwrap();
        let shown = format!("{d:?} {w:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tenant-secret"),
            "{shown}"
        );
        assert!(!format!("{w:?}").contains("pw"));
    }
}
