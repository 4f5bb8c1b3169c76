//! Replication scenario (issue 8, first slice): the seed deploys with vub cloned from ulb and
//! achel cascaded from vub; both stream (checked on each replica and on each upstream), a row
//! written on ulb reaches achel, a re-deploy changes nothing and `deploy --check` exits 0.
//!
//! Then `status` (issue 8, part 5): exit 0 with each host's live role, upstream and lag in
//! `--json`; with Postgres stopped on achel, exit 1 naming achel; started again, back to 0.
//!
//! Costs one seed deploy (4 hosts, about 85 s with images and packages cached; 104 s for the
//! whole test) and two no-op deploys; the `status` checks add under 10 s (four `status` runs of
//! about 0.5 s, stopping and starting achel's Postgres): 201 s for the whole test on a loaded
//! machine.

use std::time::{Duration, Instant};

use tpa_e2e::*;

/// Runs a query as postgres on `host` over SSH and returns its trimmed output.
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

/// Each host's address, from the inventory provision wrote.
fn address(dir: &std::path::Path, host: &str) -> String {
    let text = std::fs::read_to_string(dir.join("inventory.json")).expect("inventory.json");
    let inventory: serde_json::Value = serde_json::from_str(&text).expect("inventory JSON");
    inventory["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["name"] == host)
        .and_then(|h| h["address"].as_str())
        .unwrap_or_else(|| panic!("{host} is not in the inventory"))
        .to_string()
}

#[test]
fn seed_replicas_stream_in_a_cascade() {
    let Some(_serial) = e2e_guard("seed_replicas_stream_in_a_cascade") else {
        return;
    };
    ensure_image("tpa/debian:12");
    let cluster = "e2e-repl";
    let dir = seed_cluster(cluster);
    let _cleanup = Cleanup {
        dir: dir.path(),
        cluster,
    };
    let path = dir.path().to_str().expect("UTF-8 temp path");
    let ssh_config = dir.path().join("ssh_config").display().to_string();
    let ssh_config = ssh_config.as_str();

    assert!(controller(&["download-packages", path]).status.success());
    let first = controller(&["deploy", path]);
    assert!(first.status.success(), "first deploy failed");

    let (ulb, vub) = (address(dir.path(), "ulb"), address(dir.path(), "vub"));
    let receiver =
        "select status || '|' || sender_host || '|' || slot_name from pg_stat_wal_receiver";
    assert_eq!(
        psql(ssh_config, "vub", receiver),
        format!("streaming|{ulb}|tpa_vub")
    );
    assert_eq!(
        psql(ssh_config, "achel", receiver),
        format!("streaming|{vub}|tpa_achel")
    );
    for host in ["vub", "achel"] {
        assert_eq!(psql(ssh_config, host, "select pg_is_in_recovery()"), "t");
    }
    let senders =
        "select string_agg(application_name || ':' || state, ',') from pg_stat_replication";
    assert_eq!(psql(ssh_config, "ulb", senders), "vub:streaming");
    assert_eq!(psql(ssh_config, "vub", senders), "achel:streaming");
    // The replication role is no superuser; each slot is in use by its replica.
    assert_eq!(
        psql(
            ssh_config,
            "ulb",
            "select rolreplication::text || rolsuper::text from pg_roles where rolname = 'replication'"
        ),
        "truefalse"
    );
    assert_eq!(
        psql(
            ssh_config,
            "vub",
            "select slot_name || ':' || active from pg_replication_slots"
        ),
        "tpa_achel:true"
    );
    // The password lives in a 0600 file of postgres only.
    let (ok, out) = run(
        "ssh",
        &[
            "-F",
            ssh_config,
            "-o",
            "BatchMode=yes",
            "achel",
            "stat -c '%U %a' /var/lib/postgresql/.pgpass",
        ],
    );
    assert!(ok && out.trim() == "postgres 600", "{out}");

    // A row written on the primary reaches the end of the cascade.
    psql(
        ssh_config,
        "ulb",
        "create table if not exists e2e_repl (v text); insert into e2e_repl values ('through vub')",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = psql(
            ssh_config,
            "achel",
            "select count(*) from pg_class where relname = 'e2e_repl'",
        );
        if seen == "1"
            && psql(
                ssh_config,
                "achel",
                "select string_agg(v, ',') from e2e_repl",
            ) == "through vub"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the row did not reach achel within 30 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let again = controller(&["deploy", path]);
    assert!(again.status.success(), "second deploy failed");
    assert!(
        stdout(&again).contains(": 0 changed,"),
        "a re-deploy changed something:\n{}",
        stdout(&again)
    );
    let check = controller(&["deploy", "--check", path]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "deploy --check found pending changes"
    );

    // `status`: each host's live role and upstream, with lag figures, and exit 0.
    let started = Instant::now();
    let out = controller(&["status", "--json", path]);
    eprintln!("status took {:.2}s", started.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(0), "status of a healthy cluster");
    let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let host = |name: &str| {
        hosts
            .as_array()
            .expect("an array")
            .iter()
            .find(|h| h["host"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the status"))
            .clone()
    };
    let shape = |name: &str| {
        let h = host(name);
        format!("{} {} {}", h["role"], h["upstream"], h["state"])
    };
    assert_eq!(shape("ulb"), r#""primary" null "up""#);
    assert_eq!(shape("vub"), r#""replica" "ulb" "streaming""#);
    assert_eq!(shape("achel"), r#""replica" "vub" "streaming""#);
    assert_eq!(shape("chimay"), r#""barman" null "-""#);
    for name in ["vub", "achel"] {
        let h = host(name);
        assert!(
            h["lag_bytes"].is_u64() && h["lag_seconds"].is_number() && h["timeline"] == 1,
            "{name}: {h}"
        );
        assert_eq!(h["differs_from_config"], false, "{name}: {h}");
    }

    // Postgres stopped on achel: status says so and exits 1; once it runs again, 0.
    let ssh = |host: &str, command: &str| {
        let (ok, _) = run(
            "ssh",
            &["-F", ssh_config, "-o", "BatchMode=yes", host, command],
        );
        assert!(ok, "{command} on {host} failed");
    };
    ssh("achel", "sudo systemctl stop postgres");
    let down = controller(&["status", path]);
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert_eq!(down.status.code(), Some(1), "status with achel stopped");
    assert!(stderr.contains("achel: Postgres is down"), "{stderr}");
    assert!(
        stdout(&down)
            .lines()
            .any(|l| l.starts_with("achel ") && l.contains(" down ")),
        "{}",
        stdout(&down)
    );
    ssh("achel", "sudo systemctl start postgres");
    let deadline = Instant::now() + Duration::from_secs(60);
    while controller(&["status", path]).status.code() != Some(0) {
        assert!(
            Instant::now() < deadline,
            "status did not return to 0 within 60 s of starting achel again"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
