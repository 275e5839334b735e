//! `rm_payments`: one row per payment; the running totals come from the events.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::PaymentEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{event, id, ApplyError};
use crate::bulk::{take_when_done, Fold, TableRows};
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

    fn fold(&self) -> Box<dyn Fold> {
        Box::<PaymentsFold>::default()
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
            .bind(method_name(&method))
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
            // A capture after a refund (of what was left authorized) leaves it partly refunded.
            set("UPDATE rm_payments SET status = CASE WHEN refunded_minor > 0 THEN 'partially_refunded' ELSE 'captured' END, captured_minor = $4, version = $2, updated_at = $3 WHERE id = $1")
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

/// The method as stored (its serialised name).
fn method_name(method: &domain::values::PaymentMethod) -> Option<String> {
    serde_json::to_value(method)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// A row of `rm_payments`, in memory.
struct PaymentRow {
    order_id: Uuid,
    status: &'static str,
    amount_minor: i64,
    authorized_minor: i64,
    captured_minor: i64,
    refunded_minor: i64,
    currency: String,
    method: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// `rm_payments` folded in memory (see [`crate::bulk`]).
#[derive(Default)]
struct PaymentsFold {
    rows: HashMap<Uuid, PaymentRow>,
}

impl Fold for PaymentsFold {
    fn fold(&mut self, e: &Envelope) -> Result<(), ApplyError> {
        let payment = id(e)?;
        let (version, at) = (e.sequence, e.occurred_at);
        let decoded = event::<PaymentEvent>(e)?;
        if let PaymentEvent::Initiated {
            order_id,
            amount_minor,
            currency,
            method,
        } = &decoded
        {
            // A method without a name would violate the column's NOT NULL, as in `apply`.
            let method = method_name(method).ok_or_else(|| ApplyError::Payload {
                event_type: e.event_type.clone(),
                source: serde::de::Error::custom("payment method has no name"),
            })?;
            self.rows.entry(payment).or_insert_with(|| PaymentRow {
                order_id: *order_id,
                status: "initiated",
                amount_minor: *amount_minor,
                authorized_minor: 0,
                captured_minor: 0,
                refunded_minor: 0,
                currency: currency.code().to_owned(),
                method,
                version,
                created_at: at,
                updated_at: at,
            });
            return Ok(());
        }
        let Some(row) = self.rows.get_mut(&payment) else {
            return Ok(());
        };
        row.status = match decoded {
            PaymentEvent::Authorized { amount_minor, .. } => {
                row.authorized_minor = amount_minor;
                "authorized"
            }
            PaymentEvent::Captured {
                captured_total_minor,
                ..
            } => {
                row.captured_minor = captured_total_minor;
                match row.refunded_minor > 0 {
                    true => "partially_refunded",
                    false => "captured",
                }
            }
            PaymentEvent::Failed { .. } => "failed",
            PaymentEvent::Refunded {
                refunded_total_minor,
                fully_refunded,
                ..
            } => {
                row.refunded_minor = refunded_total_minor;
                if fully_refunded {
                    "refunded"
                } else {
                    "partially_refunded"
                }
            }
            PaymentEvent::Initiated { .. } => return Ok(()),
        };
        (row.version, row.updated_at) = (version, at);
        Ok(())
    }

    fn take(&mut self, done: bool) -> Vec<TableRows> {
        let target = (
            "rm_payments",
            "id, order_id, status, amount_minor, authorized_minor, captured_minor, \
             refunded_minor, currency, method, version, created_at, updated_at",
        );
        take_when_done(&mut self.rows, target, done, |out, id, row| {
            out.uuid(&id)
                .uuid(&row.order_id)
                .text(row.status)
                .int(row.amount_minor)
                .int(row.authorized_minor)
                .int(row.captured_minor)
                .int(row.refunded_minor)
                .text(&row.currency)
                .text(&row.method)
                .int(row.version)
                .time(&row.created_at)
                .time(&row.updated_at);
        })
    }
}
