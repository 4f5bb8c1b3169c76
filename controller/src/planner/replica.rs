//! Physical streaming replicas (issue 8, first slice; no repmgr yet): the `replication` role
//! and one physical slot per downstream on each upstream, and on a replica the clone with
//! `pg_basebackup` (never initdb), `standby.signal`, the conninfo in a tpa-managed conf.d file,
//! the password in a 0600 passfile, and a bounded wait until it streams.
//!
//! Ordering: a replica's install stage waits for its upstream's config stage, which ends with
//! the slots of its downstreams made (on the primary, with the `replication` role; on a
//! replica, once it streams), so cascades clone depth by depth, replicas of one upstream clone
//! in parallel, and none waits for the primary's users, databases or repmgr registration.

use tpa_common::resource::{
    Command, File, FileIfAbsent, Resource, ResourceSpec, Secret, Sql, SqlText,
};

use super::topology::PostgresRole;
use super::users::literal;
use super::{HostState, PlanInput, StageName, id};
use crate::config::PostgresUser;

/// The role replicas connect as (TPA's name): LOGIN REPLICATION, not a superuser.
pub const REPLICATION_USER: &str = "replication";

/// The postgres user's passfile on every replica (Debian's home of `postgres`).
pub const PASSFILE: &str = "/var/lib/postgresql/.pgpass";

/// The cluster CA as replicas read it to verify their upstream (the agent's copy is root's).
pub const CA_FILE: &str = "/etc/tpa/ca.crt";

/// The conf.d file with `primary_conninfo` and `primary_slot_name` (both reload in PG ≥ 13).
pub const CONF_FILE: &str = "0002-tpa_replication.conf";

/// How long the replica's last resource waits for `pg_stat_wal_receiver` to say streaming.
pub const STREAMING_WAIT_SECS: u32 = 60;

/// The `replication` role as a user the primary's config stage renders (a SCRAM verifier from the
/// secrets store, like any generated password).
pub fn user() -> PostgresUser {
    PostgresUser {
        username: REPLICATION_USER.into(),
        generate_password: true,
        role_attrs: vec!["LOGIN".into(), "REPLICATION".into()],
        granted_roles: vec![],
        conn_limit: None,
        password_encryption: None,
    }
}

/// The physical slot a replica uses on its upstream: `tpa_<host>`, with every character a slot
/// name may not hold (`[a-z0-9_]` only) turned into `_`.
pub fn slot_name(host: &str) -> String {
    let tail: String = host
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .take(59)
        .collect();
    format!("tpa_{tail}")
}

/// The stage a replica's clone waits for on `upstream`: its config stage, which ends with the
/// slot for the replica (and on the primary, the `replication` role).
pub fn upstream_ready(upstream: &str) -> (String, StageName) {
    (upstream.to_string(), StageName::PostgresConfig)
}

/// The slot `replica` streams through on its upstream: repmgr's name when repmgr manages the
/// cluster (its `standby follow` makes the same), else `tpa_<host>`.
pub fn slot_for(input: &PlanInput<'_>, replica: &str) -> String {
    match input.cluster.instance(replica) {
        Some(i) if super::repmgr::enabled(input) => super::repmgr::slot_name(i.node),
        Some(i) if super::patroni::enabled(input) => super::patroni::slot_name(&i.name),
        _ => slot_name(replica),
    }
}

/// One slot per replica that streams from `host`, created on `host` (works on a standby too,
/// for cascades). WAL is reserved from creation, so a clone that starts later loses nothing.
pub fn slots(input: &PlanInput<'_>, host: &str, port: u16) -> Vec<ResourceSpec> {
    input
        .state
        .topology
        .members
        .iter()
        .filter(|(_, m)| m.role == PostgresRole::Replica && m.upstream.as_deref() == Some(host))
        .map(|(name, _)| {
            let name = slot_for(input, name);
            let slot = literal(&name);
            sql(
                id("slot", &name),
                format!(
                    "select exists (select 1 from pg_replication_slots where slot_name = {slot} \
                     and slot_type = 'physical')"
                ),
                format!("select pg_create_physical_replication_slot({slot}, true);\n"),
                port,
            )
        })
        .collect()
}

/// `host=… port=… user=replication …`: the connection a replica makes to `upstream`, TLS
/// verified against the cluster CA, the password read from [`PASSFILE`].
pub fn conninfo(input: &PlanInput<'_>, replica: &str, upstream: &str) -> Option<String> {
    let address = input.inventory.host(upstream)?.address;
    let port = input.state.hosts.get(upstream)?.settings.postgres.port;
    Some(format!(
        "host={address} port={port} user={REPLICATION_USER} passfile={PASSFILE} \
         sslmode=verify-full sslrootcert={CA_FILE} application_name={replica}"
    ))
}

