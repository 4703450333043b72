use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::net::SocketAddr;
use std::sync::Arc;
use withings_exporter::app::{App, SCAN_INTERVAL, accounts};
use withings_exporter::auth::{AuthSettings, Authorization};
use withings_exporter::config::{self, Config, DEFAULT_LISTEN_ADDRESS, LogSettings, flag_help};
use withings_exporter::http::server::{Application, ServerLimits, shutdown_signal};
use withings_exporter::http::signals;
use withings_exporter::http::web_config::{DEFAULT_POLL_INTERVAL, WebConfig};
use withings_exporter::{http::healthcheck, telemetry};
use withings_sim::household::Household;
use withings_sim::{Simulator, SimulatorOptions};

/// Prometheus exporter for Withings health measures.
///
/// Configured through WITHINGS_* environment variables (listed below) and the flags of
/// exporter-toolkit, which win over their variables; see the README.
#[derive(Parser)]
#[command(version, about, after_help = config::settings_help())]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// The command line, with exporter-toolkit's flags from the settings table (each named by
/// the variable it stands for), and the flags given as those variables, so that one
/// validation checks both ways of setting a value.
fn parse_command_line() -> (Cli, Vec<(&'static str, String)>) {
    let mut command = Cli::command();
    for (setting, flag) in config::settings::flags() {
        command = command.arg(
            clap::Arg::new(setting.variable)
                .long(flag.name)
                .value_name(flag.value_name)
                .global(true)
                .help(flag_help(setting.variable)),
        );
    }
    let matches = command.get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let overrides = config::settings::flags()
        .filter_map(|(setting, _)| {
            matches
                .get_one::<String>(setting.variable)
                .map(|value| (setting.variable, value.clone()))
        })
        .collect();
    (cli, overrides)
}

#[derive(Subcommand)]
enum Command {
    /// Serve the accounts of WITHINGS_TOKEN_DIR on /probe and /sd, or the one account of
    /// WITHINGS_TOKEN_FILE or WITHINGS_ACCESS_TOKEN on /metrics (the default).
    Serve,
    /// Authorize the exporter with a Withings account: write WITHINGS_TOKEN_FILE, or with
    /// --account NAME, NAME.json in WITHINGS_TOKEN_DIR.
    Auth {
        /// The account to authorize (one person): lowercase letters, digits, '-' and '_'.
        #[arg(long)]
        account: Option<String>,
        /// Do not listen for the redirect: open the URL on any machine, then paste the URL
        /// the browser was redirected to (or the code) here. For headless servers.
        #[arg(long, alias = "no-browser")]
        paste: bool,
        /// How long to wait for the redirect, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Listen for the redirect on this address instead of WITHINGS_REDIRECT_URI's host
        /// and port; in a container, 0.0.0.0:19101 with the port published on the host.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Invite a person to link their own Withings account from their own browser: prints
    /// the link {WITHINGS_PUBLIC_URL}/invite/TOKEN (valid once). For an account that exists,
    /// the link re-authorizes it and accepts only the same Withings user.
    Invite {
        /// The account the person will be: lowercase letters, digits, '-' and '_'.
        #[arg(long, conflicts_with_all = ["list", "revoke"], required_unless_present_any = ["list", "revoke"])]
        account: Option<String>,
        /// How long the link works: 72 (hours), 72h, 30m, 7d; at most 30d.
        #[arg(long, default_value = "72h", requires = "account")]
        valid: String,
        /// List the open invites: account, expiry (no link: it is shown once).
        #[arg(long, conflicts_with = "revoke")]
        list: bool,
        /// Revoke the open invite of this account.
        #[arg(long, value_name = "NAME")]
        revoke: Option<String>,
    },
    /// Serve a simulated household of three Withings accounts: no account needed.
    Demo,
    /// List the accounts of WITHINGS_TOKEN_DIR: name, Withings user, token expiry, whether
    /// the file is readable. No secret is printed.
    Accounts,
    /// Exit 0 when the exporter configured by WITHINGS_LISTEN_ADDRESS answers /-/healthy
    /// (the container image's HEALTHCHECK; the image has no curl).
    Healthcheck {
        /// Check this URL instead of the one derived from WITHINGS_LISTEN_ADDRESS.
        #[arg(long)]
        url: Option<url::Url>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
    },
    /// Write an account's whole Withings history as OpenMetrics text, for `promtool tsdb
    /// create-blocks-from openmetrics FILE DIR` (see the README, "Your history"), or send it
    /// by Prometheus remote write (--remote-write): the measures, and activity and sleep when
    /// WITHINGS_COLLECTORS turns them on.
    Backfill {
        /// The account (WITHINGS_TOKEN_DIR/NAME.json), or `default` for the one account of
        /// WITHINGS_TOKEN_FILE or WITHINGS_ACCESS_TOKEN.
        #[arg(long)]
        account: Option<String>,
        /// Every account of WITHINGS_TOKEN_DIR, into one file (or one remote write).
        #[arg(long)]
        all: bool,
        /// The file to write; it appears only once complete.
        #[arg(long, conflicts_with = "remote_write")]
        output: Option<std::path::PathBuf>,
        /// Send the history by Prometheus remote write to URL instead (e.g.
        /// http://prometheus:9090/api/v1/write); without URL, to WITHINGS_REMOTE_WRITE_URL or
        /// the url of WITHINGS_REMOTE_WRITE_CONFIG_FILE (see docs/remote-write.md).
        #[arg(long, value_name = "URL", num_args = 0..=1)]
        remote_write: Option<Option<url::Url>>,
        /// Only readings from this day on (YYYY-MM-DD, UTC).
        #[arg(long)]
        since: Option<String>,
        /// The `job` label Prometheus gives the exporter's series (the dashboard selects by
        /// it); `withings` in the shipped prometheus.yml. Empty for none.
        #[arg(long, default_value = withings_exporter::backfill::DEFAULT_JOB)]
        job: String,
        /// The `instance` label Prometheus gives them: see `up{job="withings"}` in
        /// Prometheus, e.g. `withings-exporter:19100` in the compose stack.
        #[arg(long)]
        instance: Option<String>,
    },
    /// Withings notification subscriptions (WITHINGS_CALLBACK_URL): list them, subscribe
    /// what is missing, or revoke this exporter's. One line per subscription.
    Notify {
        #[command(subcommand)]
        action: NotifyAction,
        /// Only this account (default: every account).
        #[arg(long, global = true)]
        account: Option<String>,
    },
    /// Run only the simulated Withings API, for tests and benchmarks.
    Simulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Access token the simulator accepts.
        #[arg(long, default_value = "demo-token")]
        token: String,
        /// Serve the measure groups of this file (a getmeas answer or a measuregrps array)
        /// instead of live demo readings.
        #[arg(long)]
        fixture: Option<std::path::PathBuf>,
        /// Groups per getmeas page.
        #[arg(long, default_value_t = 500)]
        page_size: usize,
        /// Client id of the simulated Withings application (for `auth` and refreshing).
        #[arg(long, default_value = "simulator-client-id")]
        client_id: String,
        /// Client secret of the simulated Withings application.
        #[arg(long, default_value = "simulator-client-secret")]
        client_secret: String,
    },
}

#[derive(Debug, Clone, Copy, clap::Subcommand)]
enum NotifyAction {
    /// List each account's subscriptions at Withings: the category (appli), the callback
    /// (this exporter's with its secret hidden, another's by its host) and the comment.
    List,
    /// Subscribe each account to WITHINGS_CALLBACK_URL for every category its collectors
    /// need (WITHINGS_COLLECTORS); those in place are left as they are.
    Subscribe,
    /// Revoke this exporter's subscriptions (those to WITHINGS_CALLBACK_URL); others'
    /// callbacks are left alone.
    Revoke,
}

fn main() -> std::process::ExitCode {
    let (cli, overrides) = parse_command_line();
    let failed = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        std::process::ExitCode::FAILURE
    };
    let vars = match config::environment(std::env::vars_os()) {
        Ok(vars) => config::with_overrides(vars, overrides),
        Err(e) => return failed(&e),
    };
    let logging = match LogSettings::from_vars(&vars) {
        Ok(logging) => logging,
        Err(e) => return failed(&e),
    };
    if let Err(e) = telemetry::init(&logging) {
        return failed(&e);
    }
    for warning in config::misspelt_variables(&vars) {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), vars)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: what went wrong and, in the message, what to do.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `vars`: the environment's `WITHINGS_*` and `RUST_LOG`, with the flags put in.
