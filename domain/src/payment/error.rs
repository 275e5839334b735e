//! Why the `Payment` aggregate refused a command.

use super::PaymentStatus;
use crate::order::OrderStatus;
use crate::values::Currency;
use crate::{problem_types, DomainError, ErrorKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("payment not found")]
    NotFound,
    #[error("payment has already been initiated")]
    AlreadyInitiated,
    #[error("currency must match the order's currency {expected}")]
    CurrencyMismatch { expected: Currency },
    #[error("amount must equal the order total {expected}")]
    AmountMismatch { expected: i64 },
    #[error("an order that is {status} cannot be paid")]
    OrderNotPayable { status: OrderStatus },
    #[error("cannot {action} a payment that is {from}")]
    IllegalTransition {
        from: PaymentStatus,
        action: &'static str,
    },
    #[error("authorization exceeds the payment amount ({max} available)")]
    AuthorizationExceedsAmount { max: i64 },
    #[error("capture exceeds the authorized amount ({available} available)")]
    CaptureExceedsAuthorized { available: i64 },
    #[error("refund exceeds captured minus refunded ({available} available)")]
    RefundExceedsCaptured { available: i64 },
}

impl DomainError for PaymentError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::CurrencyMismatch { .. } => ErrorKind::Invalid {
                field: "currency".to_owned(),
            },
            Self::AmountMismatch { .. } => ErrorKind::Invalid {
                field: "amount_minor".to_owned(),
            },
            Self::AlreadyInitiated
            | Self::OrderNotPayable { .. }
            | Self::IllegalTransition { .. }
            | Self::AuthorizationExceedsAmount { .. }
            | Self::CaptureExceedsAuthorized { .. }
            | Self::RefundExceedsCaptured { .. } => ErrorKind::Conflict,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "payment-not-found",
            Self::AlreadyInitiated => "payment-already-initiated",
            Self::CurrencyMismatch { .. } => "currency-mismatch",
            Self::AmountMismatch { .. } => "amount-mismatch",
            Self::OrderNotPayable { .. } => "order-not-payable",
            Self::IllegalTransition { .. } => "illegal-payment-transition",
            Self::AuthorizationExceedsAmount { .. } => "authorization-exceeds-amount",
            Self::CaptureExceedsAuthorized { .. } => "capture-exceeds-authorized",
            Self::RefundExceedsCaptured { .. } => problem_types::REFUND_EXCEEDS_CAPTURED,
        }
    }

    fn facts(&self) -> Vec<(&'static str, i64)> {
        match self {
            Self::AuthorizationExceedsAmount { max } => vec![("max", *max)],
            Self::CaptureExceedsAuthorized { available }
            | Self::RefundExceedsCaptured { available } => {
                vec![(problem_types::AVAILABLE, *available)]
            }
            _ => Vec::new(),
        }
    }
}
