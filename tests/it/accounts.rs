//! Issue 10: a household in one exporter. Accounts from WITHINGS_TOKEN_DIR, `/probe`, `/sd`,
//! the duplicate-user refusal of `auth --account`, hot add and remove, one request budget
//! shared fairly by every account, the 601 pause, and the refresh lock between processes,
//! each against the simulator. Time is stepped with the exporter's clock, never slept.

use crate::common;

use common::accounts::{
    Household, directory_vars, five_vitals, issued_tokens, systolic, unix_now, write_account,
};
use common::process::{BIN, start_serving};
use common::{eventually, sample, sample_with};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use url::Url;
use withings_exporter::account::token_store::{StoredTokens, TokenStore};
use withings_exporter::account::tokens::ClientCredentials;
use withings_exporter::auth::{AuthError, AuthSettings, Authorization};
use withings_exporter::secret::Secret;
use withings_exporter::withings::ClientOptions;
use withings_sim::{Fault, OAuthOptions, Simulator, SimulatorOptions};

const MOM: (&str, &str, i64) = ("mom", "2001", 121);
const BEN: (&str, &str, i64) = ("ben", "2002", 143);

fn served_from(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("withings_scrape_served_from{served_from=\""))
        .and_then(|rest| rest.split('"').next())
}

fn accounts_in(text: &str, state: &str) -> Option<f64> {
    sample_with(text, "withings_accounts", &[("state", state)])
}

fn secrets_of(tokens: &StoredTokens) -> [String; 2] {
    [
        tokens.access_token.expose().to_owned(),
        tokens.refresh_token.expose().to_owned(),
    ]
}

// 1. Two accounts, never mixed; what each route shows.

#[tokio::test]
async fn two_accounts_with_different_readings_are_never_mixed() {
    let h = Household::start(&[MOM, BEN], &[]).await;
    // Interleaved and concurrent probes: each answer carries only its own person's readings.
    for _ in 0..3 {
        let (mom, ben) = tokio::join!(h.probe("mom"), h.probe("ben"));
        assert_eq!(systolic(&mom), Some(121.0), "{mom}");
        assert_eq!(systolic(&ben), Some(143.0), "{ben}");
        for (text, base) in [(&mom, 121), (&ben, 143)] {
            assert_eq!(sample(text, "withings_up"), Some(1.0), "{text}");
            assert_eq!(
                sample_with(text, "withings_heart_rate_bpm", &[]),
                Some(f64::from(base - 60)),
                "{text}"
            );
            assert_eq!(
                sample_with(text, "withings_spo2_ratio", &[]),
                Some(f64::from(base % 10 + 90) / 100.0),
                "{text}"
            );
            // No account label: Prometheus attaches it from the target.
            assert!(!text.contains("account="), "{text}");
            // Only one person's devices.
            assert_eq!(
                text.matches("device_id=\"dev-").count(),
                text.matches(&format!(
                    "device_id=\"dev-{}",
                    if base == 121 { 100 } else { 200 }
                ))
                .count(),
                "{text}"
            );
        }
    }
    // Every request for a user went out with that user's own token.
    let by_user = h.measure_requests_by_user();
    assert!(by_user.get("2001").is_some_and(|&n| n >= 1), "{by_user:?}");
    assert!(by_user.get("2002").is_some_and(|&n| n >= 1), "{by_user:?}");
    assert!(!by_user.contains_key("unknown"), "{by_user:?}");
}

#[tokio::test]
async fn unknown_and_malformed_accounts_answer_400_in_one_line() {
    let h = Household::start(&[MOM], &[]).await;
    for (query, must_contain) in [
        ("/probe?account=nobody", "auth --account nobody"),
        ("/probe?account=Mom", "not an account name"),
        ("/probe?account=..%2Fmom", "not an account name"),
        ("/probe?account=a%0Ab", "not an account name"),
        ("/probe", "missing"),
    ] {
        let (status, body) = h.get(query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(must_contain), "{query}: {body}");
        assert_eq!(body.trim_end().lines().count(), 1, "{query}: {body:?}");
        assert!(body.ends_with('\n'), "{query}: {body:?}");
    }
    // Nothing was fetched for a refused probe.
    assert_eq!(h.simulator.request_count("/measure"), 0);
}

