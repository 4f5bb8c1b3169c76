//! Users, databases and extensions on the primary, as SQL resources: each checks the catalog
//! and changes only what differs. Passwords arrive as SCRAM verifiers (never plaintext), and
//! their resources are marked secret so agents mask them, and their SQL starts by turning
//! statement logging off for the session, so verifiers reach neither the server log nor
//! pg_stat_statements. Nothing is ever dropped.

use std::collections::BTreeMap;

use tpa_common::resource::{Resource, ResourceSpec, Sql, SqlText};

use super::{Stage, StageName, id};
use crate::config::{Instance, PostgresDatabase, PostgresUser};

/// Role attributes tpa manages; each is set explicitly, so the catalog matches config.yml.
const ATTRIBUTES: &[(&str, &str, bool)] = &[
    // (keyword, pg_authid column, default)
    ("SUPERUSER", "rolsuper", false),
    ("CREATEDB", "rolcreatedb", false),
    ("CREATEROLE", "rolcreaterole", false),
    ("REPLICATION", "rolreplication", false),
    ("BYPASSRLS", "rolbypassrls", false),
    ("LOGIN", "rolcanlogin", true),
    ("INHERIT", "rolinherit", true),
];

/// Runs first in every session that carries a password verifier. One statement per line: psql
/// sends them one at a time, and Postgres decides whether to log a statement when it arrives, so
/// the settings hold for the statements that follow. All four are superuser settings (the agent
/// runs psql as postgres); `pg_stat_statements.track_utility` also works as a placeholder when
/// the library is not loaded.
pub const QUIET_SESSION: &str = "\
set log_statement = 'none';
set log_min_duration_statement = -1;
set log_min_error_statement = 'panic';
set pg_stat_statements.track_utility = off;
";

pub fn stage(instance: &Instance, port: u16, verifiers: &BTreeMap<String, String>) -> Stage {
    let vars = &instance.vars;
    let mut resources = Vec::new();
    for user in &vars.postgres_users {
        resources.push(role(
            user,
            verifiers.get(&user.username).map(String::as_str),
            port,
        ));
    }
    for user in &vars.postgres_users {
        for granted in &user.granted_roles {
            resources.push(grant(&user.username, granted, port));
        }
    }
    // TPA's rule: default extensions in `postgres` and `template1`, so new databases inherit them.
    let defaults = vars.postgres_extensions();
    for database in ["postgres", "template1"] {
        resources.extend(extensions_in(database, &defaults, port));
    }
    for database in &vars.postgres_databases {
        resources.push(create_database(database, port));
        resources.push(database_owner(database, port));
        resources.extend(extensions_in(&database.name, &database.extensions, port));
    }
    Stage {
        name: StageName::PostgresUsers,
        resources,
        after: vec![],
    }
}

fn sql(
    id: String,
    database: &str,
    check: String,
    apply: String,
    port: u16,
    secret: bool,
) -> ResourceSpec {
    let (check, apply) = if secret {
        (
            format!("{QUIET_SESSION}{check}"),
            format!("{QUIET_SESSION}{apply}"),
        )
    } else {
        (check, apply)
    };
    ResourceSpec {
        id,
        kind: Resource::Sql(Sql {
            database: database.into(),
            check: SqlText::new(check, secret),
            apply: SqlText::new(apply, secret),
            run_as: "postgres".into(),
            port,
        }),
    }
}

