//! Bare platform scenario: machines tpa did not create. The test itself starts two Debian 12
//! containers (systemd, sshd) on an internal Docker network (no route anywhere, so no package
//! archive), adds a sudo user with the cluster key, and lists their host keys in the cluster's
//! known_hosts, as an operator would. Then: a host whose key does not match is refused before
//! anything is written or touched; provision checks SSH strictly; deploy (primary + replica)
//! gets its packages shipped through the agents; a re-deploy changes and ships nothing;
//! `deprovision --uninstall` leaves no agent and no shipped package, and the machines running.
//! Then `manage_ssh_hostkeys: true` without known_hosts: trust on first use, tpa's key installed
//! and pinned, a changed key refused until the operator lists it, the machines' own keys
//! restored by `deprovision --uninstall` (about 10 s more).
//!
//! The primary's machine has a second disk (a loop device on the test machine, given to the
//! container as /dev/vdb with CAP_SYS_ADMIN to mount it) named in config.yml as its
//! `postgres_data` volume: deploy makes its filesystem, mounts it at /opt/postgres and lists
//! it in /etc/fstab, and the data directory lands on it (mkfs of 512 MiB and a mount: no
//! measurable cost).
//!
//! Costs 54 s on a quiet machine and about 115 s on a loaded one, with the image and the
//! package cache warm (most of it the first deploy; shipping 77 MB to each host takes under
//! 4 s).

use std::path::Path;

use tpa_e2e::*;

const CLUSTER: &str = "e2e-bare";
const NETWORK: &str = "tpa-e2e-bare";
const HOSTS: [&str; 2] = ["bare-one", "bare-two"];
const USER: &str = "opsadmin";

/// The primary machine's second disk, as the machine sees it.
const DISK: &str = "/dev/vdb";

/// A blank 512 MiB disk: a sparse file behind a loop device, detached and removed at the end.
struct Disk {
    _file: tempfile::TempPath,
    loop_device: String,
}

impl Disk {
    fn new() -> Disk {
        let file = tempfile::Builder::new()
            .prefix("tpa-e2e-disk-")
            .tempfile()
            .unwrap()
            .into_temp_path();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        let (ok, out) = run("losetup", &["-f", "--show", file.to_str().unwrap()]);
        assert!(
            ok,
            "losetup (the bare test needs root for a loop device): {out}"
        );
        Disk {
            _file: file,
            loop_device: out.trim().to_string(),
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // Before the file goes (the field drops after this).
        let _ = run("losetup", &["-d", &self.loop_device]);
    }
}

/// Removes the test's own containers and network, whatever happened.
struct Machines;

impl Drop for Machines {
    fn drop(&mut self) {
        for host in HOSTS {
            let _ = run("docker", &["rm", "-f", "-v", host]);
        }
        let _ = run("docker", &["network", "rm", NETWORK]);
    }
}

fn docker(args: &[&str]) -> String {
    let (ok, out) = run("docker", args);
    assert!(ok, "docker {} failed", args.join(" "));
    out.trim().to_string()
}

fn exec(host: &str, script: &str) -> (bool, String) {
    run("docker", &["exec", host, "sh", "-c", script])
}

/// Starts a machine the way a hypervisor would: systemd as PID 1, sshd, nothing of tpa's;
/// `disk` is attached as [`DISK`].
fn start_machine(host: &str, disk: Option<&Disk>) -> String {
    let device = disk.map(|d| format!("{}:{DISK}", d.loop_device));
    let mut extra: Vec<&str> = Vec::new();
    if let Some(device) = &device {
        extra.extend(["--device", device, "--cap-add", "SYS_ADMIN"]);
    }
    docker(
        &[
            &["run", "-d"][..],
            &extra,
            &[
                "--name",
                host,
                "--hostname",
                host,
                "--network",
                NETWORK,
                "--tmpfs",
                "/run:rw,exec,nosuid,nodev,mode=755",
                "--tmpfs",
                "/run/lock",
                "--tmpfs",
                "/tmp:rw,exec,nosuid,nodev",
                "--cgroupns",
                "host",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--stop-signal",
                "SIGRTMIN+3",
                "-e",
                "container=docker",
                "tpa/debian:12",
            ],
        ]
        .concat(),
    );
    docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        host,
    ])
}

