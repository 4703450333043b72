//! The demo's household: three simulated Withings users, authorized into a temporary token
//! directory, so that `withings-exporter demo` shows accounts, `/probe` and `/sd` working
//! with nothing to set up.

use super::{HOUSEHOLD, Simulator, SimulatorOptions};
use serde_json::json;
use std::io::Write;
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
            random_bits()
        ));
        std::fs::DirBuilder::new().mode_0700().create(&dir)?;
        let household = Self { simulator, dir };
        for (name, userid, profile) in HOUSEHOLD {
            household.simulator.add_live_user(userid, profile);
            let (access, refresh, expires_in) = household.simulator.issue_token_pair_for(userid);
            let now = clock.unwrap_or_else(unix_now);
            // The token file as README documents it (the exporter's tests prove it reads
            // these): written here rather than through the exporter's token store, which this
            // crate must not depend on.
            let tokens = json!({
                "access_token": access,
                "refresh_token": refresh,
                "expires_at": now + expires_in,
                "obtained_at": now,
                "userid": userid,
                "scope": "user.metrics",
            });
            write_token_file(&household.dir.join(format!("{name}.json")), &tokens)?;
        }
        Ok(household)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the simulator ready for the demo's invites (issue 21): Withings' redirect goes
    /// to `callback` (the exporter's `/auth/callback`), the authorization page asks who signs
    /// in, and a fourth person, [`GUEST_USERID`], is there to be invited, reading as time
    /// passes like the others.
    pub fn prepare_invites(&self, callback: &str) {
        self.simulator.set_redirect_uri(callback);
        self.simulator.set_interactive_authorization(true);
        self.simulator.add_live_user(GUEST_USERID, GUEST);
    }

    /// The exporter's environment `vars` pointed at the household: its token directory, the
    /// simulator, and the simulator's application credentials. The other token sources are
    /// removed, since the exporter refuses them beside a token directory. Handed out as
    /// variables rather than a configuration because the exporter reads its configuration
    /// from them, and this crate must not depend on the exporter.
    pub fn environment(
        &self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Vec<(String, String)> {
        let (client_id, client_secret) = self.simulator.client_credentials();
        let url = self.simulator.url().to_string();
        let ours = [
            ("WITHINGS_API_URL", url.clone()),
            ("WITHINGS_ACCOUNT_URL", url),
            ("WITHINGS_TOKEN_DIR", self.dir.display().to_string()),
            ("WITHINGS_CLIENT_ID", client_id),
            ("WITHINGS_CLIENT_SECRET", client_secret),
        ];
        let replaced =
            |name: &str| REMOVED.contains(&name) || ours.iter().any(|(ours, _)| *ours == name);
        let mut out: Vec<(String, String)> =
            vars.into_iter().filter(|(k, _)| !replaced(k)).collect();
        // The household has a scale, a watch, a sleep analyzer and a BPM: show all of it,
        // unless the caller chose.
        if !out.iter().any(|(k, _)| k == "WITHINGS_COLLECTORS") {
            out.push(("WITHINGS_COLLECTORS".to_owned(), COLLECTORS.to_owned()));
        }
        out.extend(ours.map(|(k, v)| (k.to_owned(), v)));
        out
    }
}

/// The Withings user of the person the demo household can invite.
pub const GUEST_USERID: &str = "1004";

/// The guest's devices: a watch and a blood-pressure monitor.
const GUEST: crate::Profile = crate::Profile {
    index: 4,
    devices: &["ScanWatch 2", "BPM Connect"],
    systolic_shift: 4,
    pulse_shift: 1,
    ecg_afib: Some(0),
};

/// Every collector the exporter has: the household's devices feed them all.
const COLLECTORS: &str =
    "measures,activity,sleep,devices,workouts,intraday,sleep_detail,heart,goals";

/// The token sources other than a token directory, and the secret file that a client secret
/// in a variable would conflict with.
const REMOVED: [&str; 4] = [
    "WITHINGS_TOKEN_FILE",
    "WITHINGS_ACCESS_TOKEN",
    "WITHINGS_REFRESH_TOKEN",
    "WITHINGS_CLIENT_SECRET_FILE",
];

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Enough to keep two households of one process apart, without a random-number dependency.
fn random_bits() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now())
}

/// Created 0600 from the start, as the exporter writes its token files: a chmod afterwards
/// would leave a window in which the tokens are readable by others.
fn write_token_file(path: &Path, tokens: &serde_json::Value) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut json = serde_json::to_vec_pretty(tokens).map_err(std::io::Error::other)?;
    json.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&json)?;
    file.sync_all()
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
