//! Issue 3: refresh with rotation, single flight, persistence before use, restarts,
//! unwritable storage, transient and permanent refresh failures. Each test runs a real
//! exporter server against the simulator's OAuth authority.

use crate::common;

use common::accounts::{issued_tokens, unix_now as now};
use common::{sample, sample_with};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use withings_exporter::account::token_store::{StoredTokens, TokenStore};
use withings_exporter::account::tokens::{
    ClientCredentials, RefreshPolicy, TokenManager, TokenSource,
};
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_exporter::secret::Secret;
use withings_exporter::withings::{ClientOptions, WithingsClient};
use withings_sim::{Fault, OAuthOptions, Simulator};

const LIFETIME: i64 = 3600;

/// A simulator on a fixed clock, so that tests expire tokens by moving it, not by waiting.
async fn simulator() -> Simulator {
    let sim = common::simulator_on_a_stopped_clock(LIFETIME, now()).await;
    sim.set_groups(vec![serde_json::json!({
        "grpid": 1, "attrib": 0, "date": 1_700_000_000, "category": 1,
        "measures": [{"value": 120, "type": 10, "unit": 0}]
    })])
    .unwrap();
    sim
}

/// Moves the simulator's clock past the current access token's lifetime.
fn expire(sim: &Simulator, clock: &mut i64) {
    *clock += LIFETIME + 1;
    sim.set_clock(Some(*clock));
}

/// Writes a token file holding a pair the simulator just issued, as `auth` would.
fn authorized_file(sim: &Simulator, path: &Path) -> StoredTokens {
    // The simulator's default user.
    let tokens = issued_tokens(sim, "12345");
    TokenStore::new(path).save(&tokens).unwrap();
    tokens
}

fn credentials() -> ClientCredentials {
    let o = OAuthOptions::default();
    ClientCredentials {
        client_id: o.client_id,
        client_secret: Secret::new(o.client_secret),
    }
}

struct ManagedApp {
    http: reqwest::Client,
    address: std::net::SocketAddr,
    source: TokenSource,
    _server: common::Served,
}

