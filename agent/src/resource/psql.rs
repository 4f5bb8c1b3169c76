//! The one way the agent talks to its local Postgres: psql over the unix socket, as a given OS
//! user (peer authentication), the SQL on stdin. The `Sql` resource and the `Query` RPC both run
//! through [`run`].
//!
//! Every session connects with a connect timeout (a Postgres that accepts no connection fails
//! fast) and sets a lock timeout (SQL that waits on another session's lock fails instead of
//! stalling a deploy), and the whole psql run has a time limit. SQL never goes into argv; secret
//! SQL and psql's error output (which may quote it) never reach a message.

use std::time::Duration;

use tpa_common::secret::SqlText;

use super::ResourceError;
use super::run::{self, Invocation, Timeouts};

/// The unix socket directory psql connects through.
pub const SOCKET_DIR: &str = "/var/run/postgresql";

/// How psql prints rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `-A -t`: bare values, one row per line (for one-boolean check queries).
    Unaligned,
    /// `--csv -t`: RFC 4180 rows without a header, for values that may hold any character.
    Csv,
}

/// Where and as whom psql connects.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub database: &'a str,
    pub port: u16,
    /// The OS user; empty means `postgres`.
    pub user: &'a str,
}

impl Target<'_> {
    /// The OS user psql runs as.
    pub fn user(&self) -> &str {
        if self.user.is_empty() {
            "postgres"
        } else {
            self.user
        }
    }
}

/// `psql -X -q -v ON_ERROR_STOP=1 <format> -h SOCKET_DIR -p PORT -d DATABASE`; the SQL goes to stdin.
pub fn argv(database: &str, port: u16, format: Format) -> Vec<String> {
    let port = port.to_string();
    let mut argv = vec!["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"];
    argv.extend(match format {
        Format::Unaligned => ["-A", "-t"],
        Format::Csv => ["--csv", "-t"],
    });
    argv.extend(["-h", SOCKET_DIR, "-p", &port, "-d", database]);
    argv.into_iter().map(str::to_owned).collect()
}

/// The environment of every psql the agent runs: connect and lock timeouts.
pub fn env(timeouts: &Timeouts) -> Vec<(String, String)> {
    // libpq takes whole seconds and treats anything below 2 as 2.
    let connect = timeouts.connect.as_secs().max(2);
    let lock_ms = timeouts.lock.as_millis().max(1);
    vec![
        ("PGCONNECT_TIMEOUT".to_owned(), connect.to_string()),
        ("PGOPTIONS".to_owned(), format!("-c lock_timeout={lock_ms}")),
    ]
}

/// Runs `sql` and returns psql's stdout. `what` names it in errors ("check query", "query").
pub fn run(
    target: Target<'_>,
    sql: &SqlText,
    format: Format,
    what: &str,
    limit: Duration,
    timeouts: &Timeouts,
) -> Result<String, ResourceError> {
    let argv = argv(target.database, target.port, format);
    let env = env(timeouts);
    let output = run::run_for(
        &Invocation {
            argv: &argv,
            run_as: Some(target.user()),
            env: &env,
            stdin: Some(sql.expose().as_bytes()),
        },
        limit,
    )?;
    if !output.success() {
        let detail = if sql.is_secret() {
            "error output hidden (secret SQL)".to_owned()
        } else {
            output.tail()
        };
        return Err(ResourceError::Failed(format!(
            "psql {what} on database `{}` port {} as {} failed ({}): {detail}",
            target.database,
            target.port,
            target.user(),
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
        assert_eq!(
            argv("postgres", 5432, Format::Unaligned).join(" "),
            "psql -X -q -v ON_ERROR_STOP=1 -A -t -h /var/run/postgresql -p 5432 -d postgres"
        );
        assert_eq!(
            argv("app", 5444, Format::Csv).join(" "),
            "psql -X -q -v ON_ERROR_STOP=1 --csv -t -h /var/run/postgresql -p 5444 -d app"
        );
    }

    #[test]
    fn every_session_has_connect_and_lock_timeouts() {
        let env = env(&Timeouts::default());
        assert_eq!(
            env,
            [
                ("PGCONNECT_TIMEOUT".to_owned(), "10".to_owned()),
                ("PGOPTIONS".to_owned(), "-c lock_timeout=60000".to_owned()),
            ]
        );
    }
}
