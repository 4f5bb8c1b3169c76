//! `tpa-controller status <dir> [--json]`: the live replication state, one line per host:
//! role, upstream, streaming state, lag, timeline, repmgr's view (with Patroni: Patroni's
//! state and role of the member, the leader, each etcd member's health), and where it differs
//! from config.yml; under it, each Barman host's backup health ([`backups`]). Exit status 1 (with
//! the reason on stderr) when a host is down or unreachable, a replica does not stream, more
//! than one host is a live primary, `barman check` fails or the last restore drill failed, a
//! Patroni member is not running/streaming (or its REST API does not answer), or an etcd
//! member is unhealthy.
//!
//! Each host's agent also reports its latest round of scheduled health checks (`Health`,
//! answered from the agent's cache: see agent/src/health/schedule.rs and docs/health.md):
//! shown in `--json` and, where not Ok, under the table; a Critical check makes status exit 1
//! too. Barman's backups, Patroni's member state and etcd's health come from that round, so
//! nothing slow (`barman check`) runs at status time.
//!
//! Read-only: it bootstraps nothing, writes nothing and takes no cluster-directory lock (so it
//! runs beside a deploy). Every host is asked at once, over the agent's mutual-TLS connection
//! (`Hello`, `Health`, then one `Query` that runs one psql); the pure part is in [`view`].

mod backups;
mod view;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tpa_common::query::SqlQuery;
use tpa_proto::HealthReport;

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
    let hosts = gather(&deployed, false).await;
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
        let hosts = gather(&deployed, false).await;
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
/// a line that says why. `refresh` has each agent run its health checks now (`test`), instead
/// of answering with its latest scheduled round (`status`).
pub async fn gather(deployed: &Deployed, refresh: bool) -> Vec<HostStatus> {
    let (cluster, inventory) = (&deployed.cluster, &deployed.inventory);
    let answers = futures_util::future::join_all(view::reported(cluster).map(|instance| {
        let host = inventory.host(&instance.name);
        async move {
            let answer = match host {
                Some(_) => ask(deployed, instance, refresh).await,
                None => Answer::from(Probe::NotProvisioned),
            };
            (instance.name.clone(), answer)
        }
    }))
    .await;
    let probes: BTreeMap<String, Probe> = answers
        .iter()
        .map(|(host, a)| (host.clone(), a.probe.clone()))
        .collect();
    let mut hosts = view::merge(cluster, inventory, &probes);
    for (host, answer) in answers {
        let Some(line) = hosts.iter_mut().find(|h| h.host == host) else {
            continue;
        };
        // A Barman host that is also a Postgres host (TPA's M1 puts the witness there).
        match answer.also_backups {
            Some(Ok(servers)) => line.backups = servers,
            Some(Err(why)) => {
                let note = format!("backup health unknown: {why}");
                line.note = Some(match line.note.take() {
                    Some(n) => format!("{n}; {note}"),
                    None => note,
                });
            }
            None => {}
        }
        line.patroni = answer.patroni;
        line.etcd = answer.etcd;
        line.health = answer.health.as_ref().map(view::AgentHealth::from_report);
    }
    hosts
}

/// What one host's agent answered, over one connection.
#[derive(Debug, Default)]
struct Answer {
    probe: Probe,
    /// The agent's latest round of health checks.
    health: Option<HealthReport>,
    /// On a Barman host that is also a Postgres host: its servers' backups.
    also_backups: Option<Result<Vec<backups::BackupHealth>, String>>,
    patroni: Option<view::PatroniMember>,
    etcd: Option<view::EtcdHealth>,
}

impl From<Probe> for Answer {
    fn from(probe: Probe) -> Self {
        Answer {
            probe,
            ..Answer::default()
        }
    }
}

