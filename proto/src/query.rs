//! Conversions between `pb::QueryRequest` and [`tpa_common::query::SqlQuery`], and the rows of a
//! `pb::QueryResponse`.

use tpa_common::query::SqlQuery;
use tpa_common::secret::SqlText;

use crate::error::ConversionError;
use crate::pb;

// === impl SqlQuery ===

impl TryFrom<pb::QueryRequest> for SqlQuery {
    type Error = ConversionError;

    fn try_from(q: pb::QueryRequest) -> Result<Self, Self::Error> {
        let port = match q.port {
            0 => 5432,
            p => crate::resource::port("QueryRequest", p)?,
        };
        Ok(SqlQuery {
            database: q.database,
            run_as: q.run_as,
            port,
            sql: q
                .sql
                .map(SqlText::from)
                .ok_or(ConversionError::MissingField {
                    message: "QueryRequest",
                    field: "sql",
                })?,
        })
    }
}

impl From<SqlQuery> for pb::QueryRequest {
    fn from(q: SqlQuery) -> Self {
        pb::QueryRequest {
            database: q.database,
            run_as: q.run_as,
            port: q.port.into(),
            sql: Some(q.sql.into()),
        }
    }
}

// === impl QueryResponse ===

impl From<pb::QueryResponse> for Vec<Vec<String>> {
    fn from(response: pb::QueryResponse) -> Self {
        response.rows.into_iter().map(|row| row.fields).collect()
    }
}

impl From<Vec<Vec<String>>> for pb::QueryResponse {
    fn from(rows: Vec<Vec<String>>) -> Self {
        pb::QueryResponse {
            rows: rows.into_iter().map(|fields| pb::Row { fields }).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trips_and_port_zero_means_5432() {
        let query = SqlQuery {
            database: "app".into(),
            run_as: "postgres".into(),
            port: 5444,
            sql: SqlText::secret("select rolpassword from pg_authid"),
        };
        let back = SqlQuery::try_from(pb::QueryRequest::from(query.clone())).expect("back");
        assert_eq!(back, query);
        let default_port = SqlQuery::try_from(pb::QueryRequest {
            port: 0,
            sql: Some(pb::SqlText::default()),
            ..Default::default()
        })
        .expect("converts");
        assert_eq!(default_port.port, 5432);
        let rows = vec![vec!["a".to_string(), String::new()]];
        assert_eq!(
            Vec::<Vec<String>>::from(pb::QueryResponse::from(rows.clone())),
            rows
        );
    }

    #[test]
    fn missing_sql_is_refused() {
        let err = SqlQuery::try_from(pb::QueryRequest::default()).unwrap_err();
        assert_eq!(err.to_string(), "QueryRequest.sql is missing");
    }
}
