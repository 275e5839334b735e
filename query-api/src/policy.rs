//! Who may read what: the one place that decides it for the query API (`docs/security.md`).
//! A handler asks [`admit`] for the [`Scope`] of its [`Query`] before it reads anything, and
//! that scope whether the owner of what it found may be shown ([`Scope::check`]); reads of
//! data no single customer owns ask [`require_all`] instead.
//!
//! - `support`, `admin` and `service` read every user, order and payment.
//! - A customer (role `customer` and a `user:` subject) reads only what is theirs: their own
//!   user and order list, orders they placed, payments of those orders. Anything else is
//!   answered exactly as if it did not exist (404), so a customer cannot learn what exists.
//! - Looking a user up by email, analytics and audit histories are for `support` and `admin`.
//! - Whoever holds no role that allows a query gets 403.

use infra::auth::{Principal, Role};
use uuid::Uuid;

use crate::error::QueryError;

/// The reads of the query API, as the policy tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// `GET /v1/users/{id}`
    User,
    /// `GET /v1/users?email=`
    UserByEmail,
    /// `GET /v1/orders/{id}`
    Order,
    /// `GET /v1/users/{id}/orders`
    CustomerOrders,
    /// `GET /v1/payments/{id}`
    Payment,
    /// `GET /v1/orders/{id}/payments`
    OrderPayments,
    /// `GET /v1/analytics/*`
    Analytics,
    /// `GET /v1/audit/{aggregate_type}/{id}`
    Audit,
}

impl Query {
    /// Whether the query reads something a customer owns (and so a customer may run it on
    /// what is theirs), rather than data only staff see.
    pub fn is_owned(self) -> bool {
        match self {
            Self::User
            | Self::Order
            | Self::CustomerOrders
            | Self::Payment
            | Self::OrderPayments => true,
            Self::UserByEmail | Self::Analytics | Self::Audit => false,
        }
    }
}

/// What of a query's data a principal may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    All,
    /// Only what this customer owns.
    Own(Uuid),
}

impl Scope {
    /// The customer the scope is limited to, if it is limited.
    pub fn viewer(self) -> Option<Uuid> {
        match self {
            Self::All => None,
            Self::Own(customer) => Some(customer),
        }
    }

    /// Whether something owned by `owner` may be shown; an unknown owner (`None`) is shown
    /// only to a scope of everything.
    pub fn permits(self, owner: Option<Uuid>) -> bool {
        match self {
            Self::All => true,
            Self::Own(customer) => owner == Some(customer),
        }
    }

    /// `Ok` when something owned by `owner` may be shown; otherwise the very answer a missing
    /// `what` gets.
    pub fn check(self, owner: Option<Uuid>, what: &'static str) -> Result<(), QueryError> {
        if self.permits(owner) {
            Ok(())
        } else {
            Err(QueryError::NotFound { what })
        }
    }
}

/// Whether `principal` may run `query` at all, and on what; 403 when no role it holds allows
/// the query.
pub fn admit(principal: &Principal, query: Query) -> Result<Scope, QueryError> {
    if principal.has_any(&[Role::Support, Role::Admin]) {
        return Ok(Scope::All);
    }
    if !query.is_owned() {
        return Err(QueryError::Forbidden);
    }
    if principal.has(Role::Service) {
        return Ok(Scope::All);
    }
    match principal.user_id() {
        Some(customer) if principal.has(Role::Customer) => Ok(Scope::Own(customer)),
        _ => Err(QueryError::Forbidden),
    }
}

/// For reads of data no single customer owns (lookup by email, analytics, audit): `Ok` only
/// when `principal` may read all of it, 403 otherwise.
pub fn require_all(principal: &Principal, query: Query) -> Result<(), QueryError> {
    match admit(principal, query)? {
        Scope::All => Ok(()),
        Scope::Own(_) => Err(QueryError::Forbidden),
    }
}

#[cfg(test)]
mod tests {
    use infra::auth::Subject;

    use super::*;

    /// What a principal is answered.
    #[derive(Debug, PartialEq, Eq)]
    enum Answer {
        Shown,
        /// 404, exactly as for a missing resource.
        Hidden,
        /// 403.
        Forbidden,
    }

    /// The whole decision for a read of something owned by `owner`.
    fn answer(principal: &Principal, query: Query, owner: Option<Uuid>) -> Answer {
        match admit(principal, query) {
            Err(QueryError::Forbidden) => Answer::Forbidden,
            Err(other) => panic!("admit answered {other:?}"),
            Ok(scope) => match scope.check(owner, "thing") {
                Ok(()) => Answer::Shown,
                Err(QueryError::NotFound { what: "thing" }) => Answer::Hidden,
                Err(other) => panic!("check answered {other:?}"),
            },
        }
    }

    fn user(id: Uuid, roles: &[Role]) -> Principal {
        Principal::new(Subject::User(id), roles.iter().copied())
    }

