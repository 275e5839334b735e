//! The aggregates the command bus drives: where each one's event store is, and the unique
//! claims its events make.

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::Aggregate;
use domain::{DomainError, Order, Payment, UniqueClaim, User};
use infra::event_store::{EventStore, PgEventRepository};

use super::{policy, CommandBus, Store};

/// An aggregate the bus can drive.
pub trait Target: Aggregate<Services = ()> + policy::Governed + Send + Sync
where
    Self::Error: DomainError,
{
    fn store(bus: &CommandBus) -> &Store<Self>;
    fn claims(_event: &Self::Event) -> Vec<UniqueClaim> {
        Vec::new()
    }
}

impl Target for User {
    fn store(bus: &CommandBus) -> &Store<Self> {
        &bus.users
    }
    fn claims(event: &Self::Event) -> Vec<UniqueClaim> {
        event.unique_claims()
    }
}
impl Target for Order {
    fn store(bus: &CommandBus) -> &Store<Self> {
        &bus.orders
    }
}
impl Target for Payment {
    fn store(bus: &CommandBus) -> &Store<Self> {
        &bus.payments
    }
}

/// An aggregate's event store over `events`, with snapshots every `snapshot_every` events (none
/// at 0) and the domain's upcasters.
pub(super) fn store<A: Aggregate>(events: &EventStore, snapshot_every: usize) -> Store<A> {
    let repo = PgEventRepository::new(events.clone());
    let store = if snapshot_every > 0 {
        PersistedEventStore::new_snapshot_store(repo, snapshot_every)
    } else {
        PersistedEventStore::new_event_store(repo)
    };
    store.with_upcasters(domain::upcast::upcasters())
}
