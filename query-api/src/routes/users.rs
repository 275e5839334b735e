//! `GET /v1/users/{id}` (staff, services, and a customer for themselves) and
//! `GET /v1/users?email=` (support and admin only).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use domain::values::Email;
use infra::auth::Authenticated;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{conditional, represent, single, version_tag, AppState, ReadParams};
use crate::cache::{Key, Representation};
use crate::error::QueryError;
use crate::params::{NamesAsOf, Params};
use crate::policy::{self, Query};

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

/// A user's representation; a user is its own owner.
fn representation(user: UserView) -> Representation {
    represent(
        user.version,
        version_tag(user.version),
        Some(user.id),
        &user,
    )
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
        (status = 404, description = "no such user, or (for a customer) another user"),
        (status = 504, description = "the read model did not reach `min_version` in time")))]
pub async fn user(
    Authenticated(principal): Authenticated,
    State(state): State<AppState>,
    Path(id): Path<String>,
    names_as_of: NamesAsOf,
    params: Result<Params<ReadParams>, QueryError>,
    headers: HeaderMap,
) -> Result<Response, QueryError> {
    let scope = policy::admit(&principal, Query::User)?;
    super::as_of_permitted(scope, names_as_of.as_param())?;
    let Params(params) = params?;
    single(
        &state,
        scope,
        &id,
        Key::User,
        params,
        &headers,
        &["rm_users"],
        load,
    )
    .await
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
        (status = 403, description = "only `support` and `admin` look users up by email"),
        (status = 404, description = "no user has that email"),
        (status = 422, description = "`email` missing or not an email address")))]
pub async fn by_email(
    Authenticated(principal): Authenticated,
    State(state): State<AppState>,
    params: Result<Params<EmailParams>, QueryError>,
) -> Result<Response, QueryError> {
    policy::require_all(&principal, Query::UserByEmail)?;
    let Params(params) = params?;
    let raw = params
        .email
        .ok_or_else(|| QueryError::invalid("email", "is required"))?;
    let email = Email::parse(&raw).map_err(|e| QueryError::invalid("email", e.to_string()))?;
    // Two rows can hold one email for a moment, while the users topic's partitions are applied
    // in another order than the events happened (one user gave it up, another took it): the
    // one that took it last is the answer.
    let user = sqlx::query_as::<_, UserView>(&format!(
        "{SELECT} WHERE email_key = $1 ORDER BY updated_at DESC, id LIMIT 1"
    ))
    .bind(email.normalized())
    .fetch_optional(&state.pool)
    .await?
    .ok_or(QueryError::NotFound { what: "user" })?;
    // The same email can name another user later (one gave it up, another took it), at the
    // same version: the tag (the version, as the contract fixes it, and as `If-Match` takes it
    // back) cannot tell them apart, so a lookup is always answered in full. Answering
    // `If-None-Match` here gave 304 to a client holding the first user's version 1 when the
    // second user was at 1 too.
    Ok(conditional(&representation(user), &HeaderMap::new()))
}
