//! The one way the agent talks to its local Postgres: over the unix socket, as a given OS
//! user (peer authentication). Read-only SQL ([`read_rows`]: check queries, the `Query` RPC,
//! facts, health) goes through the agent's own client when it can ([`super::pg_native`]) and
//! psql otherwise; everything else runs psql ([`run`]), the SQL on stdin.
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

/// Where Debian's PostgreSQL packages put each major version (`<major>/bin/psql`).
const PACKAGES_DIR: &str = "/usr/lib/postgresql";

/// The psql to run: the newest major version's binary, which talks to every older server.
/// Not `psql` from PATH: on Debian that is pg_wrapper, a Perl script that costs more CPU than
/// the query it runs (a no-op deploy runs dozens). PATH's `psql` when no package is installed.
pub fn program() -> String {
    newest_psql(std::path::Path::new(PACKAGES_DIR))
        .map_or_else(|| "psql".to_owned(), |p| p.display().to_string())
}

/// `<dir>/<major>/bin/psql` of the highest numeric major that has one.
fn newest_psql(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let psql = entry.path().join("bin/psql");
            psql.is_file().then_some((major, psql))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, psql)| psql)
}

/// `psql -X -q -v ON_ERROR_STOP=1 <format> -h SOCKET_DIR -p PORT -d DATABASE`; the SQL goes to stdin.
pub fn argv(database: &str, port: u16, format: Format) -> Vec<String> {
    let port = port.to_string();
    let program = program();
    let mut argv = vec![program.as_str(), "-X", "-q", "-v", "ON_ERROR_STOP=1"];
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
    vec![
        ("PGCONNECT_TIMEOUT".to_owned(), connect.to_string()),
        ("PGOPTIONS".to_owned(), lock_timeout_option(timeouts)),
    ]
}

/// The session option that sets Postgres's `lock_timeout`, for psql and the agent's own client.
pub fn lock_timeout_option(timeouts: &Timeouts) -> String {
    format!("-c lock_timeout={}", timeouts.lock.as_millis().max(1))
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
            // An agent that is not root (tests) cannot switch user: it runs psql as itself.
            run_as: super::owner::is_root().then(|| target.user()),
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

/// Runs read-only `sql` and returns the rows of all its statements, each field as text (SQL
/// NULL as an empty string): natively when the agent's own client gets a session, else with
/// psql. `what` names the SQL in errors.
pub fn read_rows(
    target: Target<'_>,
    sql: &SqlText,
    what: &str,
    limit: Duration,
    timeouts: &Timeouts,
) -> Result<Vec<Vec<String>>, ResourceError> {
    if let Some(rows) = super::pg_native::read(target, sql, what, limit, timeouts)? {
        return Ok(rows
            .into_iter()
            .map(|row| row.into_iter().map(Option::unwrap_or_default).collect())
            .collect());
    }
    parse_csv(&run(target, sql, Format::Csv, what, limit, timeouts)?)
}

/// Rows of psql's `--csv -t` output.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, ResourceError> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes())
        .records()
        .map(|record| {
            record
                .map(|r| r.iter().map(str::to_owned).collect())
                .map_err(|e| {
                    ResourceError::Failed(format!("psql printed rows that are not CSV: {e}"))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_never_appears_in_argv() {
        let unaligned = argv("postgres", 5432, Format::Unaligned);
        assert!(unaligned[0].ends_with("psql"), "{unaligned:?}");
        assert_eq!(
            unaligned[1..].join(" "),
            "-X -q -v ON_ERROR_STOP=1 -A -t -h /var/run/postgresql -p 5432 -d postgres"
        );
        assert_eq!(
            argv("app", 5444, Format::Csv)[1..].join(" "),
            "-X -q -v ON_ERROR_STOP=1 --csv -t -h /var/run/postgresql -p 5444 -d app"
        );
    }

    #[test]
    fn the_newest_installed_psql_is_preferred_to_pg_wrapper() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(newest_psql(dir.path()), None);
        for major in ["9.6", "13", "15", "16"] {
            std::fs::create_dir_all(dir.path().join(major).join("bin")).expect("mkdir");
        }
        for major in ["9.6", "13", "15"] {
            std::fs::write(dir.path().join(major).join("bin/psql"), "").expect("psql");
        }
        // 16 has no psql (only a server package's leftovers); 9.6 is not a number.
        assert_eq!(
            newest_psql(dir.path()),
            Some(dir.path().join("15/bin/psql"))
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
