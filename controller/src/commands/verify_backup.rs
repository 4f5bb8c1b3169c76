//! `tpa-controller verify-backup <dir> [--backup ID]`: the restore drill of every backed-up
//! server, run on its Barman host (the fixed program [`barman_drill::PROGRAM`], as the barman
//! user, through the agent's Exec): restore, start on a private socket, check, clean up. Prints
//! a report, writes it to `<dir>/verify-backup/<timestamp>.json`, and fails, naming the failed
//! checks, when any drill fails.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::agent_client::ExecCommand;
use crate::commands::deployed::Deployed;
use crate::planner::barman::{self, servers};
use crate::planner::barman_drill::{self, DrillResult};
use crate::settings::HostSettings;

/// A restore of a large database takes hours; the drill's own limits are inside it.
const DRILL_TIMEOUT: Duration = Duration::from_secs(8 * 3600);

/// One drill as the report file holds it.
#[derive(Debug, serde::Serialize)]
struct Report {
    barman_host: String,
    /// The wall-clock time of the Exec, from the controller.
    seconds: f64,
    #[serde(flatten)]
    result: DrillResult,
}

pub async fn run(dir: &Path, backup: Option<&str>) -> anyhow::Result<()> {
    if let Some(id) = backup
        && !(id.len() == 15
            && id.chars().enumerate().all(
                |(i, c)| {
                    if i == 8 { c == 'T' } else { c.is_ascii_digit() }
                },
            ))
    {
        bail!("--backup {id:?}: a Barman backup id looks like 20261127T101500 (see backup --list)");
    }
    let deployed = Deployed::open(dir)?;
    let cluster = &deployed.cluster;
    let hosts = deployed.barman_hosts();
    if hosts.is_empty() {
        bail!(
            "nothing is backed up: add `backup: <host with role barman>` to the primary in \
             config.yml and deploy"
        );
    }

    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for host in hosts {
        let mut client = deployed.connect(&host.name).await?;
        let facts = client
            .facts(None, 5432)
            .await
            .with_context(|| format!("[{}] facts", host.name))?;
        let bin_dir = HostSettings::resolve(cluster, host, facts.os_major()).bin_dir;
        for server in servers(cluster, &host.name) {
            println!(
                "[{}] {}: restore drill of backup {} started",
                host.name,
                server.name,
                backup.unwrap_or("latest")
            );
            let started = Instant::now();
            let out = client
                .exec(ExecCommand {
                    argv: barman_drill::argv(server, &bin_dir, backup.unwrap_or("latest")),
                    env: vec![],
                    run_as: Some("barman".into()),
                    stdin: vec![],
                    cwd: Some(barman::HOME.into()),
                    timeout: Some(DRILL_TIMEOUT),
                })
                .await?;
            let seconds = started.elapsed().as_secs_f64();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let result = match barman_drill::parse(&stdout) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!(
                        "[{}] {}: the drill failed (exit {}): {e}: {}",
                        host.name,
                        server.name,
                        out.exit_code,
                        String::from_utf8_lossy(&out.stderr).trim_end()
                    ));
                    continue;
                }
            };
            print_result(&host.name, &result, seconds);
            if !result.passed || out.exit_code != 0 {
                let mut why = result.failures();
                if why.is_empty() {
                    why.push(format!("exit {}", out.exit_code));
                }
                failures.push(format!(
                    "[{}] {}: restore drill failed: {}",
                    host.name,
                    server.name,
                    why.join("; ")
                ));
            }
            reports.push(Report {
                barman_host: host.name.clone(),
                seconds: (seconds * 10.0).round() / 10.0,
                result,
            });
        }
        // status reads the drill's result from the agent's health round: renew it now.
        if let Err(e) = client.recheck_health().await {
            tracing::debug!("[{}] health recheck after the drill: {e:#}", host.name);
        }
    }
    let path = write_report(dir, &reports, &failures)?;
    println!("report: {}", path.display());
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

fn print_result(host: &str, r: &DrillResult, seconds: f64) {
    let dash = || "-".to_string();
    println!(
        "[{host}] {}: backup {} (ended {}, {} old), restored and open in {}, recovery point {} \
         at {}",
        r.server,
        r.backup_id.clone().unwrap_or_else(dash),
        r.backup_end_time.clone().unwrap_or_else(dash),
        r.backup_age_seconds
            .map(|s| format!("{s} s"))
            .unwrap_or_else(dash),
        r.restore_seconds
            .map(|s| format!("{s:.1} s"))
            .unwrap_or_else(dash),
        r.recovery_lsn.clone().unwrap_or_else(dash),
        r.recovery_time
            .clone()
            .unwrap_or_else(|| "(no transaction replayed)".into()),
    );
    for c in &r.checks {
        println!(
            "[{host}]   {:<4} {}: {}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    println!(
        "[{host}] {}: drill {} in {seconds:.1} s",
        r.server,
        if r.passed { "passed" } else { "FAILED" }
    );
}

/// `<dir>/verify-backup/<UTC timestamp>.json`: every drill's result and the failures.
fn write_report(
    dir: &Path,
    reports: &[Report],
    failures: &[String],
) -> anyhow::Result<std::path::PathBuf> {
    let out = dir.join("verify-backup");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let stamp = crate::cluster_dir::utc_stamp(time::OffsetDateTime::now_utc());
    let path = out.join(format!("{stamp}.json"));
    let body = serde_json::json!({
        "passed": failures.is_empty(),
        "failures": failures,
        "drills": reports,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&body)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
