//! `cluster_vars` and instance `vars`: the registry of variables (typed ones we support, and
//! the ones TPA knows that we do not support yet) and the typed [`Vars`] they are read into.
//!
//! To support a variable that is in [`NOT_YET_SUPPORTED`]: add a field to [`Vars`], move the
//! name into [`SUPPORTED`] with a setter, and document it in docs/config.md.

use std::collections::BTreeMap;

use super::barman::{self, BarmanVars};
use super::error::{Diag, unknown_key, unsupported, unsupported_value};
use super::values;
use super::yaml::{Field, Node, index_path, key_path};

/// Typed Postgres/host variables. Fields hold what config.yml says; the methods of the same
/// name apply TPA's default when the variable is not set.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Vars {
    /// `postgres_version`, e.g. `15`.
    pub postgres_version: Option<String>,
    /// `postgres_flavour`; only `postgresql` is supported.
    pub postgres_flavour: Option<PostgresFlavour>,
    /// `failover_manager`.
    pub failover_manager: Option<FailoverManager>,
    /// `preferred_python_version`, e.g. `python3`.
    pub preferred_python_version: Option<String>,
    /// `use_volatile_subscriptions`.
    pub use_volatile_subscriptions: Option<bool>,
    /// `use_local_repo_only`: use only the cluster's local package repository.
    pub use_local_repo_only: Option<bool>,
    /// `manage_ssh_hostkeys` (bare): tpa installs host keys it generated, trusting a new
    /// host's own key on first use when `known_hosts` does not list it.
    pub manage_ssh_hostkeys: Option<bool>,
    /// `docker_package_layer` (docker, tpa's own): a new host starts from an image that
    /// already holds its packages (see platform/docker/layer.rs); default true.
    pub docker_package_layer: Option<bool>,
    /// `ansible_user`: the user to log in to the host as.
    pub ansible_user: Option<String>,
    /// `postgres_conf_settings`: GUC name → value (names checked, values free of control
    /// characters; the planner quotes them).
    pub postgres_conf_settings: BTreeMap<String, String>,
    /// `postgres_hba_settings`: extra pg_hba.conf lines.
    pub postgres_hba_settings: Vec<String>,
    /// `postgres_users`.
    pub postgres_users: Vec<PostgresUser>,
    /// `postgres_databases`.
    pub postgres_databases: Vec<PostgresDatabase>,
    /// `extra_postgres_extensions`: added to the default extension list.
    pub extra_postgres_extensions: Vec<String>,
    /// `postgres_extensions`: replaces the default extension list.
    pub postgres_extensions: Option<Vec<String>>,
    /// `preload_extensions`: extensions that go into shared_preload_libraries.
    pub preload_extensions: Vec<String>,
    /// `postgres_port`.
    pub postgres_port: Option<u16>,
    /// `postgres_data_dir`.
    pub postgres_data_dir: Option<String>,
    /// `postgres_locale`: initdb locale.
    pub postgres_locale: Option<String>,
    /// `user_locale`: system locale installed on the host.
    pub user_locale: Option<String>,
    /// `etcd_location`: which location's etcd nodes form this node's etcd cluster.
    pub etcd_location: Option<String>,
    /// `etcd_single_member`: tpa's own key; one etcd member is allowed only when this is true.
    pub etcd_single_member: bool,
    /// `patroni_package_flavour`; only `community` is supported.
    pub patroni_package_flavour: Option<String>,
    /// `apt_repository_list`, e.g. `[PGDG]`; `None` means TPA's default `[PGDG]`.
    pub apt_repository_list: Option<Vec<String>>,
    /// `apt_repositories`: repositories defined for `apt_repository_list` (config::apt).
    pub apt_repositories: BTreeMap<String, super::apt::AptRepository>,
    /// `max_connections`.
    pub max_connections: Option<u32>,
    /// `shared_buffers_ratio`: fraction of RAM for shared_buffers.
    pub shared_buffers_ratio: Option<f64>,
    /// `pgbouncer_backend`: the host pgbouncer forwards to.
    pub pgbouncer_backend: Option<String>,
    /// `haproxy_backend_servers`: the Postgres hosts HAProxy balances over.
    pub haproxy_backend_servers: Vec<String>,
    /// `haproxy_bind_address`.
    pub haproxy_bind_address: Option<String>,
    /// `repmgr_priority`: 0 (never promoted) to 1000; repmgr's default 100.
    pub repmgr_priority: Option<u32>,
    /// `repmgr_reconnect_attempts`: tries before repmgrd calls the upstream failed.
    pub repmgr_reconnect_attempts: Option<u32>,
    /// `repmgr_reconnect_interval`: seconds between those tries.
    pub repmgr_reconnect_interval: Option<u32>,
    /// `repmgr_failover`: `automatic` (default) or `manual`.
    pub repmgr_failover: Option<RepmgrFailover>,
    /// The `barman_*` variables tpa honours (see `config::barman`).
    pub barman: BarmanVars,
    /// `hook_timeout`: seconds (1–86400) a hook may run before it is killed; default 600.
    pub hook_timeout: Option<u32>,
    /// `agent_health_interval`: seconds (5–3600) between two rounds of the agent's health
    /// checks; default 15.
    pub agent_health_interval: Option<u32>,
    /// `agent_metrics_port`: the agent serves Prometheus metrics on this port (opt-in).
    pub agent_metrics_port: Option<u16>,
    /// `agent_metrics_listen`: where; default `localhost`.
    pub agent_metrics_listen: Option<tpa_common::health_spec::MetricsListen>,
    /// `patroni_conf_settings`: merged last into `/etc/patroni/<cluster>.yml` (a mapping;
    /// strings free of control characters).
    pub patroni_conf_settings: Option<serde_json::Value>,
    /// `patroni_dynamic_conf_settings`: merged last into the DCS configuration.
    pub patroni_dynamic_conf_settings: Option<serde_json::Value>,
    /// `agent_cert_lifetime` (cluster_vars only): how long agents' certificates and the controller's
    /// identity live; default 365 days.
    pub agent_cert_lifetime: Option<std::time::Duration>,
    /// `agent_cert_renew_before` (cluster_vars only): deploy renews a certificate this close to its expiry;
    /// default 30 days; less than the lifetime.
    pub agent_cert_renew_before: Option<std::time::Duration>,
}

