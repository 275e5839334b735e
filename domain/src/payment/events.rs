//! Events of the `Payment` aggregate. Each carries the order id and the running totals readers
//! need, so projections never recompute the rules. Stored names are pinned by a test.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{Currency, PaymentMethod, Reason};
use crate::NamedEvent;

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
