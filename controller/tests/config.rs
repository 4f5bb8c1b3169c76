//! The config.yml fixtures: our seed demo and the file TPA's own `configure` writes for M1 on
//! docker both load cleanly, with the expected topology.

use std::path::{Path, PathBuf};

use tpa_controller::config::{Cluster, FailoverManager, Platform, Role};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

fn parse_fixture(name: &str) -> Cluster {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture is readable");
    match Cluster::parse(&text, name) {
        Ok(c) => c,
        Err(e) => panic!("{name} should parse cleanly, got:\n{e}"),
    }
}

#[test]
fn seed_config_parses_with_its_topology() {
    let c = parse_fixture("seed.yml");
    assert_eq!(c.name, "fosdem");
    assert_eq!(c.postgres_version().as_deref(), Some("15"));
    assert_eq!(c.vars.failover_manager, Some(FailoverManager::Repmgr));
    assert_eq!(c.vars.use_local_repo_only, Some(true));
    assert!(c.docker_networks.is_empty());
    let locations: Vec<&str> = c.locations.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(locations, ["brussels", "ghent", "antwerp"]);

    let summary: Vec<String> = c
        .instances
        .iter()
        .map(|i| {
            let roles: Vec<&str> = i.roles.iter().map(|r| r.as_str()).collect();
            format!(
                "{} node={} loc={} roles={} upstream={} backup={} {} {} user={}",
                i.name,
                i.node,
                i.location.as_deref().unwrap_or("-"),
                roles.join(","),
                i.upstream.as_deref().unwrap_or("-"),
                i.backup.join(","),
                i.platform,
                i.image.as_deref().unwrap_or("-"),
                i.ansible_user(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "ulb node=1 loc=brussels roles=primary,postgres upstream=- backup=chimay docker tpa/debian user=root",
            "vub node=2 loc=brussels roles=replica,postgres upstream=ulb backup= docker tpa/debian user=root",
            "achel node=3 loc=ghent roles=replica,postgres upstream=vub backup= docker tpa/debian user=root",
            "chimay node=4 loc=antwerp roles=barman upstream=- backup= docker tpa/debian user=root",
        ]
    );
    // Host vars carry the cluster vars.
    assert!(
        c.instances
            .iter()
            .all(|i| i.vars.postgres_version.as_deref() == Some("15"))
    );
}

#[test]
fn tpa_generated_m1_docker_config_parses() {
    let c = parse_fixture("tpa-m1-docker.yml");
    assert_eq!(c.name, "m1r");
    assert_eq!(c.keyring_backend.as_deref(), Some("system"));
    assert!(c.vault_name.is_some());
    assert_eq!(c.docker_networks.len(), 1);
    assert_eq!(
        c.docker_networks[0].subnets[0].to_string(),
        "10.33.151.240/28"
    );
    let barman = c.instance("quieter").expect("barman node");
    assert!(barman.has_role(Role::Barman) && barman.has_role(Role::LogServer));
    assert!(barman.has_role(Role::Witness) && barman.has_role(Role::Postgres));
    assert_eq!(barman.upstream.as_deref(), Some("queasy"));
    assert_eq!(
        barman.ip_address.map(|ip| ip.to_string()).as_deref(),
        Some("10.33.151.244")
    );
    assert!(c.instances.iter().all(|i| i.platform == Platform::Docker));
    assert_eq!(
        c.instance("queasy").map(|i| i.backup.clone()),
        Some(vec!["quieter".to_string()])
    );
}

#[test]
fn load_reads_config_yml_from_the_cluster_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(fixture("seed.yml"), dir.path().join("config.yml")).expect("copy");
    let c = Cluster::load(dir.path()).expect("seed loads");
    assert_eq!(c.instances.len(), 4);

    std::fs::write(dir.path().join("config.yml"), "cluster_name: x\nbogus: 1\n").expect("write");
    let err = Cluster::load(dir.path()).expect_err("invalid config");
    let label = dir.path().join("config.yml").display().to_string();
    assert_eq!(err.0[0].file, label);
    assert!(
        err.to_string()
            .starts_with(&format!("{label}:1: missing required key `cluster_vars`"))
    );
}

#[test]
fn load_without_config_yml_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Cluster::load(dir.path()).expect_err("no config.yml");
    let text = err.to_string();
    assert!(text.contains("config.yml: cannot read:"), "{text}");
    assert!(text.contains("tpa-controller configure"), "{text}");
}
