//! The IO half of the scheduled checks: runs what the health spec asks for (one psql run, two
//! systemctl runs, statvfs of each watched directory, the spec's commands) and returns what it
//! saw as an [`Observation`] for [`super::assess`]. Blocking: called on a blocking thread.

use std::time::Duration;

use tpa_common::health_spec::{CommandSpec, HealthSpec, PostgresSpec};
use tpa_common::query::SqlQuery;

use super::assess::{CommandObservation, DiskObservation, Observation, PgState, Slot};
use crate::resource::run::{self, Invocation, Timeouts};

/// Time limit of the psql and systemctl runs of a round: a round must stay short.
const QUICK: Duration = Duration::from_secs(10);

/// The health query: one row about the server, one per replication slot.
const SQL: &str = "select 'server', pg_is_in_recovery(),
  case when pg_is_in_recovery() then (select timeline_id from pg_control_checkpoint())
    else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int end,
  (select status from pg_stat_wal_receiver),
  case when pg_is_in_recovery()
    then greatest(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0) end,
  case when pg_is_in_recovery()
    then extract(epoch from now() - pg_last_xact_replay_timestamp()) end;
select 'slot', slot_name, active,
  case when pg_is_in_recovery() then null
    else greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0) end
  from pg_replication_slots order by slot_name;
";

/// Observes what `spec` asks for. `due` says whether a command runs this round; a command
/// that does not keeps its previous observation, from `previous`.
pub fn observe(
    spec: &HealthSpec,
    due: impl Fn(&CommandSpec) -> bool,
    previous: &[CommandObservation],
    cert_not_after: i64,
    now: i64,
) -> Observation {
    Observation {
        now,
        cert_not_after,
        cert_warn_secs: spec
            .cert_renew_before_secs
            .and_then(|s| i64::try_from(s).ok())
            .unwrap_or(super::assess::CERT_WARN_SECS),
        postgres: spec.postgres.as_ref().map(postgres),
        disks: spec
            .disks
            .iter()
            .map(|d| DiskObservation {
                name: d.name.clone(),
                path: d.path.clone(),
                space: disk_space(&d.path),
            })
            .collect(),
        units: unit_states(&spec.units),
        failed_units: failed_units(),
        commands: spec
            .commands
            .iter()
            .map(|c| match previous.iter().find(|p| p.name == c.name) {
                Some(p) if !due(c) => p.clone(),
                _ => command(c),
            })
            .collect(),
    }
}

fn postgres(pg: &PostgresSpec) -> Result<PgState, String> {
    let timeouts = Timeouts {
        query: QUICK,
        connect: Duration::from_secs(3),
        lock: Duration::from_secs(3),
        ..Timeouts::default()
    };
    let rows = crate::query::run(&SqlQuery::postgres(pg.port, SQL), &timeouts)
        .map_err(|e| down_reason(&e.to_string()))?;
    parse_rows(&rows)
}

/// The health query's rows as a [`PgState`].
pub fn parse_rows(rows: &[Vec<String>]) -> Result<PgState, String> {
    let field = |row: &[String], i: usize| row.get(i).map_or("", String::as_str).to_string();
    let server = rows
        .iter()
        .find(|r| field(r, 0) == "server" && r.len() == 6)
        .ok_or_else(|| format!("unexpected answer to the health query: {rows:?}"))?;
    let bytes = |s: String| s.parse::<f64>().ok().map(|b| b.max(0.0) as u64);
    Ok(PgState {
        in_recovery: field(server, 1) == "t",
        timeline: field(server, 2).parse().ok(),
        receiver_status: Some(field(server, 3)).filter(|s| !s.is_empty()),
        replay_lag_bytes: bytes(field(server, 4)),
        replay_age_seconds: field(server, 5).parse().ok(),
        slots: rows
            .iter()
            .filter(|r| field(r, 0) == "slot")
            .map(|r| Slot {
                name: field(r, 1),
                active: field(r, 2) == "t",
                retained_bytes: bytes(field(r, 3)),
            })
            .collect(),
    })
}

