//! `status` without hosts: the seed cluster's probes as agents would answer them, merged,
//! judged and rendered. Regenerate goldens after an intended change with
//! `UPDATE_EXPECT=1 cargo test -p tpa-controller status`.

use expect_test::expect;

use super::*;
use crate::inventory::Host;

const SEED: &str = include_str!("../../../../../tests/fixtures/seed/config.yml");

fn seed() -> Cluster {
    Cluster::parse(SEED, "config.yml").expect("valid config")
}

/// The seed's inventory: ulb 10.33.7.2, vub .3, achel .4, chimay .5.
fn inventory(cluster: &Cluster) -> Inventory {
    Inventory {
        cluster: cluster.name.clone(),
        config_sha256: String::new(),
        platform: crate::config::Platform::Docker,
        controller_address: None,
        network: None,
        hosts: cluster
            .instances
            .iter()
            .enumerate()
            .map(|(n, i)| Host {
                name: i.name.clone(),
                node: i.node,
                address: format!("10.33.7.{}", n + 2).parse().unwrap(),
                ssh_user: "root".into(),
                ssh_port: 22,
                platform: crate::config::Platform::Docker,
                platform_id: None,
                image: None,
                location: i.location.clone(),
                roles: vec![],
                host_key: None,
                restored_from: None,
                volumes: Default::default(),
            })
            .collect(),
    }
}

fn primary(lsn: u64) -> Probe {
    Probe::Postgres(PgState {
        in_recovery: false,
        lsn: Some(lsn),
        checkpoint_timeline: Some(1),
        ..PgState::default()
    })
}

/// A streaming standby of `sender` that replayed up to `lsn`.
fn standby(sender: &str, lsn: u64) -> PgState {
    PgState {
        in_recovery: true,
        lsn: Some(lsn),
        checkpoint_timeline: Some(1),
        received_timeline: Some(1),
        receiver_status: Some("streaming".into()),
        pending_wal: false,
        replay_age_seconds: Some(42.5),
        sender_host: Some(sender.into()),
        repmgr: None,
    }
}

fn probes(list: Vec<(&str, Probe)>) -> BTreeMap<String, Probe> {
    list.into_iter().map(|(h, p)| (h.to_string(), p)).collect()
}

fn healthy() -> BTreeMap<String, Probe> {
    probes(vec![
        ("ulb", primary(0x3000_0000)),
        ("vub", Probe::Postgres(standby("10.33.7.2", 0x3000_0000))),
        ("achel", Probe::Postgres(standby("10.33.7.3", 0x2FFF_FF00))),
        ("chimay", Probe::Reachable),
    ])
}

fn status(probes: &BTreeMap<String, Probe>) -> Vec<HostStatus> {
    let cluster = seed();
    merge(&cluster, &inventory(&cluster), probes)
}

