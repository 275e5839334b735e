//! Registry errors in Confluent's shape: HTTP status plus `{"error_code": N, "message": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    #[error("The specified subject '{0}' is not valid: it holds a control character")]
    InvalidSubject(String),
    #[error("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive")]
    InvalidCompatibility,
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{details}]")]
    Incompatible { subject: String, details: String },
    #[error("Malformed request: {0}")]
    BadRequest(String),
    #[error("Error in the backend data store")]
    Store(#[source] sqlx::Error),
}

impl RegistryError {
    fn status_and_code(&self) -> (StatusCode, u32) {
        match self {
            Self::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            Self::VersionNotFound(_) => (StatusCode::NOT_FOUND, 40402),
            Self::SchemaNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            Self::SubjectConfigNotFound(_) => (StatusCode::NOT_FOUND, 40408),
            Self::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            Self::InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            Self::InvalidCompatibility => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            Self::InvalidSubject(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42208),
            Self::Incompatible { .. } => (StatusCode::CONFLICT, 409),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, 400),
            Self::Store(error) if infra::db::is_unavailable(error) => {
                (StatusCode::SERVICE_UNAVAILABLE, 50302)
            }
            Self::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Store(error) = &self {
            tracing::error!(
                error = error as &dyn std::error::Error,
                "registry store failed"
            );
        }
        let body = serde_json::json!({ "error_code": code, "message": self.to_string() });
        let mut response = (status, body.to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}