impl ManagedApp {
    async fn scrape(&self) -> String {
        let response = self
            .http
            .get(format!("http://{}/metrics", self.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }
}

async fn spawn_managed(sim: &Simulator, path: &Path, policy: RefreshPolicy) -> ManagedApp {
    let client = WithingsClient::new(&sim.url(), ClientOptions::default()).unwrap();
    let manager =
        TokenManager::open(client, credentials(), TokenStore::new(path), None, policy).unwrap();
    serve(sim, TokenSource::Managed(Arc::new(manager))).await
}

async fn serve(sim: &Simulator, source: TokenSource) -> ManagedApp {
    let config = Config::from_vars([
        (
            "WITHINGS_LISTEN_ADDRESS".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        ("WITHINGS_API_URL".to_string(), sim.url().to_string()),
        ("WITHINGS_TIMEOUT_SECONDS".to_string(), "5".to_string()),
    ])
    .unwrap();
    let exporter = Arc::new(App::with_tokens(&config, source.clone()).unwrap());
    let server = common::serve(common::bind(exporter).await);
    ManagedApp {
        http: reqwest::Client::new(),
        address: server.address,
        source,
        _server: server,
    }
}

/// The token source the configuration asks for, with a client for its API URL.
fn source_of(
    config: &Config,
) -> Result<TokenSource, withings_exporter::account::tokens::TokenSetupError> {
    let client = WithingsClient::new(&config.withings.api_url, ClientOptions::default()).unwrap();
    TokenSource::from_config(&config.accounts, &config.withings, &client)
}

fn refreshes(text: &str, outcome: &str) -> f64 {
    sample_with(
        text,
        "withings_token_refreshes_total",
        &[("outcome", outcome)],
    )
    .unwrap_or(-1.0)
}

fn measure_bearers(sim: &Simulator) -> Vec<String> {
    sim.requests()
        .into_iter()
        .filter(|r| r.path == "/measure")
        .filter_map(|r| r.bearer)
        .collect()
}

fn refresh_params(sim: &Simulator) -> Vec<String> {
    sim.requests()
        .into_iter()
        .filter(|r| r.path == "/v2/oauth2")
        .filter_map(|r| r.params.get("refresh_token").cloned())
        .collect()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn scrapes_keep_succeeding_across_several_token_lifetimes() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let first = authorized_file(&sim, &path);
    let app = spawn_managed(&sim, &path, RefreshPolicy::default()).await;
    let mut clock = now();
    let mut previous = first;
    for round in 1..=5 {
        expire(&sim, &mut clock);
        let text = app.scrape().await;
        assert_eq!(
            sample(&text, "withings_up"),
            Some(1.0),
            "round {round}\n{text}"
        );
        assert_eq!(sample(&text, "withings_token_valid"), Some(1.0));
        let stored = TokenStore::new(&path).load().unwrap().unwrap();
        // The file holds the newest pair: the one the last getmeas used, still refreshable.
        assert_eq!(
            measure_bearers(&sim).last().map(String::as_str),
            Some(stored.access_token.expose())
        );
        assert!(
            sim.refresh_token_usable(stored.refresh_token.expose()),
            "round {round}"
        );
        assert_ne!(
            stored.refresh_token, previous.refresh_token,
            "rotated in round {round}"
        );
        // ...and the rotated-away refresh token is dead, as at Withings.
        assert!(!sim.refresh_token_usable(previous.refresh_token.expose()));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(refreshes(&text, "success"), f64::from(round));
        assert_eq!(
            sample(&text, "withings_token_expiry_timestamp_seconds"),
            Some(stored.expires_at as f64)
        );
        previous = stored;
    }
    assert_eq!(sim.token_request_count(), 5, "one refresh per lifetime");
    assert_eq!(app.source.expiry(), Some(previous.expires_at));
}

#[tokio::test]
async fn a_token_about_to_expire_is_refreshed_before_it_is_used() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let mut tokens = authorized_file(&sim, &path);
    // Four minutes left of a three-hour token: inside the five-minute margin.
    tokens.expires_at = now() + 240;
    tokens.obtained_at = Some(tokens.expires_at - 10_800);
    TokenStore::new(&path).save(&tokens).unwrap();
    let app = spawn_managed(&sim, &path, RefreshPolicy::default()).await;
    let text = app.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
    assert_eq!(sim.token_request_count(), 1);
    let stored = TokenStore::new(&path).load().unwrap().unwrap();
    assert_eq!(
        measure_bearers(&sim),
        vec![stored.access_token.expose().to_owned()],
        "the old token was not even tried"
    );
    // A fresh token is not refreshed again.
    app.scrape().await;
    assert_eq!(sim.token_request_count(), 1);
}

#[tokio::test]
async fn fifty_concurrent_scrapes_on_an_expired_token_make_one_refresh() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    authorized_file(&sim, &path);
    let app = Arc::new(spawn_managed(&sim, &path, RefreshPolicy::default()).await);
    let mut clock = now();
    expire(&sim, &mut clock);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { app.scrape().await })
        })
        .collect();
    for task in tasks {
        let text = task.await.unwrap();
        assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
    }
    assert_eq!(sim.token_request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_auth_failures_make_one_refresh() {
    // The exporter serialises its syncs; this drives the token source directly, as any
    // future concurrent caller would.
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let old = authorized_file(&sim, &path);
    let client = WithingsClient::new(&sim.url(), ClientOptions::default()).unwrap();
    let manager = TokenManager::open(
        client,
        credentials(),
        TokenStore::new(&path),
        None,
        RefreshPolicy::default(),
    )
    .unwrap();
    let source = TokenSource::Managed(Arc::new(manager));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (source, rejected) = (source.clone(), old.access_token.clone());
            tokio::spawn(async move { source.after_auth_failure(&rejected).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap().unwrap().unwrap());
    }
    assert_eq!(sim.token_request_count(), 1);
    let stored = TokenStore::new(&path).load().unwrap().unwrap();
    assert!(
        tokens.iter().all(|t| *t == stored.access_token),
        "all got the one new token"
    );
}

#[tokio::test]
async fn a_restart_after_a_refresh_uses_the_saved_pair() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let first = authorized_file(&sim, &path);
    let mut clock = now();
    {
        let app = spawn_managed(&sim, &path, RefreshPolicy::default()).await;
        expire(&sim, &mut clock);
        assert_eq!(sample(&app.scrape().await, "withings_up"), Some(1.0));
    }
    assert!(
        !sim.refresh_token_usable(first.refresh_token.expose()),
        "rotated away and dead"
    );
    let saved = TokenStore::new(&path).load().unwrap().unwrap();
    let app = spawn_managed(&sim, &path, RefreshPolicy::default()).await;
    // The saved access token is still good: no refresh needed at start.
    assert_eq!(sample(&app.scrape().await, "withings_up"), Some(1.0));
    assert_eq!(sim.token_request_count(), 1);
    expire(&sim, &mut clock);
    assert_eq!(sample(&app.scrape().await, "withings_up"), Some(1.0));
    assert_eq!(
        refresh_params(&sim),
        vec![
            first.refresh_token.expose().to_owned(),
            saved.refresh_token.expose().to_owned()
        ]
    );
}

