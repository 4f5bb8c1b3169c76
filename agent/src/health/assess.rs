//! The pure half of the scheduled checks: what one round saw on the host (an [`Observation`])
//! graded into named checks (`Ok | Warning | Critical | Unknown`) and the figures `/metrics`
//! serves ([`Sample`]s). No IO: every threshold here is unit-tested.
//!
//! Critical is kept for what is broken (Postgres not accepting connections, a replica not
//! streaming, a watched unit not active, a failed `barman check` or restore drill, an expired
//! certificate, a full disk): `status` exits 1 on it. Warning is for what needs a look soon.

use serde::Deserialize;
use tpa_common::health::{HealthCheck, HealthStatus};
use tpa_common::health_spec::CommandOutput;

/// The agent certificate is reported as Warning this long before it expires, unless the health spec
/// says otherwise (`agent_cert_renew_before`).
pub const CERT_WARN_SECS: i64 = 30 * 24 * 3600;
/// Free space below these fractions of the filesystem is Warning / Critical.
const DISK_WARN: f64 = 0.10;
const DISK_CRITICAL: f64 = 0.05;
/// WAL a replication slot holds back: Warning from 1 GiB, Critical from 10 GiB.
const SLOT_WARN_BYTES: u64 = 1 << 30;
const SLOT_CRITICAL_BYTES: u64 = 10 << 30;
/// WAL a replica received but has not replayed: Warning from 1 GiB.
const REPLAY_WARN_BYTES: u64 = 1 << 30;

/// What one round of checks saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Unix seconds.
    pub now: i64,
    pub cert_not_after: i64,
    /// Warning this many seconds before `cert_not_after`: when deploy would renew it.
    pub cert_warn_secs: i64,
    /// None when the spec names no Postgres.
    pub postgres: Option<Result<PgState, String>>,
    pub disks: Vec<DiskObservation>,
    /// Each watched unit and its `systemctl is-active` answer.
    pub units: Vec<(String, String)>,
    /// Failed units on the host (`systemctl --failed`), or why systemd could not say.
    pub failed_units: Result<Vec<String>, String>,
    pub commands: Vec<CommandObservation>,
}

/// A Postgres that answered the health query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PgState {
    pub in_recovery: bool,
    pub timeline: Option<u32>,
    /// `pg_stat_wal_receiver.status`; None without a receiver.
    pub receiver_status: Option<String>,
    /// A replica's received but not yet replayed WAL.
    pub replay_lag_bytes: Option<u64>,
    /// `now() - pg_last_xact_replay_timestamp()` on a replica.
    pub replay_age_seconds: Option<f64>,
    pub slots: Vec<Slot>,
}

/// One replication slot (on a primary: the WAL it retains).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    pub active: bool,
    pub retained_bytes: Option<u64>,
}

/// One watched directory's filesystem: (total, available) bytes, or why unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskObservation {
    pub name: String,
    pub path: String,
    pub space: Result<(u64, u64), String>,
}

/// A spec command's answer: its stdout when it exited 0, else why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandObservation {
    pub name: String,
    pub reads: CommandOutput,
    pub result: Result<String, String>,
}

/// One metric sample: a gauge.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// The graded checks and the figures of one round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assessment {
    pub checks: Vec<HealthCheck>,
    pub samples: Vec<Sample>,
}

impl Assessment {
    fn check(&mut self, name: impl Into<String>, status: HealthStatus, message: impl Into<String>) {
        self.checks.push(HealthCheck {
            name: name.into(),
            status,
            message: message.into(),
        });
    }

    fn sample(&mut self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        self.samples.push(Sample {
            name,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
            value,
        });
    }
}

