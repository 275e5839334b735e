//! The order–payment process manager:
//! - a payment captured -> confirm its order;
//! - an order cancelled after a capture -> refund what was captured and not yet refunded;
//! - a payment captured as far as its authorization allows without paying the order -> cancel
//!   it with reason `payment_short` (so that what it took is refunded);
//! - a payment failed -> cancel its order with reason `payment_failed` (unless another payment
//!   of the order was captured).
//!
//! Three parts:
//! - [`decide`]: the rules, pure, tested beside them.
//! - [`ProcessManager`]: a projection run by the same runner as the read models (not a read
//!   model: nothing here is rebuilt or verified). Per event it loads its view of the order
//!   (`pm_orders`, `pm_payments`), decides, and writes the new view and the commands to send
//!   ([`outbox`]) on the runner's connection, so they commit with the consumed offsets. It
//!   makes no network call: its transaction stays short, and a slow command API cannot hold
//!   back the relay (which reads only below the oldest open transaction).
//! - [`dispatcher`]: after commit, sends the outbox's commands to the command API with
//!   backoff, a retry budget and parking.
//!
//! Each command's idempotency key derives from the triggering event id, so redelivery, retries
//! and a crash mid-send never act twice.
//!
//! A known limit: topics are keyed by aggregate, so a failure of one payment can be seen before
//! the capture of another payment of the same order. When the cancellation lands first, the
//! order is cancelled and the capture refunded when it arrives: the money is right, the order
//! stays cancelled. When the confirmation lands first, the order refuses a cancellation for a
//! failed payment (`domain::order::PAYMENT_FAILED`), and the order goes on, paid.

pub mod client;
pub mod command;
pub mod decide;
pub mod dispatcher;
pub mod outbox;
pub mod store;

use domain::{OrderEvent, PaymentEvent};
use sqlx::PgConnection;
use uuid::Uuid;

pub use client::{ClientCredentials, Commands};
pub use dispatcher::{Dispatcher, RetryPolicy};

use crate::envelope::Envelope;
use crate::models::{event, id, ApplyError};
use crate::projection::{ApplyFuture, Projection};
use command::{Cause, Command};
use decide::Fact;

/// The process manager as the runner runs it (consumer group `process_manager`).
pub struct ProcessManager;

impl Projection for ProcessManager {
    fn name(&self) -> &'static str {
        "process_manager"
    }

    fn aggregates(&self) -> &'static [&'static str] {
        &["order", "payment"]
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a Envelope) -> ApplyFuture<'a> {
        Box::pin(apply(conn, event))
    }
}

async fn apply(conn: &mut PgConnection, e: &Envelope) -> Result<(), ApplyError> {
    let Some((order, fact)) = fact_of(e)? else {
        return Ok(());
    };
    let before = store::load(conn, order).await?;
    let reactions = decide::decide(&before, &fact);
    let after = decide::evolve(before.clone(), &fact);
    store::save(conn, &before, &after).await?;
    let cause = Cause::of(e);
    for reaction in &reactions {
        let command = Command::new(reaction, &cause);
        if outbox::insert(conn, &command).await? {
            metrics::counter!("process_manager_reactions_total", "kind" => command.kind.as_str())
                .increment(1);
        }
    }
    Ok(())
}

/// The order an event concerns and what it says, if the rules care.
fn fact_of(e: &Envelope) -> Result<Option<(Uuid, Fact)>, ApplyError> {
    match e.aggregate_type.as_str() {
        "order" => Ok(match event::<OrderEvent>(e)? {
            OrderEvent::Cancelled { .. } => Some((id(e)?, Fact::OrderCancelled)),
            _ => None,
        }),
        "payment" => {
            let payment = id(e)?;
            Ok(match event::<PaymentEvent>(e)? {
                PaymentEvent::Initiated {
                    order_id,
                    amount_minor,
                    ..
                } => Some((
                    order_id,
                    Fact::PaymentInitiated {
                        payment,
                        amount_minor,
                    },
                )),
                PaymentEvent::Authorized {
                    order_id,
                    amount_minor,
                    ..
                } => Some((
                    order_id,
                    Fact::PaymentAuthorized {
                        payment,
                        amount_minor,
                    },
                )),
                PaymentEvent::Captured {
                    order_id,
                    captured_total_minor,
                    ..
                } => Some((
                    order_id,
                    Fact::PaymentCaptured {
                        payment,
                        captured_total_minor,
                    },
                )),
                PaymentEvent::Failed { order_id, .. } => {
                    Some((order_id, Fact::PaymentFailed { payment }))
                }
                PaymentEvent::Refunded {
                    order_id,
                    refunded_total_minor,
                    ..
                } => Some((
                    order_id,
                    Fact::PaymentRefunded {
                        payment,
                        refunded_total_minor,
                    },
                )),
            })
        }
        _ => Ok(None),
    }
}