/// `repmgr_failover`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepmgrFailover {
    Automatic,
    Manual,
}

impl RepmgrFailover {
    pub fn as_str(self) -> &'static str {
        match self {
            RepmgrFailover::Automatic => "automatic",
            RepmgrFailover::Manual => "manual",
        }
    }
}

/// `postgres_flavour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostgresFlavour {
    Postgresql,
}

/// `failover_manager`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverManager {
    Repmgr,
    Patroni,
}

impl FailoverManager {
    /// The name config.yml uses.
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverManager::Repmgr => "repmgr",
            FailoverManager::Patroni => "patroni",
        }
    }
}

/// One `postgres_users` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostgresUser {
    pub username: String,
    /// Default true: a password is generated and stored encrypted in the cluster dir.
    pub generate_password: bool,
    /// CREATE ROLE options, e.g. `superuser`, `NOLOGIN`.
    pub role_attrs: Vec<String>,
    pub granted_roles: Vec<String>,
    pub conn_limit: Option<i32>,
    pub password_encryption: Option<String>,
}

/// One `postgres_databases` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostgresDatabase {
    pub name: String,
    /// Default: the postgres user.
    pub owner: Option<String>,
    pub encoding: Option<String>,
    pub lc_collate: Option<String>,
    pub lc_ctype: Option<String>,
    pub template: Option<String>,
    /// Names of the extensions created in this database.
    pub extensions: Vec<String>,
}

/// TPA's defaults for one variable each; `crate::settings` resolves them per host (with the
/// OS-dependent ones, such as the Postgres version), and the rest of the controller reads
/// those settings rather than calling these.
impl Vars {
    /// The apt repositories a host gets besides the local one: `apt_repository_list`, TPA's
    /// default `[PGDG]`, or none with `use_local_repo_only`.
    pub fn apt_sources(&self) -> Vec<String> {
        if self.use_local_repo_only == Some(true) {
            return Vec::new();
        }
        self.apt_repository_list
            .clone()
            .unwrap_or_else(|| vec![super::apt::PGDG.to_string()])
    }
    /// Whether PGDG is among [`Vars::apt_sources`] (its PostgreSQL versions are available).
    pub fn uses_pgdg(&self) -> bool {
        self.apt_sources().iter().any(|s| s == super::apt::PGDG)
    }
    pub fn postgres_port(&self) -> u16 {
        self.postgres_port.unwrap_or(5432)
    }
    pub fn postgres_data_dir(&self) -> &str {
        self.postgres_data_dir
            .as_deref()
            .unwrap_or("/opt/postgres/data")
    }
    pub fn user_locale(&self) -> &str {
        self.user_locale.as_deref().unwrap_or("en_US.UTF-8")
    }
    /// TPA: `postgres_locale` defaults to `user_locale`, which defaults to `en_US.UTF-8`.
    pub fn postgres_locale(&self) -> &str {
        self.postgres_locale
            .as_deref()
            .unwrap_or_else(|| self.user_locale())
    }
    /// TPA's default for the `postgresql` flavour: repmgr.
    pub fn failover_manager(&self) -> FailoverManager {
        self.failover_manager.unwrap_or(FailoverManager::Repmgr)
    }
    pub fn max_connections(&self) -> u32 {
        self.max_connections.unwrap_or(250)
    }
    pub fn shared_buffers_ratio(&self) -> f64 {
        self.shared_buffers_ratio.unwrap_or(0.25)
    }
    /// TPA's default extensions plus `extra_postgres_extensions`, unless replaced.
    pub fn postgres_extensions(&self) -> Vec<String> {
        let mut list = self.postgres_extensions.clone().unwrap_or_else(|| {
            [
                "pg_stat_statements",
                "pg_freespacemap",
                "pg_visibility",
                "pageinspect",
                "pgstattuple",
            ]
            .map(String::from)
            .to_vec()
        });
        for e in &self.extra_postgres_extensions {
            if !list.contains(e) {
                list.push(e.clone());
            }
        }
        list
    }
}

