//! `tpa-controller restore <dir> [--target-time T | --target-lsn L | --target-xid X]
//! [--backup ID] [--to HOST [--force]] [--server NAME]`: point-in-time recovery of a Barman
//! backup onto a host, started, promoted and reported.
//!
//! - The destination: a new host (`--to NEW_NAME`, docker: created on the cluster's network
//!   like provision does, deployed as a lone Postgres host of the cluster, recorded in
//!   inventory.json as restored), or an instance or restored host that exists (refused while
//!   its Postgres runs, unless `--force`). Every argument and that refusal come before
//!   anything is changed.
//! - The restore: `barman recover` as the barman user on the Barman host (through its agent),
//!   over the SSH trust of planner/ssh_trust.rs (the new host is pinned first), WAL copied
//!   into the data directory (`--no-get-wal`: the restored server needs nothing of Barman's
//!   once started), after a WAL switch so that the last writes are in the archive.
//! - Then postgres.service starts it; recovery runs to the target and promotes; the recovery
//!   point comes from the server (last replayed transaction's time and LSN, and the log's
//!   "recovery stopping" line).
//!
//! The restored data directory is the source's, configuration included (pg_hba, conf.d,
//! roles and their passwords); its TLS certificate is the destination host's own, at the
//! same path.

mod args;

use crate::orchestrator::DEFAULT_FORKS;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tpa_common::event::Outcome;
use tpa_common::query::SqlQuery;
use tpa_common::resource::{File, Resource, ResourceSpec};

pub use args::Target;
use args::{
    check_backup_id, check_host_name, choose_backup, recover_argv, stop_line, switch_wal_argv,
};

use crate::agent_client::{AgentClient, ApplyMode, ExecCommand};
use crate::cluster_dir::{self, write_if_changed};
use crate::commands::backup::as_barman;
use crate::commands::deployed::Deployed;
use crate::config::{Instance, Role};
use crate::deploy::{self, DeployLog, Gathered};
use crate::inventory::{Host, Inventory};
use crate::orchestrator::StageStatus;
use crate::planner::barman::{self, BackupInfo};
use crate::planner::{self, ClusterState, PlanInput, StageName, ssh_trust};
use crate::platform::{Platform as _, ProvisionRequest};
use crate::settings::PostgresSettings;

/// A restore of a large database takes hours.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(8 * 3600);
/// Replaying WAL to the target, after the copy.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(3600);

/// The command line, as given.
#[derive(Debug, Default)]
pub struct Options {
    pub target_time: Option<String>,
    pub target_lsn: Option<String>,
    pub target_xid: Option<String>,
    pub backup: Option<String>,
    pub to: Option<String>,
    pub force: bool,
    pub server: Option<String>,
}

/// Where the backup goes.
enum Destination {
    /// A host `restore` creates now.
    New,
    /// An instance of config.yml, or a host an earlier restore created.
    Existing,
}

