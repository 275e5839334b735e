//! Events of the `Payment` aggregate. Each carries the order id and the running totals readers
//! need, so projections never recompute the rules. Stored names are pinned by a test.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{Currency, PaymentMethod, Reason};
use crate::{NamedEvent, UniqueClaim};

/// Scope of the unique claim an order's live payment holds: one payment per order at a time,
/// so that a repeated "pay" (a double click, a retry under a new key) cannot charge twice. A
/// failed payment releases it for the next attempt.
pub const ORDER_PAYMENT_SCOPE: &str = "order_payment";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PaymentEvent {
    #[serde(rename = "PaymentInitiated")]
    Initiated {
        order_id: Uuid,
        amount_minor: i64,
        currency: Currency,
        method: PaymentMethod,
    },
    #[serde(rename = "PaymentAuthorized")]
    Authorized {
        order_id: Uuid,
        amount_minor: i64,
        currency: Currency,
    },
    #[serde(rename = "PaymentCaptured")]
    Captured {
        order_id: Uuid,
        amount_minor: i64,
        currency: Currency,
        /// Total captured so far, this capture included.
        captured_total_minor: i64,
    },
    #[serde(rename = "PaymentFailed")]
    Failed { order_id: Uuid, reason: Reason },
    #[serde(rename = "PaymentRefunded")]
    Refunded {
        order_id: Uuid,
        amount_minor: i64,
        currency: Currency,
        reason: Reason,
        /// Total refunded so far, this refund included.
        refunded_total_minor: i64,
        /// True when everything captured has now been refunded.
        fully_refunded: bool,
    },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Initiated { .. } => "PaymentInitiated",
            Self::Authorized { .. } => "PaymentAuthorized",
            Self::Captured { .. } => "PaymentCaptured",
            Self::Failed { .. } => "PaymentFailed",
            Self::Refunded { .. } => "PaymentRefunded",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

impl NamedEvent for PaymentEvent {
    fn catalogue() -> &'static [(&'static str, &'static str)] {
        &[
            ("PaymentInitiated", "1"),
            ("PaymentAuthorized", "1"),
            ("PaymentCaptured", "1"),
            ("PaymentFailed", "1"),
            ("PaymentRefunded", "1"),
        ]
    }
}

impl PaymentEvent {
    /// The unique values this event claims or releases, to be written with it atomically.
    pub fn unique_claims(&self) -> Vec<UniqueClaim> {
        match self {
            Self::Initiated { order_id, .. } => vec![UniqueClaim::Claim {
                scope: ORDER_PAYMENT_SCOPE,
                key: order_id.to_string(),
            }],
            Self::Failed { order_id, .. } => vec![UniqueClaim::Release {
                scope: ORDER_PAYMENT_SCOPE,
                key: order_id.to_string(),
            }],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_claims_its_order_until_it_fails() {
        let order_id = Uuid::now_v7();
        let initiated = PaymentEvent::Initiated {
            order_id,
            amount_minor: 3000,
            currency: Currency::parse("EUR").unwrap(),
            method: PaymentMethod::Card,
        };
        assert_eq!(
            initiated.unique_claims(),
            vec![UniqueClaim::Claim {
                scope: ORDER_PAYMENT_SCOPE,
                key: order_id.to_string()
            }]
        );
        let failed = PaymentEvent::Failed {
            order_id,
            reason: Reason::parse("declined").unwrap(),
        };
        assert_eq!(
            failed.unique_claims(),
            vec![UniqueClaim::Release {
                scope: ORDER_PAYMENT_SCOPE,
                key: order_id.to_string()
            }]
        );
    }
}
