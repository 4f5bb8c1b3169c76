//! Barman (issue 9, first slice): a Barman server on each host with role `barman`, backing up
//! every instance whose `backup:` names it. Base backups are `pg_basebackup`
//! (`backup_method = postgres`, tpa's default) over a TLS-verified replication connection, or
//! rsync over the SSH trust of planner/ssh_trust.rs (`barman_backup_method: rsync`); WAL streams
//! with `barman receive-wal` on a physical slot (and, with `barman_archiver`, also arrives by
//! the primary's archive_command).
//!
//! - On the live primary (the end of its config stage): the `barman` role (backup functions,
//!   no superuser) and the `streaming_barman` role (REPLICATION), with generated passwords, and
//!   the slot.
//! - On the Barman host (its `barman` stage, after the primary's config stage): the CA, the
//!   passfile, `/etc/barman.conf`, one `/etc/barman.d/<server>.conf` per backed-up instance whose
//!   conninfo points at the topology's live primary, the cron files (`barman cron` every minute,
//!   `barman backup` on `barman_backup_interval`), then per server: WAL streaming started, a
//!   WAL switch archived and the first backup taken (only while there is no backup), and
//!   `barman check` all OK.
//!
//! The server is named after the instance config.yml backs up (`backup_name` is not supported
//! yet), so its catalogue stays when the primary changes: after a failover or switchover the
//! conf is aimed at the new primary and `/etc/tpa/barman-follow` (barman-follow.py) moves
//! receive-wal there, continuing the archive across the timeline change (the resource
//! `barman:receive-wal:<server>`, in state while Barman's slot on the live primary is in use).
//! Former primaries lose their unused Barman slot ([`stale_slot`]).

use std::collections::BTreeMap;

use tpa_common::resource::{Command, File, Resource, ResourceSpec, Secret};

use super::postgres::owned_file as file;
use super::replica::CA_FILE;
use super::replica::sql;
use super::users::literal;
use super::{HostState, PlanInput, Stage, StageName, id, running_service, users};
use crate::config::{BackupMethod, Cluster, Instance, PostgresUser, Role};

/// The role Barman connects as for its checks and backup functions.
pub const BARMAN_USER: &str = "barman";
/// The role `pg_basebackup` and `pg_receivewal` connect as.
pub const STREAMING_USER: &str = "streaming_barman";
/// Debian's home of the `barman` OS user.
pub const HOME: &str = "/var/lib/barman";
/// The barman OS user's passfile (named in the conninfos too).
pub const PASSFILE: &str = "/var/lib/barman/.pgpass";
/// The physical slot `barman receive-wal` streams from, on the primary.
pub const SLOT: &str = "barman";
/// The program that keeps WAL streaming on the live primary (see barman-follow.py).
pub const FOLLOW_PROGRAM: &str = "/etc/tpa/barman-follow";
const FOLLOW_SOURCE: &str = include_str!("barman-follow.py");
const BARMAN: &str = "/usr/bin/barman";
const MANAGED: &str = "; Managed by tpa: changes made here are overwritten by the next deploy.\n";

/// The two roles, as users the primary's config stage renders (SCRAM verifiers from the
/// secrets store).
pub fn users() -> [PostgresUser; 2] {
    let user = |name: &str, attrs: &[&str]| PostgresUser {
        username: name.into(),
        generate_password: true,
        role_attrs: attrs.iter().map(|a| (*a).to_string()).collect(),
        granted_roles: vec![],
        conn_limit: None,
        password_encryption: None,
    };
    [
        user(BARMAN_USER, &["LOGIN"]),
        user(STREAMING_USER, &["LOGIN", "REPLICATION"]),
    ]
}

/// The instances `barman_host` backs up, in config.yml order.
pub fn servers<'a>(cluster: &'a Cluster, barman_host: &str) -> Vec<&'a Instance> {
    cluster
        .instances
        .iter()
        .filter(|i| !i.provision_only && i.backup.iter().any(|b| b == barman_host))
        .collect()
}

/// True when some deployed instance is backed up by a deployed Barman host: the primary then
/// gets the roles and the slot.
pub fn wanted(cluster: &Cluster) -> bool {
    cluster.instances.iter().any(|i| {
        !i.provision_only
            && i.backup.iter().any(|b| {
                cluster
                    .instance(b)
                    .is_some_and(|b| !b.provision_only && b.has_role(Role::Barman))
            })
    })
}

