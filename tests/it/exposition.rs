//! Issue 18: a scrape from state serves an account's families as encoded at the last change
//! of its state. Every kind of change must show on the next scrape (no stale cache), and what
//! is served must be the bytes a full render of the same state gives.

use crate::common;

use common::accounts::issued_tokens;
use common::{AppOptions, TestApp, sample, sample_with, spawn_app_with};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use withings_exporter::account::Account;
use withings_exporter::account::token_store::TokenStore;
use withings_exporter::account::tokens::{
    ClientCredentials, RefreshPolicy, TokenManager, TokenSource,
};
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_exporter::render::exposition::merge;
use withings_exporter::render::families::encode;
use withings_exporter::secret::Secret;
use withings_exporter::withings::{ClientOptions, WithingsClient};
use withings_sim::{Fault, OAuthOptions};

const T: i64 = 1_700_000_000;
const INTERVAL: Duration = Duration::from_secs(600);

fn group(grpid: i64, date: i64, systolic: i64) -> Value {
    json!({
        "grpid": grpid, "attrib": 0, "date": date, "created": date, "modified": date,
        "category": 1, "deviceid": "d1", "hash_deviceid": "d1", "model": "BPM Core",
        "modelid": 44, "measures": [
            {"type": 10, "value": systolic, "unit": 0},
            {"type": 9, "value": 80, "unit": 0},
        ],
    })
}

fn systolic(text: &str) -> Option<f64> {
    sample_with(
        text,
        "withings_blood_pressure_mmhg",
        &[("kind", "systolic")],
    )
}

/// The account's families as served from the cache, checked against a full render of the
/// same state, byte for byte.
fn served(account: &Account) -> String {
    let (state, scrape) = account.exposition(None);
    let text = merge(&[&state, &scrape.finish()]);
    assert_eq!(text, encode(account.families(None)), "cached != fresh");
    text
}

/// Whether the next scrape from state is served the pieces of the last one, unchanged.
fn cached(account: &Account) -> bool {
    let (a, _) = account.exposition(None);
    let (b, _) = account.exposition(None);
    Arc::ptr_eq(&a, &b)
}

async fn app() -> TestApp {
    let app = spawn_app_with(AppOptions {
        env: vec![(
            "WITHINGS_MIN_FETCH_INTERVAL_SECONDS",
            INTERVAL.as_secs().to_string(),
        )],
        ..AppOptions::default()
    })
    .await;
    app.simulator.set_clock(Some(T));
    app
}

/// A scrape that starts a fetch (the interval has passed).
async fn fetching_scrape(app: &TestApp) -> String {
    app.exporter
        .clock()
        .advance(INTERVAL + Duration::from_secs(1));
    let text = app.scrape().await;
    assert!(
        text.contains("withings_scrape_served_from{served_from=\"new_fetch\"} 1"),
        "{text}"
    );
    text
}

