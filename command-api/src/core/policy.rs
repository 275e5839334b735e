//! Who may run which command: the one place that decides (`docs/security.md`). Each aggregate
//! names the [`Access`] of each of its commands and who owns it ([`Target`]); the core asks
//! [`admit`] before it loads anything and [`CommandBus::check_owner`] once it has the state.
//!
//! - `support` writes nothing; `admin` may do everything.
//! - A customer acts only on what is theirs: their own user, orders they placed (placing one
//!   only for themselves), payments of those orders. Anything else is answered exactly as if
//!   it did not exist (404, or 422 for a reference in the body).
//! - Order fulfilment and payment state changes are for `admin` and `service`; roles are
//!   granted and revoked by `admin` only.

use domain::order::OrderCommand;
use domain::payment::PaymentCommand;
use domain::{Order, OrderError, Payment, PaymentError, User, UserCommand, UserError};
use infra::auth::{Principal, Role};
use uuid::Uuid;

use super::{CommandBus, CommandError};

/// What a command needs of its principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token (registration).
    Public,
    /// The owning customer, an admin, and services when `service` is true.
    Owner { service: bool },
    /// Admins and services.
    Operator,
    /// Admins only.
    Admin,
}

/// Who owns an aggregate: a customer, or whoever owns an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Customer(Uuid),
    OrderOf(Uuid),
}

/// Whether the principal may go on: `Ok(true)` when ownership must still be checked.
pub fn admit(principal: Option<&Principal>, access: Access) -> Result<bool, CommandError> {
    if access == Access::Public {
        return Ok(false);
    }
    let principal = principal.ok_or(CommandError::Unauthenticated)?;
    if principal.has(Role::Admin) {
        return Ok(false);
    }
    match access {
        Access::Owner { service: true } if principal.has(Role::Service) => Ok(false),
        Access::Owner { .. } if principal.has(Role::Customer) && principal.user_id().is_some() => {
            Ok(true)
        }
        Access::Operator if principal.has(Role::Service) => Ok(false),
        _ => Err(CommandError::Forbidden),
    }
}

/// What an aggregate tells the policy.
pub trait Governed: cqrs_es::Aggregate {
    fn access(command: &Self::Command) -> Access;
    /// The access of the command that creates one. Routes check their command's access before
    /// they read the body or look up a reference (`crate::http::Admitted`), so that a role
    /// that may not run it learns nothing from either.
    fn creation_access() -> Access;
    /// The owner: from the state, or for a new aggregate from the command.
    fn owner(&self, id: Uuid, command: &Self::Command) -> Option<Owner>;
    /// What a customer who does not own it is told: exactly what they would be told if it
    /// did not exist.
    fn hidden(new: bool) -> CommandError;
}

impl Governed for User {
    fn access(command: &UserCommand) -> Access {
        match command {
            UserCommand::Register { .. } => Self::creation_access(),
            UserCommand::GrantRole { .. } | UserCommand::RevokeRole { .. } => Access::Admin,
            _ => Access::Owner { service: false },
        }
    }
    fn creation_access() -> Access {
        Access::Public
    }
    /// The user owns itself, once registered (none owns a user that does not exist).
    fn owner(&self, id: Uuid, _command: &UserCommand) -> Option<Owner> {
        self.status().map(|_| Owner::Customer(id))
    }
    fn hidden(_new: bool) -> CommandError {
        CommandError::from_domain(&UserError::NotFound)
    }
}

impl Governed for Order {
    fn access(command: &OrderCommand) -> Access {
        match command {
            OrderCommand::Place { .. } => Self::creation_access(),
            OrderCommand::Cancel { .. } => Access::Owner { service: true },
            _ => Access::Operator,
        }
    }
    fn creation_access() -> Access {
        Access::Owner { service: false }
    }
    fn owner(&self, _id: Uuid, command: &OrderCommand) -> Option<Owner> {
        match (self.customer_id(), command) {
            (Some(customer), _) => Some(Owner::Customer(customer)),
            (None, OrderCommand::Place { customer_id, .. }) => Some(Owner::Customer(*customer_id)),
            (None, _) => None,
        }
    }
    fn hidden(new: bool) -> CommandError {
        if new {
            CommandError::InvalidReference {
                field: "customer_id",
                message: "no active user with this id",
            }
        } else {
            CommandError::from_domain(&OrderError::NotFound)
        }
    }
}

