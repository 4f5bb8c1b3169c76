//! repmgr as TPA sets it up (`failover_manager: repmgr` and at least one replica): the
//! `repmgr` superuser and database, `repmgr` preloaded, `/etc/repmgr/<v>/repmgr.conf` per node,
//! registration (primary, standby with its live upstream's node id, witness), and repmgrd as
//! tpa's `repmgr.service`.
//!
//! Failover tuning (defaults; `repmgr_reconnect_attempts` / `repmgr_reconnect_interval`
//! override): repmgrd checks its upstream every 2 s and calls it failed after 3 attempts 2 s
//! apart, each connection bounded by `connect_timeout=2`, so a dead primary is promoted away
//! from in about 10–15 s (TPA's 6 × 10 s takes over a minute).
//!
//! Nothing here runs repmgr's own `standby clone` or `standby switchover`: replicas are cloned
//! by `replica` (same slots repmgr would make, `repmgr_slot_<node id>`), and switchover is
//! driven by the controller through the agents, so no host needs SSH trust to another.

use tpa_common::resource::{Command, EnvVar, Resource, ResourceSpec, SqlGuard};

use super::dir;
use super::postgres::owned_file as file;
use super::replica::CA_FILE;
use super::topology::{PostgresRole, Topology};
use super::users::{self, literal};
use super::{HostState, PlanInput, Stage, StageName, id, running_service};
use crate::config::{
    Cluster, FailoverManager, Instance, PostgresDatabase, PostgresUser, RepmgrFailover,
};
use crate::settings::HostSettings;

/// The repmgr superuser and its database (TPA's names).
pub const USER: &str = "repmgr";
pub const DATABASE: &str = "repmgr";

/// The unit tpa writes for repmgrd.
pub const UNIT: &str = "repmgr.service";

/// Lets repmgr (running as postgres) start, stop, restart and reload tpa's postgres.service,
/// and nothing else.
const SUDOERS_PATH: &str = "/etc/sudoers.d/tpa_repmgr";

/// True when this deploy sets up repmgr: it is the failover manager and some host streams.
pub fn enabled(input: &PlanInput<'_>) -> bool {
    manages(input.cluster, &input.state.topology)
}

/// The one rule, for gather (which passwords to make) and the planner alike: repmgr is
/// config.yml's failover manager and some host of `topology` streams.
pub fn manages(cluster: &Cluster, topology: &Topology) -> bool {
    super::has_replicas(topology)
        && cluster
            .instances
            .first()
            .is_some_and(|i| i.vars.failover_manager() == FailoverManager::Repmgr)
}

/// `/etc/repmgr/<version>/repmgr.conf` (TPA's `repmgr_conf_dir` default).
pub fn conf_path(settings: &HostSettings) -> String {
    format!("/etc/repmgr/{}/repmgr.conf", settings.postgres_version)
}

/// The repmgr user: a superuser (repmgr's requirement for registration and pg_rewind), its
/// password generated into the secrets store.
pub fn user() -> PostgresUser {
    PostgresUser {
        username: USER.into(),
        generate_password: true,
        role_attrs: vec!["LOGIN".into(), "SUPERUSER".into()],
        granted_roles: vec![],
        conn_limit: None,
        password_encryption: None,
    }
}

/// The slot a node streams through on its upstream: repmgr's own name, so that repmgr's
/// `standby follow` after a failover finds and makes the same slots tpa does.
pub fn slot_name(node: u32) -> String {
    format!("repmgr_slot_{node}")
}

/// `host=… dbname=repmgr user=repmgr …`: how any node reaches `name` as repmgr, TLS verified
/// against the cluster CA, the password from the postgres user's passfile.
pub fn conninfo(input: &PlanInput<'_>, name: &str) -> Option<String> {
    let address = input.inventory.host(name)?.address;
    let port = input.state.hosts.get(name)?.settings.postgres.port;
    Some(conninfo_at(&address.to_string(), port, name))
}

/// The conninfo repmgr uses to reach node `name` at `address:port` (also the `switchover`
/// command's, so both connect the same way).
pub fn conninfo_at(address: &str, port: u16, name: &str) -> String {
    format!(
        "host={address} port={port} dbname={DATABASE} user={USER} application_name={name} \
         connect_timeout=2 sslmode=verify-full sslrootcert={CA_FILE}"
    )
}

