//! Restore drills (issue 9): the fixed drill program on the Barman host, the SQL check files
//! of `verify_backup_sql` and, with `verify_backup_schedule`, a systemd timer per server that
//! runs the drill. `tpa-controller verify-backup` runs the same program through the agent.
//!
//! The drill runs on the Barman host itself, into a scratch directory and a private unix socket
//! (see verify-backup.py): the same `barman recover` and the same WAL as a real restore, with
//! no machine to create and no SSH trust. It proves that the backup restores, replays its WAL
//! and starts; it does not prove another machine's packages.

use tpa_common::resource::ResourceSpec;

use super::postgres::owned_file as file;
use super::running_service;
use crate::config::Instance;

/// The drill program (a Python script: Barman's own interpreter is on every Barman host, and
/// its JSON report carries error text that shell would have to escape).
pub const PROGRAM: &str = "/etc/tpa/verify-backup";
const SOURCE: &str = include_str!("verify-backup.py");
/// `verify_backup_sql` of each server, as a file the drill reads (data, never shell).
pub const SQL_DIR: &str = "/etc/tpa/verify-backup.d";
/// Where the drill keeps each server's last result (`<server>/last.json`).
pub const RESULTS: &str = "/var/lib/barman/tpa-verify";

/// The files and timers of the drill on a Barman host backing up `servers`.
pub fn resources(servers: &[&Instance], bin_dir: &str) -> Vec<ResourceSpec> {
    let mut resources = vec![file(PROGRAM, SOURCE.to_string(), "root", 0o755)];
    if servers.iter().any(|s| s.vars.barman.verify_sql.is_some()) {
        resources.push(super::dir(SQL_DIR, "root", 0o755));
    }
    for server in servers {
        if let Some(sql) = &server.vars.barman.verify_sql {
            resources.push(file(&sql_file(&server.name), sql.clone(), "root", 0o644));
        }
        if let Some(schedule) = &server.vars.barman.verify_schedule {
            let unit = unit_name(&server.name);
            resources.push(file(
                &format!("/etc/systemd/system/{unit}.service"),
                service_unit(server, bin_dir),
                "root",
                0o644,
            ));
            resources.push(file(
                &format!("/etc/systemd/system/{unit}.timer"),
                timer_unit(&server.name, schedule),
                "root",
                0o644,
            ));
            resources.push(running_service(&format!("{unit}.timer"), vec![], vec![]));
        }
    }
    resources
}

fn unit_name(server: &str) -> String {
    format!("tpa-verify-backup-{server}")
}

fn sql_file(server: &str) -> String {
    format!("{SQL_DIR}/{server}.sql")
}

/// The drill's arguments for `server`: `backup` is an id or `latest`.
pub fn argv(server: &Instance, bin_dir: &str, backup: &str) -> Vec<String> {
    let b = &server.vars.barman;
    vec![
        PROGRAM.into(),
        server.name.clone(),
        bin_dir.into(),
        backup.into(),
        if b.verify_sql.is_some() {
            sql_file(&server.name)
        } else {
            "-".into()
        },
        b.verify_database().into(),
    ]
}

/// A oneshot run of the drill as the barman user. Every argument is a server name (letters,
/// digits, `-`, `_`), a path tpa chose or a checked identifier: nothing needs quoting.
fn service_unit(server: &Instance, bin_dir: &str) -> String {
    format!(
        "# Managed by tpa: changes made here are overwritten by the next deploy.\n\
         [Unit]\n\
         Description=tpa restore drill of {name} (verify_backup_schedule)\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         User=barman\n\
         Group=barman\n\
         WorkingDirectory=/var/lib/barman\n\
         ExecStart={argv}\n",
        name = server.name,
        argv = argv(server, bin_dir, "latest").join(" "),
    )
}

fn timer_unit(server: &str, schedule: &str) -> String {
    format!(
        "# Managed by tpa: verify_backup_schedule of {server}.\n\
         [Unit]\n\
         Description=tpa restore drill of {server}\n\
         \n\
         [Timer]\n\
         OnCalendar={schedule}\n\
         Persistent=true\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
    )
}

/// One check of a drill, as the drill program reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// A drill's result: the drill program's JSON (stdout and `last.json`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct DrillResult {
    pub server: String,
    pub started_at: Option<String>,
    pub backup_id: Option<String>,
    pub backup_end_time: Option<String>,
    pub backup_age_seconds: Option<i64>,
    pub restore_seconds: Option<f64>,
    pub drill_seconds: Option<f64>,
    pub recovery_lsn: Option<String>,
    pub recovery_time: Option<String>,
    pub checks: Vec<Check>,
    pub passed: bool,
}

impl DrillResult {
    /// The failed checks, `name: detail`, for an error message.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect()
    }
}

/// Reads the drill program's output (its last JSON object).
pub fn parse(stdout: &str) -> Result<DrillResult, String> {
    let start = stdout
        .find('{')
        .ok_or_else(|| "the drill printed no result".to_string())?;
    serde_json::from_str(&stdout[start..]).map_err(|e| format!("unreadable drill result: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_failed_drill() {
        let out = r#"{"server": "ulb", "started_at": "2026-11-27T15:00:00+00:00",
            "backup_id": "20261127T150000", "backup_end_time": "2026-11-27 15:00:02+00:00",
            "backup_age_seconds": 60, "restore_seconds": 4.2, "drill_seconds": 5.0,
            "recovery_lsn": "0/5000100", "recovery_time": null,
            "checks": [{"name": "recover", "ok": true, "detail": "ok"},
                       {"name": "rows postgres public.t", "ok": false,
                        "detail": "ERROR: could not open file \"base/5/16390\""}],
            "passed": false}"#;
        let r = parse(out).unwrap();
        assert!(!r.passed);
        assert_eq!(r.backup_id.as_deref(), Some("20261127T150000"));
        assert_eq!(
            r.failures(),
            ["rows postgres public.t: ERROR: could not open file \"base/5/16390\""]
        );
        assert!(parse("Traceback ...").is_err());
    }

    #[test]
    fn the_program_is_the_checked_in_script() {
        assert!(SOURCE.starts_with("#!/usr/bin/python3\n"));
        // It reaches nothing but its own socket, and never Barman's get-wal.
        assert!(SOURCE.contains("\"listen_addresses = ''\\n\""));
        assert!(SOURCE.contains("\"--no-get-wal\""));
        assert!(SOURCE.contains("\"PGPASSFILE\": os.path.join(self.scratch, \"no-passfile\")"));
    }
}
