//! Barman's SSH trust and the archive (issue 9): ulb (primary, `backup: chimay`), vub (its
//! replica) and chimay (Barman) deploy; the barman and postgres users trust each other with
//! the cluster's generated ed25519 keys and pinned host keys only (an unknown host is refused,
//! never prompted); every Postgres host's `restore_command` is `barman-wal-restore` against
//! chimay, and the replica fetches an archived segment from Barman with it as postgres; the
//! private keys appear in no output and no plaintext file of the cluster directory; a no-op
//! re-deploy changes nothing.
//!
//! Costs one three-host deploy (repmgr, one clone, Barman's first backup) and a no-op
//! re-deploy. Measured 2026-11-27 on the 2-core machine under a load average of about 7:
//! 560 s for the whole test (download-packages 21 s, first deploy 240 s of which apt 100-121
//! s, no-op re-deploy about 16 s).

use std::time::Instant;

use tpa_e2e::*;

const CONFIG: &str = "---
architecture: M1
cluster_name: e2e-restore
cluster_vars:
  failover_manager: repmgr
  postgres_version: '15'
  use_local_repo_only: true
locations:
- Name: brussels
- Name: antwerp
instance_defaults:
  image: tpa/debian
  platform: docker
  vars:
    ansible_user: root
instances:
- Name: ulb
  node: 1
  location: brussels
  role: [primary]
  backup: chimay
- Name: vub
  node: 2
  location: brussels
  role: [replica]
  upstream: ulb
- Name: chimay
  node: 4
  location: antwerp
  role: [barman]
";

