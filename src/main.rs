use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::sync::Arc;
use withings_exporter::account::tokens::TokenSource;
use withings_exporter::account::{Exporter, ExporterSettings};
use withings_exporter::auth::{AuthSettings, Authorization};
use withings_exporter::config::{Config, DEFAULT_LISTEN_ADDRESS};
use withings_exporter::http::server::{Application, ServerLimits, shutdown_signal};
use withings_exporter::http::signals;
use withings_exporter::http::web_config::{DEFAULT_POLL_INTERVAL, WebConfig};
use withings_exporter::simulator::{Simulator, SimulatorOptions};
use withings_exporter::{http::healthcheck, telemetry, withings};

/// Prometheus exporter for Withings health measures.
///
/// Configured through WITHINGS_* environment variables; see the README.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve /metrics from the Withings account of WITHINGS_TOKEN_FILE or WITHINGS_ACCESS_TOKEN (the default).
    Serve,
    /// Authorize the exporter with a Withings account and write WITHINGS_TOKEN_FILE.
    Auth {
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
    /// Serve /metrics from a built-in simulated Withings account: no account needed.
    Demo,
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
    },
}

const DEMO_TOKEN: &str = "demo-token";

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init();
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
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: what went wrong and, in the message, what to do.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let config = Config::from_env()?;
            let tokens = TokenSource::from_config(&config)?;
            serve(&config, tokens).await
        }
        Command::Auth {
            paste,
            timeout,
            listen,
        } => authorize(paste, std::time::Duration::from_secs(timeout), listen).await,
        Command::Demo => {
            let mut config = Config::from_env()?;
            let simulator = Simulator::start(SimulatorOptions {
                access_tokens: vec![DEMO_TOKEN.into()],
                live: true,
                ..SimulatorOptions::default()
            })
            .await
            .context("cannot start the simulated Withings API")?;
            config.api_url = simulator.url();
            tracing::info!(url = %simulator.url(), "demo: simulated Withings API running");
            serve(&config, TokenSource::Static(DEMO_TOKEN.into())).await
        }
        Command::Healthcheck { url, timeout } => {
            let url = match url {
                Some(url) => url,
                None => {
                    let config = Config::from_env()?;
                    // HTTPS when the web configuration turns TLS on; /-/healthy needs no user.
                    let https = match &config.web_config_file {
                        Some(path) => withings_exporter::http::web_config::tls_configured(path)
                            .map_err(|e| anyhow::anyhow!("WITHINGS_WEB_CONFIG_FILE: {e}"))?,
                        None => false,
                    };
                    healthcheck::health_url(config.listen_address, https)
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
        } => {
            let simulator = Simulator::start(SimulatorOptions {
                listen,
                access_tokens: vec![token],
                page_size,
                live: fixture.is_none(),
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
    paste: bool,
    timeout: std::time::Duration,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let mut settings = AuthSettings::from_config(&config)?;
    settings.listen = listen;
    let mut authorization = Authorization::new(settings)?;
    let code = if paste {
        println!(
            "Open this URL in a browser, on any machine, and authorize the access:\n\n  {}\n",
            authorization.url()
        );
        println!(
            "Your browser is then sent to {} (the page may fail to load: that is fine).",
            config.redirect_uri
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
        authorization.receive(listener, timeout).await?
    };
    let tokens = authorization.exchange(&code).await?;
    println!(
        "Authorized{}. Tokens saved to {} (mode 0600).",
        tokens
            .userid
            .as_deref()
            .map(|u| format!(" Withings user {u}"))
            .unwrap_or_default(),
        authorization.token_file().display()
    );
    println!(
        "Next: run `withings-exporter serve` with the same WITHINGS_CLIENT_ID, WITHINGS_CLIENT_SECRET and WITHINGS_TOKEN_FILE; it refreshes the tokens by itself. Keep the token file on a persistent volume."
    );
    Ok(())
}

/// Reads `WITHINGS_WEB_CONFIG_FILE`, if set; a file that cannot be used stops the start.
fn web_config(config: &Config) -> anyhow::Result<Option<Arc<WebConfig>>> {
    let Some(path) = &config.web_config_file else {
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

async fn serve(config: &Config, tokens: TokenSource) -> anyhow::Result<()> {
    tracing::info!(config = %config.summary(), version = env!("CARGO_PKG_VERSION"), "starting withings-exporter");
    let web = web_config(config)?;
    let exporter = Exporter::new(ExporterSettings::from_config(config), tokens).map_err(
        |e: withings::ApiError| anyhow::anyhow!("cannot set up the Withings client: {e}"),
    )?;
    let app = Application::bind(config.listen_address, Arc::new(exporter))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (set WITHINGS_LISTEN_ADDRESS to a free address; the default is {DEFAULT_LISTEN_ADDRESS})",
                config.listen_address
            )
        })?;
    let app = app.with_limits(ServerLimits::from_config(config));
    // Whatever is configured: a SIGHUP must never end the process.
    signals::spawn_reload_on_hangup(web.clone(), Vec::new());
    let app = match web {
        Some(web) => {
            tokio::spawn(Arc::clone(&web).watch(DEFAULT_POLL_INTERVAL));
            app.with_web_config(web)
        }
        None => app,
    };
    let address = app.local_addr()?;
    let scheme = if app.is_tls() { "https" } else { "http" };
    tracing::info!(%address, "serving metrics at {scheme}://{address}/metrics");
    app.run_until(shutdown_signal()).await?;
    Ok(())
}
