//! Patroni with etcd (issue 10), on one cluster shared by every step: three Postgres hosts
//! (pat1 the configured primary, pat2 and pat3 its replicas), each also an etcd member.
//!
//! 1. Deploy: `patronictl -c /etc/patroni/<cluster>.yml list`, as postgres with no other
//!    flag, shows one leader and two streaming replicas; a row written on the leader reaches
//!    both replicas; etcd refuses a client without a certificate and the Patroni REST API an
//!    unauthenticated write (both asked directly); our postgres.service is disabled; the
//!    rewind role reaches the leader from a replica and may run pg_rewind's functions; a
//!    re-deploy changes nothing.
//!
//! 2. `status` (table and `--json`) shows each member's Patroni role and state, the leader and
//!    each etcd member's health, and exits 0.
//! 3. `work_mem` changed in config.yml: deploy applies it through Patroni's DCS; every member
//!    shows it, and no postmaster restarted. Then a `postgres_hba_settings` line: every
//!    member reloads it (Patroni does not watch pg_hba.conf), still without a restart.
//! 4. Switchover to pat2 and back to pat1 through Patroni, with a writer committing rows all
//!    along: every committed row is on the new leader (count asserted); a switchover to the
//!    leader or to an unknown instance is refused.
//! 5. `max_connections` changed, under a writer: every member restarts through Patroni, one
//!    at a time and the leader last, the leader stays; the etcd members (their files touched)
//!    restart one at a time in the same deploy; `patroni_conf_settings` reaches Patroni's file.
//! 6. Failover: pat1's container stopped; Patroni promotes pat2 or pat3 within 60 s, a write
//!    succeeds there, the other replica streams from it; pat1's container started again and
//!    deploy run: pat1 streams from the new leader, `status` exits 0, no row lost.
//!
//! Costs one 3-host deploy (packages from the local repository, about 2 min with images
//! cached), a no-op re-deploy (a few seconds), a deploy that changes `work_mem` (about 20 s:
//! Patroni applies a DCS change within a loop_wait), two switchovers (about 15 s each), a
//! failover (Patroni's ttl bounds it: under 40 s), a container restart and a deploy (about
//! 40 s), a pg_hba deploy (a few seconds) and the max_connections deploy (three restarts
//! through Patroni, each waiting a loop_wait, and three etcd restarts: about 30 s): 202 s
//! in all on a quiet machine (2026-12-06).

use tpa_e2e::*;

const CLUSTER: &str = "pat-e2e";

/// The test's config.yml; `extra` is added to cluster_vars (indented by two spaces).
fn config(extra: &str) -> String {
    format!(
        "---
architecture: M1
cluster_name: {CLUSTER}
cluster_tags: {{}}

cluster_vars:
  failover_manager: patroni
  postgres_flavour: postgresql
  postgres_version: '15'
  use_local_repo_only: true
{extra}
locations:
- Name: brussels

instance_defaults:
  image: tpa/debian
  platform: docker
  vars:
    ansible_user: root

instances:
- Name: pat1
  node: 1
  location: brussels
  role: [primary, etcd]
- Name: pat2
  node: 2
  location: brussels
  role: [replica, etcd]
  upstream: pat1
- Name: pat3
  node: 3
  location: brussels
  role: [replica, etcd]
  upstream: pat1
"
    )
}

/// Runs `command` as root on `host` over SSH; (success, stdout).
fn ssh(ssh_config: &str, host: &str, command: &str) -> (bool, String) {
    run(
        "ssh",
        &["-F", ssh_config, "-o", "BatchMode=yes", host, command],
    )
}

/// Runs a query as postgres on `host` and returns its trimmed output.
fn psql(ssh_config: &str, host: &str, sql: &str) -> String {
    let command = format!(
        "sudo -iu postgres psql -XAtc '{}'",
        sql.replace('\'', r"'\''")
    );
    let (ok, out) = ssh(ssh_config, host, &command);
    assert!(ok, "psql on {host} failed: {sql}");
    out.trim().to_string()
}

