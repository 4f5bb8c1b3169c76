//! Health checks, each `Ok | Warning | Critical | Unknown`.
//!
//! - [`schedule`]: the agent checks its host every `interval_secs` of the health spec deploy writes
//!   (`/etc/tpa-agent/health.json`) and keeps the latest round; the Health RPC answers from it.
//! - [`observe`] runs what the spec asks for; [`assess`] grades it (pure).
//! - [`metrics`] renders the round's figures for Prometheus; [`serve`] serves them, opt-in.
//! - [`evaluate`] (below): what a host without a health spec answers (a deploy has not reached it yet):
//!   a pure function of its facts and its certificate's expiry.

pub mod assess;
pub mod metrics;
pub mod observe;
pub mod schedule;
pub mod serve;

use tpa_common::facts::Facts;
use tpa_common::health::{HealthCheck, HealthStatus};

/// Free space below these fractions of the filesystem is Warning / Critical.
const DISK_WARN: f64 = 0.10;
const DISK_CRITICAL: f64 = 0.05;

/// Evaluates the checks. `data_dir` is the Postgres data directory asked about (None: agent checks only);
/// times are seconds since the Unix epoch.
pub fn evaluate(
    facts: &Facts,
    data_dir: Option<&str>,
    cert_not_after: i64,
    now: i64,
) -> Vec<HealthCheck> {
    let mut checks = vec![
        certificate(cert_not_after, now),
        disk(facts, data_dir.unwrap_or("/")),
    ];
    if let Some(dir) = data_dir {
        checks.push(postgres(facts, dir));
    }
    checks
}

fn check(name: &str, status: HealthStatus, message: String) -> HealthCheck {
    HealthCheck {
        name: name.to_string(),
        status,
        message,
    }
}

fn certificate(not_after: i64, now: i64) -> HealthCheck {
    assess::certificate_check(not_after, now, assess::CERT_WARN_SECS)
}

/// Free space on the filesystem holding `path` (the longest mount point that is a prefix of it).
fn disk(facts: &Facts, path: &str) -> HealthCheck {
    let under = |mount: &str| {
        path == mount
            || mount == "/"
            || path
                .strip_prefix(mount)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let Some(d) = facts
        .disks
        .iter()
        .filter(|d| under(&d.mount))
        .max_by_key(|d| d.mount.len())
    else {
        return check(
            "disk",
            HealthStatus::Unknown,
            format!("no filesystem found for {path}"),
        );
    };
    if d.total == 0 {
        return check(
            "disk",
            HealthStatus::Unknown,
            format!("{} reports no size", d.mount),
        );
    }
    let free = d.available as f64 / d.total as f64;
    let status = match free {
        f if f < DISK_CRITICAL => HealthStatus::Critical,
        f if f < DISK_WARN => HealthStatus::Warning,
        _ => HealthStatus::Ok,
    };
    check(
        "disk",
        status,
        format!("{:.0}% free on {} (holding {path})", free * 100.0, d.mount),
    )
}

fn postgres(facts: &Facts, data_dir: &str) -> HealthCheck {
    let Some(pg) = &facts.postgres else {
        return check(
            "postgres",
            HealthStatus::Unknown,
            format!("no facts about {data_dir}"),
        );
    };
    if !pg.initialised {
        return check(
            "postgres",
            HealthStatus::Unknown,
            format!("no cluster initialised in {data_dir}"),
        );
    }
    if !pg.running {
        return check(
            "postgres",
            HealthStatus::Critical,
            format!("the instance in {data_dir} is not running"),
        );
    }
    let role = match pg.in_recovery {
        Some(true) => "replica",
        Some(false) => "primary",
        None => "role unknown: could not query it",
    };
    check("postgres", HealthStatus::Ok, format!("running ({role})"))
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use tpa_common::facts::{Disk, PostgresFacts};

    use super::*;

    fn render(checks: &[HealthCheck]) -> String {
        checks
            .iter()
            .map(|c| format!("{} {:?}: {}\n", c.name, c.status, c.message))
            .collect()
    }

    fn facts(available: u64, pg: Option<PostgresFacts>) -> Facts {
        Facts {
            disks: vec![
                Disk {
                    mount: "/".into(),
                    total: 100,
                    available: 50,
                },
                Disk {
                    mount: "/opt/postgres".into(),
                    total: 100,
                    available,
                },
            ],
            postgres: pg,
            ..Facts::default()
        }
    }

    #[test]
    fn healthy_primary() {
        let pg = PostgresFacts {
            initialised: true,
            running: true,
            in_recovery: Some(false),
            ..Default::default()
        };
        let checks = evaluate(
            &facts(40, Some(pg)),
            Some("/opt/postgres/data"),
            100 * 86400,
            0,
        );
        expect![[r#"
            certificate Ok: valid for 100 more days
            disk Ok: 40% free on /opt/postgres (holding /opt/postgres/data)
            postgres Ok: running (primary)
        "#]]
        .assert_eq(&render(&checks));
    }

    #[test]
    fn problems_are_graded() {
        let stopped = PostgresFacts {
            initialised: true,
            running: false,
            ..Default::default()
        };
        let checks = evaluate(
            &facts(3, Some(stopped)),
            Some("/opt/postgres/data"),
            10 * 86400,
            0,
        );
        expect![[r#"
            certificate Warning: the agent certificate expires in 10 days: run deploy to renew
            disk Critical: 3% free on /opt/postgres (holding /opt/postgres/data)
            postgres Critical: the instance in /opt/postgres/data is not running
        "#]]
        .assert_eq(&render(&checks));
        let agent_only = evaluate(&facts(8, None), None, -1, 0);
        expect![[r#"
            certificate Critical: the agent certificate has expired: re-run deploy (its bootstrap re-enrols the agent over SSH)
            disk Ok: 50% free on / (holding /)
        "#]]
        .assert_eq(&render(&agent_only));
    }

    #[test]
    fn a_mount_prefix_must_end_at_a_path_boundary() {
        let f = facts(1, None);
        let check = disk(&f, "/opt/postgresql-other");
        assert_eq!(
            check.message,
            "50% free on / (holding /opt/postgresql-other)"
        );
    }
}
