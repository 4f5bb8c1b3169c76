//! Which Debian packages each TPA role needs: a pure function of the roles, the PostgreSQL
//! version, the failover manager and the Debian release.
//!
//! The list is deliberately small. The agent is a static Rust binary, so hosts need no Python
//! of their own (TPA needed it for Ansible); postgres and Barman nodes still get `python3`
//! through `python3-psycopg2` and `barman`. Packages that the host image already carries
//! (systemd, openssh-server, sudo, iproute2, ...) may appear here too: the download skips
//! whatever the baseline status says is installed.

use std::collections::BTreeSet;

use super::os::{DebianRelease, SUPPORTED, UnsupportedOs};
use crate::config::{FailoverManager, Role};

/// Every host: tools the deploy itself uses (rsync, sudo, locales) and what an operator
/// expects on a Postgres host.
const BASE: &[&str] = &[
    "ca-certificates",
    "cron",
    "less",
    "locales",
    "openssl",
    "procps",
    "rsync",
    "sudo",
];

/// Why no package list can be made for this cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageSetError {
    #[error(transparent)]
    UnsupportedOs(#[from] UnsupportedOs),
    #[error(
        "postgres_version {requested} is not available for {release}: Debian's archive ships \
         only PostgreSQL {available} there, and the PGDG repository is not used by \
         download-packages; set postgres_version: {available} ({})",
        shipped_versions()
    )]
    PostgresVersionUnavailable {
        requested: String,
        release: DebianRelease,
        available: u32,
    },
    #[error("postgres_version {0:?} is not a PostgreSQL major version such as 15 or 17")]
    InvalidPostgresVersion(String),
}

/// The sorted, de-duplicated Debian packages that hosts with `roles` need.
///
/// Pass the roles of one host for that host's list, or the roles of every host for the
/// cluster-wide union that `download-packages` fetches. `postgres_version` is checked only
/// when a role needs PostgreSQL packages: against the version the release ships, or, with
/// `pgdg` (the host has PostgreSQL's own repository), any major version from 10 (PGDG's
/// packages have the same names; apt says if one is missing there).
pub fn packages_for(
    roles: &[Role],
    postgres_version: &str,
    failover_manager: Option<FailoverManager>,
    os_major: u32,
    pgdg: bool,
) -> Result<Vec<String>, PackageSetError> {
    let release = DebianRelease::from_major(os_major)?;
    let has = |role: Role| roles.contains(&role);
    // Roles that run a PostgreSQL server (`postgres` is the implicit role the three share).
    let postgres_node = [Role::Primary, Role::Replica, Role::Witness, Role::Postgres]
        .into_iter()
        .any(has);
    let needs_postgres = postgres_node || has(Role::Barman);

    let mut set: BTreeSet<String> = BASE.iter().map(|p| (*p).to_owned()).collect();
    let mut add = |names: &[&str]| set.extend(names.iter().map(|p| (*p).to_owned()));

    if needs_postgres {
        let v = check_postgres_version(postgres_version, release, pgdg)?;
        let client = format!("postgresql-client-{v}");
        if postgres_node {
            // TPA installs barman-cli on every postgres node (archive/restore commands).
            add(&[
                &format!("postgresql-{v}"),
                &client,
                "python3-psycopg2",
                "barman-cli",
                "openssh-client",
            ]);
            match failover_manager {
                Some(FailoverManager::Repmgr) => add(&[&format!("postgresql-{v}-repmgr")]),
                // python3-etcd is one of several alternatives patroni depends on; name it so
                // apt does not pick another DCS client.
                Some(FailoverManager::Patroni) => add(&["patroni", "python3-etcd"]),
                None => {}
            }
        }
        if has(Role::Barman) {
            // Base backups are rsync over ssh by default (TPA backup_method: rsync).
            add(&["barman", "barman-cli", &client, "openssh-client"]);
            // The restore drill starts the restored backup on this host (verify-backup).
            add(&[&format!("postgresql-{v}")]);
        }
    }
    if has(Role::Etcd) {
        add(&["etcd-server", "etcd-client"]);
    }
    if has(Role::Pgbouncer) {
        add(&["pgbouncer"]);
    }
    if has(Role::Haproxy) {
        add(&["haproxy"]);
    }
    // Roles without packages of their own get the base set (a cluster with a log-server
    // adds rsyslog on every host: planner::host_packages).
    Ok(set.into_iter().collect())
}

