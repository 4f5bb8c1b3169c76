//! Replication and repmgr (issue 8), on one cluster shared by every scenario: the seed in the
//! shape TPA's `configure` gives M1, chimay `[barman, log-server, witness]`: a repmgr witness
//! beside Barman, which backs up ulb (`backup: chimay`) and follows the live primary (issue 9).
//!
//! 1. Deploy: vub cloned from ulb, achel cascaded from vub, both streaming (checked on each
//!    replica and each upstream), repmgr's slots, a row written on ulb reaches achel, repmgr's
//!    `cluster show` clean on every node with chimay a registered witness; a re-deploy changes
//!    nothing and `deploy --check` exits 0.
//!    The log server (chimay, `log-server`): every host's Postgres and agent lines are in
//!    `/var/log/tpa/<host>/`; a line Postgres logs on ulb arrives within seconds (the time
//!    is printed); plain TCP and TLS without a client certificate are refused.
//! 2. `status`: exit 0 with each host's live role, upstream and lag in `--json`, and each
//!    agent's scheduled health checks (all Ok; `agent_health_interval: 5`); `/metrics` on
//!    ulb (`agent_metrics_port`, 127.0.0.1). With Postgres stopped on achel, exit 1 naming
//!    achel, achel's agent reports Postgres Critical within a round (and `tpa_pg_up 0`), and
//!    `--watch` redraws it (two bounded rounds, a second apart: about 2 s more); started
//!    again, back to 0.
//! 3. Bad switchovers (unknown host, the witness, the primary itself, a cascaded replica, a
//!    stopped replica) are refused with the reason, changing nothing.
//! 4. Switchover to vub and back: every committed row is there after each; siblings follow;
//!    switchover moves Barman's WAL streaming to vub (`status`, which includes `barman
//!    check`, exits 0) and a backup taken on vub succeeds.
//! 5. Failover: ulb's container stopped, repmgrd promotes a replica, which accepts writes (the
//!    time is printed); repmgrd makes the other replica follow it. ulb started again and
//!    `deploy`: ulb is
//!    rewound and rejoins as a replica, `status` exits 0, no committed row lost; the deploy
//!    says Barman follows the new primary, `barman check` passes and a new backup succeeds.
//!    Before that deploy, Barman streams ulb's diverged WAL (its cron run at once): the deploy
//!    restarts streaming at the fork point of the new primary's timeline.
//! 6. achel cut off the cluster network and reconnected catches up with no manual step.
//! 7. A fifth instance (replica of ulb) added to config.yml: deploy clones it, and no other
//!    host's Postgres restarts (postmaster start times unchanged).
//!
//! Costs one seed deploy with the witness and Barman (about 90 s with images and packages
//! cached; chimay's `barman` stage 23.5 s of it, its first backup), three short deploys, two
//! switchovers (about 7 s each; with Barman moved, 25-34 s in all under a load average of
//! about 8), one failover (about 15 s), two on-demand backups (about 10 s each) and one added
//! host (about 90 s, mostly its packages): about 6 min idle; 781 s measured 2026-11-27 with
//! two other agents' builds and scenarios on the machine. The log server adds rsyslog's few
//! small packages and a `logs` stage (under 0.5 s) to each host's first deploy, and its step
//! about 5 s (lines arrive in under a second; two 1 s pauses for the refused clients); the
//! whole test took 506 s with it on 2026-12-06. The agents' health checks add about 8 s to
//! step 2 (waiting for achel's agent to see its Postgres stopped, then started, at most one
//! 5 s round each; the step took 19 s); the whole test took 845 s that day under a load
//! average of 8 to 10, beside a bench.

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