pub async fn run(dir: &Path, o: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let target = Target::from_options(
        o.target_time.as_deref(),
        o.target_lsn.as_deref(),
        o.target_xid.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("{e}: nothing was changed"))?;
    if let Some(id) = &o.backup {
        check_backup_id(id).map_err(anyhow::Error::msg)?;
    }
    if let Some(to) = &o.to {
        check_host_name(to).map_err(anyhow::Error::msg)?;
    }
    let mut deployed = Deployed::open(dir)?;
    let (barman_host, server) = source(&deployed, o.server.as_deref())?;
    let to = o.to.clone().unwrap_or_else(|| server.clone());
    let (destination, instance) = destination(&deployed, &to, &server)?;
    let pg = PostgresSettings::resolve(&deployed.cluster.name, &instance.vars);

    if let Destination::Existing = destination {
        let mut client = deployed.connect(&to).await?;
        let facts = client.facts(Some(&pg.data_dir), pg.port).await?;
        if let Some(p) = facts.postgres.as_ref().filter(|p| p.running)
            && !o.force
        {
            let role = match p.in_recovery {
                Some(true) => "a replica",
                Some(false) => "a primary",
                None => "a server",
            };
            bail!(
                "{to} runs Postgres as {role} (data directory {}): restoring there would replace \
                 its data; stop it, or pass --force to stop it and restore over it, or restore \
                 to a new host with --to NEW_NAME. Nothing was changed",
                pg.data_dir
            );
        }
    }

    let mut barman_client = deployed.connect(&barman_host).await?;
    let backups = list_backups(&mut barman_client, &barman_host, &server).await?;
    let backup = choose_backup(&backups, &target, o.backup.as_deref())
        .map_err(|e| anyhow::anyhow!("{e}. Nothing was changed"))?
        .clone();
    println!(
        "[{barman_host}] {server}: restoring backup {} (ended {}) onto {to}, recovery to {}",
        backup.id,
        backup.end_time.as_deref().unwrap_or("?"),
        target.describe()
    );

    if let Destination::New = destination {
        create_host(&deployed, &instance, &server).await?;
        deployed = Deployed::open(dir)?;
    }
    let address = deployed.host(&to)?.address.to_string();
    trust(&mut deployed, &barman_host, &instance).await?;

    let mut client = deployed.connect(&to).await?;
    let phase = Instant::now();
    root(&mut client, &to, &["systemctl", "stop", "postgres.service"]).await?;
    root(
        &mut client,
        &to,
        &["find", &pg.data_dir, "-mindepth", "1", "-delete"],
    )
    .await?;

    // The newest WAL is still in receive-wal's partial segment: have it switched and archived.
    let switch = switch_wal_argv(&server);
    let out = barman_client
        .exec(as_barman(switch, Duration::from_secs(120)))
        .await?;
    if out.exit_code != 0 {
        println!(
            "[{barman_host}] warning: barman switch-wal failed (is {server} down?); WAL after \
             the last archived segment cannot be replayed: {}",
            last_lines(&out.stdout, &out.stderr)
        );
    }
    let argv = recover_argv(&server, &backup.id, &pg.data_dir, &address, &target);
    let out = barman_client.exec(as_barman(argv, RECOVER_TIMEOUT)).await?;
    if out.exit_code != 0 {
        bail!(
            "[{barman_host}] barman recover of {server} backup {} onto {to} failed (exit {}): \
             {}\n{to}'s Postgres is stopped with a partial data directory: fix the cause and \
             run restore again with --force",
            backup.id,
            out.exit_code,
            last_lines(&out.stdout, &out.stderr)
        );
    }
    println!(
        "[{barman_host}] barman recover: {:.1}s",
        phase.elapsed().as_secs_f64()
    );

    // The configuration is the source's: only the name the server reports is this host's, and
    // a copy never archives into the source's catalogue (barman_archiver's archive_command
    // came with the backup).
    let mut files = vec![restored_conf(&pg.data_dir, &to, to != server)];
    if target == Target::End {
        // Barman leaves WAL in pg_wal for a crash recovery on the old timeline when there is
        // no target; archive recovery instead replays it all and starts a new timeline (and
        // the restore_command from the backup's conf.d can still fetch newer WAL).
        files.push(owned_file(
            &format!("{}/recovery.signal", pg.data_dir),
            String::new(),
            0o600,
        ));
    }
    apply(&mut client, &to, files).await?;

    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A failed start (a target recovery cannot reach) is reported with the log below.
    let _ = root(
        &mut client,
        &to,
        &["systemctl", "start", "postgres.service"],
    )
    .await;
    wait_for_promotion(&mut client, &to, pg.port, since).await?;
    let point = client
        .query(SqlQuery::postgres(pg.port, RECOVERY_POINT_SQL))
        .await?;
    let row = point.first().cloned().unwrap_or_default();
    let field = |i: usize| row.get(i).filter(|v| !v.is_empty()).cloned();
    let journal = journal(&mut client, since).await;
    if let Some(line) = stop_line(&journal) {
        println!("[{to}] {line}");
    }
    println!(
        "[{to}] recovered to {}, LSN {}, timeline {}: open read-write on {address}:{} \
         (restore took {:.1}s)",
        field(0).unwrap_or_else(|| "(no transaction replayed)".into()),
        field(1).unwrap_or_else(|| "?".into()),
        field(2).unwrap_or_else(|| "?".into()),
        pg.port,
        started.elapsed().as_secs_f64()
    );
    if let Destination::New = destination {
        println!(
            "{to} is not a member of the cluster: deploy, switchover and status leave it alone, \
             deprovision removes it. Connect with sslmode=verify-full sslrootcert={}/ca.crt",
            dir.display()
        );
    }
    Ok(())
}

const RESTORED_CONF: &str = "9990-tpa_restored.conf";

/// The last replayed transaction's time (in UTC) and LSN, and the timeline now (the
/// checkpoint's lags behind a promotion).
const RECOVERY_POINT_SQL: &str = "select coalesce((pg_last_xact_replay_timestamp() at time zone \
    'UTC')::text || '+00', ''), coalesce(pg_last_wal_replay_lsn()::text, ''), \
    ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text";