async fn run(command: Command, vars: Vec<(String, String)>) -> anyhow::Result<()> {
    // The collectors and measure types are checked here, where their tables are in sight,
    // before anything starts: a name that does not exist stops the start as it always has.
    let from_env = || -> Result<Config, config::ConfigError> {
        let config = Config::from_vars(vars.clone())?;
        withings_exporter::collector::check(&config.collectors)?;
        Ok(config)
    };
    match command {
        Command::Serve => {
            let config = from_env()?;
            let app = App::from_config(&config)?;
            serve(&config, app, None).await
        }
        Command::Auth {
            account,
            paste,
            timeout,
            listen,
        } => {
            authorize(
                from_env()?,
                account.as_deref(),
                paste,
                std::time::Duration::from_secs(timeout),
                listen,
            )
            .await
        }
        Command::Invite {
            account,
            valid,
            list,
            revoke,
        } => {
            let config = from_env()?;
            let invites = withings_exporter::http::onboard::Invites::from_config(&config)?;
            let now = withings_exporter::account::unix_now();
            if list {
                print!("{}", invites.listing(now)?);
            } else if let Some(name) = revoke {
                let revoked = invites.revoke(&name, now)?;
                println!("{name}: {revoked} open invite(s) revoked");
            } else if let Some(name) = account {
                let valid = withings_exporter::invite::parse_validity(&valid)
                    .map_err(|e| anyhow::anyhow!("--valid: {e}"))?;
                let (link, _) = invites.create(&name, valid, now)?;
                println!("{}", link.expose());
            }
            Ok(())
        }
        Command::Notify { action, account } => {
            let config = from_env()?;
            let app = Arc::new(App::from_config(&config)?);
            let Some(notifier) = withings_exporter::notify::Notifier::from_config(
                &config.notify,
                &config.accounts,
                app.collectors().applis(),
                app.clock().clone(),
            )?
            else {
                anyhow::bail!(
                    "WITHINGS_CALLBACK_URL: not set; `notify` manages the subscriptions to that URL"
                );
            };
            app.set_notifier(notifier);
            let action = match action {
                NotifyAction::List => withings_exporter::notify::cli::Action::List,
                NotifyAction::Subscribe => withings_exporter::notify::cli::Action::Subscribe,
                NotifyAction::Revoke => withings_exporter::notify::cli::Action::Revoke,
            };
            let lines = withings_exporter::notify::cli::run(&app, action, account.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            for line in lines {
                println!("{line}");
            }
            Ok(())
        }
        Command::Accounts => {
            let config = from_env()?;
            let dir = config.accounts.token_dir.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "WITHINGS_TOKEN_DIR: not set; `accounts` lists the accounts of that directory"
                )
            })?;
            print!("{}", accounts::listing(dir)?);
            Ok(())
        }
        Command::Backfill {
            account,
            all,
            output,
            remote_write,
            since,
            job,
            instance,
        } => {
            if instance.as_deref().is_none_or(str::is_empty) {
                // Every scraped series has an `instance`: without the same one the backfilled
                // years sit beside the live line instead of continuing it.
                eprintln!(
                    "backfill: warning: no --instance; the series will not join the live ones Prometheus scrapes: pass the exporter's target as Prometheus names it (see up{{job=\"withings\"}})"
                );
            }
            let labels = [("job", Some(job)), ("instance", instance)]
                .into_iter()
                .filter_map(|(name, value)| value.filter(|v| !v.is_empty()).map(|v| (name, v)))
                .collect();
            let config = from_env()?;
            let output = match (output, remote_write) {
                (Some(path), _) => BackfillOutput::File(path),
                (None, Some(url)) => {
                    let destination =
                        withings_exporter::remote_write::settings::destination(&config.remote_write, url)?
                            .ok_or_else(|| anyhow::anyhow!("backfill: --remote-write: no URL; give one (--remote-write URL), or set WITHINGS_REMOTE_WRITE_URL or WITHINGS_REMOTE_WRITE_CONFIG_FILE"))?;
                    BackfillOutput::RemoteWrite(withings_exporter::remote_write::Writer::new(
                        destination,
                    )?)
                }
                (None, None) => {
                    anyhow::bail!("backfill: say where: --output FILE or --remote-write URL")
                }
            };
            let request = BackfillRequest {
                account: account.as_deref(),
                all,
                output: &output,
                since: since.as_deref(),
                labels,
            };
            backfill(config, request).await
        }
        Command::Demo => {
            // Read first, so that a variable the exporter refuses stops the demo before the
            // household starts, as before.
            from_env()?;
            let household = Household::start()
                .await
                .context("cannot start the simulated Withings household")?;
            tracing::info!(url = %household.simulator.url(), dir = %household.dir().display(), "demo: a simulated household of three Withings accounts");
            let config = Config::from_vars(household.environment(vars.clone()))?;
            let pusher = household.simulator.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
                    pusher.advance_live_and_notify().await;
                }
            });
            let app = App::from_config(&config)?;
            let result = serve(&config, app, Some(&household)).await;
            drop(household);
            result
        }
        Command::Healthcheck { url, timeout } => {
            let url = match url {
                Some(url) => url,
                None => {
                    let config = from_env()?;
                    // HTTPS when the web configuration turns TLS on; /-/healthy needs no user.
                    let https = match &config.server.web_config_file {
                        Some(path) => withings_exporter::http::web_config::tls_configured(path)
                            .map_err(|e| anyhow::anyhow!("WITHINGS_WEB_CONFIG_FILE: {e}"))?,
                        None => false,
                    };
                    healthcheck::health_url(config.server.listen_address, https)
                }
            };
            let timeout = std::time::Duration::try_from_secs_f64(timeout)
                .context("--timeout must be a positive number of seconds")?;
            healthcheck::check(&url, timeout).await?;
            Ok(())
        }
        Command::Simulator {
            listen,
            token,
            fixture,
            page_size,
            client_id,
            client_secret,
        } => {
            let oauth = withings_sim::OAuthOptions {
                client_id,
                client_secret,
                ..Default::default()
            };
            // Printed so that a walk-through can copy them; they open nothing real.
            eprintln!(
                "simulator: access token {token}, client id {}, client secret {}, registered redirect URI {}",
                oauth.client_id, oauth.client_secret, oauth.redirect_uri
            );
            let simulator = Simulator::start(SimulatorOptions {
                listen,
                access_tokens: vec![token],
                page_size,
                live: fixture.is_none(),
                oauth,
                ..SimulatorOptions::default()
            })
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
            if let Some(path) = fixture {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                simulator
                    .load_fixture(&text)
                    .with_context(|| format!("{} is not usable", path.display()))?;
            }
            // Printed on stdout so that scripts can read the URL.
            println!("{}", simulator.url());
            shutdown_signal().await;
            Ok(())
        }
    }
}

