//! `tpa-controller deploy <dir>` (and `--check`): provision if needed, bootstrap agents,
//! gather facts, plan, and apply the plan across hosts; then a summary and a deploy log.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use tpa_common::event::Outcome;

use crate::agent_client::{AgentClient, ExecCommand};
use crate::bootstrap::{AgentChange, Bootstrap};
use crate::cluster_dir::{ClusterDir, write_if_changed};
use crate::commands::provision::{self, load_cluster};
use crate::config::Role;
use crate::inventory::{self, Inventory};
use crate::local_repo;
use crate::orchestrator::{self, StageReport, StageStatus};
use crate::pki::Pki;
use crate::planner::{self, PlanInput, PostgresLayout};
use crate::platform::docker::LOCAL_REPO_MOUNT;
use crate::progress::Progress;
use crate::scram;
use crate::secrets::{Secrets, password_key};
use crate::server_tls::{self, ServerCert};

/// How a deploy ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployOutcome {
    /// Everything is as config.yml says (nothing changed, or changes applied).
    Converged { changed: u32 },
    /// `--check` found changes to make.
    Pending { changes: u32 },
}

pub struct DeployOptions {
    pub check: bool,
    pub verbose: bool,
}

pub async fn run(dir: &Path, options: &DeployOptions) -> anyhow::Result<DeployOutcome> {
    let started = Instant::now();
    let (cluster_dir, cluster) = load_cluster(dir)?;
    let inventory = current_inventory(&cluster_dir, options.check).await?;
    let root = cluster_dir.root();
    let mut log = String::new();
    let _ = writeln!(
        log,
        "deploy{} of {} at unix {}",
        if options.check { " --check" } else { "" },
        cluster.name,
        unix_now()
    );

    let secrets = Secrets::open(root, cluster.vault_name.as_deref())?;
    let pki = Pki::load_or_create(root, &secrets)?;
    let identity = pki.controller_identity(root, &secrets)?;
    // Clients verify Postgres with this file: sslrootcert=<dir>/ca.crt.
    write_if_changed(&root.join("ca.crt"), pki.ca_cert_pem())?;

    // Bootstrap every host's agent, in parallel.
    let phase = Instant::now();
    let bootstrap = Bootstrap::new(&pki, &identity, &cluster_dir.ssh_config())?;
    let hosts: Vec<_> = inventory
        .hosts
        .iter()
        .filter(|h| cluster.instance(&h.name).is_some_and(|i| !i.provision_only))
        .collect();
    let results =
        futures_util::future::join_all(hosts.iter().map(|h| bootstrap.host(h, options.check)))
            .await;
    let mut clients: BTreeMap<String, AgentClient> = BTreeMap::new();
    let mut failures = Vec::new();
    for (host, result) in hosts.iter().zip(results) {
        match result {
            Ok((client, change)) => {
                let word = match change {
                    AgentChange::Unchanged => "agent current",
                    AgentChange::Updated => "agent updated",
                    AgentChange::Enrolled => "agent installed and enrolled",
                };
                line(&mut log, format!("[{}] bootstrap: {word}", host.name));
                clients.insert(host.name.clone(), client);
            }
            Err(e) => failures.push(format!("{}: {e:#}", host.name)),
        }
    }
    if !failures.is_empty() {
        bail!(
            "bootstrap failed:\n  {}\nfix the cause and deploy again",
            failures.join("\n  ")
        );
    }
    line(
        &mut log,
        format!(
            "bootstrap: {} host(s) in {:.1}s",
            clients.len(),
            phase.elapsed().as_secs_f64()
        ),
    );

    // Facts, and server certificates for Postgres hosts.
    let phase = Instant::now();
    let mut facts = BTreeMap::new();
    let mut certs = BTreeMap::new();
    let mut local_repos = BTreeMap::new();
    let cluster_ref = &cluster;
    let inventory_ref = &inventory;
    let gathered = futures_util::future::join_all(clients.iter().map(|(name, client)| {
        let cluster = cluster_ref;
        let inventory = inventory_ref;
        let mut client = client.clone();
        let instance = cluster
            .instance(name)
            .expect("bootstrapped hosts are instances");
        let host = inventory
            .host(name)
            .expect("bootstrapped hosts are in the inventory");
        let pki = &pki;
        let check = options.check;
        async move {
            let layout = PostgresLayout::for_instance(&cluster.name, instance, "");
            let postgres = instance.has_role(Role::Postgres);
            let data_dir = postgres.then_some(layout.data_dir.as_str());
            let facts = client.facts(data_dir, layout.port).await?;
            let cert = if instance.has_role(Role::Primary) {
                Some(
                    server_tls::ensure(
                        &mut client,
                        pki,
                        name,
                        host.address,
                        &layout.cert_file,
                        &layout.key_file,
                        check,
                    )
                    .await?,
                )
            } else {
                None
            };
            Ok::<_, anyhow::Error>((name.clone(), facts, cert))
        }
    }))
    .await;
    for result in gathered {
        let (name, host_facts, cert) = result?;
        let major: u32 = host_facts
            .os_version_id
            .split('.')
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let found = local_repo::find_repo_for_host(
            root,
            major,
            &host_facts.os_codename,
            &host_facts.os_version_id,
        );
        if let Some(repo) = found {
            let relative = repo
                .strip_prefix(cluster_dir.local_repo())
                .unwrap_or(Path::new(""));
            local_repos.insert(
                name.clone(),
                Path::new(LOCAL_REPO_MOUNT)
                    .join(relative)
                    .display()
                    .to_string(),
            );
        }
        match cert {
            Some(ServerCert::Issued(pem)) => {
                line(&mut log, format!("[{name}] tls: server certificate issued"));
                certs.insert(name.clone(), pem);
            }
            Some(ServerCert::Current(pem)) => {
                certs.insert(name.clone(), pem);
            }
            Some(ServerCert::WouldIssue) => line(
                &mut log,
                format!("[{name}] tls: a server certificate would be issued"),
            ),
            None => {}
        }
        facts.insert(name, host_facts);
    }
    line(
        &mut log,
        format!(
            "facts: {} host(s) in {:.1}s",
            facts.len(),
            phase.elapsed().as_secs_f64()
        ),
    );

    let verifiers = match primary_client(&cluster, &clients) {
        Some((instance, mut client)) => {
            let running = facts
                .get(&instance.name)
                .and_then(|f| f.postgres.as_ref())
                .is_some_and(|p| p.running);
            let (verifiers, generated) = password_verifiers(
                &mut client,
                root,
                &cluster,
                instance,
                running,
                options.check,
            )
            .await?;
            for user in generated {
                line(
                    &mut log,
                    format!(
                        "[{}] password generated for {user} (see show-password)",
                        instance.name
                    ),
                );
            }
            if running {
                for drift in drift(&mut client, instance).await? {
                    line(&mut log, format!("[{}] drift: {drift}", instance.name));
                }
            }
            verifiers
        }
        None => BTreeMap::new(),
    };

    let plan = planner::plan(&PlanInput {
        cluster: &cluster,
        inventory: &inventory,
        facts: &facts,
        ca_pem: pki.ca_cert_pem(),
        server_certs: &certs,
        local_repos: &local_repos,
        password_verifiers: &verifiers,
    })
    .map_err(|errors| anyhow::anyhow!("cannot plan the deploy:\n  {}", errors.join("\n  ")))?;
    for note in &plan.notes {
        line(&mut log, format!("note: {note}"));
    }

    let check = options.check;
    let verbose = options.verbose;
    let progress = Progress::new(plan.hosts.keys().map(String::as_str));
    let progress = &progress;
    let reports = orchestrator::run(&plan, |host: String, stage: planner::Stage| {
        let mut client = clients.get(&host).cloned();
        async move {
            progress.stage(&host, stage.name.as_str());
            let client = client
                .as_mut()
                .ok_or_else(|| format!("no agent connection to {host}"))?;
            let result = client
                .apply(stage.resources, check)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let changed = result
                .events
                .iter()
                .filter(|e| matches!(e.outcome, Outcome::Changed | Outcome::WouldChange))
                .count();
            let mut lines = vec![format!(
                "[{host}] {}: {} resources, {changed} {} ({:.1}s)",
                stage.name.as_str(),
                result.events.len(),
                if check { "would change" } else { "changed" },
                result.summary.elapsed_ms as f64 / 1000.0
            )];
            if verbose || check {
                for e in result
                    .events
                    .iter()
                    .filter(|e| e.outcome != Outcome::Unchanged)
                {
                    let reason = if e.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", e.message)
                    };
                    lines.push(format!("[{host}]   {} {}{reason}", e.outcome, e.id));
                    if let Some(diff) = e.diff.as_deref().filter(|_| check) {
                        lines.extend(diff.lines().map(|l| format!("[{host}]       {l}")));
                    }
                }
            }
            // One print per stage, so hosts' lines never interleave.
            progress.println(&lines.join("\n"));
            Ok(result.events)
        }
    })
    .await;
    progress.finish();

    let outcome = summarise(&reports, &mut log, check, started);
    write_log(&cluster_dir, &log, &reports)?;
    outcome
}

