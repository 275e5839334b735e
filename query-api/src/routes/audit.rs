//! `GET /v1/audit/{aggregate_type}/{id}`: every event of one aggregate, in order, with its
//! metadata (who, when, why, trace), from the audit projection. For `support` and `admin`
//! only.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use infra::auth::Authenticated;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{AppState, Page};
use crate::error::QueryError;
use crate::params::{self, path_id, Params};
use crate::policy::{self, Query};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/audit/{aggregate_type}/{id}", get(history))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    pub sequence: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: String,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub traceparent: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// The aggregate types with a history.
pub const AGGREGATE_TYPES: [&str; 3] = ["user", "order", "payment"];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Page size, 1 to 1000 (default 1000).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit/{aggregate_type}/{id}", tag = "audit",
    params(("aggregate_type" = String, Path, description = "`user`, `order` or `payment`"),
        ("id" = Uuid, Path), HistoryParams),
    responses((status = 200, body = Page<AuditEntry>),
        (status = 403, description = "only `support` and `admin` read audit histories"),
        (status = 404, description = "unknown aggregate type, or no events for that id"),
        (status = 422, description = "invalid `limit` or `cursor`")))]
pub async fn history(
    Authenticated(principal): Authenticated,
    State(state): State<AppState>,
    Path((aggregate_type, id)): Path<(String, String)>,
    params: Result<Params<HistoryParams>, QueryError>,
) -> Result<Json<Page<AuditEntry>>, QueryError> {
    policy::require_all(&principal, Query::Audit)?;
    let Params(params) = params?;
    let what = AGGREGATE_TYPES
        .into_iter()
        .find(|known| *known == aggregate_type)
        .ok_or(QueryError::NotFound {
            what: "aggregate type",
        })?;
    let id = path_id(&id, what)?;
    let limit = params::limit(params.limit, 1000, 1000)?;
    let after: i64 = match params.cursor.as_deref() {
        None => 0,
        Some(raw) => raw
            .parse()
            .ok()
            .filter(|n: &i64| *n >= 0)
            .ok_or_else(|| QueryError::invalid("cursor", "not a cursor this API returned"))?,
    };
    let mut items = sqlx::query_as::<_, AuditEntry>(
        "SELECT sequence, event_id, event_type, event_version, occurred_at, actor,
             correlation_id, causation_id, traceparent, payload
         FROM rm_audit
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
         ORDER BY sequence
         LIMIT $4",
    )
    .bind(what)
    .bind(id.to_string())
    .bind(after)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    if items.is_empty() && after == 0 {
        return Err(QueryError::NotFound { what });
    }
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|e| e.sequence.to_string())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}