pub fn role(user: &PostgresUser, verifier: Option<&str>, port: u16) -> ResourceSpec {
    let name = &user.username;
    let wanted: Vec<(&str, &str, bool)> = ATTRIBUTES
        .iter()
        .map(|(keyword, column, default)| {
            let value = user
                .role_attrs
                .iter()
                .find_map(|a| {
                    let a = a.to_ascii_uppercase();
                    if a == *keyword {
                        Some(true)
                    } else if a == format!("NO{keyword}") {
                        Some(false)
                    } else {
                        None
                    }
                })
                .unwrap_or(*default);
            (*keyword, *column, value)
        })
        .collect();
    let limit = user.conn_limit.unwrap_or(-1);
    let mut check = format!(
        "select exists (select 1 from pg_authid where rolname = {}",
        literal(name)
    );
    for (_, column, value) in &wanted {
        check.push_str(&format!(" and {column} = {value}"));
    }
    check.push_str(&format!(" and rolconnlimit = {limit}"));
    if let Some(v) = verifier {
        check.push_str(&format!(" and rolpassword = {}", literal(v)));
    }
    check.push(')');
    let options: Vec<String> = wanted
        .iter()
        .map(|(keyword, _, value)| {
            if *value {
                keyword.to_string()
            } else {
                format!("NO{keyword}")
            }
        })
        .collect();
    let mut apply = format!(
        "select format('create role %I', {lit}) where not exists (select 1 from pg_roles where rolname = {lit}) \\gexec\n\
         alter role {ident} with {} connection limit {limit}",
        options.join(" "),
        lit = literal(name),
        ident = ident(name),
    );
    if let Some(v) = verifier {
        apply.push_str(&format!(" password {}", literal(v)));
    }
    apply.push_str(";\n");
    sql(
        id("role", name),
        "postgres",
        check,
        apply,
        port,
        verifier.is_some(),
    )
}

pub fn grant(user: &str, granted: &str, port: u16) -> ResourceSpec {
    let check = format!(
        "select exists (select 1 from pg_auth_members m join pg_roles r on r.oid = m.roleid \
         join pg_roles u on u.oid = m.member where r.rolname = {} and u.rolname = {})",
        literal(granted),
        literal(user)
    );
    let apply = format!("grant {} to {};\n", ident(granted), ident(user));
    sql(
        id("grant", &format!("{granted}:{user}")),
        "postgres",
        check,
        apply,
        port,
        false,
    )
}

pub(super) fn create_database(db: &PostgresDatabase, port: u16) -> ResourceSpec {
    let check = format!(
        "select exists (select 1 from pg_database where datname = {})",
        literal(&db.name)
    );
    let mut apply = format!("create database {}", ident(&db.name));
    if let Some(owner) = &db.owner {
        apply.push_str(&format!(" owner {}", ident(owner)));
    }
    if let Some(encoding) = &db.encoding {
        apply.push_str(&format!(" encoding {}", literal(encoding)));
    }
    for (option, value) in [("lc_collate", &db.lc_collate), ("lc_ctype", &db.lc_ctype)] {
        if let Some(value) = value {
            apply.push_str(&format!(" {option} {}", literal(value)));
        }
    }
    // A locale other than the template's needs template0 (Postgres' rule).
    let template = db.template.clone().or_else(|| {
        (db.lc_collate.is_some() || db.lc_ctype.is_some() || db.encoding.is_some())
            .then(|| "template0".to_string())
    });
    if let Some(template) = template {
        apply.push_str(&format!(" template {}", ident(&template)));
    }
    apply.push_str(";\n");
    sql(
        id("database", &db.name),
        "postgres",
        check,
        apply,
        port,
        false,
    )
}

pub(super) fn database_owner(db: &PostgresDatabase, port: u16) -> ResourceSpec {
    let owner = db.owner.clone().unwrap_or_else(|| "postgres".into());
    let check = format!(
        "select exists (select 1 from pg_database d join pg_roles r on r.oid = d.datdba \
         where d.datname = {} and r.rolname = {})",
        literal(&db.name),
        literal(&owner)
    );
    let apply = format!(
        "alter database {} owner to {};\n",
        ident(&db.name),
        ident(&owner)
    );
    sql(
        id("database-owner", &db.name),
        "postgres",
        check,
        apply,
        port,
        false,
    )
}

/// All of a database's extensions as one resource: one check instead of one per extension
/// keeps a no-op deploy fast.
fn extensions_in(database: &str, extensions: &[String], port: u16) -> Option<ResourceSpec> {
    // Listed twice is still one extension: count distinct names.
    let extensions: Vec<&String> = extensions
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if extensions.is_empty() {
        return None;
    }
    let names: Vec<String> = extensions.iter().map(|e| literal(e)).collect();
    let check = format!(
        "select count(*) = {} from pg_extension where extname in ({})",
        extensions.len(),
        names.join(", ")
    );
    let apply: String = extensions
        .iter()
        .map(|e| format!("create extension if not exists {};\n", ident(e)))
        .collect();
    Some(sql(
        id("extensions", database),
        database,
        check,
        apply,
        port,
        false,
    ))
}

/// A SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier, always quoted so any name from config.yml is taken literally.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
