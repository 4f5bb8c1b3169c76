//! Where hooks land in the seed cluster's plan, with what environment and time limit.

use expect_test::expect;
use tpa_common::resource::Resource;

use super::super::tests::{facts, inventory, outline, state};
use super::*;
use crate::config::Cluster;
use crate::hooks::{HookFile, Point};

const SEED: &str = include_str!("../../../../tests/fixtures/seed/config.yml");

fn hook(cluster: &Cluster, point: Point, header: &str) -> HookFile {
    crate::hooks::parse(
        point,
        point.as_str(),
        format!("#!/bin/sh\n{header}\necho {point}\n").into_bytes(),
        cluster,
    )
    .expect("valid hook")
}

fn plan_with_hooks(source: &str, hooks: impl Fn(&Cluster) -> Vec<HookFile>) -> Plan {
    let cluster = Cluster::parse(source, "config.yml").expect("valid config");
    let inventory = inventory(&cluster);
    let mut state = state(&cluster, &inventory, facts(&cluster, "12"));
    state.hooks = hooks(&cluster);
    super::super::plan(&PlanInput {
        cluster: &cluster,
        inventory: &inventory,
        state: &state,
    })
    .expect("a plan")
}

/// Only the hooks and the stage they are in, from the full outline.
fn hooks_outline(plan: &Plan) -> String {
    let mut out = String::new();
    let mut stage = String::new();
    for line in outline(plan).lines() {
        if !line.starts_with(' ') {
            stage = line.to_string();
        } else if line.contains("hook") {
            out.push_str(&format!("{stage}: {}\n", line.trim()));
        }
    }
    out
}