#[tokio::test]
async fn starting_from_a_refresh_token_creates_the_token_file() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let (_, refresh, _) = sim.issue_token_pair();
    let o = OAuthOptions::default();
    let vars = |refresh: &str, path: &Path| {
        Config::from_vars([
            ("WITHINGS_API_URL".to_string(), sim.url().to_string()),
            ("WITHINGS_CLIENT_ID".to_string(), o.client_id.clone()),
            (
                "WITHINGS_CLIENT_SECRET".to_string(),
                o.client_secret.clone(),
            ),
            (
                "WITHINGS_TOKEN_FILE".to_string(),
                path.display().to_string(),
            ),
            ("WITHINGS_REFRESH_TOKEN".to_string(), refresh.to_string()),
        ])
        .unwrap()
    };
    let source = source_of(&vars(&refresh, &path)).unwrap();
    assert!(matches!(source, TokenSource::Managed(_)));
    assert_eq!(
        TokenStore::new(&path)
            .load()
            .unwrap()
            .unwrap()
            .refresh_token
            .expose(),
        refresh
    );
    assert_eq!(mode(&path), 0o600);
    let app = serve(&sim, source).await;
    assert_eq!(sample(&app.scrape().await, "withings_up"), Some(1.0));
    let stored = TokenStore::new(&path).load().unwrap().unwrap();
    assert!(sim.refresh_token_usable(stored.refresh_token.expose()));
    assert_ne!(stored.refresh_token.expose(), refresh);

    // With the file in place, a stale WITHINGS_REFRESH_TOKEN no longer matters.
    let again = source_of(&vars(&refresh, &path)).unwrap();
    assert_eq!(again.access_token().await.unwrap(), stored.access_token);

    // An unwritable location stops the start with one clear line, before any rotation.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = source_of(&vars(&refresh, &blocker.join("tokens.json"))).unwrap_err();
    let line = err.to_string();
    assert!(
        line.contains("a-file/tokens.json") && line.contains("permissions") && !line.contains('\n'),
        "{line}"
    );
    // A directory nobody can create files in, root included (/proc), as a read-only volume.
    let err = source_of(&vars(
        &refresh,
        Path::new("/proc/self/withings-tokens.json"),
    ))
    .unwrap_err();
    let line = err.to_string();
    assert!(
        line.contains("/proc/self/withings-tokens.json")
            && line.contains("writable")
            && !line.contains('\n'),
        "{line}"
    );
    assert!(!line.contains(&refresh), "{line}");
}

#[tokio::test]
async fn an_unwritable_token_directory_is_loud_and_loses_no_token() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    let path = volume.join("tokens.json");
    let first = authorized_file(&sim, &path);
    let app = spawn_managed(&sim, &path, RefreshPolicy::default()).await;
    let mut clock = now();
    // The volume goes away and a regular file takes its place: saving fails with ENOTDIR,
    // which (unlike permission bits) stops root too.
    let moved: PathBuf = dir.path().join("moved");
    std::fs::rename(&volume, &moved).unwrap();
    std::fs::write(&volume, b"not a directory").unwrap();
    expire(&sim, &mut clock);
    for _ in 0..3 {
        let text = app.scrape().await;
        assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
        assert_eq!(refreshes(&text, "save_error"), 1.0);
    }
    assert_eq!(
        sim.token_request_count(),
        1,
        "no second rotation while a pair is unsaved"
    );
    // The unsaved access token was never used, so the refresh token on disk still works.
    assert!(
        measure_bearers(&sim)
            .iter()
            .all(|b| b == first.access_token.expose())
    );
    assert!(sim.refresh_token_usable(first.refresh_token.expose()));
    assert_eq!(
        TokenStore::new(moved.join("tokens.json")).load().unwrap(),
        Some(first.clone())
    );

    // The volume comes back: the pending pair is saved, then used.
    std::fs::remove_file(&volume).unwrap();
    std::fs::rename(&moved, &volume).unwrap();
    let text = app.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
    let stored = TokenStore::new(&path).load().unwrap().unwrap();
    assert_ne!(stored.refresh_token, first.refresh_token);
    assert!(sim.refresh_token_usable(stored.refresh_token.expose()));
    assert_eq!(
        measure_bearers(&sim).last().map(String::as_str),
        Some(stored.access_token.expose())
    );
    assert_eq!(sim.token_request_count(), 1);
}