type Setter = fn(&mut Vars, &Node, &str, &mut Diag);

/// Variables we support, each with the code that reads it.
pub(crate) const SUPPORTED: &[(&str, Setter)] = &[
    ("postgres_version", |v, n, p, d| {
        v.postgres_version = postgres_version(n, p, d)
    }),
    ("postgres_flavour", |v, n, p, d| {
        v.postgres_flavour = flavour(n, p, d)
    }),
    ("failover_manager", |v, n, p, d| {
        v.failover_manager = failover_manager(n, p, d)
    }),
    ("preferred_python_version", |v, n, p, d| {
        v.preferred_python_version = text(n, p, d)
    }),
    ("edb_repositories", |_, n, p, d| edb_repositories(n, p, d)),
    ("use_volatile_subscriptions", |v, n, p, d| {
        v.use_volatile_subscriptions = n.bool(d, p)
    }),
    ("use_local_repo_only", |v, n, p, d| {
        v.use_local_repo_only = n.bool(d, p)
    }),
    ("manage_ssh_hostkeys", |v, n, p, d| {
        v.manage_ssh_hostkeys = n.bool(d, p)
    }),
    ("docker_package_layer", |v, n, p, d| {
        v.docker_package_layer = n.bool(d, p)
    }),
    ("ansible_user", |v, n, p, d| {
        v.ansible_user = checked(n, p, d, values::posix_user_name)
    }),
    ("postgres_conf_settings", |v, n, p, d| {
        v.postgres_conf_settings = conf_settings(n, p, d)
    }),
    ("postgres_hba_settings", |v, n, p, d| {
        v.postgres_hba_settings = text_list(n, p, d)
    }),
    ("postgres_users", |v, n, p, d| {
        v.postgres_users = users(n, p, d)
    }),
    ("postgres_databases", |v, n, p, d| {
        v.postgres_databases = databases(n, p, d)
    }),
    ("extra_postgres_extensions", |v, n, p, d| {
        v.extra_postgres_extensions = text_list(n, p, d)
    }),
    ("postgres_extensions", |v, n, p, d| {
        v.postgres_extensions = Some(text_list(n, p, d))
    }),
    ("preload_extensions", |v, n, p, d| {
        v.preload_extensions = checked_list(n, p, d, values::library_name)
    }),
    ("postgres_port", |v, n, p, d| {
        v.postgres_port = port(n, p, d)
    }),
    ("postgres_data_dir", |v, n, p, d| {
        v.postgres_data_dir = checked(n, p, d, values::clean_absolute_path)
    }),
    ("postgres_locale", |v, n, p, d| {
        v.postgres_locale = checked(n, p, d, values::locale)
    }),
    ("user_locale", |v, n, p, d| {
        v.user_locale = checked(n, p, d, values::locale)
    }),
    ("etcd_single_member", |v, n, p, d| {
        v.etcd_single_member = n.bool(d, p).unwrap_or(false)
    }),
    ("etcd_location", |v, n, p, d| {
        v.etcd_location = text(n, p, d)
    }),
    ("patroni_package_flavour", |v, n, p, d| {
        v.patroni_package_flavour = patroni_flavour(n, p, d)
    }),
    ("apt_repository_list", |v, n, p, d| {
        v.apt_repository_list = Some(text_list(n, p, d))
    }),
    ("apt_repositories", |v, n, p, d| {
        v.apt_repositories = super::apt::repositories(n, p, d)
    }),
    ("max_connections", |v, n, p, d| {
        v.max_connections = max_connections(n, p, d)
    }),
    ("shared_buffers_ratio", |v, n, p, d| {
        v.shared_buffers_ratio = ratio(n, p, d)
    }),
    ("pgbouncer_backend", |v, n, p, d| {
        v.pgbouncer_backend = text(n, p, d)
    }),
    ("haproxy_backend_servers", |v, n, p, d| {
        v.haproxy_backend_servers = text_list(n, p, d)
    }),
    ("haproxy_bind_address", |v, n, p, d| {
        v.haproxy_bind_address = text(n, p, d)
    }),
    ("repmgr_priority", |v, n, p, d| {
        v.repmgr_priority = int_in(n, p, d, 0, 1000)
    }),
    ("repmgr_reconnect_attempts", |v, n, p, d| {
        v.repmgr_reconnect_attempts = int_in(n, p, d, 1, 100)
    }),
    ("repmgr_reconnect_interval", |v, n, p, d| {
        v.repmgr_reconnect_interval = int_in(n, p, d, 1, 600)
    }),
    ("patroni_conf_settings", |v, n, p, d| {
        v.patroni_conf_settings = json_mapping(n, p, d)
    }),
    ("patroni_dynamic_conf_settings", |v, n, p, d| {
        v.patroni_dynamic_conf_settings = json_mapping(n, p, d)
    }),
    ("hook_timeout", |v, n, p, d| {
        v.hook_timeout = int_in(n, p, d, 1, 86_400)
    }),
    ("agent_health_interval", |v, n, p, d| {
        v.agent_health_interval = int_in(n, p, d, 5, 3600)
    }),
    ("agent_metrics_port", |v, n, p, d| {
        v.agent_metrics_port = metrics_port(n, p, d)
    }),
    ("agent_cert_lifetime", |v, n, p, d| {
        v.agent_cert_lifetime = duration(n, p, d, MIN_CERT_LIFETIME_SECS)
    }),
    ("agent_cert_renew_before", |v, n, p, d| {
        v.agent_cert_renew_before = duration(n, p, d, 1)
    }),
    ("agent_metrics_listen", |v, n, p, d| {
        v.agent_metrics_listen = metrics_listen(n, p, d)
    }),
    ("repmgr_failover", |v, n, p, d| {
        v.repmgr_failover = repmgr_failover(n, p, d)
    }),
    ("barman_backup_method", |v, n, p, d| {
        v.barman.backup_method = barman::backup_method(n, p, d)
    }),
    ("barman_reuse_backup", |v, n, p, d| {
        v.barman.reuse_backup = barman::reuse_backup(n, p, d)
    }),
    ("barman_parallel_jobs", |v, n, p, d| {
        v.barman.parallel_jobs = int_in(n, p, d, 1, 64)
    }),
    ("barman_backup_options", |v, n, p, d| {
        v.barman.backup_options = checked(n, p, d, barman::backup_options)
    }),
    ("barman_network_compression", |v, n, p, d| {
        v.barman.network_compression = n.bool(d, p)
    }),
    ("barman_archiver", |v, n, p, d| {
        v.barman.archiver = n.bool(d, p)
    }),
    ("barman_compression", |v, n, p, d| {
        v.barman.compression = checked(n, p, d, barman::compression)
    }),
    ("barman_retention_policy", |v, n, p, d| {
        v.barman.retention_policy = checked(n, p, d, barman::retention_policy)
    }),
    ("barman_minimum_redundancy", |v, n, p, d| {
        v.barman.minimum_redundancy = int_in(n, p, d, 0, 100)
    }),
    ("barman_last_backup_maximum_age", |v, n, p, d| {
        v.barman.last_backup_maximum_age = checked(n, p, d, barman::age)
    }),
    ("barman_backup_interval", |v, n, p, d| {
        v.barman.backup_interval = checked(n, p, d, barman::cron_schedule)
    }),
    ("barman_immediate_checkpoint", |v, n, p, d| {
        v.barman.immediate_checkpoint = n.bool(d, p)
    }),
    ("barman_basebackup_retry_times", |v, n, p, d| {
        v.barman.basebackup_retry_times = int_in(n, p, d, 0, 100)
    }),
    ("barman_basebackup_retry_sleep", |v, n, p, d| {
        v.barman.basebackup_retry_sleep = int_in(n, p, d, 0, 3600)
    }),
    ("verify_backup_sql", |v, n, p, d| {
        // Multi-line SQL is fine here: it reaches a file and psql, never a config line.
        v.barman.verify_sql = n.string(d, p).filter(|v| match barman::verify_sql(v) {
            Ok(()) => true,
            Err(message) => {
                d.err(n.line, p, message);
                false
            }
        })
    }),
    ("verify_backup_database", |v, n, p, d| {
        v.barman.verify_database = checked(n, p, d, barman::database_name)
    }),
    ("verify_backup_schedule", |v, n, p, d| {
        v.barman.verify_schedule = checked(n, p, d, barman::calendar)
    }),
];

