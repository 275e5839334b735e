//! The `Order` aggregate: placing an order and its life cycle
//! `created -> confirmed -> processing -> shipped -> delivered`, with cancellation from
//! created, confirmed or processing (for a failed payment, from created only).

mod aggregate;
mod commands;
mod error;
mod events;

pub use aggregate::{
    Order, OrderStatus, PaymentTerms, MAX_LINE_ITEMS, PAYMENT_FAILED, PAYMENT_SHORT,
};
pub use commands::{NewLineItem, OrderCommand};
pub use error::OrderError;
pub use events::{LineItem, OrderEvent};
