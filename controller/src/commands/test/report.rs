//! `test`'s pure part: one [`Check`] per thing verified, what each expects (pg_control's
//! state for a live role, the application user to connect as, pgbench's figures), the lines
//! printed and the JSON report. No IO: everything here is unit-tested.

use std::fmt::Write as _;

use serde::Serialize;

use crate::commands::status::HostStatus;
use crate::config::Vars;

/// One thing `test` verified, on one host (or `cluster`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub host: String,
    pub name: String,
    pub ok: bool,
    /// What was seen: the figure on success, the reason on failure.
    pub detail: String,
    pub seconds: f64,
}

impl Check {
    pub fn new(host: &str, name: &str, ok: bool, detail: impl Into<String>, seconds: f64) -> Self {
        Check {
            host: host.to_string(),
            name: name.to_string(),
            ok,
            detail: detail.into(),
            seconds,
        }
    }
}

/// The whole run, as `<dir>/test/<timestamp>/report.json` holds it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub cluster: String,
    pub started_at: String,
    pub seconds: f64,
    pub passed: bool,
    pub checks: Vec<Check>,
}

/// The checks the cluster state gives: one per host (up, streaming, reachable) from what
/// `status` gathered, and one per backed-up server from its Barman host's `barman check`.
pub fn from_status(hosts: &[HostStatus], problems: &[String], seconds: f64) -> Vec<Check> {
    let mut checks = Vec::new();
    for h in hosts {
        let mine: Vec<&str> = problems
            .iter()
            .filter_map(|p| p.strip_prefix(&format!("{}: ", h.host)))
            .filter(|p| !p.starts_with("barman check") && !p.starts_with("the last restore"))
            .collect();
        let seen = match &h.upstream {
            Some(up) => format!("{} of {up}, {}", h.role, h.state),
            None => format!("{}, {}", h.role, h.state),
        };
        let detail = if mine.is_empty() {
            seen
        } else {
            mine.join("; ")
        };
        checks.push(Check::new(
            &h.host,
            "state",
            mine.is_empty(),
            detail,
            seconds,
        ));
        for b in &h.backups {
            let detail = if b.check_ok {
                "barman check all OK".to_string()
            } else {
                format!("barman check FAILED: {}", b.check_failures.join(", "))
            };
            checks.push(Check::new(
                &h.host,
                &format!("barman check {}", b.server),
                b.check_ok,
                detail,
                seconds,
            ));
            if let Some(d) = &b.last_drill {
                let failures = d.failures();
                let detail = match (d.passed, failures.is_empty()) {
                    (true, _) => format!("passed ({})", d.started_at.as_deref().unwrap_or("?")),
                    (false, true) => "interrupted".to_string(),
                    (false, false) => failures.join("; "),
                };
                checks.push(Check::new(
                    &h.host,
                    &format!("last restore drill {}", b.server),
                    d.passed,
                    detail,
                    seconds,
                ));
            }
        }
    }
    // Cluster-wide problems: split-brain, no live primary.
    for p in problems.iter().filter(|p| {
        !hosts
            .iter()
            .any(|h| p.starts_with(&format!("{}: ", h.host)))
    }) {
        checks.push(Check::new("cluster", "state", false, p.clone(), seconds));
    }
    checks
}

/// `Database cluster state` in pg_controldata's output.
pub fn controldata_state(output: &str) -> Option<&str> {
    output
        .lines()
        .find_map(|l| l.strip_prefix("Database cluster state:"))
        .map(str::trim)
}

/// The pg_control state a host in live role `role` has: a primary or a witness runs in
/// production, a replica in archive recovery. None for other roles (not checked).
pub fn expected_state(role: &str) -> Option<&'static str> {
    match role {
        "primary" | "witness" => Some("in production"),
        "replica" => Some("in archive recovery"),
        _ => None,
    }
}

/// The application user `test` connects as: the first `postgres_users` entry that can log in
/// and is no superuser, with the first database it owns (else `postgres`). None when
/// config.yml has no such user.
pub fn application_user(vars: &Vars) -> Option<(String, String)> {
    let attr = |u: &crate::config::PostgresUser, a: &str| {
        u.role_attrs.iter().any(|r| r.eq_ignore_ascii_case(a))
    };
    let user = vars
        .postgres_users
        .iter()
        .find(|u| !attr(u, "superuser") && !attr(u, "nologin"))?;
    let database = vars
        .postgres_databases
        .iter()
        .find(|d| d.owner.as_deref() == Some(user.username.as_str()))
        .map_or("postgres", |d| d.name.as_str());
    Some((user.username.clone(), database.to_string()))
}