/// Variables TPA knows that we do not support yet: setting one is an error saying so.
/// Also every `*_package_version` variable.
#[rustfmt::skip]
pub(crate) const NOT_YET_SUPPORTED: &[&str] = &[
    // Postgres selection, paths and server settings.
    "postgres_user", "postgres_group", "postgres_home", "postgres_wal_dir", "postgres_conf_dir",
    "postgres_bin_dir", "postgres_lib_dir", "unix_socket_directories", "postgres_initdb_opts",
    "postgres_installation_method", "postgres_service_name", "postgres_log_file",
    "postgres_log_file_mode", "log_destination", "replication_user", "primary_slot_name",
    "shared_buffers", "shared_buffers_mb", "effective_cache_size", "effective_cache_size_mb",
    "effective_cache_size_ratio", "max_wal_senders", "max_replication_slots",
    "max_worker_processes", "password_encryption", "postgres_hba_local_auth_method",
    "postgres_conf_template", "postgres_hba_template", "postgres_ident_template",
    "synchronous_standby_names", "postgres_tablespaces", "extra_postgres_packages",
    "postmaster_oom_score_adj", "postgres_oom_score_adj", "postgres_coredump_filter",
    "postgres_service_environment", "systemd_restart_postgres_service", "postgres_rsa_key_size",
    "pgpass_users", "extra_bashrc_lines",
    // TLS and authentication.
    "ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_crl_file", "hba_force_hostssl",
    "hba_force_certificate_auth", "hba_cert_authentication_map",
    "ssl_cert_authentication_enabled",
    // Hosts, packages, repositories.
    "target_environment", "hostname_aliases", "etc_hosts_lines", "extra_etc_hosts_lines",
    "excluded_tasks", "included_tasks", "yum_repository_list", "suse_repository_list",
    "yum_repositories", "suse_repositories", "packages",
    "optional_packages", "unwanted_packages", "allow_package_upgrades", "sysctl_values",
    "artifacts", "logrotate_maxsize", "logrotate_rotate",
    "logrotate_maxage", "cluster_networks", "install_from_source", "enable_pg_backup_api",
    "enable_pem",
    // Barman: the ones tpa refuses are in barman::REFUSED, with what to do.
    // repmgr.
    "repmgr_location", "repmgr_use_slots", "repmgr_conf_settings",
    "repmgr_conf_dir", "repmgr_cluster_cleanup_interval", "repmgr_redirect_pgbouncer",
    "repmgr_client_dsn_attributes",
    // Patroni, etcd, HAProxy, PgBouncer, EFM.
    "patroni_dcs", "patroni_dcs_namespace", "patroni_watchdog_enabled", "patroni_ssl_enabled",
    "patroni_repl_max_lag",
    "patroni_installation_method", "haproxy_port", "haproxy_maxconn", "haproxy_server_options",
    "haproxy_default_server_extra_options", "haproxy_read_only_load_balancer_enabled",
    "pgbouncer_port", "pgbouncer_pool_mode", "pgbouncer_auth_user", "pgbouncer_auth_database",
    "pgbouncer_max_client_conn", "efm_conf_settings", "efm_bind_by_hostname",
];

