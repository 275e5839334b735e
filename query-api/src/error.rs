//! Errors of the query API, each mapped to an `application/problem+json` response.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use infra::http::{FieldProblem, Problem};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Also the answer to a customer asking for what another customer owns.
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// No role of the principal allows the read (`crate::policy`).
    #[error("the principal's roles do not allow this read")]
    Forbidden,
    #[error("invalid request parameters")]
    Invalid(Vec<FieldProblem>),
    /// The read model did not reach `min_version` within the bounded wait.
    #[error("the read model is at {current:?}, behind the requested version {min_version}")]
    Behind {
        what: &'static str,
        min_version: i64,
        current: Option<i64>,
        waited: Duration,
    },
    /// The cap on reads waiting for `min_version` is reached.
    #[error("too many reads are waiting for a version")]
    TooManyWaiters,
    /// The cap on audit exports streaming at once is reached.
    #[error("too many audit exports are streaming")]
    TooManyExports,
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl QueryError {
    /// `error` of a read; with `as_of`, a table missing there (42P01) is a 404 for the set, as
    /// the set's pool answers for a set lacking a read model: the set was dropped, or re-created
    /// under its name, after the read found it (its pool's connections see the old schema
    /// alone), or it was built before a release added the table. The set's pool closed under
    /// the read (a read that found the set gone or re-created closes it) stays a 503: a retry
    /// finds what the set is now.
    pub fn of_read(as_of: bool, error: sqlx::Error) -> Self {
        let missing_table = matches!(&error, sqlx::Error::Database(e)
            if e.code().as_deref() == Some("42P01"));
        if as_of && missing_table {
            return Self::NotFound {
                what: "as-of set holding this read model",
            };
        }
        Self::Database(error)
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldProblem {
            field: field.to_owned(),
            message: message.into(),
        }])
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        match self {
            Self::NotFound { what } => Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                format!("no {what} with that identifier"),
            ),
            Self::Forbidden => Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "your roles do not allow this read",
            ),
            Self::Invalid(errors) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-failed",
                "Invalid request parameters",
                "one or more query parameters are invalid",
            )
            .with_errors(errors),
            // 504: the read side, which this request depends on, did not answer in time. A
            // client may retry, or read without `min_version` to get whatever is current.
            Self::Behind {
                what,
                min_version,
                current,
                waited,
            } => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "read-model-behind",
                "Read model behind the requested version",
                format!(
                    "the {what} read model did not reach version {min_version} within {} ms",
                    waited.as_millis()
                ),
            )
            .with_extension("min_version", min_version)
            .with_extension("current_version", current)
            .retry_after(1),
            // 503: a bounded resource of this server is exhausted, not the client's quota.
            Self::TooManyWaiters => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-waiters",
                "Too many waiting reads",
                "too many reads are waiting for min_version; retry, or read without min_version",
            )
            .retry_after(1),
            Self::TooManyExports => {
                tracing::warn!("audit export refused: query_api.max_exports are streaming");
                infra::server::layers::overloaded()
            }
            Self::Database(error) if infra::db::is_unavailable(&error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "database unavailable"
                );
                Problem::unavailable("the database", 2)
            }
            // A value PostgreSQL refused (class 22) came from the request.
            Self::Database(error) if infra::db::is_data_exception(&error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "value refused by the database"
                );
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation-failed",
                    "Invalid request parameters",
                    "a parameter carries a value the database cannot compare",
                )
                .with_errors(vec![FieldProblem {
                    field: "query".to_owned(),
                    message: "contains a value that cannot be compared".to_owned(),
                }])
            }
            Self::Database(error) => {
                tracing::error!(error = &error as &dyn std::error::Error, "query failed");
                Problem::internal()
            }
        }
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::QueryError;

    #[test]
    fn only_a_missing_table_of_an_as_of_read_is_a_404() {
        for as_of in [true, false] {
            assert!(matches!(
                QueryError::of_read(as_of, sqlx::Error::PoolClosed),
                QueryError::Database(sqlx::Error::PoolClosed)
            ));
        }
        assert!(matches!(
            QueryError::of_read(true, sqlx::Error::RowNotFound),
            QueryError::Database(sqlx::Error::RowNotFound)
        ));
    }
}