/// The operator's preparation: a login user with the cluster key and passwordless sudo.
fn prepare(host: &str, public_key: &str) -> String {
    let script = format!(
        "set -e; useradd -m -s /bin/bash {USER}; install -d -m 700 -o {USER} /home/{USER}/.ssh; \
         echo '{}' > /home/{USER}/.ssh/authorized_keys; chown {USER} /home/{USER}/.ssh/authorized_keys; \
         echo '{USER} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{USER}; \
         i=0; until [ -s /etc/ssh/ssh_host_ed25519_key.pub ] && systemctl is-active -q ssh; do \
           i=$((i+1)); [ $i -gt 300 ] && exit 1; sleep 0.1; done; \
         cat /etc/ssh/ssh_host_ed25519_key.pub",
        public_key.trim()
    );
    let (ok, key) = exec(host, &script);
    assert!(ok, "preparing {host} failed");
    key.trim().to_string()
}

fn config(addresses: &[String]) -> String {
    format!(
        "---
architecture: M1
cluster_name: {CLUSTER}
cluster_tags: {{}}

cluster_vars:
  failover_manager: repmgr
  postgres_flavour: postgresql
  postgres_version: '15'
  preferred_python_version: python3
  use_local_repo_only: true

locations:
- Name: main

instance_defaults:
  platform: bare
  vars:
    ansible_user: {USER}

instances:
- Name: {one}
  node: 1
  location: main
  ip_address: {a}
  role: [primary]
  volumes:
  - device_name: {DISK}
    vars:
      volume_for: postgres_data
      fsopts: -L pgdata
- Name: {two}
  node: 2
  location: main
  ip_address: {b}
  role: [replica]
  upstream: {one}
",
        one = HOSTS[0],
        two = HOSTS[1],
        a = addresses[0],
        b = addresses[1],
    )
}

fn agent_files(host: &str) -> String {
    exec(
        host,
        "ls -d /usr/local/bin/tpa-agent /etc/tpa-agent /var/lib/tpa-agent /var/opt/tpa/local-repo \
         /etc/systemd/system/tpa-agent.service 2>/dev/null; systemctl is-active tpa-agent",
    )
    .1
}

