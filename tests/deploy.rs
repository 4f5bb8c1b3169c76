//! Deploy scenario: one Postgres primary on Debian 12 (PostgreSQL 15) and on Debian 13
//! (PostgreSQL 17), from the local package repository, with agents bootstrapped over SSH.

use tpa_e2e::*;

/// Runs a query as postgres on `host` over SSH and returns its trimmed output.
fn psql(ssh_config: &str, host: &str, sql: &str) -> String {
    let command = format!("sudo -iu postgres psql -XAtc {}", shell_quote(sql));
    let (ok, out) = run(
        "ssh",
        &["-F", ssh_config, "-o", "BatchMode=yes", host, &command],
    );
    assert!(ok, "psql on {host} failed: {sql}");
    out.trim().to_string()
}

fn ssh(ssh_config: &str, host: &str, command: &str) -> (bool, String) {
    run(
        "ssh",
        &["-F", ssh_config, "-o", "BatchMode=yes", host, command],
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Rewrites config.yml as the original plus `postgres_conf_settings` lines.
fn set_conf(dir: &std::path::Path, settings: &str) {
    let path = dir.join("config.yml");
    let original = dir.join("config.yml.orig");
    if !original.exists() {
        std::fs::copy(&path, &original).unwrap();
    }
    let base = std::fs::read_to_string(&original).unwrap();
    let (head, tail) = base.split_once("\nlocations:").unwrap();
    let config = format!("{head}\n  postgres_conf_settings:\n{settings}\nlocations:{tail}");
    std::fs::write(&path, config).unwrap();
}

#[test]
fn primary_on_debian_12_converges_and_applies_changes_with_reload_or_restart() {
    let Some(scenario) = Scenario::primary(
        "primary_on_debian_12",
        "e2e-pg12",
        "pgone",
        "tpa/debian:12",
        "15",
    ) else {
        return;
    };
    let (dir, host, path) = (&scenario.dir, scenario.host.as_str(), scenario.path());
    let ssh_config = &scenario.ssh_config();

    assert!(controller(&["download-packages", path]).status.success());
    let first = controller(&["deploy", path]);
    assert!(first.status.success(), "first deploy failed");
    assert!(stdout(&first).contains("agent installed and enrolled"));

    assert_eq!(
        psql(
            ssh_config,
            host,
            "select current_setting('server_version_num')::int / 10000, current_setting('ssl'), current_setting('data_checksums'), current_setting('data_directory')"
        ),
        "15|on|on|/opt/postgres/data"
    );
    let (ok, out) = ssh(
        ssh_config,
        host,
        "systemctl is-enabled tpa-agent postgres && systemctl is-active tpa-agent postgres",
    );
    assert!(ok, "{out}");
    // The server certificate comes from the cluster CA and names the host's address.
    let address = scenario.address();
    let ca = dir.path().join("ca.crt");
    let (ok, out) = run(
        "sh",
        &[
            "-c",
            &format!(
                "openssl s_client -connect {address}:5432 -starttls postgres -CAfile {} -verify_ip {address} -verify_return_error </dev/null 2>&1",
                ca.display()
            ),
        ],
    );
    assert!(ok && out.contains("Verify return code: 0 (ok)"), "{out}");

    let started = psql(ssh_config, host, "select pg_postmaster_start_time()");
    let again = controller(&["deploy", path]);
    assert!(again.status.success());
    assert!(
        stdout(&again).contains(": 0 changed,"),
        "re-deploy changed something"
    );
    assert_eq!(
        psql(ssh_config, host, "select pg_postmaster_start_time()"),
        started,
        "re-deploy restarted postgres"
    );
    assert_eq!(
        controller(&["deploy", "--check", path]).status.code(),
        Some(0)
    );

    // A setting a reload applies: reloaded, not restarted.
    set_conf(dir.path(), "    work_mem: 24MB");
    let check = controller(&["deploy", "--check", path]);
    assert_eq!(
        check.status.code(),
        Some(2),
        "--check must report pending changes"
    );
    assert!(
        stdout(&check).contains("9900-tpa_postgres_conf_settings.conf"),
        "{}",
        stdout(&check)
    );
    let loaded = psql(ssh_config, host, "select pg_conf_load_time()");
    assert!(controller(&["deploy", path]).status.success());
    assert_eq!(psql(ssh_config, host, "show work_mem"), "24MB");
    assert_eq!(
        psql(ssh_config, host, "select pg_postmaster_start_time()"),
        started,
        "a reload setting restarted postgres"
    );
    assert_ne!(
        psql(ssh_config, host, "select pg_conf_load_time()"),
        loaded,
        "postgres was not reloaded"
    );

    // A setting that needs a restart: restarted.
    set_conf(
        dir.path(),
        "    work_mem: 24MB\n    max_locks_per_transaction: 128",
    );
    assert!(controller(&["deploy", path]).status.success());
    assert_eq!(
        psql(ssh_config, host, "show max_locks_per_transaction"),
        "128"
    );
    assert_ne!(
        psql(ssh_config, host, "select pg_postmaster_start_time()"),
        started,
        "postgres was not restarted"
    );

    // A changed agent binary on the host is replaced (and the agent restarted), not re-enrolled.
    assert!(ssh(ssh_config, host, "cp /usr/local/bin/tpa-agent /root/a && printf x >> /root/a && mv /root/a /usr/local/bin/tpa-agent").0);
    let replaced = controller(&["deploy", path]);
    assert!(replaced.status.success());
    assert!(
        stdout(&replaced).contains("agent updated"),
        "{}",
        stdout(&replaced)
    );

    // The agent and Postgres come back after the host restarts; nothing to change then.
    assert!(run("docker", &["restart", host]).0);
    let mut converged = false;
    for _ in 0..30 {
        let out = controller(&["deploy", path]);
        if out.status.success() {
            assert!(
                stdout(&out).contains("agent current"),
                "agent was re-bootstrapped after a reboot"
            );
            converged = stdout(&out).contains(": 0 changed,");
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert!(
        converged,
        "deploy after a host restart did not converge with 0 changes"
    );
}

#[test]
fn primary_on_debian_13_gets_postgres_17_and_recovers_from_a_failed_deploy() {
    let Some(scenario) = Scenario::primary(
        "primary_on_debian_13",
        "e2e-pg13",
        "pgthirteen",
        "tpa/debian:13",
        "17",
    ) else {
        return;
    };
    let (dir, host, path) = (&scenario.dir, scenario.host.as_str(), scenario.path());
    let ssh_config = &scenario.ssh_config();
    assert!(controller(&["download-packages", path]).status.success());

    // The agent killed while dpkg is installing packages: the deploy fails naming the host and
    // stage; nothing is left that the next deploy cannot finish.
    let deploy = std::process::Command::new(controller_bin())
        .args(["deploy", path])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut killed = false;
    for _ in 0..600 {
        if run("docker", &["exec", host, "pgrep", "-x", "dpkg"]).0 {
            killed = run(
                "docker",
                &["exec", host, "pkill", "-9", "-f", "tpa-agent serve"],
            )
            .0;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let interrupted = deploy.wait_with_output().unwrap();
    assert!(killed, "dpkg never ran, or the agent could not be killed");
    assert!(
        !interrupted.status.success(),
        "deploy succeeded although its agent was killed"
    );
    let stderr = String::from_utf8_lossy(&interrupted.stderr);
    assert!(stderr.contains(&format!("{host} sys:")), "{stderr}");

    // A resource that fails: the error names the host and the resource, and the next deploy
    // finishes the job without manual clean-up.
    let config_path = dir.path().join("config.yml");
    let good = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        good.replace(
            "    ansible_user: root\n",
            "    ansible_user: root\n    postgres_locale: xx_XX.UTF-8\n",
        ),
    )
    .unwrap();
    let failed = controller(&["deploy", path]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains(&format!("{host} postgres-install: command:initdb failed")),
        "{stderr}"
    );
    std::fs::write(&config_path, good).unwrap();
    let fixed = controller(&["deploy", path]);
    assert!(fixed.status.success(), "deploy after the fix failed");

    assert_eq!(
        psql(
            ssh_config,
            host,
            "select current_setting('server_version_num')::int / 10000, current_setting('ssl')"
        ),
        "17|on"
    );
}