#[test]
fn seed_replicas_stream_in_a_cascade() {
    let Some(_serial) = e2e_guard("seed_replicas_stream_in_a_cascade") else {
        return;
    };
    ensure_image("tpa/debian:12");
    let cluster = "e2e-repl";
    let dir = seed_cluster(cluster);
    // TPA's M1 shape: the repmgr witness and the log server beside Barman.
    let config = dir.path().join("config.yml");
    let text = std::fs::read_to_string(&config).expect("config.yml");
    let text = text
        .replace(
            "  role: [barman]\n",
            "  role: [barman, log-server, witness]\n  upstream: ulb\n",
        )
        // The agents' health rounds every 5 s (so the step below waits little), and their
        // metrics on 127.0.0.1.
        .replace(
            "  use_local_repo_only: true\n",
            "  use_local_repo_only: true\n  agent_health_interval: 5\n  agent_metrics_port: 9187\n",
        );
    std::fs::write(&config, text).expect("config.yml");
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

    let (ulb, vub) = (
        host_address(dir.path(), "ulb"),
        host_address(dir.path(), "vub"),
    );
    let receiver =
        "select status || '|' || sender_host || '|' || slot_name from pg_stat_wal_receiver";
    assert_eq!(
        psql(ssh_config, "vub", receiver),
        format!("streaming|{ulb}|repmgr_slot_2")
    );
    assert_eq!(
        psql(ssh_config, "achel", receiver),
        format!("streaming|{vub}|repmgr_slot_3")
    );
    for host in ["vub", "achel"] {
        assert_eq!(psql(ssh_config, host, "select pg_is_in_recovery()"), "t");
    }
    let senders = "select string_agg(application_name || ':' || state, ',' order by \
                   application_name) from pg_stat_replication";
    // (Barman's receive-wal streams from the primary too.)
    assert_eq!(
        psql(ssh_config, "ulb", senders),
        "barman_receive_wal:streaming,vub:streaming"
    );
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
        "repmgr_slot_3:true"
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

    log_server(dir.path(), ssh_config);

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
    assert_eq!(host("chimay")["role"], "witness");
    for name in ["vub", "achel"] {
        let h = host(name);
        assert!(
            h["lag_bytes"].is_u64() && h["lag_seconds"].is_number() && h["timeline"] == 1,
            "{name}: {h}"
        );
        assert_eq!(h["differs_from_config"], false, "{name}: {h}");
    }

    // Each agent's scheduled health round is in the JSON: Postgres on every Postgres host,
    // the replication of each replica, Barman's check on chimay; all Ok.
    let checks = |h: &serde_json::Value| -> Vec<(String, String)> {
        h["health"]["checks"]
            .as_array()
            .unwrap_or_else(|| panic!("no health checks: {h}"))
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or("").to_string(),
                    c["status"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    for (name, expected) in [
        ("ulb", &["postgres", "slots", "disk data", "units"][..]),
        ("vub", &["postgres", "replication", "disk wal", "units"]),
        ("achel", &["postgres", "replication", "units"]),
        ("chimay", &["postgres", "disk barman", "barman", "units"]),
    ] {
        let seen = checks(&host(name));
        for check in expected {
            // An inactive slot (repmgr's, for a node not using it) is a Warning, not a fault.
            let fine = |s: &str| s == "ok" || (*check == "slots" && s == "warning");
            assert!(
                seen.iter().any(|(n, s)| n == check && fine(s)),
                "{name}: {check} not ok in {seen:?}"
            );
        }
    }
    let step_started = Instant::now();

    // Postgres stopped on achel: status says so and exits 1; once it runs again, 0.
    let ssh = |host: &str, command: &str| {
        let (ok, _) = run(
            "ssh",
            &["-F", ssh_config, "-o", "BatchMode=yes", host, command],
        );
        assert!(ok, "{command} on {host} failed");
    };
    // `/metrics` on 127.0.0.1:9187 (agent_metrics_port), read with bash alone.
    let metrics = |host: &str| -> String {
        let (ok, out) = run(
            "ssh",
            &[
                "-F",
                ssh_config,
                "-o",
                "BatchMode=yes",
                host,
                "exec 3<>/dev/tcp/127.0.0.1/9187 && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3",
            ],
        );
        assert!(ok, "no /metrics on {host}: {out}");
        out
    };
    let ulb_metrics = metrics("ulb");
    assert!(
        ulb_metrics.contains("tpa_pg_up 1") && ulb_metrics.contains("tpa_health_up 1"),
        "{ulb_metrics}"
    );
    ssh("achel", "sudo systemctl stop postgres");
    // Within a round (5 s), achel's agent finds its Postgres down; its metrics say so too.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = controller(&["status", "--json", path]);
        assert_eq!(out.status.code(), Some(1), "status with achel stopped");
        let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let achel = hosts
            .as_array()
            .and_then(|a| a.iter().find(|h| h["host"] == "achel"))
            .expect("achel")
            .clone();
        if checks(&achel).contains(&("postgres".into(), "critical".into())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "achel's agent did not see Postgres stopped: {achel}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let achel_metrics = metrics("achel");
    assert!(
        achel_metrics.contains("tpa_pg_up 0") && achel_metrics.contains("tpa_health_up 0"),
        "{achel_metrics}"
    );
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
    // `status --watch`, bounded to two rounds a second apart: two redraws, each with the
    // table, and the last round's exit status.
    let started = Instant::now();
    let watched = controller(&["status", "--watch", "1", "--watch-count", "2", path]);
    let rounds = stdout(&watched);
    assert_eq!(
        watched.status.code(),
        Some(1),
        "status --watch with achel down"
    );
    assert_eq!(
        rounds.matches(" every 1s, at ").count(),
        2,
        "two rounds:\n{rounds}"
    );
    assert_eq!(
        rounds
            .lines()
            .filter(|l| l.starts_with("achel ") && l.contains(" down "))
            .count(),
        2,
        "achel down in both rounds:\n{rounds}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "rounds a second apart"
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
    eprintln!(
        "the status step took {:.1}s from achel's stop to healthy again",
        step_started.elapsed().as_secs_f64()
    );

    repmgr_scenarios(dir.path(), path, ssh_config, cluster);
}

/// Step 1b: the log server chimay (issue 11) holds every host's Postgres and agent lines
/// after the deploy; a line Postgres logs on ulb reaches chimay's file for ulb within seconds
/// and stays in ulb's journal; plain TCP and TLS without a client certificate are refused.
fn log_server(dir: &std::path::Path, ssh_config: &str) {
    let ssh = |host: &str, command: &str| -> (bool, String) {
        run(
            "ssh",
            &["-F", ssh_config, "-o", "BatchMode=yes", host, command],
        )
    };
    let wait_for = |what: &str, seconds: u64, command: &str| -> Duration {
        let started = Instant::now();
        loop {
            if ssh("chimay", command).0 {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(seconds),
                "{what}: not on the log server within {seconds} s ({command})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    for host in ["ulb", "vub", "achel", "chimay"] {
        for file in ["postgres.log", "agent.log"] {
            let path = format!("/var/log/tpa/{host}/{file}");
            wait_for(&path, 15, &format!("sudo test -s {path}"));
        }
    }
    let (ok, mode) = ssh(
        "chimay",
        "sudo stat -c '%U:%G %a' /var/log/tpa/ulb/postgres.log",
    );
    assert!(ok && mode.trim() == "root:adm 640", "{mode}");

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let marker = format!("e2e-logserver-{nanos}");
    psql(
        ssh_config,
        "ulb",
        // (No dollar quoting: `sudo -i` would expand `$$`.)
        &format!("do 'begin raise log ''{marker}''; end'"),
    );
    let took = wait_for(
        "ulb's Postgres line",
        10,
        &format!("sudo grep -q {marker} /var/log/tpa/ulb/postgres.log"),
    );
    eprintln!(
        "log server: ulb's Postgres line on chimay after {:.2}s",
        took.as_secs_f64()
    );
    let (ok, _) = ssh(
        "ulb",
        &format!("sudo journalctl -u postgres --since=-10min | grep -q {marker}"),
    );
    assert!(ok, "the line is not in ulb's journal any more");

    // Refused: plain TCP, and TLS without a client certificate (from ulb, whose address the
    // server would file them under).
    let chimay = host_address(dir, "chimay");
    let plain = format!("{marker}-plain");
    let anonymous = format!("{marker}-anonymous");
    let line = |m: &str| format!("<13>1 - ulb postgres - - - {m}");
    ssh(
        "ulb",
        &format!(
            "bash -c 'exec 3<>/dev/tcp/{chimay}/6514 && echo \"{}\" >&3 && sleep 1'",
            line(&plain)
        ),
    );
    ssh(
        "ulb",
        &format!(
            "echo '{}' | timeout 10 openssl s_client -connect {chimay}:6514 \
             -CAfile /etc/tpa/ca.crt -verify_return_error -quiet; sleep 1",
            line(&anonymous)
        ),
    );
    // A later line gets through; the refused ones never do.
    let after = format!("{marker}-after");
    psql(
        ssh_config,
        "ulb",
        &format!("do 'begin raise log ''{after}''; end'"),
    );
    wait_for(
        "the line after the refused clients",
        10,
        &format!("sudo grep -q {after} /var/log/tpa/ulb/postgres.log"),
    );
    let (_, found) = ssh(
        "chimay",
        &format!("sudo grep -rh -e {plain} -e {anonymous} /var/log/tpa /var/log/syslog || true"),
    );
    assert!(
        found.trim().is_empty(),
        "a refused client got through: {found}"
    );
    let (ok, refusals) = ssh(
        "chimay",
        "(sudo journalctl -u rsyslog --since=-5min; sudo cat /var/log/syslog) 2>/dev/null \
         | grep -c 'will be closed due to error'",
    );
    assert!(
        ok && refusals.trim().parse::<u32>().unwrap_or(0) >= 2,
        "the log server did not log two refused sessions: {refusals}"
    );
}

/// Steps 1 (repmgr's view), 3, 4, 5 and 6 of the header, on the deployed cluster.
fn repmgr_scenarios(dir: &std::path::Path, path: &str, ssh_config: &str, cluster: &str) {
    let ssh = |host: &str, command: &str| -> (bool, String) {
        run(
            "ssh",
            &["-F", ssh_config, "-o", "BatchMode=yes", host, command],
        )
    };
    let cluster_show = "sudo -iu postgres /usr/lib/postgresql/15/bin/repmgr -f \
                        /etc/repmgr/15/repmgr.conf cluster show --compact";
    // Each node's view is its copy of repmgr's metadata: the witness syncs its copy from the
    // primary every 15 s, so it may lag a moment behind achel's restart above.
    for host in ["ulb", "vub", "achel", "chimay"] {
        let deadline = Instant::now() + Duration::from_secs(45);
        let (ok, out) = loop {
            let (ok, out) = ssh(host, cluster_show);
            if ok || Instant::now() > deadline {
                break (ok, out);
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        assert!(ok, "repmgr cluster show on {host} is not clean:\n{out}");
        assert!(
            out.lines()
                .any(|l| l.contains("chimay") && l.contains("witness")),
            "{out}"
        );
    }
    let status_shape = || {
        let out = controller(&["status", "--json", path]);
        let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        let mut shape: Vec<String> = hosts
            .as_array()
            .expect("an array")
            .iter()
            .map(|h| format!("{} {} {}", h["host"], h["role"], h["upstream"]))
            .collect();
        shape.sort();
        (out.status.code(), shape.join(", "))
    };
    let wait_healthy = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while controller(&["status", path]).status.code() != Some(0) {
            assert!(
                Instant::now() < deadline,
                "status did not return to 0 within 60 s {what}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let count = |host: &str| psql(ssh_config, host, "select count(*) from e2e_repl");

    // 3. Bad switchovers: refused with the reason, nothing changed.
    let before = status_shape();
    for (target, reason) in [
        ("nope", "not an instance"),
        ("chimay", "not a Postgres primary or replica"),
        ("ulb", "already the primary"),
        ("achel", "does not stream from the primary"),
    ] {
        let out = controller(&["switchover", path, target]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "switchover to {target} was accepted");
        assert!(
            stderr.contains(reason) && stderr.contains("nothing was changed"),
            "{target}: {stderr}"
        );
    }
    // A stopped target is refused too (started again at once). achel's repmgrd is paused
    // meanwhile: under load the refusal can outlast its reconnect attempts, and it would then
    // follow ulb, a change of repmgr's making, not the switchover's.
    assert!(ssh("achel", "sudo systemctl stop repmgr").0);
    assert!(ssh("vub", "sudo systemctl stop postgres").0);
    let out = controller(&["switchover", path, "vub"]);
    assert!(ssh("vub", "sudo systemctl start postgres").0);
    assert!(ssh("achel", "sudo systemctl start repmgr").0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("not running Postgres"),
        "switchover to a stopped vub: {stderr}"
    );
    wait_healthy("after vub was started again");
    assert_eq!(
        status_shape(),
        before,
        "a refused switchover changed something"
    );

    // 4. Switchover to vub and back: nothing committed is lost; siblings follow.
    psql(
        ssh_config,
        "ulb",
        "insert into e2e_repl select 'row ' || g from generate_series(1, 1000) g",
    );
    let committed = count("ulb");
    let out = controller(&["switchover", path, "vub"]);
    assert!(out.status.success(), "switchover to vub failed");
    let text = stdout(&out);
    eprintln!("{text}");
    assert!(
        text.contains("[chimay]") && text.contains("WAL streams from"),
        "switchover did not move Barman to vub:\n{text}"
    );
    assert_eq!(
        count("vub"),
        committed,
        "rows lost in the switchover to vub"
    );
    wait_healthy("after the switchover to vub");
    let (_, shape) = status_shape();
    assert!(
        shape.contains(r#""ulb" "replica" "vub""#) && shape.contains(r#""vub" "primary" null"#),
        "{shape}"
    );
    assert_eq!(
        psql(ssh_config, "vub", "select pg_is_in_recovery()"),
        "f",
        "vub is not the primary"
    );
    // Barman streams from vub (status includes `barman check`) and backs it up.
    assert_eq!(
        psql(
            ssh_config,
            "vub",
            "select active from pg_replication_slots where slot_name = 'barman'"
        ),
        "t",
        "Barman does not stream from vub"
    );
    let out = controller(&["backup", path]);
    assert!(
        out.status.success(),
        "a backup after the switchover failed:\n{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    psql(ssh_config, "vub", "insert into e2e_repl values ('on vub')");
    let committed = count("vub");
    let out = controller(&["switchover", path, "ulb"]);
    assert!(out.status.success(), "switchover back to ulb failed");
    assert_eq!(count("ulb"), committed, "rows lost in the switchover back");
    wait_healthy("after the switchover back to ulb");
    let (_, shape) = status_shape();
    assert!(
        shape.contains(r#""ulb" "primary" null"#)
            && shape.contains(r#""vub" "replica" "ulb""#)
            && shape.contains(r#""achel" "replica" "ulb""#),
        "siblings did not follow: {shape}"
    );
    // Live state wins: a deploy now changes no role back.
    let out = controller(&["deploy", path]);
    assert!(out.status.success(), "deploy after the switchovers failed");
    assert_eq!(status_shape().1, shape, "deploy undid the switchover");

    // 5. Failover: the primary's container stops; repmgrd promotes a replica.
    psql(
        ssh_config,
        "ulb",
        "insert into e2e_repl values ('before failover')",
    );
    let committed: u64 = count("ulb").parse().expect("a count");
    std::thread::sleep(Duration::from_secs(1));
    let stopped = Instant::now();
    assert!(run("docker", &["stop", "ulb"]).0, "docker stop ulb");
    let deadline = Instant::now() + Duration::from_secs(90);
    let promoted = loop {
        let accepted = ["vub", "achel"].into_iter().find(|host| {
            ssh(
                host,
                "sudo -iu postgres psql -XAtc \"insert into e2e_repl values ('after failover')\"",
            )
            .0
        });
        if let Some(host) = accepted {
            break host;
        }
        assert!(
            Instant::now() < deadline,
            "no replica accepted writes within 90 s of stopping ulb"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "failover: {promoted} accepted a write {:.1}s after ulb was stopped",
        stopped.elapsed().as_secs_f64()
    );
    let other = if promoted == "vub" { "achel" } else { "vub" };
    // `status` maps each replica's WAL sender to a host name (and says whether it streams).
    let streams_from_promoted = || {
        let out = controller(&["status", "--json", path]);
        let hosts: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        hosts.as_array().is_some_and(|hosts| {
            hosts.iter().any(|h| {
                h["host"] == other && h["upstream"] == promoted && h["state"] == "streaming"
            })
        })
    };
    // repmgrd makes the other replica follow the new primary.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !streams_from_promoted() {
        if Instant::now() > deadline {
            let (_, journal) = ssh(other, "sudo journalctl -u repmgr --no-pager | tail -40");
            panic!("{other} did not follow {promoted} within 60 s:\n{journal}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "failover: {other} followed {promoted} {:.1}s after ulb was stopped",
        stopped.elapsed().as_secs_f64()
    );

    // The old primary comes back: deploy rejoins it as a replica, nothing lost.
    assert!(run("docker", &["start", "ulb"]).0, "docker start ulb");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ssh("ulb", "true").0 {
        assert!(Instant::now() < deadline, "ulb did not come back");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The worst case for Barman: ulb came back as a primary, Barman's cron (run at once here)
    // streams from it again, and ulb writes WAL that is in no other host's history.
    let deadline = Instant::now() + Duration::from_secs(60);
    while psql(
        ssh_config,
        "ulb",
        "select coalesce((select active::text from pg_replication_slots where slot_name = \
         'barman'), 'none')",
    ) != "true"
    {
        assert!(
            Instant::now() < deadline,
            "Barman did not stream from the returning ulb"
        );
        assert!(ssh("chimay", "sudo -u barman barman -q cron").0);
        std::thread::sleep(Duration::from_secs(1));
    }
    // Into the next WAL segment, so that Barman's position is past the new primary's fork.
    for sql in [
        "insert into e2e_repl values ('diverged, lost by design')",
        "select pg_switch_wal()",
        "insert into e2e_repl values ('diverged, lost by design')",
    ] {
        psql(ssh_config, "ulb", sql);
    }
    std::thread::sleep(Duration::from_secs(2));
    let out = controller(&["deploy", path]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "deploy after the failover failed:\n{text}"
    );
    assert!(
        text.contains("former primary") && text.contains("rejoined"),
        "the deploy did not say how ulb rejoined:\n{text}"
    );
    assert!(
        text.contains(&format!("follow {promoted}, the live primary"))
            && text.contains("from its timeline's fork point"),
        "the deploy did not say how Barman follows {promoted}:\n{text}"
    );
    wait_healthy("after ulb rejoined");
    assert_eq!(
        psql(
            ssh_config,
            promoted,
            "select active from pg_replication_slots where slot_name = 'barman'"
        ),
        "t",
        "Barman does not stream from {promoted}"
    );
    assert_eq!(
        psql(
            ssh_config,
            "ulb",
            "select count(*) from pg_replication_slots where slot_name = 'barman' and active"
        ),
        "0",
        "Barman still streams from the former primary"
    );
    let out = controller(&["backup", path]);
    assert!(
        out.status.success(),
        "a backup after the failover failed:\n{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(psql(ssh_config, "ulb", "select pg_is_in_recovery()"), "t");
    assert!(
        streams_from_promoted(),
        "{other} does not stream from {promoted}"
    );
    let rows: u64 = count(promoted).parse().expect("a count");
    assert_eq!(rows, committed + 1, "rows lost in the failover");
    let deadline = Instant::now() + Duration::from_secs(30);
    while count("ulb") != rows.to_string() {
        assert!(Instant::now() < deadline, "ulb did not catch up");
        std::thread::sleep(Duration::from_millis(500));
    }

    // 6. achel cut off the network, then back: it catches up by itself.
    let achel = host_address(dir, "achel");
    assert!(run("docker", &["network", "disconnect", cluster, "achel"]).0);
    psql(
        ssh_config,
        promoted,
        "insert into e2e_repl select 'while achel was away' from generate_series(1, 100)",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        run(
            "docker",
            &["network", "connect", "--ip", &achel, cluster, "achel"]
        )
        .0
    );
    let expected = count(promoted);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count("achel") != expected {
        assert!(
            Instant::now() < deadline,
            "achel did not catch up within 60 s of reconnecting"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_healthy("after achel reconnected");

    // 7. A fifth instance, a replica of ulb: deploying clones exactly it; no other Postgres
    //    restarts.
    let started_at = |host: &str| psql(ssh_config, host, "select pg_postmaster_start_time()");
    let before: Vec<String> = ["ulb", "vub", "achel", "chimay"]
        .into_iter()
        .map(started_at)
        .collect();
    let config = dir.join("config.yml");
    let mut text = std::fs::read_to_string(&config).expect("config.yml");
    text.push_str(
        "- Name: orval\n  node: 5\n  location: brussels\n  role: [replica]\n  upstream: ulb\n",
    );
    std::fs::write(&config, text).expect("config.yml");
    let out = controller(&["deploy", path]);
    assert!(out.status.success(), "deploy of orval failed");
    let after: Vec<String> = ["ulb", "vub", "achel", "chimay"]
        .into_iter()
        .map(started_at)
        .collect();
    assert_eq!(
        before, after,
        "adding orval restarted another host's Postgres"
    );
    assert_eq!(
        psql(
            ssh_config,
            "orval",
            "select sender_host from pg_stat_wal_receiver where status = 'streaming'"
        ),
        host_address(dir, "ulb")
    );
    let expected = count(promoted);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count("orval") != expected {
        assert!(Instant::now() < deadline, "orval did not catch up");
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_healthy("after orval joined");
    // The former primary's unused Barman slot is gone (it would keep WAL there forever).
    assert_eq!(
        psql(
            ssh_config,
            "ulb",
            "select count(*) from pg_replication_slots where slot_name = 'barman'"
        ),
        "0",
        "ulb kept Barman's slot"
    );
}