#[test]
fn every_point_lands_in_its_stage_on_its_hosts() {
    let plan = plan_with_hooks(SEED, |c| {
        Point::ALL
            .into_iter()
            .map(|p| {
                let header = if p == Point::PreDeploy {
                    "# tpa-hosts: role:replica"
                } else {
                    ""
                };
                hook(c, p, header)
            })
            .collect()
    });
    expect![[r#"
        achel sys: directory:/etc/tpa/hooks
        achel sys: hook:pre-deploy
        achel sys: hook:post-repo
        achel postgres-install: directory:/etc/tpa/hooks
        achel postgres-install: hook:pre-initdb
        achel postgres-config: directory:/etc/tpa/hooks
        achel postgres-config: hook:postgres-config
        achel post-deploy: directory:/etc/tpa/hooks
        achel post-deploy: hook:post-deploy
        chimay sys: directory:/etc/tpa/hooks
        chimay sys: hook:post-repo
        chimay barman: directory:/etc/tpa/hooks
        chimay barman: hook:barman-pre-config
        chimay post-deploy: directory:/etc/tpa/hooks
        chimay post-deploy: hook:post-deploy
        ulb sys: directory:/etc/tpa/hooks
        ulb sys: hook:post-repo
        ulb postgres-install: directory:/etc/tpa/hooks
        ulb postgres-install: hook:pre-initdb
        ulb postgres-config: directory:/etc/tpa/hooks
        ulb postgres-config: hook:postgres-config
        ulb postgres-users: directory:/etc/tpa/hooks
        ulb postgres-users: hook:postgres-config-final
        ulb post-deploy: directory:/etc/tpa/hooks
        ulb post-deploy: hook:post-deploy
        vub sys: directory:/etc/tpa/hooks
        vub sys: hook:pre-deploy
        vub sys: hook:post-repo
        vub postgres-install: directory:/etc/tpa/hooks
        vub postgres-install: hook:pre-initdb
        vub postgres-config: directory:/etc/tpa/hooks
        vub postgres-config: hook:postgres-config
        vub post-deploy: directory:/etc/tpa/hooks
        vub post-deploy: hook:post-deploy
    "#]]
    .assert_eq(&hooks_outline(&plan));
}

#[test]
fn hooks_sit_between_the_right_resources() {
    let plan = plan_with_hooks(SEED, |c| Point::ALL.map(|p| hook(c, p, "")).to_vec());
    let ids = |host: &str, stage: StageName| -> Vec<String> {
        plan.hosts[host]
            .iter()
            .find(|s| s.name == stage)
            .expect("stage")
            .resources
            .iter()
            .map(|r| r.id.clone())
            .collect()
    };
    let position = |ids: &[String], id: &str| ids.iter().position(|i| i == id).expect(id);
    let sys = ids("ulb", StageName::Sys);
    assert_eq!(sys[..2], ["directory:/etc/tpa/hooks", "hook:pre-deploy"]);
    assert_eq!(
        position(&sys, "hook:post-repo") + 1,
        position(&sys, "packages:base")
    );
    let install = ids("ulb", StageName::PostgresInstall);
    assert_eq!(install[1], "hook:pre-initdb");
    let config = ids("ulb", StageName::PostgresConfig);
    assert_eq!(
        position(&config, "hook:postgres-config") + 1,
        position(&config, "service:postgres.service")
    );
    let users = ids("ulb", StageName::PostgresUsers);
    assert_eq!(
        users.last().map(String::as_str),
        Some("hook:postgres-config-final")
    );
    let barman = ids("chimay", StageName::Barman);
    assert_eq!(
        position(&barman, "hook:barman-pre-config") + 1,
        position(&barman, "file:/etc/barman.conf")
    );
    // post-deploy waits for every other host's last stage.
    let post = plan.hosts["vub"].last().expect("a stage");
    assert_eq!(post.name, StageName::PostDeploy);
    expect![[r#"
        [
            (
                "achel",
                Repmgr,
            ),
            (
                "chimay",
                Barman,
            ),
            (
                "ulb",
                Repmgr,
            ),
        ]
    "#]]
    .assert_debug_eq(&post.after);
}

#[test]
fn environment_and_time_limit() {
    let with_timeout = SEED.replace(
        "  use_local_repo_only: true\n",
        "  use_local_repo_only: true\n  hook_timeout: 42\n",
    );
    let plan = plan_with_hooks(&with_timeout, |c| vec![hook(c, Point::PreInitdb, "")]);
    let hook = plan.hosts["achel"]
        .iter()
        .flat_map(|s| &s.resources)
        .find_map(|r| match &r.kind {
            Resource::Hook(h) => Some(h.clone()),
            _ => None,
        })
        .expect("achel runs pre-initdb");
    assert_eq!(hook.path, "/etc/tpa/hooks/pre-initdb");
    assert_eq!(hook.timeout_secs, 42);
    assert_eq!(
        String::from_utf8(hook.content.as_bytes().to_vec()).unwrap(),
        "#!/bin/sh\n\necho pre-initdb\n"
    );
    let env: Vec<String> = hook
        .env
        .iter()
        .map(|e| format!("{}={}", e.name, e.value.expose()))
        .collect();
    expect![[r#"
        TPA_HOOK=pre-initdb
        TPA_CLUSTER=fosdem
        TPA_HOST=achel
        TPA_ADDRESS=10.33.7.4
        TPA_ROLES=replica,postgres
        TPA_LOCATION=ghent
        TPA_NODE=3
        TPA_POSTGRES_ROLE=replica
        TPA_POSTGRES_VERSION=15
        TPA_DATA_DIR=/opt/postgres/data
        TPA_PORT=5432
        TPA_PRIMARY=ulb
        TPA_UPSTREAM=vub"#]]
    .assert_eq(&env.join("\n"));
}

#[test]
fn no_hooks_change_nothing() {
    let without = plan_with_hooks(SEED, |_| vec![]);
    assert!(!outline(&without).contains("hook"));
    assert!(
        without
            .hosts
            .values()
            .all(|stages| stages.iter().all(|s| s.name != StageName::PostDeploy))
    );
}
