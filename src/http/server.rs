//! The HTTP server: `/metrics`, a landing page, health endpoints.

use crate::app::App;
use crate::http::connections::{AcceptErrors, Connections, TrackedBody};
use crate::http::onboard::Onboarding;
use crate::http::web_config::{AuthOutcome, CHALLENGE, WebConfig};
use crate::render::families::CONTENT_TYPE;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    ALLOW, AUTHORIZATION, CONNECTION, HOST, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The header Prometheus sends with its `scrape_timeout` for this target.
pub const SCRAPE_TIMEOUT_HEADER: &str = "x-prometheus-scrape-timeout-seconds";
/// Kept back from the scrape timeout for building and sending the answer: a tenth of it,
/// at most half a second (blackbox_exporter's default offset).
const MAX_SCRAPE_MARGIN: Duration = Duration::from_millis(500);

/// How long a scrape may wait for Withings, from Prometheus' scrape-timeout header. An
/// absent or unusable value gives `None` (the exporter's own timeout applies), as
/// blackbox_exporter does: a bad header must not fail the scrape.
pub fn scrape_budget(header: Option<&HeaderValue>) -> Option<Duration> {
    let seconds: f64 = header?.to_str().ok()?.trim().parse().ok()?;
    if !seconds.is_finite() || seconds <= 0.0 {
        return None;
    }
    let timeout = Duration::try_from_secs_f64(seconds).ok()?;
    let margin = (timeout / 10).min(MAX_SCRAPE_MARGIN);
    Some(timeout - margin)
}

/// What shutdown adds to the longest scrape (`WITHINGS_TIMEOUT_SECONDS`) before closing the
/// connections still open: time to build and send the answer.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

pub use crate::config::DEFAULT_MAX_CONNECTIONS;

/// How many connections the server holds and how long it drains them at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once; beyond, the connection idle the longest is closed, or, when
    /// every one is busy, new clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long shutdown waits for the scrapes in flight.
    pub shutdown_grace: Duration,
}

impl ServerLimits {
    /// A scrape may wait `WITHINGS_TIMEOUT_SECONDS` for Withings; shutdown waits that long
    /// and a margin, so that the README's promise holds: scrapes in flight finish.
    pub fn from_config(
        server: &crate::config::ServerConfig,
        withings: &crate::config::WithingsConfig,
    ) -> Self {
        Self {
            max_connections: server.max_connections,
            shutdown_grace: withings.upstream_timeout.saturating_add(SHUTDOWN_MARGIN),
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: crate::config::DEFAULT_TIMEOUT.saturating_add(SHUTDOWN_MARGIN),
        }
    }
}

/// A client that has not finished its TLS handshake by then is dropped, so half-open
/// handshakes cannot pile up.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a notification's body may take to arrive once its headers are in: Withings sends
/// a few hundred bytes at once. A client sending it a byte at a time is cut off then.
pub const DEFAULT_BODY_DEADLINE: Duration = Duration::from_secs(10);

/// The notification path's share of the connections: at most this fraction of
/// `WITHINGS_WEB_MAX_CONNECTIONS` (and at least one) may have a notification in flight;
/// beyond, a notification is answered 503 at once, unread, so that slow bodies sent with the
/// right secret cannot keep every connection busy and lock out Prometheus and health checks.
const NOTIFY_SHARE_DIVISOR: usize = 4;

fn notify_slots(max_connections: usize) -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(
        (max_connections / NOTIFY_SHARE_DIVISOR).max(1),
    ))
}

/// A bound, not yet running server. Binding first lets tests ask for port 0 and learn the
/// real port before anything runs.
pub struct Application {
    listener: TcpListener,
    app: Arc<App>,
    web: Option<Arc<WebConfig>>,
    telemetry_path: Arc<str>,
    limits: ServerLimits,
    connections: Arc<Connections>,
    /// Notifications in flight, bounded to a share of the connections.
    notify_slots: Arc<tokio::sync::Semaphore>,
    body_deadline: Duration,
    /// Invites and Withings' redirect back (issue 21), when WITHINGS_PUBLIC_URL and
    /// WITHINGS_TOKEN_DIR are set.
    onboarding: Option<Arc<Onboarding>>,
}

