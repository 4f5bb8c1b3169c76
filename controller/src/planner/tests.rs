//! Golden tests: the seed cluster's plan, resource by resource, and every rendered file; and
//! the live topology (first deploy, after a failover, split brain), with no host involved.
//! Regenerate after an intended change with `UPDATE_EXPECT=1 cargo test -p tpa-controller planner`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use expect_test::{Expect, expect, expect_file};
use tpa_common::facts::{Facts, PostgresFacts};
use tpa_common::resource::Resource;

use super::*;
use crate::config::Cluster;
use crate::inventory::{Host, Inventory};
use crate::settings::HostSettings;

const SEED: &str = include_str!("../../../tests/fixtures/seed/config.yml");

pub(crate) fn inventory(cluster: &Cluster) -> Inventory {
    Inventory {
        cluster: cluster.name.clone(),
        config_sha256: String::new(),
        platform: crate::config::Platform::Docker,
        controller_address: Some("10.33.7.1".parse().unwrap()),
        network: Some(crate::inventory::Network {
            name: cluster.name.clone(),
            subnet: "10.33.7.0/24".into(),
        }),
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
                host_key: Some(format!("ssh-ed25519 AAAAhostkey{}", i.name)),
                restored_from: None,
                volumes: Default::default(),
            })
            .collect(),
    }
}

pub(crate) fn facts(cluster: &Cluster, os: &str) -> BTreeMap<String, Facts> {
    cluster
        .instances
        .iter()
        .map(|i| {
            let f = Facts {
                hostname: i.name.clone(),
                os_id: "debian".into(),
                os_version_id: os.into(),
                memory_bytes: 4 << 30,
                cpus: 2,
                ..Default::default()
            };
            (i.name.clone(), f)
        })
        .collect()
}

/// The state gather would hand over for `facts`: settings resolved, the topology from the
/// facts, the local repository on every host, a certificate on every Postgres host.
pub(crate) fn state(
    cluster: &Cluster,
    inventory: &Inventory,
    facts: BTreeMap<String, Facts>,
) -> ClusterState {
    let topology = topology::resolve(cluster, inventory, &facts).expect("a topology");
    let hosts = facts
        .into_iter()
        .map(|(name, facts)| {
            let instance = cluster.instance(&name).unwrap();
            let host = HostState {
                settings: HostSettings::resolve(cluster, instance, facts.os_major()),
                local_repo: Some(format!(
                    "/var/opt/tpa/local-repo/Debian/{}",
                    facts.os_version_id
                )),
                server_cert: topology
                    .members
                    .contains_key(&name)
                    .then(|| "CERT-PEM\n".to_string()),
                ha_cert: crate::planner::patroni::needs_ha_cert(cluster, instance)
                    .then(|| "HA-PEM\n".to_string()),
                log_cert: crate::planner::logserver::needs_log_cert(cluster, instance)
                    .then(|| "LOG-PEM\n".to_string()),
                facts,
            };
            (name, host)
        })
        .collect();
    ClusterState {
        hosts,
        topology,
        ca_pem: "CA-PEM\n".into(),
        apt_keys: BTreeMap::new(),
        verifiers: Verifiers(BTreeMap::from([
            (
                "ada_lovelace".to_string(),
                "SCRAM-SHA-256$4096:c2FsdA==$stored:server".to_string(),
            ),
            (
                "replication".to_string(),
                "SCRAM-SHA-256$4096:cmVwbA==$stored:server".to_string(),
            ),
            (
                "repmgr".to_string(),
                "SCRAM-SHA-256$4096:cmVwbWdy$stored:server".to_string(),
            ),
            (
                "barman".to_string(),
                "SCRAM-SHA-256$4096:YmFy$stored:server".to_string(),
            ),
            (
                "streaming_barman".to_string(),
                "SCRAM-SHA-256$4096:c3Ry$stored:server".to_string(),
            ),
        ])),
        replication_password: Some(tpa_common::resource::Secret::new(
            "REPLICATION-PASSWORD".to_string(),
        )),
        repmgr_password: Some(tpa_common::resource::Secret::new(
            "REPMGR-PASSWORD".to_string(),
        )),
        barman_passwords: BTreeMap::from(["barman", "streaming_barman"].map(|u| {
            (
                u.to_string(),
                tpa_common::resource::Secret::new(format!("{u}-PASSWORD")),
            )
        })),
        drift: vec![],
        patroni_password: Some(tpa_common::resource::Secret::new(
            "PATRONI-PASSWORD".to_string(),
        )),
        rewind_password: Some(tpa_common::resource::Secret::new(
            "REWIND-PASSWORD".to_string(),
        )),
        ssh_keys: Some(ssh_trust::SshKeys {
            barman: ssh_trust::KeyPair {
                private: tpa_common::resource::Secret::new("BARMAN-PRIVATE-KEY\n".into()),
                public: "ssh-ed25519 AAAAbarman barman@seed".into(),
            },
            postgres: ssh_trust::KeyPair {
                private: tpa_common::resource::Secret::new("POSTGRES-PRIVATE-KEY\n".into()),
                public: "ssh-ed25519 AAAApostgres postgres@seed".into(),
            },
        }),
        hooks: vec![],
    }
}

fn plan_with(cluster: &Cluster, facts: BTreeMap<String, Facts>) -> Result<Plan, Vec<String>> {
    let inventory = inventory(cluster);
    let state = state(cluster, &inventory, facts);
    plan(&PlanInput {
        cluster,
        inventory: &inventory,
        state: &state,
    })
}

fn plan_for(source: &str, os: &str) -> Result<Plan, Vec<String>> {
    let cluster = Cluster::parse(source, "config.yml").expect("valid config");
    let facts = facts(&cluster, os);
    plan_with(&cluster, facts)
}

