//! The read-only SQL that gather runs on the primary before planning, and the pure reading of
//! its rows: the verifiers roles already have (so an unchanged password keeps its salt), and
//! drift (roles and databases Postgres has that config.yml does not list). The SQL is
//! Postgres knowledge, so it lives here with the planner, not in the deploy command.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::Vars;

/// One row of a query's result, one string per column.
pub type Row = Vec<String>;

/// Every role's stored password verifier: rows `(rolname, rolpassword)`.
pub const STORED_VERIFIERS_SQL: &str =
    "select rolname, rolpassword from pg_authid where rolpassword is not null";

/// Roles and databases beyond Postgres' own: rows `('role' | 'database', name)`.
pub const OBJECTS_SQL: &str = "select 'role', rolname from pg_roles where rolname !~ '^pg_' and \
     rolname <> 'postgres' union all select 'database', datname from pg_database where datname \
     not in ('postgres', 'template0', 'template1')";

/// The stored verifiers by role name, from the rows of [`STORED_VERIFIERS_SQL`].
pub fn stored_verifiers(rows: Vec<Row>) -> BTreeMap<String, String> {
    rows.into_iter()
        .filter_map(|row| {
            let mut columns = row.into_iter();
            Some((columns.next()?, columns.next()?))
        })
        .collect()
}

/// What kind of object drifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftKind {
    Role,
    Database,
}

/// A role or database Postgres has that config.yml does not list (tpa never drops it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub kind: DriftKind,
    pub name: String,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DriftKind::Role => "role",
            DriftKind::Database => "database",
        };
        write!(
            f,
            "{kind} {} exists in Postgres but not in config.yml (tpa never drops it)",
            self.name
        )
    }
}

/// The objects among the rows of [`OBJECTS_SQL`] that the primary's `vars` do not declare
/// (tpa's own `replication` and `rewind` roles, Barman's roles and repmgr's role and database are declared
/// by tpa, whichever host is the primary now).
pub fn drift(rows: &[Row], vars: &Vars) -> Vec<Drift> {
    rows.iter()
        .filter_map(|row| {
            let (kind, name) = (row.first()?, row.get(1)?);
            let (kind, declared) = match kind.as_str() {
                "role" => (
                    DriftKind::Role,
                    name == super::replica::REPLICATION_USER
                        || name == super::repmgr::USER
                        || name == super::patroni::REWIND_USER
                        || super::barman::users().iter().any(|u| &u.username == name)
                        || vars.postgres_users.iter().any(|u| &u.username == name),
                ),
                "database" => (
                    DriftKind::Database,
                    name == super::repmgr::DATABASE
                        || vars.postgres_databases.iter().any(|d| &d.name == name),
                ),
                _ => return None,
            };
            (!declared).then(|| Drift {
                kind,
                name: name.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PostgresDatabase, PostgresUser};

    fn row(columns: &[&str]) -> Row {
        columns.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn undeclared_roles_and_databases_are_drift() {
        let vars = Vars {
            postgres_users: vec![PostgresUser {
                username: "ada".into(),
                ..Default::default()
            }],
            postgres_databases: vec![PostgresDatabase {
                name: "engine".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let rows = [
            row(&["role", "ada"]),
            row(&["role", "mallory"]),
            row(&["role", "replication"]),
            row(&["role", "streaming_barman"]),
            row(&["database", "engine"]),
            row(&["database", "scratch"]),
            row(&["role"]),
        ];
        let found: Vec<String> = drift(&rows, &vars)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "role mallory exists in Postgres but not in config.yml (tpa never drops it)",
                "database scratch exists in Postgres but not in config.yml (tpa never drops it)",
            ]
        );
    }

    #[test]
    fn verifiers_by_role() {
        let map = stored_verifiers(vec![row(&["ada", "SCRAM-SHA-256$4096:x$y:z"]), row(&["x"])]);
        assert_eq!(
            map,
            BTreeMap::from([("ada".to_string(), "SCRAM-SHA-256$4096:x$y:z".to_string())])
        );
    }
}
