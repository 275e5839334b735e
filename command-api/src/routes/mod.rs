//! The command routes of API.md, one module per aggregate. Each handler parses its DTO into a
//! checked command (422 naming every bad field), dispatches it on the bus and shapes the reply.

pub mod orders;
pub mod payments;
pub mod users;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::bus::{Committed, Reply};

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

/// The standard body: `{id, version, position}`.
pub fn accepted<A: cqrs_es::Aggregate>(committed: &Committed<A>) -> serde_json::Value {
    serde_json::json!({
        "id": committed.id,
        "version": committed.version,
        "position": committed.position,
    })
}

/// `(200, {id, version, position})`.
pub fn ok<A: cqrs_es::Aggregate>(committed: &Committed<A>) -> (StatusCode, serde_json::Value) {
    (StatusCode::OK, accepted(committed))
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let version = self.body.get("version").and_then(serde_json::Value::as_i64);
        let mut response = (self.status, Json(self.body)).into_response();
        let headers = response.headers_mut();
        if self.replayed {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        if let Some(version) = version {
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
                headers.insert(axum::http::header::ETAG, etag);
            }
        }
        response
    }
}
