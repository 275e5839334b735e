//! `rm_orders`: order detail and, through its index, each customer's orders newest first.
//! Paid and refunded totals come from `rm_payments` at query time, so the two topics may be
//! consumed in any relative order.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::OrderEvent;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{event, id, ApplyError};
use crate::bulk::{take_when_done, Fold, TableRows};
use crate::envelope::Envelope;
use crate::projection::{ApplyFuture, Projection, ReadModel, Table};

/// The `orders` read model.
pub struct Orders;

impl Projection for Orders {
    fn name(&self) -> &'static str {
        "orders"
    }

    fn aggregates(&self) -> &'static [&'static str] {
        &["order"]
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a Envelope) -> ApplyFuture<'a> {
        Box::pin(apply(conn, event))
    }
}

impl ReadModel for Orders {
    fn tables(&self) -> &'static [Table] {
        &[Table { name: "rm_orders" }]
    }

    fn fold(&self) -> Box<dyn Fold> {
        Box::<OrdersFold>::default()
    }
}

async fn apply(conn: &mut PgConnection, e: &Envelope) -> Result<(), ApplyError> {
    let order = id(e)?;
    let (version, at) = (e.sequence, e.occurred_at);
    let status = |status: &'static str| {
        sqlx::query("UPDATE rm_orders SET status = $4, version = $2, updated_at = $3 WHERE id = $1")
            .bind(order)
            .bind(version)
            .bind(at)
            .bind(status)
    };
    match event::<OrderEvent>(e)? {
        OrderEvent::Placed {
            customer_id,
            currency,
            items,
            total_minor,
            shipping_address,
        } => {
            sqlx::query(
                "INSERT INTO rm_orders (id, customer_id, status, items, currency, total_minor,
                     shipping_address, version, placed_at, updated_at)
                 VALUES ($1, $2, 'created', $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (id) DO NOTHING",
            )
            .bind(order)
            .bind(customer_id)
            .bind(json!(items))
            .bind(currency.code())
            .bind(total_minor)
            .bind(json!(shipping_address))
            .bind(version)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        OrderEvent::Confirmed => {
            status("confirmed").execute(&mut *conn).await?;
        }
        OrderEvent::ProcessingStarted => {
            status("processing").execute(&mut *conn).await?;
        }
        OrderEvent::Shipped {
            carrier,
            tracking_number,
        } => {
            sqlx::query(
                "UPDATE rm_orders SET status = 'shipped', carrier = $4, tracking_number = $5,
                     version = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(order)
            .bind(version)
            .bind(at)
            .bind(carrier.as_str())
            .bind(tracking_number.as_str())
            .execute(&mut *conn)
            .await?;
        }
        OrderEvent::Delivered => {
            status("delivered").execute(&mut *conn).await?;
        }
        OrderEvent::Cancelled { .. } => {
            status("cancelled").execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// A row of `rm_orders`, in memory.
struct OrderRow {
    customer_id: Uuid,
    status: &'static str,
    items: Value,
    currency: String,
    total_minor: i64,
    shipping_address: Value,
    carrier: Option<String>,
    tracking_number: Option<String>,
    version: i64,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// `rm_orders` folded in memory (see [`crate::bulk`]).
#[derive(Default)]
struct OrdersFold {
    rows: HashMap<Uuid, OrderRow>,
}

impl Fold for OrdersFold {
    fn fold(&mut self, e: &Envelope) -> Result<(), ApplyError> {
        let order = id(e)?;
        let (version, at) = (e.sequence, e.occurred_at);
        let status = match event::<OrderEvent>(e)? {
            OrderEvent::Placed {
                customer_id,
                currency,
                items,
                total_minor,
                shipping_address,
            } => {
                self.rows.entry(order).or_insert_with(|| OrderRow {
                    customer_id,
                    status: "created",
                    items: json!(items),
                    currency: currency.code().to_owned(),
                    total_minor,
                    shipping_address: json!(shipping_address),
                    carrier: None,
                    tracking_number: None,
                    version,
                    placed_at: at,
                    updated_at: at,
                });
                return Ok(());
            }
            OrderEvent::Shipped {
                carrier,
                tracking_number,
            } => {
                if let Some(row) = self.rows.get_mut(&order) {
                    row.carrier = Some(carrier.as_str().to_owned());
                    row.tracking_number = Some(tracking_number.as_str().to_owned());
                }
                "shipped"
            }
            OrderEvent::Confirmed => "confirmed",
            OrderEvent::ProcessingStarted => "processing",
            OrderEvent::Delivered => "delivered",
            OrderEvent::Cancelled { .. } => "cancelled",
        };
        if let Some(row) = self.rows.get_mut(&order) {
            (row.status, row.version, row.updated_at) = (status, version, at);
        }
        Ok(())
    }

    fn take(&mut self, done: bool) -> Vec<TableRows> {
        let target = (
            "rm_orders",
            "id, customer_id, status, items, currency, total_minor, shipping_address, \
             carrier, tracking_number, version, placed_at, updated_at",
        );
        take_when_done(&mut self.rows, target, done, |out, id, row| {
            out.uuid(&id)
                .uuid(&row.customer_id)
                .text(row.status)
                .json(&row.items)
                .text(&row.currency)
                .int(row.total_minor)
                .json(&row.shipping_address)
                .opt_text(row.carrier.as_deref())
                .opt_text(row.tracking_number.as_deref())
                .int(row.version)
                .time(&row.placed_at)
                .time(&row.updated_at);
        })
    }
}