async fn authorize(
    config: Config,
    account: Option<&str>,
    paste: bool,
    timeout: std::time::Duration,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let mut settings = match account {
        Some(name) => {
            AuthSettings::for_account(&config.withings, &config.accounts, &config.collectors, name)?
        }
        None => AuthSettings::from_config(&config.withings, &config.accounts, &config.collectors)?,
    };
    settings.listen = listen;
    let mut authorization = Authorization::new(settings)?;
    authorization.create_token_dir()?;
    let code = if paste {
        println!(
            "Open this URL in a browser, on any machine, and authorize the access:\n\n  {}\n",
            authorization.url()
        );
        println!(
            "Your browser is then sent to {} (the page may fail to load: that is fine).",
            config.withings.redirect_uri
        );
        println!(
            "Paste the whole URL from the address bar here, within 30 seconds, and press Enter:"
        );
        authorization
            .read_pasted(tokio::io::BufReader::new(tokio::io::stdin()))
            .await?
    } else {
        let listener = authorization.listen().await?;
        println!(
            "Open this URL in a browser and authorize the access:\n\n  {}\n",
            authorization.url()
        );
        let listening = listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        println!(
            "Waiting for Withings to redirect the browser to {} (listening on {listening}) ... (on a headless server, use `withings-exporter auth --paste`)",
            authorization.redirect_uri()
        );
        // The browser is answered once the tokens are saved or refused, with the same
        // verdict as the terminal.
        let tokens = authorization
            .receive_and_exchange(listener, timeout)
            .await?;
        authorized(&authorization, &tokens, account);
        return Ok(());
    };
    let tokens = authorization.exchange(&code).await?;
    authorized(&authorization, &tokens, account);
    Ok(())
}