/// Grades `seen`.
pub fn assess(seen: &Observation) -> Assessment {
    let mut a = Assessment::default();
    a.checks.push(certificate_check(
        seen.cert_not_after,
        seen.now,
        seen.cert_warn_secs,
    ));
    a.sample(
        "tpa_agent_certificate_expiry_seconds",
        &[],
        (seen.cert_not_after - seen.now) as f64,
    );
    if let Some(pg) = &seen.postgres {
        postgres(&mut a, pg);
    }
    for d in &seen.disks {
        disk(&mut a, d);
    }
    units(&mut a, &seen.units, &seen.failed_units);
    for c in &seen.commands {
        command(&mut a, c);
    }
    for c in a.checks.clone() {
        a.sample(
            "tpa_health_check_status",
            &[("check", &c.name)],
            status_value(c.status),
        );
    }
    a
}

/// The value of `tpa_health_check_status`: 0 ok, 1 warning, 2 critical, 3 unknown.
pub fn status_value(status: HealthStatus) -> f64 {
    match status {
        HealthStatus::Ok => 0.0,
        HealthStatus::Warning => 1.0,
        HealthStatus::Critical => 2.0,
        HealthStatus::Unknown => 3.0,
    }
}

/// The `certificate` check: Critical once expired, Warning within `warn_secs` of expiry (deploy renews
/// it then), else Ok. Shared with the checks of a host without a health spec.
pub fn certificate_check(not_after: i64, now: i64, warn_secs: i64) -> HealthCheck {
    let left = not_after - now;
    let (status, message) = match left {
        l if l <= 0 => (
            HealthStatus::Critical,
            "the agent certificate has expired: re-run deploy (its bootstrap re-enrols the agent over SSH)"
                .to_string(),
        ),
        l if l <= warn_secs => (
            HealthStatus::Warning,
            format!(
                "the agent certificate expires in {}: run deploy to renew",
                tpa_common::health::age_text(l)
            ),
        ),
        l if l < 2 * 86400 => (
            HealthStatus::Ok,
            format!("valid for {} more", tpa_common::health::age_text(l)),
        ),
        l => (
            HealthStatus::Ok,
            format!("valid for {} more days", l / 86400),
        ),
    };
    HealthCheck {
        name: "certificate".to_string(),
        status,
        message,
    }
}

fn postgres(a: &mut Assessment, pg: &Result<PgState, String>) {
    let pg = match pg {
        Err(why) => {
            a.sample("tpa_pg_up", &[], 0.0);
            a.check(
                "postgres",
                HealthStatus::Critical,
                format!("not accepting connections: {why}"),
            );
            return;
        }
        Ok(pg) => pg,
    };
    a.sample("tpa_pg_up", &[], 1.0);
    a.sample(
        "tpa_pg_in_recovery",
        &[],
        if pg.in_recovery { 1.0 } else { 0.0 },
    );
    if let Some(tl) = pg.timeline {
        a.sample("tpa_pg_timeline", &[], tl.into());
    }
    let role = if pg.in_recovery {
        "in recovery"
    } else {
        "not in recovery"
    };
    let timeline = pg
        .timeline
        .map(|t| format!(", timeline {t}"))
        .unwrap_or_default();
    a.check(
        "postgres",
        HealthStatus::Ok,
        format!("accepting connections, {role}{timeline}"),
    );
    if pg.in_recovery {
        replication(a, pg);
    }
    slots(a, &pg.slots);
}

fn replication(a: &mut Assessment, pg: &PgState) {
    let streaming = pg.receiver_status.as_deref() == Some("streaming");
    a.sample(
        "tpa_pg_wal_receiver_streaming",
        &[],
        if streaming { 1.0 } else { 0.0 },
    );
    if let Some(b) = pg.replay_lag_bytes {
        a.sample("tpa_pg_replay_lag_bytes", &[], b as f64);
    }
    if let Some(s) = pg.replay_age_seconds {
        a.sample("tpa_pg_last_replay_age_seconds", &[], s);
    }
    let lag = pg.replay_lag_bytes.unwrap_or(0);
    let (status, message) = if !streaming {
        (
            HealthStatus::Critical,
            format!(
                "not streaming (WAL receiver: {})",
                pg.receiver_status.as_deref().unwrap_or("none")
            ),
        )
    } else if lag >= REPLAY_WARN_BYTES {
        (
            HealthStatus::Warning,
            format!(
                "streaming, but replay is {} behind what it received",
                bytes(lag)
            ),
        )
    } else {
        (
            HealthStatus::Ok,
            format!("streaming, replay {} behind what it received", bytes(lag)),
        )
    };
    a.check("replication", status, message);
}