/// One line per resource: stage, id, and the triggers of services.
pub(crate) fn outline(plan: &Plan) -> String {
    let mut out = String::new();
    for (host, stages) in &plan.hosts {
        for stage in stages {
            let _ = writeln!(out, "{host} {}", stage.name.as_str());
            for r in &stage.resources {
                let extra = match &r.kind {
                    Resource::Service(s) => {
                        format!(" reload_on={:?} restart_on={:?}", s.reload_on, s.restart_on)
                    }
                    Resource::Packages(p) => format!(" {:?}", p.names),
                    Resource::Command(c) => format!(" {:?}", c.argv),
                    Resource::FileLine(f) => format!(" {:?}", f.line),
                    Resource::Permissions(p) => {
                        format!(" {}:{} {:04o}", p.owner, p.group, p.mode)
                    }
                    _ => String::new(),
                };
                let _ = writeln!(out, "  {}{extra}", r.id);
            }
        }
    }
    for note in &plan.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

fn file_content(plan: &Plan, host: &str, path: &str) -> String {
    plan.hosts[host]
        .iter()
        .flat_map(|s| &s.resources)
        .find_map(|r| match &r.kind {
            Resource::File(f) if f.path == path => {
                Some(String::from_utf8(f.content.as_bytes().to_vec()).unwrap())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("{host} has no file {path}"))
}

fn check(actual: String, expect: Expect) {
    expect.assert_eq(&actual);
}

#[test]
fn seed_plan_outline() {
    let plan = plan_for(SEED, "12").unwrap();
    expect_file!["golden/seed_outline.txt"].assert_eq(&outline(&plan));
}

/// The planner emits argument vectors and typed resources, never shell command lines.
#[test]
fn no_plan_runs_a_shell() {
    let source = SEED.replace(
        "  use_local_repo_only: true\n",
        &format!("  use_local_repo_only: true\n{USERS}"),
    );
    assert_runs_no_shell(&plan_for(&source, "12").unwrap());
}

fn assert_runs_no_shell(plan: &Plan) {
    for (host, stages) in &plan.hosts {
        for r in stages.iter().flat_map(|s| &s.resources) {
            if let Resource::Command(c) = &r.kind {
                let shells = ["sh", "bash", "/bin/sh", "/bin/bash"];
                let argvs = std::iter::once(&c.argv).chain(c.unless.as_ref());
                for argv in argvs {
                    assert!(
                        !argv.first().is_some_and(|p| shells.contains(&p.as_str())),
                        "{host} {}: {argv:?}",
                        r.id
                    );
                }
            }
        }
    }
}

#[test]
fn rendered_files_of_the_primary() {
    let plan = plan_for(SEED, "12").unwrap();
    let d = "/opt/postgres/data";
    for (path, golden) in [
        (
            format!("{d}/conf.d/0000-tpa.conf"),
            expect_file!["golden/0000-tpa.conf"],
        ),
        (
            format!("{d}/conf.d/0001-tpa_restart.conf"),
            expect_file!["golden/0001-tpa_restart.conf"],
        ),
        (
            format!("{d}/pg_hba.conf"),
            expect_file!["golden/pg_hba.conf"],
        ),
        (
            "/etc/systemd/system/postgres.service".to_string(),
            expect_file!["golden/postgres.service"],
        ),
        (
            "/etc/apt/sources.list.d/tpa-local-repo.list".to_string(),
            expect_file!["golden/tpa-local-repo.list"],
        ),
    ] {
        golden.assert_eq(&file_content(&plan, "ulb", &path));
    }
}

#[test]
fn conf_settings_split_by_what_a_change_needs() {
    let source = SEED.replace(
        "  use_local_repo_only: true\n",
        "  use_local_repo_only: true\n  postgres_conf_settings:\n    work_mem: 32MB\n    max_locks_per_transaction: 128\n",
    );
    let plan = plan_for(&source, "12").unwrap();
    let d = "/opt/postgres/data/conf.d";
    let reload = file_content(
        &plan,
        "ulb",
        &format!("{d}/9900-tpa_postgres_conf_settings.conf"),
    );
    let restart = file_content(
        &plan,
        "ulb",
        &format!("{d}/9901-tpa_postgres_conf_settings_restart.conf"),
    );
    assert!(
        reload.contains("work_mem = '32MB'\n") && !reload.contains("max_locks"),
        "{reload}"
    );
    assert!(
        restart.contains("max_locks_per_transaction = '128'\n") && !restart.contains("work_mem")
    );
}

#[test]
fn debian_13_gets_postgres_17_and_unavailable_versions_are_refused() {
    let source = SEED.replace("  postgres_version: '15'\n", "");
    let plan = plan_for(&source, "13").unwrap();
    assert!(outline(&plan).contains("postgresql-17"));
    let errors = plan_for(SEED, "13").unwrap_err();
    check(
        errors.join("\n"),
        expect![[r#"
            ulb: postgres_version 15 is not available for Debian 13 (trixie): Debian's archive ships only PostgreSQL 17 there, and the PGDG repository is not used by download-packages; set postgres_version: 17 (Debian 12 ships 15, Debian 13 ships 17)
            vub: postgres_version 15 is not available for Debian 13 (trixie): Debian's archive ships only PostgreSQL 17 there, and the PGDG repository is not used by download-packages; set postgres_version: 17 (Debian 12 ships 15, Debian 13 ships 17)
            achel: postgres_version 15 is not available for Debian 13 (trixie): Debian's archive ships only PostgreSQL 17 there, and the PGDG repository is not used by download-packages; set postgres_version: 17 (Debian 12 ships 15, Debian 13 ships 17)
            chimay: postgres_version 15 is not available for Debian 13 (trixie): Debian's archive ships only PostgreSQL 17 there, and the PGDG repository is not used by download-packages; set postgres_version: 17 (Debian 12 ships 15, Debian 13 ships 17)"#]],
    );
}

/// The issue's users and database, as lines under `cluster_vars`.
const USERS: &str = include_str!("../../../tests/fixtures/users.yml");

#[test]
fn users_databases_and_extensions_on_the_primary() {
    let source = SEED.replace(
        "  use_local_repo_only: true\n",
        &format!("  use_local_repo_only: true\n{USERS}"),
    );
    let plan = plan_for(&source, "12").unwrap();
    // Every SQL resource of the primary, by stage: the roles other hosts wait for end its
    // config stage; then config.yml's users; then repmgr's.
    let mut out = String::new();
    for (stage, r) in plan.hosts["ulb"]
        .iter()
        .flat_map(|s| s.resources.iter().map(move |r| (s.name, r)))
    {
        if let Resource::Sql(sql) = &r.kind {
            let _ = writeln!(
                out,
                "{} {} [{}] secret={}\n  check: {}\n  apply: {}",
                stage.as_str(),
                r.id,
                sql.database,
                sql.apply.is_secret(),
                sql.check.expose().trim_end().replace('\n', "\n         "),
                sql.apply.expose().trim_end().replace('\n', "\n         ")
            );
        }
    }
    expect_file!["golden/users.txt"].assert_eq(&out);
}

#[test]
fn md5_passwords_are_refused_not_ignored() {
    let users = USERS.replace(
        "  - username: ada_lovelace\n",
        "  - username: ada_lovelace\n    password_encryption: md5\n",
    );
    let source = SEED.replace(
        "  use_local_repo_only: true\n",
        &format!("  use_local_repo_only: true\n{users}"),
    );
    let errors = plan_for(&source, "12").unwrap_err();
    assert_eq!(
        errors,
        [
            "ulb: postgres_users ada_lovelace: password_encryption md5 is not supported: tpa sets \
          SCRAM-SHA-256 verifiers only; remove the key"
        ]
    );
}

#[test]
fn restart_classification() {
    assert!(needs_restart("shared_buffers"));
    assert!(needs_restart("MAX_CONNECTIONS"));
    assert!(!needs_restart("work_mem"));
    assert!(!needs_restart("log_min_duration_statement"));
}

#[test]
fn initdb_locale_falls_back_to_user_locale() {
    let source = SEED.replace(
        "  use_local_repo_only: true\n",
        "  use_local_repo_only: true\n  user_locale: de_DE.UTF-8\n",
    );
    let plan = plan_for(&source, "12").unwrap();
    assert!(
        outline(&plan).contains("\"--locale=de_DE.UTF-8\""),
        "{}",
        outline(&plan)
    );
}

// === live topology ===

fn seed() -> Cluster {
    Cluster::parse(SEED, "config.yml").expect("valid config")
}

/// Facts of the seed cluster (Debian 12) with each named host's Postgres as given.
fn live(cluster: &Cluster, postgres: &[(&str, PostgresFacts)]) -> BTreeMap<String, Facts> {
    let mut facts = facts(cluster, "12");
    for f in facts.values_mut() {
        f.postgres = Some(PostgresFacts {
            data_dir: "/opt/postgres/data".into(),
            ..Default::default()
        });
    }
    for (host, pg) in postgres {
        facts.get_mut(*host).unwrap().postgres = Some(pg.clone());
    }
    facts
}

fn running(in_recovery: Option<bool>, upstream: Option<&str>) -> PostgresFacts {
    PostgresFacts {
        data_dir: "/opt/postgres/data".into(),
        initialised: true,
        data_version: Some("15".into()),
        running: true,
        in_recovery,
        start_time: Some("2026-01-01 00:00:00+00".into()),
        upstream: upstream.map(str::to_string),
        timeline: Some(1),
        start_epoch: Some(1_767_225_600),
        promoted_epoch: None,
    }
}

fn resolve(cluster: &Cluster, facts: &BTreeMap<String, Facts>) -> Result<Topology, TopologyError> {
    topology::resolve(cluster, &inventory(cluster), facts)
}

/// `host role upstream` per member, then the changes.
fn members(t: &Topology) -> String {
    let mut out = String::new();
    for (name, m) in &t.members {
        let _ = writeln!(
            out,
            "{name} {} {}",
            m.role.as_str(),
            m.upstream.as_deref().unwrap_or("-")
        );
    }
    for c in &t.changes {
        let _ = writeln!(out, "change: {c}");
    }
    out
}

#[test]
fn first_deploy_takes_the_primary_from_config() {
    let cluster = seed();
    let t = resolve(&cluster, &live(&cluster, &[])).unwrap();
    assert_eq!(t.primary(), Some("ulb"));
    expect![[r#"
        achel replica vub
        ulb primary -
        vub replica ulb
    "#]]
    .assert_eq(&members(&t));
    // Hosts asked for no Postgres state (facts without a data dir) decide nothing either.
    assert_eq!(resolve(&cluster, &facts(&cluster, "12")).unwrap(), t);
}

#[test]
fn after_a_failover_the_live_primary_wins() {
    let cluster = seed();
    let facts = live(
        &cluster,
        &[
            ("vub", running(Some(false), None)),
            ("ulb", running(Some(true), Some("10.33.7.3"))),
            ("achel", running(Some(true), Some("vub"))),
        ],
    );
    let t = resolve(&cluster, &facts).unwrap();
    assert_eq!(t.primary(), Some("vub"));
    expect![[r#"
        achel replica vub
        ulb replica vub
        vub primary -
        change: vub is the live primary (config.yml says ulb); live state wins: update the roles in config.yml when convenient
        change: ulb follows vub (config.yml: role primary)
    "#]]
    .assert_eq(&members(&t));

    // The plan follows: vub is configured as the primary (with both slots), ulb as its
    // replica (its data directory exists, so the clone is skipped by the agent).
    let plan = plan_with(&cluster, facts).unwrap();
    let stages =
        |host: &str| -> Vec<&str> { plan.hosts[host].iter().map(|s| s.name.as_str()).collect() };
    assert_eq!(
        stages("vub"),
        [
            "sys",
            "postgres-install",
            "postgres-config",
            "postgres-users",
            "repmgr"
        ]
    );
    assert_eq!(
        stages("ulb"),
        ["sys", "postgres-install", "postgres-config", "repmgr"]
    );
    assert_eq!(
        plan.hosts["ulb"][1].after,
        [("vub".to_string(), StageName::PostgresConfig)]
    );
    let vub = outline(&plan);
    assert!(
        vub.contains("  slot:repmgr_slot_1\n") && vub.contains("  slot:repmgr_slot_3\n"),
        "{vub}"
    );
    assert!(
        file_content(
            &plan,
            "ulb",
            "/opt/postgres/data/conf.d/0002-tpa_replication.conf"
        )
        .contains("host=10.33.7.3 "),
    );
    assert!(outline(&plan).contains("file:/etc/tpa/fosdem.crt"));
}

#[test]
fn a_stopped_primary_keeps_its_role() {
    let cluster = seed();
    let stopped = PostgresFacts {
        running: false,
        in_recovery: None,
        ..running(None, None)
    };
    let facts = live(
        &cluster,
        &[("ulb", stopped), ("vub", running(Some(true), Some("ulb")))],
    );
    assert_eq!(resolve(&cluster, &facts).unwrap().primary(), Some("ulb"));
}

#[test]
fn live_state_that_gives_no_single_primary_is_an_error() {
    let cluster = seed();
    let split = live(
        &cluster,
        &[
            ("ulb", running(Some(false), None)),
            ("vub", running(Some(false), None)),
        ],
    );
    expect![[r#"more than one live primary (ulb, vub): each runs Postgres out of recovery (pg_is_in_recovery() is false), and tpa will not choose between them; keep the one that should be the primary, stop Postgres on the others (`systemctl stop postgres`) and rebuild them as replicas, then deploy again"#]]
    .assert_eq(&resolve(&cluster, &split).unwrap_err().to_string());

    let on_barman = live(&cluster, &[("chimay", running(Some(false), None))]);
    expect![[r#"chimay runs a live primary Postgres in /opt/postgres/data, but config.yml does not list it as a Postgres host (its roles: [barman]); make it the primary or a replica in config.yml, or stop that Postgres, then deploy again"#]]
    .assert_eq(&resolve(&cluster, &on_barman).unwrap_err().to_string());

    let unknown = live(&cluster, &[("vub", running(None, None))]);
    assert_eq!(
        resolve(&cluster, &unknown),
        Err(TopologyError::RecoveryUnknown {
            host: "vub".into(),
            data_dir: "/opt/postgres/data".into()
        })
    );

    let demoted = live(&cluster, &[("ulb", running(Some(true), Some("vub")))]);
    assert_eq!(
        resolve(&cluster, &demoted),
        Err(TopologyError::PrimaryInRecovery { host: "ulb".into() })
    );
}

/// A primary on an older timeline that started after another was promoted is a former
/// primary that came back: it is rejoined (rewound) as a replica of the live one. One that kept
/// running through the promotion, or shares the timeline, is a split brain.
#[test]
fn a_former_primary_that_came_back_is_rejoined_not_a_split_brain() {
    let cluster = seed();
    let promoted_at = 1_767_300_000;
    let vub = PostgresFacts {
        timeline: Some(2),
        promoted_epoch: Some(promoted_at),
        ..running(Some(false), None)
    };
    let ulb = |started: i64, timeline: u32| PostgresFacts {
        timeline: Some(timeline),
        start_epoch: Some(started),
        ..running(Some(false), None)
    };
    let came_back = live(
        &cluster,
        &[
            ("ulb", ulb(promoted_at + 60, 1)),
            ("vub", vub.clone()),
            ("achel", running(Some(true), Some("vub"))),
        ],
    );
    let t = resolve(&cluster, &came_back).unwrap();
    assert_eq!(t.primary(), Some("vub"));
    assert!(t.is_former_primary("ulb") && !t.is_former_primary("achel"));
    assert_eq!(t.upstream("ulb"), Some("vub"));
    assert!(
        t.changes[0].contains("former primary that came back"),
        "{:?}",
        t.changes
    );

    // The plan rewinds ulb (repmgr's superuser conninfo to vub) before anything else there.
    let plan = plan_with(&cluster, came_back).unwrap();
    assert_runs_no_shell(&plan);
    let install = &plan.hosts["ulb"][1];
    let rejoin = install
        .resources
        .iter()
        .find(|r| r.id == "rejoin:former_primary")
        .expect("a rejoin resource");
    match &rejoin.kind {
        Resource::Command(c) => {
            assert!(
                c.argv
                    .iter()
                    .any(|a| a.contains("host=10.33.7.3") && a.contains("user=repmgr"))
            );
            assert!(
                c.argv.contains(&"repmgr_slot_1".to_string()),
                "{:?}",
                c.argv
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        install.after,
        [("vub".to_string(), StageName::PostgresConfig)]
    );

    for (what, ulb_facts) in [
        (
            "kept running through the promotion",
            ulb(promoted_at - 60, 1),
        ),
        ("same timeline", ulb(promoted_at + 60, 2)),
    ] {
        let split = live(&cluster, &[("ulb", ulb_facts), ("vub", vub.clone())]);
        assert!(
            matches!(
                resolve(&cluster, &split),
                Err(TopologyError::SplitBrain { .. })
            ),
            "{what}"
        );
    }
}

/// TPA's M1 shape: the witness on the Barman host gets its own Postgres (initdb, never a
/// clone), the repmgr role and database, and registers against the live primary after the
/// primary's last stage.
#[test]
fn a_witness_runs_its_own_postgres_and_registers_with_the_primary() {
    let source = SEED.replace(
        "  role: [barman]\n",
        "  role: [barman, witness]\n  upstream: ulb\n",
    );
    let plan = plan_for(&source, "12").unwrap();
    let ids: Vec<String> = plan.hosts["chimay"]
        .iter()
        .flat_map(|s| s.resources.iter().map(|r| r.id.clone()))
        .collect();
    for id in [
        "command:initdb",
        "role:repmgr",
        "database:repmgr",
        "repmgr:witness-register",
        "service:repmgr.service",
    ] {
        assert!(ids.contains(&id.to_string()), "{id}: {ids:?}");
    }
    assert!(!ids.contains(&"command:pg_basebackup".to_string()));
    // The witness's repmgr stage waits for the primary's; the Barman stage of the same host
    // comes after it.
    let stages: Vec<StageName> = plan.hosts["chimay"].iter().map(|s| s.name).collect();
    assert_eq!(
        stages[stages.len() - 2..],
        [StageName::Repmgr, StageName::Barman]
    );
    let last = plan.hosts["chimay"]
        .iter()
        .find(|s| s.name == StageName::Repmgr)
        .unwrap();
    assert_eq!(last.after, [("ulb".to_string(), StageName::Repmgr)]);
    assert!(ids.iter().any(|i| i.contains("barman")), "{ids:?}");
    let register = last
        .resources
        .iter()
        .find(|r| r.id == "repmgr:witness-register")
        .unwrap();
    match &register.kind {
        Resource::Command(c) => assert!(c.argv.contains(&"10.33.7.2".to_string()), "{:?}", c.argv),
        other => panic!("{other:?}"),
    }
    let conf = file_content(&plan, "chimay", "/etc/repmgr/15/repmgr.conf");
    assert!(
        conf.contains("node_id=4\n") && conf.contains("location='antwerp'"),
        "{conf}"
    );
}

/// Adding a replica changes no setting that needs a restart on the hosts already there.
#[test]
fn adding_a_replica_restarts_no_other_host() {
    let bigger = format!(
        "{SEED}- Name: orval\n  node: 5\n  location: brussels\n  role: [replica]\n  upstream: ulb\n"
    );
    let (before, after) = (
        plan_for(SEED, "12").unwrap(),
        plan_for(&bigger, "12").unwrap(),
    );
    assert!(after.hosts.contains_key("orval"));
    for host in ["ulb", "vub", "achel"] {
        for file in [
            "/opt/postgres/data/conf.d/0001-tpa_restart.conf",
            "/etc/systemd/system/postgres.service",
        ] {
            assert_eq!(
                file_content(&before, host, file),
                file_content(&after, host, file),
                "{host} {file}"
            );
        }
    }
}

/// repmgr.conf as rendered for a replica (failover tuning, service commands through sudo).
#[test]
fn repmgr_conf_of_a_replica() {
    let plan = plan_for(SEED, "12").unwrap();
    expect_file!["golden/repmgr.conf"].assert_eq(&file_content(
        &plan,
        "vub",
        "/etc/repmgr/15/repmgr.conf",
    ));
}

#[test]
fn an_upstream_outside_the_cluster_is_reported_and_config_kept() {
    let cluster = seed();
    let facts = live(
        &cluster,
        &[("achel", running(Some(true), Some("10.9.9.9")))],
    );
    let t = resolve(&cluster, &facts).unwrap();
    assert_eq!(t.upstream("achel"), Some("vub"));
    assert_eq!(
        t.changes,
        ["achel streams from 10.9.9.9, which is not a host of this cluster"]
    );
}

#[test]
fn download_packages_fetches_what_the_plan_installs() {
    let without_manager = SEED.replace("  failover_manager: repmgr\n", "");
    for source in [SEED, without_manager.as_str()] {
        let plan = plan_for(source, "12").unwrap();
        let installed: std::collections::BTreeSet<String> = plan
            .hosts
            .values()
            .flatten()
            .flat_map(|s| &s.resources)
            .filter_map(|r| match &r.kind {
                Resource::Packages(p) => Some(p.names.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let cluster = Cluster::parse(source, "config.yml").unwrap();
        let downloaded =
            crate::commands::download_packages::cluster_packages(&cluster, 12).unwrap();
        assert_eq!(installed.into_iter().collect::<Vec<_>>(), downloaded);
        // TPA's default failover manager applies when config.yml names none.
        assert!(downloaded.contains(&"postgresql-15-repmgr".to_string()));
    }
}

// === replicas ===

/// The seed's chain: ulb primary, vub cloned from ulb, achel cloned from vub.
#[test]
fn replicas_clone_from_their_upstream_depth_by_depth() {
    let plan = plan_for(SEED, "12").unwrap();
    let after = |host: &str, stage: StageName| -> Vec<(String, StageName)> {
        plan.hosts[host]
            .iter()
            .find(|s| s.name == stage)
            .unwrap()
            .after
            .clone()
    };
    // vub waits for the role and its slot on ulb; achel for vub streaming with achel's slot.
    // Neither waits for ulb's users or repmgr registration.
    assert_eq!(
        after("vub", StageName::PostgresInstall),
        [("ulb".to_string(), StageName::PostgresConfig)]
    );
    assert_eq!(
        after("achel", StageName::PostgresInstall),
        [("vub".to_string(), StageName::PostgresConfig)]
    );
    assert!(after("ulb", StageName::PostgresInstall).is_empty());
    let ids = |host: &str, stage: StageName| -> Vec<String> {
        plan.hosts[host]
            .iter()
            .find(|s| s.name == stage)
            .map(|s| s.resources.iter().map(|r| r.id.clone()).collect())
            .unwrap_or_default()
    };
    let ulb_config = ids("ulb", StageName::PostgresConfig);
    assert!(
        ulb_config.contains(&"role:replication".to_string()),
        "{ulb_config:?}"
    );
    // The seed uses repmgr: slots get repmgr's names (vub is node 2, achel node 3).
    assert!(ulb_config.contains(&"slot:repmgr_slot_2".to_string()));
    assert!(!ulb_config.contains(&"slot:repmgr_slot_3".to_string()));
    // Each node registers with repmgr after its upstream: the primary first, achel after vub.
    assert!(after("ulb", StageName::Repmgr).is_empty());
    assert_eq!(
        after("vub", StageName::Repmgr),
        [("ulb".to_string(), StageName::Repmgr)]
    );
    assert_eq!(
        after("achel", StageName::Repmgr),
        [("vub".to_string(), StageName::Repmgr)]
    );
    for host in ["ulb", "vub", "achel"] {
        let stages: Vec<&str> = plan.hosts[host].iter().map(|s| s.name.as_str()).collect();
        assert_eq!(stages.last(), Some(&"repmgr"), "{host}");
    }
    // A standby registers only once it has replayed the repmgr database and the primary's
    // record (it cloned before the primary registered).
    for host in ["vub", "achel"] {
        let repmgr = ids(host, StageName::Repmgr);
        let at = |id: &str| repmgr.iter().position(|i| i == id);
        assert!(
            at("repmgr:database-replayed") < at("repmgr:primary-replayed")
                && at("repmgr:primary-replayed") < at("repmgr:standby-register")
                && at("repmgr:database-replayed").is_some(),
            "{host}: {repmgr:?}"
        );
    }
    assert!(!ids("ulb", StageName::Repmgr).contains(&"repmgr:primary-replayed".to_string()));
    let vub_config = ids("vub", StageName::PostgresConfig);
    let streaming = vub_config
        .iter()
        .position(|i| i == "streaming:wal_receiver");
    let slot = vub_config.iter().position(|i| i == "slot:repmgr_slot_3");
    assert!(streaming.is_some() && slot > streaming, "{vub_config:?}");
    // A replica never runs initdb and has no users stage; achel has no downstream slot.
    for host in ["vub", "achel"] {
        let all: Vec<String> = plan.hosts[host]
            .iter()
            .flat_map(|s| s.resources.iter().map(|r| r.id.clone()))
            .collect();
        assert!(!all.contains(&"command:initdb".to_string()), "{host}");
        assert!(all.contains(&"command:pg_basebackup".to_string()), "{host}");
        assert!(ids(host, StageName::PostgresUsers).is_empty(), "{host}");
    }
    assert!(
        !ids("achel", StageName::PostgresConfig)
            .iter()
            .any(|i| i.starts_with("slot:"))
    );
    expect_file!["golden/0002-tpa_replication.conf"].assert_eq(&file_content(
        &plan,
        "achel",
        "/opt/postgres/data/conf.d/0002-tpa_replication.conf",
    ));
}

/// The replication and repmgr passwords reach every Postgres host only in its 0600
/// passfile, marked secret.
#[test]
fn the_replication_password_is_only_in_the_passfile() {
    let plan = plan_for(SEED, "12").unwrap();
    for host in ["ulb", "vub", "achel"] {
        for r in plan.hosts[host].iter().flat_map(|s| &s.resources) {
            let shown = format!("{:?}", r.kind);
            assert!(!shown.contains("REPLICATION-PASSWORD"), "{host} {}", r.id);
            assert!(!shown.contains("REPMGR-PASSWORD"), "{host} {}", r.id);
            match &r.kind {
                Resource::File(f) if f.path == replica::PASSFILE => {
                    assert!(f.secret && f.mode == 0o600 && f.owner == "postgres");
                    let text = String::from_utf8(f.content.as_bytes().to_vec()).unwrap();
                    assert_eq!(
                        text,
                        "*:*:replication:replication:REPLICATION-PASSWORD\n\
                         *:*:*:repmgr:REPMGR-PASSWORD\n"
                    );
                }
                Resource::File(f) => {
                    let text = String::from_utf8(f.content.as_bytes().to_vec()).unwrap();
                    assert!(!text.contains("PASSWORD"), "{host} {}", f.path);
                }
                Resource::Command(c) => {
                    assert!(
                        c.env.iter().all(|e| !e.value.expose().contains("PASSWORD")),
                        "{host} {}",
                        r.id
                    );
                    assert!(!c.argv.iter().any(|a| a.contains("PASSWORD")));
                }
                _ => {}
            }
        }
    }
}

/// pg_hba lets the `replication` role stream from cluster Postgres hosts only.
#[test]
fn replication_is_allowed_from_cluster_postgres_hosts_only() {
    let plan = plan_for(SEED, "12").unwrap();
    let hba = file_content(&plan, "achel", "/opt/postgres/data/pg_hba.conf");
    let lines: Vec<&str> = hba
        .lines()
        .filter(|l| l.starts_with("hostssl") && l.contains(" replication "))
        .collect();
    // ulb, vub, achel (Postgres hosts) and chimay's streaming_barman line.
    assert_eq!(lines.len(), 4, "{hba}");
    for ip in ["10.33.7.2/32", "10.33.7.3/32", "10.33.7.4/32"] {
        assert!(
            lines.iter().any(|l| l.contains("replication")
                && l.contains(ip)
                && l.split_whitespace().nth(2) == Some("replication")),
            "{ip}: {hba}"
        );
    }
    assert!(!hba.contains("0.0.0.0"), "{hba}");
}

/// A replica whose upstream is not deployed cannot be cloned: the plan says so, by name.
#[test]
fn a_replica_of_an_undeployed_upstream_is_refused() {
    let cluster = seed();
    let mut facts = facts(&cluster, "12");
    facts.remove("vub");
    let errors = plan_with(&cluster, facts).unwrap_err();
    assert!(
        errors.iter().any(
            |e| e.starts_with("achel: its upstream vub is not a deployed host of this cluster")
        ),
        "{errors:?}"
    );
}

/// The Barman host's files, from the seed (`backup: chimay` on ulb), and the same after a
/// failover to vub: backups follow the live primary under the same server name.
#[test]
fn barman_server_files() {
    let plan = plan_for(SEED, "12").unwrap();
    for (path, golden) in [
        ("/etc/barman.conf", expect_file!["golden/barman.conf"]),
        (
            "/etc/barman.d/ulb.conf",
            expect_file!["golden/barman-ulb.conf"],
        ),
        ("/etc/cron.d/barman", expect_file!["golden/cron-barman"]),
        (
            "/etc/cron.d/tpa-barman-backup-ulb",
            expect_file!["golden/cron-tpa-barman-backup-ulb"],
        ),
    ] {
        golden.assert_eq(&file_content(&plan, "chimay", path));
    }
    let stage = &plan.hosts["chimay"][1];
    assert_eq!(
        stage.after,
        [("ulb".to_string(), StageName::PostgresConfig)]
    );
    let passfile = file_content(&plan, "chimay", "/var/lib/barman/.pgpass");
    assert_eq!(
        passfile,
        "*:*:*:barman:barman-PASSWORD\n*:*:*:streaming_barman:streaming_barman-PASSWORD\n"
    );

    let source = SEED.replace(
        "  use_local_repo_only: true\n",
        "  use_local_repo_only: true\n  barman_retention_policy: REDUNDANCY 4\n  \
         barman_backup_interval: '30 2 * * *'\n  barman_compression: pybzip2\n",
    );
    let plan = plan_for(&source, "12").unwrap();
    let conf = file_content(&plan, "chimay", "/etc/barman.d/ulb.conf");
    assert!(
        conf.contains("retention_policy = REDUNDANCY 4\n")
            && conf.contains("compression = pybzip2\n"),
        "{conf}"
    );
    let cron = file_content(&plan, "chimay", "/etc/cron.d/tpa-barman-backup-ulb");
    assert!(cron.contains("\n30 2 * * * barman "), "{cron}");

    // TPA's minimum redundancy of 3: up to three backups while `barman check` fails.
    let source = SEED.replace(
        "  use_local_repo_only: true\n",
        "  use_local_repo_only: true\n  barman_minimum_redundancy: 5\n",
    );
    let ids: Vec<String> = plan_for(&source, "12").unwrap().hosts["chimay"][1]
        .resources
        .iter()
        .filter(|r| r.id.starts_with("barman:") && r.id.contains("backup"))
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(
        ids,
        [
            "barman:first-backup:ulb",
            "barman:backup-2:ulb",
            "barman:backup-3:ulb"
        ]
    );
}

#[test]
fn barman_follows_the_live_primary() {
    let cluster = seed();
    let facts = live(
        &cluster,
        &[
            ("vub", running(Some(false), None)),
            ("ulb", running(Some(true), Some("10.33.7.3"))),
            ("achel", running(Some(true), Some("vub"))),
        ],
    );
    let plan = plan_with(&cluster, facts).unwrap();
    let conf = file_content(&plan, "chimay", "/etc/barman.d/ulb.conf");
    assert!(
        conf.contains("conninfo = host=10.33.7.3 port=5432 ")
            && conf.contains("(now on vub, the live primary)"),
        "{conf}"
    );
    let stage = plan.hosts["chimay"].last().unwrap();
    assert_eq!(
        stage.after,
        [("vub".to_string(), StageName::PostgresConfig)]
    );
    // receive-wal is moved to vub (in state only while Barman's slot there is in use), the
    // deploy says so, vub gets the slot and the former primary drops its unused one.
    let follow = stage
        .resources
        .iter()
        .find(|r| r.id == "barman:receive-wal:ulb")
        .expect("the follow resource");
    let Resource::Command(c) = &follow.kind else {
        panic!("{follow:?}")
    };
    assert_eq!(c.argv[..3], ["/etc/tpa/barman-follow", "follow", "ulb"]);
    assert!(c.argv[3].starts_with("host=10.33.7.3 port=5432 "), "{c:?}");
    assert_eq!(c.unless.as_ref().unwrap()[1], "check");
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("backups of ulb") && n.contains("follow vub, the live primary")),
        "{:?}",
        plan.notes
    );
    let has = |host: &str, id: &str| {
        plan.hosts[host]
            .iter()
            .any(|s| s.resources.iter().any(|r| r.id == id))
    };
    assert!(has("vub", "slot:barman") && !has("ulb", "slot:barman"));
    assert!(has("ulb", "stale_slot:barman") && !has("vub", "stale_slot:barman"));
}

/// `barman_backup_method: rsync` (ssh_command to the live primary, TPA's reuse_backup `link`)
/// and `barman_archiver` (archive_command on every Postgres host, `archiver = on`).
#[test]
fn barman_rsync_and_archiver() {
    let source = SEED.replace(
        "  backup: chimay\n",
        "  backup: chimay\n  vars:\n    barman_backup_method: rsync\n    \
         barman_parallel_jobs: 2\n    barman_archiver: true\n",
    );
    let plan = plan_for(&source, "12").unwrap();
    expect_file!["golden/barman-ulb-rsync.conf"].assert_eq(&file_content(
        &plan,
        "chimay",
        "/etc/barman.d/ulb.conf",
    ));
    let restore = "/opt/postgres/data/conf.d/0003-tpa_restore_command.conf";
    expect_file!["golden/0003-tpa_restore_command-archiver.conf"]
        .assert_eq(&file_content(&plan, "ulb", restore));
    assert_eq!(
        file_content(&plan, "ulb", restore),
        file_content(&plan, "achel", restore),
        "a promoted replica archives to the same server"
    );
    // Without barman_archiver, the file holds restore_command only (archive_command stays
    // 0000-tpa.conf's /bin/true).
    let plain = plan_for(SEED, "12").unwrap();
    assert!(!file_content(&plain, "ulb", restore).contains("archive_command"));

    // After a failover, rsync copies from the new primary.
    let cluster = Cluster::parse(&source, "config.yml").unwrap();
    let facts = live(
        &cluster,
        &[
            ("vub", running(Some(false), None)),
            ("ulb", running(Some(true), Some("10.33.7.3"))),
            ("achel", running(Some(true), Some("vub"))),
        ],
    );
    let conf = file_content(
        &plan_with(&cluster, facts).unwrap(),
        "chimay",
        "/etc/barman.d/ulb.conf",
    );
    assert!(
        conf.contains("ssh_command = ssh -q postgres@10.33.7.3\n"),
        "{conf}"
    );
}

#[test]
fn barman_refusals_say_what_to_do() {
    let on_replica = SEED.replace(
        "  role: [replica]\n  upstream: ulb\n",
        "  role: [replica]\n  upstream: ulb\n  backup: chimay\n",
    );
    check(
        plan_for(&on_replica, "12").unwrap_err().join("\n"),
        expect![
            "vub: `backup: chimay` on an instance that is not the primary is not supported yet: tpa backs up the cluster's primary (and follows it after a failover); move `backup:` to the primary"
        ],
    );
    let errors = Cluster::parse(
        &SEED.replace(
            "  use_local_repo_only: true\n",
            "  use_local_repo_only: true\n  barman_reuse_backup: link\n  barman_backup_interval: '@daily'\n  backup_name: ulb-main\n",
        ),
        "config.yml",
    )
    .unwrap_err();
    check(
        errors.to_string(),
        expect![[r#"
            config.yml:12: cluster_vars.barman_reuse_backup: `barman_reuse_backup` applies to rsync backups only, and this instance's backups use `barman_backup_method: postgres` (pg_basebackup); set `barman_backup_method: rsync` or remove `barman_reuse_backup`
            config.yml:13: cluster_vars.barman_backup_interval: `@daily` is not a cron schedule; write five fields, e.g. `0 4 * * wed,sat`
            config.yml:14: cluster_vars.backup_name: tpa names the Barman server after the instance whose `backup:` names the Barman host (the catalogue keeps that name when the primary changes); remove `backup_name`"#]],
    );
}

/// The seed with Patroni: etcd on the three Postgres hosts, every replica streaming from ulb.
fn patroni_seed() -> String {
    SEED.replace("failover_manager: repmgr", "failover_manager: patroni")
        .replace("  role: [primary]\n", "  role: [primary, etcd]\n")
        .replace(
            "  role: [replica]\n  upstream: vub\n",
            "  role: [replica, etcd]\n  upstream: ulb\n",
        )
        .replace("  role: [replica]\n", "  role: [replica, etcd]\n")
}

#[test]
fn patroni_plan_outline_and_files() {
    let source = patroni_seed();
    let plan = plan_for(&source, "12").unwrap();
    expect_file!["golden/patroni_outline.txt"].assert_eq(&outline(&plan));
    expect_file!["golden/patroni-vub.yml"].assert_eq(&file_content(
        &plan,
        "vub",
        "/etc/patroni/fosdem.yml",
    ));
    expect_file!["golden/patroni-etcd-vub.yml"].assert_eq(&file_content(
        &plan,
        "vub",
        "/etc/tpa/etcd.yml",
    ));
    expect_file!["golden/patroni-dcs.json"].assert_eq(&file_content(
        &plan,
        "ulb",
        "/etc/patroni/fosdem.dcs.json",
    ));
    assert_runs_no_shell(&plan);
    // The REST password is in the (secret) file, and nowhere in the outline.
    assert!(file_content(&plan, "ulb", "/etc/patroni/fosdem.yml").contains("PATRONI-PASSWORD"));
    assert!(file_content(&plan, "vub", "/etc/patroni/fosdem.yml").contains("REWIND-PASSWORD"));
    assert!(!outline(&plan).contains("REWIND-PASSWORD"));
    assert!(!outline(&plan).contains("PATRONI-PASSWORD"));
    // The etcd restart helper: every placeholder filled, each value single-quoted for sh.
    let helper = file_content(&plan, "vub", "/etc/tpa/etcd-tpa");
    assert!(
        !helper.contains("@ENDPOINTS@") && !helper.contains("@FILES@"),
        "{helper}"
    );
    assert!(helper.contains(
        "ENDPOINTS='https://10.33.7.2:2379,https://10.33.7.3:2379,https://10.33.7.4:2379'\n"
    ));
    assert!(helper.contains(
        "FILES='/etc/tpa/etcd.yml /etc/systemd/system/etcd.service /etc/tpa/fosdem-ha.crt \
         /etc/tpa/fosdem-ha.key /etc/tpa/ca.crt'\n"
    ));
}

/// `patroni_conf_settings` and `patroni_dynamic_conf_settings` are merged last, key by key:
/// what they name wins, what they leave out stays tpa's.
#[test]
fn patroni_conf_settings_are_merged_last() {
    let source = patroni_seed().replace(
        "  failover_manager: patroni\n",
        "  failover_manager: patroni\n  patroni_conf_settings:\n    restapi:\n      \
         http_extra_headers: {X-Frame-Options: DENY}\n    tags: {nofailover: true}\n    \
         log: {level: WARNING}\n  patroni_dynamic_conf_settings:\n    loop_wait: 5\n    \
         postgresql:\n      parameters: {work_mem: 8MB}\n",
    );
    let plan = plan_for(&source, "12").unwrap();
    let conf: serde_json::Value =
        serde_json::from_str(&file_content(&plan, "vub", "/etc/patroni/fosdem.yml")).unwrap();
    assert_eq!(
        conf["restapi"]["http_extra_headers"]["X-Frame-Options"],
        "DENY"
    );
    assert_eq!(conf["restapi"]["certfile"], "/etc/tpa/fosdem-ha.crt");
    assert_eq!(conf["tags"]["nofailover"], true);
    assert_eq!(conf["tags"]["noloadbalance"], false);
    assert_eq!(conf["log"]["level"], "WARNING");
    let dcs: serde_json::Value =
        serde_json::from_str(&file_content(&plan, "ulb", "/etc/patroni/fosdem.dcs.json")).unwrap();
    assert_eq!(dcs["loop_wait"], 5);
    assert_eq!(dcs["ttl"], 30);
    assert_eq!(dcs["postgresql"]["parameters"]["work_mem"], "8MB");
    assert_eq!(dcs["postgresql"]["parameters"]["wal_level"], "logical");
    assert_eq!(dcs["postgresql"]["use_pg_rewind"], true);
}

/// TPA's M1 shape with the log server beside Barman and the witness.
fn log_server_seed() -> String {
    SEED.replace(
        "  role: [barman]\n",
        "  role: [barman, log-server, witness]\n  upstream: ulb\n",
    )
}

/// Every host ships its logs: a `logs` stage right after `sys` (rsyslog, its certificate,
/// the forwarding rules), and the log server's listener with one directory per host.
#[test]
fn log_server_stages_and_files() {
    let plan = plan_for(&log_server_seed(), "12").unwrap();
    let mut logs = Plan::default();
    for (host, stages) in &plan.hosts {
        assert_eq!(
            stages[1].name,
            StageName::Logs,
            "{host}: logs right after sys"
        );
        let Resource::Packages(p) = &stages[0]
            .resources
            .iter()
            .find(|r| r.id == "packages:base")
            .unwrap()
            .kind
        else {
            panic!("packages")
        };
        for name in logserver::PACKAGES {
            assert!(
                p.names.iter().any(|n| n == name),
                "{host}: {name} in {:?}",
                p.names
            );
        }
        logs.hosts.insert(host.clone(), vec![stages[1].clone()]);
    }
    expect_file!["golden/logserver_outline.txt"].assert_eq(&outline(&logs));
    expect_file!["golden/rsyslog-forward-ulb.conf"].assert_eq(&file_content(
        &plan,
        "ulb",
        logserver::FORWARD_CONF,
    ));
    expect_file!["golden/rsyslog-log-server-chimay.conf"].assert_eq(&file_content(
        &plan,
        "chimay",
        logserver::SERVER_CONF,
    ));
    // The log server's role is deployed now: no "not deployed yet" note names it.
    assert!(
        plan.notes.iter().all(|n| !n.contains("log-server")),
        "{:?}",
        plan.notes
    );
}

/// Without a log-server role nothing changes: no stage, no rsyslog package.
#[test]
fn no_log_server_no_logs_stage() {
    let plan = plan_for(SEED, "12").unwrap();
    let text = outline(&plan);
    assert!(
        !text.contains(" logs\n") && !text.contains("rsyslog"),
        "{text}"
    );
}

/// Under Patroni, hosts with the etcd/Patroni certificate reuse it for rsyslog; the others
/// (the log server here) get one of their own.
#[test]
fn log_shipping_reuses_the_ha_certificate() {
    let source = patroni_seed().replace("  role: [barman]\n", "  role: [barman, log-server]\n");
    let plan = plan_for(&source, "12").unwrap();
    let ulb = file_content(&plan, "ulb", logserver::FORWARD_CONF);
    assert!(ulb.contains("\"/etc/tpa/fosdem-ha.crt\""), "{ulb}");
    assert_eq!(
        file_content(&plan, "ulb", "/etc/tpa/fosdem-ha.crt"),
        "HA-PEM\n"
    );
    let chimay = file_content(&plan, "chimay", logserver::SERVER_CONF);
    assert!(chimay.contains("\"/etc/tpa/fosdem-log.key\""), "{chimay}");
    assert_eq!(
        file_content(&plan, "chimay", "/etc/tpa/fosdem-log.crt"),
        "LOG-PEM\n"
    );
    let ids: Vec<&str> = plan.hosts["ulb"]
        .iter()
        .flat_map(|s| s.resources.iter().map(|r| r.id.as_str()))
        .collect();
    assert!(!ids.contains(&"file:/etc/tpa/fosdem-log.crt"), "{ids:?}");
}

/// Each host's health spec (`/etc/tpa-agent/health.json`, the last resource of its own
/// stages): the seed's replica and Barman host, the Patroni seed's etcd member, and
/// `agent_health_interval` / `agent_metrics_*` from config.yml.
#[test]
fn health_specs() {
    let spec_path = tpa_common::health_spec::SPEC_PATH;
    let plan = plan_for(SEED, "12").unwrap();
    for host in ["ulb", "vub", "achel", "chimay"] {
        let own = plan.hosts[host]
            .iter()
            .rfind(|s| s.name != StageName::PostDeploy)
            .expect("a stage");
        assert_eq!(
            own.resources.last().map(|r| r.id.as_str()),
            Some(format!("file:{spec_path}").as_str()),
            "{host}"
        );
    }
    expect_file!["golden/health-vub.json"].assert_eq(&file_content(&plan, "vub", spec_path));
    expect_file!["golden/health-chimay.json"].assert_eq(&file_content(&plan, "chimay", spec_path));
    let patroni = plan_for(&patroni_seed(), "12").unwrap();
    expect_file!["golden/health-patroni-vub.json"]
        .assert_eq(&file_content(&patroni, "vub", spec_path));

    let source = SEED.replace(
        "  use_local_repo_only: true\n",
        "  use_local_repo_only: true\n  agent_health_interval: 30\n  agent_metrics_port: 9187\n  \
         agent_metrics_listen: tls\n",
    );
    let plan = plan_for(&source, "12").unwrap();
    let spec: tpa_common::health_spec::HealthSpec =
        serde_json::from_str(&file_content(&plan, "achel", spec_path)).expect("JSON");
    assert_eq!(spec.interval_secs, 30);
    assert_eq!(
        spec.metrics,
        Some(tpa_common::health_spec::MetricsSpec {
            port: 9187,
            listen: tpa_common::health_spec::MetricsListen::Tls,
        })
    );
    assert!(spec.problems().is_empty(), "{:?}", spec.problems());
}

/// The 24-host fixture (scripts/bench/scale.sh deploys it): every replica clones from its own
/// upstream, cascaded ones from their location's first replica, and the primary has WAL
/// senders for its seven direct replicas cloning at once (two each) and Barman's stream.
#[test]
fn the_24_host_fixture_plans_each_clone_from_its_upstream() {
    let source = include_str!("../../../tests/fixtures/scale24/config.yml");
    let cluster = Cluster::parse(source, "config.yml").expect("valid config");
    let plan = plan_for(source, "12").unwrap();
    assert_eq!(plan.hosts.len(), 24);
    let inventory = inventory(&cluster);
    let mut cascaded = 0;
    for instance in &cluster.instances {
        let clone = plan.hosts[&instance.name]
            .iter()
            .flat_map(|s| &s.resources)
            .find_map(|r| match &r.kind {
                Resource::Command(c) if r.id == "command:pg_basebackup" => Some(c.argv.join(" ")),
                _ => None,
            });
        match &instance.upstream {
            Some(upstream) => {
                let address = inventory.host(upstream).unwrap().address;
                let clone = clone.unwrap_or_else(|| panic!("{} is not cloned", instance.name));
                assert!(
                    clone.contains(&format!("host={address} ")),
                    "{}: {clone}",
                    instance.name
                );
                cascaded += usize::from(upstream != "bru1");
            }
            None => assert_eq!(clone, None, "{} is cloned", instance.name),
        }
    }
    assert_eq!(cascaded, 15);
    let conf = file_content(
        &plan,
        "bru1",
        "/opt/postgres/data/conf.d/0001-tpa_restart.conf",
    );
    let senders: u32 = conf
        .lines()
        .find_map(|l| l.strip_prefix("max_wal_senders = "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no max_wal_senders in\n{conf}"));
    assert!(senders > 2 * 7, "max_wal_senders = {senders}");
}

/// Hosts with internet: PGDG (built in) and a defined repository, each pinned to its own key
/// file with signed-by, the codename expanded; none with use_local_repo_only; a defined
/// repository whose key was not loaded is an error, not a source without a key.
#[test]
fn apt_repositories_are_pinned_to_their_keys() {
    let source = SEED.replace("postgres_version: '15'", "postgres_version: '16'").replace(
        "  use_local_repo_only: true\n",
        "  apt_repository_list: [PGDG, Example]\n  apt_repositories:\n    \
         Example:\n      repo: |\n        deb [arch=amd64] https://apt.example.com/debian {{ansible_distribution_release}} main\n        \
         deb-src https://apt.example.com/debian {{ansible_distribution_release}} main\n      \
         key_url: https://apt.example.com/key.asc\n      key_id: 7FCC7D46ACCC4CF8\n",
    );
    let cluster = Cluster::parse(&source, "config.yml").expect("valid config");
    let mut facts = facts(&cluster, "12");
    for f in facts.values_mut() {
        f.os_codename = "bookworm".into();
    }
    let inventory = inventory(&cluster);
    let mut state = state(&cluster, &inventory, facts.clone());
    let missing = plan(&PlanInput {
        cluster: &cluster,
        inventory: &inventory,
        state: &state,
    })
    .unwrap_err();
    assert!(
        missing[0].contains("apt_repositories.Example: its key was not loaded"),
        "{missing:?}"
    );
    let example = crate::apt_keys::AptKey {
        armored: "EXAMPLE KEY\n".into(),
        fingerprint: "0000000000000000000000007FCC7D46ACCC4CF8".into(),
    };
    state.apt_keys.insert("Example".into(), example);
    let plan = plan(&PlanInput {
        cluster: &cluster,
        inventory: &inventory,
        state: &state,
    })
    .unwrap();
    check(
        file_content(&plan, "ulb", "/etc/apt/sources.list.d/tpa-Example.list"),
        expect![[r#"
            # Managed by tpa: apt repository Example, signed by key 0000000000000000000000007FCC7D46ACCC4CF8
            deb [signed-by=/etc/apt/keyrings/tpa-Example.asc arch=amd64] https://apt.example.com/debian bookworm main
            deb-src [signed-by=/etc/apt/keyrings/tpa-Example.asc] https://apt.example.com/debian bookworm main
        "#]],
    );
    check(
        file_content(&plan, "ulb", "/etc/apt/sources.list.d/tpa-PGDG.list"),
        expect![[r#"
            # Managed by tpa: apt repository PGDG, signed by key B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8
            deb [signed-by=/etc/apt/keyrings/tpa-PGDG.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main
        "#]],
    );
    assert_eq!(
        file_content(&plan, "ulb", "/etc/apt/keyrings/tpa-PGDG.asc"),
        crate::apt_keys::PGDG_KEY
    );
    assert_eq!(
        file_content(&plan, "chimay", "/etc/apt/keyrings/tpa-Example.asc"),
        "EXAMPLE KEY\n"
    );
    // PGDG's PostgreSQL 16 on Debian 12, which Debian's archive does not have.
    let packages = plan.hosts["ulb"]
        .iter()
        .flat_map(|s| &s.resources)
        .find_map(|r| match &r.kind {
            Resource::Packages(p) => Some(p.names.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        packages.contains(&"postgresql-16".to_string()),
        "{packages:?}"
    );

    // use_local_repo_only: no repository at all (and 16 is refused at validation).
    let local_only = SEED.replace(
        "  use_local_repo_only: true\n",
        "  use_local_repo_only: true\n  apt_repository_list: [PGDG]\n",
    );
    let plan = plan_for(&local_only, "12").unwrap();
    assert!(
        !outline(&plan).contains("sources.list.d/tpa-PGDG"),
        "{}",
        outline(&plan)
    );
}

/// Volumes get their filesystems at the end of sys (after mkfs is installed), before the
/// data directory beneath /opt/postgres; on aws the recorded EBS id names the volume first.
#[test]
fn volumes_are_mounted_after_the_packages_and_before_the_data_directory() {
    let source = "cluster_name: disks\n\
        cluster_vars: {postgres_version: '15', use_local_repo_only: true}\n\
        instances:\n\
        - {Name: alder, node: 1, platform: bare, ip_address: 10.0.0.2, role: [primary], \
           volumes: [{device_name: /dev/sdg, vars: {mountpoint: /srv/scratch, fstype: xfs, fsopts: '-m crc=1'}}, \
           {device_name: /dev/sdf, vars: {volume_for: postgres_data}}, {device_name: /dev/sdh}]}\n";
    let cluster = Cluster::parse(source, "config.yml").expect("valid config");
    let mut inventory = inventory(&cluster);
    inventory.hosts[0].platform = crate::config::Platform::Aws;
    inventory.hosts[0].volumes = BTreeMap::from([
        ("/dev/sdf".to_string(), "vol-0123abcd".to_string()),
        ("/dev/xvda".to_string(), "vol-root".to_string()),
    ]);
    let state = state(&cluster, &inventory, facts(&cluster, "12"));
    let plan = plan(&PlanInput {
        cluster: &cluster,
        inventory: &inventory,
        state: &state,
    })
    .unwrap();
    let lines: Vec<String> = outline(&plan)
        .lines()
        .skip_while(|l| !l.contains("packages:base"))
        .take(8)
        .map(|l| l.replace(r#"", ""#, " "))
        .collect();
    check(
        lines.join("\n"),
        expect![[r#"
              packages:base ["barman-cli ca-certificates cron e2fsprogs less locales openssh-client openssl postgresql-15 postgresql-15-repmgr postgresql-client-15 procps python3-psycopg2 rsync sudo xfsprogs"]
              service:postgresql.service reload_on=[] restart_on=[]
              directory:/etc/tpa
              file:/etc/tpa/mount-tpa
              mount:/opt/postgres ["/etc/tpa/mount-tpa apply /opt/postgres ext4 defaults,noatime 0 /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123abcd /dev/sdf /dev/xvdf"]
              mount:/srv/scratch ["/etc/tpa/mount-tpa apply /srv/scratch xfs defaults,noatime 2 -m crc=1 /dev/sdg /dev/xvdg"]
            alder postgres-install
              directory:/opt/postgres"#]],
    );
}
