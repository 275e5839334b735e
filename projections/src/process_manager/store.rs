//! The process manager's view of each order (`pm_orders`, `pm_payments`), read and written on
//! the runner's connection, inside its transaction.

use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::decide::{OrderState, PaymentState};

pub async fn load(conn: &mut PgConnection, order: Uuid) -> Result<OrderState, sqlx::Error> {
    let cancelled: Option<bool> =
        sqlx::query_scalar("SELECT cancelled FROM pm_orders WHERE order_id = $1")
            .bind(order)
            .fetch_optional(&mut *conn)
            .await?;
    // An amount missing from a row (written before it was kept, or by a projector of the
    // release before during a rolling upgrade) is read from the payment's own event.
    let rows = sqlx::query(
        "SELECT p.payment_id, p.captured_minor, p.refunded_minor, p.failed,
                COALESCE(p.amount_minor, (SELECT (e.payload ->> 'amount_minor')::bigint
                    FROM events e WHERE e.aggregate_type = 'payment'
                    AND e.aggregate_id = p.payment_id::text
                    AND e.event_type = 'PaymentInitiated' LIMIT 1)) AS amount_minor,
                COALESCE(p.authorized_minor, (SELECT (e.payload ->> 'amount_minor')::bigint
                    FROM events e WHERE e.aggregate_type = 'payment'
                    AND e.aggregate_id = p.payment_id::text
                    AND e.event_type = 'PaymentAuthorized' LIMIT 1)) AS authorized_minor
         FROM pm_payments p WHERE p.order_id = $1 ORDER BY p.payment_id",
    )
    .bind(order)
    .fetch_all(&mut *conn)
    .await?;
    let payments = rows
        .iter()
        .map(|r| {
            Ok(PaymentState {
                payment_id: r.try_get("payment_id")?,
                amount_minor: r.try_get("amount_minor")?,
                authorized_minor: r.try_get("authorized_minor")?,
                captured_minor: r.try_get("captured_minor")?,
                refunded_minor: r.try_get("refunded_minor")?,
                failed: r.try_get("failed")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(OrderState {
        order_id: order,
        cancelled: cancelled.unwrap_or(false),
        payments,
    })
}

/// Writes what changed between `before` and `after`.
pub async fn save(
    conn: &mut PgConnection,
    before: &OrderState,
    after: &OrderState,
) -> Result<(), sqlx::Error> {
    if after.cancelled != before.cancelled {
        sqlx::query(
            "INSERT INTO pm_orders (order_id, cancelled) VALUES ($1, $2)
             ON CONFLICT (order_id) DO UPDATE SET cancelled = EXCLUDED.cancelled",
        )
        .bind(after.order_id)
        .bind(after.cancelled)
        .execute(&mut *conn)
        .await?;
    }
    let changed = after
        .payments
        .iter()
        .filter(|p| before.payment(p.payment_id) != Some(*p));
    for p in changed {
        sqlx::query(
            "INSERT INTO pm_payments (payment_id, order_id, captured_minor, refunded_minor,
                                      failed, amount_minor, authorized_minor)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (payment_id) DO UPDATE SET captured_minor = EXCLUDED.captured_minor,
                 refunded_minor = EXCLUDED.refunded_minor, failed = EXCLUDED.failed,
                 amount_minor = EXCLUDED.amount_minor,
                 authorized_minor = EXCLUDED.authorized_minor",
        )
        .bind(p.payment_id)
        .bind(after.order_id)
        .bind(p.captured_minor)
        .bind(p.refunded_minor)
        .bind(p.failed)
        .bind(p.amount_minor)
        .bind(p.authorized_minor)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
