//! Authentication shared by the services: who a request acts for ([`Principal`]), the signing
//! keys and their JWKS ([`keys`]), issuing and verifying access tokens ([`token`]), and the
//! axum extractor that turns `Authorization: Bearer` into a principal or a 401 ([`extract`]).
//!
//! Access tokens are EdDSA (Ed25519) JWTs with a `kid`. The command API holds the private keys
//! and signs; both APIs verify locally, the query API against the command API's JWKS
//! ([`jwks`]). Only the configured algorithm and keys are accepted: `alg: none`, HMAC keyed
//! with a public key, an unknown `kid`, a wrong issuer or audience, an expired or not yet
//! valid token are all the same 401. See `docs/security.md`.

pub mod extract;
pub mod jwks;
pub mod keys;
pub mod token;

use std::collections::BTreeSet;
use std::fmt;

use uuid::Uuid;

pub use extract::{AuthError, Authenticated, OptionalPrincipal};
pub use keys::{KeyError, SigningKey, SigningKeys};
pub use token::{Claims, Issued, TokenError, Verifier};

/// A role a principal holds. `customer` is every registered user; `support` reads everything
/// and writes nothing; `admin` may do everything; `service` is a machine client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Customer,
    Support,
    Admin,
    Service,
}

impl Role {
    pub const ALL: [Role; 4] = [Self::Customer, Self::Support, Self::Admin, Self::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Support => "support",
            Self::Admin => "admin",
            Self::Service => "service",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == raw)
    }
}

/// Who a principal is: a registered user or a machine client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    User(Uuid),
    Service(String),
}

impl Subject {
    /// `user:<uuid>` or `service:<client_id>`, as in a token's `sub`.
    pub fn parse(raw: &str) -> Option<Self> {
        if let Some(id) = raw.strip_prefix("user:") {
            return Uuid::parse_str(id).ok().map(Self::User);
        }
        let client = raw.strip_prefix("service:")?;
        is_client_id(client).then(|| Self::Service(client.to_owned()))
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(id) => write!(f, "user:{id}"),
            Self::Service(client) => write!(f, "service:{client}"),
        }
    }
}

/// A client id: 1 to 64 characters of `[a-z0-9._-]`.
pub fn is_client_id(raw: &str) -> bool {
    (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// An authenticated caller: the subject of a verified token and its roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: Subject,
    pub roles: BTreeSet<Role>,
}

impl Principal {
    pub fn new(subject: Subject, roles: impl IntoIterator<Item = Role>) -> Self {
        Self {
            subject,
            roles: roles.into_iter().collect(),
        }
    }

    /// The token's `sub`: the actor of every event this principal causes, and the scope of
    /// its idempotency keys.
    pub fn sub(&self) -> String {
        self.subject.to_string()
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn has_any(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.has(*r))
    }

    /// The user this principal is, if it is one.
    pub fn user_id(&self) -> Option<Uuid> {
        match self.subject {
            Subject::User(id) => Some(id),
            Subject::Service(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_and_odd_ones_are_refused() {
        let id = Uuid::now_v7();
        for subject in [
            Subject::User(id),
            Subject::Service("process-manager".into()),
        ] {
            assert_eq!(Subject::parse(&subject.to_string()), Some(subject));
        }
        for raw in [
            "user:not-a-uuid",
            "service:",
            "service:UPPER",
            "service:a b",
            "admin",
            "",
            &format!("service:{}", "x".repeat(65)),
        ] {
            assert_eq!(Subject::parse(raw), None, "{raw}");
        }
    }

    #[test]
    fn roles_parse_by_their_names_only() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Role::parse("Admin"), None);
    }
}
