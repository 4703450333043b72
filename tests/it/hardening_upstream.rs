//! Issue 14, what comes from Withings and from the token file: redirects are refused, a
//! token answer that cannot work is not saved, HTTP errors name their URL, and a hostile
//! token file (a FIFO, /dev/zero, a huge file, a file others can read) neither blocks nor
//! fills the process.

use crate::common;

use common::accounts::unix_now as now;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;
use withings_exporter::account::token_store::{StoreError, StoredTokens, TokenStore};
use withings_exporter::account::tokens::{
    ClientCredentials, RefreshPolicy, TokenManager, TokenSource,
};
use withings_exporter::collector::measures::getmeas;
use withings_exporter::collector::measures::model::GetmeasQuery;
use withings_exporter::secret::Secret;
use withings_exporter::withings::{ApiError, ClientOptions, WithingsClient};
use withings_sim::{Fault, OAuthOptions, Simulator, SimulatorOptions};

async fn simulator() -> Simulator {
    let sim = Simulator::start(SimulatorOptions::default())
        .await
        .expect("simulator starts");
    sim.set_groups(vec![serde_json::json!({
        "grpid": 1, "attrib": 0, "date": 1_700_000_000, "category": 1,
        "measures": [{"value": 120, "type": 10, "unit": 0}]
    })])
    .unwrap();
    sim
}

fn credentials() -> ClientCredentials {
    let o = OAuthOptions::default();
    ClientCredentials {
        client_id: o.client_id,
        client_secret: Secret::new(o.client_secret),
    }
}

/// A token file holding a pair the simulator issued, due for a refresh (4 s left of a 1 h
/// lifetime) but still accepted: a failed refresh must leave it in use.
fn due_pair(sim: &Simulator, path: &Path) -> StoredTokens {
    let (access, refresh, _) = sim.issue_token_pair();
    let tokens = StoredTokens {
        access_token: Secret::new(access),
        refresh_token: Secret::new(refresh),
        expires_at: now() + 4,
        obtained_at: Some(now() - 3596),
        userid: Some("12345".into()),
        scope: Some("user.metrics".into()),
    };
    TokenStore::new(path).save(&tokens).unwrap();
    tokens
}

fn manager(api: &Simulator, path: &Path) -> TokenManager {
    let client = WithingsClient::new(&api.url(), ClientOptions::default()).unwrap();
    TokenManager::open(
        client,
        credentials(),
        TokenStore::new(path),
        None,
        RefreshPolicy::default(),
    )
    .unwrap()
}

fn refreshes(source: &TokenSource, outcome: &str) -> u64 {
    let registry = prometheus::Registry::new();
    source.register(&registry).unwrap();
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "withings_token_refreshes_total")
        .flat_map(|f| f.get_metric().iter())
        .find(|m| m.get_label().iter().any(|l| l.value() == outcome))
        .map_or(0, |m| m.get_counter().get_value() as u64)
}

fn query() -> GetmeasQuery {
    GetmeasQuery {
        meastypes: "10".into(),
        lastupdate: 0,
        offset: None,
    }
}

/// Where a hijacked answer would send the client: another host (here another port) that
/// serves readings and accepts the real token, with a query that must never be echoed.
async fn elsewhere() -> (Simulator, String, String) {
    let other = simulator().await;
    other.add_access_token("test-access-token");
    let host = format!("127.0.0.1:{}", other.addr().port());
    let location = format!("http://{host}/measure?next=sekrit-in-the-location");
    (other, host, location)
}

#[tokio::test]
async fn a_redirected_getmeas_is_an_error_naming_the_host_and_nothing_reaches_it() {
    let sim = simulator().await;
    let (other, host, location) = elsewhere().await;
    let client = WithingsClient::new(&sim.url(), ClientOptions::default()).unwrap();
    for status in [301, 302, 303, 307, 308] {
        sim.push_fault(Fault::Redirect {
            status,
            location: location.clone(),
        });
        let err = getmeas(&client, &Secret::new("test-access-token"), &query())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ApiError::Redirect {
                status,
                host: host.clone()
            }
        );
        assert_eq!(err.status_label(), "http_error");
        let line = err.to_string();
        assert!(line.contains(&format!("HTTP {status}")), "{line}");
        assert!(line.contains(&host) && !line.contains("sekrit"), "{line}");
    }
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    // A relative or missing Location says so without quoting it.
    sim.push_fault(Fault::Redirect {
        status: 302,
        location: "/elsewhere?sekrit".into(),
    });
    let err = getmeas(&client, &Secret::new("test-access-token"), &query())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::Redirect { host, .. } if *host == format!("127.0.0.1:{}", sim.addr().port())),
        "{err:?}"
    );
    // Without a redirect the same client reads the readings: the fault was the only cause.
    let page = getmeas(&client, &Secret::new("test-access-token"), &query())
        .await
        .unwrap();
    assert_eq!(page.groups.len(), 1);
}

