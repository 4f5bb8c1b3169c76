//! Barman's SSH trust, the archive and `restore` (issue 9): ulb (primary, `backup: chimay`),
//! vub (its replica) and chimay (Barman) deploy; the barman and postgres users trust each other
//! with the cluster's generated ed25519 keys and pinned host keys only (an unknown host is
//! refused, never prompted); every Postgres host's `restore_command` is `barman-wal-restore`
//! against chimay, and the replica fetches an archived segment from Barman with it as postgres.
//! Point-in-time recovery: rows committed before a noted time, more after, the table dropped;
//! every bad input to `restore` refused with nothing changed (unparseable time, LSN, xid; a
//! time without zone; a bad host name; a host without Postgres; a time before the oldest
//! backup; the running primary, replica and restored host without --force; a cluster that
//! backs nothing up); then `restore --target-time <noted> --to pitr` creates pitr and brings
//! back exactly the rows committed before the target, with a printed recovery point within a
//! second of it, its own TLS certificate, recorded as restored in inventory.json and left out
//! of `status`. Then `restore --force` onto pitr, in place, twice: `--target-xid` of the second
//! insert (inclusive: 150 rows) and `--target-lsn` noted after the first commit (100 rows).
//! The private keys appear in no output and no plaintext file of the cluster
//! directory; a no-op re-deploy changes nothing and does not touch pitr; deprovision removes
//! pitr with the rest.
//!
//! Costs one three-host deploy (repmgr, one clone, Barman's first backup), the refusals, one
//! restore to a new host (container, apt, `barman recover`, promotion), a no-op re-deploy and
//! deprovision. Measured 2026-11-27 on the 2-core machine under a load average of 8 to 9.5
//! (beside a bench and builds): first deploy 240 s, refusals 8.5 s, `restore --to pitr` 172 s
//! (apt 113 s of it, `barman recover` 27 s), 355 s for the whole test. The two in-place
//! restores (--target-xid, --target-lsn) added 44.5 s and 43.3 s (load average about 9).

use std::path::Path;
use std::time::{Duration, Instant};

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

    // Point-in-time recovery onto a new host, and every refusal before it (nothing changed).
    let restore_out = point_in_time(dir.path(), ssh_config);

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
        assert!(
            !restore_out.contains(&body),
            "{file}'s key in restore output"
        );
        let (_, grep) = run("grep", &["-rlF", &body, path]);
        assert_eq!(grep.trim(), "", "{file}'s key in the cluster directory");
    }

    // A no-op re-deploy changes nothing, and leaves the restored host alone.
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
        assert!(!line.starts_with("[pitr]"), "deploy touched pitr: {line}");
    }
    assert!(
        inventory_text(dir.path()).contains("\"restored_from\": \"ulb\""),
        "the re-deploy's inventory keeps pitr"
    );

    // deprovision removes the restored host with the cluster's.
    let gone = controller(&["deprovision", path]);
    assert!(gone.status.success());
    assert!(stdout(&gone).contains("removed container pitr"));
    assert_eq!(cluster_containers(cluster), Vec::<String>::new());
}

fn inventory_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("inventory.json")).expect("inventory.json")
}

/// SQL as postgres on `host` (one value per line).
fn sql(ssh_config: &str, host: &str, query: &str) -> String {
    let (ok, out) = ssh_with_stdin(
        ssh_config,
        host,
        "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1",
        query,
    );
    assert!(ok, "[{host}] {query}: {out}");
    out.trim().to_string()
}

