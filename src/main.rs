use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::sync::Arc;
use withings_exporter::config::{Config, DEFAULT_LISTEN_ADDRESS};
use withings_exporter::exporter::{Exporter, ExporterSettings};
use withings_exporter::server::{Application, shutdown_signal};
use withings_exporter::simulator::{Simulator, SimulatorOptions};
use withings_exporter::tokens::TokenSource;
use withings_exporter::web_config::{DEFAULT_POLL_INTERVAL, WebConfig};
use withings_exporter::{telemetry, withings};

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
    /// Serve /metrics from the Withings account of WITHINGS_ACCESS_TOKEN (the default).
    Serve,
    /// Serve /metrics from a built-in simulated Withings account: no account needed.
    Demo,
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
            let token = config.require_access_token()?.clone();
            serve(&config, TokenSource::Static(token)).await
        }
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
