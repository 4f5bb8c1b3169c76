//! The aws platform against moto's EC2 (no Docker, no real AWS): `configure --platform aws`
//! → provision (VPC, subnet, gateway, route table, security group, key pair, instances, tags)
//! → inventory.json, ssh_config and known hosts from the host keys sent in user data →
//! re-provision changes nothing → a same-named cluster in another directory, in a VPC that
//! existed before, is left alone by the first one's deprovision, and its own deprovision
//! leaves that VPC.
//!
//! moto instances run nothing, so deploy is not tested here (bare's tests cover that path).
//! Needs moto (`scripts/install-deps --tests` installs it in /opt/tpa/moto). Costs about 10 s.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tpa_e2e::*;

const REGION: &str = "eu-west-1";

/// The moto server, killed however the test ends.
struct Moto {
    child: Child,
    endpoint: String,
    python: PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `TPA_MOTO_VENV`, else /opt/tpa/moto (where install-deps puts it).
fn moto_venv() -> PathBuf {
    let venv = std::env::var_os("TPA_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/tpa/moto"));
    assert!(
        venv.join("bin/moto_server").is_file(),
        "moto is not installed in {}: run scripts/install-deps --tests",
        venv.display()
    );
    venv
}

fn start_moto() -> Moto {
    let venv = moto_venv();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(venv.join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env(
            "MOTO_AMIS_PATH",
            workspace_root().join("tests/fixtures/aws/amis.json"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        python: venv.join("bin/python"),
    };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    moto
}

impl Moto {
    fn ec2(&self, args: &[&str]) -> Value {
        let out = Command::new(&self.python)
            .arg(workspace_root().join("tests/fixtures/aws/ec2.py"))
            .args([self.endpoint.as_str(), REGION])
            .args(args)
            .output()
            .expect("run ec2.py");
        assert!(
            out.status.success(),
            "ec2.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ec2.py prints JSON")
    }

    /// `tpa-controller <args>` against moto, with its own secrets key directory.
    fn controller(&self, keys: &Path, args: &[&str]) -> Output {
        controller_with(args, |command| {
            command
                .env("AWS_ENDPOINT_URL", &self.endpoint)
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env_remove("AWS_PROFILE")
                .env("XDG_CONFIG_HOME", keys);
        })
    }
}

fn tag<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["tags"][key].as_str()
}

fn items<'a>(state: &'a Value, kind: &str) -> Vec<&'a Value> {
    state[kind].as_array().expect(kind).iter().collect()
}

/// Objects of `kind` tagged with `owner` (and instances not terminated).
fn owned<'a>(state: &'a Value, kind: &str, owner: &str) -> Vec<&'a Value> {
    items(state, kind)
        .into_iter()
        .filter(|o| tag(o, "tpa:owner") == Some(owner))
        .filter(|o| o["state"].as_str() != Some("terminated"))
        .collect()
}

