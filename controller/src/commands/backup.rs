//! `tpa-controller backup <dir>`: an on-demand backup of every backed-up instance, and
//! `backup --list <dir> [--json]`: the backups Barman holds. Both run Barman on the Barman
//! hosts as the barman user through each agent's Exec; the commands and the reading of their
//! output live in [`crate::planner::barman`].

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::agent_client::{AgentClient, ExecCommand};
use crate::commands::deployed::Deployed;
use crate::config::{Cluster, Role};
use crate::inventory::Inventory;
use crate::planner::barman::{self, BackupInfo};

/// A backup of a small database takes seconds; a large one, longer than any default.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

pub async fn run(dir: &Path, list: bool, json: bool) -> anyhow::Result<()> {
    let deployed = Deployed::open(dir)?;
    let targets = targets(&deployed.cluster, &deployed.inventory)?;

    let mut backups = Vec::new();
    let mut failures = Vec::new();
    for (host, servers) in targets {
        let mut client = deployed.connect(host).await?;
        for server in servers {
            if list {
                backups.extend(list_server(&mut client, host, server).await?);
            } else if let Err(e) = backup_server(&mut client, host, server).await {
                failures.push(format!("{e:#}"));
            }
        }
        // status reads the newest backup from the agent's health round: renew it now.
        if !list && let Err(e) = client.recheck_health().await {
            tracing::debug!("[{host}] health recheck after the backup: {e:#}");
        }
    }
    if list {
        print_list(&backups, json)?;
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// Each deployed Barman host with the instances it backs up.
fn targets<'a>(
    cluster: &'a Cluster,
    inventory: &Inventory,
) -> anyhow::Result<Vec<(&'a str, Vec<&'a str>)>> {
    let targets: Vec<_> = cluster
        .instances
        .iter()
        .filter(|i| i.has_role(Role::Barman) && !i.provision_only)
        .filter(|i| inventory.host(&i.name).is_some())
        .map(|i| {
            let servers = barman::servers(cluster, &i.name)
                .into_iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>();
            (i.name.as_str(), servers)
        })
        .filter(|(_, servers)| !servers.is_empty())
        .collect();
    if targets.is_empty() {
        bail!(
            "nothing is backed up: add `backup: <host with role barman>` to the primary in \
             config.yml and deploy"
        );
    }
    Ok(targets)
}

async fn barman(
    client: &mut AgentClient,
    host: &str,
    argv: Vec<String>,
    timeout: Duration,
) -> anyhow::Result<String> {
    let shown = argv.join(" ");
    let out = client.exec(as_barman(argv, timeout)).await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.exit_code != 0 {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "[{host}] `{shown}` failed (exit {}):\n{}{}",
            out.exit_code,
            stdout,
            stderr.trim_end()
        );
    }
    Ok(stdout)
}

/// `argv` run as the barman OS user in its home, as Barman's commands expect.
pub(crate) fn as_barman(argv: Vec<String>, timeout: Duration) -> ExecCommand {
    ExecCommand {
        argv,
        env: vec![],
        run_as: Some("barman".into()),
        stdin: vec![],
        cwd: Some(barman::HOME.into()),
        timeout: Some(timeout),
    }
}

async fn backup_server(client: &mut AgentClient, host: &str, server: &str) -> anyhow::Result<()> {
    println!("[{host}] {server}: backup started");
    let started = Instant::now();
    let out = barman(client, host, barman::backup_argv(server), BACKUP_TIMEOUT).await?;
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        println!("[{host}]   {line}");
    }
    println!(
        "[{host}] {server}: backup done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn list_server(
    client: &mut AgentClient,
    host: &str,
    server: &str,
) -> anyhow::Result<Vec<BackupInfo>> {
    let short = Duration::from_secs(60);
    let out = barman(client, host, barman::list_argv(server), short).await?;
    let ids = barman::parse_list(server, &out).map_err(|e| anyhow::anyhow!("[{host}] {e}"))?;
    let mut backups = Vec::new();
    for id in ids {
        let out = barman(client, host, barman::show_argv(server, &id), short).await?;
        backups.push(
            barman::parse_show(server, host, &out).map_err(|e| anyhow::anyhow!("[{host}] {e}"))?,
        );
    }
    Ok(backups)
}

fn print_list(backups: &[BackupInfo], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(backups)?);
        return Ok(());
    }
    if backups.is_empty() {
        println!("no backups yet: run `tpa-controller backup <dir>` or deploy");
        return Ok(());
    }
    let dash = || "-".to_string();
    println!(
        "{:<8} {:<8} {:<16} {:<17} {:<26} {:<26} {:>10} {:<24} {:<24}",
        "SERVER", "BARMAN", "ID", "STATUS", "BEGIN", "END", "SIZE", "BEGIN WAL", "END WAL"
    );
    for b in backups {
        println!(
            "{:<8} {:<8} {:<16} {:<17} {:<26} {:<26} {:>10} {:<24} {:<24}",
            b.server,
            b.barman_host,
            b.id,
            b.status,
            b.begin_time.clone().unwrap_or_else(dash),
            b.end_time.clone().unwrap_or_else(dash),
            b.size_bytes.map(human_size).unwrap_or_else(dash),
            b.begin_wal.clone().unwrap_or_else(dash),
            b.end_wal.clone().unwrap_or_else(dash),
        );
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}