/// What every Postgres host of a cluster with replicas has, since any of them may stream from
/// another after a switchover: the cluster CA (to verify upstreams) and the postgres user's
/// passfile with the `replication` and (with repmgr) `repmgr` passwords.
pub fn access_files(
    ca_pem: &str,
    replication: Option<&Secret<String>>,
    repmgr: Option<&Secret<String>>,
) -> Vec<ResourceSpec> {
    let mut resources = vec![ResourceSpec {
        id: id("file", CA_FILE),
        kind: Resource::File(File {
            path: CA_FILE.into(),
            content: ca_pem.into(),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o644,
            secret: false,
        }),
    }];
    let mut lines = String::new();
    if let Some(password) = replication {
        lines.push_str(&pgpass_line(
            "replication",
            REPLICATION_USER,
            password.expose(),
        ));
    }
    if let Some(password) = repmgr {
        lines.push_str(&pgpass_line("*", super::repmgr::USER, password.expose()));
    }
    if !lines.is_empty() {
        resources.push(ResourceSpec {
            id: id("file", PASSFILE),
            kind: Resource::File(File {
                path: PASSFILE.into(),
                content: lines.into(),
                owner: "postgres".into(),
                group: "postgres".into(),
                mode: 0o600,
                secret: true,
            }),
        });
    }
    resources
}

/// The resources of a replica's install stage after its data directory exists: the clone
/// (skipped once `PG_VERSION` exists) and `standby.signal` (a host the topology calls a replica
/// is in recovery, so the file is wanted whenever it is absent).
pub fn clone(host: &HostState, conninfo: &str, slot: &str) -> Vec<ResourceSpec> {
    let l = &host.settings.postgres;
    let mut resources = Vec::new();
    resources.push(ResourceSpec {
        id: id("command", "pg_basebackup"),
        kind: Resource::Command(Command {
            argv: vec![
                format!("{}/pg_basebackup", host.settings.bin_dir),
                "--pgdata".into(),
                l.data_dir.clone(),
                "--dbname".into(),
                conninfo.into(),
                "--checkpoint=fast".into(),
                "--wal-method=stream".into(),
                "--slot".into(),
                slot.into(),
                "--no-password".into(),
            ],
            creates: Some(format!("{}/PG_VERSION", l.data_dir)),
            unless: None,
            run_as: Some("postgres".into()),
            env: vec![],
            secret_env: false,
            timeout_secs: Some(1800),
            unless_sql: None,
        }),
    });
    resources.push(ResourceSpec {
        id: id("file_if_absent", &format!("{}/standby.signal", l.data_dir)),
        kind: Resource::FileIfAbsent(FileIfAbsent {
            path: format!("{}/standby.signal", l.data_dir),
            content: "".into(),
            owner: "postgres".into(),
            group: "postgres".into(),
            mode: 0o600,
        }),
    });
    resources
}

/// Stops a former primary that came back after another host was promoted, and makes it a
/// standby of the live primary: `pg_rewind` from `rewind_source` (a superuser conninfo) when
/// there is one and it works, else a fresh clone, the old data directory moved aside (never
/// deleted). Its `tpa: ` lines say which and why. The config stage then writes its conninfo
/// and starts it; the script only clears the `primary_*` settings pg_rewind copied from the
/// source's `postgresql.auto.conf`, so tpa's conf.d file decides.
pub fn rejoin(
    host: &HostState,
    rewind_source: Option<&str>,
    conninfo: &str,
    slot: &str,
) -> Vec<ResourceSpec> {
    // A fixed script; every value reaches it as an argument, never as shell text.
    const SCRIPT: &str = r#"#!/bin/sh
# Managed by tpa: rejoins a former primary as a standby (see tpa's planner/replica.rs).
set -eu
data=$1 bin=$2 source=$3 conninfo=$4 slot=$5
export PGPASSFILE=/var/lib/postgresql/.pgpass
systemctl stop postgres
if [ -n "$source" ] && runuser -u postgres -- "$bin/pg_rewind" --target-pgdata="$data" --source-server="$source"; then
  echo "tpa: former primary rewound with pg_rewind and rejoined as a standby"
else
  if [ -n "$source" ]; then why="pg_rewind failed (see above)"; else why="pg_rewind needs a superuser connection to the new primary, which only repmgr's user gives"; fi
  old="$data.before-rejoin-$(date -u +%Y%m%dT%H%M%SZ)"
  echo "tpa: former primary re-cloned: $why; its old data directory is kept as $old"
  mv "$data" "$old"
  install -d -o postgres -g postgres -m 0700 "$data"
  runuser -u postgres -- "$bin/pg_basebackup" --pgdata="$data" --dbname="$conninfo" --checkpoint=fast --wal-method=stream --slot="$slot" --no-password
fi
if [ -f "$data/postgresql.auto.conf" ]; then
  sed -i -e '/^primary_conninfo/d' -e '/^primary_slot_name/d' "$data/postgresql.auto.conf"
fi
runuser -u postgres -- touch "$data/standby.signal"
"#;
    let l = &host.settings.postgres;
    let script = ResourceSpec {
        id: id("file", REJOIN_SCRIPT),
        kind: Resource::File(File {
            path: REJOIN_SCRIPT.into(),
            content: SCRIPT.into(),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o700,
            secret: false,
        }),
    };
    let run = ResourceSpec {
        id: id("rejoin", "former_primary"),
        kind: Resource::Command(Command {
            argv: vec![
                REJOIN_SCRIPT.into(),
                l.data_dir.clone(),
                host.settings.bin_dir.clone(),
                rewind_source.unwrap_or_default().into(),
                conninfo.into(),
                slot.into(),
            ],
            creates: None,
            // Planned only for a host seen running as a primary; a standby is never rewound.
            unless: Some(vec![
                "test".into(),
                "-f".into(),
                format!("{}/standby.signal", l.data_dir),
            ]),
            run_as: None,
            env: vec![],
            secret_env: false,
            timeout_secs: Some(1800),
            unless_sql: None,
        }),
    };
    vec![script, run]
}

