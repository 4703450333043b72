//! Issue 3: `withings-exporter auth` against the simulator's authorization page and token
//! endpoint, in both modes (redirect listener, pasted URL), and its one-line errors.

use crate::common::process;
use process::ChildGuard;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use url::Url;
use withings_exporter::account::token_store::TokenStore;
use withings_exporter::account::tokens::ClientCredentials;
use withings_exporter::auth::{AuthError, AuthSettings, Authorization, CallbackListener};
use withings_exporter::secret::Secret;
use withings_exporter::withings::ClientOptions;
use withings_sim::{OAuthOptions, Simulator, SimulatorOptions};

async fn simulator() -> Simulator {
    Simulator::start(SimulatorOptions::default())
        .await
        .expect("simulator starts")
}

fn settings(sim: &Simulator, token_file: &Path, redirect_uri: &str) -> AuthSettings {
    let o = OAuthOptions::default();
    AuthSettings {
        api_url: sim.url(),
        // The simulator serves the authorization page too.
        account_url: sim.url(),
        credentials: ClientCredentials {
            client_id: o.client_id,
            client_secret: Secret::new(o.client_secret),
        },
        redirect_uri: Url::parse(redirect_uri).unwrap(),
        token_file: token_file.to_path_buf(),
        client: ClientOptions::default(),
        listen: None,
        scopes: withings_exporter::auth::default_scopes(),
        requests_per_minute: withings_exporter::config::DEFAULT_PER_MINUTE,
        account: None,
    }
}

/// A token file's path in a fresh temp dir (keep the dir alive while the path is used).
fn token_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    (dir, path)
}

/// An authorization whose redirect listener is already bound on an ephemeral loopback port.
async fn listening(sim: &Simulator, token_file: &Path) -> (Authorization, CallbackListener) {
    let mut auth =
        Authorization::new(settings(sim, token_file, "http://127.0.0.1:0/callback")).unwrap();
    let listener = auth.listen().await.unwrap();
    (auth, listener)
}

/// A browser that does not follow redirects: returns where Withings sends the user.
async fn consent(url: &Url) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(url.clone()).send().await.unwrap();
    assert_eq!(
        response.status(),
        302,
        "{}",
        response.text().await.unwrap_or_default()
    );
    response.headers()["location"].to_str().unwrap().to_owned()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn assert_one_line(e: &AuthError, must_contain: &str) {
    let line = e.to_string();
    assert!(
        line.contains(must_contain) && !line.contains('\n'),
        "{line}"
    );
    let o = OAuthOptions::default();
    assert!(!line.contains(&o.client_secret), "{line}");
}

#[tokio::test]
async fn auth_through_the_redirect_listener() {
    let sim = simulator().await;
    let (_dir, path) = token_file();
    let (auth, listener) = listening(&sim, &path).await;
    // The application's registered callback is where this run listens.
    sim.set_redirect_uri(auth.redirect_uri().as_str());
    let url = auth.url();
    let params: HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(params["scope"], "user.metrics");
    assert!(
        !url.as_str()
            .contains(&OAuthOptions::default().client_secret)
    );
    // The user's browser: follows Withings' redirect to the listener.
    let browser = tokio::spawn(async move {
        let response = reqwest::get(url).await.unwrap();
        (response.status(), response.text().await.unwrap())
    });
    let code = auth
        .receive(listener, Duration::from_secs(10))
        .await
        .unwrap();
    let tokens = auth.exchange(&code).await.unwrap();
    let (status, page) = browser.await.unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Authorized"), "{page}");
    assert_eq!(TokenStore::new(&path).load().unwrap(), Some(tokens.clone()));
    assert_eq!(mode(&path), 0o600);
    assert!(sim.refresh_token_usable(tokens.refresh_token.expose()));
    assert_eq!(tokens.userid.as_deref(), Some("12345"));
    let exchange = sim
        .requests()
        .into_iter()
        .find(|r| r.path == "/v2/oauth2")
        .unwrap();
    assert_eq!(exchange.method, "POST");
    assert_eq!(exchange.params["grant_type"], "authorization_code");
    assert_eq!(
        exchange.params["redirect_uri"],
        auth.redirect_uri().as_str()
    );
    // Nothing secret travelled in a URL.
    for r in sim.requests() {
        assert_eq!(
            r.method == "GET",
            r.path == "/oauth2_user/authorize2",
            "{r:?}"
        );
        assert!(!r.params.contains_key("client_secret") || r.method == "POST");
    }
}

