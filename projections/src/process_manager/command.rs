//! A reaction turned into the command the command API receives: path, body and an idempotency
//! key derived from the triggering event, so sending it again (a redelivery, a retry, a second
//! dispatcher) can never act twice.

use serde_json::{json, Value};
use uuid::Uuid;

use super::decide::{Cancel, Reaction};
use crate::envelope::Envelope;

/// The event that caused a reaction, as its commands carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub event_id: Uuid,
    pub correlation_id: String,
    pub traceparent: String,
}

impl Cause {
    pub fn of(event: &Envelope) -> Self {
        Self {
            event_id: event.event_id,
            correlation_id: event.correlation_id.clone(),
            // The consumer span applying the event while spans are exported, so that the
            // command joins the trace below it; else the event's own context.
            traceparent: infra::telemetry::propagation::current_traceparent()
                .unwrap_or_else(|| event.traceparent.clone()),
        }
    }
}

/// What kind of command a row is; stored as text in `pm_outbox.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Confirm,
    Cancel,
    Refund,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirm => "confirm_order",
            Self::Cancel => "cancel_order",
            Self::Refund => "refund_payment",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Confirm, Self::Cancel, Self::Refund]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// One command to send, with everything its request needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub kind: Kind,
    /// The order or payment it is addressed to.
    pub target: Uuid,
    pub idempotency_key: String,
    pub path: String,
    pub body: Value,
    pub cause: Cause,
}

impl Command {
    pub fn new(reaction: &Reaction, cause: &Cause) -> Self {
        let event = cause.event_id;
        let (kind, target, idempotency_key, path, body) = match *reaction {
            Reaction::ConfirmOrder { order } => (
                Kind::Confirm,
                order,
                format!("pm-confirm-{event}"),
                format!("/v1/orders/{order}/confirm"),
                json!({}),
            ),
            Reaction::CancelOrder { order, why } => (
                Kind::Cancel,
                order,
                format!("pm-cancel-{event}"),
                format!("/v1/orders/{order}/cancel"),
                json!({ "reason": match why {
                    Cancel::PaymentFailed => domain::order::PAYMENT_FAILED,
                    Cancel::PaymentShort => domain::order::PAYMENT_SHORT,
                } }),
            ),
            // The key names the amount: one key, one body, whatever a later computation says.
            Reaction::RefundPayment {
                payment,
                amount_minor,
            } => (
                Kind::Refund,
                payment,
                format!("pm-refund-{event}-{payment}-{amount_minor}"),
                format!("/v1/payments/{payment}/refund"),
                json!({ "amount_minor": amount_minor, "reason": "order_cancelled" }),
            ),
        };
        Self {
            kind,
            target,
            idempotency_key,
            path,
            body,
            cause: cause.clone(),
        }
    }

    /// For a refund: the same refund for `amount_minor` instead (what the payment says is
    /// left), under its own key.
    pub fn refund_instead(&self, amount_minor: i64) -> Option<Self> {
        (self.kind == Kind::Refund).then(|| {
            let reaction = Reaction::RefundPayment {
                payment: self.target,
                amount_minor,
            };
            Self::new(&reaction, &self.cause)
        })
    }

    /// The amount a refund asks for.
    pub fn refund_amount(&self) -> Option<i64> {
        match self.kind {
            Kind::Refund => self.body["amount_minor"].as_i64(),
            Kind::Confirm | Kind::Cancel => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause() -> Cause {
        Cause {
            event_id: Uuid::from_u128(7),
            correlation_id: "corr".to_owned(),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
        }
    }

    #[test]
    fn keys_are_derived_from_the_triggering_event() {
        let order = Uuid::from_u128(1);
        let event = cause().event_id;
        let confirm = Command::new(&Reaction::ConfirmOrder { order }, &cause());
        assert_eq!(confirm.idempotency_key, format!("pm-confirm-{event}"));
        assert_eq!(confirm.path, format!("/v1/orders/{order}/confirm"));
        for (why, reason) in [
            (Cancel::PaymentFailed, "payment_failed"),
            (Cancel::PaymentShort, "payment_short"),
        ] {
            let cancel = Command::new(&Reaction::CancelOrder { order, why }, &cause());
            assert_eq!(cancel.idempotency_key, format!("pm-cancel-{event}"));
            assert_eq!(cancel.body, json!({ "reason": reason }));
        }
    }

    #[test]
    fn a_refund_key_names_its_amount_and_a_smaller_refund_gets_its_own() {
        let payment = Uuid::from_u128(2);
        let event = cause().event_id;
        let reaction = Reaction::RefundPayment {
            payment,
            amount_minor: 3000,
        };
        let refund = Command::new(&reaction, &cause());
        assert_eq!(
            refund.idempotency_key,
            format!("pm-refund-{event}-{payment}-3000")
        );
        assert_eq!(refund.refund_amount(), Some(3000));
        let instead = refund.refund_instead(2000).expect("a refund");
        assert_eq!(
            instead.idempotency_key,
            format!("pm-refund-{event}-{payment}-2000")
        );
        assert_eq!(instead.body["amount_minor"], 2000);
        let confirm = Command::new(&Reaction::ConfirmOrder { order: payment }, &cause());
        assert_eq!(confirm.refund_instead(1), None);
    }

    #[test]
    fn kinds_round_trip_through_their_stored_names() {
        for kind in [Kind::Confirm, Kind::Cancel, Kind::Refund] {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("ship"), None);
    }
}