#[tokio::test]
async fn an_unknown_account_in_single_account_mode_gets_advice_that_applies() {
    // One account from WITHINGS_ACCESS_TOKEN, no token directory: `auth --account`, which
    // writes into a token directory, would be no help.
    let app = common::spawn_app().await;
    let response = common::http()
        .get(app.url("/probe?account=mom"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert_eq!(body.trim_end().lines().count(), 1, "{body:?}");
    assert!(
        !body.contains("auth --account mom") && body.contains("/probe?account=default"),
        "{body}"
    );
    assert!(body.contains("WITHINGS_TOKEN_DIR"), "{body}");
    // The one account is there by its name.
    let response = common::http()
        .get(app.url("/probe?account=default"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.simulator.request_count("/measure"), 1);
}

#[tokio::test]
async fn sd_lists_one_target_per_account_at_the_host_prometheus_used() {
    let h = Household::start(&[MOM, BEN], &[]).await;
    let (status, body) = h.get("/sd").await;
    assert_eq!(status, 200);
    let groups: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let groups = groups.as_array().expect("an array of target groups");
    assert_eq!(groups.len(), 2, "{body}");
    let mut names = Vec::new();
    for g in groups {
        assert_eq!(
            g["targets"],
            serde_json::json!([h.address.to_string()]),
            "{g}"
        );
        let labels = g["labels"].as_object().expect("labels");
        assert_eq!(labels["__metrics_path__"], "/probe", "{g}");
        assert_eq!(labels["__param_account"], labels["account"], "{g}");
        assert_eq!(labels.len(), 3, "{g}");
        names.push(labels["account"].as_str().unwrap().to_owned());
    }
    names.sort();
    assert_eq!(names, ["ben", "mom"]);
    // Behind a proxy or a DNS name, the target is the Host the request came to.
    let body = common::body_of(
        h.http
            .get(h.url("/sd"))
            .header("host", "exporter.example:9100"),
    )
    .await;
    let groups: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(groups[0]["targets"][0], "exporter.example:9100", "{body}");
}

#[tokio::test]
async fn metrics_counts_accounts_by_state_and_carries_no_vitals_in_directory_mode() {
    let h = Household::start(&[MOM, BEN], &[]).await;
    let (_, before) = h.get("/metrics").await;
    assert_eq!(accounts_in(&before, "pending"), Some(2.0), "{before}");
    h.probe("mom").await;
    h.probe("ben").await;
    let (status, text) = h.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(accounts_in(&text, "ok"), Some(2.0), "{text}");
    assert_eq!(accounts_in(&text, "pending"), Some(0.0), "{text}");
    for per_account in [
        "withings_blood_pressure_mmhg",
        "withings_heart_rate_bpm",
        "withings_spo2_ratio",
        "withings_body_temperature_celsius",
        "withings_up ",
        "withings_token_valid",
        "withings_measurement_timestamp_seconds",
    ] {
        assert!(
            !text.contains(per_account),
            "{per_account} in /metrics:\n{text}"
        );
    }
    assert!(
        text.contains("withings_request_budget_per_minute 100"),
        "{text}"
    );
    // /metrics itself never fetched.
    assert_eq!(h.simulator.request_count("/measure"), 2);
}

#[tokio::test]
async fn the_landing_page_lists_accounts_and_never_a_token() {
    let mut h = Household::start(&[MOM], &[]).await;
    let ben = h.add("ben", "2002", 143);
    h.app.scan();
    h.probe("mom").await;
    let (status, page) = h.get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("probe?account=mom"), "{page}");
    assert!(page.contains("probe?account=ben"), "{page}");
    assert!(page.contains("Accounts (2)"), "{page}");
    let mom = TokenStore::new(h.path("mom")).load().unwrap().unwrap();
    for secret in secrets_of(&mom).iter().chain(&secrets_of(&ben)) {
        assert!(
            !page.contains(secret.as_str()),
            "a token on the landing page"
        );
    }
    let (_, client_secret) = h.simulator.client_credentials();
    assert!(!page.contains(&client_secret));
    // Readings, since issue 21 (the page shows the household, behind basic auth when a web
    // configuration sets users): mom's latest blood pressure, never a token.
    assert!(page.contains("121/81 mmHg"), "{page}");
}

// 2. The duplicate-user refusal of `auth --account`.

/// `auth --account NAME` in paste mode, with whoever the simulator's browser session is
/// signed in as.
async fn auth_account(sim: &Simulator, dir: &Path, name: &str) -> Result<StoredTokens, AuthError> {
    let (client_id, client_secret) = sim.client_credentials();
    let auth = Authorization::new(AuthSettings {
        api_url: sim.url(),
        account_url: sim.url(),
        credentials: ClientCredentials {
            client_id,
            client_secret: Secret::new(client_secret),
        },
        redirect_uri: Url::parse(&OAuthOptions::default().redirect_uri).unwrap(),
        token_file: dir.join(format!("{name}.json")),
        client: ClientOptions::default(),
        listen: None,
        scopes: withings_exporter::auth::default_scopes(),
        requests_per_minute: withings_exporter::config::DEFAULT_PER_MINUTE,
        account: Some(name.to_owned()),
    })
    .unwrap();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = browser.get(auth.url()).send().await.unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let code = auth.code_from_pasted(&location).unwrap();
    auth.exchange(&code).await
}

#[tokio::test]
async fn auth_refuses_a_withings_user_that_is_already_another_account() {
    common::http();
    let sim = Simulator::start(SimulatorOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_account(&sim, dir.path(), "mom", "2001");
    let mom_file = dir.path().join("mom.json");
    let mom_before = std::fs::read(&mom_file).unwrap();

    // The browser is still signed in to Withings as mom while ben is being added.
    sim.sign_in("2001");
    let e = auth_account(&sim, dir.path(), "ben").await.unwrap_err();
    assert!(
        matches!(&e, AuthError::SameUser { other, .. } if other == "mom"),
        "{e:?}"
    );
    let line = e.to_string();
    assert!(
        line.contains("\"mom\"") && line.contains("sign out of Withings"),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");
    assert!(
        !dir.path().join("ben.json").exists(),
        "ben.json was written"
    );
    assert_eq!(
        std::fs::read(&mom_file).unwrap(),
        mom_before,
        "mom.json changed"
    );

    // Mom herself again: a re-authorization, saved.
    let again = auth_account(&sim, dir.path(), "mom").await.unwrap();
    assert_eq!(again.userid.as_deref(), Some("2001"));
    let saved = TokenStore::new(&mom_file).load().unwrap().unwrap();
    assert_eq!(saved, again);
    assert_ne!(std::fs::read(&mom_file).unwrap(), mom_before);
    assert!(sim.refresh_token_usable(saved.refresh_token.expose()));

    // Someone else on mom's account: refused, mom's file untouched.
    let mom_now = std::fs::read(&mom_file).unwrap();
    sim.sign_in("2002");
    let e = auth_account(&sim, dir.path(), "mom").await.unwrap_err();
    assert!(
        matches!(&e, AuthError::OtherUser { expected, got, .. } if expected == "2001" && got == "2002"),
        "{e:?}"
    );
    assert!(!e.to_string().contains('\n'));
    assert_eq!(std::fs::read(&mom_file).unwrap(), mom_now);

    // And that person, signed in properly, becomes ben.
    let ben = auth_account(&sim, dir.path(), "ben").await.unwrap();
    assert_eq!(ben.userid.as_deref(), Some("2002"));
    assert!(dir.path().join("ben.json").exists());
}

// 3. Hot add and remove; a malformed file isolated.

#[tokio::test]
async fn an_added_file_is_served_after_one_scan_and_a_removed_one_is_gone() {
    let mut h = Household::start(&[MOM], &[]).await;
    let (status, _) = h.get("/probe?account=ben").await;
    assert_eq!(status, 400);
    h.add("ben", "2002", 143);
    let report = h.app.scan();
    assert_eq!(report.added, ["ben"]);
    assert_eq!(systolic(&h.probe("ben").await), Some(143.0));
    let (_, sd) = h.get("/sd").await;
    assert!(sd.contains("\"account\":\"ben\""), "{sd}");

    std::fs::remove_file(h.path("ben")).unwrap();
    let report = h.app.scan();
    assert_eq!(report.removed, ["ben"]);
    let (status, body) = h.get("/probe?account=ben").await;
    assert_eq!(status, 400, "{body}");
    let (_, sd) = h.get("/sd").await;
    assert!(!sd.contains("ben"), "{sd}");
    // Mom carries on.
    assert_eq!(systolic(&h.probe("mom").await), Some(121.0));
}

#[tokio::test]
async fn a_malformed_file_makes_only_that_account_report_its_error_until_fixed() {
    let h = Household::start(&[MOM], &[]).await;
    std::fs::write(h.path("ben"), "{\"access_token\": \"half").unwrap();
    h.app.scan();

    let ben = h.probe("ben").await;
    assert_eq!(sample(&ben, "withings_up"), Some(0.0), "{ben}");
    let mom = h.probe("mom").await;
    assert_eq!(sample(&mom, "withings_up"), Some(1.0), "{mom}");
    assert_eq!(systolic(&mom), Some(121.0));
    let (_, metrics) = h.get("/metrics").await;
    assert_eq!(accounts_in(&metrics, "error"), Some(1.0), "{metrics}");
    assert_eq!(accounts_in(&metrics, "ok"), Some(1.0), "{metrics}");
    let (_, page) = h.get("/").await;
    let row = page
        .lines()
        .find(|l| l.contains("<td>ben</td>"))
        .unwrap_or_else(|| panic!("no row for ben: {page}"));
    assert!(row.contains("<td>error</td>"), "{row}");
    assert!(row.contains("ben.json"), "the error names the file: {row}");

    // Fixed (a restored backup, a new `auth`): served again after one scan.
    write_account(&h.simulator, h.dir.path(), "ben", "2002");
    h.simulator
        .set_user_groups("2002", five_vitals(9_000, 143))
        .unwrap();
    let report = h.app.scan();
    assert_eq!(report.reopened, ["ben"]);
    let ben = h.probe("ben").await;
    assert_eq!(sample(&ben, "withings_up"), Some(1.0), "{ben}");
    assert_eq!(systolic(&ben), Some(143.0));
    let (_, metrics) = h.get("/metrics").await;
    assert_eq!(accounts_in(&metrics, "error"), Some(0.0), "{metrics}");
}

/// The binary with `WITHINGS_TOKEN_DIR`: (child, host:port, its log lines).
async fn start_binary(
    sim: &Simulator,
    dir: &Path,
) -> (
    common::process::ChildGuard,
    String,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    start_serving(
        Command::new(BIN)
            .arg("serve")
            .env_clear()
            .envs(directory_vars(sim, dir))
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info"),
    )
    .await
}

#[tokio::test]
async fn the_running_binary_serves_a_new_account_within_10_seconds() {
    let http = common::http();
    let sim = Simulator::start(SimulatorOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    sim.set_user_groups("2001", five_vitals(1_000, 121))
        .unwrap();
    sim.set_user_groups("2002", five_vitals(2_000, 143))
        .unwrap();
    write_account(&sim, dir.path(), "mom", "2001");
    let (_child, address, logs) = start_binary(&sim, dir.path()).await;
    let probe = |name: &str| format!("http://{address}/probe?account={name}");
    let answer = http.get(probe("ben")).send().await.unwrap();
    assert_eq!(answer.status(), 400);

    let added = Instant::now();
    write_account(&sim, dir.path(), "ben", "2002");
    let deadline = added + Duration::from_secs(10);
    let ben = loop {
        let answer = http.get(probe("ben")).send().await.unwrap();
        if answer.status() == 200 {
            break answer.text().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "ben not served 10 s after its file appeared: {:?}",
            logs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(systolic(&ben), Some(143.0), "{ben}");
    let sd = common::body_of(http.get(format!("http://{address}/sd"))).await;
    assert!(sd.contains("\"account\":\"ben\""), "{sd}");

    // And gone within 10 s of its file.
    std::fs::remove_file(dir.path().join("ben.json")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if http.get(probe("ben")).send().await.unwrap().status() == 400 {
            break;
        }
        assert!(Instant::now() < deadline, "ben still served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// 4. The request budget under a flood.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_probes_never_exceeds_the_budget_at_the_simulator() {
    let h = Household::start(
        &[MOM, BEN, ("gran", "2003", 160)],
        &[("WITHINGS_REQUESTS_PER_MINUTE", "10")],
    )
    .await;
    let names = ["mom", "ben", "gran"];
    let flood = |n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (http, url) = (
                    h.http.clone(),
                    h.url(&format!("/probe?account={}", names[i % 3])),
                );
                tokio::spawn(async move {
                    let r = http.get(url).send().await.expect("probe");
                    assert_eq!(r.status(), 200);
                    r.text().await.expect("body")
                })
            })
            .collect();
        async move {
            let mut bodies = Vec::new();
            for t in tasks {
                bodies.push(t.await.expect("probe task"));
            }
            bodies
        }
    };
    let mut answers = flood(500).await;
    // Waves after the first, so that fetches end and new ones are wanted: the budget, not
    // coalescing, is what has to hold the line.
    for _ in 0..10 {
        answers.extend(flood(30).await);
    }
    let upstream = h.simulator.request_count("/measure");
    assert!(
        h.simulator.max_requests_in_any_minute() <= 10,
        "{} requests in a minute",
        h.simulator.max_requests_in_any_minute()
    );
    assert_eq!(upstream, 10, "the budget was spent, and not overspent");
    let from_budget: Vec<&String> = answers
        .iter()
        .filter(|a| served_from(a) == Some("budget"))
        .collect();
    assert!(!from_budget.is_empty());
    for a in &from_budget {
        // Served from that account's last fetch, which succeeded.
        assert_eq!(sample(a, "withings_up"), Some(1.0), "{a}");
        assert!(systolic(a).is_some(), "{a}");
    }
    // Beyond the budget a probe answers at once: with Withings holding every request, a
    // probe that waited for it would not answer within the client's timeout.
    h.simulator.hold();
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    for name in names {
        let text = quick
            .get(h.url(&format!("/probe?account={name}")))
            .send()
            .await
            .expect("answered without waiting for Withings")
            .text()
            .await
            .unwrap();
        assert_eq!(served_from(&text), Some("budget"), "{text}");
        assert!(
            text.contains("withings_scrape_served_from{served_from=\"budget\"} 1"),
            "{text}"
        );
    }
    h.simulator.release();
    assert_eq!(h.simulator.request_count("/measure"), 10);
}

#[tokio::test]
async fn pipelined_metrics_requests_in_single_mode_stay_within_the_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = common::spawn_app_with(common::AppOptions {
        env: vec![("WITHINGS_REQUESTS_PER_MINUTE", "10".into())],
        ..Default::default()
    })
    .await;
    app.simulator
        .set_groups(five_vitals(1, 121))
        .expect("groups");
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let request = "GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n".repeat(200);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(30);
    while String::from_utf8_lossy(&seen)
        .matches("HTTP/1.1 200 OK")
        .count()
        < 200
    {
        assert!(Instant::now() < deadline, "not every answer arrived");
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("answers keep coming")
            .unwrap();
        assert!(n > 0, "connection closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(app.simulator.request_count("/measure"), 10);
    assert!(app.simulator.max_requests_in_any_minute() <= 10);
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("withings_scrape_served_from{served_from=\"budget\"} 1"),
        "no answer served from the budget"
    );
}

// 5. Fairness.

#[tokio::test]
async fn with_30_accounts_and_10_a_minute_every_account_is_fetched_within_3_minutes() {
    let accounts: Vec<(String, String, i64)> = (0..30)
        .map(|i| (format!("p{i:02}"), format!("{}", 3000 + i), 100 + i))
        .collect();
    let refs: Vec<(&str, &str, i64)> = accounts
        .iter()
        .map(|(n, u, b)| (n.as_str(), u.as_str(), *b))
        .collect();
    let h = Household::start(&refs, &[("WITHINGS_REQUESTS_PER_MINUTE", "10")]).await;
    let clock = h.app.clock().clone();
    // Prometheus scrapes each account once a minute, spread over the minute: one probe
    // every 2 simulated seconds, round-robin, for 6 minutes.
    let mut after_3_minutes = None;
    for tick in 0..180usize {
        let (name, ..) = refs[tick % 30];
        let text = h.app.probe(Some(name), None).await.expect("known account");
        assert!(text.contains("withings_up"), "{text}");
        clock.advance(Duration::from_secs(2));
        if tick == 89 {
            after_3_minutes = Some(h.measure_requests_by_user());
        }
    }
    let after_3_minutes = after_3_minutes.unwrap();
    let after_6_minutes = h.measure_requests_by_user();
    for (_, userid, _) in &refs {
        let first = after_3_minutes.get(*userid).copied().unwrap_or(0);
        assert!(
            first >= 1,
            "user {userid} not fetched within 3 minutes: {after_3_minutes:?}"
        );
        // 6 minutes at 10 a minute is 60 fetches: 2 each, never more.
        let total = after_6_minutes.get(*userid).copied().unwrap_or(0);
        assert!(
            (1..=2).contains(&total),
            "user {userid}: {total} fetches in 6 minutes"
        );
    }
    assert!(!after_6_minutes.contains_key("unknown"));
}

// 6. A 601 for one account pauses every account.

#[tokio::test]
async fn a_601_for_one_account_pauses_every_account_until_the_wait_is_over() {
    let h = Household::start(&[MOM, BEN], &[]).await;
    h.simulator.push_fault(Fault::Status {
        status: 601,
        error: "Too Many Requests".into(),
        wait_seconds: Some(60),
    });
    let mom = h.probe("mom").await;
    assert_eq!(sample(&mom, "withings_up"), Some(0.0), "{mom}");
    assert_eq!(h.simulator.request_count("/measure"), 1);
    let (_, metrics) = h.get("/metrics").await;
    assert_eq!(
        sample(&metrics, "withings_rate_limited"),
        Some(1.0),
        "{metrics}"
    );

    let ben = h.probe("ben").await;
    assert_eq!(sample(&ben, "withings_up"), Some(0.0), "{ben}");
    assert_eq!(served_from(&ben), Some("rate_limited"), "{ben}");
    assert_eq!(
        h.simulator.request_count("/measure"),
        1,
        "ben's probe reached Withings during the pause"
    );
    let mom = h.probe("mom").await;
    assert_eq!(served_from(&mom), Some("rate_limited"), "{mom}");
    assert_eq!(h.simulator.request_count("/measure"), 1);

    // Past the wait (and its jitter of at most a fifth), both fetch again.
    h.app.clock().advance(Duration::from_secs(73));
    let (mom, ben) = (h.probe("mom").await, h.probe("ben").await);
    assert_eq!(sample(&mom, "withings_up"), Some(1.0), "{mom}");
    assert_eq!(sample(&ben, "withings_up"), Some(1.0), "{ben}");
    assert_eq!(systolic(&ben), Some(143.0));
    assert_eq!(h.simulator.request_count("/measure"), 3);
    let (_, metrics) = h.get("/metrics").await;
    assert_eq!(sample(&metrics, "withings_rate_limited"), Some(0.0));
}

// 7. The refresh lock between two processes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_token_dir_refresh_an_expired_token_once() {
    let http = common::http();
    let sim = Simulator::start(SimulatorOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    sim.set_user_groups("2001", five_vitals(1_000, 121))
        .unwrap();
    let mut old = issued_tokens(&sim, "2001");
    old.expires_at = unix_now() - 60;
    let file = dir.path().join("mom.json");
    TokenStore::new(&file).save(&old).unwrap();

    let (_a, address_a, logs_a) = start_binary(&sim, dir.path()).await;
    let (_b, address_b, logs_b) = start_binary(&sim, dir.path()).await;
    sim.hold_token_endpoint();
    let probe = |address: &str| {
        let (http, url) = (http.clone(), format!("http://{address}/probe?account=mom"));
        tokio::spawn(async move {
            let r = http.get(url).send().await.expect("probe");
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        })
    };
    let (first, second) = (probe(&address_a), probe(&address_b));
    assert!(
        eventually(Duration::from_secs(10), || sim.token_request_count() >= 1).await,
        "no refresh reached Withings"
    );
    // While the first refresh is held, the other process waits on the lock rather than
    // sending its own refresh of the same refresh token.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(500) {
        assert_eq!(sim.token_request_count(), 1, "a second refresh went out");
        tokio::task::yield_now().await;
    }
    sim.release_token_endpoint();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(sample(&first, "withings_up"), Some(1.0), "{first}");
    assert_eq!(sample(&second, "withings_up"), Some(1.0), "{second}");
    assert_eq!(
        sim.token_request_count(),
        1,
        "refreshes: {:?}",
        sim.requests().iter().map(|r| &r.path).collect::<Vec<_>>()
    );

    let saved = TokenStore::new(&file).load().unwrap().unwrap();
    assert_ne!(saved.refresh_token, old.refresh_token);
    assert!(sim.refresh_token_usable(saved.refresh_token.expose()));
    // Both processes fetched with the new access token, and only with it.
    let bearers: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.path == "/measure")
        .filter_map(|r| r.bearer)
        .collect();
    assert_eq!(bearers.len(), 2, "{bearers:?}");
    assert!(bearers.iter().all(|b| b == saved.access_token.expose()));
    let adopted = [&logs_a, &logs_b]
        .iter()
        .filter(|logs| {
            logs.lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("another process refreshed this account's tokens"))
        })
        .count();
    assert_eq!(
        adopted, 1,
        "exactly one process used the pair the other saved"
    );
    for logs in [&logs_a, &logs_b] {
        let text = logs.lock().unwrap().join("\n");
        for secret in secrets_of(&saved).iter().chain(&secrets_of(&old)) {
            assert!(!text.contains(secret.as_str()), "a token in the log");
        }
    }
}

// 8. `withings-exporter accounts`.

#[tokio::test]
async fn the_accounts_command_prints_one_line_per_account_and_no_secret() {
    let sim = Simulator::start(SimulatorOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mom = write_account(&sim, dir.path(), "mom", "2001");
    let ben = write_account(&sim, dir.path(), "ben", "2002");
    std::fs::write(
        dir.path().join("gran.json"),
        "{\"access_token\": \"tok-in-bad-file",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not an account").unwrap();
    let output = Command::new(BIN)
        .arg("accounts")
        .env_clear()
        .env("WITHINGS_TOKEN_DIR", dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let line = |name: &str| {
        *lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}: {stdout}"))
    };
    let expiry = |t: &StoredTokens| {
        jiff::Timestamp::from_second(t.expires_at)
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    for (name, tokens, userid) in [("mom", &mom, "2001"), ("ben", &ben, "2002")] {
        let l = line(name);
        assert!(l.contains(&format!("user={userid}")), "{l}");
        assert!(l.contains(&format!("expires={}", expiry(tokens))), "{l}");
        assert!(l.contains("file=ok"), "{l}");
    }
    assert!(line("gran").contains("file=unusable"), "{stdout}");
    let everything = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    for secret in secrets_of(&mom).iter().chain(&secrets_of(&ben)) {
        assert!(!everything.contains(secret.as_str()), "a token printed");
    }
    assert!(!everything.contains("tok-in-bad-file"), "{everything}");
}

// Issue 22, bug 1: one Withings user in two files is one refresh chain.

fn landing_row(page: &str, name: &str) -> String {
    page.lines()
        .find(|l| l.contains(&format!("<td>{name}</td>")))
        .unwrap_or_else(|| panic!("no row for {name}: {page}"))
        .to_owned()
}

#[tokio::test]
async fn a_copied_or_linked_account_file_is_refused_and_the_original_carries_on() {
    let h = Household::start(&[MOM], &[]).await;
    assert_eq!(systolic(&h.probe("mom").await), Some(121.0));
    std::fs::copy(h.path("mom"), h.path("copy-of-mom")).unwrap();
    std::os::unix::fs::symlink(h.path("mom"), h.path("link-to-mom")).unwrap();
    let report = h.app.scan();
    assert_eq!(report.added, ["copy-of-mom", "link-to-mom"]);
    let measures = h.simulator.request_count("/measure");
    for refused in ["copy-of-mom", "link-to-mom"] {
        let text = h.probe(refused).await;
        assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
        assert_eq!(systolic(&text), None, "{text}");
    }
    // Nothing went to Withings through the refused files, and no refresh either.
    assert_eq!(h.simulator.request_count("/measure"), measures);
    assert_eq!(h.simulator.token_request_count(), 0);
    let (_, metrics) = h.get("/metrics").await;
    assert_eq!(accounts_in(&metrics, "error"), Some(2.0), "{metrics}");
    assert_eq!(accounts_in(&metrics, "ok"), Some(1.0), "{metrics}");
    let (_, page) = h.get("/").await;
    let copy = landing_row(&page, "copy-of-mom");
    assert!(copy.contains("<td>error</td>"), "{copy}");
    assert!(
        copy.contains("copy-of-mom.json") && copy.contains("mom.json (account"),
        "names both files: {copy}"
    );
    let link = landing_row(&page, "link-to-mom");
    assert!(link.contains("symbolic link"), "{link}");
    // Scanned again, nothing changes; the original is served throughout.
    let report = h.app.scan();
    assert!(report.reopened.is_empty(), "{report:?}");
    h.simulator.clear_requests();
    assert_eq!(systolic(&h.probe("mom").await), Some(121.0));
    // The copy removed, the original is still the one served.
    std::fs::remove_file(h.path("copy-of-mom")).unwrap();
    std::fs::remove_file(h.path("link-to-mom")).unwrap();
    assert_eq!(h.app.scan().removed, ["copy-of-mom", "link-to-mom"]);
    let (_, metrics) = h.get("/metrics").await;
    assert_eq!(accounts_in(&metrics, "error"), Some(0.0), "{metrics}");
}

#[tokio::test]
async fn a_refused_refresh_token_in_directory_mode_says_auth_account_name() {
    let h = Household::start(&[MOM], &[]).await;
    let dead = StoredTokens {
        access_token: Secret::new(""),
        refresh_token: Secret::new("never-issued-refresh-token-0123456789"),
        expires_at: 0,
        obtained_at: None,
        userid: Some("2009".into()),
        scope: None,
    };
    TokenStore::new(h.path("dad")).save(&dead).unwrap();
    h.app.scan();
    let text = h.probe("dad").await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
    let (_, page) = h.get("/").await;
    let row = landing_row(&page, "dad");
    assert!(row.contains("auth --account dad"), "{row}");
    assert!(!row.contains("WITHINGS_TOKEN_FILE"), "{row}");
}

// Issue 22: a running account's token file broken under it.

#[tokio::test]
async fn a_broken_file_of_a_running_account_shows_as_error_and_is_never_written_over() {
    let h = Household::start(&[MOM], &[]).await;
    assert_eq!(systolic(&h.probe("mom").await), Some(121.0));
    let broken = "{\"access_token\": \"half";
    std::fs::write(h.path("mom"), broken).unwrap();
    h.app.scan();
    let (_, metrics) = h.get("/metrics").await;
    assert_eq!(accounts_in(&metrics, "error"), Some(1.0), "{metrics}");
    assert_eq!(accounts_in(&metrics, "ok"), Some(0.0), "{metrics}");
    let (_, page) = h.get("/").await;
    let row = landing_row(&page, "mom");
    assert!(row.contains("<td>error</td>"), "{row}");
    assert!(row.contains("mom.json"), "{row}");
    // A day later the access token has expired: a refresh would write over the broken file.
    h.simulator.set_clock(Some(unix_now() + 86_400));
    h.app.clock().advance(Duration::from_secs(86_400));
    let text = h.probe("mom").await;
    assert_eq!(sample(&text, "withings_up"), Some(0.0), "{text}");
    // The last known values are still served, and the file is as it was.
    assert_eq!(systolic(&text), Some(121.0), "{text}");
    assert_eq!(h.simulator.token_request_count(), 0);
    assert_eq!(std::fs::read_to_string(h.path("mom")).unwrap(), broken);
    // Fixed: served again, no longer an error.
    write_account(&h.simulator, h.dir.path(), "mom", "2001");
    let (_, metrics) = h.get("/metrics").await;
    assert_eq!(accounts_in(&metrics, "error"), Some(0.0), "{metrics}");
    let text = h.probe("mom").await;
    assert_eq!(sample(&text, "withings_up"), Some(1.0), "{text}");
}

/// In a token directory every log line about an account's tokens names the account: a
/// failed refresh, and the refresh that then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_about_refreshes_name_the_account() {
    let sim = Simulator::start(SimulatorOptions::default())
        .await
        .expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    sim.set_user_groups("7", five_vitals(1_000, 120)).unwrap();
    let mut tokens = issued_tokens(&sim, "7");
    // Due for a refresh at the first fetch: three hours old, five seconds left.
    tokens.expires_at = unix_now() + 5;
    tokens.obtained_at = Some(unix_now() - 10_795);
    TokenStore::new(dir.path().join("mom.json"))
        .save(&tokens)
        .unwrap();
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .env_clear()
        .envs(directory_vars(&sim, dir.path()))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    let (_child, address, logs) = start_serving(&mut command).await;
    let http = common::http();
    let probe = || {
        let http = http.clone();
        let url = format!("http://{address}/probe?account=mom");
        async move {
            http.get(url)
                .send()
                .await
                .expect("probe")
                .text()
                .await
                .expect("body")
        }
    };
    let lines_with = |needle: &str| -> Vec<String> {
        logs.lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    };
    sim.set_token_fault(Some(Fault::Http {
        status: 502,
        body: "bad gateway".into(),
    }));
    let first = probe().await;
    assert!(
        eventually(Duration::from_secs(10), || {
            !lines_with("refreshing the access token failed").is_empty()
        })
        .await,
        "{first}\n{:?}",
        logs.lock().unwrap()
    );
    // Once the endpoint recovers and the backoff has passed, the refresh works.
    sim.set_token_fault(None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines_with("refreshed the access token").is_empty() && Instant::now() < deadline {
        probe().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for needle in [
        "refreshing the access token failed",
        "refreshed the access token and saved the new pair",
    ] {
        let lines = lines_with(needle);
        assert!(!lines.is_empty(), "{needle}: {:?}", logs.lock().unwrap());
        for line in lines {
            assert!(line.contains(" account=mom "), "{line}");
        }
    }
}