#[tokio::test]
async fn auth_by_pasting_the_redirected_url_or_the_code() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let redirect = OAuthOptions::default().redirect_uri;
    for (n, paste_whole_url) in [(1, true), (2, false)] {
        let path = dir.path().join(format!("tokens-{n}.json"));
        let auth = Authorization::new(settings(&sim, &path, &redirect)).unwrap();
        let location = consent(&auth.url()).await;
        let pasted = if paste_whole_url {
            location.clone()
        } else {
            Url::parse(&location)
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "code")
                .unwrap()
                .1
                .into_owned()
        };
        // Blank lines first, as a user pressing Enter too early would send.
        let input = format!("\n  \n{pasted}\n");
        let code = auth.read_pasted(input.as_bytes()).await.unwrap();
        let tokens = auth.exchange(&code).await.unwrap();
        assert_eq!(TokenStore::new(&path).load().unwrap(), Some(tokens.clone()));
        assert!(sim.refresh_token_usable(tokens.refresh_token.expose()));
    }
}

/// What a hostile page could make the browser send to the redirect listener.
async fn forge(uri: &Url, query: &str) -> (u16, String) {
    let response = reqwest::get(format!("{uri}?{query}")).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn requests_with_a_wrong_state_are_ignored_and_the_real_redirect_still_succeeds() {
    let sim = simulator().await;
    let (_dir, path) = token_file();
    let (auth, listener) = listening(&sim, &path).await;
    sim.set_redirect_uri(auth.redirect_uri().as_str());
    let uri = auth.redirect_uri().clone();
    let url = auth.url();
    let waiting = auth.receive(listener, Duration::from_secs(20));
    let attacker_then_user = async {
        // Forged codes and errors, with a wrong state or none: each is answered, and the
        // listener goes on waiting.
        for query in [
            "code=stolen&state=forged",
            "error=access_denied&state=forged",
            "error=access_denied",
            "code=stolen",
        ] {
            let (status, page) = forge(&uri, query).await;
            assert_eq!(status, 400, "{query}: {page}");
            assert!(page.contains("Ignored"), "{query}: {page}");
        }
        let response = reqwest::get(url).await.unwrap();
        (response.status(), response.text().await.unwrap())
    };
    let (code, (status, page)) = tokio::join!(waiting, attacker_then_user);
    let code = code.unwrap();
    assert_eq!(status, 200, "{page}");
    assert_ne!(code.expose(), "stolen");
    let tokens = auth.exchange(&code).await.unwrap();
    assert!(sim.refresh_token_usable(tokens.refresh_token.expose()));
    assert_eq!(
        sim.token_request_count(),
        1,
        "a forged code is never exchanged"
    );
}

#[tokio::test]
async fn only_an_error_with_this_runs_state_ends_the_wait() {
    let sim = simulator().await;
    let (_dir, path) = token_file();
    let (auth, listener) = listening(&sim, &path).await;
    let uri = auth.redirect_uri().clone();
    let state: String = auth
        .url()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let waiting = auth.receive(listener, Duration::from_secs(20));
    let browser = async {
        let (status, _) = forge(&uri, "error=access_denied&state=forged").await;
        assert_eq!(status, 400);
        forge(&uri, &format!("error=access_denied&state={state}")).await
    };
    let (result, (status, page)) = tokio::join!(waiting, browser);
    let err = result.unwrap_err();
    assert!(matches!(err, AuthError::Denied(_)), "{err:?}");
    assert_one_line(&err, "access_denied");
    assert_eq!(status, 400);
    assert!(page.contains("Authorization failed"), "{page}");
    assert!(!path.exists());
}

#[tokio::test]
async fn forged_requests_alone_end_in_the_timeout_and_nothing_is_saved() {
    let sim = simulator().await;
    let (_dir, path) = token_file();
    let (auth, listener) = listening(&sim, &path).await;
    let uri = auth.redirect_uri().clone();
    // The listener answers each forgery before the timeout passes, and the forgeries alone
    // do not end the wait: only the timeout does.
    let timeout = Duration::from_secs(2);
    let waiting = auth.receive(listener, timeout);
    let attacker = async {
        for query in ["code=stolen&state=forged", "error=access_denied&state=x"] {
            assert_eq!(forge(&uri, query).await.0, 400, "{query}");
        }
    };
    let (result, ()) = tokio::join!(waiting, attacker);
    let err = result.unwrap_err();
    assert!(
        matches!(err, AuthError::Timeout(t) if t == timeout),
        "{err:?}"
    );
    assert!(!path.exists());
    assert_eq!(sim.token_request_count(), 0);
}

#[tokio::test]
async fn an_expired_code_gets_a_clear_error() {
    let sim = simulator().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    sim.set_clock(Some(now));
    let (_dir, path) = token_file();
    let auth =
        Authorization::new(settings(&sim, &path, &OAuthOptions::default().redirect_uri)).unwrap();
    let location = consent(&auth.url()).await;
    // The user took 31 seconds to paste: the code has lapsed.
    sim.set_clock(Some(now + 31));
    let code = auth.code_from_pasted(&location).unwrap();
    let err = auth.exchange(&code).await.unwrap_err();
    assert!(matches!(err, AuthError::CodeRefused(_)), "{err:?}");
    assert_one_line(&err, "30 seconds");
    assert!(!path.exists());
    // A code is single-use as well.
    sim.set_clock(Some(now));
    let location = consent(&auth.url()).await;
    let code = auth.code_from_pasted(&location).unwrap();
    auth.exchange(&code).await.unwrap();
    let again = auth.exchange(&code).await.unwrap_err();
    assert!(matches!(again, AuthError::CodeRefused(_)), "{again:?}");
}

#[tokio::test]
async fn a_redirect_uri_mismatch_gets_a_clear_error() {
    let sim = simulator().await;
    let (_dir, path) = token_file();
    let auth =
        Authorization::new(settings(&sim, &path, "http://127.0.0.1:9/not-registered")).unwrap();
    // The authorization page refuses an unregistered callback, without redirecting.
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(auth.url())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("redirect_uri_mismatch")
    );
    // A code obtained for the registered URI cannot be exchanged with another one.
    let registered = OAuthOptions::default().redirect_uri;
    let mut url = auth.url();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "redirect_uri" {
                (k, registered.clone())
            } else {
                (k, v)
            }
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let location = consent(&url).await;
    let err = auth
        .exchange(&auth.code_from_pasted(&location).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::RedirectMismatch(_)), "{err:?}");
    assert_one_line(&err, "WITHINGS_REDIRECT_URI");
    assert!(!path.exists());
}