fn slots(a: &mut Assessment, slots: &[Slot]) {
    if slots.is_empty() {
        return;
    }
    for s in slots {
        a.sample(
            "tpa_pg_slot_active",
            &[("slot", &s.name)],
            if s.active { 1.0 } else { 0.0 },
        );
        if let Some(b) = s.retained_bytes {
            a.sample("tpa_pg_slot_retained_bytes", &[("slot", &s.name)], b as f64);
        }
    }
    let worst = slots
        .iter()
        .filter_map(|s| Some((s.retained_bytes?, s.name.as_str())))
        .max();
    let inactive: Vec<&str> = slots
        .iter()
        .filter(|s| !s.active)
        .map(|s| s.name.as_str())
        .collect();
    let mut status = match worst {
        Some((b, _)) if b >= SLOT_CRITICAL_BYTES => HealthStatus::Critical,
        Some((b, _)) if b >= SLOT_WARN_BYTES => HealthStatus::Warning,
        _ => HealthStatus::Ok,
    };
    let mut message = match worst {
        Some((b, name)) => format!(
            "{} slots, most WAL retained {} ({name})",
            slots.len(),
            bytes(b)
        ),
        None => format!("{} slots", slots.len()),
    };
    if !inactive.is_empty() {
        status = status.max(HealthStatus::Warning);
        message.push_str(&format!("; inactive: {}", inactive.join(", ")));
    }
    a.check("slots", status, message);
}

fn disk(a: &mut Assessment, d: &DiskObservation) {
    let name = format!("disk {}", d.name);
    let (total, available) = match &d.space {
        Ok(space) => *space,
        Err(why) => return a.check(name, HealthStatus::Unknown, format!("{}: {why}", d.path)),
    };
    let labels = [("name", d.name.as_str()), ("path", d.path.as_str())];
    a.sample("tpa_disk_size_bytes", &labels, total as f64);
    a.sample("tpa_disk_available_bytes", &labels, available as f64);
    if total == 0 {
        return a.check(
            name,
            HealthStatus::Unknown,
            format!("{} reports no size", d.path),
        );
    }
    let free = available as f64 / total as f64;
    let status = match free {
        f if f < DISK_CRITICAL => HealthStatus::Critical,
        f if f < DISK_WARN => HealthStatus::Warning,
        _ => HealthStatus::Ok,
    };
    a.check(
        name,
        status,
        format!(
            "{:.0}% free ({} of {}) on {}",
            free * 100.0,
            bytes(available),
            bytes(total),
            d.path
        ),
    );
}

fn units(a: &mut Assessment, watched: &[(String, String)], failed: &Result<Vec<String>, String>) {
    for (unit, state) in watched {
        a.sample(
            "tpa_systemd_unit_active",
            &[("unit", unit)],
            if state == "active" { 1.0 } else { 0.0 },
        );
    }
    if !watched.is_empty() {
        let down: Vec<String> = watched
            .iter()
            .filter(|(_, state)| state != "active")
            .map(|(unit, state)| format!("{unit} ({state})"))
            .collect();
        if down.is_empty() {
            a.check(
                "units",
                HealthStatus::Ok,
                format!("{} units active", watched.len()),
            );
        } else {
            a.check(
                "units",
                HealthStatus::Critical,
                format!("not active: {}", down.join(", ")),
            );
        }
    }
    match failed {
        Err(why) => a.check("failed units", HealthStatus::Unknown, why.clone()),
        Ok(failed) => {
            a.sample("tpa_systemd_failed_units", &[], failed.len() as f64);
            // The watched ones are the `units` check's; others are worth a look, no more.
            let others: Vec<&str> = failed
                .iter()
                .filter(|f| !watched.iter().any(|(u, _)| u == *f))
                .map(String::as_str)
                .collect();
            if others.is_empty() {
                a.check("failed units", HealthStatus::Ok, "none");
            } else {
                a.check("failed units", HealthStatus::Warning, others.join(", "));
            }
        }
    }
}

