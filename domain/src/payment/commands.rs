//! Commands accepted by the `Payment` aggregate. Amounts are positive minor units in the
//! payment's currency (checked by [`crate::values::positive_amount`]).

use uuid::Uuid;

use crate::order::PaymentTerms;
use crate::values::{Money, PaymentMethod, Reason};

#[derive(Debug, Clone, PartialEq)]
pub enum PaymentCommand {
    /// `order` is the order's current state, resolved by the caller.
    Initiate {
        order_id: Uuid,
        order: PaymentTerms,
        amount: Money,
        method: PaymentMethod,
    },
    Authorize {
        amount_minor: i64,
    },
    Capture {
        amount_minor: i64,
    },
    Fail {
        reason: Reason,
    },
    Refund {
        amount_minor: i64,
        reason: Reason,
    },
}
