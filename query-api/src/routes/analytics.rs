//! `GET /v1/analytics/revenue` (per day and currency) and `GET /v1/analytics/order-funnel`.
//! Days are UTC; `from` and `to` are inclusive and optional (no bound when absent). For
//! `support` and `admin` only.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use infra::auth::Authenticated;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::orders::STATUSES;
use super::AppState;
use crate::error::QueryError;
use crate::params::{self, Params};
use crate::policy::{self, Query, Scope};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/analytics/revenue", get(revenue))
        .route("/v1/analytics/order-funnel", get(funnel))
}

fn check_range(from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<(), QueryError> {
    use chrono::Datelike;
    for (field, day) in [("from", from), ("to", to)] {
        if day.is_some_and(|d| !(1..=9999).contains(&d.year())) {
            return Err(QueryError::invalid(
                field,
                "must be a day of the years 1 to 9999",
            ));
        }
    }
    match (from, to) {
        (Some(from), Some(to)) if from > to => {
            Err(QueryError::invalid("from", "must not be after `to`"))
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RevenueParams {
    /// First day, `YYYY-MM-DD` (UTC).
    #[serde(default, deserialize_with = "params::day")]
    pub from: Option<NaiveDate>,
    /// Last day, `YYYY-MM-DD` (UTC).
    #[serde(default, deserialize_with = "params::day")]
    pub to: Option<NaiveDate>,
    /// Only this ISO 4217 currency.
    pub currency: Option<String>,
    /// Read this as-of set instead of the live read model.
    pub as_of: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct RevenueDay {
    pub day: NaiveDate,
    pub currency: String,
    /// Captured that day.
    pub captured_minor: i64,
    /// Refunded that day.
    pub refunded_minor: i64,
    /// `captured_minor - refunded_minor`.
    pub net_minor: i64,
    /// Orders placed that day in this currency.
    pub orders: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revenue {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub currency: Option<String>,
    /// By day, then currency.
    pub items: Vec<RevenueDay>,
}

#[utoipa::path(get, path = "/v1/analytics/revenue", tag = "analytics", params(RevenueParams),
    responses((status = 200, body = Revenue),
        (status = 403, description = "only `support` and `admin` read analytics"),
        (status = 422, description = "invalid date, range or currency")))]
pub async fn revenue(
    Authenticated(principal): Authenticated,
    State(state): State<AppState>,
    params: Result<Params<RevenueParams>, QueryError>,
) -> Result<Json<Revenue>, QueryError> {
    policy::require_all(&principal, Query::Analytics)?;
    let Params(params) = params?;
    check_range(params.from, params.to)?;
    let pool = state
        .read_pool(Scope::All, params.as_of.as_deref(), &["rm_revenue_daily"])
        .await?;
    let as_of = params.as_of.is_some();
    let currency = params::currency(params.currency.as_deref())?;
    let items = sqlx::query_as::<_, RevenueDay>(
        "SELECT day, currency, captured_minor, refunded_minor,
             captured_minor - refunded_minor AS net_minor, orders
         FROM rm_revenue_daily
         WHERE ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day <= $2)
           AND ($3::text IS NULL OR currency = $3)
         ORDER BY day, currency",
    )
    .bind(params.from)
    .bind(params.to)
    .bind(&currency)
    .fetch_all(&pool)
    .await
    .map_err(|e| QueryError::of_read(as_of, e))?;
    Ok(Json(Revenue {
        from: params.from,
        to: params.to,
        currency,
        items,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FunnelParams {
    /// Orders placed on or after this day, `YYYY-MM-DD` (UTC).
    #[serde(default, deserialize_with = "params::day")]
    pub from: Option<NaiveDate>,
    /// Orders placed on or before this day.
    #[serde(default, deserialize_with = "params::day")]
    pub to: Option<NaiveDate>,
    /// Read this as-of set instead of the live read model.
    pub as_of: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Funnel {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Orders placed in the range.
    pub total: i64,
    /// Orders per current status; every status is present.
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, i64>,
}

#[utoipa::path(get, path = "/v1/analytics/order-funnel", tag = "analytics", params(FunnelParams),
    responses((status = 200, body = Funnel),
        (status = 403, description = "only `support` and `admin` read analytics"),
        (status = 422, description = "invalid date or range")))]
pub async fn funnel(
    Authenticated(principal): Authenticated,
    State(state): State<AppState>,
    params: Result<Params<FunnelParams>, QueryError>,
) -> Result<Json<Funnel>, QueryError> {
    policy::require_all(&principal, Query::Analytics)?;
    let Params(params) = params?;
    check_range(params.from, params.to)?;
    let pool = state
        .read_pool(Scope::All, params.as_of.as_deref(), &["rm_funnel"])
        .await?;
    let as_of = params.as_of.is_some();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        // The days as a range of instants (UTC), the column bare: its index bounds the scan,
        // also under a generic plan. A cast of the column to a date read every order.
        "SELECT status, count(*) FROM rm_funnel
         WHERE placed_at >= COALESCE($1::date::timestamp AT TIME ZONE 'UTC', '-infinity')
           AND placed_at < COALESCE(($2::date + 1)::timestamp AT TIME ZONE 'UTC', 'infinity')
         GROUP BY status",
    )
    .bind(params.from)
    .bind(params.to)
    .fetch_all(&pool)
    .await
    .map_err(|e| QueryError::of_read(as_of, e))?;
    let mut counts: BTreeMap<String, i64> = STATUSES.iter().map(|s| (s.to_string(), 0)).collect();
    for (status, n) in rows {
        counts.insert(status, n);
    }
    Ok(Json(Funnel {
        from: params.from,
        to: params.to,
        total: counts.values().sum(),
        counts,
    }))
}
