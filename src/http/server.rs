//! The HTTP server: `/metrics`, a landing page, health endpoints.

use crate::app::App;
use crate::http::web_config::{CHALLENGE, WebConfig};
use crate::render::families::CONTENT_TYPE;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    ALLOW, AUTHORIZATION, CONTENT_TYPE as CONTENT_TYPE_HEADER, HOST, HeaderValue, WWW_AUTHENTICATE,
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

/// How long shutdown waits for scrapes in flight before closing their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A client that has not finished its TLS handshake by then is dropped, so half-open
/// handshakes cannot pile up.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound, not yet running server. Binding first lets tests ask for port 0 and learn the
/// real port before anything runs.
pub struct Application {
    listener: TcpListener,
    app: Arc<App>,
    web: Option<Arc<WebConfig>>,
    telemetry_path: Arc<str>,
}

impl Application {
    pub async fn bind(address: SocketAddr, app: Arc<App>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        Ok(Self {
            listener,
            app,
            web: None,
            telemetry_path: crate::config::DEFAULT_TELEMETRY_PATH.into(),
        })
    }

    /// Serves the metrics at `path` (`WITHINGS_TELEMETRY_PATH`) instead of `/metrics`.
    pub fn with_telemetry_path(mut self, path: &str) -> Self {
        self.telemetry_path = path.into();
        self
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
        // Slow-loris clients must not hold connections open forever.
        builder.header_read_timeout(Duration::from_secs(30));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(conn) => conn,
                        // Running out of file descriptors or a reset during accept must not
                        // stop the server; the next accept may well succeed.
                        Err(e) => {
                            tracing::warn!(error = %e, "accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let app = Arc::clone(&self.app);
                    let web = self.web.clone();
                    let local = stream.local_addr().ok();
                    let telemetry_path = Arc::clone(&self.telemetry_path);
                    let service = service_fn(move |req| {
                        let app = Arc::clone(&app);
                        let web = web.clone();
                        let telemetry_path = Arc::clone(&telemetry_path);
                        async move {
                            if let Some(denied) = authorize(web.as_deref(), &req).await {
                                return Ok::<_, Infallible>(denied);
                            }
                            Ok::<_, Infallible>(route(&app, &telemetry_path, local, req).await)
                        }
                    });
                    if let Some(tls) = self.web.as_ref().and_then(|w| w.current().tls.clone()) {
                        // The handshake runs on the connection's own task: a slow client must
                        // not hold up accepting the next one.
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                        let builder = builder.clone();
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            let Some(stream) = tls_handshake(&acceptor, stream, peer).await else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            if let Err(e) = watcher.watch(conn).await {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        });
                        continue;
                    }
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        // Probes waiting on a slow Withings answer now, with the last known values, so that
        // draining the connections does not have to cut them.
        self.app.shut_down();
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
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
) -> Option<Response<Full<Bytes>>> {
    let web = web?;
    if req.uri().path() == "/-/healthy" {
        return None;
    }
    let security = web.current();
    let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    if security.users.allows(header).await {
        return None;
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

async fn route(
    app: &Arc<App>,
    telemetry_path: &str,
    local: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
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
        "/metrics" if method == Method::GET => {
            let budget = scrape_budget(req.headers().get(SCRAPE_TIMEOUT_HEADER));
            text(StatusCode::OK, CONTENT_TYPE, app.metrics(budget).await)
        }
        // HEAD answers from the state without calling Withings: a probe should not spend the
        // account's rate limit. hyper drops the body and keeps the headers.
        "/metrics" if method == Method::HEAD => {
            text(StatusCode::OK, CONTENT_TYPE, app.metrics_now())
        }
        "/probe" if method == Method::GET => {
            let budget = scrape_budget(req.headers().get(SCRAPE_TIMEOUT_HEADER));
            let account = query_param(req.uri().query(), "account");
            match app.probe(account.as_deref(), budget).await {
                Ok(body) => text(StatusCode::OK, CONTENT_TYPE, body),
                Err(e) => text(StatusCode::BAD_REQUEST, plain, format!("{e}\n")),
            }
        }
        "/sd" if method == Method::GET => {
            let target = sd_target(req.headers().get(HOST), local);
            text(
                StatusCode::OK,
                "application/json",
                app.service_discovery(&target),
            )
        }
        "/" if readable => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            super::landing::page(&app.summaries(), app.is_directory(), telemetry_path),
        ),
        "/-/healthy" | "/-/ready" if readable => text(StatusCode::OK, plain, "OK\n".into()),
        "/probe" | "/sd" => not_allowed("GET"),
        "/metrics" | "/" | "/-/healthy" | "/-/ready" => not_allowed("GET, HEAD"),
        _ => text(
            StatusCode::NOT_FOUND,
            plain,
            "Not found: try /metrics, /probe?account=NAME or /sd\n".into(),
        ),
    }
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
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(content_type));
    response
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
