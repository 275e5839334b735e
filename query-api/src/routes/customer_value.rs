//! `GET /v1/analytics/customer-value`: what customers are worth, per currency (orders placed,
//! captured, refunded, net), most valuable first; for `support` and `admin`. Read from the
//! `customer_value` read model (`projections/src/models/customer_value.rs`), a row per order
//! summed per customer here.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use infra::auth::Authenticated;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use crate::error::QueryError;
use crate::params::{self, Params};
use crate::policy::{self, Query, Scope};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/analytics/customer-value", get(customer_value))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ValueParams {
    /// Only this customer: a user id, hyphenated.
    pub customer_id: Option<String>,
    /// Only this ISO 4217 currency.
    pub currency: Option<String>,
    /// Most rows, 1 to 100 (default 20).
    pub limit: Option<i64>,
    /// Read this as-of set instead of the live read model.
    pub as_of: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct CustomerValue {
    pub customer_id: Uuid,
    pub currency: String,
    /// Orders placed.
    pub orders: i64,
    /// Captured by those orders' payments.
    pub captured_minor: i64,
    /// Refunded by them.
    pub refunded_minor: i64,
    /// `captured_minor - refunded_minor`.
    pub net_minor: i64,
    pub first_order_at: DateTime<Utc>,
    pub last_order_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerValues {
    /// Highest `net_minor` first, then by customer and currency.
    pub items: Vec<CustomerValue>,
}

#[utoipa::path(get, path = "/v1/analytics/customer-value", tag = "analytics", params(ValueParams),
    responses((status = 200, body = CustomerValues),
        (status = 403, description = "only `support` and `admin` read analytics"),
        (status = 422, description = "invalid customer id, currency or limit")))]
pub async fn customer_value(
    Authenticated(principal): Authenticated,
    State(state): State<AppState>,
    params: Result<Params<ValueParams>, QueryError>,
) -> Result<Json<CustomerValues>, QueryError> {
    policy::require_all(&principal, Query::Analytics)?;
    let Params(params) = params?;
    let limit = params::limit(params.limit, 20, 100)?;
    let currency = params::currency(params.currency.as_deref())?;
    let pool = state
        .read_pool(Scope::All, params.as_of.as_deref(), &["rm_customer_value"])
        .await?;
    let as_of = params.as_of.is_some();
    let customer = params
        .customer_id
        .as_deref()
        .map(|raw| {
            // The hyphenated form only, as the document's pattern says.
            Some(raw)
                .filter(|raw| raw.len() == 36)
                .and_then(|raw| Uuid::parse_str(raw).ok())
                .ok_or_else(|| QueryError::invalid("customer_id", "must be a UUID, hyphenated"))
        })
        .transpose()?;
    // One customer's rows are found by the index on the bare column; an optional condition
    // (`$1 IS NULL OR customer_id = $1`) cannot use it once the statement is planned
    // generically, and summed the whole table for one customer.
    let customers = match customer {
        Some(_) => "customer_id = $1",
        None => "customer_id IS NOT NULL AND $1::uuid IS NULL",
    };
    let sql = format!(
        "SELECT customer_id, currency, count(*) AS orders,
             sum(captured_minor)::bigint AS captured_minor,
             sum(refunded_minor)::bigint AS refunded_minor,
             (sum(captured_minor) - sum(refunded_minor))::bigint AS net_minor,
             min(placed_at) AS first_order_at, max(placed_at) AS last_order_at
         FROM rm_customer_value
         WHERE {customers} AND ($2::text IS NULL OR currency = $2)
         GROUP BY customer_id, currency
         ORDER BY net_minor DESC, customer_id, currency
         LIMIT $3"
    );
    let items = sqlx::query_as::<_, CustomerValue>(&sql)
        .bind(customer)
        .bind(&currency)
        .bind(limit)
        .fetch_all(&pool)
        .await
        .map_err(|e| QueryError::of_read(as_of, e))?;
    Ok(Json(CustomerValues { items }))
}
