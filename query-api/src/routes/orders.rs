//! `GET /v1/orders/{id}` and `GET /v1/users/{id}/orders` (newest first, keyset-paginated). A
//! customer reads only their own orders and order list; another customer's order is 404 as a
//! missing one is, and another customer's list is answered as an unknown user's.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::OrderStatus;
use infra::auth::Authenticated;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{represent, single, AppState, Page, ReadParams};
use crate::cache::{Key, Representation};
use crate::error::QueryError;
use crate::params::{self, path_id, Cursor, NamesAsOf, Params};
use crate::policy::{self, Query};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/orders/{id}", get(order))
        .route("/v1/users/{id}/orders", get(customer_orders))
}

/// The names of [`OrderStatus::ALL`], as the read model stores them.
pub const STATUSES: [&str; 6] = {
    let mut names = [""; 6];
    let mut i = 0;
    while i < names.len() {
        names[i] = OrderStatus::ALL[i].as_str();
        i += 1;
    }
    names
};

/// An order. `paid_minor` and `refunded_minor` sum its payments' captures and refunds.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct OrderView {
    pub id: Uuid,
    pub customer_id: Uuid,
    /// `created`, `confirmed`, `processing`, `shipped`, `delivered` or `cancelled`.
    pub status: String,
    /// `[{sku, quantity, unit_price_minor}]`
    #[schema(value_type = Vec<Object>)]
    pub items: serde_json::Value,
    pub currency: String,
    pub total_minor: i64,
    pub paid_minor: i64,
    pub refunded_minor: i64,
    #[schema(value_type = Object)]
    pub shipping_address: serde_json::Value,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub version: i64,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The entity tag of an order. Its representation also changes when a payment of it is
/// captured or refunded, which does not change the order's version, so money moved is part of
/// the tag: `"N"` before any, `"N.paid.refunded"` after. Both totals only grow, so the tag
/// names exactly one representation.
pub fn order_tag(order: &OrderView) -> String {
    if order.paid_minor == 0 && order.refunded_minor == 0 {
        format!("\"{}\"", order.version)
    } else {
        format!(
            "\"{}.{}.{}\"",
            order.version, order.paid_minor, order.refunded_minor
        )
    }
}

async fn load(pool: PgPool, id: Uuid) -> Result<Option<Representation>, sqlx::Error> {
    let order = sqlx::query_as::<_, OrderView>(
        "SELECT o.id, o.customer_id, o.status, o.items, o.currency, o.total_minor,
             COALESCE(p.paid_minor, 0) AS paid_minor, COALESCE(p.refunded_minor, 0) AS refunded_minor,
             o.shipping_address, o.carrier, o.tracking_number, o.version, o.placed_at, o.updated_at
         FROM rm_orders o
         LEFT JOIN LATERAL (
             SELECT SUM(captured_minor)::bigint AS paid_minor, SUM(refunded_minor)::bigint AS refunded_minor
             FROM rm_payments WHERE order_id = o.id
         ) p ON true
         WHERE o.id = $1",
    )
    .bind(id)
    .fetch_optional(&pool)
    .await?;
    Ok(order.map(|o| {
        represent(o.version, order_tag(&o), Some(o.customer_id), &o)
            .with_money(o.paid_minor, o.refunded_minor)
    }))
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", params(("id" = Uuid, Path), ReadParams),
    responses((status = 200, body = OrderView, headers(("ETag" = String))),
        (status = 304, description = "`If-None-Match` names the current representation"),
        (status = 404, description = "no such order, or (for a customer) another customer's"),
        (status = 504, description = "the read model did not reach `min_version` in time")))]
pub async fn order(
    Authenticated(principal): Authenticated,
    State(state): State<AppState>,
    Path(id): Path<String>,
    names_as_of: NamesAsOf,
    params: Result<Params<ReadParams>, QueryError>,
    headers: HeaderMap,
) -> Result<Response, QueryError> {
    let scope = policy::admit(&principal, Query::Order)?;
    super::as_of_permitted(scope, names_as_of.as_param())?;
    let Params(params) = params?;
    let tables = ["rm_orders", "rm_payments"];
    single(
        &state,
        scope,
        &id,
        Key::Order,
        params,
        &headers,
        &tables,
        load,
    )
    .await
}

