//! Users, databases and secrets: generated passwords the operator can retrieve, an
//! application connecting from this machine over TLS with `verify-full`, idempotent
//! re-deploys, `deploy --check` showing exactly what an edit would change, and passwords
//! that never show up in output, logs or process arguments.

use std::process::Command;

use tpa_e2e::*;

/// The users and database, as lines under `cluster_vars`.
const USERS: &str = include_str!("fixtures/users.yml");

/// psql from this machine to `address`; returns (success, stdout + stderr).
fn psql(
    address: &str,
    ca: &str,
    user: &str,
    password: &str,
    sslmode: &str,
    sql: &str,
) -> (bool, String) {
    let conninfo = format!(
        "host={address} port=5432 user={user} dbname=fosdemdb sslmode={sslmode} sslrootcert={ca} connect_timeout=5"
    );
    let out = Command::new("psql")
        .args([&conninfo, "-XAtc", sql])
        .env("PGPASSWORD", password)
        .output()
        .expect("psql (install postgresql-client)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn users_databases_passwords_and_check() {
    let Some(scenario) = Scenario::primary(
        "users_databases_passwords_and_check",
        "e2e-users",
        "pgusers",
        "tpa/debian:12",
        "15",
    ) else {
        return;
    };
    let (dir, path) = (&scenario.dir, scenario.path());
    let config_path = dir.path().join("config.yml");
    let base = std::fs::read_to_string(&config_path).unwrap();
    let with_users = base.replace(
        "  use_local_repo_only: true\n",
        &format!("  use_local_repo_only: true\n{USERS}"),
    );
    std::fs::write(&config_path, &with_users).unwrap();

    assert!(controller(&["download-packages", path]).status.success());
    let (first, snapshots) = deploy_watching_ps(path);
    assert!(first.status.success(), "deploy failed");
    assert!(
        snapshots.len() > 10,
        "too few process snapshots: {}",
        snapshots.len()
    );

    let show = controller(&["show-password", path, "ada_lovelace"]);
    assert!(show.status.success());
    let password = stdout(&show).trim().to_string();
    assert!(password.len() >= 16, "generated password too short");
    let slonik = stdout(&controller(&["show-password", path, "slonik"]))
        .trim()
        .to_string();

    let address = scenario.address();
    let ca = dir.path().join("ca.crt");
    let ca = ca.to_str().unwrap();

    // The application connects from this machine, verifying the server certificate fully.
    let (ok, out) = psql(
        &address,
        ca,
        "ada_lovelace",
        &password,
        "verify-full",
        "select current_user, rolsuper, (select pg_get_userbyid(datdba) from pg_database where datname = 'fosdemdb') \
         from pg_roles where rolname = current_user",
    );
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "ada_lovelace|f|ada_lovelace");
    let (ok, out) = psql(
        &address,
        ca,
        "slonik",
        &slonik,
        "verify-full",
        "select rolsuper from pg_roles where rolname = current_user",
    );
    assert!(ok && out.trim() == "t", "{out}");
    // No TLS, or the wrong password: refused.
    let (ok, out) = psql(
        &address,
        ca,
        "ada_lovelace",
        &password,
        "disable",
        "select 1",
    );
    assert!(!ok && out.contains("no pg_hba.conf entry"), "{out}");
    let (ok, out) = psql(
        &address,
        ca,
        "ada_lovelace",
        "not-the-password",
        "verify-full",
        "select 1",
    );
    assert!(
        !ok && out.contains("password authentication failed"),
        "{out}"
    );

    let again = controller(&["deploy", path]);
    assert!(again.status.success());
    assert!(
        stdout(&again).contains(": 0 changed,"),
        "re-deploy changed something"
    );

    // Edit config.yml: a new user and a new setting. --check lists exactly those.
    let edited = with_users
        .replace(
            "  postgres_databases:\n",
            "  - username: grace\n  postgres_databases:\n",
        )
        .replace(
            "  use_local_repo_only: true\n",
            "  use_local_repo_only: true\n  postgres_conf_settings:\n    work_mem: 32MB\n",
        );
    std::fs::write(&config_path, edited).unwrap();
    let check = controller(&["deploy", "--check", path]);
    assert_eq!(check.status.code(), Some(2));
    let planned: Vec<String> = stdout(&check)
        .lines()
        .filter(|l| l.contains("  would change "))
        .map(|l| {
            l.split("would change ")
                .nth(1)
                .unwrap()
                .split(':')
                .take(2)
                .collect::<Vec<_>>()
                .join(":")
        })
        .collect();
    assert_eq!(
        planned,
        [
            "file:/opt/postgres/data/conf.d/9900-tpa_postgres_conf_settings.conf",
            "service:postgres.service",
            "role:grace"
        ],
        "{}",
        stdout(&check)
    );
    assert!(
        stdout(&check).contains("would change service:postgres.service: reload"),
        "a work_mem change must plan a reload, not a restart"
    );
    let applied = controller(&["deploy", path]);
    assert!(applied.status.success());
    assert_eq!(
        controller(&["deploy", "--check", path]).status.code(),
        Some(0)
    );

    // Passwords appear nowhere: output, the deploy log, process arguments, cluster files.
    let grace = stdout(&controller(&["show-password", path, "grace"]))
        .trim()
        .to_string();
    let log = std::fs::read_to_string(dir.path().join("deploy.log")).unwrap();
    for secret in [&password, &slonik, &grace] {
        for (what, text) in [
            (
                "deploy output",
                format!(
                    "{}{}",
                    stdout(&first),
                    String::from_utf8_lossy(&first.stderr)
                ),
            ),
            ("re-deploy output", stdout(&again)),
            ("check output", stdout(&check)),
            ("deploy output", stdout(&applied)),
            ("deploy.log", log.clone()),
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "a password appears in the {what}"
            );
        }
        assert!(
            !snapshots.iter().any(|s| s.contains(secret.as_str())),
            "a password appears in ps"
        );
        let (_, grep) = run("grep", &["-rlF", secret, dir.path().to_str().unwrap()]);
        assert_eq!(
            grep.trim(),
            "",
            "a password appears in a file of the cluster directory"
        );
    }
}
