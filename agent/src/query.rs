//! The `Query` RPC's engine: runs one SQL query on the local Postgres with psql (through the same
//! runner as the `Sql` resource, so with the same connect and lock timeouts) and returns its rows.
//!
//! psql prints CSV, so values holding commas, quotes, tabs or newlines come back intact; SQL NULL
//! arrives as an empty string.

use tpa_common::query::SqlQuery;

use crate::resource::ResourceError;
use crate::resource::psql::{self, Format, Target};
use crate::resource::run::Timeouts;

/// Runs `query` and returns its rows, one `Vec` of text fields per row.
pub fn run(query: &SqlQuery, timeouts: &Timeouts) -> Result<Vec<Vec<String>>, ResourceError> {
    let target = Target {
        database: &query.database,
        port: query.port,
        user: &query.run_as,
    };
    let stdout = psql::run(
        target,
        &query.sql,
        Format::Csv,
        "query",
        timeouts.query,
        timeouts,
    )?;
    parse_csv(&stdout)
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
    use tpa_common::secret::SqlText;

    use super::*;
    use crate::testing::start_postgres;

    #[test]
    fn csv_keeps_separators_and_newlines_inside_values() {
        let rows = parse_csv("a,\"b,c\",\"line 1\nline 2\"\n,\"\"\"q\"\"\"\n").expect("csv");
        assert_eq!(
            rows,
            [
                vec!["a".to_owned(), "b,c".into(), "line 1\nline 2".into()],
                vec![String::new(), "\"q\"".into()],
            ]
        );
        assert!(parse_csv("").expect("empty").is_empty());
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
