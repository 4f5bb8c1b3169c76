//! Read-only SQL on the local Postgres without a psql process: the agent's own client
//! (tokio-postgres) over the unix socket, as the `postgres` role. A no-op deploy runs several
//! read-only queries per host (check queries, facts, the controller's queries, health rounds);
//! each psql costs a process start and a dynamic link of libpq and OpenSSL, which on a host
//! that is already in state is most of the deploy's work.
//!
//! Peer authentication lets the OS user `postgres` in as the role `postgres`; the agent runs
//! as root, so tpa's pg_hba.conf maps root to `postgres` too (`map=tpa` and pg_ident.conf,
//! planner/postgres_conf.rs). Root can become postgres anyway, so the map grants nothing new.
//! Where that map is not in place yet (before the first configuration is written, or a
//! server tpa does not configure), the connection is refused and the caller runs psql, which
//! also gives psql's own messages when the server is down or starting up. A server that does
//! not answer within the connect timeout is an error at once: psql would wait as long again.

use std::time::Duration;

use tokio_postgres::{NoTls, SimpleQueryMessage};
use tpa_common::secret::SqlText;

use super::ResourceError;
use super::psql::{SOCKET_DIR, Target, lock_timeout_option};
use super::run::Timeouts;

/// The role the agent's own client logs in as; other roles go through psql as their OS user.
const ROLE: &str = "postgres";

/// Rows of every statement of `sql`, in order, each field as text (SQL NULL as `None`).
pub type Rows = Vec<Vec<Option<String>>>;

/// Runs read-only `sql` (one or more statements, in one implicit transaction) within `limit`.
/// `Ok(None)` when no session could be opened this way (the caller falls back to psql); an
/// error when the server refused the SQL. `what` names the SQL in errors.
pub fn read(
    target: Target<'_>,
    sql: &SqlText,
    what: &str,
    limit: Duration,
    timeouts: &Timeouts,
) -> Result<Option<Rows>, ResourceError> {
    // psql scripts (`\if`, `\gset`, `\connect`: the status query) are psql's to run.
    if target.user() != ROLE || sql.expose().contains('\\') {
        return Ok(None);
    }
    // A runtime of its own: callers are blocking threads (a resource's check, a health round).
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Ok(None);
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(SOCKET_DIR)
        .port(target.port)
        .user(ROLE)
        .dbname(target.database)
        .application_name("tpa-agent")
        .options(lock_timeout_option(timeouts));
    runtime.block_on(async {
        let failed = |detail: String| {
            ResourceError::Failed(format!(
                "{what} on database `{}` port {} as {ROLE} failed: {detail}",
                target.database, target.port
            ))
        };
        // A server that accepts but does not answer (stopped, overloaded) is not tried twice.
        let connect = tokio::time::timeout(timeouts.connect, config.connect(NoTls)).await;
        let (client, connection) = match connect {
            Err(_) => {
                let after = timeouts.connect;
                return Err(failed(format!(
                    "connection: timeout expired after {after:?}"
                )));
            }
            Ok(Err(_)) => return Ok(None),
            Ok(Ok(session)) => session,
        };
        let driver = tokio::spawn(connection);
        let answer = tokio::time::timeout(limit, client.simple_query(sql.expose())).await;
        // Without its client the connection says goodbye to the server (no "unexpected EOF"
        // in its log) and ends; a server that hangs is left to the runtime's drop.
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(1), driver).await;
        match answer {
            Err(_) => Err(failed(format!("no answer within {limit:?}"))),
            Ok(Err(e)) if sql.is_secret() => Err(failed(format!(
                "error output hidden (secret SQL); SQLSTATE {}",
                e.code().map_or("unknown", |c| c.code())
            ))),
            Ok(Err(e)) => Err(failed(describe(&e))),
            Ok(Ok(messages)) => Ok(Some(rows(&messages))),
        }
    })
}

