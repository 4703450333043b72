//! Crash safety: the real binary is killed (SIGKILL) again and again while it refreshes on
//! every scrape; after each kill the token file must parse and hold a refresh token the
//! simulated Withings still accepts.

use crate::common::process;
use process::{ChildGuard, start_serving};

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use withings_exporter::account::token_store::{StoredTokens, TokenStore};
use withings_exporter::secret::Secret;
use withings_sim::{OAuthOptions, Simulator, SimulatorOptions};

struct Running {
    child: ChildGuard,
    address: String,
    logs: Arc<Mutex<Vec<String>>>,
}

async fn start_exporter(sim: &Simulator, token_file: &Path) -> Running {
    let o = OAuthOptions::default();
    let (child, address, logs) = start_serving(
        Command::new(env!("CARGO_BIN_EXE_withings-exporter"))
            .arg("serve")
            .env_clear()
            .env("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0")
            .env("WITHINGS_API_URL", sim.url().as_str())
            .env("WITHINGS_CLIENT_ID", &o.client_id)
            .env("WITHINGS_CLIENT_SECRET", &o.client_secret)
            .env("WITHINGS_TOKEN_FILE", token_file)
            .env("WITHINGS_TIMEOUT_SECONDS", "5")
            // The scraper below asks as fast as it can; fetching at most 5 times a second
            // keeps the request budget (every refresh needs a slot too) from running out
            // within an iteration.
            .env("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "0.2")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info"),
    )
    .await;
    Running {
        child,
        address,
        logs,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_exporter_during_refreshes_never_loses_the_token() {
    // Tokens live 1 s (the shortest lifetime Withings could announce: an `expires_in` that
    // is not positive is refused), so the exporter refreshes about every second and the
    // scrapes use the new access token at once, killing the old refresh token: a lost or
    // torn save would show up as an unusable refresh token in the file.
    // reqwest is built without a default crypto provider (see WithingsClient::new).
    withings_exporter::withings::install_crypto_provider();
    let sim = Simulator::start(SimulatorOptions {
        oauth: OAuthOptions {
            access_token_lifetime: Duration::from_secs(1),
            ..OAuthOptions::default()
        },
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let (access, refresh, _) = sim.issue_token_pair();
    TokenStore::new(&path)
        .save(&StoredTokens {
            access_token: Secret::new(access),
            refresh_token: Secret::new(refresh),
            expires_at: unix_now(),
            obtained_at: Some(unix_now()),
            userid: None,
            scope: None,
        })
        .unwrap();

    let mut seen_refresh_tokens = Vec::new();
    for iteration in 0..20u32 {
        // Each exporter starts with a whole request budget, as a first start would: the
        // ledger beside the token file carries the killed ones' requests over (they did
        // reach Withings), and twenty of them at 5 fetches a second spend a minute's budget
        // long before the last kill. This test is about the token file, not the budget.
        let _ = std::fs::remove_file(dir.path().join(".budget"));
        let running = start_exporter(&sim, &path).await;
        let stop = Arc::new(AtomicBool::new(false));
        let scraper = {
            let (stop, url) = (
                Arc::clone(&stop),
                format!("http://{}/metrics", running.address),
            );
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    // Fails once the child is killed; the loop ends with `stop`.
                    let _ = http.get(&url).send().await;
                }
            })
        };
        // Kill after a varying number of refreshes, at a varying instant after the last one:
        // while the answer is read, the file written, or the new token used.
        let target = sim.token_request_count() + 1 + (iteration as usize % 2);
        let deadline = Instant::now() + Duration::from_secs(20);
        while sim.token_request_count() < target {
            assert!(
                Instant::now() < deadline,
                "no refreshes: {:?} {:?}",
                running.logs.lock().unwrap(),
                sim.requests()
            );
            tokio::task::yield_now().await;
        }
        if iteration % 3 != 0 {
            std::thread::sleep(Duration::from_micros(u64::from(iteration) * 150));
        }
        let Running {
            mut child, logs, ..
        } = running;
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        scraper.await.unwrap();

        let stored = TokenStore::new(&path)
            .load()
            .unwrap_or_else(|e| panic!("iteration {iteration}: {e}"))
            .unwrap_or_else(|| panic!("iteration {iteration}: the token file is gone"));
        assert!(
            sim.refresh_token_usable(stored.refresh_token.expose()),
            "iteration {iteration}: the saved refresh token was rotated away"
        );
        seen_refresh_tokens.push(stored.refresh_token.expose().to_owned());
        let logs = logs.lock().unwrap().join("\n");
        for token in &seen_refresh_tokens {
            assert!(!logs.contains(token.as_str()), "a token reached the log");
        }
    }
    seen_refresh_tokens.dedup();
    assert!(
        seen_refresh_tokens.len() > 10,
        "the file moved on: {}",
        seen_refresh_tokens.len()
    );

    // And the file left by the last kill still works end to end.
    sim.set_access_token_lifetime(Duration::from_secs(3600));
    let running = start_exporter(&sim, &path).await;
    let text = reqwest::get(format!("http://{}/metrics", running.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.lines().any(|l| l == "withings_up 1"), "{text}");
    // Temporary files of killed saves were cleaned up at start.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // The request ledger every process beside the token file shares is no leftover.
        .filter(|n| n != "tokens.json" && n != ".budget")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