/// Reads a vars mapping. Each field carries its own path, so merged vars (cluster_vars
/// overlaid with instance vars) report errors where each value was written.
pub(crate) fn parse_vars(fields: &[Field<'_>], diag: &mut Diag) -> Vars {
    let mut vars = Vars::default();
    for f in fields {
        if let Some((_, set)) = SUPPORTED.iter().find(|(name, _)| *name == f.key) {
            set(&mut vars, f.value, &f.path, diag);
        } else if let Some(message) = barman::refused(f.key) {
            diag.err(f.line, &f.path, message);
        } else if is_not_yet_supported(f.key) {
            diag.err(f.line, &f.path, unsupported(f.key));
        } else if f.key == "shared_preload_libraries" {
            diag.err(
                f.line,
                &f.path,
                "do not set `shared_preload_libraries` directly; list the libraries in \
                 `preload_extensions` (or, if unavoidable, under `postgres_conf_settings`)",
            );
        } else {
            let known = SUPPORTED
                .iter()
                .map(|(n, _)| *n)
                .chain(NOT_YET_SUPPORTED.iter().copied())
                .chain(barman::REFUSED.iter().map(|(n, _)| *n));
            diag.err(f.line, &f.path, unknown_key(f.key, "variable", known));
        }
    }
    super::apt::check_list(fields, &vars.apt_repositories, diag);
    vars
}

/// A variable name we support or TPA knows (so an instance key by that name belongs in vars).
pub(crate) fn is_known_var(key: &str) -> bool {
    SUPPORTED.iter().any(|(n, _)| *n == key) || is_not_yet_supported(key)
}

fn is_not_yet_supported(key: &str) -> bool {
    NOT_YET_SUPPORTED.contains(&key)
        || key.ends_with("_package_version")
        || barman::refused(key).is_some()
}

fn postgres_version(n: &Node, p: &str, d: &mut Diag) -> Option<String> {
    let v = n.string(d, p)?;
    let valid = !v.is_empty()
        && v.split('.')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()));
    if !valid {
        d.err(
            n.line,
            p,
            format!("`{v}` is not a Postgres major version (e.g. '15')"),
        );
        return None;
    }
    Some(v)
}

fn flavour(n: &Node, p: &str, d: &mut Diag) -> Option<PostgresFlavour> {
    match n.string(d, p)?.as_str() {
        "postgresql" => Some(PostgresFlavour::Postgresql),
        other @ ("edbpge" | "pgextended" | "epas") => {
            d.err(
                n.line,
                p,
                unsupported_value("postgres_flavour", other, "`postgresql`"),
            );
            None
        }
        other => {
            d.err(
                n.line,
                p,
                format!("unknown postgres_flavour `{other}`; use `postgresql`"),
            );
            None
        }
    }
}

fn failover_manager(n: &Node, p: &str, d: &mut Diag) -> Option<FailoverManager> {
    match n.string(d, p)?.as_str() {
        "repmgr" => Some(FailoverManager::Repmgr),
        "patroni" => Some(FailoverManager::Patroni),
        "efm" => {
            d.err(
                n.line,
                p,
                unsupported_value("failover_manager", "efm", "`repmgr` or `patroni`"),
            );
            None
        }
        other => {
            d.err(
                n.line,
                p,
                format!("unknown failover_manager `{other}`; use `repmgr` or `patroni`"),
            );
            None
        }
    }
}

fn edb_repositories(n: &Node, p: &str, d: &mut Diag) {
    if !n.string_list(d, p).is_empty() {
        d.err(
            n.line,
            p,
            "EDB repositories are a TPA setting that tpa does not support yet; use \
             `edb_repositories: []`",
        );
    }
}

