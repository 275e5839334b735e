//! Why the `User` aggregate refused a command.

use crate::values::Role;
use crate::{DomainError, ErrorKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user not found")]
    NotFound,
    #[error("user is already registered")]
    AlreadyRegistered,
    #[error("user is deactivated")]
    Deactivated,
    #[error("give at least one of display_name and preferences")]
    NothingToChange,
    #[error("the new email is the user's current email")]
    EmailUnchanged,
    #[error("a user can keep at most {max} addresses")]
    TooManyAddresses { max: usize },
    #[error("an address with this id already exists")]
    AddressIdTaken,
    #[error("address not found")]
    AddressNotFound,
    #[error("the user already has the role {0:?}")]
    RoleAlreadyGranted(Role),
    #[error("the user does not have the role {0:?}")]
    RoleNotGranted(Role),
}

impl DomainError for UserError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound | Self::AddressNotFound | Self::RoleNotGranted(_) => ErrorKind::NotFound,
            Self::NothingToChange => ErrorKind::Invalid {
                field: "display_name".to_owned(),
            },
            Self::AlreadyRegistered
            | Self::Deactivated
            | Self::EmailUnchanged
            | Self::TooManyAddresses { .. }
            | Self::AddressIdTaken
            | Self::RoleAlreadyGranted(_) => ErrorKind::Conflict,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "user-not-found",
            Self::AlreadyRegistered => "user-already-registered",
            Self::Deactivated => "user-deactivated",
            Self::NothingToChange => "nothing-to-change",
            Self::EmailUnchanged => "email-unchanged",
            Self::TooManyAddresses { .. } => "too-many-addresses",
            Self::AddressIdTaken => "address-id-taken",
            Self::AddressNotFound => "address-not-found",
            Self::RoleAlreadyGranted(_) => "role-already-granted",
            Self::RoleNotGranted(_) => "role-not-granted",
        }
    }
}
