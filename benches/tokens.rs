//! What token management costs: a durable save of the token file (two fsyncs), a refresh
//! against the simulator including that save, and 50 callers waiting on one refresh; and
//! what the shared request ledger (`.budget` beside the tokens) adds to every request to
//! Withings, beside the budget a process keeps alone.
//!
//! `cargo bench --bench tokens` (a plain binary: no nightly harness, no extra crate).

use std::sync::Arc;
use std::time::{Duration, Instant};
use withings_exporter::account::token_store::{StoredTokens, TokenStore};
use withings_exporter::account::tokens::{ClientCredentials, RefreshPolicy, TokenManager};
use withings_exporter::clock::Clock;
use withings_exporter::secret::Secret;
use withings_exporter::withings::{ClientOptions, Limits, WithingsClient};
use withings_sim::{OAuthOptions, Simulator, SimulatorOptions};

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<42} n={:<4} median={:>8.3} ms  p90={:>8.3} ms  max={:>8.3} ms",
        samples.len(),
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.9).as_secs_f64() * 1e3,
        pick(1.0).as_secs_f64() * 1e3,
    );
}

fn pair(n: usize) -> StoredTokens {
    StoredTokens {
        access_token: Secret::new(format!("access-token-{n:040}")),
        refresh_token: Secret::new(format!("refresh-token-{n:040}")),
        expires_at: 1_800_000_000,
        obtained_at: Some(1_799_989_200),
        userid: Some("12345".into()),
        scope: Some("user.metrics".into()),
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = TokenStore::new(dir.path().join("tokens.json"));
    let saves = (0..200)
        .map(|n| {
            let started = Instant::now();
            store.save(&pair(n)).expect("save");
            started.elapsed()
        })
        .collect();
    report("token file save (write+fsync+rename+fsync)", saves);

    // A request's slot in the budget, with and without the ledger every process on the
    // token directory shares: in the steady state of a full budget (120 slots in the
    // window, one taken every half second of the clock).
    let ledger_path = dir.path().join(".budget");
    let ledger = withings_exporter::withings::budget::Ledger::new(&ledger_path);
    let mut at = Duration::from_secs(1_800_000_000);
    let mut shared = Vec::new();
    for n in 0..2_000 {
        at += Duration::from_millis(500);
        let started = Instant::now();
        let taken = ledger.take(at, 120).expect("ledger");
        let took = started.elapsed();
        assert!(taken.is_ok(), "slot {n} refused");
        shared.push(took);
    }
    let alone = withings_exporter::withings::budget::Budget::new(120, Clock::default());
    let mut own = Vec::new();
    for _ in 0..2_000 {
        let started = Instant::now();
        let _ = alone.try_take();
        own.push(started.elapsed());
    }
    report("budget slot, shared ledger (flock+read+write)", shared);
    report("budget slot, this process alone", own);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let sim = Simulator::start(SimulatorOptions::default())
            .await
            .expect("simulator");
        let (access, refresh, _) = sim.issue_token_pair();
        let path = dir.path().join("managed.json");
        let store = TokenStore::new(&path);
        store
            .save(&StoredTokens {
                access_token: Secret::new(access),
                refresh_token: Secret::new(refresh),
                expires_at: 1_800_000_000,
                obtained_at: None,
                userid: None,
                scope: None,
            })
            .expect("seed");
        let o = OAuthOptions::default();
        // What is measured is the refresh and the save, 220 of them in a few seconds: the
        // application's request budget (100 a minute by default) would stop it at the 101st.
        let client = WithingsClient::with_limits(
            &sim.url(),
            ClientOptions::default(),
            Arc::new(Limits::new(100_000, Clock::default())),
        )
        .expect("client");
        let manager = Arc::new(
            TokenManager::open(
                client,
                ClientCredentials {
                    client_id: o.client_id,
                    client_secret: Secret::new(o.client_secret),
                },
                store,
                None,
                RefreshPolicy::default(),
            )
            .expect("manager"),
        );
        let mut refreshes = Vec::new();
        let mut current = manager.access_token().await.expect("token");
        for _ in 0..200 {
            let started = Instant::now();
            current = manager.after_auth_failure(&current).await.expect("refresh");
            refreshes.push(started.elapsed());
        }
        report("refresh: token request + save", refreshes);

        let mut fan_in = Vec::new();
        for _ in 0..20 {
            let rejected = manager.access_token().await.expect("token");
            let before = sim.token_request_count();
            let started = Instant::now();
            let waiters: Vec<_> = (0..50)
                .map(|_| {
                    let (manager, rejected) = (Arc::clone(&manager), rejected.clone());
                    tokio::spawn(async move { manager.after_auth_failure(&rejected).await })
                })
                .collect();
            for w in waiters {
                w.await.expect("task").expect("refresh");
            }
            fan_in.push(started.elapsed());
            assert_eq!(
                sim.token_request_count(),
                before + 1,
                "one refresh for 50 callers"
            );
        }
        report("50 concurrent callers, one refresh", fan_in);
    });
}
