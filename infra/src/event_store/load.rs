//! An aggregate's stream read in one statement: its snapshot, if it has one, and the events
//! after it. cqrs-es's own load asks for the snapshot and then for the events, two round trips
//! and two statements per command; at the write path's rates PostgreSQL's cost is per
//! statement far more than per row (docs/performance.md, "Where PostgreSQL's time goes").

use cqrs_es::persist::SerializedEvent;
use serde_json::Value;
use sqlx::postgres::PgRow;

use super::EventStore;
use crate::db::column_at;

/// An aggregate's snapshot as stored.
#[derive(Debug)]
pub struct StoredSnapshot {
    /// The sequence of the last event the snapshot includes.
    pub last_sequence: i64,
    /// How many snapshots the aggregate has had.
    pub current_snapshot: i64,
    /// The aggregate's state, serialized.
    pub payload: Value,
}

/// What [`EventStore::load_stream`] read.
#[derive(Debug)]
pub struct LoadedStream {
    pub snapshot: Option<StoredSnapshot>,
    /// The events after the snapshot (every event without one), in sequence order.
    pub events: Vec<SerializedEvent>,
}

/// The snapshot row first (`is_snapshot` true: `sequence` is its last sequence), then the
/// events after it. One statement sees one database state, so the two halves agree.
const LOAD_STREAM: &str = "
SELECT true AS is_snapshot, last_sequence AS sequence, current_snapshot,
       NULL::text AS event_type, NULL::text AS event_version, payload, NULL::jsonb AS metadata
  FROM snapshots
 WHERE aggregate_type = $1 AND aggregate_id = $2
UNION ALL
SELECT false, sequence, NULL::bigint, event_type, event_version, payload, metadata
  FROM events
 WHERE aggregate_type = $1 AND aggregate_id = $2
   AND sequence > coalesce((SELECT last_sequence FROM snapshots
                             WHERE aggregate_type = $1 AND aggregate_id = $2), 0)
 ORDER BY is_snapshot DESC, sequence";

/// Every event of one aggregate (for a snapshot that no longer deserializes).
const LOAD_EVENTS: &str = "
SELECT false AS is_snapshot, sequence, NULL::bigint AS current_snapshot,
       event_type, event_version, payload, metadata
  FROM events
 WHERE aggregate_type = $1 AND aggregate_id = $2
 ORDER BY sequence";

impl EventStore {
    /// The aggregate's snapshot, if any, and its events after it, in one statement.
    pub async fn load_stream(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<LoadedStream, sqlx::Error> {
        let rows = sqlx::query(LOAD_STREAM)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_all(self.pool())
            .await?;
        let mut stream = LoadedStream {
            snapshot: None,
            events: Vec::with_capacity(rows.len()),
        };
        for row in &rows {
            if column_at::<bool>(row, 0, "is_snapshot")? {
                stream.snapshot = Some(StoredSnapshot {
                    last_sequence: column_at(row, 1, "sequence")?,
                    current_snapshot: column_at(row, 2, "current_snapshot")?,
                    payload: column_at(row, 5, "payload")?,
                });
            } else {
                stream
                    .events
                    .push(event(row, aggregate_type, aggregate_id)?);
            }
        }
        Ok(stream)
    }

    /// Every event of the aggregate, in sequence order, ignoring its snapshot.
    pub async fn load_events(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, sqlx::Error> {
        let rows = sqlx::query(LOAD_EVENTS)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| event(row, aggregate_type, aggregate_id))
            .collect()
    }
}

fn event(
    row: &PgRow,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<SerializedEvent, sqlx::Error> {
    let sequence: i64 = column_at(row, 1, "sequence")?;
    Ok(SerializedEvent {
        aggregate_id: aggregate_id.to_owned(),
        sequence: usize::try_from(sequence).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        aggregate_type: aggregate_type.to_owned(),
        event_type: column_at(row, 3, "event_type")?,
        event_version: column_at(row, 4, "event_version")?,
        payload: column_at(row, 5, "payload")?,
        metadata: column_at(row, 6, "metadata")?,
    })
}
