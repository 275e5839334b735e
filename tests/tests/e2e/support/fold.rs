//! [`assert_read_models_match_the_events`]: folds the events table independently of the
//! projector and compares every read model with the result.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sqlx::{PgPool, Row};

/// Folds the events table independently of the projector and compares every read model.
pub async fn assert_read_models_match_the_events(pool: &PgPool) {
    let events = sqlx::query(
        "SELECT aggregate_type, aggregate_id, sequence, payload, event_id, metadata FROM events
         ORDER BY aggregate_type, aggregate_id, sequence",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut users: BTreeMap<String, (String, String, i64)> = BTreeMap::new();
    let mut orders: BTreeMap<String, (String, i64, Option<String>)> = BTreeMap::new();
    let mut payments: BTreeMap<String, (String, i64, i64, i64)> = BTreeMap::new();
    let mut revenue: BTreeMap<(String, String), (i64, i64, i64)> = BTreeMap::new();
    // Per order: its customer and currency, and the money its payments captured and refunded.
    type OrderValue = (Option<String>, Option<String>, i64, i64);
    let mut value: BTreeMap<String, OrderValue> = BTreeMap::new();
    for row in &events {
        let (kind, id): (String, String) = (row.get("aggregate_type"), row.get("aggregate_id"));
        let sequence: i64 = row.get("sequence");
        let payload: Value = row.get("payload");
        let metadata: Value = row.get("metadata");
        let day = metadata["occurred_at"].as_str().unwrap_or_default()[..10].to_owned();
        let t = payload["type"].as_str().unwrap_or_default();
        match kind.as_str() {
            "user" => {
                let entry = users
                    .entry(id)
                    .or_insert((String::new(), "active".into(), 0));
                if let Some(name) = payload["display_name"].as_str() {
                    entry.0 = name.to_owned();
                }
                if t == "UserDeactivated" {
                    entry.1 = "deactivated".into();
                }
                entry.2 = sequence;
            }
            "order" => {
                let entry = orders.entry(id.clone()).or_insert((String::new(), 0, None));
                entry.0 = match t {
                    "OrderPlaced" => {
                        let currency = payload["currency"].as_str().unwrap_or_default().to_owned();
                        let row = value.entry(id).or_default();
                        row.0 = payload["customer_id"].as_str().map(str::to_owned);
                        row.1 = Some(currency.clone());
                        revenue.entry((day.clone(), currency)).or_default().2 += 1;
                        "created"
                    }
                    "OrderConfirmed" => "confirmed",
                    "OrderProcessingStarted" => "processing",
                    "OrderShipped" => {
                        entry.2 = payload["carrier"].as_str().map(str::to_owned);
                        "shipped"
                    }
                    "OrderDelivered" => "delivered",
                    _ => "cancelled",
                }
                .to_owned();
                entry.1 = sequence;
            }
            _ => {
                let entry = payments.entry(id).or_insert((String::new(), 0, 0, 0));
                let currency = payload["currency"].as_str().unwrap_or_default().to_owned();
                let amount = payload["amount_minor"].as_i64().unwrap_or_default();
                let order = payload["order_id"].as_str().unwrap_or_default().to_owned();
                entry.0 = match t {
                    "PaymentInitiated" => "initiated".into(),
                    "PaymentAuthorized" => "authorized".into(),
                    "PaymentCaptured" => {
                        entry.1 = payload["captured_total_minor"].as_i64().unwrap_or_default();
                        revenue.entry((day.clone(), currency)).or_default().0 += amount;
                        value.entry(order).or_default().2 += amount;
                        match entry.2 > 0 {
                            true => "partially_refunded".into(),
                            false => "captured".into(),
                        }
                    }
                    "PaymentFailed" => "failed".into(),
                    _ => {
                        entry.2 = payload["refunded_total_minor"].as_i64().unwrap_or_default();
                        revenue.entry((day.clone(), currency)).or_default().1 += amount;
                        value.entry(order).or_default().3 += amount;
                        if payload["fully_refunded"] == json!(true) {
                            "refunded".into()
                        } else {
                            "partially_refunded".into()
                        }
                    }
                };
                entry.3 = sequence;
            }
        }
    }
    let projected: BTreeMap<String, (String, String, i64)> = rows::<(String, String, String, i64)>(
        pool,
        "SELECT id::text, display_name, status, version FROM rm_users",
    )
    .await
    .into_iter()
    .map(|(id, name, status, version)| (id, (name, status, version)))
    .collect();
    assert_eq!(projected, users, "rm_users differs from the events");
    let projected: BTreeMap<String, (String, i64, Option<String>)> =
        rows::<(String, String, i64, Option<String>)>(
            pool,
            "SELECT id::text, status, version, carrier FROM rm_orders",
        )
        .await
        .into_iter()
        .map(|(id, status, version, carrier)| (id, (status, version, carrier)))
        .collect();
    assert_eq!(projected, orders, "rm_orders differs from the events");
    let projected: BTreeMap<String, (String, i64, i64, i64)> =
        rows::<(String, String, i64, i64, i64)>(
            pool,
            "SELECT id::text, status, captured_minor, refunded_minor, version FROM rm_payments",
        )
        .await
        .into_iter()
        .map(|(id, status, captured, refunded, version)| {
            (id, (status, captured, refunded, version))
        })
        .collect();
    assert_eq!(projected, payments, "rm_payments differs from the events");
    let projected: BTreeMap<(String, String), (i64, i64, i64)> = rows::<(
        String,
        String,
        i64,
        i64,
        i64,
    )>(
        pool,
        "SELECT day::text, currency, captured_minor, refunded_minor, orders FROM rm_revenue_daily",
    )
    .await
    .into_iter()
    .map(|(day, currency, captured, refunded, orders)| {
        ((day, currency), (captured, refunded, orders))
    })
    .collect();
    assert_eq!(
        projected, revenue,
        "rm_revenue_daily differs from the events"
    );
    let projected: BTreeMap<String, OrderValue> =
        rows::<(String, Option<String>, Option<String>, i64, i64)>(
            pool,
            "SELECT order_id::text, customer_id::text, currency, captured_minor, refunded_minor
         FROM rm_customer_value",
        )
        .await
        .into_iter()
        .map(|(order, customer, currency, captured, refunded)| {
            (order, (customer, currency, captured, refunded))
        })
        .collect();
    assert_eq!(
        projected, value,
        "rm_customer_value differs from the events"
    );
    let audit: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rm_audit a JOIN events e USING (aggregate_type, aggregate_id, sequence)
         WHERE a.event_id = e.event_id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        audit as usize,
        events.len(),
        "rm_audit differs from the events"
    );
}

/// Every row of a query, as tuples.
async fn rows<T>(pool: &PgPool, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
