//! Deploy scenario: one Postgres primary on Debian 12 (PostgreSQL 15) and on Debian 13
//! (PostgreSQL 17), with agents bootstrapped over SSH. The Debian 12 one installs from the
//! local package repository; the Debian 13 one is a host "with internet": no local
//! repository, its packages from signed apt repositories named in config.yml (a mirror over
//! HTTP stands in for the internet; about 3 s more). It also survives an agent killed
//! mid-deploy, a failed resource, the controller killed mid-deploy (about 15 s more) and a
//! reboot (about 20 s more).

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

/// One hook for every point a single primary has, linked under each point's name: it appends
/// what it sees (its environment, whether initdb ran) to /var/tmp/hk-hooks.log and says hello.
const HOOK: &str = r#"#!/bin/sh
set -eu
if [ -e "$TPA_DATA_DIR/PG_VERSION" ]; then data=initialised; else data=empty; fi
echo "$TPA_HOOK host=$TPA_HOST cluster=$TPA_CLUSTER roles=$TPA_ROLES pg=$TPA_POSTGRES_ROLE v=$TPA_POSTGRES_VERSION port=$TPA_PORT primary=$TPA_PRIMARY upstream=$TPA_UPSTREAM node=$TPA_NODE location=$TPA_LOCATION data=$data" >> /var/tmp/hk-hooks.log
echo "hook $TPA_HOOK says hello from $TPA_HOST"
"#;

const HOOK_POINTS: [&str; 6] = [
    "pre-deploy",
    "post-repo",
    "pre-initdb",
    "postgres-config",
    "postgres-config-final",
    "post-deploy",
];

