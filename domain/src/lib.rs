//! The commerce domain: `User`, `Order` and `Payment` aggregates (cqrs-es), their commands,
//! events and errors, and the typed values they are made of.
//!
//! This crate does no I/O. Anything that must be looked up (another aggregate's state, a
//! uniqueness check) is resolved by the caller and passed in the command, or enforced by the
//! event store (see [`UniqueClaim`]).
#![forbid(unsafe_code)]

pub mod order;
pub mod payment;
pub mod problem_types;
pub mod upcast;
pub mod user;
pub mod values;

mod event_names;

pub use order::{Order, OrderCommand, OrderError, OrderEvent, OrderStatus};
pub use payment::{Payment, PaymentCommand, PaymentError, PaymentEvent, PaymentStatus};
pub use user::{User, UserCommand, UserError, UserEvent, UserStatus};

/// How a domain error should be understood by a caller, independent of any transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The aggregate (or a part of it, such as an address) does not exist.
    NotFound,
    /// The aggregate's current state forbids the command.
    Conflict,
    /// A value in the command is unacceptable; `field` names it as the client sent it.
    Invalid { field: String },
}

/// Implemented by every aggregate's error enum so that the edge can map errors in one place.
pub trait DomainError: std::error::Error {
    fn kind(&self) -> ErrorKind;
    /// A stable, kebab-case name of the rule that was broken, for problem `type`s and metrics.
    fn code(&self) -> &'static str;
    /// Figures a client can act on, e.g. `("available", 700)` when a refund asks for more
    /// than is left; they become members of the problem response.
    fn facts(&self) -> Vec<(&'static str, i64)> {
        Vec::new()
    }
}

/// A value that must be unique across aggregates, claimed or released in the same database
/// transaction as the events that imply it. Two commands racing for one value: exactly one
/// commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UniqueClaim {
    Claim { scope: &'static str, key: String },
    Release { scope: &'static str, key: String },
}

/// Events of every aggregate name a type and a version; both are stored and must never change
/// for an existing event (a test pins them).
pub trait NamedEvent {
    /// Every (type, version) this enum can produce, for the pinning test and the schema registry.
    fn catalogue() -> &'static [(&'static str, &'static str)];
}