/// "Debian 12 ships 15, Debian 13 ships 17", for error messages.
fn shipped_versions() -> String {
    SUPPORTED
        .iter()
        .map(|r| format!("Debian {} ships {}", r.major, r.postgres_version))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The major version as a number, if `release` ships it.
fn check_postgres_version(
    requested: &str,
    release: DebianRelease,
    pgdg: bool,
) -> Result<u32, PackageSetError> {
    let major: u32 = requested
        .trim()
        .parse()
        .map_err(|_| PackageSetError::InvalidPostgresVersion(requested.to_owned()))?;
    if pgdg && major >= 10 {
        return Ok(major);
    }
    if major != release.postgres_version {
        return Err(PackageSetError::PostgresVersionUnavailable {
            requested: requested.to_owned(),
            release,
            available: release.postgres_version,
        });
    }
    Ok(major)
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    use Role::*;

    const REPMGR: Option<FailoverManager> = Some(FailoverManager::Repmgr);
    const PATRONI: Option<FailoverManager> = Some(FailoverManager::Patroni);

    fn list(roles: &[Role], pg: &str, fm: Option<FailoverManager>, os: u32) -> String {
        packages_for(roles, pg, fm, os, false)
            .expect("valid input")
            .join(" ")
    }

    #[test]
    fn m1_repmgr_union_on_bookworm() {
        expect![[r#"barman barman-cli ca-certificates cron less locales openssh-client openssl postgresql-15 postgresql-15-repmgr postgresql-client-15 procps python3-psycopg2 rsync sudo"#]]
        .assert_eq(&list(&[Primary, Replica, Barman], "15", REPMGR, 12));
    }

    #[test]
    fn m1_patroni_etcd_union_on_trixie() {
        expect![[r#"barman barman-cli ca-certificates cron etcd-client etcd-server less locales openssh-client openssl patroni postgresql-17 postgresql-client-17 procps python3-etcd python3-psycopg2 rsync sudo"#]]
        .assert_eq(&list(&[Primary, Replica, Etcd, Barman], "17", PATRONI, 13));
    }

    #[test]
    fn barman_alone_gets_client_and_server_for_drills_but_no_failover_manager() {
        let pkgs = list(&[Barman], "15", REPMGR, 12);
        assert!(pkgs.contains("postgresql-client-15"));
        // The restore drill starts the restored backup on the Barman host.
        assert!(pkgs.contains("postgresql-15 "), "{pkgs}");
        assert!(!pkgs.contains("repmgr"), "{pkgs}");
    }

    #[test]
    fn implicit_postgres_role_is_a_postgres_node() {
        assert_eq!(
            list(&[Postgres], "17", PATRONI, 13),
            list(&[Replica], "17", PATRONI, 13)
        );
    }

    #[test]
    fn etcd_host_needs_no_postgres_version() {
        // Even an unavailable version is fine when no role installs PostgreSQL.
        let pkgs = list(&[Etcd], "16", PATRONI, 12);
        assert!(
            pkgs.contains("etcd-server") && !pkgs.contains("postgresql"),
            "{pkgs}"
        );
    }

    #[test]
    fn base_packages_on_a_role_without_its_own() {
        assert_eq!(list(&[LogServer], "15", None, 12), BASE.join(" "));
    }

    #[test]
    fn version_not_shipped_by_the_release_says_what_is() {
        let err =
            packages_for(&[Primary], "16", None, 12, false).expect_err("16 is not in bookworm");
        // With PGDG on the host, its versions are allowed (same package names).
        let pgdg = packages_for(&[Primary], "16", REPMGR, 12, true).expect("PGDG has 16");
        assert!(
            pgdg.contains(&"postgresql-16-repmgr".to_string()),
            "{pgdg:?}"
        );
        assert!(packages_for(&[Primary], "9", None, 12, true).is_err());
        expect![[r#"postgres_version 16 is not available for Debian 12 (bookworm): Debian's archive ships only PostgreSQL 15 there, and the PGDG repository is not used by download-packages; set postgres_version: 15 (Debian 12 ships 15, Debian 13 ships 17)"#]]
        .assert_eq(&err.to_string());
        assert!(matches!(
            packages_for(&[Replica], "15", None, 13, false),
            Err(PackageSetError::PostgresVersionUnavailable { available: 17, .. })
        ));
    }

    #[test]
    fn garbage_version_and_unknown_os_are_errors() {
        assert_eq!(
            packages_for(&[Primary], "fifteen", None, 12, false),
            Err(PackageSetError::InvalidPostgresVersion("fifteen".into()))
        );
        assert!(matches!(
            packages_for(&[Primary], "15", None, 14, false),
            Err(PackageSetError::UnsupportedOs(UnsupportedOs { major: 14 }))
        ));
    }
}
