//! Patroni with etcd (issue 10), on one cluster shared by every step: three Postgres hosts
//! (pat1 the configured primary, pat2 and pat3 its replicas), each also an etcd member.
//!
//! 1. Deploy: `patronictl -c /etc/patroni/<cluster>.yml list`, as postgres with no other
//!    flag, shows one leader and two streaming replicas; a row written on the leader reaches
//!    both replicas; etcd refuses a client without a certificate and the Patroni REST API an
//!    unauthenticated write (both asked directly); our postgres.service is disabled; a
//!    re-deploy changes nothing.
//!
//! Costs one 3-host deploy (packages from the local repository, about 2 min with images
//! cached) and one no-op re-deploy (a few seconds).

use tpa_e2e::*;

const CLUSTER: &str = "pat-e2e";

fn config() -> String {
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
    std::fs::write(dir.path().join("config.yml"), config()).expect("config.yml");
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

    for host in ["pat2", "pat3"] {
        assert_eq!(
            psql(ssh_config, host, "select status from pg_stat_wal_receiver"),
            "streaming",
            "{host}"
        );
    }

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
}