#[tokio::test]
async fn a_bad_client_secret_gets_a_clear_error() {
    let sim = simulator().await;
    let (_dir, path) = token_file();
    let mut s = settings(&sim, &path, &OAuthOptions::default().redirect_uri);
    s.credentials.client_secret = Secret::new("wrong-secret-value");
    let auth = Authorization::new(s).unwrap();
    let location = consent(&auth.url()).await;
    let err = auth
        .exchange(&auth.code_from_pasted(&location).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::BadClient(_)), "{err:?}");
    assert_one_line(&err, "WITHINGS_CLIENT_SECRET");
    assert!(!err.to_string().contains("wrong-secret-value"));
    assert!(!path.exists());
}

/// Runs `withings-exporter auth ARGS` against the simulator; returns the child and its
/// stdout, read up to the line for which `stop` returns a value.
async fn auth_command<T: Send + 'static>(
    sim: &Simulator,
    token_file: &Path,
    args: &[&str],
    stop: impl Fn(&str) -> Option<T> + Send + 'static,
) -> (ChildGuard, T, std::io::BufReader<std::process::ChildStdout>) {
    auth_command_with(
        sim,
        ("WITHINGS_TOKEN_FILE", token_file),
        args,
        Stdio::null(),
        stop,
    )
    .await
}

/// [`auth_command`] with the token place in `token` (`WITHINGS_TOKEN_FILE` or
/// `WITHINGS_TOKEN_DIR`) and the log sent to `stderr`.
async fn auth_command_with<T: Send + 'static>(
    sim: &Simulator,
    token: (&str, &Path),
    args: &[&str],
    stderr: Stdio,
    stop: impl Fn(&str) -> Option<T> + Send + 'static,
) -> (ChildGuard, T, std::io::BufReader<std::process::ChildStdout>) {
    withings_exporter::withings::install_crypto_provider();
    let o = OAuthOptions::default();
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_withings-exporter"))
            .arg("auth")
            .args(args)
            .env_clear()
            .env("WITHINGS_API_URL", sim.url().as_str())
            .env("WITHINGS_ACCOUNT_URL", sim.url().as_str())
            .env("WITHINGS_CLIENT_ID", &o.client_id)
            .env("WITHINGS_CLIENT_SECRET", &o.client_secret)
            .env("WITHINGS_REDIRECT_URI", &o.redirect_uri)
            .env(token.0, token.1)
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (found, reader) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(found) = stop(&line) {
                return (found, reader);
            }
            line.clear();
        }
        panic!("the auth command ended without printing what was expected");
    })
    .await
    .unwrap();
    (child, found, reader)
}

