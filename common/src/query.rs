//! A SQL query the controller asks an agent to run on its local Postgres (the `Query` RPC), e.g.
//! to read the live role or a stored password verifier. The agent runs it with psql, through the
//! same runner as the `Sql` resource; rows come back as text fields.

use crate::secret::SqlText;

/// One query, run as `run_as` over the local unix socket on `port`, in `database`.
///
/// The answer is one `Vec<String>` per row, one string per column; SQL NULL arrives as an empty
/// string. Secret text (e.g. a query that names a verifier) is never logged or echoed in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlQuery {
    pub database: String,
    /// The OS user psql runs as (peer authentication); empty means `postgres`.
    pub run_as: String,
    pub port: u16,
    pub sql: SqlText,
}

impl SqlQuery {
    /// A plain query as `postgres` in database `postgres`.
    pub fn postgres(port: u16, sql: impl Into<String>) -> Self {
        SqlQuery {
            database: "postgres".into(),
            run_as: "postgres".into(),
            port,
            sql: SqlText::plain(sql),
        }
    }
}
