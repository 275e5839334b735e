//! Events of the `User` aggregate. The serde tag and [`DomainEvent::event_type`] are the stored
//! names; they are pinned by a test and must not change.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{Address, DisplayName, Email, Preferences, Reason, Role};
use crate::{NamedEvent, UniqueClaim};

/// Scope of the unique claim on a user's (normalised) email address.
pub const EMAIL_SCOPE: &str = "user_email";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum UserEvent {
    #[serde(rename = "UserRegistered")]
    Registered {
        email: Email,
        display_name: DisplayName,
        roles: Vec<Role>,
    },
    /// Carries only what changed; `None` means unchanged.
    #[serde(rename = "UserProfileChanged")]
    ProfileChanged {
        display_name: Option<DisplayName>,
        preferences: Option<Preferences>,
    },
    #[serde(rename = "UserEmailChanged")]
    EmailChanged { previous_email: Email, email: Email },
    #[serde(rename = "UserAddressAdded")]
    AddressAdded { address_id: Uuid, address: Address },
    #[serde(rename = "UserAddressRemoved")]
    AddressRemoved { address_id: Uuid },
    #[serde(rename = "UserRoleGranted")]
    RoleGranted { role: Role },
    #[serde(rename = "UserRoleRevoked")]
    RoleRevoked { role: Role },
    #[serde(rename = "UserDeactivated")]
    Deactivated { reason: Option<Reason> },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Registered { .. } => "UserRegistered",
            Self::ProfileChanged { .. } => "UserProfileChanged",
            Self::EmailChanged { .. } => "UserEmailChanged",
            Self::AddressAdded { .. } => "UserAddressAdded",
            Self::AddressRemoved { .. } => "UserAddressRemoved",
            Self::RoleGranted { .. } => "UserRoleGranted",
            Self::RoleRevoked { .. } => "UserRoleRevoked",
            Self::Deactivated { .. } => "UserDeactivated",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            // Version 2 records the roles granted at registration; version 1 is upcast.
            Self::Registered { .. } => "2",
            _ => "1",
        }
        .to_owned()
    }
}

impl NamedEvent for UserEvent {
    fn catalogue() -> &'static [(&'static str, &'static str)] {
        &[
            ("UserRegistered", "2"),
            ("UserProfileChanged", "1"),
            ("UserEmailChanged", "1"),
            ("UserAddressAdded", "1"),
            ("UserAddressRemoved", "1"),
            ("UserRoleGranted", "1"),
            ("UserRoleRevoked", "1"),
            ("UserDeactivated", "1"),
        ]
    }
}

impl UserEvent {
    /// The unique values this event claims or releases, to be written with it atomically.
    pub fn unique_claims(&self) -> Vec<UniqueClaim> {
        match self {
            Self::Registered { email, .. } => vec![UniqueClaim::Claim {
                scope: EMAIL_SCOPE,
                key: email.normalized(),
            }],
            Self::EmailChanged {
                previous_email,
                email,
            } => vec![
                UniqueClaim::Release {
                    scope: EMAIL_SCOPE,
                    key: previous_email.normalized(),
                },
                UniqueClaim::Claim {
                    scope: EMAIL_SCOPE,
                    key: email.normalized(),
                },
            ],
            _ => Vec::new(),
        }
    }
}