fn printed_url(line: &str) -> Option<Url> {
    let start = line.find("http://")?;
    line.trim_start()
        .starts_with("http://")
        .then(|| Url::parse(line[start..].trim()).unwrap())
}

async fn finish(
    child: ChildGuard,
    mut rest: std::io::BufReader<std::process::ChildStdout>,
) -> String {
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut rest, &mut out).unwrap();
    assert!(status.success(), "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_command_in_paste_mode_writes_the_token_file() {
    let sim = simulator().await;
    let (_dir, path) = token_file();
    // The URL is printed before the program waits for input.
    let (mut child, url, rest) = auth_command(&sim, &path, &["--paste"], printed_url).await;
    let location = consent(&url).await;
    let mut stdin = child.0.stdin.take().unwrap();
    writeln!(stdin, "{location}").unwrap();
    drop(stdin);
    let out = finish(child, rest).await;
    assert!(
        out.contains("withings-exporter serve") && out.contains(&path.display().to_string()),
        "{out}"
    );
    let tokens = TokenStore::new(&path).load().unwrap().unwrap();
    assert!(sim.refresh_token_usable(tokens.refresh_token.expose()));
    assert!(
        !out.contains(tokens.refresh_token.expose()) && !out.contains(tokens.access_token.expose())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_command_receives_the_redirect_on_its_listen_address() {
    // As in a container: the redirect URI names 127.0.0.1:19101 on the host, the listener
    // binds another address (here an ephemeral port) that the host forwards to.
    let sim = simulator().await;
    let (_dir, path) = token_file();
    let (child, url, mut rest) =
        auth_command(&sim, &path, &["--listen", "127.0.0.1:0"], printed_url).await;
    let listening: std::net::SocketAddr = {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            assert!(rest.read_line(&mut line).unwrap() > 0, "no listening line");
            if let Some(at) = line.split("(listening on ").nth(1) {
                break at.split(')').next().unwrap().parse().unwrap();
            }
        }
    };
    let mut redirect = Url::parse(&consent(&url).await).unwrap();
    redirect.set_port(Some(listening.port())).unwrap();
    let page = reqwest::get(redirect).await.unwrap();
    assert_eq!(page.status(), 200);
    let out = finish(child, rest).await;
    assert!(out.contains("Authorized"), "{out}");
    let tokens = TokenStore::new(&path).load().unwrap().unwrap();
    assert!(sim.refresh_token_usable(tokens.refresh_token.expose()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_creates_a_missing_token_directory_before_showing_the_url() {
    // A fresh container volume or state directory: the token directory and its parent do
    // not exist, and the image has no shell to make them.
    let sim = simulator().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state").join("accounts");
    let log = root.path().join("stderr.log");
    let stderr = std::fs::File::create(&log).unwrap();
    let (mut child, url, rest) = auth_command_with(
        &sim,
        ("WITHINGS_TOKEN_DIR", &dir),
        &["--account", "mom", "--paste"],
        stderr.into(),
        printed_url,
    )
    .await;
    // Made before the user is sent to Withings: a directory that cannot be made would
    // stop `auth` before anyone signs in.
    assert!(dir.is_dir());
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&root.path().join("state")), 0o700);
    let location = consent(&url).await;
    let mut stdin = child.0.stdin.take().unwrap();
    writeln!(stdin, "{location}").unwrap();
    drop(stdin);
    finish(child, rest).await;
    let file = dir.join("mom.json");
    assert!(TokenStore::new(&file).load().unwrap().is_some());
    assert_eq!(mode(&file), 0o600);
    let text = std::fs::read_to_string(&log).unwrap();
    let created: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("created the token directory"))
        .collect();
    assert_eq!(created.len(), 1, "{text}");
    assert!(
        created[0].contains("level=info") && created[0].contains(&dir.display().to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn auth_says_in_one_line_when_the_token_directory_cannot_be_made() {
    let sim = simulator().await;
    let root = tempfile::tempdir().unwrap();
    // A regular file where a parent directory should be: no user, root included, can
    // make the directory.
    let blocker = root.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let path = blocker.join("accounts").join("mom.json");
    let auth =
        Authorization::new(settings(&sim, &path, &OAuthOptions::default().redirect_uri)).unwrap();
    let e = auth.create_token_dir().unwrap_err();
    assert!(matches!(e, AuthError::CreateDir { .. }), "{e:?}");
    assert_one_line(&e, "cannot create the token directory");
}