/// The Barman host and server to restore from: `--server`, else the only backed-up one.
fn source(deployed: &Deployed, wanted: Option<&str>) -> anyhow::Result<(String, String)> {
    let cluster = &deployed.cluster;
    let mut pairs = Vec::new();
    for b in cluster
        .instances
        .iter()
        .filter(|i| i.has_role(Role::Barman) && !i.provision_only)
        .filter(|i| deployed.inventory.host(&i.name).is_some())
    {
        for s in barman::servers(cluster, &b.name) {
            pairs.push((b.name.clone(), s.name.clone()));
        }
    }
    if pairs.is_empty() {
        bail!(
            "nothing is backed up in this cluster: no deployed host with role barman backs up an \
             instance (add `backup: <barman host>` to the primary in config.yml and deploy)"
        );
    }
    let names = || {
        pairs
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(w) => pairs
            .iter()
            .find(|(_, s)| s == w)
            .cloned()
            .with_context(|| format!("--server {w}: Barman backs up {} only", names())),
        None if pairs.len() == 1 => Ok(pairs.remove(0)),
        None => bail!("Barman backs up {}: say which with --server", names()),
    }
}

/// What `to` is, and the instance whose settings (data directory, port, image) it has.
fn destination(
    deployed: &Deployed,
    to: &str,
    server: &str,
) -> anyhow::Result<(Destination, Instance)> {
    let cluster = &deployed.cluster;
    if let Some(i) = cluster.instance(to) {
        if i.provision_only || deployed.inventory.host(to).is_none() {
            bail!("--to {to}: that instance is not deployed. Nothing was changed");
        }
        if !i
            .roles
            .iter()
            .any(|r| matches!(r, Role::Primary | Role::Replica))
        {
            bail!(
                "--to {to}: that instance has no Postgres role (primary or replica), so no \
                 postgres.service to restore into. Nothing was changed"
            );
        }
        return Ok((Destination::Existing, i.clone()));
    }
    let source = cluster
        .instance(server)
        .with_context(|| format!("{server} is not in config.yml"))?;
    if let Some(h) = deployed.inventory.host(to) {
        if h.restored_from.is_none() {
            bail!("--to {to}: inventory.json has a host of that name. Nothing was changed");
        }
        return Ok((
            Destination::Existing,
            restored_instance(deployed, source, to),
        ));
    }
    if deployed.inventory.platform != crate::config::Platform::Docker {
        bail!("--to {to}: only the docker platform can create a host; restore to an instance");
    }
    Ok((Destination::New, restored_instance(deployed, source, to)))
}

/// The restored host as an instance: the source's settings, a lone primary, backed up by
/// nobody, with the next free node number.
fn restored_instance(deployed: &Deployed, source: &Instance, name: &str) -> Instance {
    let node = deployed
        .cluster
        .instances
        .iter()
        .map(|i| i.node)
        .chain(deployed.inventory.hosts.iter().map(|h| h.node))
        .max()
        .unwrap_or(0)
        + 1;
    let mut i = source.clone();
    i.name = name.to_string();
    i.node = deployed.inventory.host(name).map_or(node, |h| h.node);
    i.roles = vec![Role::Primary, Role::Postgres];
    i.upstream = None;
    i.backup = vec![];
    i.ip_address = None;
    i.provision_only = false;
    i
}