fn authorized(
    authorization: &Authorization,
    tokens: &withings_exporter::account::token_store::StoredTokens,
    account: Option<&str>,
) {
    println!(
        "Authorized{}. Tokens saved to {} (mode 0600).",
        tokens
            .userid
            .as_deref()
            .map(|u| format!(" Withings user {u}"))
            .unwrap_or_default(),
        authorization.token_file().display()
    );
    if let Some(name) = account {
        println!(
            "Next: a running `withings-exporter serve` with this WITHINGS_TOKEN_DIR picks up the account {name:?} within seconds (Prometheus finds it on /sd). To add another person, sign out of Withings in the browser first."
        );
    } else {
        println!(
            "Next: run `withings-exporter serve` with the same WITHINGS_CLIENT_ID, WITHINGS_CLIENT_SECRET and WITHINGS_TOKEN_FILE; it refreshes the tokens by itself. Keep the token file on a persistent volume."
        );
    }
}

/// Reads `WITHINGS_WEB_CONFIG_FILE`, if set; a file that cannot be used stops the start.
fn web_config(config: &Config) -> anyhow::Result<Option<Arc<WebConfig>>> {
    let Some(path) = &config.server.web_config_file else {
        return Ok(None);
    };
    let web = WebConfig::load(path).map_err(|e| {
        anyhow::anyhow!("WITHINGS_WEB_CONFIG_FILE: {e} (fix the file, or unset the variable to serve without TLS and authentication)")
    })?;
    let current = web.current();
    tracing::info!(
        file = %path.display(),
        tls = web.tls_enabled(),
        client_auth = ?current.client_auth,
        basic_auth_users = current.users.len(),
        "web configuration loaded"
    );
    Ok(Some(Arc::new(web)))
}

