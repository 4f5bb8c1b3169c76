//! `tpa-agent`: parses the command line, sets up logging (stderr; journald captures it under systemd) and
//! calls the library. `init` is run once by the controller over SSH; `serve` by systemd.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tpa_agent::config::{self, AgentConfig};
use tpa_agent::enrol::{self, InitArgs};
use tpa_agent::server;

/// The tpa host agent: applies resources sent by tpa-controller over mutual-TLS gRPC.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC: enrolment only until the controller has enrolled this agent, then the agent service.
    Serve {
        /// The configuration written by `init`.
        #[arg(long, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Prepare for enrolment. Reads the CA certificate and join token from stdin (a TOML document, never
    /// arguments) and prints `pending <fingerprint>` (or `enrolled <fingerprint>` if already enrolled).
    Init {
        /// This host's name, as the controller knows it: the certificate's common name.
        #[arg(long)]
        name: String,
        /// Extra DNS name or IP address for the certificate (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Address and port to listen on: the host's cluster address, e.g. 10.33.0.2:7443 (the controller's
        /// bootstrap passes the host's inventory address).
        #[arg(long)]
        listen: SocketAddr,
        /// Where to write the configuration.
        #[arg(long, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Where to keep the key, certificates and token hash.
        #[arg(long, default_value = config::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Enrol again even when this host is enrolled with a CA the document does not carry: the
        /// controller passes it after `rotate-ca --old-ca-compromised` (the old CA is no longer trusted).
        #[arg(long)]
        replace_ca: bool,
    },
    /// Print the agent and protocol versions.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tpa-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let config = AgentConfig::load(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                // Small: the agent mostly waits on child processes, and must stay light on the host.
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(config.listen)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot listen on {}: is another agent running, or is {} not an address of \
                             this host? (`listen` in the configuration)",
                            config.listen,
                            config.listen.ip()
                        )
                    })?;
                server::serve(config, listener, shutdown_signal()).await?;
                Ok(())
            })
        }
        Command::Init {
            name,
            sans,
            listen,
            config,
            state_dir,
            replace_ca,
        } => {
            let args = InitArgs {
                name,
                sans,
                listen,
                config_path: config,
                state_dir,
                replace_ca,
            };
            let outcome = enrol::init(&args, std::io::stdin().lock())?;
            println!("{outcome}");
            Ok(())
        }
        Command::Version => {
            println!(
                "tpa-agent {} (protocol {})",
                server::AGENT_VERSION,
                tpa_proto::PROTOCOL_VERSION
            );
            Ok(())
        }
    }
}

/// Completes on SIGTERM (systemd stop) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
    tracing::info!("shutting down");
}
