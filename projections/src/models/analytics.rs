//! Analytics: revenue per day and currency (`rm_revenue_daily`: captured, refunded, orders
//! placed) and the order funnel (`rm_funnel`: each order's current status and placing day).
//! Days are UTC days of the events' `occurred_at`.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use domain::{OrderEvent, PaymentEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{event, id, ApplyError};
use crate::bulk::{CopyRows, Fold, TableRows};
use crate::envelope::Envelope;
use crate::projection::{ApplyFuture, Projection, ReadModel, Table};

const REVENUE_SQL: &str = "
INSERT INTO rm_revenue_daily (day, currency, captured_minor, refunded_minor, orders)
VALUES (($1::timestamptz AT TIME ZONE 'UTC')::date, $2, $3, $4, $5)
ON CONFLICT (day, currency) DO UPDATE SET
    captured_minor = rm_revenue_daily.captured_minor + EXCLUDED.captured_minor,
    refunded_minor = rm_revenue_daily.refunded_minor + EXCLUDED.refunded_minor,
    orders = rm_revenue_daily.orders + EXCLUDED.orders";

/// Adds to the day's totals. A total that would pass `bigint` (SQLSTATE 22003) parks the
/// event: it is dead-lettered with an `Overflow` error, counted in
/// `read_model_overflows_total` (alert on any increase) and logged as an error, so the totals
/// never wrap and the projection never stops.
async fn revenue(
    conn: &mut PgConnection,
    e: &Envelope,
    currency: &str,
    (captured, refunded, orders): (i64, i64, i64),
) -> Result<(), ApplyError> {
    let added = sqlx::query(REVENUE_SQL)
        .bind(e.occurred_at)
        .bind(currency)
        .bind(captured)
        .bind(refunded)
        .bind(orders)
        .execute(conn)
        .await;
    match added {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("22003") => {
            Err(overflow(e, currency))
        }
        Err(error) => Err(error.into()),
    }
}

/// Counts and logs a revenue total that would overflow, and the error that parks its event.
fn overflow(e: &Envelope, currency: &str) -> ApplyError {
    let key = format!("{} {currency}", e.occurred_at.date_naive());
    metrics::counter!("read_model_overflows_total", "table" => "rm_revenue_daily").increment(1);
    tracing::error!(table = "rm_revenue_daily", %key, event_id = %e.event_id,
        "revenue total would overflow; event parked in dead_letters");
    ApplyError::Overflow {
        table: "rm_revenue_daily",
        key,
    }
}

async fn funnel(conn: &mut PgConnection, e: &Envelope, status: &str) -> Result<(), ApplyError> {
    sqlx::query("UPDATE rm_funnel SET status = $2 WHERE order_id = $1")
        .bind(id(e)?)
        .bind(status)
        .execute(conn)
        .await?;
    Ok(())
}

/// The `analytics` read model.
pub struct Analytics;

impl Projection for Analytics {
    fn name(&self) -> &'static str {
        "analytics"
    }

    fn aggregates(&self) -> &'static [&'static str] {
        &["order", "payment"]
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a Envelope) -> ApplyFuture<'a> {
        Box::pin(apply(conn, event))
    }
}

impl ReadModel for Analytics {
    fn tables(&self) -> &'static [Table] {
        &[
            Table {
                name: "rm_revenue_daily",
            },
            Table { name: "rm_funnel" },
        ]
    }

    fn fold(&self) -> Box<dyn Fold> {
        Box::<AnalyticsFold>::default()
    }
}