/// repmgr.conf for `instance`, or why a value cannot go into it.
pub fn conf(
    input: &PlanInput<'_>,
    instance: &Instance,
    host: &HostState,
) -> Result<String, String> {
    let name = &instance.name;
    let conninfo = conninfo(input, name).ok_or_else(|| format!("{name}: not in the inventory"))?;
    let vars = &instance.vars;
    let conf_path = conf_path(&host.settings);
    let bin = &host.settings.bin_dir;
    let repmgr = format!("{bin}/repmgr");
    let systemctl = |op: &str| format!("sudo -n /usr/bin/systemctl {op} postgres");
    let mut settings: Vec<(&str, String)> = vec![
        ("node_id", instance.node.to_string()),
        ("node_name", quoted(name)?),
        ("conninfo", quoted(&conninfo)?),
        ("data_directory", quoted(&host.settings.postgres.data_dir)?),
        ("pg_bindir", quoted(bin)?),
        (
            "replication_user",
            quoted(super::replica::REPLICATION_USER)?,
        ),
        ("use_replication_slots", "yes".into()),
    ];
    if let Some(location) = &instance.location {
        settings.push(("location", quoted(location)?));
    }
    settings.extend([
        ("priority", vars.repmgr_priority.unwrap_or(100).to_string()),
        (
            "failover",
            vars.repmgr_failover
                .unwrap_or(RepmgrFailover::Automatic)
                .as_str()
                .into(),
        ),
        (
            "promote_command",
            quoted(&format!("{repmgr} standby promote -f {conf_path}"))?,
        ),
        (
            "follow_command",
            quoted(&format!(
                "{repmgr} standby follow -f {conf_path} --upstream-node-id=%n"
            ))?,
        ),
        (
            "reconnect_attempts",
            vars.repmgr_reconnect_attempts.unwrap_or(3).to_string(),
        ),
        (
            "reconnect_interval",
            vars.repmgr_reconnect_interval.unwrap_or(2).to_string(),
        ),
        ("monitor_interval_secs", "2".into()),
        ("connection_check_type", quoted("ping")?),
        ("async_query_timeout", "60".into()),
        ("log_level", quoted("INFO")?),
        ("service_start_command", quoted(&systemctl("start"))?),
        ("service_stop_command", quoted(&systemctl("stop"))?),
        ("service_restart_command", quoted(&systemctl("restart"))?),
        ("service_reload_command", quoted(&systemctl("reload"))?),
    ]);
    let mut out =
        String::from("# Managed by tpa: changes made here are overwritten by the next deploy.\n");
    for (key, value) in settings {
        out.push_str(&format!("{key}={value}\n"));
    }
    Ok(out)
}

/// A repmgr.conf string value: single-quoted; a value that repmgr's parser could misread
/// (quotes, backslashes, control characters) is refused rather than escaped.
fn quoted(value: &str) -> Result<String, String> {
    if value
        .chars()
        .any(|c| c == '\'' || c == '\\' || c.is_control())
    {
        return Err(format!(
            "{value:?} cannot go into repmgr.conf (quotes, backslashes and control characters \
             are not allowed there); change it in config.yml"
        ));
    }
    Ok(format!("'{value}'"))
}

/// A repmgr node's `repmgr` stage, after its Postgres stages: repmgr.conf and repmgrd's unit,
/// the repmgr role and database (the primary; a witness has its own), the registration as
/// its live `role`, then repmgrd. A standby registers after its upstream, a witness after the
/// primary: repmgr needs their records first. Replicas clone without waiting for this stage.
pub fn stage(
    input: &PlanInput<'_>,
    instance: &Instance,
    host: &HostState,
    role: PostgresRole,
) -> Result<Stage, String> {
    let topology = &input.state.topology;
    let port = host.settings.postgres.port;
    let mut resources = files(conf(input, instance, host)?, host);
    if role == PostgresRole::Replica {
        resources.extend(primary_replayed(host));
    } else {
        let verifiers = input.state.verifiers.by_user();
        resources.extend(role_and_database(
            verifiers.get(USER).map(String::as_str),
            port,
        ));
    }
    let upstream = topology.upstream(&instance.name);
    let upstream_node = upstream
        .and_then(|u| input.cluster.instance(u))
        .map(|u| u.node);
    let primary = topology.primary();
    let primary_address = primary
        .and_then(|p| input.inventory.host(p))
        .map(|h| h.address.to_string());
    resources.push(register(
        host,
        instance.node,
        role,
        upstream_node.filter(|_| role == PostgresRole::Replica),
        primary_address.filter(|_| role == PostgresRole::Witness),
    ));
    resources.push(daemon(host));
    let waits_for = match role {
        PostgresRole::Primary => None,
        PostgresRole::Replica => upstream,
        PostgresRole::Witness => primary,
    };
    Ok(Stage {
        name: StageName::Repmgr,
        resources,
        after: waits_for
            .map(|h| vec![(h.to_string(), StageName::Repmgr)])
            .unwrap_or_default(),
    })
}

