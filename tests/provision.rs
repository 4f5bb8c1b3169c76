//! Provision scenario: the seed's four hosts come up as containers that accept SSH with
//! strict host-key checking; provision is idempotent, finishes a half-done job, refuses a bad
//! config without creating anything, and deprovision leaves nothing behind. Two cluster
//! directories with one cluster_name, or one subnet, are told apart and never touch each other.

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
    // vub carries docker options: they must reach its container.
    let config_path = dir.path().join("config.yml");
    let config = std::fs::read_to_string(&config_path).unwrap().replace(
        "- Name: vub\n",
        "- Name: vub\n  volumes: [/opt/postgres, /sys/fs/cgroup:/sys/fs/cgroup:ro]\n  \
         memory: 1g\n  env: {TPA_E2E_MARK: vub}\n  published_ports: ['127.0.0.1::5432']\n",
    );
    std::fs::write(&config_path, config).unwrap();
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
    let ssh = |host: &str, command: &str| {
        let config = ssh_config_path.to_str().unwrap();
        run("ssh", &["-F", config, "-o", "BatchMode=yes", host, command])
    };
    for host in HOSTS {
        let (ok, out) = ssh(host, "sudo -n true && hostname");
        assert!(ok, "ssh to {host} with strict host-key checking failed");
        assert_eq!(out.trim(), host);
    }

    let inspect = |format: &str| run("docker", &["inspect", "-f", format, "vub"]).1;
    assert_eq!(
        inspect("{{.HostConfig.Memory}}").trim(),
        (1u64 << 30).to_string()
    );
    assert!(inspect("{{json .Config.Env}}").contains("\"TPA_E2E_MARK=vub\""));
    let mounts = inspect("{{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}");
    assert!(mounts.contains("volume:/opt/postgres"), "{mounts}");
    assert!(
        mounts.contains("bind:/sys/fs/cgroup"),
        "tpa's own cgroup mount stays: {mounts}"
    );
    // docs/platforms.md: data on volumes; vub's own `/opt/postgres` entry stands for tpa's.
    for (host, target) in [
        ("ulb", "/opt/postgres"),
        ("vub", "/opt/postgres"),
        ("achel", "/opt/postgres"),
        ("chimay", "/var/lib/barman"),
    ] {
        let (_, mounts) = run(
            "docker",
            &[
                "inspect",
                "-f",
                "{{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}",
                host,
            ],
        );
        let volume = format!("volume:{target} ");
        assert_eq!(mounts.matches(&volume).count(), 1, "{host}: {mounts}");
    }
    let ports = inspect("{{json .NetworkSettings.Ports}}");
    assert!(
        ports.contains("\"5432/tcp\":[{\"HostIp\":\"127.0.0.1\""),
        "{ports}"
    );

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

    // docs/config.md: a changed docker option applies once the container is made anew.
    let (removed, _) = run("docker", &["rm", "-f", "-v", "vub"]);
    assert!(removed);
    let remade = controller(&["provision", path]);
    assert!(
        remade.status.success(),
        "{}",
        String::from_utf8_lossy(&remade.stderr)
    );
    assert_eq!(cluster_containers(cluster), HOSTS);
    let (ok, out) = ssh("vub", "hostname");
    assert!(ok && out.trim() == "vub", "ssh to the remade vub: {out}");
    let volume = inspect(r#"{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}}{{end}}{{end}}"#);
    assert!(!volume.trim().is_empty(), "the remade vub has its volume");

    let gone = controller(&["deprovision", path]);
    assert!(gone.status.success());
    assert!(cluster_containers(cluster).is_empty());
    let (still_there, _) = run("docker", &["volume", "inspect", volume.trim()]);
    assert!(!still_there, "deprovision removes vub's anonymous volume");
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

/// Two cluster directories with the same cluster_name: the second provision names the
/// first directory and what to do, creates nothing, and its deprovision leaves the first
/// cluster alone. A declared subnet that another cluster's network holds is refused with
/// that network's name.
#[test]
fn same_cluster_name_in_two_directories_is_refused() {
    let Some(_serial) = e2e_guard("same_cluster_name_in_two_directories_is_refused") else {
        return;
    };
    ensure_image("tpa/debian:12");
    let cluster = "e2e-twin";
    let first = primary_cluster(cluster, "e2e-twin-a", "tpa/debian:12", "15");
    let second = primary_cluster(cluster, "e2e-twin-b", "tpa/debian:12", "15");
    let _cleanup_second = Cleanup {
        dir: second.path(),
        cluster,
    };
    let _cleanup_first = Cleanup {
        dir: first.path(),
        cluster,
    };
    let first_path = std::fs::canonicalize(first.path()).unwrap();
    let first_path = first_path.to_str().unwrap();

    assert!(
        controller(&["provision", first.path().to_str().unwrap()])
            .status
            .success()
    );
    let out = controller(&["provision", second.path().to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "the second directory must be refused"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cluster_name `{cluster}` is already used by the cluster in {first_path}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("tpa-controller deprovision {first_path}")),
        "{stderr}"
    );
    assert!(stderr.contains("choose another cluster_name"), "{stderr}");
    assert!(!stderr.contains("Address already in use"), "{stderr}");
    assert_eq!(cluster_containers(cluster), ["e2e-twin-a"]);
    assert!(!second.path().join("inventory.json").exists());

    // Deprovisioning the second directory must not touch the first one's cluster.
    let gone = controller(&["deprovision", second.path().to_str().unwrap()]);
    assert!(gone.status.success());
    assert!(
        stdout(&gone).contains("left container e2e-twin-a"),
        "{}",
        stdout(&gone)
    );
    assert_eq!(cluster_containers(cluster), ["e2e-twin-a"]);
    assert_eq!(cluster_networks(cluster), [cluster]);

    // Another cluster asking for the first one's subnet.
    let inventory: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(first.path().join("inventory.json")).unwrap(),
    )
    .unwrap();
    let subnet = inventory["network"]["subnet"].as_str().unwrap().to_string();
    let clash = primary_cluster("e2e-clash", "e2e-clash-a", "tpa/debian:12", "15");
    let _cleanup_clash = Cleanup {
        dir: clash.path(),
        cluster: "e2e-clash",
    };
    let config_path = clash.path().join("config.yml");
    let config = std::fs::read_to_string(&config_path).unwrap().replace(
        "cluster_tags: {}\n",
        &format!(
            "cluster_tags: {{}}\ndocker_networks:\n- name: e2e-clash\n  ipam_config:\n  - subnet: {subnet}\n"
        ),
    );
    std::fs::write(&config_path, config).unwrap();
    let out = controller(&["provision", clash.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "subnet {subnet} (docker_networks in config.yml) overlaps Docker network {cluster}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains(first_path), "{stderr}");
    assert!(cluster_containers("e2e-clash").is_empty());
    assert!(cluster_networks("e2e-clash").is_empty());

    assert!(
        controller(&["deprovision", first.path().to_str().unwrap()])
            .status
            .success()
    );
    assert!(cluster_containers(cluster).is_empty());
    assert!(cluster_networks(cluster).is_empty());
}
