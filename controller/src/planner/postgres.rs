//! Postgres on the primary and on replicas: packages come from `sys`; here the data directory,
//! initdb (primary) or the clone (replica, see `replica`), the conf.d split, pg_hba.conf, the
//! server certificate and tpa's `postgres.service`.

use tpa_common::resource::{
    Command, EnvVar, File, FileIfAbsent, FileLine, Permissions, Resource, ResourceSpec,
};

use super::postgres_conf::{self, ConfInput, HbaPeer};
use super::topology::PostgresRole;
use super::{HostState, PlanInput, Stage, StageName, dir, id, replica, repmgr, running_service};
use crate::config::{Instance, Role};
use crate::settings::PostgresSettings;

/// `<data_dir>/conf.d/<file>`.
fn conf_d(pg: &PostgresSettings, file: &str) -> String {
    format!("{}/conf.d/{file}", pg.data_dir)
}

/// GUCs whose change needs a restart (context `postmaster` in PostgreSQL 15–17), so that a
/// change to `postgres_conf_settings` restarts only when Postgres needs it.
const RESTART_GUCS: &[&str] = &[
    "archive_mode",
    "autovacuum_freeze_max_age",
    "autovacuum_max_workers",
    "autovacuum_multixact_freeze_max_age",
    "bonjour",
    "bonjour_name",
    "cluster_name",
    "commit_timestamp_buffers",
    "data_sync_retry",
    "dynamic_shared_memory_type",
    "event_source",
    "external_pid_file",
    "hot_standby",
    "huge_page_size",
    "huge_pages",
    "jit_provider",
    "listen_addresses",
    "logging_collector",
    "max_connections",
    "max_files_per_process",
    "max_locks_per_transaction",
    "max_logical_replication_workers",
    "max_pred_locks_per_transaction",
    "max_prepared_transactions",
    "max_replication_slots",
    "max_wal_senders",
    "max_worker_processes",
    "min_dynamic_shared_memory",
    "multixact_member_buffers",
    "multixact_offset_buffers",
    "notify_buffers",
    "old_snapshot_threshold",
    "pg_stat_statements.max",
    "port",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "reserved_connections",
    "serializable_buffers",
    "shared_buffers",
    "shared_memory_type",
    "shared_preload_libraries",
    "subtransaction_buffers",
    "superuser_reserved_connections",
    "track_activity_query_size",
    "track_commit_timestamp",
    "transaction_buffers",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "wal_buffers",
    "wal_decode_buffer_size",
    "wal_level",
    "wal_log_hints",
];

pub fn needs_restart(guc: &str) -> bool {
    RESTART_GUCS.contains(&guc.to_ascii_lowercase().as_str())
}

/// The install and config stages of a primary or (live role) replica, or why they cannot be
/// planned.
pub fn stages(
    input: &PlanInput<'_>,
    instance: &Instance,
    host: &HostState,
) -> Result<Vec<Stage>, String> {
    let topology = &input.state.topology;
    let state = input.state;
    let repmgr = repmgr::enabled(input);
    let access = if super::has_replicas(topology) {
        replica::access_files(
            &state.ca_pem,
            state.replication_password.as_ref(),
            state.repmgr_password.as_ref().filter(|_| repmgr),
        )
    } else {
        vec![]
    };
    if topology.role(&instance.name) != Some(PostgresRole::Replica) {
        let mut create = vec![initdb(host)];
        create.extend(access);
        return Ok(vec![
            install(host, create, vec![]),
            config(input, instance, host, None)?,
        ]);
    }
    let name = &instance.name;
    let upstream = topology.upstream(name).ok_or_else(|| {
        format!("{name}: a replica with no upstream; set `upstream` in config.yml")
    })?;
    let conninfo = replica::conninfo(input, name, upstream).ok_or_else(|| {
        format!(
            "{name}: its upstream {upstream} is not a deployed host of this cluster; set \
             `upstream` to a primary or replica that is deployed"
        )
    })?;
    let slot = replica::slot_for(input, name);
    let mut create = access;
    if topology.is_former_primary(name) {
        // pg_rewind needs a superuser connection to the source: repmgr's.
        let source = topology
            .primary()
            .filter(|_| repmgr)
            .and_then(|p| repmgr::conninfo(input, p));
        create.extend(replica::rejoin(host, source.as_deref(), &conninfo, &slot));
    }
    create.extend(replica::clone(host, &conninfo, &slot));
    let after = vec![replica::upstream_ready(upstream)];
    Ok(vec![
        install(host, create, after),
        config(input, instance, host, Some((conninfo, slot)))?,
    ])
}

