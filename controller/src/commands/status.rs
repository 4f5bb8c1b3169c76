//! `tpa-controller status <dir> [--json]`: the live replication state, one line per host:
//! role, upstream, streaming state, lag, timeline, repmgr's view (with Patroni: Patroni's
//! state and role of the member, the leader, each etcd member's health), and where it differs
//! from config.yml; under it, each Barman host's backup health ([`backups`]). Exit status 1 (with
//! the reason on stderr) when a host is down or unreachable, a replica does not stream, more
//! than one host is a live primary, `barman check` fails or the last restore drill failed, a
//! Patroni member is not running/streaming (or its REST API does not answer), or an etcd
//! member is unhealthy.
//!
//! Read-only: it bootstraps nothing, writes nothing and takes no cluster-directory lock (so it
//! runs beside a deploy). Every host is asked at once, over the agent's mutual-TLS connection
//! (`Hello`, then one `Query` that runs one psql); the pure part is in [`view`].

mod backups;
mod view;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tpa_common::query::SqlQuery;

use crate::agent_client::{AgentClient, Deadlines, ExecCommand};
use crate::commands::deployed::Deployed;
use crate::config::{Instance, Role};
use crate::planner::{barman, barman_drill, patroni};
use crate::settings::PostgresSettings;

pub use self::view::{HostStatus, Probe, problems};

/// Status waits this long for an agent: a host that does not answer is reported, not waited for.
const DEADLINES: Deadlines = Deadlines {
    connect: Duration::from_secs(5),
    call: Duration::from_secs(5),
    facts: Duration::from_secs(15),
    query: Duration::from_secs(15),
    apply: Duration::from_secs(15),
    exec_margin: Duration::from_secs(5),
};

/// Prints the status of the cluster in `dir` (a table, or JSON with `json`) and returns the
/// exit status: 0 when healthy, 1 (reason on stderr) otherwise.
pub async fn run(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let deployed = Deployed::open(dir)?;
    let hosts = gather(&deployed).await;
    print!("{}", render(&hosts, json));
    Ok(report_problems(&hosts))
}

/// `status --watch`: asks again every `every` and redraws in place (on a terminal: the screen
/// is cleared and a header says when; otherwise each round follows the last, so a log or a
/// pipe keeps every round). Stops after `rounds` rounds when given, else on Ctrl-C; returns
/// the last round's exit status. config.yml and the inventory are read once.
pub async fn watch(
    dir: &Path,
    json: bool,
    every: Duration,
    rounds: Option<u64>,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let deployed = Deployed::open(dir)?;
    let terminal = std::io::stdout().is_terminal();
    let mut round = 0;
    loop {
        round += 1;
        let started = tokio::time::Instant::now();
        let hosts = gather(&deployed).await;
        let screen = render(&hosts, json);
        if terminal {
            // Home, then clear: one write, so the table does not flicker.
            print!("\x1b[H\x1b[2J");
        }
        if !json {
            let now = time::OffsetDateTime::now_utc();
            println!(
                "{}: every {}s, at {:02}:{:02}:{:02} UTC (Ctrl-C to stop)",
                deployed.cluster.name,
                every.as_secs(),
                now.hour(),
                now.minute(),
                now.second()
            );
        }
        print!("{screen}");
        let code = report_problems(&hosts);
        if rounds.is_some_and(|n| round >= n) {
            return Ok(code);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(started + every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(code),
        }
    }
}

fn render(hosts: &[HostStatus], json: bool) -> String {
    if json {
        view::render_json(hosts)
    } else {
        view::render_table(hosts)
    }
}

/// Exit status 0 when healthy; 1, with the reasons on stderr, otherwise.
fn report_problems(hosts: &[HostStatus]) -> ExitCode {
    let problems = view::problems(hosts);
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("status: {}", problems.join("; "));
        ExitCode::FAILURE
    }
}