fn patroni_flavour(n: &Node, p: &str, d: &mut Diag) -> Option<String> {
    let v = n.string(d, p)?;
    match v.as_str() {
        "community" => Some(v),
        "edb" => {
            d.err(
                n.line,
                p,
                unsupported_value("patroni_package_flavour", "edb", "`community`"),
            );
            None
        }
        other => {
            d.err(
                n.line,
                p,
                format!("unknown patroni_package_flavour `{other}`; use `community`"),
            );
            None
        }
    }
}

fn port(n: &Node, p: &str, d: &mut Diag) -> Option<u16> {
    match n.int::<u16>(d, p)? {
        0 => {
            d.err(n.line, p, "port 0 is not a usable port");
            None
        }
        v => Some(v),
    }
}

/// A port for the agent's `/metrics`: not 0 and not the agent's own gRPC port.
fn metrics_port(n: &Node, p: &str, d: &mut Diag) -> Option<u16> {
    let v = port(n, p, d)?;
    if v == tpa_proto::DEFAULT_AGENT_PORT {
        d.err(
            n.line,
            p,
            format!("{v} is the agent's gRPC port; choose another port for its metrics, e.g. 9187"),
        );
        return None;
    }
    Some(v)
}

fn metrics_listen(
    n: &Node,
    p: &str,
    d: &mut Diag,
) -> Option<tpa_common::health_spec::MetricsListen> {
    use tpa_common::health_spec::MetricsListen;
    match text(n, p, d)?.as_str() {
        "localhost" => Some(MetricsListen::Localhost),
        "tls" => Some(MetricsListen::Tls),
        other => {
            d.err(
                n.line,
                p,
                format!(
                    "unknown agent_metrics_listen `{}`; use `localhost` (plain HTTP on 127.0.0.1) \
                     or `tls` (HTTPS on the cluster address, client certificate from the cluster CA)",
                    other.escape_debug()
                ),
            );
            None
        }
    }
}

fn max_connections(n: &Node, p: &str, d: &mut Diag) -> Option<u32> {
    match n.int::<u32>(d, p)? {
        0 => {
            d.err(n.line, p, "max_connections must be at least 1");
            None
        }
        v => Some(v),
    }
}

fn repmgr_failover(n: &Node, p: &str, d: &mut Diag) -> Option<RepmgrFailover> {
    match text(n, p, d)?.as_str() {
        "automatic" => Some(RepmgrFailover::Automatic),
        "manual" => Some(RepmgrFailover::Manual),
        other => {
            d.err(
                n.line,
                p,
                format!("unknown repmgr_failover `{other}`; use `automatic` or `manual`"),
            );
            None
        }
    }
}

/// The shortest `agent_cert_lifetime`: a minute (renewing more often than deploys run is pointless).
pub(crate) const MIN_CERT_LIFETIME_SECS: u64 = 60;
/// The longest certificate duration: the CA's own lifetime (10 years).
pub(crate) const MAX_CERT_SECS: u64 = 3650 * 86_400;
/// Variables that apply to the whole cluster and may only be set in `cluster_vars`.
pub(crate) const CLUSTER_ONLY: &[&str] = &["agent_cert_lifetime", "agent_cert_renew_before"];

/// A duration for the certificate settings: whole seconds (`90`) or a number with a unit, `s`, `m`, `h`
/// or `d` (`90s`, `15m`, `12h`, `365d`); at least `min` seconds, at most 3650 days.
fn duration(n: &Node, p: &str, d: &mut Diag, min: u64) -> Option<std::time::Duration> {
    use super::yaml::Value;
    let parsed = match &n.value {
        Value::Int(i) => u64::try_from(*i)
            .map_err(|_| format!("{i} is negative; use a duration such as 90s, 12h or 365d")),
        Value::Str(text) => duration_secs(text),
        _ => Err(
            "must be a duration: whole seconds (90) or a number with a unit s, m, h or d \
                  (90s, 15m, 12h, 365d)"
                .to_string(),
        ),
    };
    let checked = parsed.and_then(|secs| {
        if secs < min || secs > MAX_CERT_SECS {
            Err(format!(
                "must be from {min} s to 3650d (got {secs} s); use a duration such as 90s, 12h or 365d"
            ))
        } else {
            Ok(secs)
        }
    });
    match checked {
        Ok(secs) => Some(std::time::Duration::from_secs(secs)),
        Err(message) => {
            d.err(n.line, p, message);
            None
        }
    }
}