/// The primary's instance and a client to its agent.
fn primary_client<'a>(
    cluster: &'a crate::config::Cluster,
    clients: &BTreeMap<String, AgentClient>,
) -> Option<(&'a crate::config::Instance, AgentClient)> {
    let instance = cluster
        .instances
        .iter()
        .find(|i| i.has_role(Role::Primary))?;
    Some((instance, clients.get(&instance.name)?.clone()))
}

/// Runs `sql` with psql as postgres on the primary and returns its rows, fields split on tabs.
async fn query(client: &mut AgentClient, port: u16, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let argv = [
        "psql",
        "-XAtq",
        "-F",
        "\t",
        "-h",
        "/var/run/postgresql",
        "-p",
        &port.to_string(),
        "-d",
        "postgres",
        "-f",
        "-",
    ];
    let stdout = client
        .exec_stdout(ExecCommand {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            run_as: Some("postgres".into()),
            stdin: sql.as_bytes().to_vec(),
            ..Default::default()
        })
        .await?;
    Ok(stdout
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect())
}

/// SCRAM verifiers for every configured user with a password: from the encrypted secrets
/// store (generating missing ones unless `check`), salted like the role's current verifier
/// so that an unchanged password changes nothing. Returns the users whose password was new.
async fn password_verifiers(
    client: &mut AgentClient,
    root: &Path,
    cluster: &crate::config::Cluster,
    primary: &crate::config::Instance,
    running: bool,
    check: bool,
) -> anyhow::Result<(BTreeMap<String, String>, Vec<String>)> {
    let users = &primary.vars.postgres_users;
    if users.is_empty() {
        return Ok((BTreeMap::new(), Vec::new()));
    }
    let port = primary.vars.postgres_port.unwrap_or(5432);
    let existing: BTreeMap<String, String> = if running {
        query(
            client,
            port,
            "select rolname, rolpassword from pg_authid where rolpassword is not null",
        )
        .await?
        .into_iter()
        .filter_map(|row| Some((row.first()?.clone(), row.get(1)?.clone())))
        .collect()
    } else {
        BTreeMap::new()
    };
    let mut secrets = Secrets::open(root, cluster.vault_name.as_deref())?;
    let mut verifiers = BTreeMap::new();
    let mut generated = Vec::new();
    for user in users {
        let name = &user.username;
        let stored = secrets
            .get(&password_key(name))
            .map(|p| zeroize::Zeroizing::new(p.to_string()));
        let password = match stored {
            Some(p) => p,
            None if user.generate_password && !check => {
                let (p, _) = secrets.password_or_generate(name);
                generated.push(name.clone());
                p
            }
            // --check: a password would be generated; any verifier differs from the live one.
            None if user.generate_password => zeroize::Zeroizing::new(String::new()),
            None => continue,
        };
        verifiers.insert(
            name.clone(),
            scram::verifier(&password, existing.get(name).map(String::as_str)),
        );
    }
    if !check {
        // Saved before anything is applied: a password Postgres has is never lost.
        secrets.save()?;
    }
    Ok((verifiers, generated))
}

