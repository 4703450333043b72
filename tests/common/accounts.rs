//! Several Withings users in one exporter (issue 10): token directories written from the
//! simulator's own token pairs, readings for all five vitals, and an exporter serving the
//! directory in-process on port 0.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;
use withings_exporter::account::token_store::{StoredTokens, TokenStore};
use withings_exporter::app::App;
use withings_exporter::config::Config;
use withings_exporter::http::server::Application;
use withings_exporter::secret::Secret;
use withings_exporter::simulator::{Simulator, SimulatorOptions};

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One reading of each of the five vitals, an hour old, every value derived from `base` so
/// that two users' series can never be confused: systolic `base`, diastolic `base - 40`,
/// pulse `base - 60`, SpO2 `(base % 10 + 90) %`, temperature `36.base%10`.
pub fn five_vitals(grpid: i64, base: i64) -> Vec<Value> {
    let date = unix_now() - 3_600;
    let group = |grpid: i64, model: &str, measures: Vec<Value>| {
        json!({
            "grpid": grpid, "attrib": 0, "date": date, "created": date, "modified": date,
            "category": 1, "deviceid": format!("dev-{grpid}"), "hash_deviceid": format!("dev-{grpid}"),
            "model": model, "modelid": 44, "measures": measures,
        })
    };
    vec![
        group(
            grpid,
            "BPM Connect",
            vec![
                json!({"type": 10, "value": base, "unit": 0}),
                json!({"type": 9, "value": base - 40, "unit": 0}),
                json!({"type": 11, "value": base - 60, "unit": 0}),
            ],
        ),
        group(
            grpid + 1,
            "ScanWatch 2",
            vec![json!({"type": 54, "value": base % 10 + 90, "unit": 0})],
        ),
        group(
            grpid + 2,
            "Thermo",
            vec![json!({"type": 71, "value": 360 + base % 10, "unit": -1})],
        ),
    ]
}

/// The tokens `auth` would have saved for `userid`, from a pair the simulator issued.
pub fn issued_tokens(sim: &Simulator, userid: &str) -> StoredTokens {
    let (access, refresh, expires_in) = sim.issue_token_pair_for(userid);
    let now = unix_now();
    StoredTokens {
        access_token: Secret::new(access),
        refresh_token: Secret::new(refresh),
        expires_at: now + expires_in,
        obtained_at: Some(now),
        userid: Some(userid.to_owned()),
        scope: Some("user.metrics".into()),
    }
}

/// Writes `DIR/NAME.json` for `userid`; returns what was written.
pub fn write_account(sim: &Simulator, dir: &Path, name: &str, userid: &str) -> StoredTokens {
    let tokens = issued_tokens(sim, userid);
    TokenStore::new(dir.join(format!("{name}.json")))
        .save(&tokens)
        .expect("token file saved");
    tokens
}

/// The `WITHINGS_*` variables of an exporter serving `dir` against `sim`.
pub fn directory_vars(sim: &Simulator, dir: &Path) -> Vec<(String, String)> {
    let (id, secret) = sim.client_credentials();
    [
        ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0".to_owned()),
        ("WITHINGS_API_URL", sim.url().to_string()),
        ("WITHINGS_TOKEN_DIR", dir.display().to_string()),
        ("WITHINGS_CLIENT_ID", id),
        ("WITHINGS_CLIENT_SECRET", secret),
        ("WITHINGS_TIMEOUT_SECONDS", "5".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A simulator, a token directory and an exporter serving it over HTTP on port 0.
pub struct Household {
    pub simulator: Simulator,
    pub dir: tempfile::TempDir,
    pub app: Arc<App>,
    pub address: SocketAddr,
    pub http: reqwest::Client,
    /// Every access token written, to the user it opens: requests at the simulator are
    /// attributed to users through their bearer.
    pub users_by_token: HashMap<String, String>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Household {
    /// `accounts` are (name, Withings user id, systolic base of their readings).
    pub async fn start(accounts: &[(&str, &str, i64)], env: &[(&str, &str)]) -> Self {
        let simulator = Simulator::start(SimulatorOptions::default())
            .await
            .expect("simulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut users_by_token = HashMap::new();
        for (i, (name, userid, base)) in accounts.iter().enumerate() {
            simulator
                .set_user_groups(userid, five_vitals(1_000 * (i as i64 + 1), *base))
                .expect("groups");
            let tokens = write_account(&simulator, dir.path(), name, userid);
            users_by_token.insert(tokens.access_token.expose().to_owned(), userid.to_string());
        }
        let mut vars = directory_vars(&simulator, dir.path());
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_vars(vars).expect("valid configuration");
        let app = Arc::new(App::from_config(&config).expect("the exporter starts"));
        let server = Application::bind(config.server.listen_address, Arc::clone(&app))
            .await
            .expect("bind");
        let address = server.local_addr().expect("address");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(server.run_until(async {
            let _ = rx.await;
        }));
        Self {
            simulator,
            dir,
            app,
            address,
            http: super::http(),
            users_by_token,
            shutdown: Some(tx),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.json"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// GET `path`: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.http.get(self.url(path)).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// `/probe?account=NAME`, which must answer 200.
    pub async fn probe(&self, name: &str) -> String {
        let (status, body) = self.get(&format!("/probe?account={name}")).await;
        assert_eq!(status, 200, "probe of {name}: {body}");
        body
    }

    /// Adds an account to the directory (not yet scanned).
    pub fn add(&mut self, name: &str, userid: &str, base: i64) -> StoredTokens {
        self.simulator
            .set_user_groups(userid, five_vitals(base * 10_000, base))
            .expect("groups");
        let tokens = write_account(&self.simulator, self.dir.path(), name, userid);
        self.users_by_token
            .insert(tokens.access_token.expose().to_owned(), userid.to_owned());
        tokens
    }

    /// Requests to `/measure` the simulator received, by Withings user.
    pub fn measure_requests_by_user(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.simulator.requests() {
            if r.path != "/measure" {
                continue;
            }
            let user = r
                .bearer
                .as_deref()
                .and_then(|b| self.users_by_token.get(b))
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            *counts.entry(user).or_default() += 1;
        }
        counts
    }
}

impl Drop for Household {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.simulator.stop();
    }
}

/// The systolic value of an exposition (the only blood-pressure series of these readings).
pub fn systolic(text: &str) -> Option<f64> {
    super::sample_with(
        text,
        "withings_blood_pressure_mmhg",
        &[("kind", "systolic")],
    )
}