fn command(a: &mut Assessment, c: &CommandObservation) {
    let out = match &c.result {
        Ok(out) => out,
        Err(why) => return a.check(c.name.clone(), HealthStatus::Critical, why.clone()),
    };
    match c.reads {
        CommandOutput::Exit => a.check(c.name.clone(), HealthStatus::Ok, first_line(out)),
        CommandOutput::Patroni => patroni(a, &c.name, out),
        CommandOutput::Barman => barman(a, &c.name, out),
    }
}

/// What the agent reads of `patroni-tpa state`.
#[derive(Debug, Deserialize)]
struct PatroniState {
    state: Option<String>,
    role: Option<String>,
}

fn patroni(a: &mut Assessment, name: &str, out: &str) {
    let Ok(p) = serde_json::from_str::<PatroniState>(out) else {
        return a.check(
            name,
            HealthStatus::Unknown,
            format!("unreadable: {}", first_line(out)),
        );
    };
    let state = p.state.as_deref().unwrap_or("unknown");
    let running = matches!(state, "running" | "streaming");
    a.sample("tpa_patroni_running", &[], if running { 1.0 } else { 0.0 });
    let status = if running {
        HealthStatus::Ok
    } else {
        HealthStatus::Critical
    };
    a.check(
        name,
        status,
        format!("{} {state}", p.role.as_deref().unwrap_or("?")),
    );
}

/// What the agent reads of the drill program's `--health` report (controller's
/// `status/backups.rs` reads all of it).
#[derive(Debug, Deserialize)]
struct BackupHealth {
    server: String,
    last_backup_age_seconds: Option<i64>,
    receive_wal: Option<String>,
    check_ok: bool,
    #[serde(default)]
    check_failures: Vec<String>,
    last_drill: Option<Drill>,
}

#[derive(Debug, Deserialize)]
struct Drill {
    passed: bool,
}

fn barman(a: &mut Assessment, name: &str, out: &str) {
    let Ok(servers) = serde_json::from_str::<Vec<BackupHealth>>(out) else {
        return a.check(
            name,
            HealthStatus::Unknown,
            format!("unreadable: {}", first_line(out)),
        );
    };
    let mut problems = Vec::new();
    let mut fine = Vec::new();
    for s in &servers {
        let label = [("server", s.server.as_str())];
        a.sample(
            "tpa_barman_check_ok",
            &label,
            if s.check_ok { 1.0 } else { 0.0 },
        );
        if let Some(age) = s.last_backup_age_seconds {
            a.sample("tpa_barman_last_backup_age_seconds", &label, age as f64);
        }
        let streaming = s.receive_wal.as_deref() == Some("running");
        a.sample(
            "tpa_barman_receive_wal_running",
            &label,
            if streaming { 1.0 } else { 0.0 },
        );
        if let Some(d) = &s.last_drill {
            a.sample(
                "tpa_barman_last_drill_passed",
                &label,
                if d.passed { 1.0 } else { 0.0 },
            );
        }
        if !s.check_ok {
            problems.push(format!(
                "barman check {} failed: {}",
                s.server,
                s.check_failures.join(", ")
            ));
        }
        if s.last_drill.as_ref().is_some_and(|d| !d.passed) {
            problems.push(format!("the last restore drill of {} failed", s.server));
        }
        let age = s
            .last_backup_age_seconds
            .map_or("no backup".to_string(), |s| {
                format!("last backup {} ago", tpa_common::health::age_text(s))
            });
        fine.push(format!(
            "{}: {age}, receive-wal {}",
            s.server,
            s.receive_wal.as_deref().unwrap_or("unknown")
        ));
    }
    if problems.is_empty() {
        a.check(name, HealthStatus::Ok, fine.join("; "));
    } else {
        a.check(name, HealthStatus::Critical, problems.join("; "));
    }
}

fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(200).collect()
}

/// Bytes for people: `12.0 MiB`.
fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = b as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests;
