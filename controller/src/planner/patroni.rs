//! Patroni with etcd (`failover_manager: patroni`), secured end to end.
//!
//! - **etcd**: one member per `etcd`-role instance, our own `etcd.service` (shadowing the
//!   Debian unit) reading `/etc/tpa/etcd.yml`; peer and client traffic over TLS with the
//!   host's HA certificate (the cluster CA signs it for the host's name and address, usable
//!   as server and client), client-certificate authentication on both ports. The stage comes
//!   right after `sys` so that every member starts at about the same time (a new member waits
//!   for a quorum before it reports ready), and ends with `etcdctl endpoint health` over TLS.
//! - **Patroni**: as TPA does it, we initialise the primary and clone the replicas under our
//!   `postgres.service`; then `/etc/patroni/<cluster>.yml` and `patroni@<cluster>.service`
//!   take over (the primary first): `postgres.service` is stopped and disabled and Patroni
//!   starts Postgres itself. Patroni writes its `postgresql.conf` into its own directory
//!   (`config_dir`) and includes ours (`custom_conf`, with `include_dir = 'conf.d'`), so it
//!   never rewrites a file we manage and we never write one it manages; its parameters come
//!   after ours and win. GUCs that must agree across members (and `postgres_conf_settings`)
//!   live in the DCS: the live primary's last resource compares them with `GET /config` and
//!   applies a difference with `PATCH /config`, then restarts the members that report
//!   `pending_restart`, one at a time, through the REST API.
//! - The REST API listens on TLS (the HA certificate) and requires basic authentication for
//!   writes (user `patroni`, its password generated into the secrets store); `ctl:` in the
//!   same file lets `patronictl -c /etc/patroni/<cluster>.yml` work without flags.
//!
//! The small program that does the takeover and the DCS comparison is `patroni-tpa.py`.

use serde_json::{Map, Value, json};
use tpa_common::resource::{Command, File, Permissions, Resource, ResourceSpec};

use super::dir;
use super::postgres::owned_file;
use super::replica::{CA_FILE, REPLICATION_USER, sql};
use super::topology::PostgresRole;
use super::users::{self, literal};
use super::{HostState, PlanInput, Stage, StageName, id, running_service};
use crate::config::{Cluster, FailoverManager, Instance, PostgresUser, Role};

/// The REST API's user for writes.
pub const REST_USER: &str = "patroni";
/// The REST API's port (TPA's).
pub const REST_PORT: u16 = 8008;
/// etcd's client and peer ports.
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
/// Our etcd unit: the Debian package's name, so that only one etcd runs.
pub const ETCD_UNIT: &str = "etcd.service";
const ETCD_CONF: &str = "/etc/tpa/etcd.yml";
/// Restarts a member after its files changed, one member at a time (`etcdctl lock`).
const ETCD_HELPER: &str = "/etc/tpa/etcd-tpa";
const ETCD_HELPER_SOURCE: &str = include_str!("etcd-tpa.sh");
/// The program beside Patroni (takeover, DCS comparison).
pub const HELPER: &str = "/etc/tpa/patroni-tpa";
const HELPER_SOURCE: &str = include_str!("patroni-tpa.py");
const UNIT_TEMPLATE: &str = "/etc/systemd/system/patroni@.service";
/// Patroni's own passfile (it rewrites it; ours is replica::PASSFILE).
const PATRONI_PGPASS: &str = "/var/lib/postgresql/.pgpass_patroni";

/// The role Patroni runs pg_rewind as (`authentication.rewind`), so that a former leader that
/// diverged rejoins by rewinding instead of a new clone.
pub const REWIND_USER: &str = "rewind";

/// The functions pg_rewind calls on its source: the rewind role may execute them and has no
/// other privilege (PostgreSQL's documented least privilege for pg_rewind).
const REWIND_FUNCTIONS: &[&str] = &[
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
];

/// The rewind role as a user the users stage renders (a SCRAM verifier from the secrets store).
pub fn rewind_user() -> PostgresUser {
    PostgresUser {
        username: REWIND_USER.into(),
        generate_password: true,
        role_attrs: vec!["LOGIN".into()],
        granted_roles: vec![],
        conn_limit: None,
        password_encryption: None,
    }
}