/// One line per backed-up instance that is not the live primary: whose WAL and backups Barman
/// now takes instead (config.yml's `backup:` names the Barman host; the server keeps its name
/// and its catalogue).
pub fn following(input: &PlanInput<'_>) -> Vec<String> {
    let Some(primary) = input.state.topology.primary() else {
        return vec![];
    };
    input
        .cluster
        .instances
        .iter()
        .filter(|b| b.has_role(Role::Barman) && !b.provision_only)
        .flat_map(|b| {
            servers(input.cluster, &b.name)
                .into_iter()
                .filter(|s| s.name != primary)
                .map(move |s| {
                    format!(
                        "{}: the backups of {} (its Barman server `{}`) follow {primary}, the \
                         live primary",
                        b.name, s.name, s.name
                    )
                })
        })
        .collect()
}

/// The primary's share: the roles, their grants and the slot (created here so that WAL is
/// reserved before `barman receive-wal` first connects).
pub fn primary_resources(
    verifiers: &BTreeMap<String, String>,
    postgres_version: &str,
    port: u16,
) -> Result<Vec<ResourceSpec>, String> {
    if postgres_version.parse::<u32>().is_ok_and(|v| v < 15) {
        return Err(format!(
            "Barman's least-privilege grants need PostgreSQL 15 or later (pg_backup_start); \
             postgres_version is {postgres_version}"
        ));
    }
    let mut resources: Vec<ResourceSpec> = users()
        .iter()
        .map(|u| users::role(u, verifiers.get(&u.username).map(String::as_str), port))
        .collect();
    for granted in ["pg_read_all_settings", "pg_read_all_stats", "pg_checkpoint"] {
        resources.push(users::grant(BARMAN_USER, granted, port));
    }
    const FUNCTIONS: &[&str] = &[
        "pg_backup_start(text, boolean)",
        "pg_backup_stop(boolean)",
        "pg_switch_wal()",
        "pg_create_restore_point(text)",
    ];
    let user = literal(BARMAN_USER);
    let check = FUNCTIONS
        .iter()
        .map(|f| format!("has_function_privilege({user}, {}, 'EXECUTE')", literal(f)))
        .collect::<Vec<_>>()
        .join(" and ");
    let apply: String = FUNCTIONS
        .iter()
        .map(|f| format!("grant execute on function {f} to {BARMAN_USER};\n"))
        .collect();
    resources.push(sql(
        id("grant", "backup_functions:barman"),
        format!("select {check}"),
        apply,
        port,
    ));
    resources.push(slot(port));
    Ok(resources)
}

/// Barman's slot on the live primary (also made by `switchover` on the new primary).
pub fn slot(port: u16) -> ResourceSpec {
    let slot = literal(SLOT);
    sql(
        id("slot", SLOT),
        format!(
            "select exists (select 1 from pg_replication_slots where slot_name = {slot} and \
             slot_type = 'physical')"
        ),
        format!("select pg_create_physical_replication_slot({slot}, true);\n"),
        port,
    )
}

/// On a replica (a former primary above all): Barman's slot, unused there, dropped, since an
/// unused slot keeps WAL forever. One in use (a receive-wal not yet moved to the live primary)
/// is left for the next deploy.
pub fn stale_slot(port: u16) -> ResourceSpec {
    let slot = literal(SLOT);
    sql(
        id("stale_slot", SLOT),
        format!(
            "select not exists (select 1 from pg_replication_slots where slot_name = {slot} and \
             not active)"
        ),
        format!(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots where \
             slot_name = {slot} and not active;\n"
        ),
        port,
    )
}