/// Roles and databases Postgres has that config.yml does not list (tpa never drops them).
async fn drift(
    client: &mut AgentClient,
    primary: &crate::config::Instance,
) -> anyhow::Result<Vec<String>> {
    let port = primary.vars.postgres_port.unwrap_or(5432);
    let rows = query(
        client,
        port,
        "select 'role', rolname from pg_roles where rolname !~ '^pg_' and rolname <> 'postgres' \
         union all select 'database', datname from pg_database where datname not in ('postgres', 'template0', 'template1')",
    )
    .await?;
    let vars = &primary.vars;
    let mut found = Vec::new();
    for row in rows {
        let (Some(kind), Some(name)) = (row.first(), row.get(1)) else {
            continue;
        };
        let declared = match kind.as_str() {
            "role" => vars.postgres_users.iter().any(|u| &u.username == name),
            _ => vars.postgres_databases.iter().any(|d| &d.name == name),
        };
        if !declared {
            found.push(format!(
                "{kind} {name} exists in Postgres but not in config.yml (tpa never drops it)"
            ));
        }
    }
    Ok(found)
}

/// The inventory deploy works on: provision first when the hosts were never provisioned
/// or config.yml changed since (as TPA's deploy does).
async fn current_inventory(dir: &ClusterDir, check: bool) -> anyhow::Result<Inventory> {
    let config = std::fs::read(dir.config())?;
    let existing = Inventory::load(&dir.inventory())?;
    match existing {
        Some(inv) if inv.config_sha256 == inventory::sha256_hex(&config) => Ok(inv),
        Some(inv) if check => Ok(inv),
        None if check => bail!("the cluster is not provisioned: run provision (or deploy) first"),
        _ => provision::run(dir.root(), None).await,
    }
}

