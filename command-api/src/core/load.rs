//! An aggregate loaded for a command: its snapshot and the events after it, read in one
//! statement ([`EventStore::load_stream`]), upcast and applied. It gives what cqrs-es's
//! `PersistedEventStore::load_aggregate` gives over postgres-es (the e2e test
//! `event_store::one_statement_loads_equal_cqrs_es_loads` holds them equal), with one round
//! trip instead of two.

use cqrs_es::persist::{EventStoreAggregateContext, SerializedEvent};
use cqrs_es::Aggregate;
use domain::DomainError;
use infra::event_store::EventStore;

use super::error::database_error;
use super::{CommandError, Target};

/// The aggregate `aggregate_id` of type `A` with the sequence of its last event (0: no events).
pub(super) async fn context<A: Target>(
    events: &EventStore,
    aggregate_id: String,
) -> Result<EventStoreAggregateContext<A>, CommandError>
where
    A::Error: DomainError,
{
    let stream = events
        .load_stream(A::TYPE, &aggregate_id)
        .await
        .map_err(database_error)?;
    let mut context = EventStoreAggregateContext {
        aggregate_id,
        aggregate: A::default(),
        current_sequence: 0,
        current_snapshot: None,
    };
    let to_apply = match stream.snapshot {
        None => stream.events,
        Some(snapshot) => match serde_json::from_value::<A>(snapshot.payload) {
            Ok(aggregate) => {
                context.aggregate = aggregate;
                context.current_sequence = sequence(snapshot.last_sequence)?;
                context.current_snapshot = Some(sequence(snapshot.current_snapshot)?);
                stream.events
            }
            // The aggregate's shape changed since the snapshot was written: rebuild from every
            // event, as cqrs-es does; the next snapshot due replaces the stale one.
            Err(_) => events
                .load_events(A::TYPE, &context.aggregate_id)
                .await
                .map_err(database_error)?,
        },
    };
    for event in to_apply {
        context.current_sequence = event.sequence;
        context.aggregate.apply(decode::<A>(event)?);
    }
    Ok(context)
}

/// A stored event upcast to its current version and deserialized.
fn decode<A: Aggregate>(event: SerializedEvent) -> Result<A::Event, CommandError> {
    let (_, payload) =
        domain::upcast::upcast(&event.event_type, &event.event_version, event.payload);
    serde_json::from_value(payload).map_err(|e| CommandError::Internal(Box::new(e)))
}

fn sequence(stored: i64) -> Result<usize, CommandError> {
    usize::try_from(stored).map_err(|e| CommandError::Internal(Box::new(e)))
}