/// The Barman host's stage, or every reason it cannot be planned.
pub fn stages(
    input: &PlanInput<'_>,
    instance: &Instance,
    host: &HostState,
) -> Result<Vec<Stage>, Vec<String>> {
    let cluster = input.cluster;
    let servers = servers(cluster, &instance.name);
    let mut errors = Vec::new();
    for server in &servers {
        if !server.has_role(Role::Primary) {
            errors.push(format!(
                "{}: `backup: {}` on an instance that is not the primary is not supported yet: \
                 tpa backs up the cluster's primary (and follows it after a failover); move \
                 `backup:` to the primary",
                server.name, instance.name
            ));
        }
        if server.backup.len() > 1 {
            errors.push(format!(
                "{}: `backup: [{}]`: tpa supports one Barman host per instance for now (they \
                 would share the `{SLOT}` slot); keep one",
                server.name,
                server.backup.join(", ")
            ));
        }
        if !server
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            errors.push(format!(
                "{}: a Barman server name may hold letters, digits, `-` and `_` only; rename \
                 the instance",
                server.name
            ));
        }
    }
    let topology = &input.state.topology;
    let primary = topology.primary();
    let live = primary.and_then(|p| {
        let address = input.inventory.host(p)?.address;
        let port = input.state.hosts.get(p)?.settings.postgres.port;
        Some((p, address, port))
    });
    let Some((primary, address, port)) = live else {
        if !servers.is_empty() {
            errors.push(format!(
                "{}: no deployed primary to back up; deploy the cluster's primary too",
                instance.name
            ));
        }
        return if errors.is_empty() {
            Ok(vec![])
        } else {
            Err(errors)
        };
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    if servers.is_empty() {
        return Ok(vec![]);
    }

    let mut resources = vec![
        // As Debian's package leaves it; again here for a `barman_data` volume mounted on it,
        // whose new filesystem is root's.
        super::dir(HOME, "barman", 0o750),
        super::dir("/etc/tpa", "root", 0o755),
        file(CA_FILE, input.state.ca_pem.clone(), "root", 0o644),
    ];
    let passwords = &input.state.barman_passwords;
    if let (Some(barman), Some(streaming)) =
        (passwords.get(BARMAN_USER), passwords.get(STREAMING_USER))
    {
        resources.push(ResourceSpec {
            id: id("file", PASSFILE),
            kind: Resource::File(File {
                path: PASSFILE.into(),
                content: pgpass(barman, streaming).into(),
                owner: "barman".into(),
                group: "barman".into(),
                mode: 0o600,
                secret: true,
            }),
        });
    }
    resources.push(file(
        "/etc/barman.conf",
        global_conf(&host.settings.bin_dir),
        "root",
        0o644,
    ));
    let target = target(&address.to_string(), port);
    resources.push(follow_program());
    for server in &servers {
        resources.push(server_conf_file(
            &cluster.name,
            server,
            primary,
            &address.to_string(),
            &target,
        ));
    }
    resources.push(file(
        "/etc/cron.d/barman",
        cron_every_minute(),
        "root",
        0o644,
    ));
    for server in &servers {
        resources.push(file(
            &format!("/etc/cron.d/tpa-barman-backup-{}", server.name),
            cron_backup(server),
            "root",
            0o644,
        ));
    }
    resources.push(running_service("cron.service", vec![], vec![]));
    for server in &servers {
        resources.extend(server_up(
            &server.name,
            &target,
            &host.settings.bin_dir,
            server.vars.barman.minimum_redundancy(),
        ));
    }
    resources.extend(super::barman_drill::resources(
        &servers,
        &host.settings.bin_dir,
    ));
    Ok(vec![Stage {
        name: StageName::Barman,
        resources,
        after: vec![(primary.to_string(), StageName::PostgresConfig)],
    }])
}

/// `/etc/barman.conf`: settings common to every server of this host.
fn global_conf(bin_dir: &str) -> String {
    format!(
        "{MANAGED}; Per-server settings are in /etc/barman.d, from the barman_* vars of each \
         backed-up instance.\n\n\
         [barman]\n\
         barman_user = barman\n\
         barman_home = {HOME}\n\
         configuration_files_directory = /etc/barman.d\n\
         log_file = /var/log/barman/barman.log\n\
         log_level = INFO\n\
         path_prefix = {bin_dir}\n\
         recovery_options = 'get-wal'\n"
    )
}

/// The libpq connection string of the live primary, without user and dbname.
pub fn target(address: &str, port: u16) -> String {
    format!(
        "host={address} port={port} passfile={PASSFILE} sslmode=verify-full sslrootcert={CA_FILE}"
    )
}

/// The follow program (see barman-follow.py).
pub fn follow_program() -> ResourceSpec {
    file(FOLLOW_PROGRAM, FOLLOW_SOURCE.to_string(), "root", 0o755)
}