/// `demo`: the household whose simulator plays Withings for the invites.
async fn serve(config: &Config, app: App, demo: Option<&Household>) -> anyhow::Result<()> {
    tracing::info!(config = %config.summary_with(app.meastypes()), version = env!("CARGO_PKG_VERSION"), "starting withings-exporter");
    let web = web_config(config)?;
    let app = Arc::new(app);
    let mut reload_hooks: Vec<signals::ReloadHook> = Vec::new();
    if app.is_directory() {
        let names: Vec<String> = app.accounts().iter().map(|a| a.name().to_owned()).collect();
        tracing::info!(
            accounts = names.len(),
            names = %names.join(","),
            "serving the accounts of WITHINGS_TOKEN_DIR on /probe?account=NAME, listed for Prometheus on /sd"
        );
        tokio::spawn(Arc::clone(&app).watch(SCAN_INTERVAL));
        let rescanned = Arc::clone(&app);
        reload_hooks.push(Box::new(move || {
            let report = rescanned.scan();
            tracing::info!(
                added = report.added.len(),
                reopened = report.reopened.len(),
                removed = report.removed.len(),
                "SIGHUP: read WITHINGS_TOKEN_DIR again"
            );
        }));
    }
    let shared = Arc::clone(&app);
    let app = Application::bind(config.server.listen_address, app)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (set WITHINGS_LISTEN_ADDRESS to a free address; the default is {DEFAULT_LISTEN_ADDRESS})",
                config.server.listen_address
            )
        })?;
    let app = app.with_telemetry_path(&config.server.telemetry_path);
    let app = app.with_limits(ServerLimits::from_config(&config.server, &config.withings));
    let mut config = config.clone();
    if let Some(household) = demo {
        // Where this exporter is reached on this machine, now that it listens (port 0 is
        // known only now): the demo's notifications, remote-written series and invites use it.
        let mut at = app.local_addr()?;
        if at.ip().is_unspecified() {
            at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        // The household is subscribed to this exporter over loopback: its readings, its
        // watches' syncs and its nights arrive by push.
        if config.notify.callback_url.is_none() {
            config.notify.callback_url =
                url::Url::parse(&format!("http://{at}/withings/notify")).ok();
        }
        // Written series join the scraped ones by `instance`: the address a Prometheus on
        // this machine scrapes, as the README's configuration finds it through /sd.
        if config.remote_write.instance.is_none()
            && withings_exporter::remote_write::settings::destination(&config.remote_write, None)
                .is_ok_and(|d| d.is_some())
        {
            config.remote_write.instance = Some(at.to_string());
            tracing::info!(instance = %at, "demo: remote write on; the written series carry the demo's address as their instance label (set WITHINGS_REMOTE_WRITE_INSTANCE if your Prometheus scrapes another)");
        }
        // The household can invite a fourth person from the landing page: the invite links
        // and Withings' redirect back come to this exporter, at the address it was given.
        if config.server.public_url.is_none() {
            config.server.public_url = url::Url::parse(&format!("http://{at}/")).ok();
        }
        if let Some(public) = &config.server.public_url {
            household.prepare_invites(&format!(
                "{}/auth/callback",
                public.as_str().trim_end_matches('/')
            ));
            println!(
                "demo: the household's landing page is {public} (\"Add a person\" invites a fourth person, who signs in at the simulator as user {})",
                withings_sim::household::GUEST_USERID
            );
        }
    }
    withings_exporter::notify::start(&config.notify, &config.accounts, &shared)?;
    start_remote_writer(&config, &shared)?;
    let app = match withings_exporter::http::onboard::Onboarding::from_config(&config) {
        Some(onboarding) => {
            if let Ok(callback) = onboarding.invites().callback_url() {
                tracing::info!(%callback, "invites on: register this callback URL for the Withings application");
            }
            app.with_onboarding(Arc::new(onboarding))
        }
        None => {
            if config.server.public_url.is_some() {
                tracing::warn!(
                    "WITHINGS_PUBLIC_URL is set but WITHINGS_TOKEN_DIR is not: invites are off (they add accounts to a token directory)"
                );
            }
            app
        }
    };
    // Whatever is configured: a SIGHUP must never end the process.
    signals::spawn_reload_on_hangup(web.clone(), reload_hooks);
    let app = match web {
        Some(web) => {
            tokio::spawn(Arc::clone(&web).watch(DEFAULT_POLL_INTERVAL));
            app.with_web_config(web)
        }
        None => app,
    };
    let address = app.local_addr()?;
    let scheme = if app.is_tls() { "https" } else { "http" };
    tracing::info!(
        %address,
        "serving metrics at {scheme}://{address}{}",
        config.server.telemetry_path
    );
    if demo.is_some() {
        // Where a browser on this machine reaches it: not 0.0.0.0 (the container's address).
        let mut local = address;
        if local.ip().is_unspecified() {
            local.set_ip(match local.ip() {
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        tracing::info!(
            "demo ready: open {scheme}://{local}/ in a browser (the household's three accounts, each with its metrics on /probe?account=NAME; Prometheus finds them on /sd)"
        );
    }
    app.run_until(shutdown_signal()).await?;
    Ok(())
}

/// With a remote-write destination, the writer of each account's settled history, in the
/// background (backfill::live).
fn start_remote_writer(config: &Config, app: &Arc<App>) -> anyhow::Result<()> {
    use withings_exporter::backfill::live::{CURSORS_FILE, Live};
    let Some(destination) =
        withings_exporter::remote_write::settings::destination(&config.remote_write, None)?
    else {
        return Ok(());
    };
    let writer = withings_exporter::remote_write::Writer::new(destination)?;
    let shown = writer.shown_url().to_owned();
    let live = Live::new(
        Arc::clone(app),
        writer.clone(),
        Some(config.remote_write.job.as_str()),
        config.remote_write.instance.as_deref(),
        config.accounts.beside_tokens(CURSORS_FILE),
        app.registry(),
    )?;
    let (immediate, writing) = withings_exporter::backfill::live::Immediate::new(
        app,
        writer,
        Some(config.remote_write.job.as_str()),
        config.remote_write.instance.as_deref(),
        app.registry(),
    )?;
    app.emit_to(immediate);
    tracing::info!(url = %shown, "remote write: each account's history is written as it settles, final samples (intraday, a night's minutes) as they are read");
    tokio::spawn(live.run());
    tokio::spawn(writing);
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM (`docker stop`, `systemctl stop`, `timeout`): a command asked
/// to stop. Without a handler either would end the process before its temporary files
/// are removed.
async fn interrupted() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Where `backfill` writes.
enum BackfillOutput {
    File(std::path::PathBuf),
    RemoteWrite(withings_exporter::remote_write::Writer),
}

/// `backfill`: the library does the work; here only the terminal, Ctrl-C and the messages.
struct BackfillRequest<'a> {
    account: Option<&'a str>,
    all: bool,
    output: &'a BackfillOutput,
    since: Option<&'a str>,
    labels: Vec<(&'static str, String)>,
}

async fn backfill(config: Config, request: BackfillRequest<'_>) -> anyhow::Result<()> {
    let BackfillRequest {
        account,
        all,
        output,
        since,
        labels,
    } = request;
    use std::io::IsTerminal;
    use withings_exporter::backfill::{Output, Plan, parse_since};
    let since = since.map(parse_since).transpose()?;
    let now = withings_exporter::account::unix_now();
    let mut plan = Plan::from_config(&config, account, all, since, now)?;
    plan.options.progress = std::io::stderr().is_terminal();
    plan.options.target_labels = labels;
    let (target, shown) = match output {
        BackfillOutput::File(path) => (Output::File(path), path.display().to_string()),
        BackfillOutput::RemoteWrite(writer) => {
            (Output::RemoteWrite(writer), writer.shown_url().to_owned())
        }
    };
    let rerun = || {
        match output {
        BackfillOutput::File(path) => format!(
            "nothing was written to {}; rerun the same command (it reads the history again from the start)",
            path.display()
        ),
        // What was written stays; a rerun writes the same values at the same timestamps.
        BackfillOutput::RemoteWrite(_) => "rerun the same command: it sends the whole history again, the same values at the same timestamps, which the store takes without harm".to_owned(),
    }
    };
    tokio::select! {
        result = plan.run(target) => match result {
            Ok(summary) => {
                eprintln!("{}", summary.line(&shown));
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!("backfill failed: {e}; {}", rerun())),
        },
        // Dropping the run removes its temporary files (the output's and the spool).
        () = interrupted() => Err(anyhow::anyhow!("backfill interrupted; {}", rerun())),
    }
}