#[tokio::test]
async fn a_redirected_refresh_sends_no_secret_away_and_keeps_the_saved_pair() {
    let sim = simulator().await;
    let (other, host, _) = elsewhere().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let pair = due_pair(&sim, &path);
    let before = std::fs::read(&path).unwrap();
    for status in [307, 308] {
        // 307 and 308 keep the method and the body: client_secret and the refresh token.
        sim.push_token_fault(Fault::Redirect {
            status,
            location: format!("http://{host}/v2/oauth2"),
        });
        let source = TokenSource::Managed(Arc::new(manager(&sim, &path)));
        // The refresh fails, and the token that still works stays in use.
        let token = source.access_token().await.unwrap();
        assert_eq!(token, pair.access_token);
        assert_eq!(refreshes(&source, "transient_error"), 1);
        assert_eq!(refreshes(&source, "success"), 0);
    }
    assert_eq!(
        other.request_count("/v2/oauth2"),
        0,
        "{:?}",
        other.requests()
    );
    assert!(other.requests().is_empty());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the saved pair changed"
    );
    assert!(sim.refresh_token_usable(pair.refresh_token.expose()));
}

#[tokio::test]
async fn a_refresh_answer_that_cannot_work_is_not_saved_and_backs_off() {
    let sim = simulator().await;
    let answer = |access: &str, refresh: &str, expires_in: i64| {
        format!(
            r#"{{"status":0,"body":{{"userid":"12345","access_token":"{access}","refresh_token":"{refresh}","expires_in":{expires_in},"scope":"user.metrics","token_type":"Bearer"}}}}"#
        )
    };
    for (body, flaw) in [
        (
            answer("new-access-0123", "", 10800),
            "refresh_token is empty",
        ),
        (
            answer("", "new-refresh-0123", 10800),
            "access_token is empty",
        ),
        (
            answer("new-access-0123", "new-refresh-0123", 0),
            "expires_in is 0",
        ),
        (
            answer("new-access-0123", "new-refresh-0123", -5),
            "expires_in is -5",
        ),
        (
            answer("new-access-0123", "new\\u001b[2Jrefresh", 10800),
            "refresh_token contains a control character",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let pair = due_pair(&sim, &path);
        let before = std::fs::read(&path).unwrap();
        sim.push_token_fault(Fault::Body(body.clone()));
        let requests_before = sim.token_request_count();
        let client = WithingsClient::new(&sim.url(), ClientOptions::default()).unwrap();

        // What the refresh got is reported without its values.
        let err = client
            .request_token(&[("grant_type", "refresh_token")])
            .await
            .map(|_| ())
            .unwrap_err();
        // That consumed the fault; queue it again for the manager.
        sim.push_token_fault(Fault::Body(body.clone()));
        let line = err.to_string();
        assert!(line.contains(flaw), "{line}");
        assert!(
            !line.contains("new-access") && !line.contains("new-refresh"),
            "{line}"
        );

        let source = TokenSource::Managed(Arc::new(manager(&sim, &path)));
        let token = source.access_token().await.unwrap();
        assert_eq!(token, pair.access_token, "{body}");
        assert_eq!(refreshes(&source, "transient_error"), 1, "{body}");
        assert_eq!(refreshes(&source, "success"), 0, "{body}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "{body}");
        // The file still loads at the next start, with the old pair.
        assert_eq!(TokenStore::new(&path).load().unwrap(), Some(pair.clone()));
        // Backing off: the next calls use the old token without asking Withings again.
        for _ in 0..3 {
            assert_eq!(source.access_token().await.unwrap(), pair.access_token);
        }
        assert_eq!(sim.token_request_count(), requests_before + 2, "{body}");
        // And the exporter keeps working with it.
        let page = getmeas(&client, &token, &query()).await.unwrap();
        assert_eq!(page.groups.len(), 1);
        assert!(sim.refresh_token_usable(pair.refresh_token.expose()));
    }
}

#[tokio::test]
async fn an_http_error_names_the_url_it_requested_without_a_query() {
    let sim = simulator().await;
    let base = url::Url::parse(&format!("http://{}/prefix/", sim.addr())).unwrap();
    let client = WithingsClient::new(&base, ClientOptions::default()).unwrap();
    sim.set_fault(Some(Fault::Http {
        status: 404,
        body: "<html>Not Found</html>".into(),
    }));
    let err = getmeas(&client, &Secret::new("test-access-token-sekrit"), &query())
        .await
        .unwrap_err();
    let line = err.to_string();
    assert!(
        line.contains(&format!(
            "HTTP 404 for http://{}/prefix/measure",
            sim.addr()
        )),
        "{line}"
    );
    assert!(!line.contains("sekrit") && !line.contains('?'), "{line}");
    // The token endpoint is another URL (the simulator serves 404 for the unknown prefix).
    let err = client
        .request_token(&[("refresh_token", "sekrit-refresh")])
        .await
        .unwrap_err();
    let line = err.to_string();
    assert!(
        line.contains(&format!(
            "HTTP 404 for http://{}/prefix/v2/oauth2",
            sim.addr()
        )),
        "{line}"
    );
    assert!(!line.contains("sekrit"), "{line}");
}

/// Runs `f` on a thread of its own and waits at most 10 s for it: a blocking read of a FIFO
/// would otherwise hang the test instead of failing it.
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("blocked on the token file")
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_in_place_of_the_token_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    mkfifo(&path);
    let store = TokenStore::new(&path);
    let err = within_10s(move || store.load().unwrap_err());
    assert!(matches!(err, StoreError::NotAFile { .. }), "{err}");
    let line = err.to_string();
    assert!(
        line.contains("FIFO") && line.contains("tokens.json"),
        "{line}"
    );
}

#[test]
fn a_fifo_replacing_the_token_file_does_not_block_the_running_exporter() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sim = runtime.block_on(simulator());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let (access, refresh, _) = sim.issue_token_pair();
    let pair = StoredTokens {
        access_token: Secret::new(access),
        refresh_token: Secret::new(refresh),
        expires_at: now() + 3600,
        obtained_at: Some(now()),
        userid: None,
        scope: None,
    };
    TokenStore::new(&path).save(&pair).unwrap();
    let source = TokenSource::Managed(Arc::new(manager(&sim, &path)));
    std::fs::remove_file(&path).unwrap();
    mkfifo(&path);
    let handle = runtime.handle().clone();
    let token = within_10s(move || handle.block_on(source.access_token()));
    // The pair in memory stays in use.
    assert_eq!(token.unwrap(), pair.access_token);
}

