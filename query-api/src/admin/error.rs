//! The console's errors, each an HTML page (or, for a missing or expired session, a redirect
//! to the login form). The one place console errors become responses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::layout;
use super::session::cleared_cookie;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No session, or an expired one: back to the login form.
    #[error("no valid session")]
    LoginRequired { expired: bool },
    /// The token endpoint refused the login: the form again, with why.
    #[error("login refused: {message}")]
    LoginRefused {
        status: StatusCode,
        message: &'static str,
    },
    /// A bearer header with a token that does not verify.
    #[error("the bearer token is not valid")]
    Unauthenticated,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The request was understood but the state refuses it (a retry refused).
    #[error("refused: {0}")]
    Conflict(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, title, detail) = match self {
            Self::LoginRequired { expired } => {
                let mut response = (
                    StatusCode::SEE_OTHER,
                    [(header::LOCATION, HeaderValue::from_static("/admin/login"))],
                )
                    .into_response();
                if expired {
                    response
                        .headers_mut()
                        .insert(header::SET_COOKIE, cleared_cookie());
                }
                return response;
            }
            Self::LoginRefused { status, message } => {
                return layout::respond(status, super::login::login_page(Some(message)));
            }
            Self::Unauthenticated => {
                let mut response = layout::error_page(
                    StatusCode::UNAUTHORIZED,
                    "Unauthenticated",
                    "the bearer token is not valid here",
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="commerce", error="invalid_token""#),
                );
                return response;
            }
            Self::Forbidden(detail) => (StatusCode::FORBIDDEN, "Forbidden", detail),
            Self::BadRequest(detail) => (StatusCode::BAD_REQUEST, "Bad request", detail),
            Self::NotFound(detail) => (StatusCode::NOT_FOUND, "Not found", detail),
            Self::Conflict(detail) => (StatusCode::CONFLICT, "Not done", detail),
            Self::Unavailable(detail) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable", detail),
            Self::Internal(detail) => {
                tracing::error!(%detail, "admin console failure");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                    "something failed on our side; it is logged".to_owned(),
                )
            }
            Self::Database(error) if infra::db::is_unavailable(&error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "database unavailable"
                );
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    "the database cannot be reached; try again shortly".to_owned(),
                )
            }
            Self::Database(error) => {
                tracing::error!(
                    error = &error as &dyn std::error::Error,
                    "admin console query failed"
                );
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                    "a database query failed; it is logged".to_owned(),
                )
            }
        };
        layout::error_page(status, title, &detail)
    }
}