/// Seconds of `90`, `90s`, `15m`, `12h` or `365d`.
pub(crate) fn duration_secs(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "`{}` is not a duration: write whole seconds (90) or a number with a unit s, m, h or d \
             (90s, 15m, 12h, 365d)",
            text.escape_debug()
        )
    };
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        Some(_) => (text, 's'),
        None => return Err(bad()),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{}` is too long; at most 3650d", text.escape_debug()))
}

/// A whole number from `min` to `max`, or an error naming the range.
fn int_in(n: &Node, p: &str, d: &mut Diag, min: u32, max: u32) -> Option<u32> {
    let v = n.int::<u32>(d, p)?;
    if (min..=max).contains(&v) {
        Some(v)
    } else {
        d.err(n.line, p, format!("must be from {min} to {max} (got {v})"));
        None
    }
}

fn ratio(n: &Node, p: &str, d: &mut Diag) -> Option<f64> {
    let r = n.float(d, p)?;
    if r > 0.0 && r < 1.0 {
        Some(r)
    } else {
        d.err(
            n.line,
            p,
            format!("{r} is not a fraction of RAM; use a number between 0 and 1, e.g. 0.25"),
        );
        None
    }
}

/// A string without control characters: every string var ends up in a file or a command line.
fn text(n: &Node, p: &str, d: &mut Diag) -> Option<String> {
    let v = n.string(d, p)?;
    if let Some(message) = values::control_char_message(&v) {
        d.err(n.line, p, message);
        return None;
    }
    Some(v)
}

/// A string that `rule` (from `values`) accepts.
pub(super) fn checked(
    n: &Node,
    p: &str,
    d: &mut Diag,
    rule: fn(&str) -> Result<(), String>,
) -> Option<String> {
    parsed(n, p, d, |v| rule(v).map(|()| v.to_owned()))
}

/// A [`text`] that `parse` reads into a value; what it refuses is an error at the value.
pub(super) fn parsed<T>(
    n: &Node,
    p: &str,
    d: &mut Diag,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<T> {
    let v = text(n, p, d)?;
    parse(&v).map_err(|message| d.err(n.line, p, message)).ok()
}

/// A list of [`parsed`] items; each error names its item.
pub(super) fn parsed_list<T>(
    n: &Node,
    p: &str,
    d: &mut Diag,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    let items = n.seq(d, p).unwrap_or(&[]);
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| parsed(item, &index_path(p, i), d, &parse))
        .collect()
}

/// A list of [`text`] items; each error names its item.
fn text_list(n: &Node, p: &str, d: &mut Diag) -> Vec<String> {
    checked_list(n, p, d, |_| Ok(()))
}

/// A list of [`checked`] items.
fn checked_list(
    n: &Node,
    p: &str,
    d: &mut Diag,
    rule: fn(&str) -> Result<(), String>,
) -> Vec<String> {
    parsed_list(n, p, d, |v| rule(v).map(|()| v.to_owned()))
}

/// `postgres_conf_settings`: setting names as Postgres reads them, values without control
/// characters (a newline would start a setting of its own in postgresql.conf).
fn conf_settings(n: &Node, p: &str, d: &mut Diag) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in n.map(d, p).unwrap_or(&[]) {
        if let Err(message) = values::guc_name(&e.key) {
            // The name itself may hold a line break: escaped, so the report stays one line.
            let shown = key_path(p, &e.key.escape_debug().to_string());
            d.err(e.line, &shown, message);
            continue;
        }
        let path = key_path(p, &e.key);
        let Some(value) = e.value.scalar_text(d, &path) else {
            continue;
        };
        if let Some(message) = values::control_char_message(&value) {
            d.err(e.value.line, &path, message);
            continue;
        }
        out.insert(e.key.clone(), value);
    }
    out
}

/// A mapping of any depth as JSON (Patroni's files are JSON), for settings passed through as
/// they are. Keys and strings must be free of control characters; floats must be finite.
fn json_mapping(n: &Node, p: &str, d: &mut Diag) -> Option<serde_json::Value> {
    use super::yaml::Value as Y;
    use serde_json::Value as J;
    fn convert(n: &Node, p: &str, d: &mut Diag) -> Option<J> {
        Some(match &n.value {
            Y::Null => J::Null,
            Y::Bool(b) => J::Bool(*b),
            Y::Int(i) => J::from(*i),
            Y::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(x) => J::Number(x),
                None => {
                    d.err(n.line, p, format!("{f} is not a finite number"));
                    return None;
                }
            },
            Y::Str(s) => {
                if let Some(message) = values::control_char_message(s) {
                    d.err(n.line, p, message);
                    return None;
                }
                J::String(s.clone())
            }
            Y::Seq(items) => J::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| convert(item, &index_path(p, i), d))
                    .collect::<Option<_>>()?,
            ),
            Y::Map(entries) => {
                let mut map = serde_json::Map::new();
                let mut ok = true;
                for e in entries {
                    let shown = key_path(p, &e.key.escape_debug().to_string());
                    if let Some(message) = values::control_char_message(&e.key) {
                        d.err(e.line, &shown, message);
                        ok = false;
                    } else if let Some(v) = convert(&e.value, &shown, d) {
                        map.insert(e.key.clone(), v);
                    } else {
                        ok = false;
                    }
                }
                if !ok {
                    return None;
                }
                J::Object(map)
            }
        })
    }
    n.map(d, p)?;
    convert(n, p, d)
}

/// Checks the keys of a list entry: known ones are returned, the rest reported.
fn entry_fields<'a>(
    n: &'a Node,
    p: &str,
    d: &mut Diag,
    what: &str,
    known: &[&'static str],
    not_yet: &[&'static str],
) -> Vec<Field<'a>> {
    let mut out = Vec::new();
    for f in n.fields(d, p) {
        if known.contains(&f.key) {
            out.push(f);
        } else if not_yet.contains(&f.key) {
            d.err(f.line, &f.path, unsupported(f.key));
        } else if f.key == "password" {
            d.err(
                f.line,
                &f.path,
                "passwords do not belong in config.yml; they are generated and stored encrypted \
                 in the cluster directory",
            );
        } else {
            d.err(
                f.line,
                &f.path,
                unknown_key(f.key, what, known.iter().copied()),
            );
        }
    }
    out
}

fn required(n: &Node, p: &str, d: &mut Diag, fields: &[Field<'_>], key: &str) -> Option<String> {
    match fields.iter().find(|f| f.key == key) {
        Some(f) => f.value.string(d, &f.path),
        None => {
            d.err(n.line, p, format!("missing required key `{key}`"));
            None
        }
    }
}

fn users(n: &Node, p: &str, d: &mut Diag) -> Vec<PostgresUser> {
    const KEYS: &[&str] = &[
        "username",
        "generate_password",
        "role_attrs",
        "granted_roles",
        "conn_limit",
        "password_encryption",
    ];
    let mut out = Vec::new();
    for (i, item) in n.seq(d, p).unwrap_or(&[]).iter().enumerate() {
        let ip = index_path(p, i);
        let fields = entry_fields(item, &ip, d, "postgres_users key", KEYS, &[]);
        let username = required(item, &ip, d, &fields, "username");
        let mut u = PostgresUser {
            generate_password: true,
            ..Default::default()
        };
        for f in &fields {
            let (v, fp) = (f.value, f.path.as_str());
            match f.key {
                "generate_password" => u.generate_password = v.bool(d, fp).unwrap_or(true),
                "role_attrs" => u.role_attrs = v.string_list(d, fp),
                "granted_roles" => u.granted_roles = v.string_list(d, fp),
                "conn_limit" => u.conn_limit = conn_limit(v, fp, d),
                "password_encryption" => u.password_encryption = password_encryption(v, fp, d),
                _ => {}
            }
        }
        if let Some(name) = username {
            u.username = name;
            out.push(u);
        }
    }
    out
}

fn conn_limit(n: &Node, p: &str, d: &mut Diag) -> Option<i32> {
    let v = n.int::<i32>(d, p)?;
    if v < -1 {
        d.err(
            n.line,
            p,
            format!("{v} is not a connection limit; use -1 (no limit) or more"),
        );
        return None;
    }
    Some(v)
}

fn password_encryption(n: &Node, p: &str, d: &mut Diag) -> Option<String> {
    let v = n.string(d, p)?;
    if v == "scram-sha-256" || v == "md5" {
        Some(v)
    } else {
        d.err(
            n.line,
            p,
            format!("unknown password_encryption `{v}`; use `scram-sha-256` or `md5`"),
        );
        None
    }
}

fn databases(n: &Node, p: &str, d: &mut Diag) -> Vec<PostgresDatabase> {
    const KEYS: &[&str] = &[
        "name",
        "owner",
        "encoding",
        "lc_collate",
        "lc_ctype",
        "template",
        "extensions",
    ];
    const NOT_YET: &[&str] = &["tablespace", "state", "languages"];
    let mut out = Vec::new();
    for (i, item) in n.seq(d, p).unwrap_or(&[]).iter().enumerate() {
        let ip = index_path(p, i);
        let fields = entry_fields(item, &ip, d, "postgres_databases key", KEYS, NOT_YET);
        let name = required(item, &ip, d, &fields, "name");
        let mut db = PostgresDatabase::default();
        for f in &fields {
            let (v, fp) = (f.value, f.path.as_str());
            match f.key {
                "owner" => db.owner = v.string(d, fp),
                "encoding" => db.encoding = v.string(d, fp),
                "lc_collate" => db.lc_collate = v.string(d, fp),
                "lc_ctype" => db.lc_ctype = v.string(d, fp),
                "template" => db.template = v.string(d, fp),
                "extensions" => db.extensions = extensions(v, fp, d),
                _ => {}
            }
        }
        if let Some(name) = name {
            db.name = name;
            out.push(db);
        }
    }
    out
}

fn extensions(n: &Node, p: &str, d: &mut Diag) -> Vec<String> {
    const NOT_YET: &[&str] = &["state", "schema", "cascade", "session_role"];
    let mut out = Vec::new();
    for (i, item) in n.seq(d, p).unwrap_or(&[]).iter().enumerate() {
        let ip = index_path(p, i);
        let fields = entry_fields(item, &ip, d, "extension key", &["name"], NOT_YET);
        if let Some(name) = required(item, &ip, d, &fields, "name") {
            out.push(name);
        }
    }
    out
}

/// Overlays instance vars on cluster vars key by key (host vars win, as in Ansible).
pub(crate) fn overlay<'a>(base: &[Field<'a>], over: &[Field<'a>]) -> Vec<Field<'a>> {
    let mut out: Vec<Field<'a>> = base
        .iter()
        .filter(|b| !over.iter().any(|o| o.key == b.key))
        .cloned()
        .collect();
    out.extend(over.iter().cloned());
    out
}