fn initdb(host: &HostState) -> ResourceSpec {
    let l = &host.settings.postgres;
    ResourceSpec {
        id: id("command", "initdb"),
        kind: Resource::Command(Command {
            argv: vec![
                format!("{}/initdb", host.settings.bin_dir),
                "-D".into(),
                l.data_dir.clone(),
                "--data-checksums".into(),
                format!("--locale={}", l.locale),
                "--encoding=UTF8".into(),
                "--auth-local=peer".into(),
                "--auth-host=scram-sha-256".into(),
            ],
            creates: Some(format!("{}/PG_VERSION", l.data_dir)),
            unless: None,
            run_as: Some("postgres".into()),
            env: vec![EnvVar::new("TZ", "UTC")],
            secret_env: false,
            timeout_secs: None,
            unless_sql: None,
        }),
    }
}

/// The data directory, then `create` (initdb, or a replica's clone), then the conf.d include.
fn install(host: &HostState, create: Vec<ResourceSpec>, after: Vec<(String, StageName)>) -> Stage {
    let l = &host.settings.postgres;
    let parent = std::path::Path::new(&l.data_dir)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());
    let conf = format!("{}/postgresql.conf", l.data_dir);
    let mut resources = vec![
        dir(&parent, "postgres", 0o755),
        dir(&l.data_dir, "postgres", 0o700),
        dir("/etc/tpa", "root", 0o755),
    ];
    resources.extend(create);
    resources.extend([
        // initdb's postgresql.conf stays as it is; tpa's settings come from conf.d.
        ResourceSpec {
            id: id("file_line", &conf),
            kind: Resource::FileLine(FileLine {
                path: conf.clone(),
                line: "include_dir = 'conf.d'".into(),
            }),
        },
        dir(&format!("{}/conf.d", l.data_dir), "postgres", 0o700),
    ]);
    Stage {
        name: StageName::PostgresInstall,
        resources,
        after,
    }
}

