//! `GET /v1/users/{id}` and `GET /v1/users?email=`.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use domain::values::Email;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{conditional, represent, single, version_tag, AppState, ReadParams};
use crate::cache::{Key, Representation};
use crate::error::QueryError;
use crate::params::Params;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/users", get(by_email))
        .route("/v1/users/{id}", get(user))
}

/// A user as the users projection keeps it.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    #[schema(value_type = Object)]
    pub preferences: serde_json::Value,
    /// `[{id, label, line1, line2, city, postal_code, country}]`
    #[schema(value_type = Vec<Object>)]
    pub addresses: serde_json::Value,
    #[schema(value_type = Vec<String>)]
    pub roles: serde_json::Value,
    /// `active` or `deactivated`.
    pub status: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const SELECT: &str = "SELECT id, email, display_name, preferences, addresses, roles, status,
    version, created_at, updated_at FROM rm_users";

fn representation(user: UserView) -> Representation {
    represent(user.version, version_tag(user.version), &user)
}

async fn load(pool: PgPool, id: Uuid) -> Result<Option<Representation>, sqlx::Error> {
    let user = sqlx::query_as::<_, UserView>(&format!("{SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(&pool)
        .await?;
    Ok(user.map(representation))
}

#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path), ReadParams),
    responses((status = 200, body = UserView, headers(("ETag" = String))),
        (status = 304, description = "`If-None-Match` names the current version"),
        (status = 404, description = "no such user"),
        (status = 504, description = "the read model did not reach `min_version` in time")))]
pub async fn user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(params): Params<ReadParams>,
    headers: HeaderMap,
) -> Result<Response, QueryError> {
    single(&state, &id, Key::User, params, &headers, load).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EmailParams {
    /// Compared case-insensitively, as registration does.
    #[param(value_type = String)]
    pub email: Option<String>,
}

#[utoipa::path(get, path = "/v1/users", tag = "users", params(EmailParams),
    responses((status = 200, body = UserView, headers(("ETag" = String))),
        (status = 404, description = "no user has that email"),
        (status = 422, description = "`email` missing or not an email address")))]
pub async fn by_email(
    State(state): State<AppState>,
    Params(params): Params<EmailParams>,
    headers: HeaderMap,
) -> Result<Response, QueryError> {
    let raw = params
        .email
        .ok_or_else(|| QueryError::invalid("email", "is required"))?;
    let email = Email::parse(&raw).map_err(|e| QueryError::invalid("email", e.to_string()))?;
    let user = sqlx::query_as::<_, UserView>(&format!("{SELECT} WHERE email_key = $1"))
        .bind(email.normalized())
        .fetch_optional(&state.pool)
        .await?
        .ok_or(QueryError::NotFound { what: "user" })?;
    Ok(conditional(&representation(user), &headers))
}
