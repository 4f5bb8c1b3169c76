//! `Command` resource: a guarded command. It runs only when its `creates` path does not exist,
//! its `unless` command exits non-zero and its `unless_sql` fails (read-only SQL the agent runs
//! itself, see [`super::psql::read_rows`]); without guards it runs on every apply.
//!
//! Example spec: `Command { argv: ["/usr/lib/postgresql/15/bin/initdb", "-D", "/opt/postgres/data"],
//! creates: Some("/opt/postgres/data/PG_VERSION"), unless: None, run_as: Some("postgres"), env: [], secret_env: false,
//! timeout_secs: None, unless_sql: None }`.
//!
//! Environment values are passed through the process environment and never logged. With
//! `secret_env` the command's output is left out of failure messages as well. A command that
//! runs longer than its `timeout_secs` (or the agent's default) is killed with its process group.

use std::path::Path;
use std::time::Duration;

use tpa_common::resource::{Command, SqlText};

use super::psql::{self, Target};
use super::run::{self, Invocation};
use super::{Apply, Ctx, ResourceError, State};

impl Apply for Command {
    /// Evaluates the guards; runs only the read-only `unless` command, never `argv`.
    fn check(&self, ctx: &Ctx) -> Result<State, ResourceError> {
        if self.argv.is_empty() {
            return Err(ResourceError::Invalid("command argv is empty".to_owned()));
        }
        if let Some(path) = &self.creates
            && Path::new(path).exists()
        {
            return Ok(State::in_state(format!("{path} exists")));
        }
        if let Some(unless) = &self.unless {
            let env = self.env();
            let guard = run::run_for(
                &Invocation {
                    argv: unless,
                    run_as: self.run_as.as_deref(),
                    env: &env,
                    stdin: None,
                },
                self.timeout(ctx),
            );
            match guard {
                Ok(output) if output.success() => {
                    return Ok(State::in_state(format!("`{}` succeeded", unless.join(" "))));
                }
                Ok(_) => {}
                // A guard program that is not there yet (a helper an earlier resource of the
                // batch writes, seen by `deploy --check` on a new host) has not passed.
                Err(ResourceError::Spawn { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(guard) = &self.unless_sql {
            let target = Target {
                database: &guard.database,
                port: guard.port,
                user: "postgres",
            };
            let sql = SqlText::plain(guard.sql.as_str());
            let limit = self.timeout(ctx);
            // Any failure, a server that is down included, means the guard has not passed.
            if psql::read_rows(target, &sql, "SQL guard", limit, &ctx.timeouts).is_ok() {
                return Ok(State::in_state(format!(
                    "SQL guard `{}` succeeded",
                    guard.sql
                )));
            }
        }
        Ok(State::differs(
            Some(format!("$ {}\n", self.argv.join(" "))),
            reason(self),
        ))
    }

    /// Runs `argv`; fails with its exit status and (unless `secret_env`) the tail of its output.
    fn apply(&self, ctx: &mut Ctx) -> Result<String, ResourceError> {
        let env = self.env();
        let output = run::run_for(
            &Invocation {
                argv: &self.argv,
                run_as: self.run_as.as_deref(),
                env: &env,
                stdin: None,
            },
            self.timeout(ctx),
        )?;
        let program = self.argv.first().map_or("", String::as_str);
        if !output.success() {
            let detail = if self.secret_env {
                "output hidden (secret environment)".to_owned()
            } else {
                output.tail()
            };
            return Err(ResourceError::Failed(format!(
                "`{program}` failed ({}): {detail}",
                output.status_text()
            )));
        }
        // Lines starting with `tpa: ` are the command's own report (e.g. how a former primary
        // was rejoined); they are shown with the change.
        let report: Vec<String> = if self.secret_env {
            vec![]
        } else {
            output
                .stdout_text()
                .lines()
                .filter_map(|l| l.strip_prefix("tpa: "))
                .map(str::to_owned)
                .collect()
        };
        if report.is_empty() {
            Ok(format!("ran `{program}`"))
        } else {
            Ok(format!("ran `{program}`: {}", report.join("; ")))
        }
    }
}

trait Runtime {
    fn env(&self) -> Vec<(String, String)>;
    fn timeout(&self, ctx: &Ctx) -> Duration;
}

impl Runtime for Command {
    /// The environment for the child; the values leave their `Secret` wrapper only here.
    fn env(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|e| (e.name.clone(), e.value.expose().clone()))
            .collect()
    }

    fn timeout(&self, ctx: &Ctx) -> Duration {
        self.timeout_secs.map_or(ctx.timeouts.command, |secs| {
            Duration::from_secs(secs.into())
        })
    }
}

/// Why a command is out of state: each of its guards that did not pass.
fn reason(command: &Command) -> String {
    let mut why = Vec::new();
    if let Some(path) = &command.creates {
        why.push(format!("{path} does not exist"));
    }
    if let Some(unless) = &command.unless {
        why.push(format!("`{}` failed", unless.join(" ")));
    }
    if let Some(guard) = &command.unless_sql {
        why.push(format!("SQL guard `{}` failed", guard.sql));
    }
    if why.is_empty() {
        "unguarded command runs on every apply".to_owned()
    } else {
        why.join(" and ")
    }
}

#[cfg(test)]
mod tests {
    use tpa_common::resource::EnvVar;

    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn command(argv: &[&str]) -> Command {
        Command {
            argv: strings(argv),
            creates: None,
            unless: None,
            run_as: None,
            env: vec![],
            secret_env: false,
            timeout_secs: None,
            unless_sql: None,
        }
    }

    #[test]
    fn creates_guard() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("done");
        let marker_str = marker.to_str().expect("utf8");
        let touch = Command {
            creates: Some(marker_str.to_owned()),
            ..command(&["touch", marker_str])
        };
        let mut ctx = Ctx::default();
        let state = touch.check(&ctx).expect("check");
        assert!(!state.in_state);
        assert!(state.message.contains("does not exist"));
        assert!(!marker.exists(), "check must not run the command");
        touch.apply(&mut ctx).expect("apply");
        assert!(touch.check(&ctx).expect("check").in_state);
    }

    #[test]
    fn unless_guard_runs_but_command_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("ran");
        let touch = command(&["touch", marker.to_str().expect("utf8")]);
        let ctx = Ctx::default();
        let guarded = |unless: &str| Command {
            unless: Some(strings(&[unless])),
            ..touch.clone()
        };
        assert!(guarded("true").check(&ctx).expect("check").in_state);
        let state = guarded("false").check(&ctx).expect("check");
        assert!(!state.in_state);
        assert_eq!(state.message, "`false` failed");
        assert!(!marker.exists());
    }

    #[test]
    fn sql_guard_passes_when_its_sql_succeeds() {
        let Some(pg) = crate::testing::start_postgres() else {
            return;
        };
        let guarded = |port: u16, sql: &str| Command {
            unless_sql: Some(tpa_common::resource::SqlGuard {
                database: "postgres".into(),
                port,
                sql: sql.into(),
            }),
            ..command(&["false"])
        };
        let ctx = Ctx::default();
        let known = "select 1 / count(*) from pg_database where datname = 'postgres'";
        let state = guarded(pg.port, known).check(&ctx).expect("check");
        assert!(state.in_state, "{}", state.message);
        let unknown = "select 1 / count(*) from pg_database where datname = 'nope'";
        let state = guarded(pg.port, unknown).check(&ctx).expect("check");
        assert!(!state.in_state);
        assert_eq!(state.message, format!("SQL guard `{unknown}` failed"));
        // No server on that port: the guard has not passed either.
        let down = guarded(1, known).check(&ctx).expect("check");
        assert!(!down.in_state);
        let both = Command {
            creates: Some("/nonexistent/tpa-done".into()),
            ..guarded(1, known)
        };
        assert_eq!(
            both.check(&ctx).expect("check").message,
            format!("/nonexistent/tpa-done does not exist and SQL guard `{known}` failed")
        );
    }

    #[test]
    fn a_guard_program_not_there_yet_means_out_of_state() {
        let state = Command {
            unless: Some(strings(&["/nonexistent/tpa-guard", "check"])),
            ..command(&["true"])
        }
        .check(&Ctx::default())
        .expect("check");
        assert!(!state.in_state);
        assert_eq!(state.message, "`/nonexistent/tpa-guard check` failed");
    }

    #[test]
    fn unguarded_command_is_always_out_of_state() {
        let state = command(&["true"]).check(&Ctx::default()).expect("check");
        assert!(!state.in_state);
        assert_eq!(state.diff.as_deref(), Some("$ true\n"));
    }

    #[test]
    fn failure_message_has_output_tail_unless_secret() {
        let failing = Command {
            env: vec![EnvVar::new("TOKEN", "s3cret")],
            ..command(&["sh", "-c", "echo \"bad $TOKEN\" >&2; exit 2"])
        };
        let mut ctx = Ctx::default();
        let error = failing.apply(&mut ctx).expect_err("fails");
        assert_eq!(error.to_string(), "`sh` failed (exit status 2): bad s3cret");
        let secret = Command {
            secret_env: true,
            ..failing
        };
        let error = secret.apply(&mut ctx).expect_err("fails");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        assert!(error.to_string().contains("exit status 2"));
        assert!(!format!("{secret:?}").contains("s3cret"));
    }

    #[test]
    fn a_command_that_runs_too_long_fails_clearly() {
        let sleeper = Command {
            timeout_secs: Some(1),
            ..command(&["sleep", "30"])
        };
        let started = std::time::Instant::now();
        let error = sleeper.apply(&mut Ctx::default()).expect_err("times out");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert_eq!(
            error.to_string(),
            "`sleep 30` did not finish within 1 s and was killed with everything it started; see the \
             agent's journal (journalctl -u tpa-agent) for what it was waiting on"
        );
        // Without its own limit, the context's applies.
        let mut ctx = Ctx::default();
        ctx.timeouts.command = std::time::Duration::from_millis(300);
        let error = command(&["sleep", "30"])
            .apply(&mut ctx)
            .expect_err("times out");
        assert!(error.to_string().contains("within 0.3 s"), "{error}");
    }

    #[test]
    fn run_as_switches_user() {
        if !super::super::owner::is_root() {
            eprintln!("skipping: switching user needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("as-nobody");
        let script = format!("id -un > {}", marker.display());
        // The temp dir is root-only; let nobody write into it for this test.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod");
        let as_nobody = Command {
            run_as: Some("nobody".into()),
            ..command(&["sh", "-c", &script])
        };
        as_nobody.apply(&mut Ctx::default()).expect("apply");
        assert_eq!(
            std::fs::read_to_string(&marker).expect("read").trim(),
            "nobody"
        );
    }

    #[test]
    fn empty_argv_is_invalid() {
        assert!(matches!(
            command(&[]).check(&Ctx::default()),
            Err(ResourceError::Invalid(_))
        ));
    }
}
