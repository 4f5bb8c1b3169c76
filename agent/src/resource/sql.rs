//! `Sql` resource: SQL against the local Postgres over its unix socket, as `run_as`.
//! The `check` query returns one boolean; `t` means in state, otherwise `apply` runs.
//!
//! Example spec: `Sql { database: "postgres", check: "select exists(select 1 from pg_roles where rolname = 'app')",
//! apply: "create role app login", run_as: "postgres", port: 5432 }`.
//!
//! The check runs through [`psql::read_rows`] (the agent's own client as postgres, else psql),
//! `apply` through [`psql::run`]: SQL on stdin, never in argv, with connect and lock timeouts.
//! Secret SQL text (it carries password verifiers) and the server's error output for it are
//! masked.

use std::collections::BTreeMap;

use tpa_common::resource::{Resource, ResourceSpec, Sql, SqlText};

pub use super::psql::SOCKET_DIR;
use super::psql::{self, Format, Target};
use super::run::Timeouts;
use super::{Apply, Ctx, ResourceError, State};

impl Apply for Sql {
    /// Runs the check query; read-only by contract of the query the controller renders.
    fn check(&self, ctx: &Ctx) -> Result<State, ResourceError> {
        if self.check_true(&ctx.timeouts)? {
            return Ok(State::in_state("check query returned true"));
        }
        let diff = match self.apply.shown() {
            Some(text) => format!("{}\n", text.trim_end()),
            None => "# secret SQL masked\n".to_owned(),
        };
        Ok(State::differs(Some(diff), "check query returned false"))
    }

    /// Runs the apply SQL (idempotent: re-checks first).
    fn apply(&self, ctx: &mut Ctx) -> Result<String, ResourceError> {
        if self.check_true(&ctx.timeouts)? {
            return Ok("check query returned true; nothing to do".to_owned());
        }
        let t = &ctx.timeouts;
        psql::run(
            self.target(),
            &self.apply,
            Format::Unaligned,
            "apply SQL",
            t.psql,
            t,
        )?;
        Ok("applied SQL".to_owned())
    }
}

trait Session {
    fn target(&self) -> Target<'_>;
    fn check_true(&self, timeouts: &Timeouts) -> Result<bool, ResourceError>;
}

impl Session for Sql {
    fn target(&self) -> Target<'_> {
        Target {
            database: &self.database,
            port: self.port,
            user: &self.run_as,
        }
    }

    fn check_true(&self, t: &Timeouts) -> Result<bool, ResourceError> {
        let rows = psql::read_rows(self.target(), &self.check, "check query", t.psql, t)?;
        parse_bool(&rows)
    }
}

/// Reads the check query's answer: exactly one row holding `t` or `f`.
pub fn parse_bool(rows: &[Vec<String>]) -> Result<bool, ResourceError> {
    match rows {
        [row] if row.len() == 1 && row[0] == "t" => Ok(true),
        [row] if row.len() == 1 && row[0] == "f" => Ok(false),
        _ => {
            let shown: Vec<String> = rows.iter().map(|row| row.join("|")).collect();
            Err(ResourceError::Failed(format!(
                "check query returned `{}`, expected one boolean (t or f); fix the query in the plan",
                shown.join("\n").chars().take(80).collect::<String>()
            )))
        }
    }
}

/// SQL resources that share database, port and user: their checks run in one psql session.
pub struct Group<'a> {
    database: &'a str,
    port: u16,
    user: &'a str,
    members: Vec<(&'a String, &'a Sql)>,
}

/// The batch's SQL resources among `resources`, grouped by (database, port, user).
pub fn groups<'a>(resources: impl Iterator<Item = &'a ResourceSpec>) -> Vec<Group<'a>> {
    // (database, port, user) -> the (id, resource) pairs that share one psql session.
    type Shared<'a> = (&'a str, u16, &'a str);
    let mut groups: BTreeMap<Shared<'_>, Vec<(&String, &Sql)>> = BTreeMap::new();
    for spec in resources {
        if let Resource::Sql(sql) = &spec.kind {
            let user = if sql.run_as.is_empty() {
                "postgres"
            } else {
                sql.run_as.as_str()
            };
            groups
                .entry((sql.database.as_str(), sql.port, user))
                .or_default()
                .push((&spec.id, sql));
        }
    }
    groups
        .into_iter()
        .map(|((database, port, user), members)| Group {
            database,
            port,
            user,
            members,
        })
        .collect()
}

