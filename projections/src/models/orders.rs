//! `rm_orders`: order detail and, through its index, each customer's orders newest first.
//! Paid and refunded totals come from `rm_payments` at query time, so the two topics may be
//! consumed in any relative order.

use domain::OrderEvent;
use serde_json::json;
use sqlx::PgConnection;

use super::{event, id, ApplyError};
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
