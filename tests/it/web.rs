//! `WITHINGS_WEB_CONFIG_FILE`: HTTPS, mutual TLS, basic auth and reloads, against a real
//! server, with certificates and bcrypt hashes made at run time.

use crate::common;

use base64::Engine;
use common::process::{BIN, ChildGuard, capture_stderr, served_url, signal, wait_for_log};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use withings_exporter::account::tokens::TokenSource;
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_exporter::http::web_config::{DEFAULT_POLL_INTERVAL, WebConfig};
use withings_sim::Simulator;

const DEADLINE: Duration = Duration::from_secs(20);

/// A certificate authority made for one test.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate and its key, both PEM.
    pub(crate) fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub(crate) fn server(&self) -> (String, String) {
        self.issue(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self) -> (String, String) {
        self.issue(&["prometheus"], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A directory with the web configuration and the files it names.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        // Written whole then renamed, as an operator's tooling would: a reader never sees
        // half a file.
        let staging = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&staging, text).unwrap();
        std::fs::rename(&staging, &path).unwrap();
        path
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("web.yml")
    }

    /// Server certificate and key from `ca`, as cert.pem and key.pem.
    fn server_cert(&self, ca: &Ca) {
        let (cert, key) = ca.server();
        self.write("cert.pem", &cert);
        self.write("key.pem", &key);
    }

    /// A dir holding a server certificate signed by a fresh CA, and that CA for clients.
    fn with_server_cert() -> (Self, Ca) {
        let files = Files::new();
        let ca = Ca::new("server CA");
        files.server_cert(&ca);
        (files, ca)
    }
}

const TLS: &str = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";

fn users(pairs: &[(&str, &str)]) -> String {
    let mut text = String::from("basic_auth_users:\n");
    for (user, password) in pairs {
        // Cost 4, the lowest, keeps the tests fast; the code path is the same at any cost.
        let hash = bcrypt::hash(password, 4).unwrap();
        text.push_str(&format!("  {user}: {hash}\n"));
    }
    text
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A simulator, and an exporter server with the web configuration of `config`.
struct SecuredApp {
    address: std::net::SocketAddr,
    web: Arc<WebConfig>,
    // Dropped before the simulator, as before.
    _server: common::Served,
    _simulator: Simulator,
}

impl SecuredApp {
    async fn start(config: &Path) -> Self {
        let simulator = common::simulator_serving("measurement_list.json").await;
        let config_vars = Config::from_vars(
            [
                ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0".to_string()),
                ("WITHINGS_API_URL", simulator.url().to_string()),
                ("WITHINGS_ACCESS_TOKEN", common::TOKEN.to_string()),
                (
                    "WITHINGS_WEB_CONFIG_FILE",
                    config.to_string_lossy().into_owned(),
                ),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        )
        .unwrap();
        let web_file = config_vars.server.web_config_file.clone().unwrap();
        let web = Arc::new(WebConfig::load(web_file).unwrap());
        let exporter =
            App::with_tokens(&config_vars, TokenSource::Static(common::TOKEN.into())).unwrap();
        let app = common::bind(Arc::new(exporter))
            .await
            .with_web_config(Arc::clone(&web));
        let server = common::serve(app);
        Self {
            address: server.address,
            web,
            _server: server,
            _simulator: simulator,
        }
    }

    fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn https(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.address.port())
    }

    /// Re-reads the file as SIGHUP would, off the async workers (it may hash with bcrypt).
    async fn reload(&self) -> Result<(), String> {
        let web = Arc::clone(&self.web);
        tokio::task::spawn_blocking(move || web.reload().map_err(|e| e.to_string()))
            .await
            .unwrap()
    }
}

/// A client that trusts only `ca`, optionally presenting a client certificate.
fn https_client(ca: &Ca, identity: Option<&(String, String)>) -> reqwest::Client {
    withings_exporter::withings::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()]);
    if let Some((cert, key)) = identity {
        builder = builder
            .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    authorization: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = client.get(url);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await
}

