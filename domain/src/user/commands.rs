//! Commands accepted by the `User` aggregate. Every field is a checked value.

use uuid::Uuid;

use crate::values::{Address, DisplayName, Email, Preferences, Reason, Role};

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Register {
        email: Email,
        display_name: DisplayName,
    },
    ChangeProfile {
        display_name: Option<DisplayName>,
        preferences: Option<Preferences>,
    },
    ChangeEmail {
        email: Email,
    },
    /// `address_id` is chosen by the caller so that the response can name it.
    AddAddress {
        address_id: Uuid,
        address: Address,
    },
    RemoveAddress {
        address_id: Uuid,
    },
    GrantRole {
        role: Role,
    },
    RevokeRole {
        role: Role,
    },
    Deactivate {
        reason: Option<Reason>,
    },
}