impl Application {
    pub async fn bind(address: SocketAddr, app: Arc<App>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let limits = ServerLimits::default();
        Ok(Self {
            listener,
            app,
            web: None,
            telemetry_path: crate::config::DEFAULT_TELEMETRY_PATH.into(),
            connections: Arc::new(Connections::new(limits.max_connections)),
            notify_slots: notify_slots(limits.max_connections),
            body_deadline: DEFAULT_BODY_DEADLINE,
            limits,
            onboarding: None,
        })
    }

    /// Serves the invite links, `/auth/callback` and the landing page's invite forms.
    pub fn with_onboarding(mut self, onboarding: Arc<Onboarding>) -> Self {
        self.onboarding = Some(onboarding);
        self
    }

    /// How long a request body may take to arrive (default [`DEFAULT_BODY_DEADLINE`]).
    pub fn with_body_deadline(mut self, deadline: Duration) -> Self {
        self.body_deadline = deadline;
        self
    }

    /// Serves the metrics at `path` (`WITHINGS_TELEMETRY_PATH`) instead of `/metrics`.
    pub fn with_telemetry_path(mut self, path: &str) -> Self {
        self.telemetry_path = path.into();
        self
    }

    /// `WITHINGS_WEB_MAX_CONNECTIONS` and the drain time at shutdown.
    pub fn with_limits(mut self, limits: ServerLimits) -> Self {
        self.connections = Arc::new(Connections::new(limits.max_connections));
        self.notify_slots = notify_slots(limits.max_connections);
        self.limits = limits;
        self
    }

    /// The server's connections, to read their counts (tests, benchmarks).
    pub fn connections(&self) -> Arc<Connections> {
        Arc::clone(&self.connections)
    }

    /// Applies `WITHINGS_WEB_CONFIG_FILE`: HTTPS only when it configures TLS, and basic auth
    /// on every route but `/-/healthy` when it lists users. Later reloads of `web` apply to
    /// the connections and requests that follow.
    pub fn with_web_config(mut self, web: Arc<WebConfig>) -> Self {
        self.web = Some(web);
        self
    }

    /// Whether the server speaks HTTPS (and only HTTPS).
    pub fn is_tls(&self) -> bool {
        self.web.as_ref().is_some_and(|w| w.tls_enabled())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets connections in flight finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let graceful = GracefulShutdown::new();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(hyper_util::rt::TokioTimer::new());
        // Slow-loris clients must not hold connections open forever; hyper applies it to a
        // kept-alive connection waiting for its next request too.
        builder.header_read_timeout(Duration::from_secs(30));
        let connections = Arc::clone(&self.connections);
        let mut accept_errors = AcceptErrors::default();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => {
                    accept_errors.accepted();
                    conn
                }
                // Running out of file descriptors or a reset during accept must not stop the
                // server; the next accept may well succeed. Out of descriptors, closing the
                // connection idle the longest frees one for the client waiting.
                Err(e) => {
                    accept_errors.failed(&e);
                    let freed =
                        AcceptErrors::is_out_of_descriptors(&e) && connections.close_idlest();
                    let pause = Duration::from_millis(if freed { 5 } else { 50 });
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = &mut shutdown => break,
                    }
                }
            };
            let slot = match connections.try_open() {
                Some(slot) => slot,
                None => {
                    // At the cap: make room by closing the connection idle the longest. When
                    // every connection is busy, this one waits for one to end, and new
                    // clients wait in the kernel's backlog.
                    connections.close_idlest();
                    tokio::select! {
                        slot = connections.open() => slot,
                        () = &mut shutdown => break,
                    }
                }
            };
            let app = Arc::clone(&self.app);
            let web = self.web.clone();
            let local = stream.local_addr().ok();
            let telemetry_path = Arc::clone(&self.telemetry_path);
            let tracker = slot.tracker();
            let notify_slots = Arc::clone(&self.notify_slots);
            let body_deadline = self.body_deadline;
            let onboarding = self.onboarding.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let app = Arc::clone(&app);
                let web = web.clone();
                let onboarding = onboarding.clone();
                let telemetry_path = Arc::clone(&telemetry_path);
                let notify_slots = Arc::clone(&notify_slots);
                let busy = tracker.busy();
                async move {
                    // Every path under the notification path goes to the notification
                    // receiver and nowhere else, before basic auth (Withings cannot send
                    // credentials): it acts only on the exact secret path and answers 404 to
                    // the rest, so no other route can be reached there without credentials.
                    let response = if crate::notify::receiver::owns(&app, req.uri().path()) {
                        match notify_slots.try_acquire_owned() {
                            Ok(_permit) => {
                                crate::notify::receiver::handle(&app, req, body_deadline).await
                            }
                            Err(_) => notify_busy(),
                        }
                    } else if let Some(onboarding) = onboarding
                        .as_ref()
                        .filter(|_| Onboarding::owns(req.uri().path()))
                    {
                        // The person invited has no password: the link is the credential.
                        onboarding.handle(&app, req, peer.ip()).await
                    } else {
                        match authorize(web.as_deref(), &req, peer).await {
                            Some(denied) => denied,
                            None => {
                                let protected =
                                    web.as_ref().is_some_and(|w| !w.current().users.is_empty());
                                let site = Site {
                                    telemetry_path: &telemetry_path,
                                    local,
                                    onboarding: onboarding.as_deref(),
                                    protected,
                                };
                                route(&app, &site, req).await
                            }
                        }
                    };
                    // The connection counts as busy until the body has gone out.
                    Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, busy)))
                }
            });
            let tls = self.web.as_ref().and_then(|w| w.current().tls.clone());
            let builder = builder.clone();
            let watcher = graceful.watcher();
            // The handshake runs on the connection's own task: a slow client must not hold up
            // accepting the next one.
            tokio::spawn(async move {
                let closing = slot.closing();
                let served = async {
                    let result = match tls {
                        Some(tls) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                            let Some(stream) = tls_handshake(&acceptor, stream, peer).await else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                };
                tokio::select! {
                    () = served => {}
                    () = closing => {
                        tracing::debug!(%peer, "closed an idle connection to make room for a new one");
                    }
                }
                drop(slot);
            });
        }
        drop(self.listener);
        // Probes waiting on a slow Withings answer soon, with the last known values, so that
        // draining the connections does not have to cut them.
        self.app.shut_down();
        let grace = self.limits.shutdown_grace;
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after {grace:?}; closing them");
        }
        Ok(())
    }
}