/// `GET /metrics` over plain HTTP, with an Authorization header if given; it must be answered.
async fn plain_metrics(
    client: &reqwest::Client,
    app: &SecuredApp,
    authorization: Option<&str>,
) -> reqwest::Response {
    get(client, &app.http("/metrics"), authorization)
        .await
        .unwrap()
}

fn assert_unauthorized(response: &reqwest::Response, what: &str) {
    assert_eq!(response.status(), 401, "{what}");
    assert_eq!(
        response.headers()["www-authenticate"],
        "Basic realm=\"withings-exporter\"",
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_the_metrics_and_plain_http_is_refused() {
    let (files, ca) = Files::with_server_cert();
    files.write("web.yml", TLS);
    let app = SecuredApp::start(&files.config()).await;
    assert!(app.web.tls_enabled());

    let client = https_client(&ca, None);
    let response = get(&client, &app.https("/metrics"), None).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert_eq!(common::sample(&text, "withings_up"), Some(1.0), "{text}");
    assert!(text.contains("withings_blood_pressure_mmhg{"), "{text}");

    // Plain HTTP to the HTTPS port: the handshake fails and the connection is dropped.
    let plain = get(&common::http(), &app.http("/metrics"), None).await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // A client that does not trust the server's CA cannot connect either.
    let stranger = https_client(&Ca::new("other CA"), None);
    assert!(get(&stranger, &app.https("/metrics"), None).await.is_err());

    // The failures did not disturb the server.
    let again = get(&client, &app.https("/-/healthy"), None).await.unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_lets_only_the_right_user_in_and_says_nothing_about_who_exists() {
    let files = Files::new();
    files.write("web.yml", &users(&[("prometheus", "s3cret-pass")]));
    let app = SecuredApp::start(&files.config()).await;
    assert!(!app.web.tls_enabled());
    let client = common::http();

    let missing = plain_metrics(&client, &app, None).await;
    assert_unauthorized(&missing, "no credentials");
    let wrong_password = plain_metrics(&client, &app, Some(&basic("prometheus", "wrong"))).await;
    assert_unauthorized(&wrong_password, "wrong password");
    let unknown_user = plain_metrics(&client, &app, Some(&basic("nobody", "s3cret-pass"))).await;
    assert_unauthorized(&unknown_user, "unknown user");
    let not_basic = plain_metrics(&client, &app, Some("Bearer s3cret-pass")).await;
    assert_unauthorized(&not_basic, "another scheme");
    // A wrong password and an unknown user get the very same answer.
    let headers = |r: &reqwest::Response| {
        let mut h: Vec<(String, String)> = r
            .headers()
            .iter()
            .filter(|(name, _)| *name != "date")
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        h.sort();
        h
    };
    assert_eq!(headers(&wrong_password), headers(&unknown_user));
    assert_eq!(
        wrong_password.text().await.unwrap(),
        unknown_user.text().await.unwrap()
    );

    let right = Some(basic("prometheus", "s3cret-pass"));
    for _ in 0..2 {
        // The second time from the cache of verified credentials.
        let response = plain_metrics(&client, &app, right.as_deref()).await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert_eq!(common::sample(&text, "withings_up"), Some(1.0), "{text}");
    }

    // Every route but /-/healthy is behind the password, unknown ones and HEAD included,
    // so that the routes themselves are not disclosed.
    let healthy = get(&client, &app.http("/-/healthy"), None).await.unwrap();
    assert_eq!(healthy.status(), 200);
    for path in ["/", "/-/ready", "/no-such-page"] {
        let response = get(&client, &app.http(path), None).await.unwrap();
        assert_unauthorized(&response, path);
        let response = get(&client, &app.http(path), right.as_deref())
            .await
            .unwrap();
        assert_ne!(response.status(), 401, "{path}");
    }
    let head = client.head(app.http("/metrics")).send().await.unwrap();
    assert_unauthorized(&head, "HEAD /metrics");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let files = Files::new();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    files.server_cert(&server_ca);
    files.write("client-ca.pem", &client_ca.pem());
    files.write(
        "web.yml",
        &format!(
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n"
        ),
    );
    let app = SecuredApp::start(&files.config()).await;

    let anonymous = https_client(&server_ca, None);
    let refused = get(&anonymous, &app.https("/metrics"), None).await;
    assert!(
        refused.is_err(),
        "answered without a client certificate: {refused:?}"
    );
    let forged = https_client(&server_ca, Some(&Ca::new("rogue CA").client()));
    let refused = get(&forged, &app.https("/metrics"), None).await;
    assert!(
        refused.is_err(),
        "answered a certificate of another CA: {refused:?}"
    );

    let trusted = https_client(&server_ca, Some(&client_ca.client()));
    let response = get(&trusted, &app.https("/metrics"), None).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert_eq!(common::sample(&text, "withings_up"), Some(1.0), "{text}");
}

/// exporter-toolkit's `client_auth_type` values mean what they mean in Go's `crypto/tls`.
#[tokio::test(flavor = "multi_thread")]
async fn each_client_auth_type_admits_the_clients_go_would() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let trusted = client_ca.client();
    let rogue = Ca::new("rogue CA").client();
    // (type, admits no certificate, admits a certificate of another CA)
    let cases = [
        ("NoClientCert", true, true),
        ("RequestClientCert", true, true),
        ("RequireAnyClientCert", false, true),
        ("VerifyClientCertIfGiven", true, false),
        ("RequireAndVerifyClientCert", false, false),
    ];
    for (kind, admits_none, admits_rogue) in cases {
        let files = Files::new();
        files.server_cert(&server_ca);
        files.write("client-ca.pem", &client_ca.pem());
        let ca_line = if kind == "NoClientCert" {
            ""
        } else {
            "  client_ca_file: client-ca.pem\n"
        };
        files.write(
            "web.yml",
            &format!("{TLS}  client_auth_type: {kind}\n{ca_line}"),
        );
        let app = SecuredApp::start(&files.config()).await;
        let url = app.https("/-/healthy");
        let admitted = |client: reqwest::Client| {
            let url = url.clone();
            async move {
                get(&client, &url, None)
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        };
        assert_eq!(
            admitted(https_client(&server_ca, None)).await,
            admits_none,
            "{kind}, no certificate"
        );
        assert_eq!(
            admitted(https_client(&server_ca, Some(&rogue))).await,
            admits_rogue,
            "{kind}, certificate of another CA"
        );
        assert!(
            admitted(https_client(&server_ca, Some(&trusted))).await,
            "{kind}, certificate of the client CA"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_basic_auth_together() {
    let (files, ca) = Files::with_server_cert();
    files.write("web.yml", &format!("{TLS}{}", users(&[("prom", "pw")])));
    let app = SecuredApp::start(&files.config()).await;
    let client = https_client(&ca, None);
    let denied = get(&client, &app.https("/metrics"), None).await.unwrap();
    assert_unauthorized(&denied, "no credentials over TLS");
    let allowed = get(&client, &app.https("/metrics"), Some(&basic("prom", "pw")))
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_applies_new_users_and_a_broken_file_keeps_the_old_ones() {
    let files = Files::new();
    files.write("web.yml", &users(&[("alice", "first")]));
    let app = SecuredApp::start(&files.config()).await;
    let client = common::http();
    let status = |user: &'static str, password: &'static str| {
        let client = client.clone();
        let url = app.http("/metrics");
        async move {
            get(&client, &url, Some(&basic(user, password)))
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status("alice", "first").await, 200);

    files.write("web.yml", &users(&[("bob", "second")]));
    app.reload().await.unwrap();
    assert_eq!(status("bob", "second").await, 200);
    assert_eq!(
        status("alice", "first").await,
        401,
        "a removed user still gets in (from the cache?)"
    );

    for broken in [
        "basic_auth_users:\n  bob: not-bcrypt\n".to_string(),
        "basic_auth_users: [\n".to_string(),
        format!(
            "{}http_server_config:\n  http2: false\n",
            users(&[("eve", "x")])
        ),
    ] {
        files.write("web.yml", &broken);
        let error = app.reload().await.unwrap_err();
        assert!(error.contains("web.yml"), "{error}");
        assert_eq!(status("bob", "second").await, 200, "after {broken:?}");
        assert_eq!(status("eve", "x").await, 401, "after {broken:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_fails_closed_unless_the_file_turns_basic_auth_off_on_purpose() {
    let files = Files::new();
    files.write("web.yml", &users(&[("alice", "pw")]));
    let app = SecuredApp::start(&files.config()).await;
    let client = common::http();
    let status = |authorization: Option<String>| {
        let client = client.clone();
        let url = app.http("/probe?account=default");
        async move {
            get(&client, &url, authorization.as_deref())
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(None).await, 401);
    // Empty, comment-only, `~`, a file cut after its first key: each used to turn basic
    // auth off at the reload.
    for said_nothing in [
        "",
        "\n",
        "# being edited\n",
        "~\n",
        "---\n",
        "basic_auth_users:\n",
        "basic_auth_users: ~\n",
        "tls_server_config: {}\n",
    ] {
        files.write("web.yml", said_nothing);
        let error = app.reload().await.unwrap_err();
        assert!(error.contains("web.yml"), "{said_nothing:?}: {error}");
        assert!(error.contains("basic_auth_users: {}"), "{error}");
        assert_eq!(status(None).await, 401, "after {said_nothing:?}");
        assert_eq!(status(Some(basic("alice", "pw"))).await, 200);
    }
    // The next good file is taken.
    files.write("web.yml", &users(&[("bob", "pw2")]));
    app.reload().await.unwrap();
    assert_eq!(status(Some(basic("bob", "pw2"))).await, 200);
    assert_eq!(status(Some(basic("alice", "pw"))).await, 401);
    // Written on purpose: basic auth off.
    files.write("web.yml", "basic_auth_users: {}\n");
    app.reload().await.unwrap();
    assert_eq!(status(None).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watcher_applies_a_changed_file_and_a_renewed_certificate() {
    let files = Files::new();
    let old_ca = Ca::new("old CA");
    files.server_cert(&old_ca);
    files.write("web.yml", &format!("{TLS}{}", users(&[("alice", "pw")])));
    let app = SecuredApp::start(&files.config()).await;
    // A short poll so that the test need not wait the default five seconds.
    tokio::spawn(Arc::clone(&app.web).watch(Duration::from_millis(20)));
    assert!(DEFAULT_POLL_INTERVAL >= Duration::from_secs(1));

    let old_client = https_client(&old_ca, None);
    let url = app.https("/metrics");
    assert_eq!(
        get(&old_client, &url, Some(&basic("alice", "pw")))
            .await
            .unwrap()
            .status(),
        200
    );

    assert_eq!(
        get(&old_client, &url, Some(&basic("carol", "pw2")))
            .await
            .unwrap()
            .status(),
        401
    );
    files.write("web.yml", &format!("{TLS}{}", users(&[("carol", "pw2")])));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = get(&old_client, &url, Some(&basic("carol", "pw2")))
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the new user was never accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alice = get(&old_client, &url, Some(&basic("alice", "pw")))
        .await
        .unwrap();
    assert_unauthorized(&alice, "a user removed by the change");

    // Renewed server certificate, same configuration file: new connections get the new one.
    let new_ca = Ca::new("new CA");
    files.server_cert(&new_ca);
    let deadline = Instant::now() + DEADLINE;
    loop {
        // A fresh client each time: a pooled connection would keep the old handshake.
        let fresh = https_client(&new_ca, None);
        if get(&fresh, &url, Some(&basic("carol", "pw2")))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stale = https_client(&old_ca, None);
    assert!(get(&stale, &url, None).await.is_err());
}

fn exporter_command(web_config: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0")
        .env("WITHINGS_WEB_CONFIG_FILE", web_config)
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn an_unusable_web_config_stops_the_start_with_one_line_naming_file_and_key() {
    let (files, _) = Files::with_server_cert();
    let cases: [(&str, String, &str); 5] = [
        ("bad YAML", "basic_auth_users: [\n".into(), "not a valid web configuration"),
        (
            "not bcrypt",
            "basic_auth_users:\n  alice: 5f4dcc3b5aa765d61d8327deb882cf99\n".into(),
            "basic_auth_users.alice: not a bcrypt hash",
        ),
        (
            "missing certificate",
            "tls_server_config:\n  cert_file: gone.pem\n  key_file: key.pem\n".into(),
            "tls_server_config.cert_file: cannot read",
        ),
        (
            "unknown key",
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_auth: RequireAndVerifyClientCert\n".into(),
            "unknown field `client_auth`",
        ),
        (
            "missing file",
            String::new(),
            "cannot read",
        ),
    ];
    for (what, text, needle) in cases {
        let path = if what == "missing file" {
            files.dir.path().join("absent.yml")
        } else {
            files.write("web.yml", &text)
        };
        let mut child = ChildGuard(exporter_command(&path).spawn().unwrap());
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{what}: still running");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        child
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(1), "{what}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{what}: {stderr}");
        let line = errors[0];
        assert!(line.contains("WITHINGS_WEB_CONFIG_FILE"), "{what}: {line}");
        assert!(line.contains(&*path.to_string_lossy()), "{what}: {line}");
        assert!(line.contains(needle), "{what}: {line}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(!stderr.contains("serving metrics"), "{what}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_https_with_auth_and_reloads_on_sighup() {
    let (files, ca) = Files::with_server_cert();
    files.write("web.yml", &format!("{TLS}{}", users(&[("alice", "pw-a")])));
    let mut child = ChildGuard(exporter_command(&files.config()).spawn().unwrap());
    let log = capture_stderr(&mut child.0);
    let url = served_url(&log).await;
    assert!(url.starts_with("https://"), "{url}");
    let started = log.lock().unwrap().clone();
    assert!(
        started.contains("web configuration loaded") && started.contains("tls=true"),
        "{started}"
    );
    let client = https_client(&ca, None);
    let status = |user: &'static str, password: &'static str| {
        let client = client.clone();
        let url = url.clone();
        async move {
            get(&client, &url, Some(&basic(user, password)))
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status("alice", "pw-a").await, 200);
    assert_eq!(status("bob", "pw-b").await, 401);

    files.write("web.yml", &format!("{TLS}{}", users(&[("bob", "pw-b")])));
    signal(&child.0, libc::SIGHUP);
    wait_for_log(&log, "trigger=SIGHUP", 1).await;
    assert_eq!(status("bob", "pw-b").await, 200);
    assert_eq!(status("alice", "pw-a").await, 401);

    // A broken file on SIGHUP: one error line, the process and bob carry on.
    files.write("web.yml", "basic_auth_users:\n  bob: plaintext\n");
    signal(&child.0, libc::SIGHUP);
    let logged = wait_for_log(&log, "keeping the previous one", 1).await;
    assert!(logged.contains("basic_auth_users.bob"), "{logged}");
    assert!(
        !logged.contains("plaintext"),
        "the hash was logged: {logged}"
    );
    assert!(child.0.try_wait().unwrap().is_none(), "{logged}");
    assert_eq!(status("bob", "pw-b").await, 200);

    // Basic auth turned off on purpose: taken, with a warning naming it, not an info line.
    files.write("web.yml", &format!("{TLS}basic_auth_users: {{}}\n"));
    signal(&child.0, libc::SIGHUP);
    let logged = wait_for_log(&log, "turns off basic auth", 1).await;
    let line = logged
        .lines()
        .find(|l| l.contains("turns off basic auth"))
        .unwrap();
    assert!(line.contains("level=warn"), "{line}");
    let open = client.get(&url).send().await.unwrap();
    assert_eq!(open.status(), 200);
}
