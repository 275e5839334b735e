//! The `User` aggregate. All rules are in `handle`; `apply` only folds facts.

use std::collections::{BTreeMap, BTreeSet};

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{UserCommand, UserError, UserEvent};
use crate::values::{Address, DisplayName, Email, Preferences, Role};

/// How many addresses one user may keep.
pub const MAX_ADDRESSES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Deactivated,
}

/// `None` until the user is registered.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    state: Option<UserState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserState {
    email: Email,
    display_name: DisplayName,
    preferences: Preferences,
    addresses: BTreeMap<Uuid, Address>,
    roles: BTreeSet<Role>,
    status: UserStatus,
}

impl User {
    /// The roles the user holds now.
    pub fn roles(&self) -> Vec<Role> {
        self.state
            .as_ref()
            .map(|s| s.roles.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn status(&self) -> Option<UserStatus> {
        self.state.as_ref().map(|s| s.status)
    }

    /// The email the user registered or last changed to, as they wrote it.
    pub fn email(&self) -> Option<&Email> {
        self.state.as_ref().map(|s| &s.email)
    }

    fn active(&self) -> Result<&UserState, UserError> {
        let state = self.state.as_ref().ok_or(UserError::NotFound)?;
        match state.status {
            UserStatus::Active => Ok(state),
            UserStatus::Deactivated => Err(UserError::Deactivated),
        }
    }

    fn decide(&self, command: UserCommand) -> Result<UserEvent, UserError> {
        if let UserCommand::Register {
            email,
            display_name,
        } = command
        {
            if self.state.is_some() {
                return Err(UserError::AlreadyRegistered);
            }
            return Ok(UserEvent::Registered {
                email,
                display_name,
                roles: vec![Role::Customer],
            });
        }
        let state = self.active()?;
        match command {
            UserCommand::Register { .. } => Err(UserError::AlreadyRegistered),
            UserCommand::ChangeProfile {
                display_name,
                preferences,
            } => {
                if display_name.is_none() && preferences.is_none() {
                    return Err(UserError::NothingToChange);
                }
                Ok(UserEvent::ProfileChanged {
                    display_name,
                    preferences,
                })
            }
            UserCommand::ChangeEmail { email } => {
                if email.normalized() == state.email.normalized() && email == state.email {
                    return Err(UserError::EmailUnchanged);
                }
                Ok(UserEvent::EmailChanged {
                    previous_email: state.email.clone(),
                    email,
                })
            }
            UserCommand::AddAddress {
                address_id,
                address,
            } => {
                if state.addresses.contains_key(&address_id) {
                    return Err(UserError::AddressIdTaken);
                }
                if state.addresses.len() >= MAX_ADDRESSES {
                    return Err(UserError::TooManyAddresses { max: MAX_ADDRESSES });
                }
                Ok(UserEvent::AddressAdded {
                    address_id,
                    address,
                })
            }
            UserCommand::RemoveAddress { address_id } => {
                if !state.addresses.contains_key(&address_id) {
                    return Err(UserError::AddressNotFound);
                }
                Ok(UserEvent::AddressRemoved { address_id })
            }
            UserCommand::GrantRole { role } => {
                if state.roles.contains(&role) {
                    return Err(UserError::RoleAlreadyGranted(role));
                }
                Ok(UserEvent::RoleGranted { role })
            }
            UserCommand::RevokeRole { role } => {
                if !state.roles.contains(&role) {
                    return Err(UserError::RoleNotGranted(role));
                }
                Ok(UserEvent::RoleRevoked { role })
            }
            UserCommand::Deactivate { reason } => Ok(UserEvent::Deactivated { reason }),
        }
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::Registered {
                email,
                display_name,
                roles,
            } => {
                self.state = Some(UserState {
                    email,
                    display_name,
                    preferences: Preferences::default(),
                    addresses: BTreeMap::new(),
                    roles: roles.into_iter().collect(),
                    status: UserStatus::Active,
                });
            }
            other => {
                let Some(state) = self.state.as_mut() else {
                    return;
                };
                match other {
                    UserEvent::Registered { .. } => {}
                    UserEvent::ProfileChanged {
                        display_name,
                        preferences,
                    } => {
                        if let Some(name) = display_name {
                            state.display_name = name;
                        }
                        if let Some(preferences) = preferences {
                            state.preferences = preferences;
                        }
                    }
                    UserEvent::EmailChanged { email, .. } => state.email = email,
                    UserEvent::AddressAdded {
                        address_id,
                        address,
                    } => {
                        state.addresses.insert(address_id, address);
                    }
                    UserEvent::AddressRemoved { address_id } => {
                        state.addresses.remove(&address_id);
                    }
                    UserEvent::RoleGranted { role } => {
                        state.roles.insert(role);
                    }
                    UserEvent::RoleRevoked { role } => {
                        state.roles.remove(&role);
                    }
                    UserEvent::Deactivated { .. } => state.status = UserStatus::Deactivated,
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
