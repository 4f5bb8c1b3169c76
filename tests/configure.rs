//! `configure` → `provision` → `deploy` on docker with the seed's options (M1, PostgreSQL 15,
//! repmgr, two of the seed's locations, one data node each): the config configure writes
//! deploys unchanged, and a row written on the primary is read on the replica.
//!
//! Costs one three-host deploy (primary, replica in the other location, Barman node with the
//! repmgr witness): the same sequence run by hand on 2026-11-27 (load average about 9) took
//! 199 s: provision + download-packages about 100 s, deploy 97.9 s, images cached.

use std::path::Path;

use tpa_e2e::*;

/// Deprovisions the cluster (and removes its containers) however the test ends.
struct Cleanup<'a> {
    dir: &'a Path,
    cluster: &'a str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = controller(&["deprovision", &self.dir.display().to_string()]);
        for name in cluster_containers(self.cluster) {
            let _ = run("docker", &["rm", "-f", "-v", &name]);
        }
    }
}

/// The `Name` of the first instance whose `role:` line contains `role`.
fn instance_with_role(config: &str, role: &str) -> String {
    let mut name = None;
    for line in config.lines() {
        if let Some(n) = line.strip_prefix("- Name: ") {
            name = Some(n.trim().to_string());
        }
        if line.trim_start().starts_with("role: [") && line.contains(role) {
            return name.expect("a role line follows a Name line");
        }
    }
    panic!("no instance with role {role} in:\n{config}");
}

fn psql(ssh_config: &str, host: &str, sql: &str) -> String {
    let command = format!(
        "sudo -iu postgres psql -XAtc '{}'",
        sql.replace('\'', r"'\''")
    );
    let (ok, out) = run(
        "ssh",
        &["-F", ssh_config, "-o", "BatchMode=yes", host, &command],
    );
    assert!(ok, "psql on {host} failed: {sql}");
    out.trim().to_string()
}

#[test]
fn configured_seed_provisions_deploys_and_replicates() {
    let Some(_serial) = e2e_guard("configured_seed_provisions_deploys_and_replicates") else {
        return;
    };
    ensure_image("tpa/debian:12");
    let cluster = "cfe2e";
    let parent = tempfile::Builder::new()
        .prefix("tpa-e2e-")
        .tempdir()
        .expect("tempdir");
    let dir = parent.path().join(cluster);
    let path = dir.to_str().expect("UTF-8 temp path");
    let out = controller(&[
        "configure",
        path,
        "--architecture",
        "M1",
        "--postgresql",
        "15",
        "--platform",
        "docker",
        "--os",
        "Debian",
        "--os-version",
        "12",
        "--failover-manager",
        "repmgr",
        "--location-names",
        "brussels",
        "ghent",
        "--data-nodes-per-location",
        "1",
        "--cluster-prefixed-hostnames",
        "--use-local-repo-only",
    ]);
    assert!(out.status.success(), "configure failed");
    let _cleanup = Cleanup { dir: &dir, cluster };
    let config = std::fs::read_to_string(dir.join("config.yml")).expect("config.yml");
    assert!(
        config.starts_with("# Written by: tpa-controller configure "),
        "{config}"
    );
    assert!(dir.join(".git").is_dir(), "no git repository");
    // Configuring again over the directory is refused.
    let again = controller(&[
        "configure",
        path,
        "-a",
        "M1",
        "--postgresql",
        "15",
        "--failover-manager",
        "repmgr",
    ]);
    assert!(!again.status.success());
    assert_eq!(
        std::fs::read_to_string(dir.join("config.yml")).expect("config.yml"),
        config
    );

    assert!(controller(&["provision", path]).status.success());
    assert!(controller(&["download-packages", path]).status.success());
    let deploy = controller(&["deploy", path]);
    assert!(deploy.status.success(), "deploy failed");

    let primary = instance_with_role(&config, "primary");
    let replica = instance_with_role(&config, "replica");
    let ssh_config = dir.join("ssh_config").display().to_string();
    psql(
        &ssh_config,
        &primary,
        "create table cf_probe (v text); insert into cf_probe values ('from configure')",
    );
    let mut seen = String::new();
    for _ in 0..50 {
        // Until the table replicates, the query fails: retry.
        let (_, out) = run(
            "ssh",
            &[
                "-F",
                &ssh_config,
                "-o",
                "BatchMode=yes",
                &replica,
                "sudo -iu postgres psql -XAtc 'select v from cf_probe'",
            ],
        );
        seen = out.trim().to_string();
        if seen == "from configure" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(seen, "from configure", "the row did not reach {replica}");
}