#[test]
fn aws_provision_against_moto_is_tagged_idempotent_and_removed_exactly() {
    // Plain `cargo test` runs it where moto is installed; the full suite (TPA_E2E=1) always.
    if std::env::var("TPA_E2E").as_deref() != Ok("1")
        && std::env::var_os("TPA_MOTO_VENV").is_none()
        && !Path::new("/opt/tpa/moto/bin/moto_server").is_file()
    {
        eprintln!("skipping: moto is not installed (scripts/install-deps --tests installs it)");
        return;
    }
    let started = Instant::now();
    let moto = start_moto();
    let keys = tempfile::tempdir().expect("tempdir");
    let root = tempfile::Builder::new()
        .prefix("tpa-aws-")
        .tempdir()
        .expect("tempdir");
    let a = root.path().join("a/cloud");
    let b = root.path().join("b/cloud");
    std::fs::create_dir_all(a.parent().unwrap()).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let (a_path, b_path) = (a.display().to_string(), b.display().to_string());

    // A VPC that exists before any cluster: B uses it, nobody removes it.
    let shared = moto.ec2(&["create-vpc", "Shared", "10.50.0.0/16"])["id"]
        .as_str()
        .unwrap()
        .to_string();

    let out = moto.controller(
        keys.path(),
        &[
            "configure",
            &a_path,
            "--architecture",
            "M1",
            "--postgresql",
            "15",
            "--platform",
            "aws",
            "--failover-manager",
            "repmgr",
            "--region",
            REGION,
            "--no-git",
        ],
    );
    assert!(out.status.success(), "configure failed");
    let out = moto.controller(keys.path(), &["provision", &a_path]);
    assert!(out.status.success(), "provision failed");

    let inventory: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("inventory.json")).unwrap()).unwrap();
    assert_eq!(inventory["platform"], "aws");
    let hosts = inventory["hosts"].as_array().unwrap();
    assert_eq!(
        hosts.len(),
        3,
        "configure's default M1: two data nodes and Barman"
    );

    let state = moto.ec2(&["dump"]);
    let first = items(&state, "instances")
        .into_iter()
        .find(|i| i["id"] == hosts[0]["platform_id"])
        .expect("the inventory's first instance exists");
    let owner = tag(first, "tpa:owner").expect("owner tag").to_string();

    // The network, created and tagged as this directory's cluster.
    let vpcs = owned(&state, "vpcs", &owner);
    assert_eq!(vpcs.len(), 1, "{vpcs:?}");
    let vpc = vpcs[0];
    assert_eq!(vpc["cidr"], "10.33.0.0/16");
    assert_eq!(tag(vpc, "Name"), Some("Test"));
    assert_eq!(tag(vpc, "Cluster"), Some("cloud"));
    let subnets = owned(&state, "subnets", &owner);
    assert_eq!(subnets.len(), 1);
    assert_eq!(subnets[0]["cidr"], "10.33.0.0/28");
    assert_eq!(subnets[0]["vpc"], vpc["id"]);
    let igws = owned(&state, "internet_gateways", &owner);
    assert_eq!(igws.len(), 1);
    assert_eq!(igws[0]["vpcs"], serde_json::json!([vpc["id"]]));
    let tables = owned(&state, "route_tables", &owner);
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0]["subnets"], serde_json::json!([subnets[0]["id"]]));
    let groups = owned(&state, "security_groups", &owner);
    assert_eq!(groups.len(), 1);
    let rules = groups[0]["rules"].as_array().unwrap();
    for rule in ["tcp 0.0.0.0/0 22-22", "tcp 10.33.0.0/28 0-65535"] {
        assert!(rules.iter().any(|r| r == rule), "{rule} in {rules:?}");
    }
    let key_pairs = owned(&state, "key_pairs", &owner);
    assert_eq!(key_pairs.len(), 1);
    let key_name = key_pairs[0]["name"].as_str().unwrap();
    assert!(key_name.starts_with("tpa_cloud_"), "{key_name}");

    // The instances, with TPA's tags, and host keys that match what user data carried.
    let known_hosts = std::fs::read_to_string(a.join("tpa_known_hosts")).unwrap();
    let ssh_config = std::fs::read_to_string(a.join("ssh_config")).unwrap();
    let config = std::fs::read_to_string(a.join("config.yml")).unwrap();
    let instances = owned(&state, "instances", &owner);
    assert_eq!(instances.len(), 3);
    for host in hosts {
        let name = host["name"].as_str().unwrap();
        let i = instances
            .iter()
            .find(|i| i["id"] == host["platform_id"])
            .unwrap_or_else(|| panic!("instance of {name}"));
        assert_eq!(tag(i, "Name"), Some(name));
        assert_eq!(tag(i, "Cluster"), Some("cloud"));
        assert_eq!(tag(i, "node"), Some(host["node"].to_string().as_str()));
        assert_eq!(i["state"], "running");
        assert_eq!(i["type"], "t3.micro");
        assert_eq!(
            i["image"], "ami-0d3b1e7a5c6a12f02",
            "the newest Debian 12 AMI"
        );
        assert_eq!(i["subnet"], subnets[0]["id"]);
        assert_eq!(i["key_name"], key_name);
        // moto lists no SecurityGroups on an instance launched with a network interface.
        assert!(
            i["devices"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d == "/dev/sdf"),
            "the data volume of config.yml: {i}"
        );
        // Deploy finds the volume by its id (Nitro renames /dev/sdf): provision records it.
        let volume = &i["volumes"]["/dev/sdf"];
        assert!(
            volume.as_str().is_some_and(|v| v.starts_with("vol-")),
            "{i}"
        );
        assert_eq!(&host["volumes"]["/dev/sdf"], volume, "{host}");
        assert_eq!(host["address"], i["public_ip"], "reachability public");
        assert_eq!(host["ssh_user"], "admin");
        assert!(
            ssh_config.contains(&format!(
                "Host {name}\n    HostName {}\n    User admin\n",
                host["address"].as_str().unwrap()
            )),
            "{ssh_config}"
        );
        let user_data = i["user_data"].as_str().expect("user data");
        let boot: Value =
            serde_json::from_str(user_data.strip_prefix("#cloud-config\n").unwrap()).unwrap();
        let public = boot["ssh_keys"]["ed25519_public"].as_str().unwrap();
        assert!(public.starts_with("ssh-ed25519 "));
        assert_eq!(boot["hostname"], name);
        let line = format!("{name},{} {public}", host["address"].as_str().unwrap());
        assert!(known_hosts.contains(&line), "{line} in {known_hosts}");
        assert_eq!(host["host_key"], public);
        assert!(!user_data.contains("PRIVATE KEY-----\\n\\n"), "one key");
        assert!(config.contains(&format!("- Name: {name}")));
    }
    let secrets = std::fs::read(a.join("secrets.enc")).unwrap();
    assert!(
        !String::from_utf8_lossy(&secrets).contains("OPENSSH PRIVATE KEY"),
        "host keys are stored encrypted"
    );

    // Re-provision: nothing changes.
    let out = moto.controller(keys.path(), &["provision", &a_path]);
    assert!(out.status.success(), "re-provision failed");
    assert!(
        stdout(&out).contains("nothing to change"),
        "re-provision must be a no-op"
    );
    let again = moto.ec2(&["dump"]);
    for kind in [
        "vpcs",
        "subnets",
        "security_groups",
        "key_pairs",
        "instances",
    ] {
        assert_eq!(
            owned(&again, kind, &owner).len(),
            owned(&state, kind, &owner).len(),
            "{kind} after re-provision"
        );
    }

    // The same cluster_name in another directory, in the pre-existing VPC.
    std::fs::write(
        b.join("config.yml"),
        format!(
            "architecture: M1\ncluster_name: cloud\ncluster_tags: {{Owner: bench}}\n\
             ec2_vpc:\n  {REGION}:\n    Name: Shared\n\
             cluster_vars:\n  postgres_version: '15'\n  failover_manager: repmgr\n\
             instances:\n- Name: solo\n  node: 1\n  platform: aws\n  region: {REGION}\n\
             \x20 subnet: 10.50.1.0/28\n  type: t3.small\n  role: [primary]\n\
             \x20 vars: {{ansible_user: admin}}\n"
        ),
    )
    .unwrap();
    let out = moto.controller(keys.path(), &["provision", &b_path]);
    assert!(out.status.success(), "provision of b failed");
    let state = moto.ec2(&["dump"]);
    let b_inventory: Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("inventory.json")).unwrap()).unwrap();
    let solo = items(&state, "instances")
        .into_iter()
        .find(|i| i["id"] == b_inventory["hosts"][0]["platform_id"])
        .expect("b's instance");
    let b_owner = tag(solo, "tpa:owner").unwrap().to_string();
    assert_ne!(b_owner, owner, "another directory, another owner");
    assert_eq!(tag(solo, "Owner"), Some("bench"), "cluster_tags");
    assert!(
        owned(&state, "vpcs", &b_owner).is_empty(),
        "Shared is used, not created"
    );
    assert_eq!(
        owned(&state, "subnets", &b_owner)[0]["vpc"],
        shared.as_str()
    );

    // Deprovision a: everything of a goes, b and the shared VPC stay.
    let out = moto.controller(keys.path(), &["deprovision", &a_path]);
    assert!(out.status.success(), "deprovision of a failed");
    assert!(
        stdout(&out).contains("left instance solo"),
        "b's host is reported as kept"
    );
    let state = moto.ec2(&["dump"]);
    for kind in [
        "vpcs",
        "subnets",
        "security_groups",
        "key_pairs",
        "instances",
        "internet_gateways",
        "route_tables",
    ] {
        assert!(
            owned(&state, kind, &owner).is_empty(),
            "{kind} of a left: {state}"
        );
    }
    assert_eq!(
        owned(&state, "instances", &b_owner).len(),
        1,
        "b's instance stays"
    );
    assert!(!a.join("inventory.json").exists());

    // Deprovision b: its objects go, the VPC that existed before stays.
    let out = moto.controller(keys.path(), &["deprovision", &b_path]);
    assert!(out.status.success(), "deprovision of b failed");
    let state = moto.ec2(&["dump"]);
    let tagged: Vec<&Value> = [
        "vpcs",
        "subnets",
        "security_groups",
        "key_pairs",
        "internet_gateways",
        "route_tables",
    ]
    .iter()
    .flat_map(|k| items(&state, k))
    .chain(
        items(&state, "instances")
            .into_iter()
            .filter(|i| i["state"] != "terminated"),
    )
    .filter(|o| tag(o, "Cluster") == Some("cloud"))
    .collect();
    assert!(
        tagged.is_empty(),
        "left tagged with the cluster: {tagged:?}"
    );
    assert!(
        items(&state, "vpcs")
            .iter()
            .any(|v| v["id"] == shared.as_str()),
        "the pre-existing VPC stays"
    );
    eprintln!("aws test took {:.1}s", started.elapsed().as_secs_f64());
}