/// `/etc/barman.d/<server>.conf`, aimed at `primary` (at `address`, reached with `target`).
pub fn server_conf_file(
    cluster: &str,
    server: &Instance,
    primary: &str,
    address: &str,
    target: &str,
) -> ResourceSpec {
    file(
        &format!("/etc/barman.d/{}.conf", server.name),
        server_conf(cluster, server, primary, address, target),
        "root",
        0o644,
    )
}

/// WAL streaming from the live primary: in state while Barman's slot there is in use;
/// otherwise receive-wal is moved there (see barman-follow.py), saying how.
pub fn follow(server: &str, target: &str) -> ResourceSpec {
    let argv = |verb: &str| -> Vec<String> {
        vec![
            FOLLOW_PROGRAM.into(),
            verb.into(),
            server.into(),
            target.into(),
        ]
    };
    ResourceSpec {
        id: id("barman", &format!("receive-wal:{server}")),
        kind: Resource::Command(Command {
            argv: argv("follow"),
            creates: None,
            unless: Some(argv("check")),
            run_as: Some("barman".into()),
            env: vec![],
            secret_env: false,
            timeout_secs: Some(3600),
            unless_sql: None,
        }),
    }
}

/// `/etc/barman.d/<server>.conf`: base backups (pg_basebackup, or rsync over SSH as the
/// postgres user) and receive-wal against the live primary at `address`; with
/// `barman_archiver`, also the WAL the primary's archive_command puts (planner/postgres.rs).
fn server_conf(
    cluster: &str,
    server: &Instance,
    primary: &str,
    address: &str,
    target: &str,
) -> String {
    let b = &server.vars.barman;
    let following = if primary == server.name {
        String::new()
    } else {
        format!(" (now on {primary}, the live primary)")
    };
    let method = b.backup_method();
    // The barman user's ~/.ssh (planner/ssh_trust.rs) pins the host key and names the key.
    let ssh = match method {
        BackupMethod::Rsync => format!("ssh_command = ssh -q postgres@{address}\n"),
        BackupMethod::Postgres => String::new(),
    };
    format!(
        "{MANAGED}\n\
         [{name}]\n\
         description = {name} of cluster {cluster}{following}\n\
         conninfo = {target} dbname=postgres user={BARMAN_USER}\n\
         streaming_conninfo = {target} user={STREAMING_USER}\n\
         {ssh}\
         backup_method = {method}\n\
         reuse_backup = {reuse}\n\
         parallel_jobs = {jobs}\n\
         backup_options = {options}\n\
         network_compression = {network}\n\
         streaming_archiver = on\n\
         archiver = {archiver}\n\
         slot_name = {SLOT}\n\
         create_slot = manual\n\
         compression = {compression}\n\
         immediate_checkpoint = {immediate}\n\
         basebackup_retry_times = {retry_times}\n\
         basebackup_retry_sleep = {retry_sleep}\n\
         minimum_redundancy = {minimum_redundancy}\n\
         retention_policy = {retention}\n\
         last_backup_maximum_age = {age}\n",
        name = server.name,
        method = method.as_str(),
        reuse = b.reuse_backup().as_str(),
        jobs = b.parallel_jobs(),
        options = b.backup_options(),
        network = b.network_compression(),
        archiver = if b.archiver() { "on" } else { "off" },
        compression = b.compression(),
        immediate = b.immediate_checkpoint(),
        retry_times = b.basebackup_retry_times(),
        retry_sleep = b.basebackup_retry_sleep(),
        minimum_redundancy = b.minimum_redundancy(),
        retention = b.retention_policy(),
        age = b.last_backup_maximum_age(),
    )
}

/// Debian's own `/etc/cron.d/barman`, tpa-managed: `barman cron` every minute (WAL archiving,
/// receive-wal kept running, retention).
fn cron_every_minute() -> String {
    format!(
        "# Managed by tpa: changes made here are overwritten by the next deploy.\n\
         MAILTO=\"\"\n\
         * * * * * barman [ -x {BARMAN} ] && {BARMAN} -q cron\n"
    )
}

fn cron_backup(server: &Instance) -> String {
    format!(
        "# Managed by tpa: barman_backup_interval of {name}.\n\
         MAILTO=\"\"\n\
         {schedule} barman [ -x {BARMAN} ] && {BARMAN} -q backup {name}\n",
        name = server.name,
        schedule = server.vars.barman.backup_interval(),
    )
}