/// On the primary: the rewind role and its grants (replicated like every role).
pub fn rewind_role(verifier: Option<&str>, port: u16) -> Vec<ResourceSpec> {
    let user = literal(REWIND_USER);
    let check = REWIND_FUNCTIONS
        .iter()
        .map(|f| format!("has_function_privilege({user}, {}, 'EXECUTE')", literal(f)))
        .collect::<Vec<_>>()
        .join(" and ");
    let apply: String = REWIND_FUNCTIONS
        .iter()
        .map(|f| format!("grant execute on function {f} to {REWIND_USER};\n"))
        .collect();
    vec![
        users::role(&rewind_user(), verifier, port),
        sql(
            id("grant", "rewind_functions:rewind"),
            format!("select {check}"),
            apply,
            port,
        ),
    ]
}

/// True when config.yml's failover manager is Patroni.
pub fn configured(cluster: &Cluster) -> bool {
    cluster
        .instances
        .first()
        .is_some_and(|i| i.vars.failover_manager() == FailoverManager::Patroni)
}

/// Where etcd members keep their data (a directory per cluster below it); the etcd package's
/// home for its user.
pub const ETCD_DATA_PARENT: &str = "/var/lib/etcd";

/// True when this deploy sets up Patroni (its Postgres hosts) and etcd.
pub fn enabled(input: &PlanInput<'_>) -> bool {
    configured(input.cluster)
}

/// True when `instance` gets an HA certificate (etcd member or Patroni node).
pub fn needs_ha_cert(cluster: &Cluster, instance: &Instance) -> bool {
    configured(cluster)
        && (instance.has_role(Role::Etcd)
            || instance.has_role(Role::Primary)
            || instance.has_role(Role::Replica))
}

/// `/etc/tpa/<cluster>-ha.crt` and `.key`: etcd's and Patroni's certificate and key.
pub fn ha_cert_paths(cluster_name: &str) -> (String, String) {
    (
        format!("/etc/tpa/{cluster_name}-ha.crt"),
        format!("/etc/tpa/{cluster_name}-ha.key"),
    )
}

pub fn conf_path(cluster_name: &str) -> String {
    format!("/etc/patroni/{cluster_name}.yml")
}

fn dcs_path(cluster_name: &str) -> String {
    format!("/etc/patroni/{cluster_name}.dcs.json")
}

pub fn unit(cluster_name: &str) -> String {
    format!("patroni@{cluster_name}.service")
}

/// The slot Patroni keeps for a member: its name, lowercased, every other character `_`.
pub fn slot_name(member: &str) -> String {
    member
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}

/// The etcd members: (name, address) of every deployed `etcd` instance, in config order.
pub fn etcd_members(input: &PlanInput<'_>) -> Vec<(String, String)> {
    input
        .cluster
        .instances
        .iter()
        .filter(|i| i.has_role(Role::Etcd) && !i.provision_only)
        .filter_map(|i| {
            let host = input.inventory.host(&i.name)?;
            Some((i.name.clone(), host.address.to_string()))
        })
        .collect()
}

/// The HA key, handed from root to whoever reads it: Patroni (postgres) and etcd.
fn key_permissions(input: &PlanInput<'_>, instance: &Instance) -> ResourceSpec {
    let (_, key) = ha_cert_paths(&input.cluster.name);
    let postgres = input.state.topology.role(&instance.name).is_some();
    let etcd = instance.has_role(Role::Etcd);
    let (owner, group, mode) = match (postgres, etcd) {
        (true, true) => ("postgres", "etcd", 0o640),
        (true, false) => ("postgres", "postgres", 0o600),
        (false, _) => ("etcd", "etcd", 0o600),
    };
    ResourceSpec {
        id: id("permissions", &key),
        kind: Resource::Permissions(Permissions {
            path: key,
            owner: owner.into(),
            group: group.into(),
            mode,
        }),
    }
}

fn cert_files(input: &PlanInput<'_>, instance: &Instance, host: &HostState) -> Vec<ResourceSpec> {
    let (cert, _) = ha_cert_paths(&input.cluster.name);
    let mut out = vec![dir("/etc/tpa", "root", 0o755)];
    out.push(owned_file(
        CA_FILE,
        input.state.ca_pem.clone(),
        "root",
        0o644,
    ));
    if let Some(pem) = &host.ha_cert {
        out.push(owned_file(&cert, pem.clone(), "root", 0o644));
    }
    out.push(key_permissions(input, instance));
    out
}