async fn apply(conn: &mut PgConnection, e: &Envelope) -> Result<(), ApplyError> {
    match e.aggregate_type.as_str() {
        "order" => match event::<OrderEvent>(e)? {
            OrderEvent::Placed { currency, .. } => {
                sqlx::query(
                    "INSERT INTO rm_funnel (order_id, status, placed_at) VALUES ($1, 'created', $2)
                     ON CONFLICT (order_id) DO NOTHING",
                )
                .bind(id(e)?)
                .bind(e.occurred_at)
                .execute(&mut *conn)
                .await?;
                revenue(conn, e, currency.code(), (0, 0, 1)).await
            }
            OrderEvent::Confirmed => funnel(conn, e, "confirmed").await,
            OrderEvent::ProcessingStarted => funnel(conn, e, "processing").await,
            OrderEvent::Shipped { .. } => funnel(conn, e, "shipped").await,
            OrderEvent::Delivered => funnel(conn, e, "delivered").await,
            OrderEvent::Cancelled { .. } => funnel(conn, e, "cancelled").await,
        },
        "payment" => match event::<PaymentEvent>(e)? {
            PaymentEvent::Captured {
                amount_minor,
                currency,
                ..
            } => revenue(conn, e, currency.code(), (amount_minor, 0, 0)).await,
            PaymentEvent::Refunded {
                amount_minor,
                currency,
                ..
            } => revenue(conn, e, currency.code(), (0, amount_minor, 0)).await,
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Both analytics tables folded in memory (see [`crate::bulk`]).
#[derive(Default)]
struct AnalyticsFold {
    /// (day, currency) -> (captured, refunded, orders).
    revenue: HashMap<(NaiveDate, String), [i64; 3]>,
    /// order -> (status, placed_at).
    funnel: HashMap<Uuid, (&'static str, DateTime<Utc>)>,
}

impl AnalyticsFold {
    /// Adds to the day's totals, or refuses the event (changing nothing) if one would overflow.
    fn add(&mut self, e: &Envelope, currency: &str, added: [i64; 3]) -> Result<(), ApplyError> {
        let key = (e.occurred_at.date_naive(), currency.to_owned());
        let totals = self.revenue.get(&key).copied().unwrap_or([0; 3]);
        let mut sums = [0; 3];
        for i in 0..3 {
            sums[i] = totals[i]
                .checked_add(added[i])
                .ok_or_else(|| overflow(e, currency))?;
        }
        self.revenue.insert(key, sums);
        Ok(())
    }

    fn status(&mut self, e: &Envelope, status: &'static str) -> Result<(), ApplyError> {
        if let Some(row) = self.funnel.get_mut(&id(e)?) {
            row.0 = status;
        }
        Ok(())
    }
}

impl Fold for AnalyticsFold {
    fn fold(&mut self, e: &Envelope) -> Result<(), ApplyError> {
        match e.aggregate_type.as_str() {
            "order" => match event::<OrderEvent>(e)? {
                OrderEvent::Placed { currency, .. } => {
                    let order = id(e)?;
                    self.add(e, currency.code(), [0, 0, 1])?;
                    self.funnel
                        .entry(order)
                        .or_insert(("created", e.occurred_at));
                    Ok(())
                }
                OrderEvent::Confirmed => self.status(e, "confirmed"),
                OrderEvent::ProcessingStarted => self.status(e, "processing"),
                OrderEvent::Shipped { .. } => self.status(e, "shipped"),
                OrderEvent::Delivered => self.status(e, "delivered"),
                OrderEvent::Cancelled { .. } => self.status(e, "cancelled"),
            },
            "payment" => match event::<PaymentEvent>(e)? {
                PaymentEvent::Captured {
                    amount_minor,
                    currency,
                    ..
                } => self.add(e, currency.code(), [amount_minor, 0, 0]),
                PaymentEvent::Refunded {
                    amount_minor,
                    currency,
                    ..
                } => self.add(e, currency.code(), [0, amount_minor, 0]),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn take(&mut self, done: bool) -> Vec<TableRows> {
        if !done {
            return Vec::new();
        }
        let mut revenue = CopyRows::new();
        for ((day, currency), [captured, refunded, orders]) in self.revenue.drain() {
            revenue
                .date(day)
                .text(&currency)
                .int(captured)
                .int(refunded)
                .int(orders)
                .end_row();
        }
        let mut funnel = CopyRows::new();
        for (order, (status, placed_at)) in self.funnel.drain() {
            funnel.uuid(&order).text(status).time(&placed_at).end_row();
        }
        vec![
            TableRows {
                table: "rm_revenue_daily",
                columns: "day, currency, captured_minor, refunded_minor, orders",
                rows: revenue,
            },
            TableRows {
                table: "rm_funnel",
                columns: "order_id, status, placed_at",
                rows: funnel,
            },
        ]
    }
}