/// The last resources per server, each idempotent: WAL streaming running; while no backup
/// exists, a forced WAL switch that must reach the archive and the first backup; as TPA does,
/// up to min(minimum_redundancy, 3) backups in all while `barman check` fails (it fails until
/// the minimum redundancy is met); and `barman check` all OK (in state when it passes;
/// otherwise it runs again and fails with Barman's report).
fn server_up(
    server: &str,
    target: &str,
    bin_dir: &str,
    minimum_redundancy: u32,
) -> Vec<ResourceSpec> {
    let conninfo = format!("{target} dbname=postgres user={BARMAN_USER}");
    let no_backup_yet = Some(vec![
        FOLLOW_PROGRAM.to_string(),
        "has-backup".into(),
        server.to_string(),
    ]);
    let check = argv(&["check", server]);
    let more_backups = (2..=minimum_redundancy.min(3)).map(|n| {
        command(
            id("barman", &format!("backup-{n}:{server}")),
            nudged(target, backup_argv(server)),
            Some(check.clone()),
            3600,
        )
    });
    let mut resources = vec![
        follow(server, target),
        // Barman 3.4's `switch-wal --force` wants a superuser for its CHECKPOINT; a restore
        // point (a grant of the barman role) gives the switch a WAL record to close instead,
        // so that a retried first deploy on an idle primary still has a segment to archive.
        ResourceSpec {
            id: id("barman", &format!("restore-point:{server}")),
            kind: Resource::Command(Command {
                argv: vec![
                    format!("{bin_dir}/psql"),
                    "--no-psqlrc".into(),
                    "--no-password".into(),
                    "--dbname".into(),
                    conninfo,
                    "--command".into(),
                    "select pg_create_restore_point('tpa_barman_first_wal_switch')".into(),
                ],
                creates: None,
                unless: no_backup_yet.clone(),
                run_as: Some("barman".into()),
                env: vec![],
                secret_env: false,
                timeout_secs: Some(60),
                unless_sql: None,
            }),
        },
        command(
            id("barman", &format!("switch-wal:{server}")),
            nudged(
                target,
                argv(&["switch-wal", "--archive", "--archive-timeout", "60", server]),
            ),
            no_backup_yet.clone(),
            120,
        ),
        command(
            id("barman", &format!("first-backup:{server}")),
            nudged(target, backup_argv(server)),
            no_backup_yet,
            3600,
        ),
    ];
    resources.extend(more_backups);
    resources.push(command(
        id("barman", &format!("check:{server}")),
        check.clone(),
        Some(check),
        120,
    ));
    resources
}

/// `barman` (its argv) run by `barman-follow nudged`, which writes a restore point on the
/// primary every half second until it exits: Barman archives a streamed segment only once the
/// next segment's `.partial` exists, and on an idle primary nothing writes the next segment
/// until a checkpoint, so a switch-wal or backup waiting for its segment would wait that long.
fn nudged(target: &str, barman: Vec<String>) -> Vec<String> {
    let mut argv = vec![FOLLOW_PROGRAM.to_string(), "nudged".into(), target.into()];
    argv.extend(barman);
    argv
}

fn argv(args: &[&str]) -> Vec<String> {
    std::iter::once(BARMAN)
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

fn command(
    id: String,
    argv: Vec<String>,
    unless: Option<Vec<String>>,
    timeout: u32,
) -> ResourceSpec {
    ResourceSpec {
        id,
        kind: Resource::Command(Command {
            argv,
            creates: None,
            unless,
            run_as: Some("barman".into()),
            env: vec![],
            secret_env: false,
            timeout_secs: Some(timeout),
            unless_sql: None,
        }),
    }
}

/// Both roles' lines (any host and database: TLS verify-full decides whom Barman talks to, and
/// SCRAM never sends the password), `:` and `\` escaped as libpq reads.
fn pgpass(barman: &Secret<String>, streaming: &Secret<String>) -> String {
    let escape = |p: &str| p.replace('\\', "\\\\").replace(':', "\\:");
    format!(
        "*:*:*:{BARMAN_USER}:{}\n*:*:*:{STREAMING_USER}:{}\n",
        escape(barman.expose()),
        escape(streaming.expose())
    )
}

// === `tpa-controller backup` and `backup --list`: the commands run on the Barman host (as
// the barman user, through the agent's Exec) and the reading of their JSON output. ===

/// One backup as `backup --list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupInfo {
    pub server: String,
    pub barman_host: String,
    pub id: String,
    /// Barman's status: DONE, WAITING_FOR_WALS, STARTED, FAILED…
    pub status: String,
    pub begin_time: Option<String>,
    pub end_time: Option<String>,
    /// The base backup's size on disk, without WAL.
    pub size_bytes: Option<u64>,
    pub begin_wal: Option<String>,
    pub end_wal: Option<String>,
}