/// Asks every host of `deployed` at once and merges the answers with config.yml: one
/// [`HostStatus`] per host, in config.yml order. Never fails: a host that does not answer is
/// a line that says why.
pub async fn gather(deployed: &Deployed) -> Vec<HostStatus> {
    let (cluster, inventory) = (&deployed.cluster, &deployed.inventory);

    let probes = futures_util::future::join_all(view::reported(cluster).map(|instance| {
        let host = inventory.host(&instance.name);
        async move {
            let probe = match host {
                Some(_) => probe(deployed, instance).await,
                None => Probe::NotProvisioned,
            };
            (instance.name.clone(), probe)
        }
    }));
    // A Barman host that is also a Postgres host (TPA's M1 puts the witness there): its
    // backups too, asked at the same time as its Postgres.
    let also_barman = futures_util::future::join_all(
        view::reported(cluster)
            .filter(|i| i.has_role(Role::Postgres) && inventory.host(&i.name).is_some())
            .map(|instance| (instance, barman_servers(deployed, instance)))
            .filter(|(_, servers)| !servers.is_empty())
            .map(|(instance, servers)| async move {
                let health = match deployed.connect_with(&instance.name, DEADLINES).await {
                    Ok(mut client) => backup_health(&mut client, servers).await,
                    Err(e) => Err(view::shorten(&format!("{e:#}"))),
                };
                (instance.name.clone(), health)
            }),
    );
    // With Patroni: each member's view through its helper, each etcd member's health.
    let ha =
        futures_util::future::join_all(
            view::reported(cluster)
                .filter(|_| patroni::configured(cluster))
                .filter(|i| {
                    (i.has_role(Role::Postgres) || i.has_role(Role::Etcd))
                        && inventory.host(&i.name).is_some()
                })
                .map(|instance| async move {
                    (instance.name.clone(), ha_probe(deployed, instance).await)
                }),
        );
    let ((probes, also_barman), ha) =
        futures_util::future::join(futures_util::future::join(probes, also_barman), ha).await;
    let probes: BTreeMap<String, Probe> = probes.into_iter().collect();

    let mut hosts = view::merge(cluster, inventory, &probes);
    for (host, health) in also_barman {
        let Some(line) = hosts.iter_mut().find(|h| h.host == host) else {
            continue;
        };
        match health {
            Ok(servers) => line.backups = servers,
            Err(why) => {
                let note = format!("backup health unknown: {why}");
                line.note = Some(match line.note.take() {
                    Some(n) => format!("{n}; {note}"),
                    None => note,
                });
            }
        }
    }
    for (host, (member, etcd)) in ha {
        if let Some(line) = hosts.iter_mut().find(|h| h.host == host) {
            line.patroni = member;
            line.etcd = etcd;
        }
    }
    hosts
}

/// One Patroni cluster host's HA view: on a Postgres host, Patroni's view of its member
/// (`patroni-tpa state`); on an etcd member, `etcdctl endpoint health` over TLS with the
/// host's certificate, against its own client URL. Never fails: why a view is unknown is its
/// answer (an unreachable agent is the host line's problem already).
async fn ha_probe(
    deployed: &Deployed,
    instance: &Instance,
) -> (Option<view::PatroniMember>, Option<view::EtcdHealth>) {
    let Ok(mut client) = deployed.connect_with(&instance.name, DEADLINES).await else {
        return (None, None);
    };
    let cluster = &deployed.cluster.name;
    let member = if instance.has_role(Role::Postgres) {
        let argv = [patroni::HELPER, "state", cluster]
            .map(String::from)
            .to_vec();
        Some(match exec(&mut client, argv).await {
            Ok(out) => serde_json::from_str(&out).unwrap_or_else(|e| view::PatroniMember {
                error: Some(format!(
                    "patroni-tpa state printed {}: {e}",
                    view::shorten(&out)
                )),
                ..Default::default()
            }),
            Err(why) => view::PatroniMember {
                error: Some(why),
                ..Default::default()
            },
        })
    } else {
        None
    };
    let etcd = if instance.has_role(Role::Etcd) {
        let address = deployed
            .host(&instance.name)
            .map(|h| h.address.to_string())
            .unwrap_or_default();
        let argv = patroni::etcdctl(
            &address,
            cluster,
            &[
                "--dial-timeout=3s",
                "--command-timeout=5s",
                "endpoint",
                "health",
            ],
        );
        Some(match exec(&mut client, argv).await {
            Ok(said) => view::EtcdHealth {
                healthy: true,
                message: view::shorten(&said),
            },
            Err(why) => view::EtcdHealth {
                healthy: false,
                message: why,
            },
        })
    } else {
        None
    };
    (member, etcd)
}

