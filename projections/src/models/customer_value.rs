//! `rm_customer_value`: what each customer is worth, per currency: orders placed, money
//! captured and refunded. A row per order (its customer and currency from `OrderPlaced`, the
//! amounts from its payments' captures and refunds), summed per customer by the query API.
//! Payments may be consumed before their order: their amounts wait in the order's row until
//! `OrderPlaced` names its customer.
//!
//! This model was added to a running system by `projector replay customer_value` alone (the
//! recipe in `CONTRIBUTING.md`, "Add a read model").

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::{OrderEvent, PaymentEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{event, id, ApplyError};
use crate::bulk::{take_when_done, Fold, TableRows};
use crate::envelope::Envelope;
use crate::projection::{ApplyFuture, Projection, ReadModel, Table};

/// The `customer_value` read model.
pub struct CustomerValue;

impl Projection for CustomerValue {
    fn name(&self) -> &'static str {
        "customer_value"
    }

    fn aggregates(&self) -> &'static [&'static str] {
        &["order", "payment"]
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a Envelope) -> ApplyFuture<'a> {
        Box::pin(apply(conn, event))
    }
}

impl ReadModel for CustomerValue {
    fn tables(&self) -> &'static [Table] {
        &[Table {
            name: "rm_customer_value",
        }]
    }

    fn fold(&self) -> Box<dyn Fold> {
        Box::<ValueFold>::default()
    }
}

/// What an event changes in its order's row: `Placed` its customer, currency and day, a
/// capture or refund its amounts.
enum Change {
    Placed(Uuid, String, DateTime<Utc>),
    Money {
        order: Uuid,
        captured: i64,
        refunded: i64,
    },
    Nothing,
}

fn change(e: &Envelope) -> Result<Change, ApplyError> {
    Ok(match e.aggregate_type.as_str() {
        "order" => match event::<OrderEvent>(e)? {
            OrderEvent::Placed {
                customer_id,
                currency,
                ..
            } => Change::Placed(customer_id, currency.code().to_owned(), e.occurred_at),
            _ => Change::Nothing,
        },
        "payment" => match event::<PaymentEvent>(e)? {
            PaymentEvent::Captured {
                order_id,
                amount_minor,
                ..
            } => Change::Money {
                order: order_id,
                captured: amount_minor,
                refunded: 0,
            },
            PaymentEvent::Refunded {
                order_id,
                amount_minor,
                ..
            } => Change::Money {
                order: order_id,
                captured: 0,
                refunded: amount_minor,
            },
            _ => Change::Nothing,
        },
        _ => Change::Nothing,
    })
}

fn overflow(order: Uuid) -> ApplyError {
    metrics::counter!("read_model_overflows_total", "table" => "rm_customer_value").increment(1);
    tracing::error!(table = "rm_customer_value", %order,
        "an order's payment total would overflow; event parked in dead_letters");
    ApplyError::Overflow {
        table: "rm_customer_value",
        key: order.to_string(),
    }
}

async fn apply(conn: &mut PgConnection, e: &Envelope) -> Result<(), ApplyError> {
    match change(e)? {
        Change::Placed(customer, currency, at) => {
            sqlx::query(
                "INSERT INTO rm_customer_value (order_id, customer_id, currency, placed_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (order_id) DO UPDATE SET customer_id = EXCLUDED.customer_id,
                     currency = EXCLUDED.currency, placed_at = EXCLUDED.placed_at
                 WHERE rm_customer_value.customer_id IS NULL",
            )
            .bind(id(e)?)
            .bind(customer)
            .bind(currency)
            .bind(at)
            .execute(conn)
            .await?;
        }
        Change::Money {
            order,
            captured,
            refunded,
        } => {
            let added = sqlx::query(
                "INSERT INTO rm_customer_value (order_id, captured_minor, refunded_minor)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (order_id) DO UPDATE SET
                     captured_minor = rm_customer_value.captured_minor + EXCLUDED.captured_minor,
                     refunded_minor = rm_customer_value.refunded_minor + EXCLUDED.refunded_minor",
            )
            .bind(order)
            .bind(captured)
            .bind(refunded)
            .execute(conn)
            .await;
            match added {
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("22003") => {
                    return Err(overflow(order))
                }
                other => {
                    other?;
                }
            }
        }
        Change::Nothing => {}
    }
    Ok(())
}

/// A row of `rm_customer_value`, in memory.
#[derive(Default)]
struct ValueRow {
    placed: Option<(Uuid, String, DateTime<Utc>)>,
    captured: i64,
    refunded: i64,
}

/// `rm_customer_value` folded in memory (see [`crate::bulk`]).
#[derive(Default)]
struct ValueFold {
    rows: HashMap<Uuid, ValueRow>,
}

impl Fold for ValueFold {
    fn fold(&mut self, e: &Envelope) -> Result<(), ApplyError> {
        match change(e)? {
            Change::Placed(customer, currency, at) => {
                let row = self.rows.entry(id(e)?).or_default();
                if row.placed.is_none() {
                    row.placed = Some((customer, currency, at));
                }
            }
            Change::Money {
                order,
                captured,
                refunded,
            } => {
                let (now_captured, now_refunded) = self
                    .rows
                    .get(&order)
                    .map_or((0, 0), |r| (r.captured, r.refunded));
                let sums = now_captured
                    .checked_add(captured)
                    .zip(now_refunded.checked_add(refunded))
                    .ok_or_else(|| overflow(order))?;
                let row = self.rows.entry(order).or_default();
                (row.captured, row.refunded) = sums;
            }
            Change::Nothing => {}
        }
        Ok(())
    }

    fn take(&mut self, done: bool) -> Vec<TableRows> {
        let target = (
            "rm_customer_value",
            "order_id, customer_id, currency, placed_at, captured_minor, refunded_minor",
        );
        take_when_done(&mut self.rows, target, done, |out, order, row| {
            out.uuid(&order);
            match &row.placed {
                Some((customer, currency, at)) => out.uuid(customer).text(currency).time(at),
                None => out.opt_text(None).opt_text(None).opt_text(None),
            };
            out.int(row.captured).int(row.refunded);
        })
    }
}
