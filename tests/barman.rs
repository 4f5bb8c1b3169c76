//! Barman scenario (issue 9, first slice): the seed deploys with chimay backing up ulb
//! (`backup_method = postgres`, WAL streamed by `barman receive-wal` on the `barman` slot);
//! `barman check` is all OK on chimay when deploy ends, `backup --list --json` shows the first
//! backup, `backup` adds a second, a no-op re-deploy changes nothing and takes no backup, and
//! neither Barman password appears in output, deploy.log, `ps` or plaintext files. Restore
//! drills: `verify-backup` passes on the newest backup (a 1000-row table counted, the
//! `verify_backup_sql` check true, its report written, the `verify_backup_schedule` timer
//! enabled), `status` shows chimay's backup health; then a table file removed from the newest
//! backup on chimay makes `verify-backup` and `status` fail with the reason, while ulb is
//! untouched and no scratch server is left. The seed carries the users fixture, so `test`
//! (TPA's checks, with 5 s of pgbench) passes on the healthy cluster with the application user
//! connecting over verify-full, and fails, naming `barman check`, once receive-wal is stopped
//! (the last step; cron held). `test` adds about 15 s.
//!
//! Costs one seed deploy (4 hosts) with its first backup, one on-demand backup and a no-op
//! re-deploy. Measured 2026-11-27 on the 2-core machine under a load average of about 10
//! (other checkouts' builds and scenarios): 368 s for the whole test; first deploy 148 s (its
//! apt installs 65–97 s), chimay's `barman` stage 23 s of it (streaming, restore point, WAL
//! switch, first backup of 22 MiB, `barman check`); on-demand backup 10.6 s; the no-op
//! re-deploy's `barman` stage 1.8 s. An idle machine has not been measured yet.
//!
//! The drills add two `verify-backup` runs, two `status` calls and the Postgres server package
//! on chimay. Measured 2026-11-27 under a load average of about 7.5: the whole test about 420 s
//! once the e2e lock was held (795 s with a wait for it); first deploy 276 s (chimay's
//! `barman` stage 30.5 s); on-demand backup 15.7 s; `verify-backup` of the healthy newest
//! backup 14.9 s end to end (recover, start and recovery 8.7 s of it), of the damaged one
//! 17.6 s (the two `status` calls were not timed).
//!
//! Then TPA's default method and archiver: config.yml switches ulb to `barman_backup_method:
//! rsync` (2 parallel jobs, `reuse_backup = link`) with `barman_archiver: true`; a re-deploy
//! rewrites chimay's server conf and the Postgres hosts' archive_command; `backup` takes an
//! rsync backup (`backup.info` says `rsync-concurrent`), `backup --list` shows it, a switched
//! segment reaches Barman through archive_command (`pg_stat_archiver`), `barman check` is all
//! OK with `ssh`, `archive_command` and `continuous archiving`, and `verify-backup` passes on
//! the rsync backup. Measured 2026-11-27 under a load average of about 7 (the whole test
//! 391 s): the step 53.3 s in all; the re-deploy 6.9 s (chimay's `barman` stage 3.6 s), the
//! rsync backup 22.3 s (the pg_basebackup one before it 17.5 s), `verify-backup` 14.6 s.

use std::time::Instant;

use tpa_e2e::*;

fn backups(path: &str) -> Vec<serde_json::Value> {
    let out = controller(&["backup", "--list", path, "--json"]);
    assert!(out.status.success(), "backup --list failed");
    serde_json::from_str::<serde_json::Value>(&stdout(&out))
        .expect("backup --list --json prints JSON")
        .as_array()
        .expect("a JSON array")
        .clone()
}

/// The seconds a stage line reports: `[chimay] barman: 12 resources, 12 changed (8.1s)`.
fn stage_seconds(output: &str, prefix: &str) -> Option<f64> {
    let line = output.lines().find(|l| l.starts_with(prefix))?;
    let open = line.rfind('(')?;
    line[open + 1..].trim_end_matches("s)").parse().ok()
}