/// Creates the host, records it in inventory.json (with the files provision writes from
/// it), and deploys it as the lone Postgres host of a copy of the cluster: packages, the
/// data directory layout, postgres.service and its own TLS certificate.
async fn create_host(deployed: &Deployed, instance: &Instance, server: &str) -> anyhow::Result<()> {
    let phase = Instant::now();
    let dir = &deployed.dir;
    let key_path = dir.ssh_key(&deployed.cluster.name);
    let public_key = std::fs::read_to_string(key_path.with_extension("pub"))
        .with_context(|| format!("reading {}.pub", key_path.display()))?;
    let say = |line: &str| println!("{line}");
    let request = ProvisionRequest {
        cluster: &deployed.cluster,
        dir,
        previous: Some(&deployed.inventory),
        public_key: &public_key,
        say: &say,
    };
    let mut host: Host = deployed.platform.add_host(&request, instance).await?;
    host.restored_from = Some(server.to_string());
    host.roles = vec!["restored".into()];
    println!(
        "[{}] created at {} ({:.1}s)",
        host.name,
        host.address,
        phase.elapsed().as_secs_f64()
    );
    let mut inventory: Inventory = deployed.inventory.clone();
    inventory.hosts.push(host);
    for (path, content) in [
        (dir.inventory(), inventory.to_json()),
        (
            dir.ssh_config(),
            cluster_dir::render_ssh_config(dir, &inventory),
        ),
        (
            dir.known_hosts(),
            cluster_dir::render_known_hosts(&inventory.hosts),
        ),
    ] {
        write_if_changed(&path, &content)?;
    }

    let mut cluster = deployed.cluster.clone();
    cluster.instances = vec![instance.clone()];
    let mut log = DeployLog::start(&cluster.name, false);
    let apt_keys = crate::apt_keys::load(dir.root(), &cluster, false).await?;
    let Gathered { agents, state } = deploy::gather(
        dir,
        &cluster,
        &inventory,
        apt_keys,
        false,
        DEFAULT_FORKS,
        &mut log,
    )
    .await
    .with_context(|| format!("preparing {}", instance.name))?;
    let mut plan = planner::plan(&PlanInput {
        cluster: &cluster,
        inventory: &inventory,
        state: &state,
    })
    .map_err(|errors| {
        anyhow::anyhow!("cannot plan {}:\n  {}", instance.name, errors.join("\n  "))
    })?;
    // Roles and their passwords come with the backup.
    for stages in plan.hosts.values_mut() {
        stages.retain(|s| s.name != StageName::PostgresUsers);
    }
    let reports = deploy::run::apply(&plan, &agents, false, false, DEFAULT_FORKS).await;
    let failed: Vec<String> = reports
        .iter()
        .filter_map(|r| match &r.status {
            StageStatus::Done => None,
            StageStatus::Failed(id, msg) => {
                Some(format!("{} {}: {id}: {msg}", r.host, r.stage.as_str()))
            }
            StageStatus::Error(msg) | StageStatus::Skipped(msg) => {
                Some(format!("{} {}: {msg}", r.host, r.stage.as_str()))
            }
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "preparing {} failed:\n  {}\nit is recorded in inventory.json: fix the cause and run \
             restore again with --to {} --force, or deprovision",
            instance.name,
            failed.join("\n  "),
            instance.name
        );
    }
    println!(
        "[{}] Postgres installed and configured ({:.1}s)",
        instance.name,
        phase.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The SSH trust `barman recover` needs, as deploy plans it for the current inventory: the
/// Barman host's known_hosts pins the destination, and the destination admits the barman key.
async fn trust(
    deployed: &mut Deployed,
    barman_host: &str,
    destination: &Instance,
) -> anyhow::Result<()> {
    let name = &deployed.cluster.name;
    let mut pair = |secret: &str, user: &str| -> anyhow::Result<ssh_trust::KeyPair> {
        let p = deployed
            .secrets
            .ssh_key_or_generate(secret, &format!("{user}@{name}"), true)?
            .with_context(|| {
                format!("the secrets store has no {secret}: run deploy first (it makes the keys)")
            })?;
        Ok(ssh_trust::KeyPair {
            private: tpa_common::resource::Secret::new(p.private.to_string()),
            public: p.public,
        })
    };
    let keys = ssh_trust::SshKeys {
        barman: pair(ssh_trust::BARMAN_KEY_SECRET, "barman")?,
        postgres: pair(ssh_trust::POSTGRES_KEY_SECRET, "postgres")?,
    };
    let state = ClusterState {
        ssh_keys: Some(keys),
        ..Default::default()
    };
    let input = PlanInput {
        cluster: &deployed.cluster,
        inventory: &deployed.inventory,
        state: &state,
    };
    let barman_instance = deployed
        .cluster
        .instance(barman_host)
        .context("the Barman host is in config.yml")?;
    let barman_side =
        ssh_trust::barman_host(&input, barman_instance).map_err(anyhow::Error::msg)?;
    let postgres_side =
        ssh_trust::postgres_host(&input, destination).map_err(anyhow::Error::msg)?;
    for (host, resources) in [
        (barman_host, barman_side),
        (destination.name.as_str(), postgres_side),
    ] {
        let mut client = deployed.connect(host).await?;
        apply(&mut client, host, resources).await?;
    }
    Ok(())
}

async fn apply(
    client: &mut AgentClient,
    host: &str,
    resources: Vec<ResourceSpec>,
) -> anyhow::Result<()> {
    let result = client.apply(resources, ApplyMode::Apply).await?;
    let failed: Vec<String> = result
        .events
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Failed))
        .map(|e| format!("{}: {}", e.id, e.message))
        .collect();
    if !failed.is_empty() {
        bail!("[{host}] {}", failed.join("; "));
    }
    Ok(())
}

