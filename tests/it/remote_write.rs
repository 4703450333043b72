//! Prometheus remote write (issue 19): the writer against an in-process receiver that checks
//! every header and every MUST of the remote-write 1.0 specification on every request, and
//! answers as told (500s then recovery, 429 with Retry-After, a 400 for one poisoned sample,
//! a stall); the configuration file; `backfill --remote-write` writing what the file path
//! writes. The tests with real stores (Prometheus, VictoriaMetrics) are `#[ignore]`d: CI runs
//! them with `--include-ignored`, `.ci/run` installs the programs.

use crate::common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use withings_exporter::remote_write::encode::{decode, series};
use withings_exporter::remote_write::proto::{Sample, TimeSeries, WriteRequest};
use withings_exporter::remote_write::settings;
use withings_exporter::remote_write::{Destination, Options, WriteError, Writer};

const DEADLINE: Duration = Duration::from_secs(30);

/// What the receiver answers to one request.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Ok,
    Status(u16, Option<String>),
    /// Never answers (until the client gives up on it).
    Stall,
}

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub headers: hyper::HeaderMap,
    pub body: WriteRequest,
    pub at: Instant,
}

type Behaviour = Arc<dyn Fn(usize, &WriteRequest) -> Reply + Send + Sync>;

#[derive(Default)]
pub(crate) struct State {
    pub requests: Vec<Received>,
    /// (series labels as text, timestamp) → values stored, from the requests answered 2xx.
    pub stored: BTreeMap<(String, i64), Vec<f64>>,
    in_flight: usize,
    pub max_in_flight: usize,
    /// Spec violations seen, with the request's index.
    pub violations: Vec<String>,
}

/// An in-process remote-write receiver on port 0.
pub(crate) struct Receiver {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key(series: &TimeSeries) -> String {
    series
        .labels
        .iter()
        .map(|l| format!("{}={}", l.name, l.value))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every MUST of remote write 1.0 a request can break, as messages.
fn violations(headers: &hyper::HeaderMap, body: &WriteRequest) -> Vec<String> {
    let mut out = Vec::new();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    for (name, want) in [
        ("content-type", "application/x-protobuf"),
        ("content-encoding", "snappy"),
        ("x-prometheus-remote-write-version", "0.1.0"),
    ] {
        if header(name) != Some(want) {
            out.push(format!("{name}: {:?}", header(name)));
        }
    }
    if !header("user-agent").is_some_and(|ua| ua.starts_with("withings-exporter/")) {
        out.push(format!("user-agent: {:?}", header("user-agent")));
    }
    for ts in &body.timeseries {
        let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
        if !names.is_sorted() || names.windows(2).any(|w| w[0] == w[1]) {
            out.push(format!("labels not sorted or repeated: {names:?}"));
        }
        if !names.contains(&"__name__") {
            out.push(format!("no __name__: {names:?}"));
        }
        if ts.labels.iter().any(|l| l.value.is_empty()) {
            out.push(format!("empty label value: {}", key(ts)));
        }
        if let Some(bad) = ts.labels.iter().find(|l| {
            l.name != "__name__"
                && !withings_exporter::remote_write::encode::valid_label_name(&l.name)
        }) {
            out.push(format!("bad label name {:?}", bad.name));
        }
        if !ts.samples.is_sorted_by_key(|s| s.timestamp) {
            out.push(format!("samples out of order: {}", key(ts)));
        }
        if ts.samples.is_empty() {
            out.push(format!("series without samples: {}", key(ts)));
        }
    }
    out
}

impl Receiver {
    pub async fn start(
        behaviour: impl Fn(usize, &WriteRequest) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(None, behaviour).await
    }

