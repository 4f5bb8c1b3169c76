//! `status`'s Barman part: the health of each server a Barman host backs up, from one Exec of
//! the drill program's read-only `--health` mode on that host (newest backup and its age,
//! `barman check` with receive-wal and the maximum age, the last restore drill), and when it
//! makes status exit 1: a failed `barman check` or a failed last drill. Pure, unit-tested.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::planner::barman_drill::DrillResult;

/// One backed-up server, as its Barman host reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupHealth {
    pub server: String,
    pub last_backup_id: Option<String>,
    pub last_backup_end_time: Option<String>,
    pub last_backup_age_seconds: Option<i64>,
    /// `running` or `not running` (`barman check`'s receive-wal line); None: not reported.
    pub receive_wal: Option<String>,
    pub check_ok: bool,
    /// `barman check`'s FAILED lines, with Barman's hint.
    pub check_failures: Vec<String>,
    /// The last drill's result (`last.json`); None when no drill ran yet.
    pub last_drill: Option<DrillResult>,
}

/// The `--health` answer: a JSON array.
pub fn parse(stdout: &str) -> Result<Vec<BackupHealth>, String> {
    serde_json::from_str(stdout.trim()).map_err(|e| format!("unreadable backup health: {e}"))
}

/// Why the backups of one Barman host make status exit 1.
pub fn problems(host: &str, servers: &[BackupHealth]) -> Vec<String> {
    let mut problems = Vec::new();
    for s in servers {
        if !s.check_ok {
            problems.push(format!(
                "{host}: barman check {} failed: {}",
                s.server,
                s.check_failures.join(", ")
            ));
        }
        if let Some(d) = s.last_drill.as_ref().filter(|d| !d.passed) {
            let failures = d.failures();
            problems.push(format!(
                "{host}: the last restore drill of {} ({}) failed: {}",
                s.server,
                d.started_at.as_deref().unwrap_or("?"),
                if failures.is_empty() {
                    "interrupted".to_string()
                } else {
                    failures.join("; ")
                }
            ));
        }
    }
    problems
}

/// One line per server, under the status table.
pub fn render(host: &str, servers: &[BackupHealth]) -> String {
    let mut out = String::new();
    for s in servers {
        let backup = match (&s.last_backup_id, s.last_backup_age_seconds) {
            (Some(id), Some(age)) => format!(
                "last backup {id} ({} ago)",
                tpa_common::health::age_text(age)
            ),
            (Some(id), None) => format!("last backup {id}"),
            _ => "no backup".to_string(),
        };
        let check = if s.check_ok {
            "barman check OK".to_string()
        } else {
            format!("barman check FAILED: {}", s.check_failures.join(", "))
        };
        let drill = match &s.last_drill {
            None => "no restore drill yet".to_string(),
            Some(d) => format!(
                "last drill {} ({}{})",
                if d.passed { "passed" } else { "FAILED" },
                d.started_at.as_deref().unwrap_or("?"),
                d.backup_id
                    .as_deref()
                    .map(|b| format!(", backup {b}"))
                    .unwrap_or_default()
            ),
        };
        let _ = writeln!(
            out,
            "{host} backs up {}: {backup}; receive-wal {}; {check}; {drill}",
            s.server,
            s.receive_wal.as_deref().unwrap_or("unknown"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTH: &str = r#"[{"server": "ulb", "last_backup_id": "20261127T150000",
        "last_backup_end_time": "2026-11-27 15:00:02+00:00", "last_backup_age_seconds": 600,
        "receive_wal": "running", "check_ok": false,
        "check_failures": ["backup maximum age (interval provided: 1 week, latest backup age: 9 days)"],
        "last_drill": {"server": "ulb", "started_at": "2026-11-27T15:05:00+00:00",
          "backup_id": "20261127T150000", "backup_end_time": null, "backup_age_seconds": null,
          "restore_seconds": null, "drill_seconds": 3.0, "recovery_lsn": null,
          "recovery_time": null, "passed": false,
          "checks": [{"name": "recover", "ok": false, "detail": "barman recover failed"}]}}]"#;

    #[test]
    fn a_failed_check_and_a_failed_drill_are_problems() {
        let servers = parse(HEALTH).unwrap();
        let problems = problems("chimay", &servers);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("chimay: barman check ulb failed: backup maximum age"));
        assert!(problems[1].contains("restore drill of ulb") && problems[1].contains("recover:"));
        let line = render("chimay", &servers);
        assert!(
            line.starts_with(
                "chimay backs up ulb: last backup 20261127T150000 (10 min ago); receive-wal \
                 running; barman check FAILED"
            ),
            "{line}"
        );
        assert!(line.contains("last drill FAILED (2026-11-27T15:05:00+00:00"));
    }

    #[test]
    fn healthy_backups_are_no_problem() {
        let healthy = r#"[{"server": "ulb", "last_backup_id": null, "last_backup_end_time": null,
            "last_backup_age_seconds": null, "receive_wal": "running", "check_ok": true,
            "check_failures": [], "last_drill": null}]"#;
        let servers = parse(healthy).unwrap();
        assert!(problems("chimay", &servers).is_empty());
        assert_eq!(
            render("chimay", &servers),
            "chimay backs up ulb: no backup; receive-wal running; barman check OK; no restore \
             drill yet\n"
        );
        assert!(parse("Traceback").is_err());
    }
}