/// Runs `argv` as root on the host: its stdout (its stderr when it printed nothing else), or
/// why it failed (its stderr, shortened).
async fn exec(client: &mut AgentClient, argv: Vec<String>) -> Result<String, String> {
    let out = client
        .exec(ExecCommand {
            argv,
            env: vec![("LC_ALL".into(), "C".into())],
            cwd: Some("/".into()),
            timeout: Some(Duration::from_secs(15)),
            ..Default::default()
        })
        .await
        .map_err(|e| view::shorten(&format!("{e:#}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.exit_code == 0 && stdout.is_empty() {
        // etcdctl says `… is healthy` on stderr.
        return Ok(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    if out.exit_code != 0 {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = if stderr.trim().is_empty() {
            &stdout
        } else {
            stderr.trim()
        };
        return Err(view::shorten(&format!("{why} (exit {})", out.exit_code)));
    }
    Ok(stdout)
}

/// Asks one host: its agent (`Hello`, part of connecting), then, on a Postgres host, the status
/// query. Never fails: what went wrong is the probe's answer.
async fn probe(deployed: &Deployed, instance: &Instance) -> Probe {
    let connected = deployed.connect_with(&instance.name, DEADLINES).await;
    let mut client = match connected {
        Ok(client) => client,
        Err(e) => return Probe::Unreachable(view::shorten(&format!("{e:#}"))),
    };
    if !instance.has_role(Role::Postgres) {
        let servers = barman_servers(deployed, instance);
        if !servers.is_empty() {
            return Probe::Barman(backup_health(&mut client, servers).await);
        }
        return Probe::Reachable;
    }
    let port = PostgresSettings::resolve(&deployed.cluster.name, &instance.vars).port;
    match client
        .query(SqlQuery::postgres(port, view::status_sql(&instance.name)))
        .await
    {
        Ok(rows) => match view::parse_rows(&rows) {
            Ok(state) => Probe::Postgres(state),
            Err(why) => Probe::Down(view::shorten(&why)),
        },
        Err(e) => Probe::Down(view::down_reason(&format!("{e:#}"))),
    }
}

/// The servers `instance` backs up, when it is a Barman host.
fn barman_servers(deployed: &Deployed, instance: &Instance) -> Vec<String> {
    if !instance.has_role(Role::Barman) {
        return vec![];
    }
    barman::servers(&deployed.cluster, &instance.name)
        .iter()
        .map(|s| s.name.clone())
        .collect()
}

/// One Exec of the drill program's read-only `--health` mode on a Barman host.
async fn backup_health(
    client: &mut AgentClient,
    servers: Vec<String>,
) -> Result<Vec<backups::BackupHealth>, String> {
    let mut argv = vec![barman_drill::PROGRAM.to_string(), "--health".into()];
    argv.extend(servers);
    let out = client
        .exec(crate::commands::backup::as_barman(
            argv,
            Duration::from_secs(60),
        ))
        .await
        .map_err(|e| view::shorten(&format!("{e:#}")))?;
    if out.exit_code != 0 {
        return Err(view::shorten(&format!(
            "{} (exit {})",
            String::from_utf8_lossy(&out.stderr),
            out.exit_code
        )));
    }
    backups::parse(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../../tests/fixtures/seed/config.yml");

    #[tokio::test]
    async fn a_cluster_never_deployed_is_said_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.yml"), SEED).expect("config");
        let err = run(dir.path(), false).await.expect_err("never deployed");
        assert!(
            err.to_string()
                .contains("was never deployed (no inventory.json)")
                && err.to_string().contains("tpa-controller deploy"),
            "{err}"
        );
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(files, ["config.yml"], "status wrote something");

        // Provisioned, but deploy never made the certificates agents trust.
        let inventory = r#"{"cluster": "fosdem", "config_sha256": "", "hosts": []}"#;
        std::fs::write(dir.path().join("inventory.json"), inventory).expect("inventory");
        let err = run(dir.path(), false).await.expect_err("never deployed");
        assert!(
            err.to_string()
                .contains("was never deployed (no controller certificate in tls/)"),
            "{err}"
        );
        assert!(!dir.path().join("tls").exists());
    }
}