/// The rows among a simple query's messages.
fn rows(messages: &[SimpleQueryMessage]) -> Rows {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The server's error as psql would print its first lines.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{}:  {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("\nDETAIL:  {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("\nHINT:  {hint}"));
            }
            text
        }
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tpa_controller::planner::postgres_conf;

    use super::*;
    use crate::resource::psql;
    use crate::testing::start_postgres;

    /// Which client the server saw: `tpa-agent` (ours) or `psql`.
    const WHO: &str = "select application_name from pg_stat_activity where pid = pg_backend_pid()";

    fn target(port: u16) -> Target<'static> {
        Target {
            database: "postgres",
            port,
            user: "postgres",
        }
    }

    /// `read` of [`WHO`] until `wanted(answer)`, for up to 10 s (a reload is asynchronous).
    fn read_until(port: u16, wanted: impl Fn(&Option<Rows>) -> bool) -> Option<Rows> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = read(
                target(port),
                &SqlText::plain(WHO),
                "test",
                Duration::from_secs(10),
                &Timeouts::default(),
            )
            .expect("no SQL error");
            if wanted(&answer) || Instant::now() > deadline {
                return answer;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn reload_with_hba(pg: &crate::testing::Instance, hba: &str) {
        std::fs::write(format!("{}/pg_hba.conf", pg.data), hba).expect("pg_hba.conf");
        let postmaster = nix::unistd::Pid::from_raw(pg.postmaster_pid());
        nix::sys::signal::kill(postmaster, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    }

    #[test]
    fn root_reads_natively_only_through_tpas_ident_map_and_falls_back_to_psql() {
        let Some(pg) = start_postgres() else { return };
        let ours = |a: &Option<Rows>| a == &Some(vec![vec![Some("tpa-agent".to_owned())]]);
        assert!(ours(&read_until(pg.port, ours)), "trust: our own client");

        // Peer without a map: root is not postgres, so psql (as postgres) answers instead.
        reload_with_hba(&pg, "local all all peer\n");
        assert_eq!(read_until(pg.port, Option::is_none), None);
        let rows = psql::read_rows(
            target(pg.port),
            &SqlText::plain(WHO),
            "test",
            Duration::from_secs(10),
            &Timeouts::default(),
        )
        .expect("psql fallback");
        assert_eq!(rows, [["psql"]]);

        // tpa's pg_ident.conf and pg_hba.conf's first line: root reads natively again.
        std::fs::write(
            format!("{}/pg_ident.conf", pg.data),
            postgres_conf::pg_ident(),
        )
        .expect("pg_ident.conf");
        let map = postgres_conf::IDENT_MAP;
        reload_with_hba(
            &pg,
            &format!("local all postgres peer map={map}\nlocal all all peer\n"),
        );
        assert!(ours(&read_until(pg.port, ours)), "mapped: our own client");
    }

    #[test]
    fn every_statement_s_rows_come_back_and_sql_errors_are_errors() {
        let Some(pg) = start_postgres() else { return };
        let read = |sql: SqlText| {
            read(
                target(pg.port),
                &sql,
                "test query",
                Duration::from_secs(10),
                &Timeouts::default(),
            )
        };
        let rows = read(SqlText::plain(
            "select true; set search_path = public; select 1, null::text union all select 2, 'a|b'",
        ))
        .expect("rows")
        .expect("native");
        let script = read(SqlText::plain("select true as x \\gset\nselect :'x'"));
        assert!(script.expect("no error").is_none(), "psql's to run");
        let text = |s: &str| Some(s.to_owned());
        assert_eq!(
            rows,
            [
                vec![text("t")],
                vec![text("1"), None],
                vec![text("2"), text("a|b")]
            ]
        );

        let error = read(SqlText::plain("select * from no_such_table"))
            .expect_err("fails")
            .to_string();
        assert!(
            error.contains("test query on database `postgres`")
                && error.contains("\"no_such_table\" does not exist"),
            "{error}"
        );
        let secret = read(SqlText::secret("select 'SCRAM-secret' from no_such_table"))
            .expect_err("fails")
            .to_string();
        assert!(
            !secret.contains("SCRAM-secret") && secret.contains("42P01"),
            "{secret}"
        );
        let slow = read_with_limit(pg.port, "select pg_sleep(5)", Duration::from_millis(300));
        assert!(slow.contains("no answer within"), "{slow}");
    }

    fn read_with_limit(port: u16, sql: &str, limit: Duration) -> String {
        read(
            target(port),
            &SqlText::plain(sql),
            "slow query",
            limit,
            &Timeouts::default(),
        )
        .expect_err("times out")
        .to_string()
    }
}