/// The files every repmgr node has: repmgr.conf, the sudoers rule, the repmgrd unit.
pub fn files(conf: String, host: &HostState) -> Vec<ResourceSpec> {
    let conf_path = conf_path(&host.settings);
    let bin = &host.settings.bin_dir;
    let sudo = ["start", "stop", "restart", "reload"]
        .map(|op| format!("/usr/bin/systemctl {op} postgres"))
        .join(", ");
    vec![
        dir("/etc/repmgr", "root", 0o755),
        dir(
            &format!("/etc/repmgr/{}", host.settings.postgres_version),
            "root",
            0o755,
        ),
        file(&conf_path, conf, "postgres", 0o640),
        file(
            SUDOERS_PATH,
            format!(
                "# Managed by tpa: repmgr (as postgres) may manage tpa's postgres.service only.\n\
                 postgres ALL=(root) NOPASSWD: {sudo}\n"
            ),
            "root",
            0o440,
        ),
        file(
            &format!("/etc/systemd/system/{UNIT}"),
            format!(
                "# Managed by tpa.\n[Unit]\nDescription=repmgrd, repmgr's failover daemon \
                 (tpa)\nAfter=network-online.target postgres.service\n\n[Service]\n\
                 Type=simple\nUser=postgres\nGroup=postgres\nExecStart={bin}/repmgrd -f \
                 {conf_path} --daemonize=false\nRestart=always\nRestartSec=2\n\n[Install]\n\
                 WantedBy=multi-user.target\n"
            ),
            "root",
            0o644,
        ),
    ]
}

/// repmgrd, running and enabled; restarted when its configuration or unit changes.
pub fn daemon(host: &HostState) -> ResourceSpec {
    running_service(
        UNIT,
        vec![],
        vec![
            id("file", &conf_path(&host.settings)),
            id("file", &format!("/etc/systemd/system/{UNIT}")),
        ],
    )
}

/// On the primary (and a witness: its own repmgr database): the repmgr role and database.
pub fn role_and_database(verifier: Option<&str>, port: u16) -> Vec<ResourceSpec> {
    let database = PostgresDatabase {
        name: DATABASE.into(),
        owner: Some(USER.into()),
        encoding: None,
        lc_collate: None,
        lc_ctype: None,
        template: None,
        extensions: vec![],
    };
    vec![
        users::role(&user(), verifier, port),
        users::create_database(&database, port),
        users::database_owner(&database, port),
    ]
}

/// Registers the node as `role` (upstream: its live upstream's node id), unless the node's
/// local copy of repmgr's metadata already says exactly that.
pub fn register(
    host: &HostState,
    node: u32,
    role: PostgresRole,
    upstream_node: Option<u32>,
    primary_address: Option<String>,
) -> ResourceSpec {
    let repmgr = format!("{}/repmgr", host.settings.bin_dir);
    let conf = conf_path(&host.settings);
    let port = host.settings.postgres.port;
    let mut argv = vec![repmgr, "-f".into(), conf];
    let (kind, condition) = match role {
        PostgresRole::Primary => ("primary", String::new()),
        PostgresRole::Replica => (
            "standby",
            upstream_node
                .map(|u| format!(" and upstream_node_id = {u}"))
                .unwrap_or_default(),
        ),
        PostgresRole::Witness => ("witness", String::new()),
    };
    argv.extend([kind.into(), "register".into(), "--force".into()]);
    let mut env = vec![];
    match role {
        PostgresRole::Replica => {
            if let Some(u) = upstream_node {
                argv.extend(["--upstream-node-id".into(), u.to_string()]);
            }
        }
        PostgresRole::Witness => {
            if let Some(address) = primary_address {
                argv.extend(["-h".into(), address, "-p".into(), port.to_string()]);
            }
            // `-h` carries no TLS settings: libpq's environment gives them.
            env = vec![
                EnvVar::new("PGSSLMODE", "verify-full"),
                EnvVar::new("PGSSLROOTCERT", CA_FILE),
            ];
        }
        PostgresRole::Primary => {}
    }
    let check = format!(
        "select 1 / count(*) from repmgr.nodes where node_id = {node} and type = {} and \
         active{condition}",
        literal(kind)
    );
    ResourceSpec {
        id: id("repmgr", &format!("{kind}-register")),
        kind: Resource::Command(Command {
            argv,
            creates: None,
            unless: None,
            run_as: Some("postgres".into()),
            env,
            secret_env: false,
            timeout_secs: Some(120),
            unless_sql: Some(sql_succeeds(host, &check)),
        }),
    }
}

