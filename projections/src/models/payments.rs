//! `rm_payments`: one row per payment; the running totals come from the events.

use domain::PaymentEvent;
use sqlx::PgConnection;

use super::{event, id, ApplyError};
use crate::envelope::Envelope;
use crate::projection::{ApplyFuture, Projection, ReadModel, Table};

/// The `payments` read model.
pub struct Payments;

impl Projection for Payments {
    fn name(&self) -> &'static str {
        "payments"
    }

    fn aggregates(&self) -> &'static [&'static str] {
        &["payment"]
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a Envelope) -> ApplyFuture<'a> {
        Box::pin(apply(conn, event))
    }
}

impl ReadModel for Payments {
    fn tables(&self) -> &'static [Table] {
        &[Table {
            name: "rm_payments",
        }]
    }
}

async fn apply(conn: &mut PgConnection, e: &Envelope) -> Result<(), ApplyError> {
    let payment = id(e)?;
    let (version, at) = (e.sequence, e.occurred_at);
    let set = |sql: &'static str| sqlx::query(sql).bind(payment).bind(version).bind(at);
    match event::<PaymentEvent>(e)? {
        PaymentEvent::Initiated {
            order_id,
            amount_minor,
            currency,
            method,
        } => {
            sqlx::query(
                "INSERT INTO rm_payments (id, order_id, status, amount_minor, currency, method, version, created_at, updated_at)
                 VALUES ($1, $2, 'initiated', $3, $4, $5, $6, $7, $7) ON CONFLICT (id) DO NOTHING",
            )
            .bind(payment)
            .bind(order_id)
            .bind(amount_minor)
            .bind(currency.code())
            .bind(serde_json::to_value(method).ok().and_then(|v| v.as_str().map(str::to_owned)))
            .bind(version)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        PaymentEvent::Authorized { amount_minor, .. } => {
            set("UPDATE rm_payments SET status = 'authorized', authorized_minor = $4, version = $2, updated_at = $3 WHERE id = $1")
                .bind(amount_minor)
                .execute(&mut *conn)
                .await?;
        }
        PaymentEvent::Captured {
            captured_total_minor,
            ..
        } => {
            set("UPDATE rm_payments SET status = 'captured', captured_minor = $4, version = $2, updated_at = $3 WHERE id = $1")
                .bind(captured_total_minor)
                .execute(&mut *conn)
                .await?;
        }
        PaymentEvent::Failed { .. } => {
            set("UPDATE rm_payments SET status = 'failed', version = $2, updated_at = $3 WHERE id = $1")
                .execute(&mut *conn)
                .await?;
        }
        PaymentEvent::Refunded {
            refunded_total_minor,
            fully_refunded,
            ..
        } => {
            let status = if fully_refunded {
                "refunded"
            } else {
                "partially_refunded"
            };
            set("UPDATE rm_payments SET status = $5, refunded_minor = $4, version = $2, updated_at = $3 WHERE id = $1")
                .bind(refunded_total_minor)
                .bind(status)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}
