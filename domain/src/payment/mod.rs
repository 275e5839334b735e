//! The `Payment` aggregate: initiate for an order, authorise, capture (partially, up to the
//! authorised amount), fail, refund (partially or fully, never more than captured minus
//! refunded).

mod aggregate;
mod commands;
mod error;
mod events;

pub use aggregate::{Payment, PaymentStatus};
pub use commands::PaymentCommand;
pub use error::PaymentError;
pub use events::{PaymentEvent, ORDER_PAYMENT_SCOPE};
