//! `application/problem+json` (RFC 9457) responses. Every error a service returns goes through
//! [`Problem`], so clients always see `type`, `title`, `status`, `detail` and, for validation
//! failures, `errors: [{field, message}]`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Problem `type`s are relative URI references under this prefix, e.g. `/problems/version-conflict`.
pub const PROBLEM_PREFIX: &str = "/problems/";

/// The code of a problem `type` rendered by [`Problem::new`] (`/problems/<code>` -> `<code>`),
/// or `None` for a type of another shape. Compare the result with the shared constants in
/// `domain::problem_types`, exactly.
pub fn problem_code(kind: &str) -> Option<&str> {
    kind.strip_prefix(PROBLEM_PREFIX)
        .filter(|code| !code.is_empty() && !code.contains('/'))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    /// Extra members, e.g. `current_version` on a version conflict.
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    pub retry_after_secs: Option<u32>,
}

impl Problem {
    /// `code` is a stable kebab-case rule name; it becomes the `type` URI.
    pub fn new(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("{PROBLEM_PREFIX}{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            extensions: serde_json::Map::new(),
            retry_after_secs: None,
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldProblem>) -> Self {
        self.errors = errors;
        self
    }

    pub fn with_extension(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 503 for a dependency that is down; clients should retry after `secs`.
    pub fn unavailable(what: &str, secs: u32) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service-unavailable",
            "Service unavailable",
            format!("{what} is unavailable; nothing was written, retry later"),
        )
        .retry_after(secs)
    }

    /// 500 for a fault of ours. The detail is deliberately generic: the cause is logged.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "Internal server error",
            "the server failed to handle the request; it has been logged",
        )
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after_secs;
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_of_a_rendered_type_is_recovered_exactly() {
        let problem = Problem::new(StatusCode::CONFLICT, "version-conflict", "t", "d");
        assert_eq!(problem_code(&problem.kind), Some("version-conflict"));
    }

    #[test]
    fn a_type_of_another_shape_has_no_code() {
        assert_eq!(
            problem_code("https://example.invalid/version-conflict"),
            None
        );
        assert_eq!(problem_code("/problems/"), None);
        assert_eq!(problem_code("/problems/a/version-conflict"), None);
        assert_eq!(problem_code(""), None);
    }
}