#[tokio::test]
async fn transient_refresh_failures_keep_the_tokens_and_back_off() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let first = authorized_file(&sim, &path);
    let policy = RefreshPolicy {
        backoff_base: Duration::from_secs(4),
        ..RefreshPolicy::default()
    };
    let app = spawn_managed(&sim, &path, policy).await;
    let mut clock = now();
    expire(&sim, &mut clock);
    sim.set_token_fault(Some(Fault::Http {
        status: 502,
        body: "<html>Bad Gateway</html>".into(),
    }));
    let text = app.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0));
    assert_eq!(refreshes(&text, "transient_error"), 1.0);
    // Within the backoff (at least half of 4 s) further scrapes do not call the endpoint.
    for _ in 0..3 {
        app.scrape().await;
    }
    assert_eq!(sim.token_request_count(), 1);
    assert_eq!(
        TokenStore::new(&path).load().unwrap(),
        Some(first.clone()),
        "tokens kept"
    );
    assert!(sim.refresh_token_usable(first.refresh_token.expose()));
    sim.set_token_fault(None);
    // Poll with a deadline until the backoff has passed and the retry succeeded.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut last = app.scrape().await;
    let mut recovered = sample(&last, "withings_up") == Some(1.0);
    while !recovered && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = app.scrape().await;
        recovered = sample(&last, "withings_up") == Some(1.0);
    }
    assert!(recovered, "{last}");
    assert_eq!(refreshes(&last, "success"), 1.0);
    assert!(
        sim.token_request_count() <= 3,
        "{} token requests",
        sim.token_request_count()
    );
}

#[tokio::test]
async fn a_refused_refresh_token_is_reported_once_and_not_retried() {
    // A current-thread runtime: every task runs on this thread, under this subscriber.
    let logs = common::CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let mut tokens = authorized_file(&sim, &path);
    tokens.refresh_token = Secret::new("a-refresh-token-withings-no-longer-knows");
    TokenStore::new(&path).save(&tokens).unwrap();
    let app = spawn_managed(&sim, &path, RefreshPolicy::default()).await;
    let mut clock = now();
    expire(&sim, &mut clock);
    for _ in 0..10 {
        let text = app.scrape().await;
        assert_eq!(sample(&text, "withings_up"), Some(0.0));
        assert_eq!(sample(&text, "withings_token_valid"), Some(0.0), "{text}");
        assert_eq!(refreshes(&text, "permanent_error"), 1.0);
    }
    assert_eq!(
        sim.token_request_count(),
        1,
        "the token endpoint is not hammered"
    );
    let text = logs.text();
    let instructions: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("withings-exporter auth"))
        .collect();
    assert_eq!(instructions.len(), 1, "{text}");
    assert!(instructions[0].contains("ERROR"), "{}", instructions[0]);
    assert!(
        !text.contains("a-refresh-token-withings-no-longer-knows"),
        "no token in logs"
    );
    assert!(
        !text.contains(tokens.access_token.expose()),
        "no token in logs"
    );

    // Running `auth` (here: writing a newly authorized file) heals it without a restart.
    let fresh = authorized_file(&sim, &path);
    let text = app.scrape().await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "withings_token_valid"), Some(1.0));
    assert_eq!(
        measure_bearers(&sim).last().map(String::as_str),
        Some(fresh.access_token.expose())
    );
}

#[tokio::test]
async fn a_malformed_token_file_stops_the_start_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let content = b"{\"access_token\": \"half-writt";
    std::fs::write(&path, content).unwrap();
    let config = Config::from_vars([
        ("WITHINGS_CLIENT_ID".to_string(), "cid".to_string()),
        ("WITHINGS_CLIENT_SECRET".to_string(), "cs".to_string()),
        (
            "WITHINGS_TOKEN_FILE".to_string(),
            path.display().to_string(),
        ),
        ("WITHINGS_REFRESH_TOKEN".to_string(), "r".to_string()),
    ])
    .unwrap();
    let line = source_of(&config).unwrap_err().to_string();
    assert!(
        line.contains("tokens.json") && line.contains("left untouched") && !line.contains('\n'),
        "{line}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), content);
}