/// On a standby, before `standby register`: waits (up to [`REPLAYED_WAIT_SECS`] each) until
/// it has replayed the repmgr database, then the primary's node record, which `standby
/// register` reads locally. A replica clones before the primary registers, so under load they
/// can arrive a few seconds after the upstream's `repmgr` stage is done.
fn primary_replayed(host: &HostState) -> Vec<ResourceSpec> {
    let port = host.settings.postgres.port;
    let tries = REPLAYED_WAIT_SECS * 2;
    let replayed = format!(
        "exists (select 1 from pg_database where datname = {})",
        literal(DATABASE)
    );
    let database = super::replica::sql(
        id("repmgr", "database-replayed"),
        format!("select {replayed}"),
        super::replica::wait_until(
            &replayed,
            REPLAYED_WAIT_SECS,
            "the repmgr database has not replayed here",
            "pg_stat_wal_receiver",
        ),
        port,
    );
    // The table is looked for in pg_class, whose rows each statement reads with a new
    // snapshot: on a standby, `to_regclass` (no lock, so no cache invalidation) keeps the miss
    // it cached at the loop's start for the whole transaction, and never saw the table replay.
    let wait = format!(
        "do $$ declare known boolean := false; begin\n  for i in 1..{tries} loop\n    if \
         exists (select 1 from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = \
         c.relnamespace where n.nspname = 'repmgr' and c.relname = 'nodes') then\n      \
         execute {sql} into known;\n      \
         if known then return; end if;\n    end if;\n    perform pg_sleep(0.5);\n  end loop;\n  \
         raise exception 'the primary''s repmgr registration has not replayed here after \
         {REPLAYED_WAIT_SECS} s: see pg_stat_wal_receiver';\nend $$",
        sql = literal("select count(*) > 0 from repmgr.nodes where type = 'primary' and active"),
    );
    let argv = psql_succeeds(host, &wait);
    let record = ResourceSpec {
        id: id("repmgr", "primary-replayed"),
        kind: Resource::Command(Command {
            argv,
            creates: None,
            unless: None,
            run_as: Some("postgres".into()),
            env: vec![],
            secret_env: false,
            timeout_secs: Some(REPLAYED_WAIT_SECS + 30),
            unless_sql: Some(sql_succeeds(host, PRIMARY_KNOWN)),
        }),
    };
    vec![database, record]
}

/// What a node's copy of repmgr's metadata says once the primary has registered.
const PRIMARY_KNOWN: &str =
    "select 1 / count(*) from repmgr.nodes where type = 'primary' and active";

/// How long a standby waits for the primary's registration to replay.
pub const REPLAYED_WAIT_SECS: u32 = 60;

/// A guard that passes when SQL succeeds on the local repmgr database (a division by a zero
/// count fails it); the agent runs it without a psql process.
fn sql_succeeds(host: &HostState, sql: &str) -> SqlGuard {
    SqlGuard {
        database: DATABASE.into(),
        port: host.settings.postgres.port,
        sql: sql.into(),
    }
}

/// `psql … -c SQL` against the local repmgr database: exits 0 only when SQL succeeds.
fn psql_succeeds(host: &HostState, sql: &str) -> Vec<String> {
    vec![
        format!("{}/psql", host.settings.bin_dir),
        "-XAtq".into(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
        "-p".into(),
        host.settings.postgres.port.to_string(),
        "-d".into(),
        DATABASE.into(),
        "-c".into(),
        sql.into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_repmgr_could_misread_are_refused() {
        assert_eq!(quoted("brussels").unwrap(), "'brussels'");
        assert!(quoted("a'b").is_err());
        assert!(quoted("a\\b").is_err());
        assert!(quoted("a\nnode_id=9").is_err());
    }
}
