//! [`PgEventRepository`]: cqrs-es's `PersistedEventRepository` over this schema. Reads are
//! delegated to postgres-es; writes go through [`EventStore::append`] so that every event gets
//! its id and metadata columns.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use uuid::Uuid;

use super::{AppendError, AppendRequest, EventStore, NewEvent};

pub struct PgEventRepository {
    reader: PostgresEventRepository,
    store: EventStore,
}

impl PgEventRepository {
    pub fn new(store: EventStore) -> Self {
        Self {
            reader: PostgresEventRepository::new(store.pool().clone()),
            store,
        }
    }
}

impl PersistedEventRepository for PgEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reader.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reader
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.reader.get_snapshot::<A>(aggregate_id).await
    }

    /// Used when cqrs-es's own `PersistedEventStore::commit` writes (tools and tests); the
    /// command API calls [`EventStore::append`] directly to add claims and idempotency.
    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let request = AppendRequest {
            aggregate_type: A::TYPE.to_owned(),
            aggregate_id: first.aggregate_id.clone(),
            expected_sequence: first.sequence as i64 - 1,
            events: events
                .iter()
                .map(|e| NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: e.event_type.clone(),
                    event_version: e.event_version.clone(),
                    payload: e.payload.clone(),
                    metadata: e.metadata.clone(),
                })
                .collect(),
            snapshot: snapshot_update.map(|(_, state, _)| state),
            claims: Vec::new(),
            idempotency: None,
            credential: None,
        };
        match self.store.append(request).await {
            Ok(_) => Ok(()),
            Err(AppendError::VersionConflict { .. }) => Err(PersistenceError::OptimisticLockError),
            Err(other) => Err(PersistenceError::UnknownError(Box::new(other))),
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.reader.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reader.stream_all_events::<A>().await
    }
}
