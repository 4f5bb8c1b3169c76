//! Provision scenario: the seed's four hosts come up as containers that accept SSH with
//! strict host-key checking; provision is idempotent, finishes a half-done job, refuses a bad
//! config without creating anything, and deprovision leaves nothing behind.

use std::os::unix::fs::PermissionsExt;

use tpa_e2e::*;

const HOSTS: [&str; 4] = ["achel", "chimay", "ulb", "vub"];

#[test]
fn seed_cluster_provisions_reprovisions_and_deprovisions() {
    let Some(_serial) = e2e_guard("seed_cluster_provisions_reprovisions_and_deprovisions") else {
        return;
    };
    let cluster = "e2e-prov";
    let dir = seed_cluster(cluster);
    let path = dir.path().to_str().unwrap();
    let _cleanup = Cleanup {
        dir: dir.path(),
        cluster,
    };

    ensure_image("tpa/debian:12");
    // A container of the same name that is not ours: that host fails, the others come up,
    // and the next provision finishes the job once the obstacle is gone.
    let (ok, _) = run(
        "docker",
        &["create", "--name", "achel", "tpa/debian:12", "true"],
    );
    assert!(ok, "could not create the obstacle container");
    let first = controller(&["provision", path]);
    run("docker", &["rm", "-f", "achel"]);
    assert!(
        !first.status.success(),
        "provision must fail while achel is taken"
    );
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("achel: a container named achel already exists"),
        "{stderr}"
    );
    assert_eq!(cluster_containers(cluster), ["chimay", "ulb", "vub"]);

    let second = controller(&["provision", path]);
    assert!(second.status.success());
    assert_eq!(cluster_containers(cluster), HOSTS);
    let key = dir.path().join(format!("id_{cluster}"));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let ssh_config = std::fs::read_to_string(dir.path().join("ssh_config")).unwrap();
    assert!(
        ssh_config.contains("StrictHostKeyChecking yes"),
        "{ssh_config}"
    );
    let known = std::fs::read_to_string(dir.path().join("tpa_known_hosts")).unwrap();
    assert_eq!(known.lines().count(), 4, "{known}");
    let inventory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("inventory.json")).unwrap())
            .unwrap();
    assert_eq!(inventory["hosts"].as_array().unwrap().len(), 4);

    let ssh_config_path = dir.path().join("ssh_config");
    for host in HOSTS {
        let (ok, out) = run(
            "ssh",
            &[
                "-F",
                ssh_config_path.to_str().unwrap(),
                "-o",
                "BatchMode=yes",
                host,
                "sudo -n true && hostname",
            ],
        );
        assert!(ok, "ssh to {host} with strict host-key checking failed");
        assert_eq!(out.trim(), host);
    }

    let ids_before = run(
        "docker",
        &["ps", "-q", "--filter", &format!("label=Cluster={cluster}")],
    )
    .1;
    let again = controller(&["provision", path]);
    assert!(again.status.success());
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("nothing to change"), "{stdout}");
    let ids_after = run(
        "docker",
        &["ps", "-q", "--filter", &format!("label=Cluster={cluster}")],
    )
    .1;
    assert_eq!(
        ids_before, ids_after,
        "re-provision must not recreate containers"
    );

    let gone = controller(&["deprovision", path]);
    assert!(gone.status.success());
    assert!(cluster_containers(cluster).is_empty());
    assert!(cluster_networks(cluster).is_empty());
    assert!(!dir.path().join("inventory.json").exists());
    assert!(dir.path().join("config.yml").exists());
}

#[test]
fn bad_config_creates_nothing() {
    let Some(_serial) = e2e_guard("bad_config_creates_nothing") else {
        return;
    };
    let cluster = "e2e-bad";
    let dir = seed_cluster(cluster);
    let config = std::fs::read_to_string(dir.path().join("config.yml")).unwrap();
    let config = config
        .replace("upstream: vub", "upstream: nowhere")
        .replace("node: 4", "nod: 4");
    std::fs::write(dir.path().join("config.yml"), config).unwrap();
    let out = controller(&["provision", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nowhere"), "{stderr}");
    assert!(stderr.contains("nod"), "{stderr}");
    assert!(cluster_containers(cluster).is_empty());
    assert!(cluster_networks(cluster).is_empty());
    assert!(!dir.path().join("inventory.json").exists());
}