impl Governed for Payment {
    fn access(command: &PaymentCommand) -> Access {
        match command {
            PaymentCommand::Initiate { .. } => Self::creation_access(),
            _ => Access::Operator,
        }
    }
    fn creation_access() -> Access {
        Access::Owner { service: true }
    }
    fn owner(&self, _id: Uuid, command: &PaymentCommand) -> Option<Owner> {
        match (self.order_id(), command) {
            (Some(order), _) => Some(Owner::OrderOf(order)),
            (None, PaymentCommand::Initiate { order_id, .. }) => Some(Owner::OrderOf(*order_id)),
            (None, _) => None,
        }
    }
    fn hidden(new: bool) -> CommandError {
        if new {
            CommandError::InvalidReference {
                field: "order_id",
                message: "no order with this id",
            }
        } else {
            CommandError::from_domain(&PaymentError::NotFound)
        }
    }
}

impl CommandBus {
    /// `Ok` when `customer` owns the aggregate; else what they are told instead: a customer,
    /// that it does not exist (another customer's things are hidden); one who also holds
    /// `support`, which reads everything and writes nothing, 403 (hiding what it may read
    /// would only mislead it), unless nothing is there to own: a command on an aggregate
    /// that does not exist is 404 for support as for anyone.
    pub(super) async fn check_owner<A: Governed + super::Target>(
        &self,
        customer: Uuid,
        support: bool,
        state: &A,
        id: Uuid,
        command: &A::Command,
        new: bool,
    ) -> Result<(), CommandError>
    where
        A::Error: domain::DomainError,
    {
        let owner = match state.owner(id, command) {
            Some(Owner::Customer(owner)) => Some(owner),
            Some(Owner::OrderOf(order)) => self
                .load::<Order>(order)
                .await?
                .and_then(|o| o.customer_id()),
            None => None,
        };
        match (owner == Some(customer), support) {
            (true, _) => Ok(()),
            (false, true) if owner.is_none() && !new => Err(A::hidden(false)),
            (false, true) => Err(CommandError::Forbidden),
            (false, false) => Err(A::hidden(new)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infra::auth::Subject;

    fn principal(roles: &[Role]) -> Principal {
        Principal::new(Subject::User(Uuid::now_v7()), roles.iter().copied())
    }

    fn service() -> Principal {
        Principal::new(Subject::Service("pm".into()), [Role::Service])
    }

    /// Every role against every kind of access: `Ok(false)` allowed, `Ok(true)` allowed if
    /// owner, `Err` refused.
    #[test]
    fn the_role_matrix() {
        use Access::*;
        let customer = principal(&[Role::Customer]);
        let support = principal(&[Role::Customer, Role::Support]);
        let admin = principal(&[Role::Customer, Role::Admin]);
        let svc = service();
        let cases: [(&Principal, Access, Option<bool>); 20] = [
            (&customer, Public, Some(false)),
            (&customer, Owner { service: false }, Some(true)),
            (&customer, Owner { service: true }, Some(true)),
            (&customer, Operator, None),
            (&customer, Admin, None),
            (&support, Public, Some(false)),
            (&support, Owner { service: false }, Some(true)),
            (&support, Owner { service: true }, Some(true)),
            (&support, Operator, None),
            (&support, Admin, None),
            (&admin, Public, Some(false)),
            (&admin, Owner { service: false }, Some(false)),
            (&admin, Owner { service: true }, Some(false)),
            (&admin, Operator, Some(false)),
            (&admin, Admin, Some(false)),
            (&svc, Public, Some(false)),
            (&svc, Owner { service: false }, None),
            (&svc, Owner { service: true }, Some(false)),
            (&svc, Operator, Some(false)),
            (&svc, Admin, None),
        ];
        for (who, access, expected) in cases {
            let got = admit(Some(who), access).ok();
            assert_eq!(got, expected, "{:?} {access:?}", who.roles);
        }
        let support_only = principal(&[Role::Support]);
        assert!(matches!(
            admit(Some(&support_only), Owner { service: true }),
            Err(CommandError::Forbidden)
        ));
        assert!(matches!(
            admit(None, Operator),
            Err(CommandError::Unauthenticated)
        ));
        assert_eq!(admit(None, Public).ok(), Some(false));
    }
}