/// Asks one host: its agent (`Hello`, part of connecting), its latest health round (cached by
/// the agent: Barman's, Patroni's and etcd's state come from it), then, on a Postgres host,
/// the live status query. Never fails: what went wrong is the answer.
async fn ask(deployed: &Deployed, instance: &Instance, refresh: bool) -> Answer {
    let mut client = match deployed.connect_with(&instance.name, DEADLINES).await {
        Ok(client) => client,
        Err(e) => return Probe::Unreachable(view::shorten(&format!("{e:#}"))).into(),
    };
    let settings = PostgresSettings::resolve(&deployed.cluster.name, &instance.vars);
    let postgres = instance.has_role(Role::Postgres);
    let data_dir = postgres.then_some(settings.data_dir.as_str());
    let health = client.health(data_dir, settings.port, refresh).await.ok();
    let detail = |name: &str| health.as_ref().and_then(|h| h.details.get(name)).cloned();

    let servers = barman_servers(deployed, instance);
    let backups = if servers.is_empty() {
        None
    } else {
        Some(match detail("barman") {
            Some(report) => backups::parse(&report),
            // An agent without a health spec (deployed by an older version): ask now.
            None => backup_health(&mut client, servers).await,
        })
    };
    let (patroni, etcd) = if patroni::configured(&deployed.cluster) {
        ha_probe(deployed, instance, &mut client, health.as_ref()).await
    } else {
        (None, None)
    };
    let (probe, also_backups) = if postgres {
        let probe = match client
            .query(SqlQuery::postgres(
                settings.port,
                view::status_sql(&instance.name),
            ))
            .await
        {
            Ok(rows) => match view::parse_rows(&rows) {
                Ok(state) => Probe::Postgres(state),
                Err(why) => Probe::Down(view::shorten(&why)),
            },
            Err(e) => Probe::Down(view::down_reason(&format!("{e:#}"))),
        };
        (probe, backups)
    } else {
        match backups {
            Some(b) => (Probe::Barman(b), None),
            None => (Probe::Reachable, None),
        }
    };
    Answer {
        probe,
        health,
        also_backups,
        patroni,
        etcd,
    }
}

/// One Patroni cluster host's HA view: on a Postgres host, Patroni's view of its member
/// (`patroni-tpa state`); on an etcd member, `etcdctl endpoint health` over TLS with the
/// host's certificate, against its own client URL. Both from the agent's latest health round
/// when it has them, else asked now. Never fails: why a view is unknown is its answer.
async fn ha_probe(
    deployed: &Deployed,
    instance: &Instance,
    client: &mut AgentClient,
    health: Option<&HealthReport>,
) -> (Option<view::PatroniMember>, Option<view::EtcdHealth>) {
    let cluster = &deployed.cluster.name;
    let member = if instance.has_role(Role::Postgres) {
        let said = match health.and_then(|h| h.details.get("patroni")) {
            Some(out) => Ok(out.clone()),
            None => match health.and_then(|h| h.checks.iter().find(|c| c.name == "patroni")) {
                Some(failed) => Err(view::shorten(&failed.message)),
                None => {
                    let argv = [patroni::HELPER, "state", cluster]
                        .map(String::from)
                        .to_vec();
                    exec(client, argv).await
                }
            },
        };
        Some(match said {
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
        Some(
            match health.and_then(|h| h.checks.iter().find(|c| c.name == "etcd")) {
                Some(check) => view::EtcdHealth {
                    healthy: check.status == tpa_common::health::HealthStatus::Ok,
                    message: view::shorten(&check.message),
                },
                None => {
                    let address = deployed
                        .host(&instance.name)
                        .map(|h| h.address.to_string())
                        .unwrap_or_default();
                    let argv = patroni::etcd_health(&address, cluster);
                    match exec(client, argv).await {
                        Ok(said) => view::EtcdHealth {
                            healthy: true,
                            message: view::shorten(&said),
                        },
                        Err(why) => view::EtcdHealth {
                            healthy: false,
                            message: why,
                        },
                    }
                }
            },
        )
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