    const ALL: [Query; 8] = [
        Query::User,
        Query::UserByEmail,
        Query::Order,
        Query::CustomerOrders,
        Query::Payment,
        Query::OrderPayments,
        Query::Analytics,
        Query::Audit,
    ];
    const OWNED: [Query; 5] = [
        Query::User,
        Query::Order,
        Query::CustomerOrders,
        Query::Payment,
        Query::OrderPayments,
    ];
    const STAFF: [Query; 3] = [Query::UserByEmail, Query::Analytics, Query::Audit];

    #[test]
    fn every_query_is_either_owned_or_for_staff() {
        for query in ALL {
            assert_ne!(OWNED.contains(&query), STAFF.contains(&query), "{query:?}");
            assert_eq!(query.is_owned(), OWNED.contains(&query), "{query:?}");
        }
    }

    #[test]
    fn the_role_and_route_matrix() {
        let me = Uuid::now_v7();
        let other = Uuid::now_v7();
        let customer = user(me, &[Role::Customer]);
        let support = user(Uuid::now_v7(), &[Role::Support]);
        let admin = user(Uuid::now_v7(), &[Role::Admin]);
        let service = Principal::new(Subject::Service("process-manager".into()), [Role::Service]);
        let nobody = user(me, &[]);
        let owners = [Some(me), Some(other), None];
        for query in OWNED {
            for owner in owners {
                let shown_to_customer = if owner == Some(me) {
                    Answer::Shown
                } else {
                    Answer::Hidden
                };
                let case = format!("{query:?} owned by {owner:?}");
                assert_eq!(answer(&customer, query, owner), shown_to_customer, "{case}");
                for staff in [&support, &admin, &service] {
                    assert_eq!(
                        answer(staff, query, owner),
                        Answer::Shown,
                        "{case} {staff:?}"
                    );
                }
                assert_eq!(answer(&nobody, query, owner), Answer::Forbidden, "{case}");
            }
        }
        for query in STAFF {
            for owner in owners {
                let case = format!("{query:?} owned by {owner:?}");
                for staff in [&support, &admin] {
                    assert_eq!(
                        answer(staff, query, owner),
                        Answer::Shown,
                        "{case} {staff:?}"
                    );
                }
                for refused in [&customer, &service, &nobody] {
                    assert_eq!(
                        answer(refused, query, owner),
                        Answer::Forbidden,
                        "{case} {refused:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn only_a_principal_who_reads_everything_passes_require_all() {
        let me = Uuid::now_v7();
        let service = Principal::new(Subject::Service("pm".into()), [Role::Service]);
        for query in ALL {
            for staff in [user(me, &[Role::Support]), user(me, &[Role::Admin])] {
                assert!(require_all(&staff, query).is_ok(), "{query:?}");
            }
            for refused in [user(me, &[Role::Customer]), user(me, &[])] {
                assert!(
                    matches!(require_all(&refused, query), Err(QueryError::Forbidden)),
                    "{query:?}"
                );
            }
            assert_eq!(
                require_all(&service, query).is_ok(),
                query.is_owned(),
                "{query:?}"
            );
        }
    }

    #[test]
    fn a_customer_reads_only_their_own() {
        let me = Uuid::now_v7();
        let customer = user(me, &[Role::Customer]);
        for query in OWNED {
            let scope = admit(&customer, query).unwrap();
            assert_eq!(scope, Scope::Own(me));
            assert_eq!(scope.viewer(), Some(me));
        }
    }

    #[test]
    fn the_strongest_role_wins() {
        let me = Uuid::now_v7();
        let other = Some(Uuid::now_v7());
        for roles in [
            &[Role::Customer, Role::Support][..],
            &[Role::Customer, Role::Admin],
        ] {
            let principal = user(me, roles);
            for query in ALL {
                assert_eq!(answer(&principal, query, other), Answer::Shown, "{query:?}");
            }
        }
        // A customer who is also a service reads every owned resource, but no staff data.
        let both = user(me, &[Role::Customer, Role::Service]);
        for query in OWNED {
            assert_eq!(answer(&both, query, other), Answer::Shown, "{query:?}");
        }
        for query in STAFF {
            assert_eq!(answer(&both, query, other), Answer::Forbidden, "{query:?}");
        }
    }

    #[test]
    fn the_customer_role_without_a_user_subject_allows_nothing() {
        let odd = Principal::new(Subject::Service("odd".into()), [Role::Customer]);
        for query in ALL {
            assert_eq!(answer(&odd, query, None), Answer::Forbidden, "{query:?}");
        }
    }

    #[test]
    fn a_service_reads_everything_owned_whoever_owns_it() {
        let service = Principal::new(Subject::Service("reporting".into()), [Role::Service]);
        for query in OWNED {
            assert_eq!(admit(&service, query).unwrap(), Scope::All, "{query:?}");
        }
        assert_eq!(Scope::All.viewer(), None);
    }
}
