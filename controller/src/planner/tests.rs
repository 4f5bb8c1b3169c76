//! Golden tests: the seed cluster's plan, resource by resource, and every rendered file.
//! Regenerate after an intended change with `UPDATE_EXPECT=1 cargo test -p tpa-controller planner`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use expect_test::{Expect, expect, expect_file};
use tpa_common::facts::Facts;
use tpa_common::resource::Resource;

use super::*;
use crate::config::Cluster;
use crate::inventory::{Host, Inventory};

const SEED: &str = include_str!("../../../tests/fixtures/seed/config.yml");

fn inventory(cluster: &Cluster) -> Inventory {
    Inventory {
        cluster: cluster.name.clone(),
        config_sha256: String::new(),
        network: Some(crate::inventory::Network {
            name: cluster.name.clone(),
            subnet: "10.33.7.0/24".into(),
            gateway: "10.33.7.1".parse().unwrap(),
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
                platform: "docker".into(),
                container_id: None,
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

fn plan_for(source: &str, os: &str) -> Result<Plan, Vec<String>> {
    let cluster = Cluster::parse(source, "config.yml").expect("valid config");
    let inventory = inventory(&cluster);
    let facts = facts(&cluster, os);
    let certs = BTreeMap::from([("ulb".to_string(), "CERT-PEM\n".to_string())]);
    let repos: BTreeMap<String, String> = cluster
        .instances
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                format!("/var/opt/tpa/local-repo/Debian/{os}"),
            )
        })
        .collect();
    plan(&PlanInput {
        cluster: &cluster,
        inventory: &inventory,
        facts: &facts,
        ca_pem: "CA-PEM\n",
        server_certs: &certs,
        local_repos: &repos,
        password_verifiers: &BTreeMap::from([(
            "ada_lovelace".to_string(),
            "SCRAM-SHA-256$4096:c2FsdA==$stored:server".to_string(),
        )]),
    })
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
        reload.contains("work_mem = 32MB") && !reload.contains("max_locks"),
        "{reload}"
    );
    assert!(restart.contains("max_locks_per_transaction = 128") && !restart.contains("work_mem"));
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
                sql.check.expose(),
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
