//! The `User` aggregate: registration, profile, email, addresses, roles and deactivation.

mod aggregate;
mod commands;
mod error;
mod events;

pub use aggregate::{User, UserStatus, MAX_ADDRESSES};
pub use commands::UserCommand;
pub use error::UserError;
pub use events::{UserEvent, EMAIL_SCOPE};