/// `replication`: a replica's conninfo and slot.
fn config(
    input: &PlanInput<'_>,
    instance: &Instance,
    host: &HostState,
    replication: Option<(String, String)>,
) -> Result<Stage, String> {
    let repmgr = repmgr::enabled(input);
    let cluster = input.cluster;
    let l = &host.settings.postgres;
    let memory = Some(host.facts.memory_bytes)
        .filter(|m| *m > 0)
        .unwrap_or(1 << 30);
    let postgres_instances = cluster
        .instances
        .iter()
        .filter(|i| i.has_role(Role::Postgres))
        .count() as u32;
    let preload = vec!["pg_stat_statements".to_string()]
        .into_iter()
        .chain(repmgr.then(|| repmgr::USER.to_string()))
        .chain(instance.vars.preload_extensions.iter().cloned())
        .fold(Vec::<String>::new(), |mut acc, e| {
            if !acc.contains(&e) {
                acc.push(e);
            }
            acc
        });
    let conf_input = ConfInput {
        cert_file: &l.cert_file,
        key_file: &l.key_file,
        host_name: &instance.name,
        port: l.port,
        memory_bytes: memory,
        max_connections: instance.vars.max_connections.unwrap_or(250),
        shared_buffers_ratio: instance.vars.shared_buffers_ratio.unwrap_or(0.25),
        postgres_instances,
        password_encryption: "scram-sha-256",
        preload_libraries: &preload,
    };
    let (restart_settings, reload_settings): (std::collections::BTreeMap<_, _>, _) = instance
        .vars
        .postgres_conf_settings
        .clone()
        .into_iter()
        .partition(|(k, _)| needs_restart(k));

    let peers: Vec<HbaPeer> = cluster
        .instances
        .iter()
        .filter_map(|i| {
            let host = input.inventory.host(&i.name)?;
            Some(HbaPeer {
                name: i.name.clone(),
                address: host.address,
                postgres: i.has_role(Role::Postgres),
                barman: i.has_role(Role::Barman),
            })
        })
        .collect();

    let mut reload_files = vec![
        (
            conf_d(l, "0000-tpa.conf"),
            postgres_conf::reload_settings(&conf_input),
        ),
        (
            conf_d(l, "9900-tpa_postgres_conf_settings.conf"),
            postgres_conf::conf_settings(&reload_settings),
        ),
        // Before pg_hba.conf, which names its map: a reload reads both.
        (
            format!("{}/pg_ident.conf", l.data_dir),
            postgres_conf::pg_ident(),
        ),
        (
            format!("{}/pg_hba.conf", l.data_dir),
            postgres_conf::pg_hba(
                &peers,
                input.inventory.controller_address,
                "scram-sha-256",
                &instance.vars.postgres_hba_settings,
            ),
        ),
    ];
    if let Some((conninfo, slot)) = &replication {
        reload_files.push((conf_d(l, replica::CONF_FILE), replica::conf(conninfo, slot)));
    }
    // A replica cloned by this deploy first starts without restore_command: in standby mode
    // Postgres asks the archive before pg_wal for every segment, and each `barman-wal-restore`
    // is an SSH round trip (about 1 s), while pg_basebackup already streamed the WAL it needs.
    // The file follows once it streams, with a reload (not under Patroni, which takes over
    // the server right after: tpa's unit is not reloaded then).
    let fresh_replica = replication.is_some()
        && !super::patroni::enabled(input)
        && !host.facts.postgres.as_ref().is_some_and(|p| p.initialised);
    let mut late_restore = None;
    // Issue 9: WAL from Barman's archive (planner/ssh_trust.rs).
    if let Some((barman, server)) = super::ssh_trust::archive(input) {
        let address = barman.address.to_string();
        let mut content = postgres_conf::restore_command(&address, server);
        if cluster
            .instance(server)
            .is_some_and(|s| s.vars.barman.archiver())
        {
            content.push_str(&postgres_conf::archive_command(&address, server));
        }
        let file = (conf_d(l, super::ssh_trust::RESTORE_CONF), content);
        if fresh_replica {
            late_restore = Some(file);
        } else {
            reload_files.push(file);
        }
    }
    let restart_files = [
        (
            conf_d(l, "0001-tpa_restart.conf"),
            postgres_conf::restart_settings(&conf_input),
        ),
        (
            conf_d(l, "9901-tpa_postgres_conf_settings_restart.conf"),
            postgres_conf::conf_settings(&restart_settings),
        ),
    ];
    let unit_path = "/etc/systemd/system/postgres.service";
    let mut resources = Vec::new();
    let mut reload_on = Vec::new();
    let mut restart_on = Vec::new();
    if let Some(cert) = &host.server_cert {
        let spec = owned_file(&l.cert_file, cert.clone(), "postgres", 0o644);
        reload_on.push(spec.id.clone());
        resources.push(spec);
        // The agent made the key as root before the postgres user existed: hand it over.
        resources.push(ResourceSpec {
            id: id("permissions", &l.key_file),
            kind: Resource::Permissions(Permissions {
                path: l.key_file.clone(),
                owner: "postgres".into(),
                group: "postgres".into(),
                mode: 0o600,
            }),
        });
    }
    for (path, content) in reload_files {
        let spec = owned_file(&path, content, "postgres", 0o600);
        reload_on.push(spec.id.clone());
        resources.push(spec);
    }
    for (path, content) in restart_files {
        let spec = owned_file(&path, content, "postgres", 0o600);
        restart_on.push(spec.id.clone());
        resources.push(spec);
    }
    resources.push(ResourceSpec {
        id: id("file_if_absent", &conf_d(l, "9999-override.conf")),
        kind: Resource::FileIfAbsent(FileIfAbsent {
            path: conf_d(l, "9999-override.conf"),
            content: "# Your overrides: tpa creates this file once and never touches it again.\n"
                .into(),
            owner: "postgres".into(),
            group: "postgres".into(),
            mode: 0o600,
        }),
    });
    if let Some((restore_conf, _)) = &late_restore {
        // The clone copied the upstream's file: out of the way until the replica streams.
        resources.push(ResourceSpec {
            id: id("command", &format!("rm {restore_conf}")),
            kind: Resource::Command(tpa_common::resource::Command {
                argv: vec!["rm".into(), "-f".into(), restore_conf.clone()],
                creates: None,
                unless: Some(vec![
                    "test".into(),
                    "!".into(),
                    "-e".into(),
                    restore_conf.clone(),
                ]),
                run_as: Some("postgres".into()),
                env: vec![],
                secret_env: false,
                timeout_secs: Some(30),
                unless_sql: None,
            }),
        });
    }
    let unit = owned_file(
        unit_path,
        postgres_conf::service_unit(&host.settings.bin_dir, &l.data_dir),
        "root",
        0o644,
    );
    restart_on.push(unit.id.clone());
    resources.push(unit);
    if super::patroni::enabled(input) {
        // Our unit runs Postgres only until Patroni takes over (planner/patroni.rs); from
        // then on Patroni starts, restarts and reloads it.
        resources.push(super::patroni::helper());
        resources.push(super::patroni::start_postgres(&cluster.name));
    } else {
        resources.push(running_service("postgres.service", reload_on, restart_on));
    }
    if replication.is_some() {
        // Done only when streaming; then the slots of its own (cascaded) replicas.
        resources.push(replica::no_auto_conf_override(l.port));
        resources.push(replica::streaming(l.port));
        if let Some((path, content)) = late_restore {
            let spec = owned_file(&path, content, "postgres", 0o600);
            // A second postgres.service resource, so it needs its own id.
            let mut reload = running_service("postgres.service", vec![spec.id.clone()], vec![]);
            reload.id = id("reload", "postgres.service");
            resources.push(spec);
            resources.push(reload);
        }
        resources.extend(replica::slots(input, &instance.name, l.port));
        if super::barman::wanted(input.cluster) {
            resources.push(super::barman::stale_slot(l.port));
        }
    }
    Ok(Stage {
        name: StageName::PostgresConfig,
        resources,
        after: vec![],
    })
}

pub(super) fn owned_file(path: &str, content: String, owner: &str, mode: u32) -> ResourceSpec {
    ResourceSpec {
        id: id("file", path),
        kind: Resource::File(File {
            path: path.into(),
            content: content.into(),
            owner: owner.into(),
            group: owner.into(),
            mode,
            secret: false,
        }),
    }
}