#[tokio::test]
async fn every_kind_of_change_shows_on_the_next_scrape() {
    let app = app().await;
    app.simulator
        .set_groups(vec![group(1, T - 3_600, 120)])
        .unwrap();
    let account = Arc::clone(app.exporter.single_account().unwrap());
    // Before any fetch: nothing but the token source's metrics.
    assert_eq!(systolic(&served(&account)), None);
    assert!(cached(&account));

    let text = app.scrape().await;
    assert_eq!(systolic(&text), Some(120.0));
    assert_eq!(systolic(&served(&account)), Some(120.0));
    assert!(cached(&account));

    // Scrapes from state: the same readings, but each scrape's own series move.
    let mut scrapes = Vec::new();
    for _ in 0..3 {
        let text = app.scrape().await;
        assert!(text.contains("withings_scrape_served_from{served_from=\"recent_fetch\"} 1"));
        assert_eq!(sample(&text, "withings_up"), Some(1.0));
        assert_eq!(systolic(&text), Some(120.0));
        scrapes.push(
            sample_with(
                &text,
                "withings_scrapes_total",
                &[("served_from", "recent_fetch")],
            )
            .unwrap(),
        );
    }
    assert_eq!(
        scrapes,
        [1.0, 2.0, 3.0],
        "withings_scrapes_total on every scrape"
    );
    let requests = sample(&app.exporter.metrics_now(), "withings_requests_in_window").unwrap();
    assert!(requests >= 1.0);

    // A new reading, fetched.
    app.simulator.upsert_group(group(2, T - 60, 131)).unwrap();
    let text = fetching_scrape(&app).await;
    assert_eq!(systolic(&text), Some(131.0));
    assert_eq!(
        sample(&text, "withings_requests_in_window"),
        Some(app.exporter.limits().budget.used() as f64),
        "the application's gauges are read on every scrape"
    );
    assert_eq!(systolic(&served(&account)), Some(131.0));
    let success = sample(&text, "withings_last_success_timestamp_seconds").unwrap();

    // Groups the fetch does not use: a counter in the account's registry.
    let mut inconclusive = group(3, T - 30, 99);
    inconclusive["is_inconclusive"] = json!(1);
    app.simulator.upsert_group(inconclusive).unwrap();
    let skipped = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("withings_groups_skipped_total{"))
            .count()
    };
    let before = skipped(&served(&account));
    let text = fetching_scrape(&app).await;
    assert!(skipped(&text) > before, "{text}");
    assert_eq!(skipped(&served(&account)), skipped(&text));
    assert!(sample(&text, "withings_last_success_timestamp_seconds").unwrap() > success);

    // A failing fetch: withings_up and withings_collector_up fall, the readings stay.
    app.simulator.set_fault(Some(Fault::Http {
        status: 502,
        body: "bad gateway".into(),
    }));
    let text = fetching_scrape(&app).await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0));
    assert_eq!(
        sample_with(&text, "withings_collector_up", &[("collector", "measures")]),
        Some(0.0)
    );
    assert_eq!(systolic(&text), Some(131.0));
    let from_state = app.scrape().await;
    assert!(
        from_state.contains("withings_scrape_served_from{served_from=\"recent_fetch\"} 1"),
        "{from_state}"
    );
    assert_eq!(sample(&from_state, "withings_up"), Some(0.0));
    assert_eq!(
        sample_with(
            &from_state,
            "withings_collector_up",
            &[("collector", "measures")]
        ),
        Some(0.0)
    );

    // The token refused: withings_token_valid turns 0.
    app.simulator.set_fault(Some(Fault::ExpiredToken));
    let text = fetching_scrape(&app).await;
    assert_eq!(sample(&text, "withings_token_valid"), Some(0.0));
    assert_eq!(sample(&served(&account), "withings_token_valid"), Some(0.0));

    // Back to health.
    app.simulator.set_fault(None);
    let text = fetching_scrape(&app).await;
    assert_eq!(sample(&text, "withings_token_valid"), Some(1.0));
    assert_eq!(sample(&text, "withings_up"), Some(1.0));
    assert!(cached(&account));
    served(&account);

    assert_eq!(systolic(&app.exporter.metrics_now()), Some(131.0));
    app.shutdown().await;
}

#[tokio::test]
async fn the_process_metrics_are_served_and_sampled() {
    let app = app().await;
    let first = app.scrape().await;
    if cfg!(target_os = "linux") {
        for family in [
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
        ] {
            assert!(
                first.contains(&format!("# TYPE {family} ")),
                "{family}: {first}"
            );
        }
    }
    // Sorted by name among the exporter's own families, as one encoding of them all is.
    let names: Vec<&str> = first
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    app.shutdown().await;
}

/// A token refreshed outside a fetch (as a notification subscription may do) shows on the
/// next scrape from state: its refresh counter and expiry.
#[tokio::test]
async fn a_token_refreshed_between_fetches_shows() {
    let now = common::accounts::unix_now();
    let sim = common::simulator_on_a_stopped_clock(3600, now).await;
    sim.set_groups(vec![group(1, now - 3_600, 120)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    TokenStore::new(&path)
        .save(&issued_tokens(&sim, "12345"))
        .unwrap();
    let oauth = OAuthOptions::default();
    let client = WithingsClient::new(&sim.url(), ClientOptions::default()).unwrap();
    let manager = TokenManager::open(
        client,
        ClientCredentials {
            client_id: oauth.client_id,
            client_secret: Secret::new(oauth.client_secret),
        },
        TokenStore::new(&path),
        None,
        RefreshPolicy::default(),
    )
    .unwrap();
    let source = TokenSource::Managed(Arc::new(manager));
    let config = Config::from_vars([
        ("WITHINGS_API_URL".to_string(), sim.url().to_string()),
        (
            "WITHINGS_MIN_FETCH_INTERVAL_SECONDS".to_string(),
            "3600".to_string(),
        ),
    ])
    .unwrap();
    let app = App::with_tokens(&config, source.clone()).unwrap();
    let account = Arc::clone(app.single_account().unwrap());
    let text = app.metrics(None).await;
    assert_eq!(systolic(&text), Some(120.0));
    let refreshed = |text: &str| {
        sample_with(
            text,
            "withings_token_refreshes_total",
            &[("outcome", "success")],
        )
    };
    assert_eq!(refreshed(&text), Some(0.0));
    assert!(cached(&account));

    let token = source.access_token().await.unwrap();
    source.after_auth_failure(&token).await.unwrap();
    let text = app.metrics(None).await;
    assert!(text.contains("withings_scrape_served_from{served_from=\"recent_fetch\"} 1"));
    assert_eq!(refreshed(&text), Some(1.0));
    assert_eq!(
        sample(&text, "withings_token_expiry_timestamp_seconds"),
        source.expiry().map(|e| e as f64)
    );
    assert_eq!(refreshed(&served(&account)), Some(1.0));
}
