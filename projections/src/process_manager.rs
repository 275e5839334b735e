//! The order–payment process manager:
//! - a payment captured -> confirm its order;
//! - an order cancelled after a capture -> refund what was captured and not yet refunded;
//! - a payment failed -> cancel its order with reason `payment_failed` (unless another payment
//!   of the order was captured).
//!
//! It runs as a projection (`process_manager`): its own view of orders and payments
//! (`pm_orders`, `pm_payments`) and its progress commit with its offsets, exactly like a read
//! model's. Its effects are commands sent to the command API, each with an `Idempotency-Key`
//! derived from the triggering event id. A crash after a command succeeded but before the batch
//! committed redelivers the event; the command is sent again with the same key and the command
//! API answers with the first response, writing nothing. So every reaction happens once.
//!
//! Whichever of "order cancelled" and "payment captured" the process manager sees second
//! triggers the refund (the two topics are consumed independently), so exactly one of them does.
//!
//! Outcomes of a command: 2xx done; 404 or a 409 naming a business rule (the order moved on,
//! e.g. it was already confirmed) is a decision of the aggregate, logged and done; a version
//! conflict, 429, 5xx or a transport error is transient: the batch rolls back and is retried
//! with the same keys; any other 4xx is a defect and dead-letters the event. A refund asks for
//! what this process believes is left; if the payment says less is left (a refund it has not
//! seen yet), it refunds that instead.
//!
//! A known limit: topics are keyed by aggregate, so a failure of one payment can be seen before
//! the capture of another payment of the same order. The order is then cancelled, and the
//! capture refunded when it arrives: the money is right, the order stays cancelled.

use std::time::Duration;

use domain::{OrderEvent, PaymentEvent};
use serde_json::{json, Value};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::models::{event, id, ApplyError};

/// The actor the process manager's commands carry (idempotency keys are scoped per actor).
pub const ACTOR: &str = "process-manager";

/// Sends commands to the command API.
#[derive(Clone)]
pub struct Commands {
    http: reqwest::Client,
    base: String,
}

/// What became of a command.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Done,
    /// The aggregate refused it by a business rule or does not exist; nothing to retry. The
    /// status, the problem `type` and the problem.
    Refused(u16, String, Value),
}

impl Commands {
    pub fn new(base_url: &str) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            base: base_url.trim_end_matches('/').to_owned(),
        })
    }

    async fn send(
        &self,
        cause: &Envelope,
        path: &str,
        key: String,
        body: Value,
    ) -> Result<Sent, ApplyError> {
        let url = format!("{}{path}", self.base);
        let transient = |detail: String| ApplyError::Transient(format!("POST {path}: {detail}"));
        let response = self
            .http
            .post(&url)
            .header("Idempotency-Key", &key)
            .header("X-Actor", ACTOR)
            .header("X-Correlation-Id", &cause.correlation_id)
            .header("X-Causation-Id", cause.event_id.to_string())
            .header("traceparent", &cause.traceparent)
            .json(&body)
            .send()
            .await
            .map_err(|e| transient(infra::error_chain(&e)))?;
        let status = response.status().as_u16();
        let problem: Value = if response.status().is_success() {
            Value::Null
        } else {
            response.json().await.unwrap_or(Value::Null)
        };
        let kind = problem["type"].as_str().unwrap_or_default().to_owned();
        let outcome = match status {
            200..=299 => Ok(Sent::Done),
            409 if kind.ends_with("/version-conflict") => Err(transient(kind)),
            404 | 409 => Ok(Sent::Refused(status, kind.clone(), problem.clone())),
            429 | 500..=599 => Err(transient(format!("status {status} {kind}"))),
            _ => Err(ApplyError::Rejected(format!(
                "POST {path} answered {status}: {problem}"
            ))),
        };
        let label = match &outcome {
            Ok(Sent::Done) => "done",
            Ok(Sent::Refused(..)) => "refused",
            Err(ApplyError::Transient(_)) => "transient",
            Err(_) => "rejected",
        };
        metrics::counter!("process_manager_commands_total", "outcome" => label).increment(1);
        if let Ok(Sent::Refused(status, kind, _)) = &outcome {
            tracing::info!(path, status, problem = %kind, cause = %cause.event_id,
                "process manager command refused by the aggregate");
        }
        outcome
    }

    async fn confirm(&self, cause: &Envelope, order: Uuid) -> Result<Sent, ApplyError> {
        let path = format!("/v1/orders/{order}/confirm");
        let key = format!("pm-confirm-{}", cause.event_id);
        self.send(cause, &path, key, json!({})).await
    }

    async fn cancel(&self, cause: &Envelope, order: Uuid) -> Result<Sent, ApplyError> {
        let path = format!("/v1/orders/{order}/cancel");
        let key = format!("pm-cancel-{}", cause.event_id);
        self.send(cause, &path, key, json!({ "reason": "payment_failed" }))
            .await
    }

    /// Refunds `amount_minor` of `payment`. What this process knows of earlier refunds can lag
    /// (a refund by someone else not consumed yet), so when the payment answers that less is
    /// left, the rest is refunded instead. The key names the amount: one key, one body,
    /// whatever a redelivery computes.
    async fn refund(
        &self,
        cause: &Envelope,
        payment: Uuid,
        amount_minor: i64,
    ) -> Result<Sent, ApplyError> {
        let path = format!("/v1/payments/{payment}/refund");
        let mut amount = amount_minor;
        loop {
            let key = format!("pm-refund-{}-{payment}-{amount}", cause.event_id);
            let body = json!({ "amount_minor": amount, "reason": "order_cancelled" });
            match self.send(cause, &path, key, body).await? {
                Sent::Refused(409, kind, problem) if kind.ends_with("/refund-exceeds-captured") => {
                    match problem["available"].as_i64() {
                        Some(left) if left > 0 && left < amount => amount = left,
                        _ => return Ok(Sent::Refused(409, kind, problem)),
                    }
                }
                sent => return Ok(sent),
            }
        }
    }
}