#[test]
fn bare_machines_are_checked_strictly_deployed_with_shipped_packages_and_uninstalled() {
    let Some(_guard) = e2e_guard("bare") else {
        return;
    };
    ensure_image("tpa/debian:12");
    let started = std::time::Instant::now();
    let disk = Disk::new();
    let _machines = Machines;
    for host in HOSTS {
        let _ = run("docker", &["rm", "-f", "-v", host]);
    }
    let _ = run("docker", &["network", "rm", NETWORK]);
    // --internal: no route out, so the hosts reach no package archive, like air-gapped machines.
    docker(&["network", "create", "--internal", NETWORK]);
    let addresses: Vec<String> = HOSTS
        .iter()
        .enumerate()
        .map(|(i, h)| start_machine(h, (i == 0).then_some(&disk)))
        .collect();

    let dir = tempfile::Builder::new()
        .prefix("tpa-e2e-")
        .tempdir()
        .unwrap();
    let path = dir.path().to_str().unwrap();
    let _cleanup = Cleanup {
        dir: dir.path(),
        cluster: CLUSTER,
    };
    std::fs::write(dir.path().join("config.yml"), config(&addresses)).unwrap();
    let key = dir.path().join(format!("id_{CLUSTER}"));
    let (ok, _) = run(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
    );
    assert!(ok);
    let public_key = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let host_keys: Vec<String> = HOSTS.iter().map(|h| prepare(h, &public_key)).collect();
    let known_hosts = |second: &str| {
        format!(
            "{} {}\n{} {second}\n",
            addresses[0], host_keys[0], addresses[1]
        )
    };

    // A host whose key does not match: refused, nothing written, nothing touched.
    let other = dir.path().join("other");
    assert!(
        run(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                other.to_str().unwrap()
            ]
        )
        .0
    );
    let wrong = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let wrong: Vec<&str> = wrong.split_whitespace().take(2).collect();
    std::fs::write(
        dir.path().join("known_hosts"),
        known_hosts(&wrong.join(" ")),
    )
    .unwrap();
    let refused = controller(&["provision", path]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!(
            "{}: the host at {} presents an SSH host key that does not match",
            HOSTS[1], addresses[1]
        )),
        "{err}"
    );
    assert!(
        err.contains("nothing was written and no host was touched"),
        "{err}"
    );
    for generated in ["inventory.json", "ssh_config", "tpa_known_hosts"] {
        assert!(
            !dir.path().join(generated).exists(),
            "{generated} written by a refused provision"
        );
    }

    std::fs::write(dir.path().join("known_hosts"), known_hosts(&host_keys[1])).unwrap();
    let provisioned = controller(&["provision", path]);
    assert!(provisioned.status.success(), "provision failed");
    let inventory = std::fs::read_to_string(dir.path().join("inventory.json")).unwrap();
    assert!(inventory.contains("\"platform\": \"bare\""), "{inventory}");
    let ssh_config = dir.path().join("ssh_config").display().to_string();
    let (ok, who) = run(
        "ssh",
        &["-F", &ssh_config, "-o", "BatchMode=yes", HOSTS[1], "id -un"],
    );
    assert!(
        ok && who.trim() == USER,
        "strict SSH with the generated ssh_config: {who}"
    );

    assert!(controller(&["download-packages", path]).status.success());
    let first = controller(&["deploy", path]);
    assert!(first.status.success(), "first deploy failed");
    for host in HOSTS {
        assert!(
            stdout(&first).contains(&format!("[{host}] local-repo: ")),
            "packages were not shipped to {host}: {}",
            stdout(&first)
        );
    }
    let (ok, recovery) = exec(
        HOSTS[1],
        "sudo -iu postgres psql -XAtc 'select pg_is_in_recovery()'",
    );
    assert!(
        ok && recovery.trim() == "t",
        "{} is not a streaming replica: {recovery}",
        HOSTS[1]
    );
    // The primary's data directory is on its own disk, made, mounted and in fstab by deploy.
    let (ok, mounted) = exec(
        HOSTS[0],
        "findmnt -n -o SOURCE,FSTYPE,OPTIONS -T /opt/postgres/data; \
         blkid -p -s LABEL -o value /dev/vdb; grep ' /opt/postgres ' /etc/fstab; \
         stat -c %U /opt/postgres/data/PG_VERSION",
    );
    let lines: Vec<&str> = mounted.lines().map(str::trim).collect();
    assert!(
        ok && lines.len() == 4
            && lines[0].starts_with("/dev/vdb ext4 ")
            && lines[0].contains("noatime")
            && lines[1] == "pgdata"
            && lines[2] == "/dev/vdb /opt/postgres ext4 defaults,noatime 0 2"
            && lines[3] == "postgres",
        "the data directory is not on the deployed volume: {mounted}"
    );
    let (ok, source) = exec(HOSTS[0], "cat /etc/apt/sources.list.d/tpa-local-repo.list");
    assert!(
        ok && source.contains("file:/var/opt/tpa/local-repo ./"),
        "{source}"
    );

    let again = controller(&["deploy", path]);
    assert!(again.status.success(), "re-deploy failed");
    assert!(
        stdout(&again).contains(": 0 changed,"),
        "a re-deploy changed something"
    );
    assert!(
        !stdout(&again).contains("local-repo: "),
        "a re-deploy shipped packages"
    );

    let gone = controller(&["deprovision", path, "--uninstall"]);
    assert!(gone.status.success(), "deprovision --uninstall failed");
    for host in HOSTS {
        let left = agent_files(host);
        assert_eq!(left.trim(), "inactive", "{host} kept tpa's files: {left}");
        assert_eq!(
            docker(&["inspect", "-f", "{{.State.Running}}", host]),
            "true",
            "{host} was removed"
        );
    }
    assert!(!Path::new(&dir.path().join("inventory.json")).exists());
    assert!(
        dir.path().join("known_hosts").exists(),
        "the operator's known_hosts stays"
    );

    // manage_ssh_hostkeys, with no operator known_hosts: provision trusts each new host's key
    // on first use and says so with its fingerprint, installs tpa's generated key, and from
    // then on trusts only that one.
    std::fs::remove_file(dir.path().join("known_hosts")).unwrap();
    // deprovision kept the cluster key, which the machines still authorise.
    assert!(
        key.exists() && key.with_extension("pub").exists(),
        "deprovision removed the cluster key of machines that stay"
    );
    assert!(stdout(&gone).contains("kept "), "{}", stdout(&gone));
    std::fs::write(
        dir.path().join("config.yml"),
        config(&addresses).replace(
            "  use_local_repo_only: true\n",
            "  use_local_repo_only: true\n  manage_ssh_hostkeys: true\n",
        ),
    )
    .unwrap();
    let key_of = |host: &str| {
        let (ok, key) = exec(host, "cut -d ' ' -f 1-2 /etc/ssh/ssh_host_ed25519_key.pub");
        assert!(ok, "{host}: no ed25519 host key");
        key.trim().to_string()
    };
    let own_keys: Vec<String> = host_keys
        .iter()
        .map(|k| k.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    let managed = controller(&["provision", path]);
    assert!(
        managed.status.success(),
        "provision with manage_ssh_hostkeys failed: {}",
        String::from_utf8_lossy(&managed.stderr)
    );
    let pinned = std::fs::read_to_string(dir.path().join("tpa_known_hosts")).unwrap();
    for (i, host) in HOSTS.iter().enumerate() {
        assert!(
            stdout(&managed).contains(&format!(
                "host {host} {}: trusted its SSH host key on first use (SHA256:",
                addresses[i]
            )),
            "{}",
            stdout(&managed)
        );
        let now = key_of(host);
        assert_ne!(now, own_keys[i], "{host} kept its own key");
        assert!(
            pinned.contains(&now),
            "tpa_known_hosts does not pin {host}: {pinned}"
        );
        let (ok, _) = run(
            "ssh",
            &["-F", &ssh_config, "-o", "BatchMode=yes", host, "true"],
        );
        assert!(ok, "strict SSH to {host} through tpa's key");
    }
    let again = controller(&["provision", path]);
    assert!(again.status.success(), "re-provision failed");
    assert!(!stdout(&again).contains("first use"), "{}", stdout(&again));

    // A recorded host that presents another key is refused; once the operator lists that key
    // (a reinstalled machine), provision puts tpa's key back.
    let (ok, replaced) = exec(
        HOSTS[1],
        "set -e; rm -f /tmp/k /tmp/k.pub; ssh-keygen -q -t ed25519 -N '' -f /tmp/k; \
         mv /tmp/k /etc/ssh/ssh_host_ed25519_key; mv /tmp/k.pub /etc/ssh/ssh_host_ed25519_key.pub; \
         systemctl reload ssh; cut -d ' ' -f 1-2 /etc/ssh/ssh_host_ed25519_key.pub",
    );
    assert!(ok, "replacing {}'s key", HOSTS[1]);
    // sshd re-executes itself on reload and refuses connections for a moment: wait until it
    // serves the new key.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !run("ssh-keyscan", &["-t", "ed25519", &addresses[1]])
        .1
        .contains(replaced.trim().split(' ').nth(1).unwrap_or("-"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{} does not serve its new key",
            HOSTS[1]
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let refused = controller(&["provision", path]);
    assert!(!refused.status.success(), "a changed key was accepted");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!(
            "{}: the host at {} no longer presents the SSH host key tpa installed",
            HOSTS[1], addresses[1]
        )),
        "{err}"
    );
    std::fs::write(
        dir.path().join("known_hosts"),
        format!("{} {}\n", addresses[1], replaced.trim()),
    )
    .unwrap();
    let vouched = controller(&["provision", path]);
    assert!(
        vouched.status.success(),
        "provision after listing the new key"
    );
    assert!(
        stdout(&vouched).contains(&format!(
            "host {} {}: now presents tpa's SSH host key",
            HOSTS[1], addresses[1]
        )),
        "{}",
        stdout(&vouched)
    );
    assert!(pinned.contains(&key_of(HOSTS[1])));

    // deprovision --uninstall puts each machine's own key back.
    let gone = controller(&["deprovision", path, "--uninstall"]);
    assert!(gone.status.success(), "deprovision --uninstall failed");
    for (i, host) in HOSTS.iter().enumerate() {
        assert_eq!(
            key_of(host),
            own_keys[i],
            "{host}'s own key was not restored"
        );
    }
    eprintln!("bare scenario: {:.0} s", started.elapsed().as_secs_f64());
}