    /// [`Receiver::start`] over TLS with `acceptor`: the URL is https://localhost:PORT.
    pub async fn start_with(
        tls: Option<tokio_rustls::TlsAcceptor>,
        behaviour: impl Fn(usize, &WriteRequest) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = match &tls {
            None => format!("http://{}/api/v1/write", listener.local_addr().unwrap()),
            Some(_) => format!(
                "https://localhost:{}/api/v1/write",
                listener.local_addr().unwrap().port()
            ),
        };
        let state = Arc::new(Mutex::new(State::default()));
        let behaviour: Behaviour = Arc::new(behaviour);
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&shared);
                let behaviour = Arc::clone(&behaviour);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let state = Arc::clone(&state);
                        let behaviour = Arc::clone(&behaviour);
                        async move { Ok::<_, hyper::Error>(handle(request, &state, &*behaviour).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            // A failed handshake (no or an unknown client certificate) ends here.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http
                                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        Self { url, state, task }
    }

    pub fn stored(&self) -> BTreeMap<(String, i64), Vec<f64>> {
        self.state.lock().unwrap().stored.clone()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn assert_no_violation(&self) {
        let state = self.state.lock().unwrap();
        assert!(state.violations.is_empty(), "{:#?}", state.violations);
    }
}

/// Decrements the in-flight count even when the client gives up on a stalled request.
struct InFlight(Arc<Mutex<State>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

async fn handle(
    request: Request<Incoming>,
    state: &Arc<Mutex<State>>,
    behaviour: &(dyn Fn(usize, &WriteRequest) -> Reply + Send + Sync),
) -> Response<Full<Bytes>> {
    let headers = request.headers().clone();
    let bytes = request.into_body().collect().await.unwrap().to_bytes();
    let body = match decode(&bytes) {
        Ok(b) => b,
        Err(e) => {
            state.lock().unwrap().violations.push(e.clone());
            return Response::builder()
                .status(400)
                .body(Full::new(Bytes::from(e)))
                .unwrap();
        }
    };
    let index = {
        let mut s = state.lock().unwrap();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        for v in violations(&headers, &body) {
            s.violations.push(v);
        }
        s.requests.push(Received {
            headers: headers.clone(),
            body: body.clone(),
            at: Instant::now(),
        });
        s.requests.len() - 1
    };
    let _guard = InFlight(Arc::clone(state));
    // A moment in flight, so that concurrent requests overlap.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let reply = behaviour(index, &body);
    match reply {
        Reply::Ok => {
            let mut s = state.lock().unwrap();
            for ts in &body.timeseries {
                for sample in &ts.samples {
                    s.stored
                        .entry((key(ts), sample.timestamp))
                        .or_default()
                        .push(sample.value);
                }
            }
            Response::builder()
                .status(204)
                .body(Full::default())
                .unwrap()
        }
        Reply::Status(code, retry_after) => {
            let mut builder = Response::builder().status(code);
            if let Some(after) = retry_after {
                builder = builder.header("retry-after", after);
            }
            builder
                .body(Full::new(Bytes::from("out of order sample")))
                .unwrap()
        }
        Reply::Stall => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

fn destination(url: &str, options: Options) -> Destination {
    let mut d = Destination::new(url.parse().unwrap());
    d.options = options;
    d
}

fn fast() -> Options {
    Options {
        max_samples_per_send: 100,
        max_in_flight: 2,
        timeout: Duration::from_secs(5),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        retry_on_429: true,
        give_up_after: Some(Duration::from_secs(20)),
    }
}

/// `n` series of `per` samples each, labels given out of order with an empty `instance`,
/// samples given newest first.
fn history(n: usize, per: usize) -> Vec<TimeSeries> {
    (0..n)
        .map(|i| {
            series(
                [
                    ("job".to_owned(), "withings".to_owned()),
                    ("instance".to_owned(), String::new()),
                    ("account".to_owned(), format!("a{i}")),
                    ("__name__".to_owned(), "withings_weight_grams".to_owned()),
                ],
                (0..per)
                    .rev()
                    .map(|t| Sample {
                        timestamp: 1_600_000_000_000 + t as i64 * 60_000,
                        value: (i * 1000 + t) as f64,
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Every sample of [`history`] stored exactly once with its value.
fn assert_every_sample_once(receiver: &Receiver, n: usize, per: usize, except: &[f64]) {
    let stored = receiver.stored();
    let mut expected = 0;
    for i in 0..n {
        for t in 0..per {
            let value = (i * 1000 + t) as f64;
            let key = (
                format!("__name__=withings_weight_grams,account=a{i},job=withings"),
                1_600_000_000_000 + t as i64 * 60_000,
            );
            if except.contains(&value) {
                assert_eq!(stored.get(&key), None, "{key:?}");
            } else {
                assert_eq!(stored.get(&key), Some(&vec![value]), "{key:?}");
                expected += 1;
            }
        }
    }
    assert_eq!(stored.len(), expected);
}

#[tokio::test]
async fn every_request_follows_the_spec_and_is_bounded() {
    let receiver = Receiver::start(|_, _| Reply::Ok).await;
    let writer = Writer::new(destination(&receiver.url, fast())).unwrap();
    let report = writer.send(history(5, 130), Vec::new()).await.unwrap();
    assert_eq!(report.sent, 650);
    assert_eq!(report.dropped_total(), 0);
    receiver.assert_no_violation();
    let requests = receiver.requests();
    assert_eq!(requests.len(), 7, "650 samples in requests of at most 100");
    for r in &requests {
        let samples: usize = r.body.timeseries.iter().map(|t| t.samples.len()).sum();
        assert!(samples <= 100, "{samples}");
    }
    assert_every_sample_once(&receiver, 5, 130, &[]);
}

#[tokio::test]
async fn invalid_series_are_dropped_and_counted_the_rest_written() {
    let receiver = Receiver::start(|_, _| Reply::Ok).await;
    let writer = Writer::new(destination(&receiver.url, fast())).unwrap();
    let registry = prometheus::Registry::new();
    writer.register(&registry).unwrap();
    let mut batch = history(2, 3);
    batch.push(series(
        [
            ("__name__".to_owned(), "withings_weight_grams".to_owned()),
            ("bad-name".to_owned(), "x".to_owned()),
        ],
        vec![Sample {
            timestamp: 1,
            value: 1.0,
        }],
    ));
    let report = writer.send(batch, Vec::new()).await.unwrap();
    assert_eq!((report.sent, report.dropped), (6, vec![("invalid", 1)]));
    receiver.assert_no_violation();
    assert_every_sample_once(&receiver, 2, 3, &[]);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert_eq!(
        common::sample(
            &text,
            "withings_remote_write_samples_dropped_total{reason=\"invalid\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        common::sample(
            &text,
            "withings_remote_write_samples_total{result=\"sent\"}"
        ),
        Some(6.0)
    );
}

#[tokio::test]
async fn server_errors_are_retried_until_the_receiver_recovers() {
    let receiver = Receiver::start(|i, _| {
        if i < 3 {
            Reply::Status(503, None)
        } else {
            Reply::Ok
        }
    })
    .await;
    let writer = Writer::new(destination(&receiver.url, fast())).unwrap();
    let registry = prometheus::Registry::new();
    writer.register(&registry).unwrap();
    let report = writer.send(history(3, 100), Vec::new()).await.unwrap();
    assert_eq!((report.sent, report.retries), (300, 3));
    assert_every_sample_once(&receiver, 3, 100, &[]);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert_eq!(
        common::sample(&text, "withings_remote_write_retries_total"),
        Some(3.0)
    );
    assert_eq!(
        common::sample(
            &text,
            "withings_remote_write_requests_total{result=\"server_error\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        common::sample(
            &text,
            "withings_remote_write_requests_total{result=\"success\"}"
        ),
        Some(3.0)
    );
    assert!(
        common::sample(
            &text,
            "withings_remote_write_last_success_timestamp_seconds"
        )
        .unwrap()
            > 1.7e9
    );
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let receiver = Receiver::start(|i, _| {
        if i == 0 {
            Reply::Status(429, Some("1".into()))
        } else {
            Reply::Ok
        }
    })
    .await;
    let writer = Writer::new(destination(&receiver.url, fast())).unwrap();
    let report = writer.send(history(1, 50), Vec::new()).await.unwrap();
    assert_eq!((report.sent, report.retries), (50, 1));
    let requests = receiver.requests();
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_millis(990),
        "{waited:?}: Retry-After is 1 s, the backoff 10-50 ms"
    );
    assert_every_sample_once(&receiver, 1, 50, &[]);
}

#[tokio::test]
async fn a_400_is_split_until_the_poisoned_sample_alone_is_dropped() {
    const POISON: f64 = 2_042.0;
    // Like a store that refuses a whole request for one bad sample.
    let receiver = Receiver::start(|_, body| {
        if body
            .timeseries
            .iter()
            .any(|t| t.samples.iter().any(|s| s.value == POISON))
        {
            Reply::Status(400, None)
        } else {
            Reply::Ok
        }
    })
    .await;
    let writer = Writer::new(destination(&receiver.url, fast())).unwrap();
    let registry = prometheus::Registry::new();
    writer.register(&registry).unwrap();
    let report = writer.send(history(3, 100), Vec::new()).await.unwrap();
    assert_eq!(
        (report.sent, report.dropped.clone()),
        (299, vec![("rejected", 1)])
    );
    assert_eq!(report.retries, 0, "a 400 is never sent again as it was");
    assert_every_sample_once(&receiver, 3, 100, &[POISON]);
    receiver.assert_no_violation();
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert_eq!(
        common::sample(
            &text,
            "withings_remote_write_samples_dropped_total{reason=\"rejected\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        common::sample(
            &text,
            "withings_remote_write_samples_total{result=\"dropped\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn other_4xx_fail_at_once_without_retry() {
    let receiver = Receiver::start(|_, _| Reply::Status(401, None)).await;
    let writer = Writer::new(destination(&receiver.url, fast())).unwrap();
    let error = writer.send(history(1, 10), Vec::new()).await.unwrap_err();
    assert!(
        matches!(error, WriteError::Refused { status: 401, .. }),
        "{error}"
    );
    assert_eq!(receiver.requests().len(), 1);
    let text = error.to_string();
    assert!(
        text.contains("refused the samples for good") && text.contains("401"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_receiver_is_given_up_on_after_the_limit() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
    drop(listener);
    let mut options = fast();
    options.give_up_after = Some(Duration::from_millis(300));
    let writer = Writer::new(destination(&url, options)).unwrap();
    let error = writer.send(history(1, 10), Vec::new()).await.unwrap_err();
    assert!(matches!(error, WriteError::GaveUp { .. }), "{error}");
    assert!(error.to_string().contains("is the receiver up?"), "{error}");
}

#[tokio::test]
async fn requests_in_flight_stay_within_the_limit() {
    let receiver = Receiver::start(|_, _| Reply::Ok).await;
    let mut options = fast();
    options.max_samples_per_send = 10;
    let writer = Writer::new(destination(&receiver.url, options)).unwrap();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..8 {
        let writer = writer.clone();
        sends.spawn(async move {
            let mut h = history(1, 50);
            h[0].labels
                .push(withings_exporter::remote_write::proto::Label {
                    name: "shard".into(),
                    value: i.to_string(),
                });
            writer.send(h, Vec::new()).await.unwrap()
        });
    }
    while let Some(done) = sends.join_next().await {
        assert_eq!(done.unwrap().sent, 50);
    }
    let max = receiver.state.lock().unwrap().max_in_flight;
    assert!(
        (1..=2).contains(&max),
        "{max} requests in flight, the limit is 2"
    );
    assert_eq!(receiver.stored().len(), 400);
}

#[tokio::test]
async fn a_stalling_receiver_times_out_is_retried_and_probes_stay_fast() {
    let receiver = Receiver::start(|i, _| if i == 0 { Reply::Stall } else { Reply::Ok }).await;
    let mut options = fast();
    options.timeout = Duration::from_millis(1500);
    let writer = Writer::new(destination(&receiver.url, options)).unwrap();
    let household =
        common::accounts::Household::start(&[("mom", "1001", 120), ("dad", "1002", 130)], &[])
            .await;
    let sending = tokio::spawn({
        let writer = writer.clone();
        async move { writer.send(history(1, 20), Vec::new()).await }
    });
    // While the first request hangs, the exporter answers probes as fast as ever.
    assert!(
        common::eventually(DEADLINE, || !receiver.requests().is_empty()).await,
        "the request arrives"
    );
    let mut slowest = Duration::ZERO;
    let mut probed = 0;
    while !sending.is_finished() {
        probed += 1;
        let started = Instant::now();
        let _ = household.probe("mom").await;
        let _ = household.probe("dad").await;
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = sending.await.unwrap().unwrap();
    assert_eq!((report.sent, report.retries), (20, 1));
    assert!(probed >= 3, "probed {probed} times during the stall");
    assert!(
        slowest < Duration::from_millis(500),
        "slowest probes {slowest:?}"
    );
    assert_every_sample_once(&receiver, 1, 20, &[]);
    let requests = receiver.requests();
    assert!(requests[1].at - requests[0].at >= Duration::from_millis(1400));
}

// ------------------------------------------------------------------ the configuration file

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn config_file(path: &std::path::Path) -> withings_exporter::config::RemoteWriteConfig {
    withings_exporter::config::RemoteWriteConfig {
        url: None,
        config_file: Some(path.to_path_buf()),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_config_file_sets_auth_headers_and_queue_and_keeps_secrets_out_of_sight() {
    let receiver = Receiver::start(|_, _| Reply::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let password = write(dir.path(), "password", "s3cret-pass\n");
    let file = write(
        dir.path(),
        "remote.yml",
        &format!(
            "url: {}\nremote_timeout: 10s\nheaders:\n  X-Scope-OrgID: tenant-1\nbasic_auth:\n  username: writer\n  password_file: {}\nqueue_config:\n  max_samples_per_send: 7\n  max_shards: 3\n  min_backoff: 20ms\n  max_backoff: 1s\n  retry_on_http_429: false\n",
            receiver.url,
            password.display()
        ),
    );
    let destination = settings::destination(&config_file(&file), None)
        .unwrap()
        .unwrap();
    assert_eq!(destination.options.max_samples_per_send, 7);
    assert_eq!(destination.options.max_in_flight, 3);
    assert_eq!(destination.options.timeout, Duration::from_secs(10));
    assert_eq!(destination.options.min_backoff, Duration::from_millis(20));
    assert!(!destination.options.retry_on_429);
    let shown = format!("{destination:?}");
    assert!(
        !shown.contains("s3cret-pass") && !shown.contains("tenant-1"),
        "{shown}"
    );
    let writer = Writer::new(destination).unwrap();
    assert!(!format!("{writer:?}").contains("s3cret-pass"));
    writer.send(history(1, 10), Vec::new()).await.unwrap();
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "7 samples a request");
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("writer:s3cret-pass")
    );
    for r in &requests {
        assert_eq!(r.headers["authorization"], expected.as_str());
        assert_eq!(r.headers["x-scope-orgid"], "tenant-1");
    }
    // A 429 is not retried when the file says so.
    let refusing = Receiver::start(|_, _| Reply::Status(429, None)).await;
    let file = write(
        dir.path(),
        "no429.yml",
        &format!(
            "url: {}\nqueue_config:\n  retry_on_http_429: false\n",
            refusing.url
        ),
    );
    let writer = Writer::new(
        settings::destination(&config_file(&file), None)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(matches!(
        writer.send(history(1, 1), Vec::new()).await,
        Err(WriteError::Refused { status: 429, .. })
    ));
}

#[tokio::test]
async fn a_bearer_token_file_is_sent_as_authorization() {
    let receiver = Receiver::start(|_, _| Reply::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "tok-123\n");
    let file = write(
        dir.path(),
        "remote.yml",
        &format!(
            "url: {}\nauthorization:\n  credentials_file: {}\n",
            receiver.url,
            token.display()
        ),
    );
    let writer = Writer::new(
        settings::destination(&config_file(&file), None)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    writer.send(history(1, 1), Vec::new()).await.unwrap();
    assert_eq!(
        receiver.requests()[0].headers["authorization"],
        "Bearer tok-123"
    );
}

#[test]
fn bad_config_files_are_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", "hunter2\n");
    let cases = [
        (
            "url: http://x/api/v1/write\nqueue_config:\n  capacity: 10\n",
            "unknown field `capacity`",
        ),
        (
            "url: http://x/api/v1/write\nwrite_relabel_configs: []\n",
            "unknown field `write_relabel_configs`",
        ),
        (
            "url: http://x/api/v1/write\nbasic_auth:\n  username: u\n  password_file: /nonexistent/password\n",
            "basic_auth.password_file: cannot read /nonexistent/password",
        ),
        ("remote_timeout: 10s\n", "url: missing"),
        (
            "url: ftp://x/\n",
            "url: scheme \"ftp\" is not http or https",
        ),
        (
            "url: http://x/\nremote_timeout: soon\n",
            "remote_timeout: \"soon\" is not a duration",
        ),
        (
            "url: http://x/\ntls_config:\n  insecure_skip_verify: true\n",
            "tls_config.insecure_skip_verify",
        ),
        (
            "url: http://x/\ntls_config:\n  cert_file: /c.pem\n",
            "cert_file and key_file go together",
        ),
        (
            "url: http://x/\nqueue_config:\n  max_shards: 0\n",
            "queue_config.max_shards: must be at least 1",
        ),
        (
            &format!(
                "url: http://x/\nbearer_token_file: {0}\nbasic_auth:\n  username: u\n  password_file: {0}\n",
                secret.display()
            ),
            "set only one",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = write(dir.path(), &format!("bad{i}.yml"), text);
        let error = settings::destination(&config_file(&file), None)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("WITHINGS_REMOTE_WRITE_CONFIG_FILE: "),
            "{error}"
        );
        assert!(error.contains(expected), "{text}: {error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}

#[test]
fn the_url_of_the_command_line_or_variable_comes_before_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "remote.yml",
        "url: http://file/api/v1/write\nqueue_config:\n  max_shards: 9\n",
    );
    let flag: url::Url = "http://flag/api/v1/write".parse().unwrap();
    let mut config = config_file(&file);
    config.url = Some("http://variable/api/v1/write".parse().unwrap());
    let d = settings::destination(&config, Some(flag.clone()))
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.url.as_str(), d.options.max_in_flight),
        (flag.as_str(), 9)
    );
    let d = settings::destination(&config, None).unwrap().unwrap();
    assert_eq!(d.url.as_str(), "http://variable/api/v1/write");
    config.url = None;
    let d = settings::destination(&config, None).unwrap().unwrap();
    assert_eq!(d.url.as_str(), "http://file/api/v1/write");
    let none = withings_exporter::config::RemoteWriteConfig::default();
    assert!(settings::destination(&none, None).unwrap().is_none());
}

/// A TLS acceptor with `ca`'s server certificate, that asks for a client certificate of `ca`.
fn mutual_tls(ca: &crate::web::Ca) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let (cert, key) = ca.server();
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn tls_with_the_ca_file_and_a_client_certificate() {
    let ca = crate::web::Ca::new("remote-write test CA");
    let receiver = Receiver::start_with(Some(mutual_tls(&ca)), |_, _| Reply::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem());
    let (cert, key) = ca.issue(&["writer"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let cert_file = write(dir.path(), "client.pem", &cert);
    let key_file = write(dir.path(), "client-key.pem", &key);
    let with = |tls: &str| {
        let file = write(
            dir.path(),
            "remote.yml",
            &format!("url: {}\ntls_config:\n{tls}", receiver.url),
        );
        let mut destination = settings::destination(&config_file(&file), None)
            .unwrap()
            .unwrap();
        destination.options.give_up_after = Some(Duration::from_millis(300));
        destination
    };
    let full = with(&format!(
        "  ca_file: {}\n  cert_file: {}\n  key_file: {}\n",
        ca_file.display(),
        cert_file.display(),
        key_file.display()
    ));
    assert!(!format!("{full:?}").contains("PRIVATE KEY"), "{full:?}");
    let report = Writer::new(full)
        .unwrap()
        .send(history(1, 5), Vec::new())
        .await
        .unwrap();
    assert_eq!(report.sent, 5);
    assert_every_sample_once(&receiver, 1, 5, &[]);
    // Without the client certificate the server ends the handshake; without the CA file the
    // server's certificate is not trusted: neither writes anything.
    for tls in [
        format!("  ca_file: {}\n", ca_file.display()),
        format!(
            "  cert_file: {}\n  key_file: {}\n",
            cert_file.display(),
            key_file.display()
        ),
    ] {
        let error = Writer::new(with(&tls))
            .unwrap()
            .send(history(1, 5), Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(error, WriteError::GaveUp { .. }), "{tls}: {error}");
    }
    assert_eq!(receiver.stored().len(), 5);
}

// ------------------------------------------------------------------ backfill --remote-write

/// The samples of an OpenMetrics file as the receiver keys them: (sorted labels with
/// `__name__`, milliseconds) → value.
pub(crate) fn file_samples(text: &str) -> BTreeMap<(String, i64), Vec<f64>> {
    let mut out: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, rest) = match line.find('}') {
            Some(end) => (&line[..=end], &line[end + 1..]),
            None => line.split_at(line.find(' ').unwrap()),
        };
        let mut fields = rest.split_whitespace();
        let value: f64 = fields.next().unwrap().parse().unwrap();
        let seconds: i64 = fields.next().unwrap().parse().unwrap();
        let (name, labels) = match series.find('{') {
            Some(open) => (&series[..open], &series[open + 1..series.len() - 1]),
            None => (series, ""),
        };
        let mut pairs = vec![("__name__".to_owned(), name.to_owned())];
        // The exporter's label values hold no `",` sequence: split on it.
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (n, v) = pair.split_once("=\"").unwrap();
            pairs.push((
                n.to_owned(),
                v.trim_end_matches('"')
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\"),
            ));
        }
        pairs.sort();
        let key = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        out.entry((key, seconds * 1000)).or_default().push(value);
    }
    out
}

/// The number of pages the summary line says were read.
fn pages(stderr: &str) -> u64 {
    let line = stderr.lines().last().unwrap();
    let at = line.find(" pages").unwrap_or_else(|| panic!("{line}"));
    line[..at].rsplit('(').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn backfill_by_remote_write_sends_exactly_what_the_file_holds_and_a_rerun_the_same() {
    use crate::backfill::{COLLECTORS, days_and_nights, household};
    // Since 2024 (the days and nights are in 2024): few enough pages that the three runs stay
    // within the 120 requests a minute.
    let h = household(400, 200).await;
    h.simulator
        .set_user_extras("1001", days_and_nights(h.now))
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("all.om");
    let (ok, file_stderr) = h
        .backfill_with(
            &[COLLECTORS],
            &[
                "--all",
                "--since",
                "2024-01-01",
                "--output",
                file.to_str().unwrap(),
            ],
        )
        .await;
    assert!(ok, "{file_stderr}");
    let expected = file_samples(&std::fs::read_to_string(&file).unwrap());
    assert!(expected.len() > 500, "{}", expected.len());
    let families: std::collections::BTreeSet<&str> = expected
        .keys()
        .map(|(k, _)| k.split(',').next().unwrap())
        .collect();
    assert!(families.len() > 5, "{families:?}");

    let receiver = Receiver::start(|_, _| Reply::Ok).await;
    // Small requests, so that series are cut across requests and shards.
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "remote.yml",
        &format!(
            "url: {}\nqueue_config:\n  max_samples_per_send: 97\n  max_shards: 3\n",
            receiver.url
        ),
    );
    let env = [
        COLLECTORS,
        (
            "WITHINGS_REMOTE_WRITE_CONFIG_FILE",
            config.to_str().unwrap(),
        ),
    ];
    let (ok, stderr) = h
        .backfill_with(&env, &["--all", "--since", "2024-01-01", "--remote-write"])
        .await;
    assert!(ok, "{stderr}");
    receiver.assert_no_violation();
    assert_eq!(receiver.stored(), expected, "the same samples as the file");
    assert!(receiver.requests().iter().all(|r| {
        r.body
            .timeseries
            .iter()
            .map(|t| t.samples.len())
            .sum::<usize>()
            <= 97
    }));
    assert!(receiver.state.lock().unwrap().max_in_flight <= 3);
    // A series' samples arrive in time order across requests too (one shard sends a series,
    // one request after the other).
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for request in receiver.requests() {
        for ts in &request.body.timeseries {
            let newest = last.entry(key(ts)).or_insert(i64::MIN);
            assert!(ts.samples[0].timestamp > *newest, "{}", key(ts));
            *newest = ts.samples[ts.samples.len() - 1].timestamp;
        }
    }
    // Withings was asked the same pages by both paths.
    assert_eq!(pages(&stderr), pages(&file_stderr));
    let summary = stderr.lines().last().unwrap();
    assert!(
        summary.starts_with(&format!(
            "backfill: wrote {} samples to {}",
            expected.len(),
            receiver.url
        )),
        "{summary}"
    );
    // The metadata of each family came along: gauge, with its HELP.
    let metadata: Vec<_> = receiver
        .requests()
        .iter()
        .flat_map(|r| r.body.metadata.clone())
        .collect();
    assert!(
        metadata
            .iter()
            .any(|m| m.metric_family_name == "withings_weight_grams"
                && m.r#type == 2
                && !m.help.is_empty())
    );

    // A rerun sends the same values at the same timestamps.
    let (ok, stderr) = h
        .backfill_with(
            &env,
            &[
                "--all",
                "--since",
                "2024-01-01",
                "--remote-write",
                &receiver.url,
            ],
        )
        .await;
    assert!(ok, "{stderr}");
    for (key, values) in receiver.stored() {
        let first = expected[&key][0];
        assert_eq!(values, vec![first, first], "{key:?}");
    }
}

#[tokio::test]
async fn a_backfill_the_receiver_refuses_exits_non_zero_with_one_clear_line() {
    use crate::backfill::household;
    let h = household(50, 100).await;
    let receiver = Receiver::start(|_, _| Reply::Status(403, None)).await;
    let (ok, stderr) = h
        .backfill_with(&[], &["--all", "--remote-write", &receiver.url])
        .await;
    assert!(!ok, "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains("refused the samples for good (403")
            && last.contains("check the URL and credentials"),
        "{stderr}"
    );
    // A 403 is not retried: one request per shard at most, each with other samples.
    let requests = receiver.requests();
    assert!((1..=4).contains(&requests.len()), "{}", requests.len());
    for (i, a) in requests.iter().enumerate() {
        assert!(
            requests[i + 1..].iter().all(|b| b.body != a.body),
            "request {i} sent twice"
        );
    }
    // Neither --output nor --remote-write: told what to give.
    let (ok, stderr) = h.backfill_with(&[], &["--all"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("--output") && stderr.contains("--remote-write"),
        "{stderr}"
    );
    // --remote-write with no URL anywhere.
    let (ok, stderr) = h.backfill_with(&[], &["--all", "--remote-write"]).await;
    assert!(!ok);
    assert!(stderr.contains("WITHINGS_REMOTE_WRITE_URL"), "{stderr}");
}

// ------------------------------------------------------------------ real stores

/// A household with days and nights, backfilled since 2023 (four yearly windows of three
/// histories, two accounts: few enough pages for three runs within Withings' 120 a minute)
/// into a file; returns the household, the file's dir and the file's samples.
async fn backfilled_to_a_file() -> (
    crate::backfill::Household,
    tempfile::TempDir,
    std::path::PathBuf,
    BTreeMap<(String, i64), Vec<f64>>,
) {
    use crate::backfill::{COLLECTORS, days_and_nights, household};
    let h = household(1_000, 250).await;
    h.simulator
        .set_user_extras("1001", days_and_nights(h.now))
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("all.om");
    let (ok, stderr) = h
        .backfill_with(
            &[COLLECTORS],
            &[
                "--all",
                "--since",
                SINCE,
                "--output",
                file.to_str().unwrap(),
            ],
        )
        .await;
    assert!(ok, "{stderr}");
    let expected = file_samples(&std::fs::read_to_string(&file).unwrap());
    (h, out, file, expected)
}

const SINCE: &str = "2023-01-01";

async fn backfill_by_remote_write(h: &crate::backfill::Household, url: &str) -> String {
    let (ok, stderr) = h
        .backfill_with(
            &[crate::backfill::COLLECTORS],
            &["--all", "--since", SINCE, "--remote-write", url],
        )
        .await;
    assert!(ok, "{stderr}");
    let summary = stderr.lines().last().unwrap().to_owned();
    assert!(!summary.contains("refused"), "{summary}");
    summary
}

/// Every family of the exporter in a Prometheus, as raw samples: the range selector over
/// ten years returns each stored sample with its exact timestamp.
async fn prometheus_samples(
    prometheus: &crate::backfill::Prometheus,
    now: i64,
) -> BTreeMap<(String, i64), Vec<f64>> {
    let result = prometheus
        .series_over("{__name__=~\"withings_.+\"}", "10y", now)
        .await;
    let mut out: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for series in result {
        let labels: BTreeMap<String, String> =
            serde_json::from_value(series["metric"].clone()).unwrap();
        let key = labels
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        for v in series["values"].as_array().unwrap() {
            let ms = (v[0].as_f64().unwrap() * 1000.0).round() as i64;
            let value: f64 = v[1].as_str().unwrap().parse().unwrap();
            out.entry((key.clone(), ms)).or_default().push(value);
        }
    }
    out
}

/// A Prometheus that takes remote write, with an out-of-order window wide enough for the
/// years a backfill brings.
async fn prometheus_receiver(dir: &std::path::Path) -> crate::backfill::Prometheus {
    crate::backfill::Prometheus(
        common::prometheus::start_remote_write_receiver(
            dir,
            "global:\n  scrape_interval: 1m\nstorage:\n  tsdb:\n    out_of_order_time_window: 10y\n",
        )
        .await,
    )
}

#[tokio::test]
#[ignore = "needs prometheus and promtool (Debian package prometheus)"]
async fn prometheus_answers_the_backfill_by_remote_write_exactly_as_from_the_file() {
    let (h, out, file, expected) = backfilled_to_a_file().await;
    let families: std::collections::BTreeSet<String> = expected
        .keys()
        .map(|(k, _)| k.split(',').next().unwrap().to_owned())
        .collect();
    let prometheus = prometheus_receiver(out.path()).await;
    let url = prometheus.0.url("/api/v1/write");
    backfill_by_remote_write(&h, &url).await;
    let stored = prometheus_samples(&prometheus, h.now).await;
    assert_eq!(stored.len(), expected.len(), "{}", prometheus.log_text());
    assert_eq!(
        stored, expected,
        "every family, exact values at exact timestamps"
    );
    let stored_families: std::collections::BTreeSet<String> = stored
        .keys()
        .map(|(k, _)| k.split(',').next().unwrap().to_owned())
        .collect();
    assert_eq!(stored_families, families);
    // Written twice: one value per timestamp.
    backfill_by_remote_write(&h, &url).await;
    assert_eq!(prometheus_samples(&prometheus, h.now).await, expected);
    // The file through promtool into another Prometheus answers the same.
    let blocks = tempfile::tempdir().unwrap();
    let data = crate::backfill::data_dir_of(&file, blocks.path());
    let config = blocks.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
    let from_file = crate::backfill::Prometheus::start(&data, &config).await;
    assert_eq!(prometheus_samples(&from_file, h.now).await, stored);
}

#[tokio::test]
#[ignore = "needs victoria-metrics (Debian package victoria-metrics)"]
async fn victoria_metrics_answers_the_backfill_by_remote_write_exactly() {
    let (h, out, _file, expected) = backfilled_to_a_file().await;
    let data = out.path().join("vm-data");
    let vm = common::prometheus::start_daemon(
        "victoria-metrics",
        "victoria-metrics",
        out.path(),
        |port| {
            vec![
                format!("-storageDataPath={}", data.display()),
                format!("-httpListenAddr=127.0.0.1:{port}"),
                "-retentionPeriod=100y".to_owned(),
            ]
        },
    )
    .await;
    backfill_by_remote_write(&h, &vm.url("/api/v1/write")).await;
    let http = common::http();
    // Written samples become searchable after a flush.
    let flushed = http
        .get(vm.url("/internal/force_flush"))
        .send()
        .await
        .unwrap();
    assert!(flushed.status().is_success());
    let mut url = url::Url::parse(&vm.url("/api/v1/export")).unwrap();
    url.query_pairs_mut()
        .append_pair("match[]", "{__name__=~\"withings_.+\"}")
        .append_pair("start", "0");
    let body = common::body_of(http.get(url)).await;
    let mut stored: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let series: serde_json::Value = serde_json::from_str(line).unwrap();
        let labels: BTreeMap<String, String> =
            serde_json::from_value(series["metric"].clone()).unwrap();
        let key = labels
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let values = series["values"].as_array().unwrap();
        let times = series["timestamps"].as_array().unwrap();
        for (v, t) in values.iter().zip(times) {
            stored
                .entry((key.clone(), t.as_i64().unwrap()))
                .or_default()
                .push(v.as_f64().unwrap());
        }
    }
    assert_eq!(stored.len(), expected.len(), "{}", vm.log_tail());
    assert_eq!(
        stored, expected,
        "every family, exact values at exact timestamps"
    );
    // And its Prometheus query API agrees on a family's last value.
    let (key, _) = expected
        .keys()
        .find(|(k, _)| k.starts_with("__name__=withings_weight_grams,account=mom"))
        .unwrap();
    let last = expected
        .iter()
        .filter(|((k, _), _)| k == key)
        .max_by_key(|((_, t), _)| *t)
        .unwrap();
    let mut url = url::Url::parse(&vm.url("/api/v1/query")).unwrap();
    let selector = format!(
        "withings_weight_grams{{{}}}",
        key.split(',')
            .skip(1)
            .map(|p| {
                let (n, v) = p.split_once('=').unwrap();
                format!("{n}=\"{v}\"")
            })
            .collect::<Vec<_>>()
            .join(",")
    );
    url.query_pairs_mut()
        .append_pair("query", &format!("last_over_time({selector}[10y])"))
        .append_pair("time", &(last.0.1 / 1000 + 1).to_string());
    let answer: serde_json::Value =
        serde_json::from_str(&common::body_of(http.get(url)).await).unwrap();
    let value: f64 = answer["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(value, last.1[0], "{answer}");
}

#[tokio::test]
async fn a_receiver_that_refuses_every_sample_is_told_apart_from_a_poisoned_one() {
    let receiver = Receiver::start(|_, _| Reply::Status(400, None)).await;
    let writer = Writer::new(destination(&receiver.url, fast())).unwrap();
    let registry = prometheus::Registry::new();
    writer.register(&registry).unwrap();
    let error = writer
        .send(history(1, 5_000), Vec::new())
        .await
        .unwrap_err();
    assert!(
        matches!(error, WriteError::RefusesAll { refused: 32, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("out_of_order_time_window"),
        "{error}"
    );
    // Not two requests a sample: the first batch's 32 samples alone, and the halvings.
    let requests = receiver.requests().len();
    assert!(requests < 80, "{requests} requests");
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert_eq!(
        common::sample(
            &text,
            "withings_remote_write_samples_total{result=\"dropped\"}"
        ),
        Some(32.0)
    );
    assert_eq!(
        common::sample(
            &text,
            "withings_remote_write_samples_total{result=\"failed\"}"
        ),
        Some(4_968.0)
    );
}

#[tokio::test]
async fn a_backfill_keeps_secrets_out_of_its_output_and_counts_a_poisoned_sample() {
    use crate::backfill::household;
    let h = household(50, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let password = write(dir.path(), "password", "pa55-word-secret\n");
    // Refuses the whole request holding the first weight reading it sees (that series at
    // that millisecond: one sample).
    let poison: Arc<Mutex<Option<(String, i64)>>> = Arc::default();
    let first = Arc::clone(&poison);
    let receiver = Receiver::start(move |_, body| {
        let mut poison = first.lock().unwrap();
        let weights: Vec<(String, i64)> = body
            .timeseries
            .iter()
            .filter(|t| {
                t.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == "withings_weight_grams")
            })
            .flat_map(|t| t.samples.iter().map(|s| (key(t), s.timestamp)))
            .collect();
        if poison.is_none() {
            *poison = weights.first().cloned();
        }
        match &*poison {
            Some(p) if weights.contains(p) => Reply::Status(400, None),
            _ => Reply::Ok,
        }
    })
    .await;
    let config = write(
        dir.path(),
        "remote.yml",
        &format!(
            "url: {}\nheaders:\n  X-Scope-OrgID: tenant-secret-1\nbasic_auth:\n  username: u\n  password_file: {}\n",
            receiver.url,
            password.display()
        ),
    );
    let (ok, stderr) = h
        .backfill_with(
            &[
                (
                    "WITHINGS_REMOTE_WRITE_CONFIG_FILE",
                    config.to_str().unwrap(),
                ),
                ("WITHINGS_LOG_LEVEL", "debug"),
            ],
            &["--all", "--remote-write"],
        )
        .await;
    assert!(ok, "{stderr}");
    assert!(poison.lock().unwrap().is_some());
    let summary = stderr.lines().last().unwrap();
    assert!(
        summary.contains("; 1 samples refused by the receiver, left out (see the log)"),
        "{summary}"
    );
    assert!(
        stderr.contains("the receiver refused some samples (400)"),
        "{stderr}"
    );
    for secret in ["pa55-word-secret", "tenant-secret-1"] {
        assert!(!stderr.contains(secret), "{stderr}");
    }
    assert!(
        receiver
            .requests()
            .iter()
            .all(|r| r.headers["x-scope-orgid"] == "tenant-secret-1")
    );
}

#[tokio::test]
async fn ctrl_c_during_a_remote_write_backfill_stops_cleanly() {
    use crate::backfill::household;
    use common::process::{BIN, ChildGuard};
    let h = household(300, 500).await;
    let receiver = Receiver::start(|_, _| Reply::Stall).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(BIN);
    command
        .args([
            "backfill",
            "--all",
            "--instance",
            "x:1",
            "--remote-write",
            &receiver.url,
        ])
        .env_clear()
        .envs(h.env())
        .env("TMPDIR", tmp.path())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = ChildGuard(command.spawn().unwrap());
    let log = common::process::capture_stderr(&mut child.0);
    assert!(
        common::eventually(DEADLINE, || !receiver.requests().is_empty()).await,
        "no request reached the receiver"
    );
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) };
    let status = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success());
    let stderr = common::process::wait_for_log(&log, "rerun the same command", 1).await;
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        stderr.contains("same values at the same timestamps"),
        "{stderr}"
    );
    // The spool (health data) is gone.
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "{stderr}"
    );
}

#[tokio::test]
async fn a_retry_after_of_zero_still_waits_the_minimum_backoff() {
    let receiver = Receiver::start(|i, _| {
        if i < 3 {
            Reply::Status(503, Some("0".into()))
        } else {
            Reply::Ok
        }
    })
    .await;
    let mut options = fast();
    options.min_backoff = Duration::from_millis(200);
    let writer = Writer::new(destination(&receiver.url, options)).unwrap();
    let report = writer.send(history(1, 5), Vec::new()).await.unwrap();
    assert_eq!((report.sent, report.retries), (5, 3));
    let requests = receiver.requests();
    for pair in requests.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(195), "{gap:?}");
    }
}
