//! `tpa-controller test <dir> [--pgbench-seconds N]`: TPA's `tpaexec test` (reference §9),
//! fast. Every check runs through the agents, all hosts at once:
//!
//! - the live state `status` gathers: every host up, every replica streaming, one primary;
//!   each Barman host's `barman check` of every server it backs up, and its last restore
//!   drill when one ran;
//! - pg_control on each Postgres host in the state its live role implies;
//! - repmgr: `node check` on the primary and replicas, `node status` on every registered
//!   node (the witness included), `cluster show` on the live primary;
//! - the application user (the first `postgres_users` entry that is no superuser) connects to
//!   every Postgres host from this machine with TLS `verify-full` against the cluster CA, as
//!   an application does;
//! - a row written on the live primary (table `tpa_test_writes` in database `postgres`) is
//!   seen on every streaming replica within [`WRITE_BOUND`];
//! - with `--pgbench-seconds N`: `pgbench -i` on the primary, then N seconds of read-write
//!   pgbench there and read-only pgbench on every replica, at the same time.
//!
//! Each command's output goes to `<dir>/test/<timestamp>/<host>/<file>`, the checks to
//! `<dir>/test/<timestamp>/report.json`. Exit status 1 when any check fails.

mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tpa_common::query::SqlQuery;

use self::report::{Check, Report};
use crate::agent_client::{AgentClient, ExecCommand};
use crate::commands::deployed::Deployed;
use crate::commands::status::{self, HostStatus};
use crate::config::Role;
use crate::planner::repmgr;
use crate::secrets::password_key;
use crate::settings::HostSettings;

/// How long a replica may take to show a row written on the primary.
pub const WRITE_BOUND: Duration = Duration::from_secs(10);

/// Transactions per second of each replica's read-only pgbench (`-R`).
const REPLICA_READ_RATE: &str = "200";

/// The table the write check uses, in database `postgres`.
const WRITES_TABLE: &str = "tpa_test_writes";

/// One Postgres host, connected, with its settings and live status.
struct Node<'a> {
    status: &'a HostStatus,
    client: AgentClient,
    settings: HostSettings,
}

