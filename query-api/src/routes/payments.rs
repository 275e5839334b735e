//! `GET /v1/payments/{id}` and `GET /v1/orders/{id}/payments`. A payment belongs to its
//! order's customer, who alone of the customers may read it; to any other customer it, and
//! the payments of an order not theirs, are 404 as missing ones are.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use infra::auth::Authenticated;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{represent, single, version_tag, AppState, ReadParams};
use crate::cache::{Key, Representation};
use crate::error::QueryError;
use crate::params::{path_id, NamesAsOf, Params};
use crate::policy::{self, Query};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/payments/{id}", get(payment))
        .route("/v1/orders/{id}/payments", get(order_payments))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct PaymentView {
    pub id: Uuid,
    pub order_id: Uuid,
    /// `initiated`, `authorized`, `captured`, `failed`, `partially_refunded` or `refunded`.
    pub status: String,
    pub amount_minor: i64,
    pub authorized_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub currency: String,
    /// `card`, `bank_transfer` or `wallet`.
    pub method: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const SELECT: &str = "SELECT id, order_id, status, amount_minor, authorized_minor, captured_minor,
    refunded_minor, currency, method, version, created_at, updated_at FROM rm_payments";

/// A payment and the customer of its order (`None` while the order is not projected).
#[derive(sqlx::FromRow)]
struct OwnedPayment {
    #[sqlx(flatten)]
    payment: PaymentView,
    owner: Option<Uuid>,
}

async fn load(pool: PgPool, id: Uuid) -> Result<Option<Representation>, sqlx::Error> {
    let found = sqlx::query_as::<_, OwnedPayment>(
        "SELECT p.id, p.order_id, p.status, p.amount_minor, p.authorized_minor,
             p.captured_minor, p.refunded_minor, p.currency, p.method, p.version, p.created_at,
             p.updated_at, o.customer_id AS owner
         FROM rm_payments p LEFT JOIN rm_orders o ON o.id = p.order_id
         WHERE p.id = $1",
    )
    .bind(id)
    .fetch_optional(&pool)
    .await?;
    Ok(found.map(|OwnedPayment { payment: p, owner }| {
        represent(p.version, version_tag(p.version), owner, &p)
    }))
}

#[utoipa::path(get, path = "/v1/payments/{id}", tag = "payments", params(("id" = Uuid, Path), ReadParams),
    responses((status = 200, body = PaymentView, headers(("ETag" = String))),
        (status = 304, description = "`If-None-Match` names the current version"),
        (status = 404, description = "no such payment, or (for a customer) one of another \
            customer's order"),
        (status = 504, description = "the read model did not reach `min_version` in time")))]
pub async fn payment(
    Authenticated(principal): Authenticated,
    State(state): State<AppState>,
    Path(id): Path<String>,
    names_as_of: NamesAsOf,
    params: Result<Params<ReadParams>, QueryError>,
    headers: HeaderMap,
) -> Result<Response, QueryError> {
    let scope = policy::admit(&principal, Query::Payment)?;
    super::as_of_permitted(scope, names_as_of.as_param())?;
    let Params(params) = params?;
    let tables = ["rm_payments", "rm_orders"];
    single(
        &state,
        scope,
        &id,
        Key::Payment,
        params,
        &headers,
        &tables,
        load,
    )
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPayments {
    /// Oldest first.
    pub items: Vec<PaymentView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderPaymentsParams {
    /// Read this as-of set instead of the live read models (operators only).
    pub as_of: Option<String>,
}

#[utoipa::path(get, path = "/v1/orders/{id}/payments", tag = "payments",
    params(("id" = Uuid, Path), OrderPaymentsParams),
    responses((status = 200, body = OrderPayments),
        (status = 404, description = "no such order, or (for a customer) another customer's")))]
pub async fn order_payments(
    Authenticated(principal): Authenticated,
    State(state): State<AppState>,
    Path(id): Path<String>,
    names_as_of: NamesAsOf,
    params: Result<Params<OrderPaymentsParams>, QueryError>,
) -> Result<Json<OrderPayments>, QueryError> {
    let scope = policy::admit(&principal, Query::OrderPayments)?;
    super::as_of_permitted(scope, names_as_of.as_param())?;
    let Params(params) = params?;
    let order = path_id(&id, "order")?;
    let pool = state
        .read_pool(
            scope,
            params.as_of.as_deref(),
            &["rm_payments", "rm_orders"],
        )
        .await?;
    let as_of = params.as_of.is_some();
    if scope.viewer().is_some() {
        // An order not (yet) in the read model has no known owner: hidden, as a missing one.
        let owner: Option<Uuid> =
            sqlx::query_scalar("SELECT customer_id FROM rm_orders WHERE id = $1")
                .bind(order)
                .fetch_optional(&pool)
                .await
                .map_err(|e| QueryError::of_read(as_of, e))?;
        scope.check(owner, "order")?;
    }
    let items = sqlx::query_as::<_, PaymentView>(&format!(
        "{SELECT} WHERE order_id = $1 ORDER BY created_at, id"
    ))
    .bind(order)
    .fetch_all(&pool)
    .await
    .map_err(|e| QueryError::of_read(as_of, e))?;
    if items.is_empty() {
        let known: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM rm_orders WHERE id = $1)")
                .bind(order)
                .fetch_one(&pool)
                .await
                .map_err(|e| QueryError::of_read(as_of, e))?;
        if !known {
            return Err(QueryError::NotFound { what: "order" });
        }
    }
    Ok(Json(OrderPayments { items }))
}