/// One line of a customer's order list.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct OrderSummary {
    pub id: Uuid,
    pub status: String,
    pub currency: String,
    pub total_minor: i64,
    pub item_count: i32,
    pub version: i64,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only orders in this status.
    pub status: Option<String>,
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Read this as-of set instead of the live read model (operators only).
    pub as_of: Option<String>,
}

#[utoipa::path(get, path = "/v1/users/{id}/orders", tag = "orders",
    params(("id" = Uuid, Path), ListParams),
    responses((status = 200, body = Page<OrderSummary>),
        (status = 404, description = "no such user, or (for a customer) another user"),
        (status = 422, description = "invalid `status`, `limit` or `cursor`")))]
pub async fn customer_orders(
    Authenticated(principal): Authenticated,
    State(state): State<AppState>,
    Path(id): Path<String>,
    names_as_of: NamesAsOf,
    params: Result<Params<ListParams>, QueryError>,
) -> Result<Json<Page<OrderSummary>>, QueryError> {
    let scope = policy::admit(&principal, Query::CustomerOrders)?;
    super::as_of_permitted(scope, names_as_of.as_param())?;
    let Params(params) = params?;
    let customer = path_id(&id, "user")?;
    // Another customer's list is answered exactly as an unknown user's: after the same
    // parameter checks, no orders; then 404 on a first page, an empty page after a cursor.
    let visible = scope.permits(Some(customer));
    let limit = params::limit(params.limit, 20, 100)?;
    if let Some(status) = &params.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(QueryError::invalid(
                "status",
                format!("must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let cursor = params.cursor.as_deref().map(Cursor::decode).transpose()?;
    let pool = state
        .read_pool(scope, params.as_of.as_deref(), &["rm_orders", "rm_users"])
        .await?;
    let as_of = params.as_of.is_some();
    // Keyset pagination on (placed_at, id), newest first: pages never repeat a row, nor skip
    // one that was visible when the walk began. Orders placed while a client pages land before
    // its first page. An order the projector applies late (orders of different partitions are
    // applied in no set order) may land in a page already read: a walk is as complete as the
    // read model was when it started, which `min_version` on the order itself can confirm.
    let mut items = if visible {
        let sql = customer_page_sql(params.status.is_some(), cursor.is_some());
        let mut query = sqlx::query_as::<_, OrderSummary>(&sql).bind(customer);
        if let Some(status) = &params.status {
            query = query.bind(status);
        }
        if let Some(cursor) = cursor {
            query = query.bind(cursor.at).bind(cursor.id);
        }
        query
            .bind(limit + 1)
            .fetch_all(&pool)
            .await
            .map_err(|e| QueryError::of_read(as_of, e))?
    } else {
        Vec::new()
    };
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|o| {
            Cursor {
                at: o.placed_at,
                id: o.id,
            }
            .encode()
        })
    } else {
        None
    };
    if items.is_empty() && cursor.is_none() {
        let known = visible
            && sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM rm_users WHERE id = $1)")
                .bind(customer)
                .fetch_one(&pool)
                .await
                .map_err(|e| QueryError::of_read(as_of, e))?;
        if !known {
            return Err(QueryError::NotFound { what: "user" });
        }
    }
    Ok(Json(Page { items, next_cursor }))
}

/// The statement of one page of a customer's orders: `$1` the customer, then the status
/// (when `status`), then the cursor's time and id (when `cursor`), then the row limit. One
/// text per combination, each condition written only when it applies: an optional one
/// (`$3 IS NULL OR (placed_at, id) < ...`) cannot bound the index scan once PostgreSQL plans
/// the prepared statement generically (after a few runs on a connection), so every page
/// scanned the customer's orders from the newest.
pub fn customer_page_sql(status: bool, cursor: bool) -> String {
    let mut sql = String::from(
        "SELECT id, status, currency, total_minor, jsonb_array_length(items) AS item_count,
                version, placed_at, updated_at
         FROM rm_orders WHERE customer_id = $1",
    );
    let mut next = 2;
    if status {
        sql.push_str(&format!(" AND status = ${next}"));
        next += 1;
    }
    if cursor {
        sql.push_str(&format!(" AND (placed_at, id) < (${next}, ${})", next + 1));
        next += 2;
    }
    sql.push_str(&format!(" ORDER BY placed_at DESC, id DESC LIMIT ${next}"));
    sql
}