/// The TLS side of a new connection, or None when the client fails the handshake: plain HTTP
/// on the HTTPS port, a client without a required certificate. That is the client's problem,
/// logged at debug, not worth a warning.
async fn tls_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// The 401 answer when basic auth is configured and the request lacks a valid user; None to
/// go on. `/-/healthy` stays open so that a container health check needs no password.
async fn authorize(
    web: Option<&WebConfig>,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Option<Response<Full<Bytes>>> {
    let web = web?;
    if req.uri().path() == "/-/healthy" {
        return None;
    }
    let security = web.current();
    let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    match security.users.check(header, peer.ip()).await {
        AuthOutcome::Allowed => return None,
        AuthOutcome::Denied => {}
        AuthOutcome::Throttled { retry_after } => {
            tracing::debug!(
                path = req.uri().path(),
                "request refused: too many authentication attempts"
            );
            let mut response = text(
                StatusCode::TOO_MANY_REQUESTS,
                "text/plain; charset=utf-8",
                "Too many authentication attempts; retry later\n".into(),
            );
            response.headers_mut().insert(
                RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs_f64().ceil() as u64),
            );
            return Some(response);
        }
    }
    // Debug only: a scanner must not be able to fill the log. No user name: people type
    // passwords into that field too.
    tracing::debug!(
        path = req.uri().path(),
        "request without valid credentials refused"
    );
    // The same answer whether the user exists or not.
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "text/plain; charset=utf-8",
        "Unauthorized\n".into(),
    );
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    Some(response)
}

/// What the routes need besides the application.
struct Site<'a> {
    telemetry_path: &'a str,
    local: Option<SocketAddr>,
    onboarding: Option<&'a Onboarding>,
    /// Basic auth guards the routes (a web configuration with users).
    protected: bool,
}