impl Group<'_> {
    /// The ids of the members whose check returned true; none on any trouble.
    pub fn in_state(&self, timeouts: &Timeouts) -> Vec<String> {
        let script: String = self
            .members
            .iter()
            .map(|(_, sql)| format!("{};\n", sql.check.expose().trim_end().trim_end_matches(';')))
            .collect();
        let secret = self.members.iter().any(|(_, sql)| sql.check.is_secret());
        let target = Target {
            database: self.database,
            port: self.port,
            user: self.user,
        };
        let Ok(rows) = psql::read_rows(
            target,
            &SqlText::new(script, secret),
            "prefetched check queries",
            timeouts.psql,
            timeouts,
        ) else {
            return vec![];
        };
        if rows.len() != self.members.len() {
            return vec![];
        }
        self.members
            .iter()
            .zip(rows)
            .filter(|(_, row)| row.len() == 1 && row[0] == "t")
            .map(|((id, _), _)| (*id).clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use tpa_common::event::Outcome;

    use super::*;
    use crate::resource::{BatchOptions, apply_batch_blocking};
    use crate::testing::start_postgres;

    /// Every group's checks, one session per group, as the batch's prefetch runs them.
    fn prefetch_checks(resources: &[ResourceSpec], timeouts: &Timeouts) -> HashSet<String> {
        groups(resources.iter())
            .iter()
            .flat_map(|group| group.in_state(timeouts))
            .collect()
    }

    fn sql(port: u16, check: &str, apply: SqlText) -> Sql {
        Sql {
            database: "postgres".into(),
            check: SqlText::plain(check),
            apply,
            run_as: "postgres".into(),
            port,
        }
    }

    #[test]
    fn parses_boolean_output() {
        let rows = |rows: &[&[&str]]| -> Vec<Vec<String>> {
            rows.iter()
                .map(|r| r.iter().map(|f| (*f).to_owned()).collect())
                .collect()
        };
        assert!(parse_bool(&rows(&[&["t"]])).expect("t"));
        assert!(!parse_bool(&rows(&[&["f"]])).expect("f"));
        for wrong in [rows(&[&["t"], &["f"]]), rows(&[&["t", "t"]]), rows(&[])] {
            let error = parse_bool(&wrong).expect_err("not one boolean");
            assert!(
                error.to_string().contains("expected one boolean"),
                "{error}"
            );
        }
    }

    #[test]
    fn real_postgres_check_apply_and_facts() {
        let Some(pg) = start_postgres() else { return };
        let role = format!("tpa_test_{}", pg.port);
        let check_sql = format!("select exists(select 1 from pg_roles where rolname = '{role}')");
        let apply_sql = format!("create role {role} password 'SCRAM-SHA-256$4096:c2FsdA==$x:y'");
        let spec = Sql {
            check: SqlText::secret(check_sql),
            ..sql(pg.port, "", SqlText::secret(apply_sql))
        };
        let mut ctx = Ctx::default();
        let state = spec.check(&ctx).expect("check");
        assert!(!state.in_state);
        assert_eq!(state.diff.as_deref(), Some("# secret SQL masked\n"));
        assert_eq!(spec.apply(&mut ctx).expect("apply"), "applied SQL");
        assert!(spec.check(&ctx).expect("check").in_state, "apply converged");
        assert_eq!(
            spec.apply(&mut ctx).expect("apply again"),
            "check query returned true; nothing to do"
        );

        let failing = sql(
            pg.port,
            "select false",
            SqlText::plain("select no_such_function()"),
        );
        let error = failing.apply(&mut ctx).expect_err("bad SQL");
        assert!(error.to_string().contains("no_such_function"), "{error}");

        let facts = crate::facts::postgres_facts(&pg.data, pg.port);
        assert!(facts.initialised && facts.running, "{facts:?}");
        assert_eq!(facts.in_recovery, Some(false));
        assert!(facts.start_time.is_some());
    }

    #[test]
    fn prefetch_runs_checks_together_and_gives_up_on_trouble() {
        let Some(pg) = start_postgres() else { return };
        let spec = |id: &str, check: &str| ResourceSpec {
            id: id.into(),
            kind: Resource::Sql(sql(pg.port, check, SqlText::plain("select 1"))),
        };
        let t = Timeouts::default();
        let found = prefetch_checks(
            &[
                spec("a", "select true"),
                spec("b", "select false;"),
                spec("c", "select 1 = 1"),
            ],
            &t,
        );
        assert_eq!(
            found,
            ["a".to_owned(), "c".to_owned()].into_iter().collect()
        );
        // One broken query: no hints at all, every resource is then checked on its own.
        let broken = [spec("a", "select true"), spec("b", "select no_such_column")];
        assert!(prefetch_checks(&broken, &t).is_empty());
        // Rows that do not line up with the queries: no hints either.
        let two_rows = [
            spec("a", "select true"),
            spec("b", "select true union all select true"),
        ];
        assert!(prefetch_checks(&two_rows, &t).is_empty());
    }

    #[test]
    fn prefetched_checks_are_not_trusted_after_a_change_in_the_batch() {
        let Some(pg) = start_postgres() else { return };
        let role = format!("tpa_prefetch_{}", pg.port);
        let spec = |id: &str, check: String, apply: String| ResourceSpec {
            id: id.into(),
            kind: Resource::Sql(sql(pg.port, &check, SqlText::plain(apply))),
        };
        let exists = format!("exists(select 1 from pg_roles where rolname = '{role}')");
        let batch = [
            spec(
                "a",
                format!("select {exists}"),
                format!("create role {role}"),
            ),
            // True before the batch, false once `a` created the role.
            spec("b", format!("select not {exists}"), "select 1".into()),
        ];
        let mut outcomes = Vec::new();
        apply_batch_blocking(
            &batch,
            &BatchOptions::default(),
            &mut |e| outcomes.push(e.outcome),
            &|| false,
        );
        assert_eq!(outcomes, [Outcome::Changed, Outcome::Changed]);
    }

    /// Another session holds a lock: the SQL fails after the lock timeout instead of waiting on.
    #[test]
    fn sql_waiting_on_a_lock_fails_after_the_lock_timeout() {
        let Some(pg) = start_postgres() else { return };
        let table = format!("tpa_locked_{}", pg.port);
        let mut ctx = Ctx::default();
        sql(
            pg.port,
            "select false",
            SqlText::plain(format!("create table {table} ()")),
        )
        .apply(&mut ctx)
        .expect("create table");
        let holder = crate::testing::hold_lock(&pg, &table);
        ctx.timeouts.lock = Duration::from_millis(300);
        ctx.timeouts.psql = Duration::from_secs(30);
        let started = Instant::now();
        let waiting = sql(
            pg.port,
            "select false",
            SqlText::plain(format!("select * from {table}")),
        );
        let error = waiting.apply(&mut ctx).expect_err("lock timeout");
        drop(holder);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(
            error
                .to_string()
                .contains("canceling statement due to lock timeout"),
            "{error}"
        );
    }

    /// A Postgres that accepts the connection but never answers (here: stopped with SIGSTOP).
    #[test]
    fn a_postgres_that_does_not_answer_fails_after_the_connect_timeout() {
        let Some(pg) = start_postgres() else { return };
        let _stopped = crate::testing::Stopped::new(pg.postmaster_pid());
        let mut ctx = Ctx::default();
        ctx.timeouts.connect = Duration::from_secs(2);
        ctx.timeouts.psql = Duration::from_secs(30);
        let started = Instant::now();
        let error = sql(pg.port, "select true", SqlText::plain("select 1"))
            .check(&ctx)
            .expect_err("connect timeout");
        // One connect timeout, not one for the agent's own client and another for psql.
        assert!(
            started.elapsed() < Duration::from_millis(3500),
            "{:?}",
            started.elapsed()
        );
        assert!(error.to_string().contains("timeout expired"), "{error}");
    }

    #[test]
    fn secret_failure_hides_psql_output() {
        // No server listens on port 1, so psql fails and would echo connection details.
        if !crate::resource::owner::is_root() || !std::path::Path::new("/usr/bin/psql").exists() {
            eprintln!("skipping: needs root (to switch user) and psql");
            return;
        }
        let spec = Sql {
            check: SqlText::secret("select rolpassword = 'SCRAM-SHA-256$secret'"),
            run_as: "root".into(),
            ..sql(
                1,
                "",
                SqlText::secret("alter role x password 'SCRAM-SHA-256$secret'"),
            )
        };
        let error = spec
            .check(&Ctx::default())
            .expect_err("no server on port 1");
        let text = error.to_string();
        assert!(text.contains("error output hidden"), "{text}");
        assert!(!text.contains("secret'"), "{text}");
    }
}