/// The etcd stage of an `etcd` instance: certificate, configuration, unit, health.
pub fn etcd_stage(
    input: &PlanInput<'_>,
    instance: &Instance,
    host: &HostState,
) -> Result<Stage, String> {
    let cluster = &input.cluster.name;
    let members = etcd_members(input);
    let address = address_of(input, instance)?;
    let (cert, key) = ha_cert_paths(cluster);
    let tls = json!({
        "cert-file": cert,
        "key-file": key,
        "trusted-ca-file": CA_FILE,
        "client-cert-auth": true,
    });
    let data_dir = format!("{ETCD_DATA_PARENT}/{}", cluster.replace('-', "_"));
    let conf = json!({
        "name": instance.name,
        "data-dir": data_dir,
        "listen-peer-urls": format!("https://{address}:{ETCD_PEER_PORT}"),
        "listen-client-urls": format!("https://{address}:{ETCD_CLIENT_PORT}"),
        "initial-advertise-peer-urls": format!("https://{address}:{ETCD_PEER_PORT}"),
        "advertise-client-urls": format!("https://{address}:{ETCD_CLIENT_PORT}"),
        "initial-cluster": members
            .iter()
            .map(|(n, a)| format!("{n}=https://{a}:{ETCD_PEER_PORT}"))
            .collect::<Vec<_>>()
            .join(","),
        "initial-cluster-token": cluster,
        "initial-cluster-state": "new",
        "client-transport-security": tls,
        "peer-transport-security": tls,
        "auto-compaction-mode": "revision",
        "auto-compaction-retention": "10",
        "enable-v2": false,
        // Patroni's etcd3 client talks to the gRPC gateway, which a config file leaves off.
        "enable-grpc-gateway": true,
    });
    let mut resources = cert_files(input, instance, host);
    resources.push(dir(&data_dir, "etcd", 0o700));
    let conf_file = owned_file(
        ETCD_CONF,
        format!(
            "# Managed by tpa (JSON, which etcd reads as YAML).\n{}\n",
            serde_json::to_string_pretty(&conf).expect("JSON")
        ),
        "root",
        0o644,
    );
    let unit_path = format!("/etc/systemd/system/{ETCD_UNIT}");
    let unit = owned_file(
        &unit_path,
        format!(
            "# Managed by tpa: etcd for Patroni, TLS from the cluster CA.\n[Unit]\n\
             Description=etcd (tpa)\nAfter=network-online.target\nWants=network-online.target\n\n\
             [Service]\nType=notify\nUser=etcd\nGroup=etcd\nExecStart=/usr/bin/etcd \
             --config-file {ETCD_CONF}\nRestart=always\nRestartSec=5\nTimeoutStartSec=300\n\
             LimitNOFILE=65536\n\n[Install]\nWantedBy=multi-user.target\n"
        ),
        "root",
        0o644,
    );
    // Our unit replaces the one of Debian's package, whose etcd (its default configuration)
    // may run since the package was installed: restarted when the unit file changes. After
    // that, a member that runs is restarted after a change by the helper, under a
    // cluster-wide lock, so the members never restart all at once.
    let restart_on = vec![unit.id.clone()];
    resources.extend([conf_file, unit]);
    resources.push(running_service(ETCD_UNIT, vec![], restart_on));
    resources.push(owned_file(
        ETCD_HELPER,
        etcd_helper(&members, &cert, &key, &[ETCD_CONF, &unit_path]),
        "root",
        0o755,
    ));
    resources.push(ResourceSpec {
        id: id("etcd", "restart-after-change"),
        kind: Resource::Command(Command {
            argv: vec![ETCD_HELPER.into(), "restart".into()],
            creates: None,
            unless: Some(vec![ETCD_HELPER.into(), "current".into()]),
            run_as: None,
            env: vec![],
            secret_env: false,
            timeout_secs: Some(600),
            unless_sql: None,
        }),
    });
    let health = etcdctl(&address, cluster, &["endpoint", "health"]);
    resources.push(ResourceSpec {
        id: id("etcd", "endpoint-health"),
        kind: Resource::Command(Command {
            argv: health.clone(),
            creates: None,
            unless: Some(health),
            run_as: None,
            env: vec![],
            secret_env: false,
            timeout_secs: Some(60),
            unless_sql: None,
        }),
    });
    Ok(Stage {
        name: StageName::Etcd,
        resources,
        after: vec![],
    })
}