pub async fn run(dir: &Path, pgbench_seconds: Option<u32>) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let started_at = time::OffsetDateTime::now_utc();
    let deployed = Deployed::open(dir)?;
    let out_dir = dir
        .join("test")
        .join(crate::cluster_dir::utc_stamp(started_at));

    let t = Instant::now();
    // Live checks: every agent runs its health checks now (barman check included), so a
    // fault from a moment ago is not hidden by a cached round.
    let hosts = status::gather(&deployed, true).await;
    let problems = status::problems(&hosts);
    let mut checks = report::from_status(&hosts, &problems, t.elapsed().as_secs_f64());

    let (mut nodes, unreachable) = connect(&deployed, &hosts).await;
    checks.extend(unreachable);
    let files = std::sync::Mutex::new(Vec::<(PathBuf, String)>::new());
    let per_host = futures_util::future::join_all(
        nodes
            .iter_mut()
            .map(|node| host_checks(node, &out_dir, &files)),
    )
    .await;
    checks.extend(per_host.into_iter().flatten());
    checks.extend(application_user(&deployed, &hosts).await);

    if let Some(seconds) = pgbench_seconds {
        checks.extend(pgbench(&mut nodes, seconds, &out_dir, &files).await);
    }
    checks.extend(writes_reach_replicas(&mut nodes).await);

    let report = Report {
        cluster: deployed.cluster.name.clone(),
        started_at: crate::cluster_dir::utc_stamp(started_at),
        seconds: started.elapsed().as_secs_f64(),
        passed: checks.iter().all(|c| c.ok),
        checks,
    };
    print!("{}", report::render(&report.checks));
    let files = files.into_inner().unwrap_or_else(|p| p.into_inner());
    write_report(&out_dir, &report, &files)?;
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("[{}] {}", c.host, c.name))
        .collect();
    if failed.is_empty() {
        println!(
            "test passed: {} checks in {:.1}s; report in {}",
            report.checks.len(),
            report.seconds,
            out_dir.display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "test FAILED: {} of {} checks failed ({}); report in {}",
            failed.len(),
            report.checks.len(),
            failed.join(", "),
            out_dir.display()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Connects to every Postgres host that is up, with its settings (from its facts). A host
/// status already reports as down is not asked again; one that fails here is a failed check.
async fn connect<'a>(deployed: &Deployed, hosts: &'a [HostStatus]) -> (Vec<Node<'a>>, Vec<Check>) {
    let wanted = hosts.iter().filter(|h| {
        report::expected_state(&h.role).is_some()
            && deployed
                .cluster
                .instance(&h.host)
                .is_some_and(|i| i.has_role(Role::Postgres))
    });
    let tried = futures_util::future::join_all(wanted.map(|status| async move {
        let t = Instant::now();
        let connected = async {
            let mut client = deployed.connect(&status.host).await?;
            let facts = client.facts(None, 5432).await?;
            let instance = deployed
                .cluster
                .instance(&status.host)
                .context("not in config.yml")?;
            let settings = HostSettings::resolve(&deployed.cluster, instance, facts.os_major());
            anyhow::Ok(Node {
                status,
                client,
                settings,
            })
        };
        connected.await.map_err(|e| {
            Check::new(
                &status.host,
                "agent",
                false,
                format!("{e:#}"),
                t.elapsed().as_secs_f64(),
            )
        })
    }))
    .await;
    let mut nodes = Vec::new();
    let mut failed = Vec::new();
    for t in tried {
        match t {
            Ok(node) => nodes.push(node),
            Err(check) => failed.push(check),
        }
    }
    (nodes, failed)
}

/// pg_control's state, and repmgr's own checks on a registered node.
async fn host_checks(
    node: &mut Node<'_>,
    out_dir: &Path,
    files: &std::sync::Mutex<Vec<(PathBuf, String)>>,
) -> Vec<Check> {
    let host = node.status.host.clone();
    let keep = |file: &str, text: &str| {
        if let Ok(mut f) = files.lock() {
            f.push((out_dir.join(&host).join(file), text.to_string()));
        }
    };
    let mut checks = Vec::new();

    let t = Instant::now();
    let argv = vec![
        format!("{}/pg_controldata", node.settings.bin_dir),
        "-D".into(),
        node.settings.postgres.data_dir.clone(),
    ];
    let expected = report::expected_state(&node.status.role).unwrap_or_default();
    let check = match exec(&mut node.client, argv, "postgres").await {
        Ok((0, out)) => {
            keep("pg_controldata", &out);
            let state = report::controldata_state(&out).unwrap_or("not reported");
            let ok = state == expected;
            let detail = if ok {
                format!("{state} ({})", node.status.role)
            } else {
                format!("{state}, but a {} is {expected}", node.status.role)
            };
            Check::new(&host, "pg_control", ok, detail, t.elapsed().as_secs_f64())
        }
        Ok((code, out)) => failed(&host, "pg_control", code, &out, t),
        Err(e) => Check::new(&host, "pg_control", false, e, t.elapsed().as_secs_f64()),
    };
    checks.push(check);

    let registered = node.status.repmgr.as_ref().is_some_and(|r| r.registered);
    if registered {
        let conf = repmgr::conf_path(&node.settings);
        let mut commands = vec![("node status", "repmgr-node-status")];
        if node.status.role != "witness" {
            commands.push(("node check", "repmgr-node-check"));
        }
        if node.status.role == "primary" {
            commands.push(("cluster show", "repmgr-cluster-show"));
        }
        for (what, file) in commands {
            let t = Instant::now();
            let mut argv = vec![
                format!("{}/repmgr", node.settings.bin_dir),
                "-f".into(),
                conf.clone(),
            ];
            argv.extend(what.split(' ').map(str::to_string));
            let name = format!("repmgr {what}");
            let check = match exec(&mut node.client, argv, "postgres").await {
                Ok((0, out)) => {
                    keep(file, &out);
                    let summary = out
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .count()
                        .to_string();
                    Check::new(
                        &host,
                        &name,
                        true,
                        format!("exit 0 ({summary} lines)"),
                        t.elapsed().as_secs_f64(),
                    )
                }
                Ok((code, out)) => {
                    keep(file, &out);
                    failed(&host, &name, code, &out, t)
                }
                Err(e) => Check::new(&host, &name, false, e, t.elapsed().as_secs_f64()),
            };
            checks.push(check);
        }
    }
    checks
}

/// The application user connects to every Postgres host that is up, from this machine, with
/// `sslmode=verify-full` against the cluster's `ca.crt`, and sees its session encrypted.
async fn application_user(deployed: &Deployed, hosts: &[HostStatus]) -> Vec<Check> {
    let Some(primary) = hosts.iter().find(|h| h.role == "primary") else {
        return vec![];
    };
    let Some(instance) = deployed.cluster.instance(&primary.host) else {
        return vec![];
    };
    let Some((user, database)) = report::application_user(&instance.vars) else {
        return vec![Check::new(
            "cluster",
            "application user",
            true,
            "skipped: config.yml has no postgres_users entry that is no superuser",
            0.0,
        )];
    };
    let Some(password) = deployed.secrets.get(&password_key(&user)) else {
        return vec![Check::new(
            "cluster",
            "application user",
            false,
            format!("no password stored for {user}: deploy, or store-password {user}"),
            0.0,
        )];
    };
    let ca = deployed.dir.root().join("ca.crt");
    let connections = hosts
        .iter()
        .filter(|h| matches!(h.role.as_str(), "primary" | "replica"))
        .filter_map(|h| Some((h, deployed.inventory.host(&h.host)?)))
        .map(|(h, inv)| {
            let port = deployed
                .cluster
                .instance(&h.host)
                .map_or(5432, |i| i.vars.postgres_port());
            let conninfo = format!(
                "host={} port={port} dbname={database} user={user} sslmode=verify-full \
                 sslrootcert={} connect_timeout=5",
                inv.address,
                ca.display()
            );
            let password = password.to_string();
            let host = h.host.clone();
            let (user, database) = (&user, &database);
            async move {
                let t = Instant::now();
                let out = crate::process::tokio_command("psql")
                    .args(["-XAtq", "-d", &conninfo, "-c"])
                    .arg("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
                    .env("PGPASSWORD", &password)
                    .kill_on_drop(true)
                    .output()
                    .await;
                let secs = t.elapsed().as_secs_f64();
                let name = format!("{user} over TLS verify-full");
                match out {
                    Ok(o)
                        if o.status.success()
                            && String::from_utf8_lossy(&o.stdout).trim() == "t" =>
                    {
                        Check::new(&host, &name, true, format!("connected to {database}"), secs)
                    }
                    Ok(o) => Check::new(
                        &host,
                        &name,
                        false,
                        last_lines(&format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )),
                        secs,
                    ),
                    Err(e) => Check::new(
                        &host,
                        &name,
                        false,
                        format!("cannot run psql on this machine ({e}): install postgresql-client"),
                        secs,
                    ),
                }
            }
        });
    futures_util::future::join_all(connections).await
}

/// A row written on the live primary is seen on every streaming replica within
/// [`WRITE_BOUND`]; the row is deleted afterwards (rows older than a day too, from runs that
/// were interrupted).
async fn writes_reach_replicas(nodes: &mut [Node<'_>]) -> Vec<Check> {
    let Some(p) = nodes.iter().position(|n| n.status.role == "primary") else {
        return vec![];
    };
    let token = format!("{:016x}", rand::random::<u64>());
    let write = format!(
        "create table if not exists {WRITES_TABLE} (token text primary key, \
         written_at timestamptz not null default now()); \
         delete from {WRITES_TABLE} where written_at < now() - interval '1 day'; \
         insert into {WRITES_TABLE} (token) values ('{token}');"
    );
    let primary = &mut nodes[p];
    let t = Instant::now();
    let port = primary.settings.postgres.port;
    let primary_host = primary.status.host.clone();
    if let Err(e) = primary.client.query(SqlQuery::postgres(port, write)).await {
        return vec![Check::new(
            &primary_host,
            "write",
            false,
            format!("{e:#}"),
            t.elapsed().as_secs_f64(),
        )];
    }
    let written = Instant::now();
    let mut checks = vec![Check::new(
        &primary_host,
        "write",
        true,
        format!("row {token} written to {WRITES_TABLE}"),
        t.elapsed().as_secs_f64(),
    )];
    let seen = format!("select count(*) from {WRITES_TABLE} where token = '{token}'");
    let replicas = nodes
        .iter_mut()
        .filter(|n| n.status.role == "replica" && n.status.state == "streaming")
        .map(|n| {
            let seen = seen.clone();
            async move {
                let port = n.settings.postgres.port;
                loop {
                    // Until the table itself has replayed, the query fails: not seen yet.
                    let rows = n.client.query(SqlQuery::postgres(port, seen.clone())).await;
                    let waited = written.elapsed();
                    if rows
                        .is_ok_and(|r| r.first().and_then(|r| r.first()).is_some_and(|v| v == "1"))
                    {
                        return Check::new(
                            &n.status.host,
                            "write seen",
                            true,
                            format!("after {:.0} ms", waited.as_secs_f64() * 1000.0),
                            waited.as_secs_f64(),
                        );
                    }
                    if waited > WRITE_BOUND {
                        return Check::new(
                            &n.status.host,
                            "write seen",
                            false,
                            format!(
                                "the row written on the primary was not seen within {} s",
                                WRITE_BOUND.as_secs()
                            ),
                            waited.as_secs_f64(),
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    checks.extend(futures_util::future::join_all(replicas).await);
    let cleanup = format!("delete from {WRITES_TABLE} where token = '{token}'");
    let _ = nodes[p]
        .client
        .query(SqlQuery::postgres(port, cleanup))
        .await;
    checks
}

/// `pgbench -i` on the live primary, then `seconds` of read-write pgbench there and of
/// read-only pgbench (`-S`) on every streaming replica, at the same time (TPA runs 180 s).
/// The replicas' reads are paced ([`REPLICA_READ_RATE`]): unpaced, they took every CPU of a small
/// machine running the whole cluster and starved the primary's commits, whose figure is the one
/// that says whether the cluster takes writes.
async fn pgbench(
    nodes: &mut [Node<'_>],
    seconds: u32,
    out_dir: &Path,
    files: &std::sync::Mutex<Vec<(PathBuf, String)>>,
) -> Vec<Check> {
    let Some(p) = nodes.iter().position(|n| n.status.role == "primary") else {
        return vec![];
    };
    let bench = |n: &Node<'_>, extra: &[&str]| {
        let mut argv = vec![
            format!("{}/pgbench", n.settings.bin_dir),
            "-p".into(),
            n.settings.postgres.port.to_string(),
        ];
        argv.extend(extra.iter().map(|a| a.to_string()));
        argv.push("postgres".into());
        argv
    };
    let t = Instant::now();
    let init = bench(&nodes[p], &["-i", "-q", "-s", "1"]);
    let primary_host = nodes[p].status.host.clone();
    match exec(&mut nodes[p].client, init, "postgres").await {
        Ok((0, _)) => {}
        Ok((code, out)) => return vec![failed(&primary_host, "pgbench -i", code, &out, t)],
        Err(e) => {
            return vec![Check::new(
                &primary_host,
                "pgbench -i",
                false,
                e,
                t.elapsed().as_secs_f64(),
            )];
        }
    }
    // The replicas run read-only pgbench on the tables -i made: wait until they have them.
    let synced = writes_reach_replicas(nodes).await;
    if synced.iter().any(|c| !c.ok) {
        return synced;
    }
    let duration = seconds.to_string();
    let seconds = &duration;
    let runs = nodes
        .iter_mut()
        .filter(|n| {
            n.status.role == "primary"
                || (n.status.role == "replica" && n.status.state == "streaming")
        })
        .map(|n| {
            let read_only = n.status.role == "replica";
            let mut extra = vec!["-T", &duration];
            if read_only {
                extra.extend(["-c", "2", "-j", "1", "-n", "-S", "-R", REPLICA_READ_RATE]);
            } else {
                extra.extend(["-c", "4", "-j", "2"]);
            }
            let argv = bench(n, &extra);
            async move {
                let t = Instant::now();
                let host = n.status.host.clone();
                let name = if read_only {
                    "pgbench read-only"
                } else {
                    "pgbench read-write"
                };
                let (code, out) = match exec(&mut n.client, argv, "postgres").await {
                    Ok(done) => done,
                    Err(e) => return Check::new(&host, name, false, e, t.elapsed().as_secs_f64()),
                };
                if let Ok(mut f) = files.lock() {
                    f.push((out_dir.join(&host).join("pgbench"), out.clone()));
                }
                let secs = t.elapsed().as_secs_f64();
                match (code, report::pgbench_figures(&out)) {
                    (0, Some((tps, 0))) => {
                        Check::new(&host, name, true, format!("{tps:.0} tps"), secs)
                    }
                    (0, Some((tps, failures))) => Check::new(
                        &host,
                        name,
                        false,
                        format!("{tps:.0} tps, {failures} failed transactions"),
                        secs,
                    ),
                    // pgbench prints no tps when nothing completed (every client waiting).
                    (0, None) => Check::new(
                        &host,
                        name,
                        false,
                        format!("no transaction completed in {seconds} s (see {host}/pgbench)"),
                        secs,
                    ),
                    (code, _) => failed(&host, name, code, &out, t),
                }
            }
        });
    futures_util::future::join_all(runs).await
}

/// Runs `argv` on the host as `user` (C locale, from `/`): exit code and stdout+stderr.
async fn exec(
    client: &mut AgentClient,
    argv: Vec<String>,
    user: &str,
) -> Result<(i32, String), String> {
    let out = client
        .exec(ExecCommand {
            argv,
            env: vec![("LC_ALL".into(), "C".into())],
            run_as: Some(user.into()),
            stdin: vec![],
            cwd: Some("/".into()),
            timeout: Some(Duration::from_secs(3600)),
        })
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok((
        out.exit_code,
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn failed(host: &str, name: &str, code: i32, out: &str, t: Instant) -> Check {
    Check::new(
        host,
        name,
        false,
        format!("exit {code}: {}", last_lines(out)),
        t.elapsed().as_secs_f64(),
    )
}

/// The last three non-empty lines of `text`, on one line.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// `report.json` and every command's output under `out_dir`.
fn write_report(
    out_dir: &Path,
    report: &Report,
    files: &[(PathBuf, String)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for (path, text) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let path = out_dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
