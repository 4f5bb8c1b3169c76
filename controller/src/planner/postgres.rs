//! Postgres on the primary: packages come from `sys`; here the data directory, initdb, the
//! conf.d split, pg_hba.conf, the server certificate and tpa's `postgres.service`.

use tpa_common::resource::{
    Command, Directory, EnvVar, File, FileIfAbsent, FileLine, Permissions, Resource, ResourceSpec,
    Service,
};

use super::postgres_conf::{self, ConfInput, HbaPeer};
use super::{PlanInput, Stage, StageName, id};
use crate::config::{Instance, Role};

/// Where things live on a Postgres host (TPA's layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresLayout {
    pub version: String,
    pub data_dir: String,
    pub bin_dir: String,
    pub port: u16,
    /// `/etc/tpa/<cluster>.crt` and `.key`.
    pub cert_file: String,
    pub key_file: String,
}

impl PostgresLayout {
    pub fn for_instance(cluster_name: &str, instance: &Instance, version: &str) -> PostgresLayout {
        PostgresLayout {
            version: version.to_string(),
            data_dir: instance
                .vars
                .postgres_data_dir
                .clone()
                .unwrap_or_else(|| "/opt/postgres/data".into()),
            bin_dir: format!("/usr/lib/postgresql/{version}/bin"),
            port: instance.vars.postgres_port.unwrap_or(5432),
            cert_file: format!("/etc/tpa/{cluster_name}.crt"),
            key_file: format!("/etc/tpa/{cluster_name}.key"),
        }
    }
    fn conf_d(&self, file: &str) -> String {
        format!("{}/conf.d/{file}", self.data_dir)
    }
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

pub fn stages(input: &PlanInput<'_>, instance: &Instance, layout: &PostgresLayout) -> Vec<Stage> {
    vec![install(instance, layout), config(input, instance, layout)]
}

fn install(instance: &Instance, l: &PostgresLayout) -> Stage {
    let locale = instance
        .vars
        .postgres_locale
        .clone()
        .unwrap_or_else(|| "en_US.UTF-8".into());
    let parent = std::path::Path::new(&l.data_dir)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());
    let conf = format!("{}/postgresql.conf", l.data_dir);
    let resources = vec![
        dir(&parent, "postgres", 0o755),
        dir(&l.data_dir, "postgres", 0o700),
        ResourceSpec {
            id: id("command", "initdb"),
            kind: Resource::Command(Command {
                argv: vec![
                    format!("{}/initdb", l.bin_dir),
                    "-D".into(),
                    l.data_dir.clone(),
                    "--data-checksums".into(),
                    format!("--locale={locale}"),
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
            }),
        },
        // initdb's postgresql.conf stays as it is; tpa's settings come from conf.d.
        ResourceSpec {
            id: id("file_line", &conf),
            kind: Resource::FileLine(FileLine {
                path: conf.clone(),
                line: "include_dir = 'conf.d'".into(),
            }),
        },
        dir(&format!("{}/conf.d", l.data_dir), "postgres", 0o700),
        dir("/etc/tpa", "root", 0o755),
    ];
    Stage {
        name: StageName::PostgresInstall,
        resources,
        after: vec![],
    }
}

fn config(input: &PlanInput<'_>, instance: &Instance, l: &PostgresLayout) -> Stage {
    let cluster = input.cluster;
    let memory = input
        .facts
        .get(&instance.name)
        .map(|f| f.memory_bytes)
        .filter(|m| *m > 0)
        .unwrap_or(1 << 30);
    let postgres_instances = cluster
        .instances
        .iter()
        .filter(|i| i.has_role(Role::Postgres))
        .count() as u32;
    let preload = vec!["pg_stat_statements".to_string()]
        .into_iter()
        .chain(instance.vars.preload_extensions.iter().cloned())
        .fold(Vec::<String>::new(), |mut acc, e| {
            if !acc.contains(&e) {
                acc.push(e);
            }
            acc
        });
    let conf_input = ConfInput {
        cluster_name: &cluster.name,
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

    let reload_files = [
        (
            l.conf_d("0000-tpa.conf"),
            postgres_conf::reload_settings(&conf_input),
        ),
        (
            l.conf_d("9900-tpa_postgres_conf_settings.conf"),
            postgres_conf::conf_settings(&reload_settings),
        ),
        (
            format!("{}/pg_hba.conf", l.data_dir),
            postgres_conf::pg_hba(
                &peers,
                input.inventory.network.as_ref().map(|n| n.gateway),
                "scram-sha-256",
                &instance.vars.postgres_hba_settings,
            ),
        ),
    ];
    let restart_files = [
        (
            l.conf_d("0001-tpa_restart.conf"),
            postgres_conf::restart_settings(&conf_input),
        ),
        (
            l.conf_d("9901-tpa_postgres_conf_settings_restart.conf"),
            postgres_conf::conf_settings(&restart_settings),
        ),
    ];
    let unit_path = "/etc/systemd/system/postgres.service";
    let mut resources = Vec::new();
    let mut reload_on = Vec::new();
    let mut restart_on = Vec::new();
    if let Some(cert) = input.server_certs.get(&instance.name) {
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
        id: id("file_if_absent", &l.conf_d("9999-override.conf")),
        kind: Resource::FileIfAbsent(FileIfAbsent {
            path: l.conf_d("9999-override.conf"),
            content: "# Your overrides: tpa creates this file once and never touches it again.\n"
                .into(),
            owner: "postgres".into(),
            group: "postgres".into(),
            mode: 0o600,
        }),
    });
    let unit = owned_file(
        unit_path,
        postgres_conf::service_unit(&l.bin_dir, &l.data_dir),
        "root",
        0o644,
    );
    restart_on.push(unit.id.clone());
    resources.push(unit);
    resources.push(ResourceSpec {
        id: id("service", "postgresql.service"),
        kind: Resource::Service(Service {
            unit: "postgresql.service".into(),
            enabled: false,
            running: false,
            reload_on: vec![],
            restart_on: vec![],
        }),
    });
    resources.push(ResourceSpec {
        id: id("service", "postgres.service"),
        kind: Resource::Service(Service {
            unit: "postgres.service".into(),
            enabled: true,
            running: true,
            reload_on,
            restart_on,
        }),
    });
    Stage {
        name: StageName::PostgresConfig,
        resources,
        after: vec![],
    }
}

fn dir(path: &str, owner: &str, mode: u32) -> ResourceSpec {
    ResourceSpec {
        id: id("directory", path),
        kind: Resource::Directory(Directory {
            path: path.into(),
            owner: owner.into(),
            group: owner.into(),
            mode,
        }),
    }
}

fn owned_file(path: &str, content: String, owner: &str, mode: u32) -> ResourceSpec {
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