#[test]
fn dev_zero_through_a_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    let store = TokenStore::new(&path);
    let err = within_10s(move || store.load().unwrap_err());
    assert!(matches!(err, StoreError::NotAFile { .. }), "{err}");
    assert!(err.to_string().contains("character device"), "{err}");
}

#[test]
fn a_huge_token_file_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    // Sparse: 100 MB announced, nothing written, so reading it would take time and memory
    // for nothing; refusing it takes neither.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(100 * 1024 * 1024)
        .unwrap();
    let err = TokenStore::new(&path).load().unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("65536 bytes"), "{err}");
    // Just over the cap is refused too, and a real file just under it still loads.
    let mut over = vec![b' '; 64 * 1024 + 1];
    let mut fine = br#"{"access_token":"a1","refresh_token":"r1","expires_at":1}"#.to_vec();
    over[..fine.len()].copy_from_slice(&fine);
    std::fs::write(&path, &over).unwrap();
    assert!(matches!(
        TokenStore::new(&path).load(),
        Err(StoreError::TooLarge { .. })
    ));
    fine.resize(64 * 1024, b' ');
    std::fs::write(&path, &fine).unwrap();
    assert!(TokenStore::new(&path).load().unwrap().is_some());
}

/// Log lines written while `f` runs on this thread.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    let logs = common::CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    (out, logs.text())
}

#[test]
fn a_token_file_others_can_read_is_warned_about_once_and_made_0600_at_the_next_save() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let secret = "refresh-sekrit-0123";
    std::fs::write(
        &path,
        format!(r#"{{"access_token":"a1","refresh_token":"{secret}","expires_at":1}}"#),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = TokenStore::new(&path);
    let (tokens, log) = logged(|| {
        let tokens = store.load().unwrap().unwrap();
        // Reloaded whenever it changes: still one warning.
        store.load().unwrap().unwrap();
        tokens
    });
    assert_eq!(log.matches("WARN").count(), 1, "{log}");
    assert!(
        log.contains("0644") && log.contains("0600") && log.contains("tokens.json"),
        "{log}"
    );
    assert!(!log.contains(secret), "{log}");
    store.save(&tokens).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // A 0600 file gets no warning.
    let (_, log) = logged(|| TokenStore::new(&path).load().unwrap());
    assert!(!log.contains("WARN"), "{log}");
}

#[test]
fn an_empty_token_file_names_the_missing_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    for (content, missing) in [
        ("{}", "access_token is missing"),
        (r#"{"access_token":"sekrit-a"}"#, "refresh_token is missing"),
        (
            r#"{"access_token":"sekrit-a","refresh_token":"sekrit-r"}"#,
            "expires_at is missing",
        ),
        (
            r#"{"access_token":"sekrit-a","refresh_token":"sekrit\u0007r","expires_at":1}"#,
            "refresh_token contains a control character",
        ),
    ] {
        std::fs::write(&path, content).unwrap();
        let line = TokenStore::new(&path).load().unwrap_err().to_string();
        assert!(line.contains(missing), "{content}: {line}");
        assert!(!line.contains("sekrit"), "{line}");
    }
}
