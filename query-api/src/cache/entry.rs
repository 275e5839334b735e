//! What the cache holds and answers: the key of a cached resource, its representation as
//! served, and why a read found none.

use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    User(Uuid),
    Order(Uuid),
    Payment(Uuid),
}

impl Key {
    /// Parses a notification payload, `<kind>:<uuid>`.
    pub fn parse(payload: &str) -> Option<Self> {
        let (kind, id) = payload.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        match kind {
            "user" => Some(Self::User(id)),
            "order" => Some(Self::Order(id)),
            "payment" => Some(Self::Payment(id)),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::Order(_) => "order",
            Self::Payment(_) => "payment",
        }
    }
}

/// A resource as served: its version, its entity tag, its JSON body, and the customer who owns
/// it. The cache is shared by every principal, so whoever reads an entry decides afterwards,
/// from `owner`, whether its principal may see it (`crate::policy`).
#[derive(Debug, Clone)]
pub struct Representation {
    pub version: i64,
    /// For an order, the money captured and refunded so far: they change its body at the same
    /// version, and only grow (see [`Representation::rank`]). `(0, 0)` for anything else.
    pub money: (i64, i64),
    /// Quoted, as sent in `ETag`.
    pub etag: String,
    pub body: Bytes,
    /// A user: itself; an order: its customer; a payment: its order's customer. `None` while
    /// not known (a payment whose order is not projected yet); such a representation is
    /// never stored, as nothing would invalidate it when its order arrives.
    pub owner: Option<Uuid>,
}

impl Representation {
    /// An order's representation with the money moved on it (see `money`).
    pub fn with_money(mut self, paid: i64, refunded: i64) -> Self {
        self.money = (paid, refunded);
        self
    }

    /// Orders the representations of one resource, newest largest: its version, then the
    /// money moved. The cache never replaces an entry by one of lower rank.
    pub fn rank(&self) -> (i64, i64, i64) {
        (self.version, self.money.0, self.money.1)
    }
}

/// Why a read produced no representation.
#[derive(Debug)]
pub enum Miss<E> {
    NotFound,
    /// `min_version` was not reached within the wait; `current` is what the read model has.
    Behind {
        current: Option<i64>,
        waited: Duration,
    },
    /// No aggregate with this id exists in the event store: there is nothing to wait for.
    NoSuchAggregate,
    /// Too many reads are waiting for `min_version` already.
    Overloaded,
    Failed(E),
}