pub async fn apply(
    conn: &mut PgConnection,
    e: &Envelope,
    commands: &Commands,
) -> Result<(), ApplyError> {
    match e.aggregate_type.as_str() {
        "order" => on_order(conn, e, commands).await,
        "payment" => on_payment(conn, e, commands).await,
        _ => Ok(()),
    }
}

async fn on_order(
    conn: &mut PgConnection,
    e: &Envelope,
    commands: &Commands,
) -> Result<(), ApplyError> {
    let order = id(e)?;
    if !matches!(event::<OrderEvent>(e)?, OrderEvent::Cancelled { .. }) {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO pm_orders (order_id, cancelled) VALUES ($1, true)
         ON CONFLICT (order_id) DO UPDATE SET cancelled = true",
    )
    .bind(order)
    .execute(&mut *conn)
    .await?;
    // Payments captured before the cancellation (as far as this process has seen; one
    // captured later is refunded when its capture arrives).
    let owed = sqlx::query(
        "SELECT payment_id, captured_minor - refunded_minor AS owed FROM pm_payments
         WHERE order_id = $1 AND captured_minor > refunded_minor ORDER BY payment_id",
    )
    .bind(order)
    .fetch_all(&mut *conn)
    .await?;
    for row in owed {
        let payment: Uuid = row.try_get("payment_id")?;
        let amount: i64 = row.try_get("owed")?;
        commands.refund(e, payment, amount).await?;
    }
    Ok(())
}

async fn on_payment(
    conn: &mut PgConnection,
    e: &Envelope,
    commands: &Commands,
) -> Result<(), ApplyError> {
    let payment = id(e)?;
    let upsert = "INSERT INTO pm_payments (payment_id, order_id) VALUES ($1, $2)
                  ON CONFLICT (payment_id) DO NOTHING";
    match event::<PaymentEvent>(e)? {
        PaymentEvent::Initiated { order_id, .. } => {
            sqlx::query(upsert)
                .bind(payment)
                .bind(order_id)
                .execute(&mut *conn)
                .await?;
        }
        PaymentEvent::Authorized { .. } => {}
        PaymentEvent::Captured {
            order_id,
            captured_total_minor,
            ..
        } => {
            let row = sqlx::query(
                "INSERT INTO pm_payments (payment_id, order_id, captured_minor) VALUES ($1, $2, $3)
                 ON CONFLICT (payment_id) DO UPDATE SET captured_minor = EXCLUDED.captured_minor
                 RETURNING refunded_minor,
                     COALESCE((SELECT cancelled FROM pm_orders WHERE order_id = $2), false) AS cancelled",
            )
            .bind(payment)
            .bind(order_id)
            .bind(captured_total_minor)
            .fetch_one(&mut *conn)
            .await?;
            let refunded: i64 = row.try_get("refunded_minor")?;
            let cancelled: bool = row.try_get("cancelled")?;
            if cancelled {
                let owed = captured_total_minor - refunded;
                if owed > 0 {
                    commands.refund(e, payment, owed).await?;
                }
            } else {
                commands.confirm(e, order_id).await?;
            }
        }
        PaymentEvent::Failed { order_id, .. } => {
            sqlx::query(
                "INSERT INTO pm_payments (payment_id, order_id, failed) VALUES ($1, $2, true)
                 ON CONFLICT (payment_id) DO UPDATE SET failed = true",
            )
            .bind(payment)
            .bind(order_id)
            .execute(&mut *conn)
            .await?;
            // Another payment of the order already captured: the order is paid, keep it.
            let paid: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pm_payments WHERE order_id = $1 AND captured_minor > 0)",
            )
            .bind(order_id)
            .fetch_one(&mut *conn)
            .await?;
            if !paid {
                commands.cancel(e, order_id).await?;
            }
        }
        PaymentEvent::Refunded {
            order_id,
            refunded_total_minor,
            ..
        } => {
            sqlx::query(
                "INSERT INTO pm_payments (payment_id, order_id, refunded_minor) VALUES ($1, $2, $3)
                 ON CONFLICT (payment_id) DO UPDATE SET refunded_minor = EXCLUDED.refunded_minor",
            )
            .bind(payment)
            .bind(order_id)
            .bind(refunded_total_minor)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}
