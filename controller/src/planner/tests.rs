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

fn inventory(cluster: &Cluster) -> Inventory {
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
                host_key: None,
            })
            .collect(),
    }
}

fn facts(cluster: &Cluster, os: &str) -> BTreeMap<String, Facts> {
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
fn state(cluster: &Cluster, inventory: &Inventory, facts: BTreeMap<String, Facts>) -> ClusterState {
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
                facts,
            };
            (name, host)
        })
        .collect();
    ClusterState {
        hosts,
        topology,
        ca_pem: "CA-PEM\n".into(),
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
        barman_passwords: BTreeMap::from(["barman", "streaming_barman"].map(|u| {
            (
                u.to_string(),
                tpa_common::resource::Secret::new(format!("{u}-PASSWORD")),
            )
        })),
        drift: vec![],
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
fn outline(plan: &Plan) -> String {
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
    let plan = plan_for(&source, "12").unwrap();
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
    let stage = plan.hosts["ulb"]
        .iter()
        .find(|s| s.name == StageName::PostgresUsers)
        .unwrap();
    let mut out = String::new();
    for r in &stage.resources {
        if let Resource::Sql(sql) = &r.kind {
            let _ = writeln!(
                out,
                "{} [{}] secret={}\n  check: {}\n  apply: {}",
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
            "postgres-users"
        ]
    );
    assert_eq!(
        stages("ulb"),
        ["sys", "postgres-install", "postgres-config"]
    );
    assert_eq!(
        plan.hosts["ulb"][1].after,
        [("vub".to_string(), StageName::PostgresUsers)]
    );
    let vub = outline(&plan);
    assert!(
        vub.contains("  slot:tpa_ulb\n") && vub.contains("  slot:tpa_achel\n"),
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
    assert_eq!(
        after("vub", StageName::PostgresInstall),
        [("ulb".to_string(), StageName::PostgresUsers)]
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
    let ulb_users = ids("ulb", StageName::PostgresUsers);
    assert!(
        ulb_users.contains(&"role:replication".to_string()),
        "{ulb_users:?}"
    );
    assert!(ulb_users.contains(&"slot:tpa_vub".to_string()));
    assert!(!ulb_users.contains(&"slot:tpa_achel".to_string()));
    let vub_config = ids("vub", StageName::PostgresConfig);
    let streaming = vub_config
        .iter()
        .position(|i| i == "streaming:wal_receiver");
    let slot = vub_config.iter().position(|i| i == "slot:tpa_achel");
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

/// The replication password reaches a replica only in its 0600 passfile, marked secret.
#[test]
fn the_replication_password_is_only_in_the_passfile() {
    let plan = plan_for(SEED, "12").unwrap();
    for host in ["vub", "achel"] {
        for r in plan.hosts[host].iter().flat_map(|s| &s.resources) {
            let shown = format!("{:?}", r.kind);
            assert!(!shown.contains("REPLICATION-PASSWORD"), "{host} {}", r.id);
            match &r.kind {
                Resource::File(f) if f.path == replica::PASSFILE => {
                    assert!(f.secret && f.mode == 0o600 && f.owner == "postgres");
                    let text = String::from_utf8(f.content.as_bytes().to_vec()).unwrap();
                    assert_eq!(text, "*:*:replication:replication:REPLICATION-PASSWORD\n");
                }
                Resource::File(f) => {
                    let text = String::from_utf8(f.content.as_bytes().to_vec()).unwrap();
                    assert!(!text.contains("REPLICATION-PASSWORD"), "{host} {}", f.path);
                }
                Resource::Command(c) => {
                    assert!(c.env.is_empty(), "{host} {}", r.id);
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
    assert_eq!(stage.after, [("ulb".to_string(), StageName::PostgresUsers)]);
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
    assert_eq!(stage.after, [("vub".to_string(), StageName::PostgresUsers)]);
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
            "  use_local_repo_only: true\n  barman_backup_method: rsync\n  barman_reuse_backup: link\n  barman_backup_interval: '@daily'\n",
        ),
        "config.yml",
    )
    .unwrap_err();
    check(
        errors.to_string(),
        expect![[r#"
        config.yml:12: cluster_vars.barman_backup_method: `barman_backup_method: rsync` needs SSH trust between the Barman and Postgres hosts, which tpa does not set up yet; use `barman_backup_method: postgres` (pg_basebackup over a TLS replication connection, tpa's default) or remove the key
        config.yml:13: cluster_vars.barman_reuse_backup: `barman_reuse_backup` is a TPA setting that tpa does not support yet; remove it
        config.yml:14: cluster_vars.barman_backup_interval: `@daily` is not a cron schedule; write five fields, e.g. `0 4 * * wed,sat`"#]],
    );
}