/// The restart helper with this cluster's endpoints and files filled in. Every value is an
/// address, a port or a path made from the validated cluster name, single-quoted for sh.
fn etcd_helper(members: &[(String, String)], cert: &str, key: &str, files: &[&str]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let endpoints = members
        .iter()
        .map(|(_, a)| format!("https://{a}:{ETCD_CLIENT_PORT}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut watched: Vec<&str> = files.to_vec();
    watched.extend([cert, key, CA_FILE]);
    ETCD_HELPER_SOURCE
        .replace("@ENDPOINTS@", &quote(&endpoints))
        .replace("@CACERT@", &quote(CA_FILE))
        .replace("@CERT@", &quote(cert))
        .replace("@KEY@", &quote(key))
        .replace("@FILES@", &quote(&watched.join(" ")))
}

/// `etcdctl endpoint health` against the member at `address`, bounded to a few seconds (what
/// `status` and the agents' health checks ask).
pub fn etcd_health(address: &str, cluster: &str) -> Vec<String> {
    etcdctl(
        address,
        cluster,
        &[
            "--dial-timeout=3s",
            "--command-timeout=5s",
            "endpoint",
            "health",
        ],
    )
}

/// `etcdctl` against the member at `address`, over TLS with the host's HA certificate.
pub fn etcdctl(address: &str, cluster: &str, args: &[&str]) -> Vec<String> {
    let (cert, key) = ha_cert_paths(cluster);
    let mut argv = vec![
        "/usr/bin/etcdctl".to_string(),
        format!("--endpoints=https://{address}:{ETCD_CLIENT_PORT}"),
        format!("--cacert={CA_FILE}"),
        format!("--cert={cert}"),
        format!("--key={key}"),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// The GUCs every member must agree on (Patroni passes them on the command line, with its
/// own defaults when the DCS does not say), TPA's values, then `postgres_conf_settings`.
fn parameters(input: &PlanInput<'_>, instance: &Instance) -> Map<String, Value> {
    let n = input
        .cluster
        .instances
        .iter()
        .filter(|i| i.has_role(Role::Postgres))
        .count() as u32;
    let headroom = |w: u32| (w.max(1).div_ceil(16) * 16).to_string();
    let mut p = Map::new();
    let mut set = |k: &str, v: String| {
        p.insert(k.into(), Value::String(v));
    };
    set(
        "max_connections",
        instance.vars.max_connections.unwrap_or(250).to_string(),
    );
    set("max_wal_senders", headroom(2 * n));
    set("max_replication_slots", headroom(2 * n + 3));
    set("max_worker_processes", headroom(2 * n));
    set("max_prepared_transactions", "0".into());
    set("wal_level", "logical".into());
    set("wal_log_hints", "on".into());
    set("wal_keep_size", "0".into());
    set("track_commit_timestamp", "off".into());
    for (k, v) in &instance.vars.postgres_conf_settings {
        set(k, v.clone());
    }
    p
}

/// The dynamic configuration (the DCS's `/config`): Patroni's timings, slots, parameters.
pub fn dynamic(input: &PlanInput<'_>, instance: &Instance) -> Value {
    let mut ignore = vec![];
    if super::barman::wanted(input.cluster) {
        ignore.push(json!({"name": super::barman::SLOT, "type": "physical"}));
    }
    let mut dcs = json!({
        "ttl": 30,
        "loop_wait": 10,
        "retry_timeout": 10,
        "maximum_lag_on_failover": 1048576,
        "ignore_slots": ignore,
        "postgresql": {
            "use_slots": true,
            "use_pg_rewind": true,
            "parameters": parameters(input, instance),
        },
    });
    if let Some(extra) = &instance.vars.patroni_dynamic_conf_settings {
        merge(&mut dcs, extra);
    }
    dcs
}

/// Merges `extra` into `base` as TPA does with `patroni_*conf_settings`: mappings key by key,
/// at any depth; anything else (a value, a list) replaces what `base` had.
fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (k, v) in extra {
                merge(base.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (base, extra) => *base = extra.clone(),
    }
}

/// `/etc/patroni/<cluster>.yml` (JSON: a subset of YAML, so every value is quoted for us).
pub fn conf(
    input: &PlanInput<'_>,
    instance: &Instance,
    host: &HostState,
) -> Result<String, String> {
    let cluster = &input.cluster.name;
    let address = address_of(input, instance)?;
    let (cert, key) = ha_cert_paths(cluster);
    let rest_password = input
        .state
        .patroni_password
        .as_ref()
        .map(|p| p.expose().clone())
        .unwrap_or_default();
    let replication_password = input
        .state
        .replication_password
        .as_ref()
        .map(|p| p.expose().clone())
        .unwrap_or_default();
    let rewind_password = input
        .state
        .rewind_password
        .as_ref()
        .map(|p| p.expose().clone())
        .unwrap_or_default();
    let pg = &host.settings.postgres;
    let hosts: Vec<String> = etcd_members(input)
        .iter()
        .map(|(_, a)| format!("{a}:{ETCD_CLIENT_PORT}"))
        .collect();
    let mut conf = json!({
        "scope": cluster,
        "namespace": "/tpa/",
        "name": instance.name,
        "restapi": {
            "listen": format!("{address}:{REST_PORT}"),
            "connect_address": format!("{address}:{REST_PORT}"),
            "certfile": cert,
            "keyfile": key,
            "cafile": CA_FILE,
            "authentication": {"username": REST_USER, "password": rest_password},
        },
        "ctl": {"cacert": CA_FILE, "certfile": cert, "keyfile": key},
        "etcd3": {
            "hosts": hosts,
            "protocol": "https",
            "cacert": CA_FILE,
            "cert": cert,
            "key": key,
        },
        "bootstrap": {"dcs": dynamic(input, instance)},
        "postgresql": {
            // The first address is where Patroni connects to its own Postgres over TCP (the
            // replication user, TLS verify-full): the host's address, which its certificate
            // names.
            "listen": format!("{address},127.0.0.1:{}", pg.port),
            "connect_address": format!("{address}:{}", pg.port),
            "data_dir": pg.data_dir,
            "bin_dir": host.settings.bin_dir,
            "config_dir": config_dir(cluster),
            "custom_conf": format!("{}/postgresql.conf", pg.data_dir),
            "pgpass": PATRONI_PGPASS,
            "use_unix_socket": true,
            "authentication": {
                "superuser": {"username": "postgres"},
                "replication": {
                    "username": REPLICATION_USER,
                    "password": replication_password,
                    "sslmode": "verify-full",
                    "sslrootcert": CA_FILE,
                },
                "rewind": {
                    "username": REWIND_USER,
                    "password": rewind_password,
                    "sslmode": "verify-full",
                    "sslrootcert": CA_FILE,
                },
            },
            "parameters": {
                "hba_file": format!("{}/pg_hba.conf", pg.data_dir),
                "ident_file": format!("{}/pg_ident.conf", pg.data_dir),
                "unix_socket_directories": "/var/run/postgresql",
            },
            "create_replica_methods": ["basebackup"],
            "basebackup": {"checkpoint": "fast"},
        },
        "watchdog": {"mode": "off"},
        "tags": {
            "nofailover": false,
            "noloadbalance": false,
            "clonefrom": false,
            "nosync": false,
        },
    });
    if let Some(extra) = &instance.vars.patroni_conf_settings {
        merge(&mut conf, extra);
    }
    Ok(format!(
        "{}\n",
        serde_json::to_string_pretty(&conf).expect("JSON")
    ))
}

/// Where Patroni writes its postgresql.conf (not the data directory, whose postgresql.conf is
/// ours).
fn config_dir(cluster: &str) -> String {
    format!("/etc/patroni/{cluster}")
}

/// The helper program, written before Postgres first starts (it says whether Postgres runs,
/// under our unit or Patroni's).
pub fn helper() -> ResourceSpec {
    owned_file(HELPER, HELPER_SOURCE.to_string(), "root", 0o755)
}

/// Before Patroni owns Postgres: starts our postgres.service, unless it or Patroni runs it.
pub fn start_postgres(cluster: &str) -> ResourceSpec {
    ResourceSpec {
        id: id("command", "start-postgres"),
        kind: Resource::Command(Command {
            argv: vec![
                "/usr/bin/systemctl".into(),
                "start".into(),
                "postgres.service".into(),
            ],
            creates: None,
            unless: Some(vec![HELPER.into(), "postgres-up".into(), cluster.into()]),
            run_as: None,
            env: vec![],
            secret_env: false,
            timeout_secs: Some(300),
            unless_sql: None,
        }),
    }
}

/// The last stage of a Patroni node: its configuration, the takeover, the DCS on the primary.
pub fn stage(
    input: &PlanInput<'_>,
    instance: &Instance,
    host: &HostState,
) -> Result<Stage, String> {
    let cluster = &input.cluster.name;
    let topology = &input.state.topology;
    let role = topology
        .role(&instance.name)
        .ok_or_else(|| format!("{}: not a Postgres host", instance.name))?;
    let mut resources = vec![];
    if !instance.has_role(Role::Etcd) {
        resources.extend(cert_files(input, instance, host));
    }
    resources.push(dir("/etc/patroni", "root", 0o755));
    resources.push(dir(&config_dir(cluster), "postgres", 0o700));
    let conf_path = conf_path(cluster);
    let conf_file = ResourceSpec {
        id: id("file", &conf_path),
        kind: Resource::File(File {
            path: conf_path.clone(),
            content: conf(input, instance, host)?.into(),
            owner: "postgres".into(),
            group: "postgres".into(),
            mode: 0o640,
            secret: true,
        }),
    };
    let conf_id = conf_file.id.clone();
    resources.push(conf_file);
    let dcs = dcs_path(cluster);
    resources.push(owned_file(
        &dcs,
        format!(
            "{}\n",
            serde_json::to_string_pretty(&dynamic(input, instance)).expect("JSON")
        ),
        "root",
        0o644,
    ));
    let unit_file = owned_file(
        UNIT_TEMPLATE,
        "# Managed by tpa.\n[Unit]\nDescription=Patroni %i (tpa)\nAfter=network-online.target \
         etcd.service\n\n[Service]\nType=simple\nUser=postgres\nGroup=postgres\n\
         ExecStart=/usr/bin/patroni /etc/patroni/%i.yml\nExecReload=/bin/kill -HUP $MAINPID\n\
         KillMode=process\nTimeoutSec=30\nRestart=on-failure\nRestartSec=5\n\n[Install]\n\
         WantedBy=multi-user.target\n"
            .into(),
        "root",
        0o644,
    );
    resources.push(unit_file);
    let leader = role == PostgresRole::Primary;
    resources.push(ResourceSpec {
        id: id("patroni", "takeover"),
        kind: Resource::Command(Command {
            argv: vec![
                HELPER.into(),
                "takeover".into(),
                cluster.clone(),
                if leader { "leader" } else { "replica" }.into(),
            ],
            creates: None,
            unless: Some(vec![HELPER.into(), "owned".into(), cluster.clone()]),
            run_as: None,
            env: vec![],
            secret_env: false,
            timeout_secs: Some(300),
            unless_sql: None,
        }),
    });
    let unit = unit(cluster);
    resources.push(running_service(&unit, vec![conf_id], vec![]));
    // Files of ours that Postgres reads on reload (pg_hba.conf, conf.d, the certificate):
    // Patroni does not watch them, so a change is reloaded here.
    resources.push(ResourceSpec {
        id: id("patroni", "postgres-reload"),
        kind: Resource::Command(Command {
            argv: vec![HELPER.into(), "reload".into(), cluster.clone()],
            creates: None,
            unless: Some(vec![HELPER.into(), "loaded".into(), cluster.clone()]),
            run_as: None,
            env: vec![],
            secret_env: false,
            timeout_secs: Some(60),
            unless_sql: None,
        }),
    });
    if leader {
        resources.push(ResourceSpec {
            id: id("patroni", "dcs-config"),
            kind: Resource::Command(Command {
                argv: vec![HELPER.into(), "sync".into(), cluster.clone()],
                creates: None,
                unless: Some(vec![HELPER.into(), "synced".into(), cluster.clone()]),
                run_as: None,
                env: vec![],
                secret_env: false,
                timeout_secs: Some(600),
                unless_sql: None,
            }),
        });
    }
    let mut after: Vec<(String, StageName)> = etcd_members(input)
        .into_iter()
        .filter(|(n, _)| *n != instance.name)
        .map(|(n, _)| (n, StageName::Etcd))
        .collect();
    if leader {
        // Postgres restarts under Patroni: not while a replica clones from it.
        after.extend(
            topology
                .members
                .iter()
                .filter(|(_, m)| m.role == PostgresRole::Replica)
                .map(|(n, _)| (n.clone(), StageName::PostgresConfig)),
        );
    } else if let Some(p) = topology.primary() {
        after.push((p.to_string(), StageName::Patroni));
    }
    Ok(Stage {
        name: StageName::Patroni,
        resources,
        after,
    })
}

/// The address `instance` was provisioned with (its certificate names it).
fn address_of(input: &PlanInput<'_>, instance: &Instance) -> Result<String, String> {
    input
        .inventory
        .host(&instance.name)
        .map(|h| h.address.to_string())
        .ok_or_else(|| format!("{}: not in the inventory", instance.name))
}