/// `conf.d/9990-tpa_restored.conf`: `cluster_name` (in ps and the log) is the destination's
/// host name, not the source's; on a copy (`copy`: not the backed-up instance itself),
/// archiving off; operators' `9999-override.conf` still wins.
fn restored_conf(data_dir: &str, host: &str, copy: bool) -> ResourceSpec {
    // A checked host name: letters, digits and `-` only.
    let archive = if copy { "archive_mode = off\n" } else { "" };
    owned_file(
        &format!("{data_dir}/conf.d/{RESTORED_CONF}"),
        format!("# Written by tpa-controller restore.\ncluster_name = '{host}'\n{archive}"),
        0o644,
    )
}

fn owned_file(path: &str, content: String, mode: u32) -> ResourceSpec {
    ResourceSpec {
        id: format!("file:{path}"),
        kind: Resource::File(File {
            path: path.to_string(),
            content: content.into(),
            owner: "postgres".into(),
            group: "postgres".into(),
            mode,
            secret: false,
        }),
    }
}

/// Runs `argv` as root on `host`; a non-zero exit is an error with its output.
async fn root(client: &mut AgentClient, host: &str, argv: &[&str]) -> anyhow::Result<String> {
    let out = client
        .exec(ExecCommand {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            run_as: None,
            stdin: vec![],
            cwd: None,
            timeout: Some(Duration::from_secs(600)),
        })
        .await?;
    if out.exit_code != 0 {
        bail!(
            "[{host}] `{}` failed (exit {}): {}",
            argv.join(" "),
            out.exit_code,
            last_lines(&out.stdout, &out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Postgres's journal on the host since `since` (Unix seconds); empty when unreadable.
async fn journal(client: &mut AgentClient, since: u64) -> String {
    let since = format!("@{}", since.saturating_sub(1));
    root(
        client,
        "",
        &[
            "journalctl",
            "--unit",
            "postgres.service",
            "--since",
            &since,
            "--output",
            "cat",
            "--no-pager",
        ],
    )
    .await
    .unwrap_or_default()
}

/// Waits until the server answers and is out of recovery; fails with the log's last lines
/// when the service stops (a target recovery could not reach, say).
async fn wait_for_promotion(
    client: &mut AgentClient,
    host: &str,
    port: u16,
    since: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    loop {
        let answer = client
            .query(SqlQuery::postgres(port, "select pg_is_in_recovery()::text"))
            .await;
        if let Ok(rows) = &answer
            && rows.first().and_then(|r| r.first()).map(String::as_str) == Some("false")
        {
            return Ok(());
        }
        let active = root(
            client,
            host,
            &["systemctl", "is-active", "postgres.service"],
        )
        .await;
        let stopped = matches!(&active, Err(e) if !e.to_string().contains("activating"));
        if stopped || Instant::now() > deadline {
            let log = journal(client, since).await;
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            bail!(
                "[{host}] Postgres did not finish recovery{}:\n  {}",
                if stopped {
                    " (postgres.service stopped)"
                } else {
                    " in time"
                },
                tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn list_backups(
    client: &mut AgentClient,
    host: &str,
    server: &str,
) -> anyhow::Result<Vec<BackupInfo>> {
    let short = Duration::from_secs(60);
    let run = |argv| as_barman(argv, short);
    let out = client.exec(run(barman::list_argv(server))).await?;
    if out.exit_code != 0 {
        bail!(
            "[{host}] barman list-backups {server}: {}",
            last_lines(&out.stdout, &out.stderr)
        );
    }
    let ids = barman::parse_list(server, &String::from_utf8_lossy(&out.stdout))
        .map_err(|e| anyhow::anyhow!("[{host}] {e}"))?;
    let mut backups = Vec::new();
    for id in ids {
        let out = client.exec(run(barman::show_argv(server, &id))).await?;
        backups.push(
            barman::parse_show(server, host, &String::from_utf8_lossy(&out.stdout))
                .map_err(|e| anyhow::anyhow!("[{host}] {e}"))?,
        );
    }
    Ok(backups)
}

fn last_lines(stdout: &[u8], stderr: &[u8]) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(6)..].join(" / ")
}