#[tokio::test]
async fn the_token_configuration_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("existing.json");
    TokenStore::new(&existing)
        .save(&StoredTokens {
            access_token: Secret::new("a"),
            refresh_token: Secret::new("r"),
            expires_at: now() + 100,
            obtained_at: None,
            userid: None,
            scope: None,
        })
        .unwrap();
    let missing = dir.path().join("missing.json");
    let (existing, missing) = (
        existing.display().to_string(),
        missing.display().to_string(),
    );
    let source = |pairs: &[(&str, &str)]| {
        let config =
            Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        source_of(&config)
    };
    let creds = [
        ("WITHINGS_CLIENT_ID", "cid"),
        ("WITHINGS_CLIENT_SECRET", "cs"),
    ];
    // Fixed token, even with the image's default WITHINGS_TOKEN_FILE pointing nowhere.
    for extra in [None, Some(("WITHINGS_TOKEN_FILE", missing.as_str()))] {
        let mut vars = vec![("WITHINGS_ACCESS_TOKEN", "fixed")];
        vars.extend(extra);
        assert!(matches!(source(&vars).unwrap(), TokenSource::Static(_)));
    }
    // Client credentials and an existing file: managed, from the file.
    let mut vars = creds.to_vec();
    vars.push(("WITHINGS_TOKEN_FILE", existing.as_str()));
    let managed = source(&vars).unwrap();
    assert!(matches!(managed, TokenSource::Managed(_)));
    assert_eq!(managed.access_token().await.unwrap().expose(), "a");
    // Each impossible combination: one line naming the variable to fix.
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "WITHINGS_ACCESS_TOKEN"),
        (
            vec![("WITHINGS_TOKEN_FILE", missing.as_str())],
            "WITHINGS_ACCESS_TOKEN",
        ),
        (
            vec![("WITHINGS_TOKEN_FILE", existing.as_str())],
            "WITHINGS_CLIENT_ID",
        ),
        (vec![("WITHINGS_REFRESH_TOKEN", "r")], "WITHINGS_CLIENT_ID"),
        (
            vec![
                ("WITHINGS_CLIENT_ID", "cid"),
                ("WITHINGS_TOKEN_FILE", existing.as_str()),
            ],
            "WITHINGS_CLIENT_SECRET",
        ),
        (creds.to_vec(), "WITHINGS_TOKEN_FILE"),
        (
            [
                creds.as_slice(),
                &[("WITHINGS_TOKEN_FILE", missing.as_str())],
            ]
            .concat(),
            "WITHINGS_TOKEN_FILE",
        ),
    ];
    for (vars, variable) in cases {
        let line = source(&vars).unwrap_err().to_string();
        assert!(
            line.starts_with(variable) && !line.contains('\n'),
            "{vars:?}: {line}"
        );
    }
}

/// Expiry is judged on the application's clock (the one its client's limits carry), and a
/// refreshed pair's expiry is counted from it: a test that pins or advances that clock sees
/// the token expire on the same time line as everything else.
#[tokio::test]
async fn expiry_follows_the_applications_clock() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let tokens = authorized_file(&sim, &path);
    let manager_at = |unix: i64| {
        let limits = Arc::new(withings_exporter::withings::Limits::new(
            100,
            withings_exporter::clock::Clock::starting_at_unix(unix),
        ));
        let client =
            WithingsClient::with_limits(&sim.url(), ClientOptions::default(), limits).unwrap();
        TokenManager::open(
            client,
            credentials(),
            TokenStore::new(&path),
            None,
            RefreshPolicy::default(),
        )
        .unwrap()
    };
    // An hour before expiry by this clock: used as it is.
    let early = manager_at(tokens.expires_at - 3600);
    assert_eq!(early.access_token().await.unwrap(), tokens.access_token);
    assert_eq!(sim.token_request_count(), 0);
    // At its expiry by this clock, though the system clock says it has an hour left.
    let late_clock = tokens.expires_at;
    let late = manager_at(late_clock);
    let fresh = late.access_token().await.unwrap();
    assert_ne!(fresh, tokens.access_token);
    assert_eq!(sim.token_request_count(), 1);
    let stored = TokenStore::new(&path).load().unwrap().unwrap();
    assert_eq!(stored.expires_at, late_clock + LIFETIME);
    assert_eq!(stored.obtained_at, Some(late_clock));
    assert_eq!(late.expiry(), Some(late_clock + LIFETIME));
}