/// Rows committed before a noted time, more after it, the table dropped; the bad inputs
/// refused with nothing changed; then `restore --target-time <noted> --to pitr` brings back
/// exactly the first rows, reports a recovery point within a second of the target, and pitr
/// is no cluster member (status ignores it). Returns restore's output.
fn point_in_time(dir: &Path, ssh_config: &str) -> String {
    let path = dir.to_str().expect("UTF-8 temp path");
    // The target: the server's clock just after the commit, in the same session (an SSH
    // round trip would add seconds on a loaded machine).
    let target = sql(
        ssh_config,
        "ulb",
        "create table pitr (i int); insert into pitr select generate_series(1, 100); \
         select now()::text;",
    );
    // An LSN after that commit and before the next one (for --target-lsn below).
    let lsn = sql(
        ssh_config,
        "ulb",
        "select pg_current_wal_insert_lsn()::text",
    );
    std::thread::sleep(Duration::from_millis(1500));
    // The second transaction's id (for --target-xid below), then the drop in a third.
    let xid = sql(
        ssh_config,
        "ulb",
        "insert into pitr select generate_series(101, 150); select txid_current()::text;",
    );
    sql(ssh_config, "ulb", "drop table pitr");

    let refused = |args: &[&str], why: &str| {
        let before = (inventory_text(dir), cluster_containers("e2e-restore"));
        let mut all = vec!["restore", path];
        all.extend_from_slice(args);
        let out = controller(&all);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} was not refused");
        assert!(err.contains(why), "{args:?}: {err}");
        assert_eq!(
            (inventory_text(dir), cluster_containers("e2e-restore")),
            before,
            "{args:?} changed something"
        );
    };
    let started = Instant::now();
    refused(
        &["--target-time", "yesterday", "--to", "pitr"],
        "--target-time \"yesterday\": use YYYY-MM-DD",
    );
    refused(
        &["--target-time", "2026-11-27 10:15:00", "--to", "pitr"],
        "the time zone is missing",
    );
    refused(
        &["--target-lsn", "0/zz", "--to", "pitr"],
        "an LSN looks like 0/3000148",
    );
    refused(
        &["--target-xid", "1x", "--to", "pitr"],
        "a transaction id is a number",
    );
    refused(&["--to", "Bad_Name"], "is not a valid host name");
    refused(&["--to", "chimay"], "no Postgres role");
    refused(
        &["--target-time", "2000-01-01 00:00:00+00", "--to", "pitr"],
        "is before the end of the oldest backup of ulb",
    );
    refused(&["--to", "ulb"], "ulb runs Postgres as a primary");
    refused(&["--to", "vub"], "vub runs Postgres as a replica");
    // A cluster that backs nothing up (config.yml without `backup:`) has nothing to restore.
    let config = std::fs::read_to_string(dir.join("config.yml")).expect("config.yml");
    std::fs::write(
        dir.join("config.yml"),
        config.replace("  backup: chimay\n", ""),
    )
    .unwrap();
    refused(&["--to", "pitr"], "nothing is backed up in this cluster");
    std::fs::write(dir.join("config.yml"), &config).unwrap();
    eprintln!("refusals: {:.1}s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let out = controller(&["restore", path, "--target-time", &target, "--to", "pitr"]);
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "restore failed");
    eprintln!("restore --to pitr: {:.1}s", started.elapsed().as_secs_f64());

    // Exactly the rows committed before the target.
    assert_eq!(sql(ssh_config, "pitr", "select count(*) from pitr"), "100");
    assert_eq!(sql(ssh_config, "pitr", "select pg_is_in_recovery()"), "f");
    // The printed recovery point is within a second of the target.
    let point = text
        .lines()
        .find_map(|l| {
            l.split_once("] recovered to ")?
                .1
                .split_once(", LSN ")
                .map(|(t, _)| t.to_string())
        })
        .unwrap_or_else(|| panic!("no recovery point in: {text}"));
    let gap = sql(
        ssh_config,
        "ulb",
        &format!(
            "select abs(extract(epoch from '{point}'::timestamptz - '{target}'::timestamptz)) <= 1"
        ),
    );
    assert_eq!(gap, "t", "recovery point {point} vs target {target}");
    assert!(
        text.contains("recovery stopping before commit of transaction"),
        "{text}"
    );
    // pitr serves TLS with its own certificate, from the cluster CA.
    let (_, subject) = ssh_with_stdin(
        ssh_config,
        "pitr",
        "openssl x509 -noout -subject -in /etc/tpa/e2e-restore.crt",
        "",
    );
    assert!(subject.contains("pitr"), "{subject}");
    assert_eq!(sql(ssh_config, "pitr", "show ssl"), "on");
    // Recorded as restored; no cluster member: status stays healthy and does not list it.
    assert!(inventory_text(dir).contains("\"restored_from\": \"ulb\""));
    let status = controller(&["status", path]);
    assert!(status.status.success(), "status after restore");
    assert!(!stdout(&status).contains("pitr"), "status lists pitr");
    // A second restore onto the restored host is refused while it runs.
    refused(&["--to", "pitr"], "pitr runs Postgres as a primary");

    // With --force it is restored again in place: to the transaction id (inclusive, so the
    // second insert's rows are there), then to the LSN (the first commit only).
    for (args, rows) in [
        (["--target-xid", xid.as_str()], "150"),
        (["--target-lsn", lsn.as_str()], "100"),
    ] {
        let started = Instant::now();
        let mut all = vec!["restore", path, "--to", "pitr", "--force"];
        all.extend_from_slice(&args);
        let out = controller(&all);
        let again = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "restore {args:?} failed: {again}");
        assert!(again.contains("] recovered to "), "{again}");
        assert_eq!(
            sql(ssh_config, "pitr", "select count(*) from pitr"),
            rows,
            "restore {args:?}"
        );
        eprintln!(
            "restore {args:?} --force: {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    text
}
