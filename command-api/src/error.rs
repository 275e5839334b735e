//! The command API's one error type and its one conversion to an HTTP response.
//!
//! Handlers return [`ApiError`]: either a problem with the request itself (its body, headers or
//! path) or a [`CommandError`] from the core. [`IntoResponse`] turns it into an
//! `application/problem+json` body with a stable `type`. Internal causes are logged here, once,
//! inside the request's span, and never shown to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::ErrorKind;
pub use infra::error_chain;
use infra::http::{FieldProblem, Problem};

use crate::core::CommandError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(Vec<FieldProblem>),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge { limit: usize },
    #[error("bad header {name}: {message}")]
    BadHeader { name: &'static str, message: String },
    #[error("{detail}")]
    NotFound { code: String, detail: String },
    #[error(transparent)]
    Auth(#[from] infra::auth::AuthError),
    #[error("rate limited")]
    RateLimited(std::time::Duration),
    #[error("webhook signature refused")]
    Signature,
    #[error("too many password hashes waiting")]
    Overloaded,
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldProblem {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn not_found(aggregate: &str) -> Self {
        Self::NotFound {
            code: format!("{aggregate}-not-found"),
            detail: format!("no {aggregate} with this id"),
        }
    }

    fn to_problem(&self) -> Problem {
        use StatusCode as S;
        match self {
            Self::Validation(errors) => Problem::new(
                S::UNPROCESSABLE_ENTITY,
                "validation-failed",
                "Invalid request",
                "one or more fields are invalid; see errors",
            )
            .with_errors(errors.clone()),
            Self::MalformedJson(detail) => Problem::new(
                S::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                detail.clone(),
            ),
            Self::UnsupportedMediaType => Problem::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the body as application/json",
            ),
            Self::PayloadTooLarge { limit } => Problem::new(
                S::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                format!("the request body exceeds {limit} bytes"),
            ),
            Self::BadHeader { name, message } => Problem::new(
                S::BAD_REQUEST,
                "bad-header",
                "Invalid header",
                format!("{name}: {message}"),
            )
            .with_extension("header", *name),
            Self::NotFound { code, detail } => {
                Problem::new(S::NOT_FOUND, code, "Not found", detail.clone())
            }
            Self::Auth(error) => error.problem(),
            Self::RateLimited(wait) => crate::identity::http::rate_limited(*wait),
            Self::Signature => crate::webhook::signature_problem(),
            Self::Overloaded => crate::identity::http::hashing_busy(),
            Self::Command(error) => command_problem(error),
        }
    }
}

/// The one rendering of the core's refusals.
fn command_problem(error: &CommandError) -> Problem {
    use StatusCode as S;
    match error {
        CommandError::Rule {
            kind,
            code,
            detail,
            facts,
        } => facts.iter().fold(
            rule_problem(kind, code, detail),
            |problem, (name, value)| problem.with_extension(name, *value),
        ),
        CommandError::InvalidReference { field, message } => Problem::new(
            S::UNPROCESSABLE_ENTITY,
            "validation-failed",
            "Invalid request",
            "one or more fields are invalid; see errors",
        )
        .with_errors(vec![FieldProblem {
            field: (*field).to_owned(),
            message: (*message).to_owned(),
        }]),
        CommandError::VersionConflict { current_version } => Problem::new(
            S::CONFLICT,
            domain::problem_types::VERSION_CONFLICT,
            "Version conflict",
            format!("the aggregate is at version {current_version}; reload and retry"),
        )
        .with_extension("current_version", *current_version),
        CommandError::Taken { scope } => taken_problem(scope),
        CommandError::IdempotencyKeyMismatch => Problem::new(
            S::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was used with a different request (within the last 24 hours, or at any time for a machine client's key)",
        ),
        CommandError::Unstorable(_) => Problem::new(
            S::UNPROCESSABLE_ENTITY,
            "unstorable-value",
            "Invalid request",
            "the request carries a value that cannot be stored (such as a NUL character)",
        )
        .with_errors(vec![FieldProblem {
            field: "body".to_owned(),
            message: "contains a value that cannot be stored".to_owned(),
        }]),
        CommandError::Unavailable(_) => Problem::unavailable("the database", 2),
        CommandError::Busy(_) => Problem::new(
            S::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
            "no database connection came free in time; nothing was written, retry shortly",
        )
        .retry_after(1),
        CommandError::Transient(_) => Problem::new(
            S::SERVICE_UNAVAILABLE,
            "rolled-back",
            "Rolled back",
            "the database rolled the command back (it met a concurrent one); nothing was \
             written, retry it",
        )
        .retry_after(1),
        CommandError::Unauthenticated => infra::auth::AuthError::Missing.problem(),
        CommandError::Forbidden => Problem::new(
            S::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "your roles do not allow this",
        ),
        CommandError::Internal(_) => Problem::internal(),
    }
}

fn rule_problem(kind: &ErrorKind, code: &str, detail: &str) -> Problem {
    match kind {
        ErrorKind::NotFound => Problem::new(StatusCode::NOT_FOUND, code, "Not found", detail),
        ErrorKind::Conflict => Problem::new(StatusCode::CONFLICT, code, "Command refused", detail),
        ErrorKind::Invalid { field } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            "Invalid request",
            detail,
        )
        .with_errors(vec![FieldProblem {
            field: field.clone(),
            message: detail.to_owned(),
        }]),
    }
}

fn taken_problem(scope: &str) -> Problem {
    if scope == domain::payment::ORDER_PAYMENT_SCOPE {
        return Problem::new(
            StatusCode::CONFLICT,
            "payment-exists",
            "Payment exists",
            "the order already has a payment that has not failed; only a failed one frees it",
        )
        .with_errors(vec![FieldProblem {
            field: "order_id".to_owned(),
            message: "already has a payment".to_owned(),
        }]);
    }
    let (code, field) = match scope {
        "user_email" => ("email-taken", "email"),
        _ => ("value-taken", scope),
    };
    Problem::new(
        StatusCode::CONFLICT,
        code,
        "Already taken",
        format!("another aggregate already holds this {field}"),
    )
    .with_errors(vec![FieldProblem {
        field: field.to_owned(),
        message: "is already taken".to_owned(),
    }])
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // 401s carry the `WWW-Authenticate` challenge their own rendering adds.
        let unauthenticated = match self {
            Self::Auth(error) => return error.into_response(),
            Self::Command(CommandError::Unauthenticated) => infra::auth::AuthError::Missing,
            other => return other.render(),
        };
        unauthenticated.into_response()
    }
}