async fn route(app: &Arc<App>, site: &Site<'_>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (telemetry_path, local) = (site.telemetry_path, site.local);
    let method = req.method();
    let readable = method == Method::GET || method == Method::HEAD;
    let plain = "text/plain; charset=utf-8";
    // The routes below name the metrics path "/metrics"; only the configured one reaches it.
    let path = match req.uri().path() {
        p if p == telemetry_path => "/metrics",
        "/metrics" => "",
        p => p,
    };
    match path {
        // HEAD as GET (RFC 9110): the same families, so the same Content-Length. It may
        // start a fetch, within the request budget like any scrape.
        "/metrics" if readable => {
            let budget = scrape_budget(req.headers().get(SCRAPE_TIMEOUT_HEADER));
            text(StatusCode::OK, CONTENT_TYPE, app.metrics(budget).await)
        }
        // HEAD as GET, like /metrics: a HEAD /probe may start a fetch within the budget.
        "/probe" if readable => {
            let budget = scrape_budget(req.headers().get(SCRAPE_TIMEOUT_HEADER));
            let account = query_param(req.uri().query(), "account");
            match app.probe(account.as_deref(), budget).await {
                Ok(body) => text(StatusCode::OK, CONTENT_TYPE, body),
                Err(e) => text(StatusCode::BAD_REQUEST, plain, format!("{e}\n")),
            }
        }
        "/sd" if readable => {
            let target = sd_target(req.headers().get(HOST), local);
            text(
                StatusCode::OK,
                "application/json",
                app.service_discovery(&target),
            )
        }
        "/" if readable => {
            let now = app.clock().unix_seconds();
            let household = super::landing::Household {
                invites: site.onboarding.map(|o| o.landing(now)),
                protected: site.protected,
                grafana_url: site.onboarding.and_then(|o| o.grafana_url()).cloned(),
                readings: super::landing::readings(app),
            };
            let mut response = text(
                StatusCode::OK,
                "text/html; charset=utf-8",
                super::landing::page(
                    &app.summaries(),
                    app.is_directory(),
                    telemetry_path,
                    &household,
                ),
            );
            super::onboard::harden(&mut response);
            response
        }
        "/invites" | "/invites/revoke" if method == Method::POST => match site.onboarding {
            Some(onboarding) => {
                let path = path.to_owned();
                onboarding.landing_post(app, req, &path).await
            }
            None => text(
                StatusCode::NOT_FOUND,
                plain,
                "Not found: set WITHINGS_PUBLIC_URL and WITHINGS_TOKEN_DIR to invite\n".into(),
            ),
        },
        "/invites" | "/invites/revoke" => not_allowed("POST"),
        "/-/healthy" | "/-/ready" if readable => text(StatusCode::OK, plain, "OK\n".into()),
        "/metrics" | "/probe" | "/sd" | "/" | "/-/healthy" | "/-/ready" => not_allowed("GET, HEAD"),
        _ => text(
            StatusCode::NOT_FOUND,
            plain,
            "Not found: try /metrics, /probe?account=NAME or /sd\n".into(),
        ),
    }
}

/// The notification path's share of the connections is in use: 503 at once, the body
/// unread, and the connection closed, so that it does not stay busy.
fn notify_busy() -> Response<Full<Bytes>> {
    tracing::debug!("notification refused: too many notifications in flight");
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain; charset=utf-8",
        "Too many notifications in flight; retry later\n".into(),
    );
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain; charset=utf-8",
        format!("Method not allowed: use {allow}\n"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// The first value of `name` in a query string.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The target `/sd` hands out: the host and port Prometheus used to reach us, which is the
/// one address known to work from where Prometheus runs. A missing or unusable `Host` header
/// falls back to the socket's own address.
fn sd_target(host: Option<&HeaderValue>, local: Option<SocketAddr>) -> String {
    host.and_then(|h| h.to_str().ok())
        .map(str::trim)
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        })
        .map(str::to_owned)
        .or_else(|| local.map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost:19100".into())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    crate::answer::answer(status, content_type, body)
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(value: &str) -> Option<Duration> {
        scrape_budget(Some(&HeaderValue::from_str(value).unwrap()))
    }

    #[test]
    fn the_budget_keeps_a_margin_for_the_answer() {
        assert_eq!(budget("10"), Some(Duration::from_millis(9500)));
        assert_eq!(budget("1"), Some(Duration::from_millis(900)));
        assert_eq!(budget(" 0.5 "), Some(Duration::from_millis(450)));
        assert_eq!(budget("120"), Some(Duration::from_millis(119_500)));
    }

    #[test]
    fn unusable_headers_are_ignored() {
        assert_eq!(scrape_budget(None), None);
        for bad in ["", "ten", "0", "-3", "NaN", "inf", "1e400", "1s"] {
            assert_eq!(budget(bad), None, "{bad:?}");
        }
        let not_text = HeaderValue::from_bytes(b"\xff1").unwrap();
        assert_eq!(scrape_budget(Some(&not_text)), None);
    }
}
