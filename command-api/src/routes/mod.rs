//! The command routes of the HTTP contract, one module per aggregate. Each handler parses its
//! DTO into a checked command (422 naming every bad field), runs it on the core and renders the
//! [`Outcome`] here, the same way whether it is fresh or remembered under an idempotency key.

pub mod orders;
pub mod payments;
pub mod users;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::core::Outcome;

/// The answer to every accepted command.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandAccepted {
    /// The aggregate's id.
    pub id: Uuid,
    /// The aggregate's version after the command.
    pub version: i64,
    /// Global position of the command's last event; ask the query API to wait for it.
    pub position: i64,
}

/// A rendered outcome: `{id, version, position}` plus whatever the route adds, with an `ETag`
/// of the version and `Idempotent-Replayed: true` when it was remembered.
#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    body: Value,
    version: i64,
    replayed: bool,
}

impl Reply {
    /// `200 {id, version, position}`.
    pub fn ok<E>(outcome: &Outcome<E>) -> Self {
        Self::render(StatusCode::OK, outcome)
    }

    /// `201 {id, version, position}`: the command created something.
    pub fn created<E>(outcome: &Outcome<E>) -> Self {
        Self::render(StatusCode::CREATED, outcome)
    }

    /// Adds a member to the body, e.g. an order's `total_minor`.
    pub fn with(mut self, name: &str, value: impl Serialize) -> Self {
        self.body[name] = serde_json::json!(value);
        self
    }

    fn render<E>(status: StatusCode, outcome: &Outcome<E>) -> Self {
        Self {
            status,
            body: serde_json::json!({
                "id": outcome.id,
                "version": outcome.version,
                "position": outcome.position,
            }),
            version: outcome.version,
            replayed: outcome.replayed,
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        let headers = response.headers_mut();
        if self.replayed {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", self.version)) {
            headers.insert(axum::http::header::ETAG, etag);
        }
        response
    }
}
