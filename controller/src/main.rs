//! `tpa-controller`: parses the command line, sets up logging and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use tpa_controller::commands;
use tpa_controller::lock::ClusterLock;

/// Deploys PostgreSQL clusters described in a TPA config.yml.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// More detail (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write config.yml for a new M1 cluster from a few options (TPA's `configure`): the
    /// layout, host names, platform settings; then `git init` and a first commit.
    Configure(Box<commands::configure::Args>),
    /// Create the cluster's hosts (containers on the docker platform) and the files that
    /// reach them: id_<cluster>, ssh_config, tpa_known_hosts, inventory.json.
    Provision {
        /// The cluster directory holding config.yml.
        cluster_dir: PathBuf,
        /// Debian mirror used when a host image must be built.
        #[arg(long)]
        mirror: Option<String>,
    },
    /// Download every package the cluster's roles need, with dependencies, into
    /// <dir>/local-repo/Debian/<version>/ with an apt index (for hosts without network).
    DownloadPackages {
        cluster_dir: PathBuf,
        /// Debian major version of the hosts (default: from the cluster's images).
        #[arg(long)]
        os_version: Option<u32>,
        /// Debian mirror to download from.
        #[arg(long)]
        mirror: Option<String>,
    },
    /// Make the hosts a cluster: provision if needed, bootstrap agents, apply the plan.
    /// With --check, show what would change and change nothing (exit 2 when changes are pending).
    Deploy {
        cluster_dir: PathBuf,
        /// Show the plan (per host, what would change) without changing anything.
        #[arg(long)]
        check: bool,
        /// How many hosts bootstrap at once, and how many stages apply at once across the
        /// hosts (TPA's --forks). Default: 4 per CPU of this machine on docker (the hosts
        /// share it), 32 on bare and aws (the hosts do the work, the controller waits).
        #[arg(long, value_parser = clap::builder::TypedValueParser::map(
            clap::value_parser!(u16).range(1..=1024), usize::from))]
        forks: Option<usize>,
    },
    /// Remove this cluster's hosts and network (docker), and the files provision generated.
    /// Bare machines are never removed.
    Deprovision {
        cluster_dir: PathBuf,
        /// On platforms whose machines stay (bare): also remove what deploy installed for tpa
        /// itself from every host: the agent (unit, binary, keys) and the shipped packages.
        /// Postgres, its data and the installed packages stay.
        #[arg(long)]
        uninstall: bool,
    },
    /// Show each host's live role, upstream, replication state, lag, timeline and repmgr view.
    /// Read-only. Exit 1 (reason on stderr) when a host is down or unreachable, a replica does
    /// not stream, or more than one host is a live primary.
    Status {
        cluster_dir: PathBuf,
        /// Print a JSON array of objects (one per host) instead of the table.
        #[arg(long)]
        json: bool,
        /// Redraw every SECONDS (default 2) until interrupted; the exit status is the last
        /// round's.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2",
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        watch: Option<u64>,
        /// With --watch: stop after this many rounds (for scripts and tests).
        #[arg(long, requires = "watch", hide = true,
              value_parser = clap::value_parser!(u64).range(1..))]
        watch_count: Option<u64>,
    },
    /// TPA's `test`, fast: live state, pg_control, repmgr's checks, `barman check`, the
    /// application user over TLS verify-full, a write seen on every replica, optional pgbench.
    /// Outputs and report.json under <dir>/test/<timestamp>/. Exit 1 when a check fails.
    Test {
        cluster_dir: PathBuf,
        /// Also run pgbench for this many seconds: read-write on the primary, read-only on
        /// every replica (after `pgbench -i` on the primary, in database postgres).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=86_400))]
        pgbench_seconds: Option<u32>,
    },
    /// Print the stored password of a database user: only the password and a newline, on
    /// stdout. Exit 1 when none is stored.
    ShowPassword {
        cluster_dir: PathBuf,
        /// The database user (stored as `<user>_password`, TPA's name).
        user: String,
    },
    /// Store a password for a database user, applied on the next deploy. Prompts twice without
    /// echo on a terminal; otherwise reads one line from stdin (never from arguments).
    StorePassword {
        cluster_dir: PathBuf,
        /// The database user (stored as `<user>_password`, TPA's name).
        user: String,
        /// Generate a random password instead of reading one.
        #[arg(long)]
        random: bool,
    },
    /// Planned change of primary (repmgr): `instance`, a caught-up replica of the primary,
    /// becomes the primary; the old primary and its other replicas follow it. Nothing
    /// committed is lost. Refused, with the reason, when the target is not such a replica.
    Switchover {
        cluster_dir: PathBuf,
        /// The replica to promote.
        instance: String,
    },
    /// Replace the cluster CA on a running cluster. With the old CA still trusted: three deploys
    /// (every host trusts both CAs; the new CA issues every certificate; the old one is dropped),
    /// over the agents' channels, no SSH; run again to resume an interrupted rotation.
    RotateCa {
        cluster_dir: PathBuf,
        /// The old CA key leaked: trust the new CA alone at once and re-enrol every agent over
        /// SSH (docs/protocol.md, CA rotation).
        #[arg(long)]
        old_ca_compromised: bool,
        /// As deploy's --forks.
        #[arg(long, value_parser = clap::builder::TypedValueParser::map(
            clap::value_parser!(u16).range(1..=1024), usize::from))]
        forks: Option<usize>,
    },
    /// Issue a TLS client certificate from the cluster CA for a client outside the cluster, such
    /// as a Prometheus scraping the agents' /metrics (agent_metrics_listen: tls). Writes
    /// NAME.crt, NAME.key (0600) and ca.crt into --out; it cannot drive the agents.
    ClientCert {
        cluster_dir: PathBuf,
        /// The client's name (its certificate's common name), e.g. prometheus.
        #[arg(long)]
        name: String,
        /// Where to write the certificate, its key and the CA.
        #[arg(long)]
        out: PathBuf,
    },
    /// An on-demand backup of every instance a Barman host backs up (`backup:` in config.yml),
    /// or with --list the backups Barman holds.
    Backup {
        cluster_dir: PathBuf,
        /// List the backups (id, begin/end, size, WAL range, status) instead of taking one.
        #[arg(long)]
        list: bool,
        /// With --list: print JSON.
        #[arg(long, requires = "list")]
        json: bool,
    },
    /// The restore drill: on each Barman host, restore the newest backup (or --backup ID) with
    /// all its WAL into a scratch directory, start it on a private socket, check every
    /// database, clean up; report to <dir>/verify-backup/. Fails when any check fails.
    VerifyBackup {
        cluster_dir: PathBuf,
        /// The backup to restore (an id from `backup --list`) instead of the newest.
        #[arg(long)]
        backup: Option<String>,
    },
    /// Point-in-time recovery: restore a Barman backup (the newest, or the newest that ended
    /// before --target-time, or --backup ID) onto a new host (--to NEW_NAME, docker) or an
    /// instance (refused while its Postgres runs unless --force), replay WAL to the target or
    /// to the end of the archive, promote, and print the recovery point reached.
    Restore {
        cluster_dir: PathBuf,
        /// Recover up to this time, e.g. '2026-11-27 10:15:00+00' (the zone is required).
        #[arg(long, conflicts_with_all = ["target_lsn", "target_xid"])]
        target_time: Option<String>,
        /// Recover up to this WAL location, e.g. 0/3000148.
        #[arg(long, conflicts_with = "target_xid")]
        target_lsn: Option<String>,
        /// Recover up to this transaction id (included).
        #[arg(long)]
        target_xid: Option<String>,
        /// The backup to restore (an id from `backup --list`).
        #[arg(long)]
        backup: Option<String>,
        /// The host to restore onto: a new name creates a host; an instance's name restores
        /// over it. Default: the backed-up instance itself.
        #[arg(long)]
        to: Option<String>,
        /// Restore onto a host whose Postgres runs (it is stopped and its data replaced).
        #[arg(long)]
        force: bool,
        /// The backed-up instance, when Barman backs up several.
        #[arg(long)]
        server: Option<String>,
    },
    /// Run a command as root on the selected hosts through their agents, all at once: each
    /// host's output as one block with its exit status; exit 1 when any host failed. No shell
    /// unless you ask for one (`-- sh -c '…'`).
    Cmd {
        cluster_dir: PathBuf,
        /// `all`, a host name, `role:<role>` or `location:<location>`; several separated by
        /// commas.
        hosts: String,
        /// Kill the command (and all it started) after this many seconds (default 600).
        #[arg(long)]
        timeout: Option<u64>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// `ssh -F <dir>/ssh_config <host> [command…]`.
    Ssh {
        cluster_dir: PathBuf,
        host: String,
        /// A command to run instead of a login shell.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Host images for the docker platform.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Print a completion script for a shell on stdout, e.g.
    /// `tpa-controller completions bash > /etc/bash_completion.d/tpa-controller`.
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (tpa-controller.1 and one per command) into a directory; used by
    /// scripts/package.
    #[command(hide = true)]
    Manpages { out_dir: PathBuf },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build tpa/debian:<version> from Debian's archive with debootstrap (needs root).
    Build {
        #[arg(long, default_value = "Debian")]
        os: String,
        #[arg(long, default_value_t = 12)]
        os_version: u32,
        #[arg(long, default_value = tpa_controller::platform::docker::image::DEFAULT_MIRROR)]
        mirror: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TPA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let verbose = cli.verbose;
    let result: anyhow::Result<ExitCode> = runtime.block_on(async {
        // Commands that change the cluster directory or its hosts take turns. Once per process,
        // here: deploy runs provision itself.
        let _lock = match &cli.command {
            Command::Provision { cluster_dir, .. }
            | Command::Deploy { cluster_dir, .. }
            | Command::Deprovision { cluster_dir, .. }
            | Command::StorePassword { cluster_dir, .. }
            | Command::Switchover { cluster_dir, .. }
            | Command::RotateCa { cluster_dir, .. }
            | Command::VerifyBackup { cluster_dir, .. }
            | Command::Restore { cluster_dir, .. }
            | Command::Backup {
                cluster_dir,
                list: false,
                ..
            } => Some(ClusterLock::for_command(cluster_dir)?),
            // Status and backup --list only read: they must not wait for, nor block, a deploy.
            // Configure creates the directory, and refuses an existing one.
            Command::Configure(_) => None,
            Command::DownloadPackages { .. }
            | Command::Status { .. }
            | Command::Test { .. }
            | Command::ShowPassword { .. }
            | Command::ClientCert { .. }
            | Command::Backup { list: true, .. }
            | Command::Cmd { .. }
            | Command::Ssh { .. }
            | Command::Image { .. }
            | Command::Completions { .. }
            | Command::Manpages { .. } => None,
        };
        let done = match cli.command {
            Command::Configure(args) => commands::configure::run(&args),
            Command::Provision {
                cluster_dir,
                mirror,
            } => commands::provision::run(&cluster_dir, mirror.as_deref())
                .await
                .map(|_| ()),
            Command::DownloadPackages {
                cluster_dir,
                os_version,
                mirror,
            } => {
                commands::download_packages::run(&cluster_dir, os_version, mirror.as_deref()).await
            }
            Command::Deploy {
                cluster_dir,
                check,
                forks,
            } => {
                let options = commands::deploy::DeployOptions {
                    check,
                    verbose: verbose > 0,
                    forks,
                };
                match commands::deploy::run(&cluster_dir, &options).await {
                    Ok(commands::deploy::DeployOutcome::Pending { .. }) => {
                        return Ok(ExitCode::from(2));
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Command::Deprovision {
                cluster_dir,
                uninstall,
            } => commands::deprovision::run(&cluster_dir, uninstall).await,
            Command::Status {
                cluster_dir,
                json,
                watch: None,
                ..
            } => return commands::status::run(&cluster_dir, json).await,
            Command::Status {
                cluster_dir,
                json,
                watch: Some(seconds),
                watch_count,
            } => {
                let every = std::time::Duration::from_secs(seconds);
                return commands::status::watch(&cluster_dir, json, every, watch_count).await;
            }
            Command::Test {
                cluster_dir,
                pgbench_seconds,
            } => return commands::test::run(&cluster_dir, pgbench_seconds).await,
            Command::RotateCa {
                cluster_dir,
                old_ca_compromised,
                forks,
            } => commands::rotate_ca::run(&cluster_dir, old_ca_compromised, forks).await,
            Command::ClientCert {
                cluster_dir,
                name,
                out,
            } => commands::client_cert::run(&cluster_dir, &name, &out),
            Command::ShowPassword { cluster_dir, user } => {
                commands::passwords::show(&cluster_dir, &user)
            }
            Command::StorePassword {
                cluster_dir,
                user,
                random,
            } => commands::passwords::store(&cluster_dir, &user, random),
            Command::Switchover {
                cluster_dir,
                instance,
            } => commands::switchover::run(&cluster_dir, &instance).await,
            Command::Backup {
                cluster_dir,
                list,
                json,
            } => commands::backup::run(&cluster_dir, list, json).await,
            Command::VerifyBackup {
                cluster_dir,
                backup,
            } => commands::verify_backup::run(&cluster_dir, backup.as_deref()).await,
            Command::Restore {
                cluster_dir,
                target_time,
                target_lsn,
                target_xid,
                backup,
                to,
                force,
                server,
            } => {
                let options = commands::restore::Options {
                    target_time,
                    target_lsn,
                    target_xid,
                    backup,
                    to,
                    force,
                    server,
                };
                commands::restore::run(&cluster_dir, &options).await
            }
            Command::Cmd {
                cluster_dir,
                hosts,
                timeout,
                command,
            } => return commands::cmd::run(&cluster_dir, &hosts, command, timeout).await,
            Command::Ssh {
                cluster_dir,
                host,
                command,
            } => commands::cmd::ssh(&cluster_dir, &host, &command),
            Command::Image {
                command:
                    ImageCommand::Build {
                        os,
                        os_version,
                        mirror,
                    },
            } => commands::image::build(&os, os_version, &mirror).await,
            // Generated from the parser itself, so they cannot drift from it.
            Command::Completions { shell } => {
                let mut cli = Cli::command();
                clap_complete::generate(shell, &mut cli, "tpa-controller", &mut std::io::stdout());
                Ok(())
            }
            Command::Manpages { out_dir } => std::fs::create_dir_all(&out_dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), &out_dir))
                .with_context(|| format!("writing man pages into {}", out_dir.display())),
        };
        done.map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
