//! `Sql` resource: SQL against the local Postgres over its unix socket, via psql as `run_as`.
//! The `check` query returns one boolean; `t` means in state, otherwise `apply` runs.
//!
//! Example spec: `Sql { database: "postgres", check: "select exists(select 1 from pg_roles where rolname = 'app')",
//! apply: "create role app login", run_as: "postgres", port: 5432, secret: false }`.
//!
//! SQL is always sent on stdin, never in argv, because it may carry password verifiers; with
//! `secret` the SQL text and psql's error output (which quotes the statement) are masked.

use super::run::{self, Invocation};
use super::{ResourceError, State};

/// The unix socket directory psql connects through.
pub const SOCKET_DIR: &str = "/var/run/postgresql";

/// Borrowed view of a `Sql` resource.
#[derive(Debug, Clone, Copy)]
pub struct SqlSpec<'a> {
    pub database: &'a str,
    pub check: &'a str,
    pub apply: &'a str,
    pub run_as: &'a str,
    pub port: u16,
    pub secret: bool,
}

impl<'a> SqlSpec<'a> {
    /// The view of `kind` when it is a `Sql` resource.
    pub fn of(kind: &'a tpa_common::resource::Resource) -> Option<SqlSpec<'a>> {
        match kind {
            tpa_common::resource::Resource::Sql {
                database,
                check,
                apply,
                run_as,
                port,
                secret,
            } => Some(SqlSpec {
                database,
                check,
                apply,
                run_as,
                port: *port,
                secret: *secret,
            }),
            _ => None,
        }
    }

    fn user(&self) -> &str {
        if self.run_as.is_empty() {
            "postgres"
        } else {
            self.run_as
        }
    }
}

/// Runs the check query; read-only by contract of the query the controller renders.
pub fn check(spec: &SqlSpec<'_>) -> Result<State, ResourceError> {
    let output = psql(spec, spec.check, "check query")?;
    if parse_bool(&output)? {
        return Ok(State::in_state("check query returned true"));
    }
    let diff = if spec.secret {
        "# secret SQL masked\n".to_owned()
    } else {
        format!("{}\n", spec.apply.trim_end())
    };
    Ok(State::differs(Some(diff), "check query returned false"))
}

/// Runs the apply SQL (idempotent: re-checks first).
pub fn apply(spec: &SqlSpec<'_>) -> Result<String, ResourceError> {
    if parse_bool(&psql(spec, spec.check, "check query")?)? {
        return Ok("check query returned true; nothing to do".to_owned());
    }
    psql(spec, spec.apply, "apply SQL")?;
    Ok("applied SQL".to_owned())
}

/// `runuser -u USER -- psql ...`; the SQL itself goes to stdin.
pub fn psql_argv(database: &str, port: u16) -> Vec<String> {
    let port = port.to_string();
    [
        "psql",
        "-X",
        "-A",
        "-t",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        SOCKET_DIR,
        "-p",
        &port,
        "-d",
        database,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Parses the check query's output: exactly `t` or `f`.
pub fn parse_bool(output: &str) -> Result<bool, ResourceError> {
    match output.trim() {
        "t" => Ok(true),
        "f" => Ok(false),
        other => Err(ResourceError::Failed(format!(
            "check query returned `{}`, expected one boolean (t or f); fix the query in the plan",
            other.chars().take(80).collect::<String>()
        ))),
    }
}

/// Runs the check queries of many resources that share database, port and user in one psql
/// session, and returns the positions (in `specs`) of those whose check returned true.
///
/// A no-op deploy then costs one psql per database instead of one per resource. Only a hint:
/// any trouble (psql fails, a query errors, the rows do not line up) returns an empty set and
/// every resource is checked on its own as usual.
pub fn prefetch_true(specs: &[SqlSpec<'_>]) -> std::collections::HashSet<usize> {
    let mut found = std::collections::HashSet::new();
    let mut groups: std::collections::BTreeMap<(&str, u16, &str), Vec<usize>> = Default::default();
    for (i, spec) in specs.iter().enumerate() {
        groups
            .entry((spec.database, spec.port, spec.user()))
            .or_default()
            .push(i);
    }
    for ((database, port, user), members) in groups {
        if members.len() < 2 {
            continue;
        }
        let script: String = members
            .iter()
            .map(|i| format!("{};\n", specs[*i].check.trim_end().trim_end_matches(';')))
            .collect();
        let argv = psql_argv(database, port);
        let Ok(output) = run::run(&Invocation {
            argv: &argv,
            run_as: Some(user),
            env: &[],
            stdin: Some(script.as_bytes()),
        }) else {
            continue;
        };
        if !output.success() {
            continue;
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let rows: Vec<&str> = stdout.lines().collect();
        if rows.len() != members.len() {
            continue;
        }
        found.extend(
            members
                .iter()
                .zip(rows)
                .filter(|(_, row)| row.trim() == "t")
                .map(|(i, _)| *i),
        );
    }
    found
}

fn psql(spec: &SqlSpec<'_>, sql: &str, what: &str) -> Result<String, ResourceError> {
    let argv = psql_argv(spec.database, spec.port);
    let output = run::run(&Invocation {
        argv: &argv,
        run_as: Some(spec.user()),
        env: &[],
        stdin: Some(sql.as_bytes()),
    })?;
    if !output.success() {
        let detail = if spec.secret {
            "error output hidden (secret SQL)".to_owned()
        } else {
            output.tail()
        };
        return Err(ResourceError::Failed(format!(
            "psql {what} on database `{}` port {} as {} failed ({}): {detail}",
            spec.database,
            spec.port,
            spec.user(),
            output.status_text()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_never_appears_in_argv() {
        let argv = psql_argv("postgres", 5432).join(" ");
        assert_eq!(
            argv,
            "psql -X -A -t -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p 5432 -d postgres"
        );
    }

    #[test]
    fn parses_boolean_output() {
        assert!(parse_bool("t\n").expect("t"));
        assert!(!parse_bool("f").expect("f"));
        let error = parse_bool("t\nf\n").expect_err("two rows");
        assert!(error.to_string().contains("expected one boolean"));
    }

    /// A throwaway Postgres instance on the real socket dir, stopped on drop.
    struct Instance {
        _dir: tempfile::TempDir,
        data: String,
        port: u16,
        bin: std::path::PathBuf,
    }

    impl Drop for Instance {
        fn drop(&mut self) {
            let pg_ctl = self.bin.join("pg_ctl").to_string_lossy().into_owned();
            let _ = std::process::Command::new("runuser")
                .args([
                    "-u",
                    "postgres",
                    "--",
                    &pg_ctl,
                    "-D",
                    &self.data,
                    "-m",
                    "immediate",
                    "stop",
                ])
                .output();
        }
    }

    fn start_postgres() -> Option<Instance> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("postgres").is_file());
        let ready = super::super::owner::is_root()
            && std::path::Path::new(SOCKET_DIR).is_dir()
            && super::super::owner::uid("postgres").is_ok();
        let (Some(bin), true) = (bin, ready) else {
            eprintln!(
                "skipping: needs root, a postgres user, {SOCKET_DIR} and a Postgres server in /usr/lib/postgresql"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let uid = super::super::owner::uid("postgres").expect("postgres uid");
        std::os::unix::fs::chown(dir.path(), Some(uid), None).expect("chown");
        let data = dir.path().join("data").to_string_lossy().into_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let log = dir.path().join("log").to_string_lossy().into_owned();
        let as_postgres = |tool: &str, args: &[&str]| {
            let tool = bin.join(tool).to_string_lossy().into_owned();
            let status = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--", &tool])
                .args(args)
                .current_dir("/")
                .output()
                .expect("runuser");
            assert!(
                status.status.success(),
                "{tool}: {}",
                String::from_utf8_lossy(&status.stderr)
            );
        };
        as_postgres(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        let instance = Instance {
            _dir: dir,
            data: data.clone(),
            port,
            bin: bin.clone(),
        };
        let options = format!("-p {port} -k {SOCKET_DIR} -c listen_addresses=''");
        as_postgres(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
        Some(instance)
    }

    #[test]
    fn real_postgres_check_apply_and_facts() {
        let Some(pg) = start_postgres() else { return };
        let role = format!("tpa_test_{}", pg.port);
        let check_sql = format!("select exists(select 1 from pg_roles where rolname = '{role}')");
        let apply_sql = format!("create role {role} password 'SCRAM-SHA-256$4096:c2FsdA==$x:y'");
        let spec = SqlSpec {
            database: "postgres",
            check: &check_sql,
            apply: &apply_sql,
            run_as: "postgres",
            port: pg.port,
            secret: true,
        };
        let state = check(&spec).expect("check");
        assert!(!state.in_state);
        assert_eq!(state.diff.as_deref(), Some("# secret SQL masked\n"));
        assert_eq!(apply(&spec).expect("apply"), "applied SQL");
        assert!(check(&spec).expect("check").in_state, "apply converged");
        assert_eq!(
            apply(&spec).expect("apply again"),
            "check query returned true; nothing to do"
        );

        let failing = SqlSpec {
            apply: "select no_such_function()",
            check: "select false",
            secret: false,
            ..spec
        };
        let error = apply(&failing).expect_err("bad SQL");
        assert!(error.to_string().contains("no_such_function"), "{error}");

        let facts = crate::facts::postgres_facts(&pg.data, pg.port);
        assert!(facts.initialised && facts.running, "{facts:?}");
        assert_eq!(facts.in_recovery, Some(false));
        assert!(facts.start_time.is_some());
    }

    #[test]
    fn prefetch_runs_checks_together_and_gives_up_on_trouble() {
        let Some(pg) = start_postgres() else { return };
        let spec = |check: &'static str| SqlSpec {
            database: "postgres",
            check,
            apply: "select 1",
            run_as: "postgres",
            port: pg.port,
            secret: false,
        };
        let specs = [
            spec("select true"),
            spec("select false;"),
            spec("select 1 = 1"),
        ];
        let found = prefetch_true(&specs);
        assert_eq!(found, [0, 2].into_iter().collect());
        // One broken query: no hints at all, every resource is then checked on its own.
        let broken = [spec("select true"), spec("select no_such_column")];
        assert!(prefetch_true(&broken).is_empty());
        // Rows that do not line up with the queries: no hints either.
        let two_rows = [
            spec("select true"),
            spec("select true union all select true"),
        ];
        assert!(prefetch_true(&two_rows).is_empty());
    }

    #[test]
    fn prefetched_checks_are_not_trusted_after_a_change_in_the_batch() {
        use tpa_common::event::Outcome;
        use tpa_common::resource::{Resource, ResourceSpec};
        let Some(pg) = start_postgres() else { return };
        let role = format!("tpa_prefetch_{}", pg.port);
        let sql = |id: &str, check: String, apply: String| ResourceSpec {
            id: id.into(),
            kind: Resource::Sql {
                database: "postgres".into(),
                check,
                apply,
                run_as: "postgres".into(),
                port: pg.port,
                secret: false,
            },
        };
        let exists = format!("exists(select 1 from pg_roles where rolname = '{role}')");
        let batch = [
            sql(
                "a",
                format!("select {exists}"),
                format!("create role {role}"),
            ),
            // True before the batch, false once `a` created the role.
            sql("b", format!("select not {exists}"), "select 1".into()),
        ];
        let mut outcomes = Vec::new();
        crate::resource::apply_batch_blocking(&batch, false, &mut |e| outcomes.push(e.outcome));
        assert_eq!(outcomes, [Outcome::Changed, Outcome::Changed]);
    }

    #[test]
    fn secret_failure_hides_psql_output() {
        // No server listens on port 1, so psql fails and would echo connection details.
        if !super::super::owner::is_root() || !std::path::Path::new("/usr/bin/psql").exists() {
            eprintln!("skipping: needs root (runuser) and psql");
            return;
        }
        let spec = SqlSpec {
            database: "postgres",
            check: "select true",
            apply: "alter role x password 'SCRAM-SHA-256$secret'",
            run_as: "root",
            port: 1,
            secret: true,
        };
        let error = check(&spec).expect_err("no server on port 1");
        let text = error.to_string();
        assert!(text.contains("error output hidden"), "{text}");
        assert!(!text.contains("secret'"), "{text}");
    }
}
