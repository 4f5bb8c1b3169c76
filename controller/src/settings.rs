//! Per-host settings, resolved once: TPA's defaults for the port, data directory, WAL
//! directory, locale, Postgres version and bin directory are applied here and nowhere else.
//! Gather (the facts request, certificate paths), the planner and `download-packages` all
//! read these values instead of computing their own.
//!
//! Everything but the Postgres version comes from config.yml alone ([`PostgresSettings`], known
//! before a host is asked anything); the version's default depends on the host's OS, so
//! [`HostSettings`] is resolved once the host's facts are in.

use crate::config::{Cluster, FailoverManager, Instance, Vars};
use crate::local_repo::DebianRelease;

/// The PostgreSQL major version used when config.yml names none and the OS is unknown.
const FALLBACK_POSTGRES_VERSION: u32 = 15;

/// Everything the deploy decides about one host from config.yml and the host's OS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSettings {
    /// The OS major version the host reported (`Facts::os_major`); None when it did not say.
    pub os_major: Option<u32>,
    /// `postgres_version`, else the version the host's Debian release ships.
    pub postgres_version: String,
    /// Where the Postgres server binaries of that version live (Debian's layout).
    pub bin_dir: String,
    /// `failover_manager`, else TPA's default for the `postgresql` flavour (repmgr).
    pub failover_manager: FailoverManager,
    /// `user_locale`, else `en_US.UTF-8`: the system locale the host should have.
    pub user_locale: String,
    /// Where the host's Postgres lives and listens.
    pub postgres: PostgresSettings,
}

/// Where one host's Postgres lives and listens: from config.yml alone, so known before the
/// host's facts (the facts request names the data directory and port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// `postgres_data_dir`, else `/opt/postgres/data`.
    pub data_dir: String,
    /// `<data_dir>/pg_wal` (TPA's default; `postgres_wal_dir` is not supported yet).
    pub wal_dir: String,
    /// `postgres_port`, else 5432.
    pub port: u16,
    /// `postgres_locale`, else `user_locale`, else `en_US.UTF-8`: the initdb locale.
    pub locale: String,
    /// The server certificate: `/etc/tpa/<cluster>.crt`.
    pub cert_file: String,
    /// The server key, generated on the host: `/etc/tpa/<cluster>.key`.
    pub key_file: String,
}

impl PostgresSettings {
    /// The settings of a host with these (effective) vars in cluster `cluster_name`.
    pub fn resolve(cluster_name: &str, vars: &Vars) -> PostgresSettings {
        let data_dir = vars.postgres_data_dir().to_string();
        PostgresSettings {
            wal_dir: format!("{data_dir}/pg_wal"),
            data_dir,
            port: vars.postgres_port(),
            locale: vars.postgres_locale().to_string(),
            cert_file: format!("/etc/tpa/{cluster_name}.crt"),
            key_file: format!("/etc/tpa/{cluster_name}.key"),
        }
    }
}

impl HostSettings {
    /// The settings of `instance`, on a host whose OS major version is `os_major`.
    pub fn resolve(cluster: &Cluster, instance: &Instance, os_major: Option<u32>) -> HostSettings {
        let vars = &instance.vars;
        let postgres_version = postgres_version(vars, os_major);
        HostSettings {
            os_major,
            bin_dir: format!("/usr/lib/postgresql/{postgres_version}/bin"),
            postgres_version,
            failover_manager: vars.failover_manager(),
            user_locale: vars.user_locale().to_string(),
            postgres: PostgresSettings::resolve(&cluster.name, vars),
        }
    }
}

/// `postgres_version` from these vars, else the version the OS ships.
pub fn postgres_version(vars: &Vars, os_major: Option<u32>) -> String {
    vars.postgres_version
        .clone()
        .unwrap_or_else(|| default_postgres_version(os_major))
}

/// The PostgreSQL each Debian release ships (PGDG is not reachable from these hosts); 15 when
/// the release is unknown, so that the package check names the real problem (the OS).
pub fn default_postgres_version(os_major: Option<u32>) -> String {
    os_major
        .and_then(|major| DebianRelease::from_major(major).ok())
        .map_or(FALLBACK_POSTGRES_VERSION, |r| r.postgres_version)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-host cluster with `vars` (lines under `cluster_vars`).
    fn cluster(vars: &str) -> Cluster {
        let source = format!(
            "cluster_name: fosdem\ncluster_vars:\n  postgres_flavour: postgresql\n{vars}\
             instances:\n- {{Name: ulb, node: 1, role: [primary, etcd], platform: docker, image: tpa/debian}}\n"
        );
        Cluster::parse(&source, "config.yml").expect("valid config")
    }

    fn settings(vars: &str, os: Option<u32>) -> HostSettings {
        let c = cluster(vars);
        HostSettings::resolve(&c, &c.instances[0], os)
    }

    #[test]
    fn tpa_defaults() {
        let s = settings("", Some(12));
        assert_eq!(
            s,
            HostSettings {
                os_major: Some(12),
                postgres_version: "15".into(),
                bin_dir: "/usr/lib/postgresql/15/bin".into(),
                failover_manager: FailoverManager::Repmgr,
                user_locale: "en_US.UTF-8".into(),
                postgres: PostgresSettings {
                    data_dir: "/opt/postgres/data".into(),
                    wal_dir: "/opt/postgres/data/pg_wal".into(),
                    port: 5432,
                    locale: "en_US.UTF-8".into(),
                    cert_file: "/etc/tpa/fosdem.crt".into(),
                    key_file: "/etc/tpa/fosdem.key".into(),
                },
            }
        );
    }

    #[test]
    fn postgres_locale_falls_back_to_user_locale() {
        // TPA: postgres_locale defaults to user_locale, which defaults to en_US.UTF-8.
        let s = settings("  user_locale: de_DE.UTF-8\n", Some(12));
        assert_eq!(s.user_locale, "de_DE.UTF-8");
        assert_eq!(s.postgres.locale, "de_DE.UTF-8");
        let s = settings(
            "  user_locale: de_DE.UTF-8\n  postgres_locale: C.UTF-8\n",
            Some(12),
        );
        assert_eq!(s.postgres.locale, "C.UTF-8");
    }

    #[test]
    fn version_follows_the_os_unless_configured() {
        assert_eq!(settings("", Some(13)).postgres_version, "17");
        assert_eq!(settings("", Some(13)).bin_dir, "/usr/lib/postgresql/17/bin");
        assert_eq!(settings("", None).postgres_version, "15");
        assert_eq!(settings("", Some(99)).postgres_version, "15");
        let s = settings("  postgres_version: '15'\n", Some(13));
        assert_eq!(s.postgres_version, "15");
    }

    #[test]
    fn configured_paths_and_port() {
        let s = settings(
            "  postgres_data_dir: /srv/pg\n  postgres_port: 6543\n  failover_manager: patroni\n  \
             etcd_single_member: true\n",
            Some(12),
        );
        assert_eq!(s.postgres.data_dir, "/srv/pg");
        assert_eq!(s.postgres.wal_dir, "/srv/pg/pg_wal");
        assert_eq!(s.postgres.port, 6543);
        assert_eq!(s.failover_manager, FailoverManager::Patroni);
    }
}