fn summarise(
    reports: &[StageReport],
    log: &mut String,
    check: bool,
    started: Instant,
) -> anyhow::Result<DeployOutcome> {
    let mut problems = Vec::new();
    let (mut changed, mut unchanged) = (0u32, 0u32);
    line(log, "summary:".into());
    for r in reports {
        changed += r.summary.changed + r.summary.would_change;
        unchanged += r.summary.unchanged;
        let status = match &r.status {
            StageStatus::Done => "ok".to_string(),
            StageStatus::Failed(id, msg) => {
                problems.push(format!(
                    "{} {}: {id} failed: {msg}",
                    r.host,
                    r.stage.as_str()
                ));
                "FAILED".into()
            }
            StageStatus::Error(e) => {
                problems.push(format!("{} {}: {e}", r.host, r.stage.as_str()));
                "ERROR".into()
            }
            StageStatus::Skipped(why) => format!("skipped ({why})"),
        };
        line(
            log,
            format!(
                "  {:<10} {:<16} {:>3} changed {:>3} unchanged {:>2} failed {:>6.1}s  {status}",
                r.host,
                r.stage.as_str(),
                r.summary.changed + r.summary.would_change,
                r.summary.unchanged,
                r.summary.failed,
                r.elapsed.as_secs_f64()
            ),
        );
    }
    let secs = started.elapsed().as_secs_f64();
    if !problems.is_empty() {
        bail!(
            "deploy failed after {secs:.1}s:\n  {}\nfix the cause and deploy again: finished resources are skipped",
            problems.join("\n  ")
        );
    }
    if check {
        line(
            log,
            format!(
                "check: {changed} change(s) pending, {unchanged} resource(s) in state ({secs:.1}s)"
            ),
        );
        return Ok(if changed > 0 {
            DeployOutcome::Pending { changes: changed }
        } else {
            DeployOutcome::Converged { changed: 0 }
        });
    }
    line(
        log,
        format!("deploy finished in {secs:.1}s: {changed} changed, {unchanged} unchanged"),
    );
    Ok(DeployOutcome::Converged { changed })
}

/// Prints a line and keeps it for the deploy log.
fn line(log: &mut String, text: String) {
    println!("{text}");
    log.push_str(&text);
    log.push('\n');
}

/// Appends this deploy, with every resource event (agents mask secrets), to `<dir>/deploy.log`.
fn write_log(dir: &ClusterDir, log: &str, reports: &[StageReport]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut text = log.to_string();
    for r in reports {
        for e in &r.events {
            let _ = writeln!(
                text,
                "  [{}] {} {} {} {}ms {}",
                r.host,
                r.stage.as_str(),
                e.outcome,
                e.id,
                e.elapsed_ms,
                e.message
            );
            if let Some(diff) = &e.diff {
                for l in diff.lines() {
                    let _ = writeln!(text, "      {l}");
                }
            }
        }
    }
    let path = dir.root().join("deploy.log");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