/// `patronictl list` rows as (member, role, state), from its JSON output.
fn members(ssh_config: &str, host: &str) -> Vec<(String, String, String)> {
    let (ok, out) = ssh(
        ssh_config,
        host,
        &format!("sudo -iu postgres patronictl -c /etc/patroni/{CLUSTER}.yml list -f json"),
    );
    assert!(ok, "patronictl list on {host} failed: {out}");
    let rows: serde_json::Value = serde_json::from_str(&out).expect("patronictl JSON");
    let mut rows: Vec<(String, String, String)> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["Member"].as_str().unwrap_or_default().to_string(),
                r["Role"].as_str().unwrap_or_default().to_string(),
                r["State"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn patroni_with_etcd_over_tls() {
    let Some(_serial) = e2e_guard("patroni_with_etcd_over_tls") else {
        return;
    };
    ensure_image("tpa/debian:12");
    let dir = tempfile::Builder::new()
        .prefix("tpa-e2e-")
        .tempdir()
        .expect("tempdir");
    std::fs::write(dir.path().join("config.yml"), config("")).expect("config.yml");
    let _cleanup = Cleanup {
        dir: dir.path(),
        cluster: CLUSTER,
    };
    let path = dir.path().to_str().expect("UTF-8 temp path");
    let ssh_config = dir.path().join("ssh_config").display().to_string();
    let ssh_config = ssh_config.as_str();

    assert!(controller(&["download-packages", path]).status.success());
    let started = std::time::Instant::now();
    let first = controller(&["deploy", path]);
    eprintln!("first deploy: {:.1}s", started.elapsed().as_secs_f64());
    assert!(first.status.success(), "first deploy failed");

    // 1. patronictl works on every node without flags: one leader, two streaming replicas.
    // (The plain table, as a user runs it, then the JSON form to read it.)
    let (ok, table) = ssh(
        ssh_config,
        "pat2",
        &format!("sudo -iu postgres patronictl -c /etc/patroni/{CLUSTER}.yml list"),
    );
    assert!(ok && table.contains("Leader"), "{table}");
    // (Patroni 3.0 on Debian 12 says `running` for a replica, later versions `streaming`;
    // streaming itself is checked on each replica below.)
    for host in ["pat1", "pat2", "pat3"] {
        let seen: Vec<_> = members(ssh_config, host)
            .into_iter()
            .map(|(m, r, s)| {
                let s = if s == "running" && r == "Replica" {
                    "streaming".into()
                } else {
                    s
                };
                (m, r, s)
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("pat1".into(), "Leader".into(), "running".into()),
                ("pat2".into(), "Replica".into(), "streaming".into()),
                ("pat3".into(), "Replica".into(), "streaming".into()),
            ],
            "patronictl list on {host}"
        );
    }

    // (Patroni may still be (re)starting a replica's WAL receiver just after `list`.)
    wait_streaming_from(ssh_config, "pat1", &["pat2", "pat3"]);

    // A row written on the leader reaches both replicas.
    psql(
        ssh_config,
        "pat1",
        "create table e2e_pat (v text); insert into e2e_pat values ('from the leader')",
    );
    for host in ["pat2", "pat3"] {
        let mut seen = String::new();
        for _ in 0..50 {
            seen = psql(
                ssh_config,
                host,
                "select coalesce(string_agg(v, ','), '') from e2e_pat",
            );
            if seen == "from the leader" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert_eq!(seen, "from the leader", "{host}");
    }

    // Patroni owns Postgres: our unit is stopped and disabled.
    for host in ["pat1", "pat2", "pat3"] {
        let (_, out) = ssh(
            ssh_config,
            host,
            "systemctl is-enabled postgres.service; systemctl is-active postgres.service; \
             systemctl is-active patroni@pat-e2e.service",
        );
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["disabled", "inactive", "active"],
            "{host}"
        );
    }

    // etcd refuses a client without a certificate (TLS verified against the CA, so the
    // refusal is etcd's, not a certificate error of ours), and accepts one with it.
    let pat1 = host_address(dir.path(), "pat1");
    let (ok, out) = ssh(
        ssh_config,
        "pat2",
        &format!(
            "etcdctl --endpoints=https://{pat1}:2379 --cacert=/etc/tpa/ca.crt \
             --dial-timeout=3s --command-timeout=5s endpoint health 2>&1"
        ),
    );
    assert!(!ok, "etcd answered a client without a certificate: {out}");
    let (ok, out) = ssh(
        ssh_config,
        "pat2",
        &format!(
            "etcdctl --endpoints=https://{pat1}:2379 --cacert=/etc/tpa/ca.crt \
             --cert=/etc/tpa/{CLUSTER}-ha.crt --key=/etc/tpa/{CLUSTER}-ha.key \
             member list 2>&1"
        ),
    );
    assert!(ok && out.lines().count() == 3, "etcd member list: {out}");
    // Plain HTTP is not served at all.
    let (ok, _) = ssh(
        ssh_config,
        "pat2",
        &format!("etcdctl --endpoints=http://{pat1}:2379 --dial-timeout=3s endpoint health"),
    );
    assert!(!ok, "etcd answered plain HTTP");

    // The REST API: reads over TLS need no password, writes do.
    let rest = |method: &str, auth: &str| {
        let script = format!(
            "import json,ssl,urllib.request,urllib.error,base64\n\
             ctx=ssl.create_default_context(cafile='/etc/tpa/ca.crt')\n\
             req=urllib.request.Request('https://{pat1}:8008/config',method='{method}',\
             data=(b'{{}}' if '{method}'!='GET' else None),headers={{'Content-Type':'application/json'}})\n\
             auth='{auth}'\n\
             if auth: req.add_header('Authorization','Basic '+base64.b64encode(auth.encode()).decode())\n\
             try:\n  print(urllib.request.urlopen(req,context=ctx,timeout=10).status)\n\
             except urllib.error.HTTPError as e:\n  print(e.code)\n"
        );
        let (ok, out) = ssh_with_stdin(ssh_config, "pat3", "python3 -", &script);
        assert!(ok, "python on pat3");
        out.trim().to_string()
    };
    assert_eq!(rest("GET", ""), "200");
    assert_eq!(rest("PATCH", ""), "401", "an unauthenticated write");
    assert_eq!(
        rest("PATCH", "patroni:wrong"),
        "401",
        "a write with a wrong password"
    );

    // pg_rewind's role (authentication.rewind): from pat2, over TLS verify-full, with the
    // password Patroni has, it may run the functions pg_rewind calls on the leader, and is no
    // superuser.
    let (ok, out) = ssh(
        ssh_config,
        "pat2",
        &format!(
            "export PGPASSWORD=\"$(python3 -c 'import json; print(json.load(open(\"/etc/patroni/{CLUSTER}.yml\"))[\"postgresql\"][\"authentication\"][\"rewind\"][\"password\"])')\"; \
             psql -XAt \"host={pat1} dbname=postgres user=rewind sslmode=verify-full \
             sslrootcert=/etc/tpa/ca.crt\" -c \"select count(*) > 0 from pg_ls_dir('global', \
             false, false)\" -c \"select length(pg_read_binary_file('global/pg_control', 0, 8, \
             false))\" -c \"select rolsuper from pg_roles where rolname = current_user\" 2>&1"
        ),
    );
    assert!(ok, "the rewind role on pat1: {out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["t", "8", "f"],
        "the rewind role on pat1"
    );

    // A re-deploy changes nothing and restarts nothing.
    let start_times = |host: &str| psql(ssh_config, host, "select pg_postmaster_start_time()");
    let before: Vec<String> = ["pat1", "pat2", "pat3"].map(start_times).to_vec();
    let again = controller(&["deploy", path]);
    assert!(again.status.success(), "re-deploy failed");
    assert!(
        stdout(&again).contains(": 0 changed,"),
        "a re-deploy changed something:\n{}",
        stdout(&again)
    );
    let after: Vec<String> = ["pat1", "pat2", "pat3"].map(start_times).to_vec();
    assert_eq!(before, after, "a re-deploy restarted Postgres");

    // 2. status: Patroni's view of every member, the leader, etcd health; exit 0.
    wait_status_ok(path);
    let out = controller(&["status", path]);
    let table = stdout(&out);
    assert!(
        table.contains("PATRONI")
            && table.contains("ETCD")
            && table.contains("Patroni leader: pat1"),
        "{table}"
    );
    let hosts = status_json(path);
    for h in &hosts {
        let host = h["host"].as_str().unwrap_or_default();
        let state = h["patroni"]["state"].as_str().unwrap_or_default();
        assert!(matches!(state, "running" | "streaming"), "{host}: {h}");
        assert_eq!(h["patroni"]["leader"], "pat1", "{host}: {h}");
        assert_eq!(h["etcd"]["healthy"], true, "{host}: {h}");
    }

    // 3. work_mem through Patroni: on every member, no restart.
    let before: Vec<String> = ["pat1", "pat2", "pat3"].map(start_times).to_vec();
    std::fs::write(
        dir.path().join("config.yml"),
        config("  postgres_conf_settings:\n    work_mem: 7MB\n"),
    )
    .expect("config.yml");
    assert!(
        controller(&["deploy", path]).status.success(),
        "work_mem deploy"
    );
    for host in ["pat1", "pat2", "pat3"] {
        let mut seen = String::new();
        for _ in 0..60 {
            seen = psql(ssh_config, host, "show work_mem");
            if seen == "7MB" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        assert_eq!(seen, "7MB", "work_mem on {host}");
    }
    let after: Vec<String> = ["pat1", "pat2", "pat3"].map(start_times).to_vec();
    assert_eq!(before, after, "the work_mem change restarted Postgres");

    // 3b. A pg_hba.conf change is reloaded (Patroni does not watch the file), with no restart.
    let load_time = |host: &str| psql(ssh_config, host, "select pg_conf_load_time()");
    let loads: Vec<String> = ["pat1", "pat2", "pat3"].map(load_time).to_vec();
    std::fs::write(
        dir.path().join("config.yml"),
        config(
            "  postgres_conf_settings:\n    work_mem: 7MB\n  postgres_hba_settings:\n    \
             - hostssl e2e_hba e2e_hba 192.0.2.0/24 scram-sha-256\n",
        ),
    )
    .expect("config.yml");
    let out = controller(&["deploy", path]);
    assert!(out.status.success(), "pg_hba deploy");
    for (host, before) in ["pat1", "pat2", "pat3"].into_iter().zip(&loads) {
        assert_ne!(
            &load_time(host),
            before,
            "pg_hba.conf not reloaded on {host}"
        );
        let rule = psql(
            ssh_config,
            host,
            "select count(*) from pg_hba_file_rules where 'e2e_hba' = any(database)",
        );
        assert_eq!(rule, "1", "{host}");
    }
    assert_eq!(
        ["pat1", "pat2", "pat3"].map(start_times).to_vec(),
        after,
        "the pg_hba change restarted Postgres"
    );

    // 4. Switchover and back, a writer committing all along.
    psql(ssh_config, "pat1", "create table e2e_count (v int)");
    let refused = controller(&["switchover", path, "pat1"]);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("already the primary"),
        "a switchover to the leader"
    );
    let refused = controller(&["switchover", path, "nope"]);
    assert!(
        !refused.status.success(),
        "a switchover to an unknown instance"
    );
    let mut committed_in_all = 0;
    for (from, to) in [("pat1", "pat2"), ("pat2", "pat1")] {
        let writer = Writer::start(ssh_config, [from, to]);
        std::thread::sleep(std::time::Duration::from_secs(2));
        let out = controller(&["switchover", path, to]);
        assert!(out.status.success(), "switchover to {to}");
        assert!(stdout(&out).contains(&format!("switchover to {to} done in")));
        std::thread::sleep(std::time::Duration::from_secs(2));
        let (committed, attempted) = writer.stop();
        committed_in_all += committed;
        let rows: u64 = psql(ssh_config, to, "select count(*) from e2e_count")
            .parse()
            .expect("a count");
        eprintln!(
            "switchover {from} → {to}: {committed} of {attempted} inserts committed, {rows} rows"
        );
        assert!(
            committed > 0,
            "the writer committed nothing around the switchover"
        );
        assert!(
            rows >= committed_in_all,
            "rows lost in the switchover to {to}: {rows} rows, {committed_in_all} inserts committed"
        );
        let leaders: Vec<_> = members(ssh_config, to)
            .into_iter()
            .filter(|(_, role, _)| role == "Leader")
            .map(|(m, _, _)| m)
            .collect();
        assert_eq!(leaders, [to], "Patroni's leader after the switchover");
        wait_status_ok(path);
    }

    // 5. A `max_connections` change restarts every member through Patroni, one at a time
    // and the leader last, under a writer; in the same deploy, etcd members whose files
    // changed (touched here) restart one at a time, `patroni_conf_settings` is merged into
    // Patroni's file, and `work_mem`, no longer in config.yml, leaves the DCS.
    let before: Vec<String> = ["pat1", "pat2", "pat3"].map(start_times).to_vec();
    for host in ["pat1", "pat2", "pat3"] {
        assert!(ssh(ssh_config, host, "touch /etc/tpa/etcd.yml").0, "{host}");
    }
    std::fs::write(
        dir.path().join("config.yml"),
        config(
            "  postgres_hba_settings:\n    \
             - hostssl e2e_hba e2e_hba 192.0.2.0/24 scram-sha-256\n  max_connections: 300\n  \
             patroni_conf_settings:\n    log: {level: WARNING}\n",
        ),
    )
    .expect("config.yml");
    let writer = Writer::start(ssh_config, ["pat1", "pat1"]);
    let started = std::time::Instant::now();
    let out = controller(&["deploy", path]);
    let took = started.elapsed().as_secs_f64();
    let (committed, attempted) = writer.stop();
    assert!(out.status.success(), "max_connections deploy");
    eprintln!(
        "max_connections through Patroni: deploy {took:.1}s, {committed} of {attempted} inserts \
         committed meanwhile"
    );
    assert!(
        committed > 0,
        "the writer committed nothing during the restarts"
    );
    let after: Vec<String> = ["pat1", "pat2", "pat3"].map(start_times).to_vec();
    for (i, host) in ["pat1", "pat2", "pat3"].into_iter().enumerate() {
        assert_eq!(
            psql(ssh_config, host, "show max_connections"),
            "300",
            "{host}"
        );
        assert_ne!(before[i], after[i], "{host} was not restarted");
        assert_ne!(
            psql(ssh_config, host, "show work_mem"),
            "7MB",
            "{host}: work_mem left config.yml but not the DCS"
        );
    }
    // (Timestamps of one format sort as text.)
    assert!(
        after[0] > after[1] && after[0] > after[2],
        "the leader restarted before a replica: {after:?}"
    );
    let leaders: Vec<_> = members(ssh_config, "pat2")
        .into_iter()
        .filter(|(_, role, _)| role == "Leader")
        .map(|(m, _, _)| m)
        .collect();
    assert_eq!(leaders, ["pat1"], "the restarts moved the leader");
    let (_, conf) = ssh(
        ssh_config,
        "pat3",
        &format!("cat /etc/patroni/{CLUSTER}.yml"),
    );
    assert!(
        conf.contains("\"WARNING\""),
        "patroni_conf_settings: {conf}"
    );
    // etcd: each member's restart [stop began, running again] (monotonic clock, shared by the
    // containers' kernel) ends before the next one begins.
    let mut spans: Vec<(u64, u64)> = ["pat1", "pat2", "pat3"]
        .map(|host| {
            let (_, out) = ssh(
                ssh_config,
                host,
                "systemctl show etcd.service -p ActiveExitTimestampMonotonic \
                 -p ActiveEnterTimestampMonotonic",
            );
            let value = |name: &str| -> u64 {
                out.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("{host}: no {name} in {out}"))
            };
            (
                value("ActiveExitTimestampMonotonic"),
                value("ActiveEnterTimestampMonotonic"),
            )
        })
        .to_vec();
    spans.sort();
    assert!(
        spans.iter().all(|(stop, start)| stop < start && *stop > 0),
        "etcd members were not all restarted: {spans:?}"
    );
    assert!(
        spans.windows(2).all(|w| w[0].1 < w[1].0),
        "etcd members restarted at the same time: {spans:?}"
    );
    wait_status_ok(path);

    // 6. Failover: the leader's container stops.
    let rows_before: u64 = psql(ssh_config, "pat1", "select count(*) from e2e_count")
        .parse()
        .expect("a count");
    let stopped = std::time::Instant::now();
    assert!(run("docker", &["stop", "pat1"]).0, "docker stop pat1");
    let promoted = loop {
        let accepted = ["pat2", "pat3"].into_iter().find(|host| {
            ssh(
                ssh_config,
                host,
                "sudo -iu postgres psql -XAtc 'insert into e2e_count values (-1)'",
            )
            .0
        });
        if let Some(host) = accepted {
            break host;
        }
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(60),
            "no replica accepted writes within 60 s of stopping pat1"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    eprintln!(
        "failover: {promoted} accepted a write {:.1}s after pat1 was stopped",
        stopped.elapsed().as_secs_f64()
    );
    let other = if promoted == "pat2" { "pat3" } else { "pat2" };
    wait_streaming_from(ssh_config, promoted, &[other]);

    // pat1 comes back; deploy follows the live leader; pat1 rejoins.
    assert!(run("docker", &["start", "pat1"]).0, "docker start pat1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ssh(ssh_config, "pat1", "true").0 {
        assert!(
            std::time::Instant::now() < deadline,
            "pat1 did not answer SSH within 60 s of docker start"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let out = controller(&["deploy", path]);
    assert!(out.status.success(), "deploy after the failover failed");
    wait_streaming_from(ssh_config, promoted, &["pat1", other]);
    wait_status_ok(path);
    let hosts = status_json(path);
    assert!(
        hosts.iter().all(|h| h["patroni"]["leader"] == promoted),
        "Patroni's leader after pat1 rejoined: {hosts:?}"
    );
    let mut rows = String::new();
    for _ in 0..60 {
        rows = psql(ssh_config, "pat1", "select count(*) from e2e_count");
        if rows == (rows_before + 1).to_string() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(
        rows,
        (rows_before + 1).to_string(),
        "rows on pat1 after it rejoined"
    );
}

/// `status --json`, parsed.
fn status_json(path: &str) -> Vec<serde_json::Value> {
    let out = controller(&["status", "--json", path]);
    let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    hosts.as_array().expect("an array").clone()
}

/// Waits up to 90 s for `status` to exit 0.
fn wait_status_ok(path: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !controller(&["status", path]).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "status did not exit 0 within 90 s"
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// Waits up to 90 s until each of `replicas` streams from `leader` (its walsender, named after
/// the member by Patroni, is streaming).
fn wait_streaming_from(ssh_config: &str, leader: &str, replicas: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let (_, out) = ssh(
            ssh_config,
            leader,
            "sudo -iu postgres psql -XAtc \"select application_name from pg_stat_replication \
             where state = 'streaming'\"",
        );
        let streaming: Vec<&str> = out.lines().collect();
        if replicas.iter().all(|r| streaming.contains(r)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{replicas:?} do not all stream from {leader} after 90 s: {streaming:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// A writer committing one row at a time on whichever of its hosts accepts it.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl Writer {
    fn start(ssh_config: &str, hosts: [&str; 2]) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ssh_config, hosts) = (ssh_config.to_string(), hosts.map(str::to_string));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut committed, mut attempted) = (0u64, 0u64);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                attempted += 1;
                let done = hosts.iter().any(|host| {
                    ssh(
                        &ssh_config,
                        host,
                        "sudo -iu postgres psql -XAtc 'insert into e2e_count values (1)'",
                    )
                    .0
                });
                if done {
                    committed += 1;
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
            (committed, attempted)
        });
        Writer { stop, thread }
    }

    /// Stops the writer: (inserts committed, inserts attempted).
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("writer thread")
    }
}