#[test]
fn barman_ssh_trust_and_archive() {
    let Some(_serial) = e2e_guard("barman_ssh_trust_and_archive") else {
        return;
    };
    ensure_image("tpa/debian:12");
    let cluster = "e2e-restore";
    let dir = tempfile::Builder::new()
        .prefix("tpa-e2e-")
        .tempdir()
        .expect("tempdir");
    std::fs::write(dir.path().join("config.yml"), CONFIG).expect("config");
    let _cleanup = Cleanup {
        dir: dir.path(),
        cluster,
    };
    let path = dir.path().to_str().expect("UTF-8 temp path");
    let ssh_config = dir.path().join("ssh_config").display().to_string();
    let ssh_config = ssh_config.as_str();

    assert!(controller(&["download-packages", path]).status.success());
    let started = Instant::now();
    let first = controller(&["deploy", path]);
    assert!(first.status.success(), "deploy failed");
    eprintln!("deploy: {:.1}s", started.elapsed().as_secs_f64());
    let first_out = format!(
        "{}{}",
        stdout(&first),
        String::from_utf8_lossy(&first.stderr)
    );
    let chimay = host_address(dir.path(), "chimay");
    let ulb = host_address(dir.path(), "ulb");

    // Keys in place, private ones 0600 and owned by their user.
    for (host, file) in [
        ("ulb", "/var/lib/postgresql/.ssh/id_ed25519"),
        ("vub", "/var/lib/postgresql/.ssh/id_ed25519"),
        ("chimay", "/var/lib/barman/.ssh/id_ed25519"),
        ("ulb", "/var/lib/postgresql/.ssh/authorized_keys"),
        ("chimay", "/var/lib/barman/.ssh/authorized_keys"),
    ] {
        let (ok, mode) = ssh_with_stdin(ssh_config, host, &format!("stat -c '%U %a' {file}"), "");
        let user = if host == "chimay" {
            "barman"
        } else {
            "postgres"
        };
        assert!(
            ok && mode.trim() == format!("{user} 600"),
            "{host}:{file}: {mode}"
        );
    }
    // The pinned host key is the one provision recorded for ulb.
    let inventory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("inventory.json")).unwrap())
            .unwrap();
    let ulb_key = inventory["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "ulb")
        .and_then(|h| h["host_key"].as_str())
        .expect("ulb's host key in inventory.json")
        .trim()
        .to_string();
    let (_, known) = ssh_with_stdin(
        ssh_config,
        "chimay",
        "cat /var/lib/barman/.ssh/known_hosts",
        "",
    );
    assert!(known.contains(&format!("ulb,{ulb} {ulb_key}")), "{known}");
    let (_, lax) = ssh_with_stdin(
        ssh_config,
        "chimay",
        "grep -ril 'StrictHostKeyChecking *no' /var/lib/barman/.ssh /etc/ssh || true",
        "",
    );
    assert_eq!(lax.trim(), "", "no host key checking switched off");

    // Trust both ways, as each user, with pinned keys.
    let (ok, out) = ssh_with_stdin(
        ssh_config,
        "chimay",
        &format!("runuser -u barman -- ssh postgres@{ulb} id -un"),
        "",
    );
    assert!(
        ok && out.trim() == "postgres",
        "barman -> postgres@ulb: {out}"
    );
    let (ok, out) = ssh_with_stdin(
        ssh_config,
        "vub",
        &format!("runuser -u postgres -- ssh barman@{chimay} id -un"),
        "",
    );
    assert!(
        ok && out.trim() == "barman",
        "postgres@vub -> barman: {out}"
    );
    // `restrict` and `from=` the peers' addresses.
    let (_, admitted) = ssh_with_stdin(
        ssh_config,
        "ulb",
        "cat /var/lib/postgresql/.ssh/authorized_keys",
        "",
    );
    assert!(
        admitted.contains(&format!("restrict,from=\"{chimay}\" ssh-ed25519 ")),
        "{admitted}"
    );
    // A host whose key is not pinned is refused, not prompted for.
    let (ok, out) = ssh_with_stdin(
        ssh_config,
        "chimay",
        "runuser -u barman -- ssh barman@127.0.0.1 true 2>&1",
        "",
    );
    assert!(
        !ok && out.contains("Host key verification failed"),
        "an unpinned host key is refused: {out}"
    );

    // restore_command from Barman on every Postgres host, and the replica fetches a segment.
    for host in ["ulb", "vub"] {
        let (_, rc) = ssh_with_stdin(
            ssh_config,
            host,
            "runuser -u postgres -- psql -XAtc 'show restore_command'",
            "",
        );
        assert_eq!(
            rc.trim(),
            format!("/usr/bin/barman-wal-restore -U barman {chimay} ulb %f %p"),
            "{host}"
        );
    }
    let (_, segment) = ssh_with_stdin(
        ssh_config,
        "chimay",
        "ls /var/lib/barman/ulb/wals/*/ | grep -E '^[0-9A-F]{24}$' | head -1",
        "",
    );
    let segment = segment.trim();
    assert_eq!(segment.len(), 24, "an archived segment: {segment:?}");
    let fetch = format!(
        "rm -f /tmp/fetched && runuser -u postgres -- /usr/bin/barman-wal-restore -U barman \
         {chimay} ulb {segment} /tmp/fetched && stat -c %s /tmp/fetched"
    );
    let (ok, size) = ssh_with_stdin(ssh_config, "vub", &fetch, "");
    assert!(ok && size.trim() == "16777216", "fetched {segment}: {size}");

    // The private keys are in no output and no plaintext file of the cluster directory.
    for (host, file) in [
        ("ulb", "/var/lib/postgresql/.ssh/id_ed25519"),
        ("chimay", "/var/lib/barman/.ssh/id_ed25519"),
    ] {
        let (_, key) = ssh_with_stdin(ssh_config, host, &format!("cat {file}"), "");
        let body = key
            .lines()
            .nth(2)
            .expect("an OpenSSH private key body")
            .to_string();
        assert!(!first_out.contains(&body), "{file}'s key in deploy output");
        let (_, grep) = run("grep", &["-rlF", &body, path]);
        assert_eq!(grep.trim(), "", "{file}'s key in the cluster directory");
    }

    // A no-op re-deploy changes nothing.
    let again = controller(&["deploy", path]);
    assert!(again.status.success());
    for line in stdout(&again)
        .lines()
        .filter(|l| l.contains(" resources, "))
    {
        assert!(
            line.contains(" 0 changed"),
            "re-deploy changed something: {line}"
        );
    }
}
