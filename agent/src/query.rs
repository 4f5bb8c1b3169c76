//! The `Query` RPC's engine: runs one read-only SQL query on the local Postgres (through
//! [`psql::read_rows`], like the `Sql` resource's checks, so with the same connect and lock
//! timeouts) and returns its rows.
//!
//! Values holding commas, quotes, tabs or newlines come back intact; SQL NULL arrives as an
//! empty string.

use tpa_common::query::SqlQuery;

use crate::resource::ResourceError;
use crate::resource::psql::{self, Target};
use crate::resource::run::Timeouts;

/// Runs `query` and returns its rows, one `Vec` of text fields per row.
pub fn run(query: &SqlQuery, timeouts: &Timeouts) -> Result<Vec<Vec<String>>, ResourceError> {
    let target = Target {
        database: &query.database,
        port: query.port,
        user: &query.run_as,
    };
    psql::read_rows(target, &query.sql, "query", timeouts.query, timeouts)
}

#[cfg(test)]
mod tests {
    use tpa_common::secret::SqlText;

    use super::*;
    use crate::testing::start_postgres;

    #[test]
    fn csv_keeps_separators_and_newlines_inside_values() {
        let rows = psql::parse_csv("a,\"b,c\",\"line 1\nline 2\"\n,\"\"\"q\"\"\"\n").expect("csv");
        assert_eq!(
            rows,
            [
                vec!["a".to_owned(), "b,c".into(), "line 1\nline 2".into()],
                vec![String::new(), "\"q\"".into()],
            ]
        );
        assert!(psql::parse_csv("").expect("empty").is_empty());
    }

    #[test]
    fn real_postgres_rows_come_back_as_text() {
        let Some(pg) = start_postgres() else { return };
        let query = SqlQuery::postgres(
            pg.port,
            "select 1, 'a,b' union all select 2, E'tab\\there' union all select 3, null order by 1",
        );
        let rows = run(&query, &Timeouts::default()).expect("query");
        assert_eq!(
            rows,
            [
                vec!["1".to_owned(), "a,b".into()],
                vec!["2".to_owned(), "tab\there".into()],
                vec!["3".to_owned(), String::new()],
            ]
        );
        let none = SqlQuery::postgres(pg.port, "select 1 where false");
        assert!(run(&none, &Timeouts::default()).expect("query").is_empty());

        let secret = SqlQuery {
            sql: SqlText::secret("select 'SCRAM-secret' from no_such_table"),
            ..SqlQuery::postgres(pg.port, "")
        };
        let error = run(&secret, &Timeouts::default())
            .expect_err("fails")
            .to_string();
        assert!(
            !error.contains("SCRAM-secret") && error.contains("error output hidden"),
            "{error}"
        );
        let plain = SqlQuery::postgres(pg.port, "select from no_such_table");
        let error = run(&plain, &Timeouts::default())
            .expect_err("fails")
            .to_string();
        assert!(error.contains("no_such_table"), "{error}");
    }
}