fn write_hooks(hooks: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(hooks).unwrap();
    // The script itself is pre-deploy; the other points link to it (links inside hooks/ are
    // fine).
    let script = hooks.join("pre-deploy");
    std::fs::write(&script, HOOK).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    for point in &HOOK_POINTS[1..] {
        let _ = std::fs::remove_file(hooks.join(point));
        std::os::unix::fs::symlink("pre-deploy", hooks.join(point)).unwrap();
    }
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
    // Hooks (docs/hooks.md) ride along this scenario: they run in every deploy below and must
    // never count as changes. What they add costs about 10 s (one failing and one fixing deploy,
    // a few `cmd` runs); barman-pre-config is placed by the planner's unit tests.
    let hooks = dir.path().join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::write(hooks.join("pre-deploy.yml"), "- debug: msg=hi\n").unwrap();
    let refused = controller(&["deploy", path]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        !stdout(&refused).contains("provisioned"),
        "the refused deploy ran provision:\n{}",
        stdout(&refused)
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("hooks/pre-deploy.yml: TPA's Ansible task hooks are not supported"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    std::fs::remove_file(hooks.join("pre-deploy.yml")).unwrap();
    write_hooks(&hooks);
    let first = controller(&["deploy", path]);
    assert!(first.status.success(), "first deploy failed");
    assert!(stdout(&first).contains("agent installed and enrolled"));
    // The host started from a package layer (docs/platforms.md): its packages were in place.
    let (_, image) = run("docker", &["inspect", "-f", "{{.Config.Image}}", host]);
    assert!(image.trim().starts_with("tpa/debian:12-pkgs-"), "{image}");
    let log = std::fs::read_to_string(dir.path().join("deploy.log")).unwrap();
    assert!(
        log.contains(&format!("[{host}] sys unchanged packages:base")),
        "deploy installed packages on a layered host:\n{log}"
    );
    for point in HOOK_POINTS {
        assert!(
            stdout(&first).contains(&format!(
                "[{host}] {point} | hook {point} says hello from {host}"
            )),
            "{}",
            stdout(&first)
        );
    }
    let seen = |ssh_config: &str| ssh(ssh_config, host, "cat /var/tmp/hk-hooks.log").1;
    let expected: String = HOOK_POINTS
        .iter()
        .map(|point| {
            let data = if ["pre-deploy", "post-repo", "pre-initdb"].contains(point) {
                "empty"
            } else {
                "initialised"
            };
            format!(
                "{point} host={host} cluster=e2e-pg12 roles=primary,postgres pg=primary v=15 \
                 port=5432 primary={host} upstream= node=1 location=main data={data}\n"
            )
        })
        .collect();
    assert_eq!(
        seen(ssh_config),
        expected,
        "hooks ran out of order or saw the wrong environment"
    );
    let log = std::fs::read_to_string(dir.path().join("deploy.log")).unwrap();
    assert!(
        log.contains(&format!("| hook post-deploy says hello from {host}")),
        "{log}"
    );

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
    // Hooks run on every deploy, and are reported apart from changes.
    assert!(
        stdout(&again).contains("; 6 hooks ran (hooks run on every deploy"),
        "{}",
        stdout(&again)
    );
    assert_eq!(seen(ssh_config).lines().count(), 12);
    assert_eq!(
        psql(ssh_config, host, "select pg_postmaster_start_time()"),
        started,
        "re-deploy restarted postgres"
    );
    let check = controller(&["deploy", "--check", path]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "hooks alone are no pending change"
    );
    assert!(stdout(&check).contains("; 6 hooks would run ("));
    for point in HOOK_POINTS {
        assert!(
            stdout(&check).contains(&format!("[{host}]   would run hook {point}")),
            "{}",
            stdout(&check)
        );
    }
    assert_eq!(seen(ssh_config).lines().count(), 12, "--check ran a hook");

    // A failing hook stops the host's deploy, naming hook, host, exit status and its last
    // lines; what depends on it (post-deploy) is skipped; fixed, the next deploy completes.
    std::fs::remove_file(hooks.join("postgres-config")).unwrap();
    std::fs::write(
        hooks.join("postgres-config"),
        "#!/bin/sh\necho checking the disks\necho 'disk too small' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(
        hooks.join("postgres-config"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let failed = controller(&["deploy", path]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains(&format!(
            "{host} postgres-config: hook postgres-config failed on {host}: exit status 3; the \
             last lines of its output:\n      | checking the disks\n      | disk too small"
        )),
        "{stderr}"
    );
    assert!(
        stdout(&failed).contains(&format!("skipped ({host} postgres-config did not succeed)")),
        "{}",
        stdout(&failed)
    );
    write_hooks(&hooks);
    let fixed = controller(&["deploy", path]);
    assert!(
        fixed.status.success(),
        "deploy after fixing the hook failed"
    );
    assert!(
        stdout(&fixed).contains(": 0 changed,"),
        "{}",
        stdout(&fixed)
    );

    // cmd: every host, a role, a failing command, a bad selector; ssh.
    let all = controller(&[
        "cmd",
        path,
        "all",
        "--",
        "sh",
        "-c",
        "echo hi from $(hostname)",
    ]);
    assert!(all.status.success());
    assert!(
        stdout(&all).contains(&format!("==> {host} (exit 0, ")),
        "{}",
        stdout(&all)
    );
    assert!(stdout(&all).contains(&format!("hi from {host}")));
    let failing = controller(&["cmd", path, "role:primary", "--", "sh", "-c", "exit 4"]);
    assert_eq!(failing.status.code(), Some(1));
    assert!(stdout(&failing).contains(&format!("failed on {host}: {host} 4")));
    let bad = controller(&["cmd", path, "role:replicas", "--", "true"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("bad host selector `role:replicas`: no role `replicas`"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let none = controller(&["cmd", path, "role:replica", "--", "true"]);
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("`role:replica` selects no deployed host")
    );
    let over_ssh = controller(&["ssh", path, host, "cat", "/etc/hostname"]);
    assert!(over_ssh.status.success());
    assert_eq!(stdout(&over_ssh).trim(), host);
    assert!(!controller(&["ssh", path, "nope"]).status.success());

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
    // Edited unit files of loaded units (the agent's, Postgres's) are put back, and systemd
    // reloads them: the agent skips the reload only when systemd has read the file as it is.
    assert!(ssh(ssh_config, host, "cp /usr/local/bin/tpa-agent /root/a && printf x >> /root/a && mv /root/a /usr/local/bin/tpa-agent").0);
    let units = ["tpa-agent.service", "postgres.service"];
    for unit in units {
        let edit = format!(
            "echo '# edited' >> /etc/systemd/system/{unit} && systemctl show --property=NeedDaemonReload --value {unit}"
        );
        let (ok, need) = ssh(ssh_config, host, &edit);
        assert!(ok && need.trim() == "yes", "{unit}: {need}");
    }
    let replaced = controller(&["deploy", path]);
    assert!(replaced.status.success());
    assert!(
        stdout(&replaced).contains("agent updated"),
        "{}",
        stdout(&replaced)
    );
    for unit in units {
        let after = format!(
            "grep -c edited /etc/systemd/system/{unit}; systemctl show --property=NeedDaemonReload --value {unit}"
        );
        assert_eq!(
            ssh(ssh_config, host, &after).1.trim(),
            "0\nno",
            "{unit}: put back and reloaded"
        );
    }

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
    // A host with internet: no local repository in the cluster directory, so its packages
    // come from the apt repositories of apt_repository_list. Here that is PGDG (unreachable
    // without internet: apt skips it with a warning, as it does the image's own Debian
    // sources) and a mirror over HTTP on the cluster network, holding what download-packages
    // fetched and signed with a key made for the test. The host starts from the plain image,
    // so deploy installs its packages and the agent can be killed in the middle of dpkg.
    assert!(controller(&["download-packages", path]).status.success());
    let mirror = tempfile::tempdir().unwrap();
    let local_repo = dir.path().join("local-repo");
    for entry in std::fs::read_dir(local_repo.join("Debian/13")).unwrap() {
        let entry = entry.unwrap();
        std::fs::rename(entry.path(), mirror.path().join(entry.file_name())).unwrap();
    }
    std::fs::remove_dir_all(&local_repo).unwrap();
    let key = mirror::SigningKey::new("tpa e2e mirror");
    key.sign_release(mirror.path());
    std::fs::write(mirror.path().join("key.asc"), key.public()).unwrap();
    assert!(controller(&["provision", path]).status.success());
    let server = mirror::serve(&mirror::gateway(host), mirror.path().to_path_buf());
    let config = dir.path().join("config.yml");
    let with_key_id = |key_id: &str| {
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "  use_local_repo_only: true\n",
            "  docker_package_layer: false\n",
        );
        let (vars, rest) = text.split_once("\nlocations:").unwrap();
        let vars = vars.split("  apt_repository_list:").next().unwrap();
        let repos = format!(
            "  apt_repository_list: [PGDG, mirror]\n  apt_repositories:\n    mirror:\n      \
             repo: deb http://{server}/ ./\n      key_url: http://{server}/key.asc\n      \
             key_id: {key_id}\n"
        );
        std::fs::write(&config, format!("{vars}\n{repos}\nlocations:{rest}")).unwrap();
    };
    // A key that is not the one key_id names stops the deploy before the host is touched.
    with_key_id("0123456789ABCDEF0123456789ABCDEF01234567");
    let refused = controller(&["deploy", path]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("apt_repositories.mirror")
            && stderr.contains(&format!("fingerprint {}", key.fingerprint))
            && stderr.contains("does not end with key_id"),
        "{stderr}"
    );
    assert!(
        !run(
            "docker",
            &[
                "exec",
                host,
                "test",
                "-e",
                "/etc/systemd/system/tpa-agent.service"
            ]
        )
        .0,
        "the refused deploy installed the agent"
    );
    with_key_id(&key.fingerprint[24..]);

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
    // The controller itself killed (SIGKILL) mid-deploy, once initdb has begun: what the agent
    // was applying finishes or is redone, the cluster lock dies with the process, and the next
    // deploy finishes the job; the one after changes nothing.
    std::fs::write(&config_path, good).unwrap();
    let mut deploy = std::process::Command::new(controller_bin())
        .args(["deploy", path])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut began = false;
    for _ in 0..1500 {
        if run(
            "docker",
            &["exec", host, "test", "-e", "/opt/postgres/data/PG_VERSION"],
        )
        .0
        {
            began = true;
            break;
        }
        if deploy.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(began, "initdb never began, or the deploy ended before it");
    deploy.kill().unwrap();
    assert!(
        !deploy.wait().unwrap().success(),
        "the killed deploy succeeded"
    );
    let fixed = controller(&["deploy", path]);
    assert!(
        fixed.status.success(),
        "deploy after the killed one failed:\n{}",
        String::from_utf8_lossy(&fixed.stderr)
    );
    let again = controller(&["deploy", path]);
    assert!(
        stdout(&again).contains(": 0 changed,"),
        "the deploy after completing one changed something:\n{}",
        stdout(&again)
    );

    // A reboot of the host (the container restarted: systemd brings up the agent and
    // Postgres): status is healthy again and a deploy changes nothing.
    assert!(run("docker", &["restart", host]).0, "docker restart {host}");
    let mut healthy = String::new();
    for _ in 0..60 {
        let out = controller(&["status", path]);
        if out.status.success() {
            healthy = stdout(&out);
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert!(
        healthy.contains(" up "),
        "status did not exit 0 within 60 s of the reboot"
    );
    let after_reboot = controller(&["deploy", path]);
    assert!(
        stdout(&after_reboot).contains(": 0 changed,"),
        "the deploy after the reboot changed something:\n{}",
        stdout(&after_reboot)
    );

    assert_eq!(
        psql(
            ssh_config,
            host,
            "select current_setting('server_version_num')::int / 10000, current_setting('ssl')"
        ),
        "17|on"
    );

    // Where the packages came from: the mirror, pinned to its key; PGDG's source and key are
    // there for trixie; no local repository; the key is kept in the cluster directory.
    let (_, source) = ssh(
        ssh_config,
        host,
        "cat /etc/apt/sources.list.d/tpa-mirror.list",
    );
    assert!(
        source.contains(&format!(
            "deb [signed-by=/etc/apt/keyrings/tpa-mirror.asc] http://{server}/ ./"
        )),
        "{source}"
    );
    let (_, pgdg) = ssh(
        ssh_config,
        host,
        "cat /etc/apt/sources.list.d/tpa-PGDG.list",
    );
    assert!(
        pgdg.contains(
            "deb [signed-by=/etc/apt/keyrings/tpa-PGDG.asc] \
             https://apt.postgresql.org/pub/repos/apt trixie-pgdg main"
        ),
        "{pgdg}"
    );
    let (_, policy) = ssh(ssh_config, host, "apt-cache policy postgresql-17");
    assert!(policy.contains(&format!("http://{server} ./")), "{policy}");
    assert!(
        !ssh(
            ssh_config,
            host,
            "test -e /etc/apt/sources.list.d/tpa-local-repo.list"
        )
        .0
    );
    let kept = std::fs::read(dir.path().join("apt-keys/mirror.asc")).unwrap();
    assert_eq!(kept, key.public());
    // apt really checks the signature: an index signed by another key is refused.
    let other = mirror::SigningKey::new("tpa e2e impostor");
    other.sign_release(mirror.path());
    let (_, out) = ssh(ssh_config, host, "apt-get update 2>&1");
    let mirror_line = format!("http://{server} ./ InRelease");
    assert!(
        out.lines()
            .any(|l| l.starts_with("Err:") && l.contains(&mirror_line)),
        "apt accepted an index signed by another key:\n{out}"
    );
}