#[test]
fn the_seed_streaming_in_a_cascade() {
    let hosts = status(&healthy());
    expect![[r#"
        HOST    ROLE     UPSTREAM  STATE      LAG_BYTES  LAG_S  TL  REPMGR  NOTE
        ulb     primary  -         up         -          -      1   -
        vub     replica  ulb       streaming  0          0.0    1   -
        achel   replica  vub       streaming  256        42.5   1   -
        chimay  barman   -         -          -          -      -   -
    "#]]
    .assert_eq(&render_table(&hosts));
    assert!(problems(&hosts).is_empty(), "{:?}", problems(&hosts));
    assert!(hosts.iter().all(|h| !h.differs_from_config));
}

#[test]
fn json_has_stable_keys_and_numbers() {
    let hosts = status(&healthy());
    let json: serde_json::Value = serde_json::from_str(&render_json(&hosts)).expect("JSON");
    let achel = &json[2];
    expect![[r#"{"config_role":"replica","config_upstream":"vub","differs_from_config":false,"host":"achel","lag_bytes":256,"lag_seconds":42.5,"note":null,"repmgr":null,"role":"replica","state":"streaming","timeline":1,"upstream":"vub"}"#]]
    .assert_eq(&achel.to_string());
    assert_eq!(json[3]["role"], "barman");
    assert_eq!(json[3]["lag_bytes"], serde_json::Value::Null);
}

#[test]
fn a_stopped_replica_is_down_and_fails_the_status() {
    let mut probes = healthy();
    probes.insert(
        "achel".into(),
        Probe::Down(down_reason(
            "Query on the agent of achel failed (Unknown): psql query on database `postgres` port \
             5432 as postgres failed (exit status 2): psql: error: connection to server on socket \
             \"/var/run/postgresql/.s.PGSQL.5432\" failed: No such file or directory\n\tIs the server \
             running locally and accepting connections on that socket?",
        )),
    );
    probes.insert(
        "chimay".into(),
        Probe::Unreachable("cannot connect to the agent on chimay".into()),
    );
    let hosts = status(&probes);
    expect![[r#"
        HOST    ROLE         UPSTREAM  STATE              LAG_BYTES  LAG_S  TL  REPMGR  NOTE
        ulb     primary      -         up                 -          -      1   -
        vub     replica      ulb       streaming          0          0.0    1   -
        achel   down         -         down               -          -      -   -       Postgres is not running
        chimay  unreachable  -         agent unreachable  -          -      -   -       cannot connect to the agent on chimay
    "#]]
    .assert_eq(&render_table(&hosts));
    expect![[r#"["achel: Postgres is down", "chimay: agent unreachable"]"#]]
        .assert_eq(&format!("{:?}", problems(&hosts)));
}

#[test]
fn two_live_primaries_are_split_brain() {
    let mut probes = healthy();
    probes.insert("vub".into(), primary(0x3000_0100));
    let hosts = status(&probes);
    let problems = problems(&hosts);
    assert_eq!(problems, ["split-brain: ulb, vub"]);
    let vub = &hosts[1];
    assert_eq!(vub.role, "primary");
    assert!(vub.differs_from_config);
    assert_eq!(
        vub.note.as_deref(),
        Some("split-brain; config.yml: replica")
    );
    // No single primary: no lag is computed against either.
    assert_eq!(hosts[2].lag_bytes, None);
}

#[test]
fn after_a_failover_live_roles_win_and_differences_are_noted() {
    // ulb stopped; vub promoted; achel follows vub (as before); ulb down.
    let probes = probes(vec![
        ("ulb", Probe::Down("Postgres is not running".into())),
        ("vub", primary(0x5000_0000)),
        ("achel", Probe::Postgres(standby("10.33.7.3", 0x5000_0000))),
        ("chimay", Probe::Reachable),
    ]);
    let hosts = status(&probes);
    expect![[r#"
        HOST   ROLE     UPSTREAM  STATE      LAG_BYTES  LAG_S  TL  REPMGR  NOTE
        ulb    down     -         down       -          -      -   -       Postgres is not running
        vub    primary  -         up         -          -      1   -       config.yml: replica
        achel  replica  vub       streaming  0          0.0    1   -
    "#]]
    .assert_eq(&render_table(&hosts[..3]));
    assert_eq!(problems(&hosts), ["ulb: Postgres is down"]);

    // achel re-pointed at ulb, which is not its config.yml upstream.
    let mut moved = healthy();
    moved.insert(
        "achel".into(),
        Probe::Postgres(standby("10.33.7.2", 0x3000_0000)),
    );
    let achel = &status(&moved)[2];
    assert_eq!(achel.upstream.as_deref(), Some("ulb"));
    assert!(achel.differs_from_config);
    assert_eq!(achel.note.as_deref(), Some("config.yml: upstream vub"));
}

#[test]
fn replica_states_from_the_receiver_and_the_lag() {
    let mut probes = healthy();
    let mut behind = standby("vub", 0x1000_0000);
    behind.pending_wal = true;
    probes.insert("achel".into(), Probe::Postgres(behind));
    let mut waiting = standby("", 0x3000_0000);
    waiting.receiver_status = None;
    waiting.sender_host = None;
    waiting.received_timeline = None;
    waiting.checkpoint_timeline = Some(2);
    probes.insert("vub".into(), Probe::Postgres(waiting));
    let hosts = status(&probes);
    let (vub, achel) = (&hosts[1], &hosts[2]);
    assert_eq!(
        (vub.state.as_str(), vub.upstream.as_deref(), vub.timeline),
        ("not streaming", None, Some(2))
    );
    // Mapped by name as well as by address; far behind and replaying.
    assert_eq!(achel.upstream.as_deref(), Some("vub"));
    assert_eq!(achel.state, "catching up");
    assert_eq!(achel.lag_bytes, Some(0x2000_0000));
    assert_eq!(achel.lag_seconds, Some(42.5));
    assert_eq!(problems(&hosts), ["vub: not streaming"]);

    // At the primary's position with nothing replayed since the clone: caught up, 0 s.
    let mut fresh = standby("vub", 0x3000_0000);
    fresh.pending_wal = true;
    fresh.replay_age_seconds = None;
    let mut probes = healthy();
    probes.insert("achel".into(), Probe::Postgres(fresh));
    assert_eq!(status(&probes)[2].lag_seconds, Some(0.0));

    // A sender outside the cluster is shown as is, and said.
    let mut probes = healthy();
    probes.insert(
        "achel".into(),
        Probe::Postgres(standby("192.0.2.9", 0x3000_0000)),
    );
    let achel = &status(&probes)[2];
    assert_eq!(achel.upstream.as_deref(), Some("192.0.2.9"));
    assert_eq!(
        achel.note.as_deref(),
        Some(
            "streams from 192.0.2.9, which is not a host of this cluster; config.yml: upstream vub"
        )
    );
}

#[test]
fn no_primary_at_all_is_a_problem() {
    let probes = probes(vec![
        ("ulb", Probe::Postgres(standby("10.33.7.3", 1))),
        ("vub", Probe::Postgres(standby("10.33.7.2", 1))),
        ("achel", Probe::Postgres(standby("10.33.7.3", 1))),
        ("chimay", Probe::Reachable),
    ]);
    let hosts = status(&probes);
    assert_eq!(problems(&hosts), ["no live primary"]);
    assert_eq!(hosts[0].note.as_deref(), Some("config.yml: primary"));
}

#[test]
fn a_host_missing_from_the_inventory_is_reported() {
    let mut probes = healthy();
    probes.remove("chimay");
    let hosts = status(&probes);
    assert_eq!(hosts[3].state, "not provisioned");
    assert_eq!(problems(&hosts), ["chimay: not provisioned (run deploy)"]);
}

#[test]
fn query_rows_parse_with_and_without_repmgr() {
    let row = |fields: &[&str]| fields.iter().map(|f| f.to_string()).collect::<Vec<_>>();
    let pg = row(&[
        "postgres",
        "t",
        "0/3000148",
        "1",
        "1",
        "streaming",
        "f",
        "12.5",
        "10.33.7.2",
    ]);
    let state = parse_rows(std::slice::from_ref(&pg)).expect("parses");
    assert_eq!(state, {
        let mut s = standby("10.33.7.2", 0x300_0148);
        s.replay_age_seconds = Some(12.5);
        s
    });
    let with =
        parse_rows(&[pg.clone(), row(&["repmgr", "t", "standby", "ulb", "t"])]).expect("parses");
    assert_eq!(
        repmgr_cell(with.repmgr.as_ref()),
        "standby of ulb",
        "{with:?}"
    );
    let unregistered =
        parse_rows(&[pg.clone(), row(&["repmgr", "f", "", "", ""])]).expect("parses");
    assert_eq!(repmgr_cell(unregistered.repmgr.as_ref()), "unregistered");
    let inactive = RepmgrNode {
        registered: true,
        node_type: Some("primary".into()),
        upstream: None,
        active: Some(false),
    };
    assert_eq!(repmgr_cell(Some(&inactive)), "primary (inactive)");
    assert!(parse_rows(&[row(&["postgres", "maybe"])]).is_err());
    assert!(parse_rows(&[]).is_err());
}

#[test]
fn lsns_and_down_reasons() {
    assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
    assert_eq!(parse_lsn("0/0"), Some(0));
    assert_eq!(parse_lsn(""), None);
    assert_eq!(parse_lsn("x/1"), None);
    assert_eq!(
        down_reason("psql: FATAL:  the database system is starting up"),
        "Postgres is starting up"
    );
    assert_eq!(
        down_reason("first\n  psql: ERROR:  permission denied  \n"),
        "psql: ERROR: permission denied"
    );
    assert_eq!(shorten(&"x".repeat(300)).chars().count(), 160);
}

#[test]
fn the_status_query_quotes_the_host_name() {
    let sql = status_sql("o'brien");
    assert!(sql.contains("n.node_name = 'o''brien'"), "{sql}");
    assert!(
        sql.contains("\\if :tpa_repmgr_db\n\\connect repmgr\n"),
        "{sql}"
    );
    assert_eq!(sql.matches("\\if").count(), sql.matches("\\endif").count());
}

/// Patroni's view of a member, as `patroni-tpa state` prints it.
fn member(role: &str, state: &str, leader: &str) -> PatroniMember {
    serde_json::from_str(&format!(
        r#"{{"state": "{state}", "role": "{role}", "timeline": 1, "lag": 0, "leader": "{leader}",
            "pending_restart": false}}"#
    ))
    .expect("patroni-tpa state JSON")
}

#[test]
fn patroni_members_and_etcd_health_are_shown_and_judged() {
    let mut hosts = status(&healthy());
    hosts.truncate(3);
    let healthy_etcd = || {
        Some(EtcdHealth {
            healthy: true,
            message: "is healthy".into(),
        })
    };
    hosts[0].patroni = Some(member("leader", "running", "ulb"));
    hosts[1].patroni = Some(member("replica", "streaming", "ulb"));
    hosts[2].patroni = Some(member("replica", "streaming", "ulb"));
    for h in &mut hosts {
        h.etcd = healthy_etcd();
    }
    expect![[r#"
        HOST   ROLE     UPSTREAM  STATE      LAG_BYTES  LAG_S  TL  PATRONI            ETCD     NOTE
        ulb    primary  -         up         -          -      1   leader running     healthy
        vub    replica  ulb       streaming  0          0.0    1   replica streaming  healthy
        achel  replica  vub       streaming  256        42.5   1   replica streaming  healthy
        Patroni leader: ulb
    "#]]
    .assert_eq(&render_table(&hosts));
    assert!(problems(&hosts).is_empty(), "{:?}", problems(&hosts));
    let json: serde_json::Value = serde_json::from_str(&render_json(&hosts)).expect("JSON");
    assert_eq!(json[1]["patroni"]["state"], "streaming");
    assert_eq!(json[1]["patroni"]["lag"], 0);
    assert_eq!(json[2]["etcd"]["healthy"], true);

    // A stopped member, one whose REST API does not answer, an unhealthy etcd member.
    hosts[1].patroni = Some(member("replica", "stopped", "ulb"));
    hosts[2].patroni = Some(PatroniMember {
        error: Some("Patroni's REST API does not answer: connection refused (exit 1)".into()),
        ..Default::default()
    });
    hosts[0].etcd = Some(EtcdHealth {
        healthy: false,
        message: "context deadline exceeded (exit 1)".into(),
    });
    assert_eq!(
        problems(&hosts),
        [
            "ulb: etcd member unhealthy: context deadline exceeded (exit 1)",
            "vub: Patroni state stopped",
            "achel: Patroni: Patroni's REST API does not answer: connection refused (exit 1)",
        ]
    );
    assert!(
        render_table(&hosts)
            .contains("achel  replica  vub       streaming  256        42.5   1   ?")
    );
}
