//! What a fetch with every collector on costs (issue 11): requests to Withings, bytes
//! received and time, for one account and for 1,000, in this process against the simulator
//! on loopback. Each account has the captured fixtures' measures, activity days, a sleep
//! night and devices.
//!
//! The request budget is the application's 120 a minute; 1,000 accounts × 4 collectors need
//! 4,000 requests, so the bench advances the exporter's clock a minute whenever the budget
//! is spent (the figures are the exporter's own cost, not the wait Withings imposes; that
//! wait is the arithmetic in the README).

#[path = "common/mod.rs"]
mod common;

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use withings_exporter::account::token_store::{StoredTokens, TokenStore};
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_exporter::secret::Secret;
use withings_sim::data::UserExtras;
use withings_sim::{Simulator, SimulatorOptions};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn extras() -> UserExtras {
    let t = now();
    let mut activities = fixture("getactivity.json")["body"]["activities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for row in &mut activities {
        row["modified"] = json!(t - 60);
    }
    let night = json!({
        "id": 1, "timezone": "Europe/Berlin", "model": 32, "model_id": 63,
        "hash_deviceid": "a1", "startdate": t - 30_000, "enddate": t - 3_000,
        "date": "2026-11-30", "created": t - 2_000, "modified": t - 2_000, "completed": true,
        "data": {"total_timeinbed": 27000, "total_sleep_time": 25000, "sleep_efficiency": 0.93,
                 "apnea_hypopnea_index": 4, "sleep_score": 81}
    });
    UserExtras {
        activities,
        sleep: vec![night],
        devices: fixture("getdevice.json")["body"]["devices"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        ..UserExtras::default()
    }
}

async fn run() {
    println!(
        "| accounts | fetches | requests to Withings | bytes received | mean per account fetch | /probe text per account |"
    );
    println!("|---|---|---|---|---|---|");
    for accounts in [1usize, 1000] {
        let sim = Simulator::start(SimulatorOptions::default())
            .await
            .expect("simulator");
        let dir = tempfile::tempdir().expect("temp dir");
        let groups = fixture("measurement.json")["body"]["measuregrps"].clone();
        let t = now();
        for i in 0..accounts {
            let userid = format!("{}", 5000 + i);
            // Fresh dates so that no reading is skipped as implausible or future.
            let mut g = groups.as_array().cloned().unwrap_or_default();
            for (k, group) in g.iter_mut().enumerate() {
                group["date"] = json!(t - 3600 - k as i64);
                group["modified"] = json!(t - 60);
            }
            sim.set_user_groups(&userid, g).expect("groups");
            sim.set_user_extras(&userid, extras()).expect("extras");
            let (access, refresh, expires_in) = sim.issue_token_pair_for(&userid);
            TokenStore::new(dir.path().join(format!("a{i:04}.json")))
                .save(&StoredTokens {
                    access_token: Secret::new(access),
                    refresh_token: Secret::new(refresh),
                    expires_at: t + expires_in,
                    obtained_at: Some(t),
                    userid: Some(userid),
                    scope: None,
                })
                .expect("token file");
        }
        let (id, secret) = sim.client_credentials();
        let config = Config::from_vars(
            [
                ("WITHINGS_API_URL", sim.url().to_string()),
                ("WITHINGS_TOKEN_DIR", dir.path().display().to_string()),
                ("WITHINGS_CLIENT_ID", id),
                ("WITHINGS_CLIENT_SECRET", secret),
                ("WITHINGS_REQUESTS_PER_MINUTE", "120".into()),
                (
                    "WITHINGS_COLLECTORS",
                    "measures,activity,sleep,devices".into(),
                ),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        )
        .expect("configuration");
        let app = Arc::new(App::from_config(&config).expect("app"));
        sim.clear_requests();
        let mut busy = Duration::ZERO;
        let mut text_bytes = 0;
        for account in app.accounts() {
            if app.limits().budget.free() < 4 {
                app.clock().advance(Duration::from_secs(61));
            }
            let started = Instant::now();
            account.fetch().await.expect("fetch");
            busy += started.elapsed();
            text_bytes += withings_exporter::render::families::encode(account.families(None)).len();
        }
        let requests = sim.requests().len();
        let bytes = sim.response_bytes();
        println!(
            "| {accounts} | {accounts} | {requests} ({:.1} per fetch) | {bytes} ({} per fetch) | {:.2} ms | {} bytes |",
            requests as f64 / accounts as f64,
            bytes / accounts,
            busy.as_secs_f64() * 1000.0 / accounts as f64,
            text_bytes / accounts
        );
        sim.stop();
    }
}

fn main() {
    common::run_bench(
        run(),
        "in this process on loopback: exporter and simulator share the runtime's 2 worker threads",
    );
}
