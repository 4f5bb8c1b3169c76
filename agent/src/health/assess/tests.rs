//! Grading of observations: each threshold, and what a healthy host of each kind says.

use expect_test::expect;

use super::*;

fn render(a: &Assessment) -> String {
    a.checks
        .iter()
        .map(|c| format!("{} {:?}: {}\n", c.name, c.status, c.message))
        .collect()
}

fn healthy() -> Observation {
    Observation {
        now: 0,
        cert_not_after: 100 * 86400,
        cert_warn_secs: CERT_WARN_SECS,
        postgres: None,
        disks: vec![DiskObservation {
            name: "data".into(),
            path: "/opt/postgres/data".into(),
            space: Ok((100 << 30, 40 << 30)),
        }],
        units: vec![("postgres.service".into(), "active".into())],
        failed_units: Ok(vec![]),
        commands: vec![],
    }
}

fn replica(receiver: Option<&str>, lag: u64) -> PgState {
    PgState {
        in_recovery: true,
        timeline: Some(2),
        receiver_status: receiver.map(String::from),
        replay_lag_bytes: Some(lag),
        replay_age_seconds: Some(3.5),
        slots: vec![],
    }
}

#[test]
fn a_healthy_primary_and_its_figures() {
    let seen = Observation {
        postgres: Some(Ok(PgState {
            in_recovery: false,
            timeline: Some(1),
            slots: vec![
                Slot {
                    name: "barman".into(),
                    active: true,
                    retained_bytes: Some(16 << 20),
                },
                Slot {
                    name: "vub".into(),
                    active: true,
                    retained_bytes: Some(0),
                },
            ],
            ..PgState::default()
        })),
        ..healthy()
    };
    let a = assess(&seen);
    expect![[r#"
        certificate Ok: valid for 100 more days
        postgres Ok: accepting connections, not in recovery, timeline 1
        slots Ok: 2 slots, most WAL retained 16.0 MiB (barman)
        disk data Ok: 40% free (40.0 GiB of 100.0 GiB) on /opt/postgres/data
        units Ok: 1 units active
        failed units Ok: none
    "#]]
    .assert_eq(&render(&a));
    let figure = |name: &str| {
        a.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .collect::<Vec<_>>()
    };
    assert_eq!(figure("tpa_pg_up"), [1.0]);
    assert_eq!(figure("tpa_pg_slot_retained_bytes"), [16777216.0, 0.0]);
    assert_eq!(figure("tpa_health_check_status"), [0.0; 6]);
}

#[test]
fn postgres_down_and_a_replica_not_streaming_are_critical() {
    let down = Observation {
        postgres: Some(Err("not running".into())),
        units: vec![("postgres.service".into(), "inactive".into())],
        ..healthy()
    };
    let a = assess(&down);
    expect![[r#"
        certificate Ok: valid for 100 more days
        postgres Critical: not accepting connections: not running
        disk data Ok: 40% free (40.0 GiB of 100.0 GiB) on /opt/postgres/data
        units Critical: not active: postgres.service (inactive)
        failed units Ok: none
    "#]]
    .assert_eq(&render(&a));
    assert!(
        a.samples
            .iter()
            .any(|s| s.name == "tpa_pg_up" && s.value == 0.0)
    );

    let grade = |pg: PgState| {
        let a = assess(&Observation {
            postgres: Some(Ok(pg)),
            ..healthy()
        });
        let c = a
            .checks
            .iter()
            .find(|c| c.name == "replication")
            .expect("replication")
            .clone();
        format!("{:?}: {}", c.status, c.message)
    };
    assert_eq!(
        grade(replica(Some("streaming"), 0)),
        "Ok: streaming, replay 0 B behind what it received"
    );
    assert_eq!(
        grade(replica(Some("streaming"), 2 << 30)),
        "Warning: streaming, but replay is 2.0 GiB behind what it received"
    );
    assert_eq!(
        grade(replica(None, 0)),
        "Critical: not streaming (WAL receiver: none)"
    );
    assert_eq!(
        grade(replica(Some("waiting"), 0)),
        "Critical: not streaming (WAL receiver: waiting)"
    );
}

#[test]
fn slots_disks_certificate_and_units_are_graded() {
    let slot = |retained: u64, active: bool| {
        let pg = PgState {
            slots: vec![Slot {
                name: "s".into(),
                active,
                retained_bytes: Some(retained),
            }],
            ..PgState::default()
        };
        let a = assess(&Observation {
            postgres: Some(Ok(pg)),
            ..healthy()
        });
        let c = a
            .checks
            .iter()
            .find(|c| c.name == "slots")
            .expect("slots")
            .clone();
        (c.status, c.message)
    };
    assert_eq!(slot(1 << 20, true).0, HealthStatus::Ok);
    assert_eq!(slot(2 << 30, true).0, HealthStatus::Warning);
    assert_eq!(slot(11 << 30, true).0, HealthStatus::Critical);
    assert_eq!(
        slot(0, false),
        (
            HealthStatus::Warning,
            "1 slots, most WAL retained 0 B (s); inactive: s".into()
        )
    );

    let disk = |available: u64| {
        let seen = Observation {
            disks: vec![DiskObservation {
                name: "wal".into(),
                path: "/w".into(),
                space: Ok((100, available)),
            }],
            ..healthy()
        };
        assess(&seen)
            .checks
            .into_iter()
            .find(|c| c.name == "disk wal")
            .expect("disk")
            .status
    };
    assert_eq!(disk(50), HealthStatus::Ok);
    assert_eq!(disk(8), HealthStatus::Warning);
    assert_eq!(disk(3), HealthStatus::Critical);

    let cert = |not_after: i64| {
        assess(&Observation {
            cert_not_after: not_after,
            ..healthy()
        })
        .checks[0]
            .clone()
    };
    assert_eq!(cert(10 * 86400).status, HealthStatus::Warning);
    assert_eq!(
        cert(10 * 86400).message,
        "the agent certificate expires in 10 days: run deploy to renew"
    );
    assert_eq!(cert(0).status, HealthStatus::Critical);
    assert!(
        cert(0)
            .message
            .starts_with("the agent certificate has expired")
    );

    // A short lifetime (`agent_cert_renew_before: 60s` in the spec): Warning only in the last minute.
    let short = |not_after: i64| {
        assess(&Observation {
            cert_not_after: not_after,
            cert_warn_secs: 60,
            ..healthy()
        })
        .checks[0]
            .clone()
    };
    assert_eq!(short(90).status, HealthStatus::Ok);
    assert_eq!(short(90).message, "valid for 90 s more");
    assert_eq!(short(45).status, HealthStatus::Warning);
    assert_eq!(
        short(45).message,
        "the agent certificate expires in 45 s: run deploy to renew"
    );

    // A failed unit nobody watches is worth a look; a watched one is the `units` check's.
    let seen = Observation {
        units: vec![("repmgrd.service".into(), "failed".into())],
        failed_units: Ok(vec![
            "repmgrd.service".into(),
            "systemd-remount-fs.service".into(),
        ]),
        ..healthy()
    };
    let a = assess(&seen);
    expect![[r#"
        certificate Ok: valid for 100 more days
        disk data Ok: 40% free (40.0 GiB of 100.0 GiB) on /opt/postgres/data
        units Critical: not active: repmgrd.service (failed)
        failed units Warning: systemd-remount-fs.service
    "#]]
    .assert_eq(&render(&a));
}

#[test]
fn commands_barman_patroni_and_exit() {
    let run = |reads, result: Result<&str, &str>| {
        let seen = Observation {
            commands: vec![CommandObservation {
                name: "c".into(),
                reads,
                result: result.map(String::from).map_err(String::from),
            }],
            ..healthy()
        };
        let c = assess(&seen)
            .checks
            .into_iter()
            .find(|c| c.name == "c")
            .expect("c");
        format!("{:?}: {}", c.status, c.message)
    };
    let healthy_barman = r#"[{"server": "ulb", "last_backup_id": "x", "last_backup_age_seconds": 600,
        "receive_wal": "running", "check_ok": true, "check_failures": [], "last_drill": {"passed": true}}]"#;
    assert_eq!(
        run(CommandOutput::Barman, Ok(healthy_barman)),
        "Ok: ulb: last backup 10 min ago, receive-wal running"
    );
    let broken = r#"[{"server": "ulb", "last_backup_age_seconds": null, "receive_wal": "not running",
        "check_ok": false, "check_failures": ["receive-wal running"], "last_drill": {"passed": false}}]"#;
    assert_eq!(
        run(CommandOutput::Barman, Ok(broken)),
        "Critical: barman check ulb failed: receive-wal running; the last restore drill of ulb failed"
    );
    assert_eq!(
        run(CommandOutput::Barman, Ok("Traceback")),
        "Unknown: unreadable: Traceback"
    );
    assert_eq!(
        run(
            CommandOutput::Patroni,
            Ok(r#"{"state": "streaming", "role": "replica"}"#)
        ),
        "Ok: replica streaming"
    );
    assert_eq!(
        run(
            CommandOutput::Patroni,
            Ok(r#"{"state": "stopped", "role": "replica"}"#)
        ),
        "Critical: replica stopped"
    );
    assert_eq!(
        run(
            CommandOutput::Exit,
            Ok("https://10.0.0.2:2379 is healthy: took 2ms\nmore")
        ),
        "Ok: https://10.0.0.2:2379 is healthy: took 2ms"
    );
    assert_eq!(
        run(
            CommandOutput::Exit,
            Err("etcdctl failed (exit status 1): unhealthy")
        ),
        "Critical: etcdctl failed (exit status 1): unhealthy"
    );
}