/// Why Postgres did not answer, short.
fn down_reason(error: &str) -> String {
    if error.contains("No such file or directory") || error.contains("Is the server running") {
        return "not running".to_string();
    }
    for phase in ["starting up", "shutting down"] {
        if error.contains(&format!("the database system is {phase}")) {
            return phase.to_string();
        }
    }
    let last = error
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or(error);
    last.chars().take(200).collect()
}

fn disk_space(path: &str) -> Result<(u64, u64), String> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| e.desc().to_string())?;
    let unit = s.fragment_size();
    Ok((s.blocks() * unit, s.blocks_available() * unit))
}

/// `systemctl is-active` of each unit, in order (it prints one state per unit).
fn unit_states(units: &[String]) -> Vec<(String, String)> {
    if units.is_empty() {
        return vec![];
    }
    let mut argv = vec!["systemctl".to_string(), "is-active".into(), "--".into()];
    argv.extend(units.iter().cloned());
    let states: Vec<String> = match quick(&argv) {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .collect(),
        Err(why) => vec![format!("unknown: {why}")],
    };
    units
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let state = states.get(i).or(states.first()).cloned();
            (u.clone(), state.unwrap_or_else(|| "unknown".into()))
        })
        .collect()
}

fn failed_units() -> Result<Vec<String>, String> {
    let argv = [
        "systemctl",
        "list-units",
        "--state=failed",
        "--plain",
        "--no-legend",
        "--no-pager",
    ]
    .map(String::from);
    let out = quick(&argv)?;
    if !out.success() {
        return Err(format!("systemctl list-units: {}", out.tail()));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| *w != "●"))
        .map(str::to_string)
        .collect())
}

fn quick(argv: &[String]) -> Result<run::Output, String> {
    run::run_for(
        &Invocation {
            argv,
            ..Invocation::default()
        },
        QUICK,
    )
    .map_err(|e| e.to_string())
}

fn command(c: &CommandSpec) -> CommandObservation {
    let env = [("LC_ALL".to_string(), "C".to_string())];
    let ran = run::run_for(
        &Invocation {
            argv: &c.argv,
            run_as: c.run_as.as_deref(),
            env: &env,
            stdin: None,
        },
        Duration::from_secs(c.timeout_secs.into()),
    );
    let program = c
        .argv
        .first()
        .map_or("", |p| p.rsplit('/').next().unwrap_or(p));
    let result = match ran {
        Err(e) => Err(e.to_string()),
        Ok(out) if out.success() => {
            let stdout = out.stdout_text();
            // etcdctl says `… is healthy` on stderr.
            Ok(if stdout.is_empty() {
                String::from_utf8_lossy(&out.stderr).trim().to_string()
            } else {
                stdout
            })
        }
        Ok(out) => Err(format!(
            "{program} failed ({}): {}",
            out.status_text(),
            out.tail().split_whitespace().collect::<Vec<_>>().join(" ")
        )),
    };
    CommandObservation {
        name: c.name.clone(),
        reads: c.reads,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|f| (*f).to_string()).collect()
    }

    #[test]
    fn rows_of_a_replica_and_a_primary() {
        let replica = parse_rows(&[row(&["server", "t", "2", "streaming", "0", "1.5"])]).unwrap();
        assert!(replica.in_recovery);
        assert_eq!(replica.timeline, Some(2));
        assert_eq!(replica.receiver_status.as_deref(), Some("streaming"));
        assert_eq!(
            (replica.replay_lag_bytes, replica.replay_age_seconds),
            (Some(0), Some(1.5))
        );
        let primary = parse_rows(&[
            row(&["server", "f", "1", "", "", ""]),
            row(&["slot", "barman", "t", "16777216"]),
            row(&["slot", "vub", "f", ""]),
        ])
        .unwrap();
        assert_eq!(primary.receiver_status, None);
        assert_eq!(
            primary.slots,
            [
                Slot {
                    name: "barman".into(),
                    active: true,
                    retained_bytes: Some(16 << 20)
                },
                Slot {
                    name: "vub".into(),
                    active: false,
                    retained_bytes: None
                },
            ]
        );
        assert!(parse_rows(&[row(&["slot", "x", "t", "1"])]).is_err());
        assert_eq!(
            down_reason(
                "psql failed: connection to server on socket \"/run/postgresql/.s.PGSQL.5432\" failed: No such file or directory\nIs the server running locally"
            ),
            "not running"
        );
    }
}
