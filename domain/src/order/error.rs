//! Why the `Order` aggregate refused a command.

use super::OrderStatus;
use crate::{DomainError, ErrorKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order not found")]
    NotFound,
    #[error("order has already been placed")]
    AlreadyPlaced,
    #[error("an order needs at least one line item")]
    NoItems,
    #[error("an order can have at most {max} line items")]
    TooManyItems { max: usize },
    #[error("sku appears more than once; combine the lines")]
    DuplicateSku { index: usize },
    #[error("the order total is too large")]
    TotalTooLarge,
    /// Every line is free: a payment is at least one minor unit, so nothing could pay the
    /// order and confirm it.
    #[error("the order total must be at least one minor unit")]
    NothingToPay,
    #[error("cannot {action} an order that is {from}")]
    IllegalTransition {
        from: OrderStatus,
        action: &'static str,
    },
}

impl DomainError for OrderError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::AlreadyPlaced | Self::IllegalTransition { .. } => ErrorKind::Conflict,
            Self::NoItems
            | Self::TooManyItems { .. }
            | Self::TotalTooLarge
            | Self::NothingToPay => ErrorKind::Invalid {
                field: "items".to_owned(),
            },
            Self::DuplicateSku { index } => ErrorKind::Invalid {
                field: format!("items[{index}].sku"),
            },
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "order-not-found",
            Self::AlreadyPlaced => "order-already-placed",
            Self::NoItems => "order-without-items",
            Self::TooManyItems { .. } => "too-many-line-items",
            Self::DuplicateSku { .. } => "duplicate-sku",
            Self::TotalTooLarge => "order-total-too-large",
            Self::NothingToPay => "order-total-zero",
            Self::IllegalTransition { .. } => "illegal-order-transition",
        }
    }
}