/// pgbench's `tps = 1234.5 (without initial connection time)` and its failed transactions
/// (`number of failed transactions: 0 (0.000%)`, pgbench 15 and later).
pub fn pgbench_figures(output: &str) -> Option<(f64, u64)> {
    let tps = output.lines().find_map(|l| {
        l.trim()
            .strip_prefix("tps = ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })?;
    let failed = output
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("number of failed transactions: ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    Some((tps, failed))
}

/// One line per check, failures marked.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let _ = writeln!(
            out,
            "{} [{}] {}: {} ({:.2}s)",
            if c.ok { "ok  " } else { "FAIL" },
            c.host,
            c.name,
            c.detail,
            c.seconds
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PostgresDatabase, PostgresUser};

    fn host(name: &str, role: &str, state: &str, upstream: Option<&str>) -> HostStatus {
        HostStatus {
            host: name.into(),
            role: role.into(),
            upstream: upstream.map(str::to_string),
            state: state.into(),
            lag_bytes: None,
            lag_seconds: None,
            timeline: Some(1),
            repmgr: None,
            config_role: role.into(),
            config_upstream: upstream.map(str::to_string),
            differs_from_config: false,
            note: None,
            backups: vec![],
            patroni: None,
            etcd: None,
            health: None,
        }
    }

    #[test]
    fn status_problems_become_failed_checks_of_their_host() {
        let hosts = [
            host("ulb", "primary", "up", None),
            host("vub", "replica", "not streaming", Some("ulb")),
        ];
        let problems = vec!["vub: not streaming".to_string(), "no live primary".into()];
        let checks = from_status(&hosts, &problems, 0.5);
        let got: Vec<(&str, bool, &str)> = checks
            .iter()
            .map(|c| (c.host.as_str(), c.ok, c.detail.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("ulb", true, "primary, up"),
                ("vub", false, "not streaming"),
                ("cluster", false, "no live primary"),
            ]
        );
    }

    #[test]
    fn pg_control_state_per_live_role() {
        let out = "pg_control version number:            1300\nDatabase cluster state:               in archive recovery\n";
        assert_eq!(controldata_state(out), Some("in archive recovery"));
        assert_eq!(expected_state("replica"), controldata_state(out));
        assert_eq!(expected_state("primary"), Some("in production"));
        assert_eq!(expected_state("barman"), None);
        assert_eq!(controldata_state("garbage"), None);
    }

    #[test]
    fn the_application_user_is_no_superuser_and_uses_its_database() {
        let mut vars = Vars::default();
        assert_eq!(application_user(&vars), None);
        vars.postgres_users = vec![
            PostgresUser {
                username: "slonik".into(),
                role_attrs: vec!["SUPERUSER".into()],
                ..Default::default()
            },
            PostgresUser {
                username: "reports".into(),
                role_attrs: vec!["nologin".into()],
                ..Default::default()
            },
            PostgresUser {
                username: "ada".into(),
                ..Default::default()
            },
        ];
        assert_eq!(
            application_user(&vars),
            Some(("ada".into(), "postgres".into()))
        );
        vars.postgres_databases = vec![PostgresDatabase {
            name: "adadb".into(),
            owner: Some("ada".into()),
            ..Default::default()
        }];
        assert_eq!(
            application_user(&vars),
            Some(("ada".into(), "adadb".into()))
        );
    }

    #[test]
    fn pgbench_output_is_read() {
        let out = "transaction type: <builtin: TPC-B (sort of)>\nnumber of failed transactions: 2 (0.100%)\nlatency average = 3.1 ms\ntps = 640.123456 (without initial connection time)\n";
        assert_eq!(pgbench_figures(out), Some((640.123456, 2)));
        assert_eq!(
            pgbench_figures("tps = 12.5 (without initial connection time)"),
            Some((12.5, 0))
        );
        assert_eq!(pgbench_figures("connection refused"), None);
    }
}
