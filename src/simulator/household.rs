//! The demo's household: three simulated Withings users, authorized into a temporary token
//! directory, so that `withings-exporter demo` shows accounts, `/probe` and `/sd` working
//! with nothing to set up.

use super::{HOUSEHOLD, Simulator, SimulatorOptions};
use crate::account::token_store::{StoredTokens, TokenStore};
use crate::config::Config;
use crate::secret::Secret;
use std::path::{Path, PathBuf};

pub struct Household {
    pub simulator: Simulator,
    dir: PathBuf,
}

impl Household {
    /// Starts the simulator on a free loopback port, with the household's users reading as
    /// time passes, and writes one token file per member.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with_clock(None).await
    }

    /// The household as it stands at unix time `now`, which the simulator's clock is fixed
    /// at: the same `now` always gives the same readings, days, nights and devices (nothing
    /// in them is random), so that an exporter whose clock is pinned at `now` too shows the
    /// same exposition on every run.
    pub async fn start_at(now: i64) -> std::io::Result<Self> {
        Self::start_with_clock(Some(now)).await
    }

    async fn start_with_clock(clock: Option<i64>) -> std::io::Result<Self> {
        remove_stale_dirs();
        let simulator = Simulator::start(SimulatorOptions::default()).await?;
        // Before the users are added: their history is generated back from this clock.
        simulator.set_clock(clock);
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{:x}",
            std::process::id(),
            crate::withings::ratelimit::jitter().to_bits()
        ));
        std::fs::DirBuilder::new().mode_0700().create(&dir)?;
        let household = Self { simulator, dir };
        for (name, userid, profile) in HOUSEHOLD {
            household.simulator.add_live_user(userid, profile);
            let (access, refresh, expires_in) = household.simulator.issue_token_pair_for(userid);
            let now = clock.unwrap_or_else(crate::account::unix_now);
            let tokens = StoredTokens {
                access_token: Secret::new(access),
                refresh_token: Secret::new(refresh),
                expires_at: now + expires_in,
                obtained_at: Some(now),
                userid: Some(userid.to_owned()),
                scope: Some("user.metrics".into()),
            };
            TokenStore::new(household.dir.join(format!("{name}.json")))
                .save(&tokens)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(household)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config` pointed at the household: its token directory, the simulator, and the
    /// simulator's application credentials.
    pub fn config(&self, mut config: Config) -> Config {
        let (client_id, client_secret) = self.simulator.client_credentials();
        config.withings.api_url = self.simulator.url();
        config.withings.account_url = self.simulator.url();
        config.accounts.token_dir = Some(self.dir.clone());
        config.accounts.token_file = None;
        config.accounts.access_token = None;
        config.accounts.refresh_token = None;
        config.withings.client_id = Some(client_id);
        config.withings.client_secret = Some(Secret::new(client_secret));
        // The household has a scale, a watch and a sleep analyzer: show all of it.
        config.collectors.names = Some(
            crate::collector::Collector::ALL
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
        );
        config
    }
}

const DIR_PREFIX: &str = "withings-exporter-demo-";

/// Removes the token directories of demos that were killed (SIGKILL leaves no chance to clean
/// up): each is named after its process, and a process that no longer runs needs none.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Household {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

trait Mode0700 {
    fn mode_0700(&mut self) -> &mut Self;
}

impl Mode0700 for std::fs::DirBuilder {
    fn mode_0700(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(0o700)
    }
}