impl ApiError {
    fn render(self) -> Response {
        match &self {
            Self::Command(CommandError::Internal(source)) => {
                tracing::error!(error = %error_chain(source.as_ref()), "command failed");
            }
            Self::Command(CommandError::Unstorable(source)) => {
                tracing::warn!(error = %error_chain(source.as_ref()), "value refused by the store");
            }
            Self::Command(CommandError::Unavailable(source)) => {
                tracing::warn!(error = %error_chain(source.as_ref()), "database unavailable");
            }
            Self::Command(CommandError::Busy(source)) => {
                tracing::warn!(error = %error_chain(source.as_ref()),
                    "overloaded: no database connection came free in time");
            }
            Self::Command(CommandError::Transient(source)) => {
                let sqlstate = crate::core::source_sqlstate(source.as_ref());
                tracing::warn!(error = %error_chain(source.as_ref()), %sqlstate,
                    "the database rolled the command back; answered 503 rolled-back");
            }
            other => tracing::debug!(error = %other, "command refused"),
        }
        self.to_problem().into_response()
    }
}

#[cfg(test)]
mod tests {
    use infra::http::problem_code;

    use super::*;

    #[test]
    fn overload_and_an_outage_are_told_apart_to_the_client() {
        let busy = ApiError::Command(CommandError::Busy(Box::new(sqlx::Error::PoolTimedOut)));
        let problem = busy.to_problem();
        assert_eq!((problem.status, problem.retry_after_secs), (503, Some(1)));
        assert_eq!(problem_code(&problem.kind), Some("overloaded"));
        let down = ApiError::Command(CommandError::Unavailable(Box::new(
            sqlx::Error::PoolTimedOut,
        )));
        let problem = down.to_problem();
        assert_eq!((problem.status, problem.retry_after_secs), (503, Some(2)));
        assert_eq!(problem_code(&problem.kind), Some("service-unavailable"));
    }
}