#[test]
fn seed_is_backed_up_by_barman() {
    let Some(_serial) = e2e_guard("seed_is_backed_up_by_barman") else {
        return;
    };
    ensure_image("tpa/debian:12");
    let cluster = "e2e-barman";
    let dir = seed_cluster(cluster);
    // The restore drill's user check and its timer (the timer is only installed: it fires on
    // Sundays; verify-backup runs the same program now).
    let config = dir.path().join("config.yml");
    let users = std::fs::read_to_string(workspace_root().join("tests/fixtures/users.yml")).unwrap();
    let seed = std::fs::read_to_string(&config).unwrap().replace(
        "  use_local_repo_only: true\n",
        &format!("  use_local_repo_only: true\n{users}"),
    );
    std::fs::write(
        &config,
        seed.replace(
            "  backup: chimay\n",
            "  backup: chimay\n  vars:\n    verify_backup_schedule: 'Sun *-*-* 03:00:00'\n    \
             verify_backup_sql: select count(*) = 1000 from drill\n",
        ),
    )
    .unwrap();
    let _cleanup = Cleanup {
        dir: dir.path(),
        cluster,
    };
    let path = dir.path().to_str().expect("UTF-8 temp path");
    let ssh_config = dir.path().join("ssh_config").display().to_string();
    let ssh_config = ssh_config.as_str();

    assert!(controller(&["download-packages", path]).status.success());
    let started = Instant::now();
    let (first, snapshots) = deploy_watching_ps(path);
    assert!(first.status.success(), "first deploy failed");
    let first_out = stdout(&first);
    eprintln!(
        "first deploy: {:.1}s; chimay's barman stage {:?}s",
        started.elapsed().as_secs_f64(),
        stage_seconds(&first_out, "[chimay] barman:")
    );

    // Every check OK, as the barman user runs it.
    let (ok, check) = ssh_with_stdin(
        ssh_config,
        "chimay",
        "runuser -u barman -- barman check ulb",
        "",
    );
    assert!(ok && !check.contains("FAILED"), "barman check:\n{check}");
    for line in [
        "receive-wal running: OK",
        "replication slot: OK",
        "PostgreSQL streaming: OK",
    ] {
        assert!(
            check.contains(line),
            "barman check lacks {line:?}:\n{check}"
        );
    }
    // receive-wal, started through the agent, outlives an agent restart (an upgrade, a
    // renewal): it is not in the agent's cgroup's kill list.
    let receiver = "pgrep -u barman -f 'receive-wal ulb$'";
    let (_, before) = ssh_with_stdin(ssh_config, "chimay", receiver, "");
    let (restarted, _) = ssh_with_stdin(
        ssh_config,
        "chimay",
        "systemctl restart tpa-agent && sleep 1 && systemctl is-active tpa-agent",
        "",
    );
    assert!(restarted, "restarting the agent on chimay");
    let (_, after) = ssh_with_stdin(ssh_config, "chimay", receiver, "");
    assert!(
        !before.trim().is_empty() && before == after,
        "receive-wal did not survive the agent's restart: pid {before:?}, then {after:?}"
    );
    // Least privilege on the primary: neither role is a superuser.
    let (_, roles) = ssh_with_stdin(
        ssh_config,
        "ulb",
        "runuser -u postgres -- psql -XAtc \"select string_agg(rolname || ':' || rolsuper || \
         rolreplication, ',' order by rolname) from pg_roles where rolname like '%barman'\"",
        "",
    );
    assert_eq!(roles.trim(), "barman:falsefalse,streaming_barman:falsetrue");
    let (ok, mode) = ssh_with_stdin(
        ssh_config,
        "chimay",
        "stat -c '%U %a' /var/lib/barman/.pgpass",
        "",
    );
    assert!(ok && mode.trim() == "barman 600", "{mode}");

    let list = backups(path);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["status"], "DONE");
    assert_eq!(list[0]["server"], "ulb");
    assert!(list[0]["end_wal"].is_string() && list[0]["size_bytes"].as_u64() > Some(0));

    // A table for the drill to count, in the next backup, never written again (so no WAL
    // record rewrites its pages during recovery). Not autovacuumed either: a VACUUM of its
    // 1000 fresh rows inside the next backup's WAL range logs full-page images of every page,
    // and recovery can rebuild the file the damage below removes (the likely cause of one drill
    // that passed on a damaged backup, in an all-rsync run).
    let (ok, path_on_disk) = ssh_with_stdin(
        ssh_config,
        "ulb",
        "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -c 'create table drill with \
         (autovacuum_enabled = false) as select g as id from generate_series(1, 1000) g' -c \"select pg_relation_filepath('drill')\"",
        "",
    );
    assert!(ok, "create table drill: {path_on_disk}");
    let path_on_disk = path_on_disk.trim().to_string();

    let on_demand = Instant::now();
    assert!(controller(&["backup", path]).status.success());
    eprintln!(
        "on-demand backup: {:.1}s",
        on_demand.elapsed().as_secs_f64()
    );
    let list = backups(path);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|b| b["status"] == "DONE"), "{list:?}");
    assert!(controller(&["backup", "--list", path]).status.success());

    // The restore drill of the newest backup passes, and its report is written.
    let drill_started = Instant::now();
    let drill = controller(&["verify-backup", path]);
    let drill_out = stdout(&drill);
    eprintln!(
        "verify-backup (healthy): {:.1}s\n{drill_out}",
        drill_started.elapsed().as_secs_f64()
    );
    assert!(drill.status.success(), "verify-backup failed:\n{drill_out}");
    assert!(drill_out.contains("1000 rows"), "{drill_out}");
    assert!(
        drill_out.contains("verify_backup_sql: returned true"),
        "{drill_out}"
    );
    let reports: Vec<_> = std::fs::read_dir(dir.path().join("verify-backup"))
        .expect("verify-backup/ written")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&reports[0]).unwrap()).unwrap();
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["drills"][0]["server"], "ulb");
    assert_eq!(report["drills"][0]["backup_id"], list[1]["id"], "{report}");
    assert!(report["drills"][0]["recovery_lsn"].is_string(), "{report}");
    let (ok, timer) = ssh_with_stdin(
        ssh_config,
        "chimay",
        "systemctl is-enabled tpa-verify-backup-ulb.timer && systemctl is-active \
         tpa-verify-backup-ulb.timer && cat /var/lib/barman/tpa-verify/ulb/last.json",
        "",
    );
    assert!(ok && timer.contains("\"passed\": true"), "{timer}");

    // status shows chimay's backup health, the drill's result included.
    let status = controller(&["status", path]);
    let status_out = stdout(&status);
    assert!(status.status.success(), "status failed:\n{status_out}");
    assert!(
        status_out.contains("chimay backs up ulb: last backup ")
            && status_out.contains("receive-wal running; barman check OK; last drill passed"),
        "{status_out}"
    );

    // `test` passes on the healthy cluster: every check, five seconds of pgbench included,
    // and its report written.
    let test_started = Instant::now();
    let test = controller(&["test", path, "--pgbench-seconds", "5"]);
    let test_out = stdout(&test);
    eprintln!(
        "test --pgbench-seconds 5: {:.1}s\n{test_out}",
        test_started.elapsed().as_secs_f64()
    );
    if !test.status.success() {
        // The outputs it kept (pgbench's included) say why.
        let (_, kept) = run(
            "sh",
            &["-c", &format!("tail -n 20 {path}/test/*/*/pgbench")],
        );
        panic!(
            "test failed:\n{test_out}{}\n{kept}",
            String::from_utf8_lossy(&test.stderr)
        );
    }
    for expected in [
        "ok   [ulb] pg_control: in production (primary)",
        "ok   [achel] pg_control: in archive recovery (replica)",
        "ok   [ulb] repmgr cluster show: exit 0",
        "ok   [vub] repmgr node check: exit 0",
        "ok   [chimay] barman check ulb: barman check all OK",
        "ok   [chimay] last restore drill ulb: passed",
        "ok   [vub] ada_lovelace over TLS verify-full: connected to fosdemdb",
        "ok   [achel] write seen: after ",
        "ok   [ulb] pgbench read-write: ",
        "ok   [achel] pgbench read-only: ",
    ] {
        assert!(
            test_out.contains(expected),
            "no {expected:?} in:\n{test_out}"
        );
    }
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("test"))
        .expect("test/ written")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs[0].join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["passed"], true, "{report}");
    let controldata = std::fs::read_to_string(runs[0].join("vub/pg_controldata")).unwrap();
    assert!(controldata.contains("in archive recovery"), "{controldata}");

    // A no-op re-deploy: nothing changed anywhere, no third backup.
    let again = controller(&["deploy", path]);
    assert!(again.status.success());
    let again_out = stdout(&again);
    for line in again_out.lines().filter(|l| l.contains(" resources, ")) {
        assert!(
            line.contains(" 0 changed"),
            "re-deploy changed something: {line}"
        );
    }
    assert!(again_out.contains("[chimay] barman:"), "{again_out}");
    assert_eq!(backups(path).len(), 2);
    assert_eq!(
        controller(&["deploy", "--check", path]).status.code(),
        Some(0)
    );

    // The Barman passwords appear nowhere but in chimay's passfile.
    let log = std::fs::read_to_string(dir.path().join("deploy.log")).unwrap();
    for user in ["barman", "streaming_barman"] {
        let secret = stdout(&controller(&["show-password", path, user]))
            .trim()
            .to_string();
        assert!(secret.len() >= 16, "{user}: no generated password");
        for (what, text) in [
            (
                "deploy output",
                format!("{first_out}{}", String::from_utf8_lossy(&first.stderr)),
            ),
            ("re-deploy output", again_out.clone()),
            ("deploy.log", log.clone()),
        ] {
            assert!(
                !text.contains(&secret),
                "{user}'s password appears in the {what}"
            );
        }
        assert!(
            !snapshots.iter().any(|s| s.contains(&secret)),
            "{user}'s password appears in ps"
        );
        let (_, grep) = run("grep", &["-rlF", &secret, path]);
        assert_eq!(
            grep.trim(),
            "",
            "{user}'s password in the cluster directory"
        );
        // On the hosts, the pattern comes on stdin so it is in no process's arguments.
        for host in ["chimay", "ulb"] {
            let (_, found) = ssh_with_stdin(
                ssh_config,
                host,
                "grep -rlF -f - /etc /var/lib/barman /var/log /var/lib/postgresql \
                 /opt/postgres/data/conf.d /opt/postgres/data/log 2>/dev/null || true",
                &format!("{secret}\n"),
            );
            let found: Vec<&str> = found.lines().collect();
            let expected: &[&str] = if host == "chimay" {
                &["/var/lib/barman/.pgpass"]
            } else {
                &[]
            };
            assert_eq!(found, expected, "{user}'s password in files on {host}");
        }
    }

    // Damage the newest backup on chimay: the drill fails with the reason, and the real
    // cluster is untouched.
    let newest = list[1]["id"].as_str().unwrap().to_string();
    let (ok, _) = ssh_with_stdin(
        ssh_config,
        "chimay",
        &format!("rm /var/lib/barman/ulb/base/{newest}/data/{path_on_disk}"),
        "",
    );
    assert!(ok, "damaging the backup");
    let drill_started = Instant::now();
    let damaged = controller(&["verify-backup", path]);
    let damaged_out = format!(
        "{}{}",
        stdout(&damaged),
        String::from_utf8_lossy(&damaged.stderr)
    );
    eprintln!(
        "verify-backup (damaged): {:.1}s",
        drill_started.elapsed().as_secs_f64()
    );
    assert!(
        !damaged.status.success(),
        "a damaged backup passed:\n{damaged_out}"
    );
    assert!(
        damaged_out.contains("restore drill failed: rows postgres public.drill")
            && damaged_out.contains("could not open file"),
        "{damaged_out}"
    );
    let (ok, leftovers) = ssh_with_stdin(
        ssh_config,
        "chimay",
        "ls /var/lib/barman/tpa-verify/ulb; pgrep -u barman -f tpa-drill && echo RUNNING; true",
        "",
    );
    assert!(
        ok && !leftovers.contains("scratch") && !leftovers.contains("RUNNING"),
        "{leftovers}"
    );
    // status reports the failed drill and exits 1 with the reason.
    let status = controller(&["status", path, "--json"]);
    assert_eq!(status.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let chimay = json
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "chimay")
        .unwrap();
    assert_eq!(
        chimay["backups"][0]["last_drill"]["passed"], false,
        "{chimay}"
    );
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("the last restore drill of ulb"),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let (ok, alive) = ssh_with_stdin(
        ssh_config,
        "ulb",
        "runuser -u postgres -- psql -XAtc 'select count(*), pg_is_in_recovery() from drill'",
        "",
    );
    assert!(
        ok && alive.trim() == "1000|f",
        "ulb after the drill: {alive}"
    );

    // TPA's default method: rsync over the pinned SSH trust (barman -> postgres@ulb), and
    // barman_archiver (ulb's archive_command -> barman put-wal over postgres -> barman@chimay)
    // beside receive-wal. A re-deploy switches the server; the next backup is rsync's.
    let seed = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        seed.replace(
            "  vars:\n    verify_backup_schedule",
            "  vars:\n    barman_backup_method: rsync\n    barman_parallel_jobs: 2\n    \
             barman_archiver: true\n    verify_backup_schedule",
        ),
    )
    .unwrap();
    let rsync_started = Instant::now();
    let switched = controller(&["deploy", path]);
    let switched_out = stdout(&switched);
    assert!(
        switched.status.success(),
        "deploy with rsync:\n{switched_out}"
    );
    eprintln!(
        "re-deploy to rsync + archiver: {:.1}s; chimay's barman stage {:?}s",
        rsync_started.elapsed().as_secs_f64(),
        stage_seconds(&switched_out, "[chimay] barman:")
    );
    let on_demand = Instant::now();
    let rsync_backup = controller(&["backup", path]);
    assert!(
        rsync_backup.status.success(),
        "rsync backup:\n{}{}",
        stdout(&rsync_backup),
        String::from_utf8_lossy(&rsync_backup.stderr)
    );
    eprintln!("rsync backup: {:.1}s", on_demand.elapsed().as_secs_f64());
    let list = backups(path);
    assert_eq!(list.len(), 3, "{list:?}");
    let newest = list[2]["id"].as_str().unwrap().to_string();
    assert_eq!(list[2]["status"], "DONE", "{list:?}");
    let (ok, info) = ssh_with_stdin(
        ssh_config,
        "chimay",
        &format!("grep -E '^(mode|backup_label)=' /var/lib/barman/ulb/base/{newest}/backup.info"),
        "",
    );
    assert!(ok && info.contains("mode=rsync-concurrent"), "{info}");
    // A segment archive_command sends, and every check OK (ssh and archiving included).
    let (ok, switched_wal) = ssh_with_stdin(
        ssh_config,
        "ulb",
        "runuser -u postgres -- psql -XAtc 'select pg_walfile_name(pg_switch_wal())'",
        "",
    );
    assert!(ok, "pg_switch_wal: {switched_wal}");
    let switched_wal = switched_wal.trim().to_string();
    let mut archived = String::new();
    for _ in 0..30 {
        archived = ssh_with_stdin(
            ssh_config,
            "ulb",
            "runuser -u postgres -- psql -XAtc 'select last_archived_wal, failed_count from \
             pg_stat_archiver'",
            "",
        )
        .1;
        if archived.starts_with(&switched_wal) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert!(
        archived.starts_with(&switched_wal),
        "{switched_wal} not archived by archive_command: {archived}"
    );
    let (ok, check) = ssh_with_stdin(
        ssh_config,
        "chimay",
        "runuser -u barman -- barman check ulb",
        "",
    );
    assert!(ok && !check.contains("FAILED"), "barman check:\n{check}");
    for line in [
        "ssh: OK",
        "archive_command: OK",
        "continuous archiving: OK",
        "receive-wal running: OK",
    ] {
        assert!(
            check.contains(line),
            "barman check lacks {line:?}:\n{check}"
        );
    }
    let drill_started = Instant::now();
    let drill = controller(&["verify-backup", path]);
    let drill_out = stdout(&drill);
    eprintln!(
        "verify-backup (rsync backup): {:.1}s",
        drill_started.elapsed().as_secs_f64()
    );
    assert!(
        drill.status.success() && drill_out.contains(&newest),
        "verify-backup of the rsync backup:\n{drill_out}"
    );
    eprintln!(
        "rsync step in all: {:.1}s",
        rsync_started.elapsed().as_secs_f64()
    );

    // Barman broken (receive-wal stopped, cron held so it does not start it again): `test`
    // fails and names it.
    let (ok, stopped) = ssh_with_stdin(
        ssh_config,
        "chimay",
        "systemctl stop cron && runuser -u barman -- barman receive-wal --stop ulb",
        "",
    );
    assert!(ok, "stopping receive-wal: {stopped}");
    let broken = controller(&["test", path]);
    let broken_out = format!(
        "{}{}",
        stdout(&broken),
        String::from_utf8_lossy(&broken.stderr)
    );
    assert_eq!(broken.status.code(), Some(1), "{broken_out}");
    // Barman's check names the stopped receive-wal; repmgr's on ulb the inactive slot.
    assert!(
        broken_out.contains("FAIL [chimay] barman check ulb: barman check FAILED: ")
            && broken_out.contains("receive-wal running")
            && broken_out.contains("FAIL [ulb] repmgr node check: exit 25: ")
            && broken_out.contains("test FAILED: ")
            && broken_out.contains("[chimay] barman check ulb"),
        "{broken_out}"
    );
}