/// Where the rejoin script lives on a host that needs it.
pub const REJOIN_SCRIPT: &str = "/etc/tpa/rejoin-former-primary";

/// `*:*:<database>:<user>:<password>` (any host: TLS verify-full decides whom the node talks
/// to, and SCRAM never sends the password), `:` and `\` escaped as libpq reads them.
fn pgpass_line(database: &str, user: &str, password: &str) -> String {
    let escaped = password.replace('\\', "\\\\").replace(':', "\\:");
    format!("*:*:{database}:{user}:{escaped}\n")
}

/// `conf.d/0002-tpa_replication.conf` on a replica.
pub fn conf(conninfo: &str, slot: &str) -> String {
    use super::postgres_conf::quote;
    format!(
        "# Managed by tpa: changes made here are overwritten by the next deploy.\n\
         primary_conninfo = {}\nprimary_slot_name = {}\n",
        quote(conninfo),
        quote(slot)
    )
}

/// `primary_conninfo` and `primary_slot_name` set with ALTER SYSTEM (repmgr's `standby
/// follow` and `node rejoin` write them there) would override tpa's conf.d file: deploy, which
/// writes the live upstream into conf.d, resets them, so conf.d decides.
pub fn no_auto_conf_override(port: u16) -> ResourceSpec {
    sql(
        id("alter_system", "primary_conninfo"),
        "select not exists (select 1 from pg_file_settings where sourcefile like \
         '%/postgresql.auto.conf' and name in ('primary_conninfo', 'primary_slot_name'))"
            .into(),
        "alter system reset primary_conninfo;\nalter system reset primary_slot_name;\n\
         select pg_reload_conf();\n"
            .into(),
        port,
    )
}

/// The replica's last word: in state when its WAL receiver streams; otherwise waits up to
/// [`STREAMING_WAIT_SECS`] for it, and fails naming where to look.
pub fn streaming(port: u16) -> ResourceSpec {
    const STREAMING: &str =
        "select coalesce((select status = 'streaming' from pg_stat_wal_receiver), false)";
    sql(
        id("streaming", "wal_receiver"),
        STREAMING.into(),
        wait_until(
            "exists (select 1 from pg_stat_wal_receiver where status = 'streaming')",
            STREAMING_WAIT_SECS,
            "not streaming from its upstream",
            "pg_stat_wal_receiver and journalctl -u postgres",
        ),
        port,
    )
}

/// A `DO` block that polls `condition` every 0.5 s for up to `secs`, then fails with
/// "`failure` after `secs` s: see `see`".
pub(super) fn wait_until(condition: &str, secs: u32, failure: &str, see: &str) -> String {
    format!(
        "do $$ begin\n  for i in 1..{n} loop\n    if {condition} then return; end if;\n    \
         perform pg_sleep(0.5);\n  end loop;\n  raise exception '{failure} after {secs} s: see \
         {see}';\nend $$;\n",
        n = secs * 2,
    )
}

/// A read-only-checked `Sql` resource in database postgres, as postgres.
pub(super) fn sql(id: String, check: String, apply: String, port: u16) -> ResourceSpec {
    ResourceSpec {
        id,
        kind: Resource::Sql(Sql {
            database: "postgres".into(),
            check: SqlText::new(check, false),
            apply: SqlText::new(apply, false),
            run_as: "postgres".into(),
            port,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_valid_for_any_host_name() {
        assert_eq!(slot_name("vub"), "tpa_vub");
        assert_eq!(slot_name("Achel-2.x"), "tpa_achel_2_x");
        assert!(slot_name(&"a".repeat(100)).len() <= 63);
    }

    #[test]
    fn passfile_escapes_separators() {
        assert_eq!(
            pgpass_line("replication", REPLICATION_USER, "a:b\\c"),
            "*:*:replication:replication:a\\:b\\\\c\n"
        );
    }
}
