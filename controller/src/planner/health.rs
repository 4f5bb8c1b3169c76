//! The health spec of each host: what its agent checks on a schedule and reports to `status`
//! (and, opt-in, to Prometheus), written to `/etc/tpa-agent/health.json` at the end of the
//! host's deploy. The agent stays generic; this is where it learns what matters on the host:
//!
//! - Postgres (a host with a Postgres role): its port, for the health query (accepting
//!   connections, recovery, timeline, WAL receiver and replay lag, slots' retained WAL).
//! - The units deploy keeps running: every `Service` resource of the host's plan left running.
//! - Free space of the data and WAL directories and of Barman's home.
//! - Commands: on a Barman host the drill program's `--health` (barman check, newest backup,
//!   last restore drill; slow, so at most every [`BARMAN_EVERY_SECS`]); with Patroni each
//!   member's `patroni-tpa state`, and on etcd members `etcdctl endpoint health`.
//! - `agent_health_interval`, `agent_metrics_port` and `agent_metrics_listen`.
//! - `agent_cert_renew_before`: the certificate check warns ("run deploy to renew") from then on.

use std::collections::BTreeMap;

use tpa_common::health_spec::{
    CommandOutput, CommandSpec, DEFAULT_INTERVAL_SECS, DiskSpec, HealthSpec, MetricsListen,
    MetricsSpec, PostgresSpec, SPEC_PATH,
};
use tpa_common::resource::{File, Resource, ResourceSpec};
use tpa_common::secret::Content;

use super::{HostState, PlanInput, Stage, barman, barman_drill, id, patroni};
use crate::config::{Instance, Role};

/// The Barman check (a Python start-up, `barman check` and a connection to each server) runs
/// at most this often, whatever the interval: a round stays cheap on the Barman host.
pub const BARMAN_EVERY_SECS: u32 = 60;

/// The spec of `instance`, whose planned stages are `stages`.
pub fn spec(
    input: &PlanInput<'_>,
    instance: &Instance,
    host: &HostState,
    stages: &[Stage],
) -> HealthSpec {
    let vars = &instance.vars;
    let interval_secs = vars.agent_health_interval.unwrap_or(DEFAULT_INTERVAL_SECS);
    let mut spec = HealthSpec {
        interval_secs,
        metrics: vars.agent_metrics_port.map(|port| MetricsSpec {
            port,
            listen: vars
                .agent_metrics_listen
                .unwrap_or(MetricsListen::Localhost),
        }),
        units: running_units(stages),
        // Warn when deploy would renew the agent's certificate (the agent's default: 30 days).
        cert_renew_before_secs: vars.agent_cert_renew_before.map(|d| d.as_secs()),
        ..HealthSpec::default()
    };
    let cluster = &input.cluster.name;
    let pg = &host.settings.postgres;
    if input.state.topology.role(&instance.name).is_some() {
        spec.postgres = Some(PostgresSpec {
            data_dir: pg.data_dir.clone(),
            port: pg.port,
        });
        spec.disks.push(disk("data", &pg.data_dir));
        spec.disks.push(disk("wal", &pg.wal_dir));
        if patroni::enabled(input) {
            spec.commands.push(command(
                "patroni",
                [patroni::HELPER, "state", cluster]
                    .map(String::from)
                    .to_vec(),
                CommandOutput::Patroni,
            ));
        }
    }
    if instance.has_role(Role::Barman) {
        let servers: Vec<String> = barman::servers(input.cluster, &instance.name)
            .iter()
            .map(|s| s.name.clone())
            .collect();
        spec.disks.push(disk("barman", barman::HOME));
        if !servers.is_empty() {
            let mut argv = vec![barman_drill::PROGRAM.to_string(), "--health".into()];
            argv.extend(servers);
            spec.commands.push(CommandSpec {
                run_as: Some("barman".into()),
                every_secs: Some(BARMAN_EVERY_SECS.max(interval_secs)),
                ..command("barman", argv, CommandOutput::Barman)
            });
        }
    }
    if patroni::enabled(input) && instance.has_role(Role::Etcd) {
        let address = input
            .inventory
            .host(&instance.name)
            .map(|h| h.address.to_string())
            .unwrap_or_default();
        let argv = patroni::etcd_health(&address, cluster);
        spec.commands
            .push(command("etcd", argv, CommandOutput::Exit));
    }
    spec
}

/// The file resource that writes `spec` (root, 0600: the agent alone reads it).
pub fn resource(spec: &HealthSpec) -> ResourceSpec {
    let mut text = serde_json::to_string_pretty(spec).unwrap_or_default();
    text.push('\n');
    ResourceSpec {
        id: id("file", SPEC_PATH),
        kind: Resource::File(File {
            path: SPEC_PATH.into(),
            content: Content::new(text.into_bytes()),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o600,
            secret: false,
        }),
    }
}

/// The units the host's stages leave running, in the order they first appear.
fn running_units(stages: &[Stage]) -> Vec<String> {
    let mut order = Vec::new();
    let mut running = BTreeMap::new();
    for r in stages.iter().flat_map(|s| &s.resources) {
        if let Resource::Service(s) = &r.kind {
            if !running.contains_key(&s.unit) {
                order.push(s.unit.clone());
            }
            running.insert(s.unit.clone(), s.running);
        }
    }
    order.retain(|u| running.get(u) == Some(&true));
    order
}

fn disk(name: &str, path: &str) -> DiskSpec {
    DiskSpec {
        name: name.into(),
        path: path.into(),
    }
}

fn command(name: &str, argv: Vec<String>, reads: CommandOutput) -> CommandSpec {
    CommandSpec {
        name: name.into(),
        argv,
        run_as: None,
        reads,
        every_secs: None,
        timeout_secs: 60,
    }
}