/// An on-demand backup: checkpoint at once (a spread one takes most of checkpoint_timeout),
/// and wait until the WAL it needs is archived, so that it is usable when the command ends.
pub fn backup_argv(server: &str) -> Vec<String> {
    argv(&["backup", "--immediate-checkpoint", "--wait", server])
}

pub fn list_argv(server: &str) -> Vec<String> {
    argv(&["-f", "json", "list-backups", server])
}

pub fn show_argv(server: &str, id: &str) -> Vec<String> {
    argv(&["-f", "json", "show-backup", server, id])
}

/// The backup ids of `barman -f json list-backups <server>`, oldest first.
pub fn parse_list(server: &str, stdout: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_str(stdout)
        .map_err(|e| format!("barman list-backups {server}: not JSON ({e})"))?;
    let items = v
        .get(server)
        .and_then(|b| b.as_array())
        .ok_or_else(|| format!("barman list-backups {server}: no list for {server}"))?;
    let mut ids: Vec<String> = items
        .iter()
        .filter_map(|b| b.get("backup_id")?.as_str().map(str::to_string))
        .collect();
    ids.sort();
    Ok(ids)
}

/// One backup from `barman -f json show-backup <server> <id>`.
pub fn parse_show(server: &str, barman_host: &str, stdout: &str) -> Result<BackupInfo, String> {
    let v: serde_json::Value = serde_json::from_str(stdout)
        .map_err(|e| format!("barman show-backup {server}: not JSON ({e})"))?;
    let b = v
        .get(server)
        .ok_or_else(|| format!("barman show-backup {server}: no entry for {server}"))?;
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    let info = b.get("base_backup_information");
    let field = |name: &str| info.and_then(|i| i.get(name));
    Ok(BackupInfo {
        server: server.to_string(),
        barman_host: barman_host.to_string(),
        id: text(b.get("backup_id"))
            .ok_or_else(|| format!("barman show-backup {server}: no backup_id"))?,
        status: text(b.get("status")).unwrap_or_default(),
        begin_time: text(field("begin_time")),
        end_time: text(field("end_time")),
        size_bytes: field("disk_usage_bytes").and_then(|v| v.as_u64()),
        begin_wal: text(field("begin_wal")),
        end_wal: text(field("end_wal")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passfile_escapes_separators() {
        let s = |p: &str| Secret::new(p.to_string());
        assert_eq!(
            pgpass(&s("a:b"), &s("c\\d")),
            "*:*:*:barman:a\\:b\n*:*:*:streaming_barman:c\\\\d\n"
        );
    }

    #[test]
    fn reads_barman_json() {
        let list = r#"{"ulb": [{"backup_id": "20261127T120102", "status": "DONE"},
            {"backup_id": "20261127T110000", "status": "FAILED"}]}"#;
        assert_eq!(
            parse_list("ulb", list).unwrap(),
            ["20261127T110000", "20261127T120102"]
        );
        assert!(parse_list("vub", list).is_err());
        let show = r#"{"ulb": {"backup_id": "20261127T120102", "status": "DONE",
            "base_backup_information": {"disk_usage_bytes": 31457280,
            "begin_wal": "000000010000000000000004", "end_wal": "000000010000000000000004",
            "begin_time": "2026-11-27 12:01:02.1+00:00", "end_time": "2026-11-27 12:01:04+00:00"}}}"#;
        let b = parse_show("ulb", "chimay", show).unwrap();
        assert_eq!(
            (b.status.as_str(), b.size_bytes, b.end_wal.as_deref()),
            ("DONE", Some(31457280), Some("000000010000000000000004"))
        );
        let failed = parse_show(
            "ulb",
            "chimay",
            r#"{"ulb": {"backup_id": "x", "status": "FAILED"}}"#,
        )
        .unwrap();
        assert_eq!(
            (failed.status.as_str(), failed.size_bytes),
            ("FAILED", None)
        );
    }
}
