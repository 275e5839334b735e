//! Reading the events table in commit-safe order, so that no committed event is ever skipped.
//!
//! A `bigserial` is taken when a row is inserted, not when its transaction commits, so a
//! transaction can commit rows *below* positions that are already visible. Reading by position
//! alone would skip them. Instead every row carries the id of the transaction that wrote it, and
//! the relay only reads rows whose transaction is older than the oldest one still running
//! (`pg_snapshot_xmin`): those have all committed or rolled back, so nothing can appear below
//! them any more. Rows are read in `(tx_id, global_position)` order after the checkpoint.

use infra::event_store::HeaderMetadata;
use sqlx::{PgConnection, PgPool, Row};

/// Where the relay has got to: the last acknowledged event's transaction and position.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint {
    /// `xid8` as its decimal text (sqlx has no xid8 type; it round-trips through `::text`).
    pub tx_id: u64,
    pub global_position: i64,
}

/// One event to publish.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub checkpoint: Checkpoint,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    /// What the headers carry of the stored metadata (taken out by PostgreSQL).
    pub metadata: HeaderMetadata,
    pub event_id: uuid::Uuid,
}

/// Up to `$3` events, cut where their running size passes `$4` bytes (the event that passes
/// it is still included, so one event larger than the cap is read on its own). The size is
/// the stored (`jsonb`, possibly compressed) size of payload and metadata, which PostgreSQL
/// knows without rendering them as text.
const FETCH_SQL: &str = concat!(
    "SELECT e.tx_id::text AS tx_id, e.global_position, e.aggregate_type, e.aggregate_id,
            e.sequence, e.event_type, e.event_version, e.payload, e.event_id, ",
    infra::header_metadata_columns!(),
    "
     FROM (
         SELECT next.*,
                SUM(pg_column_size(next.payload) + pg_column_size(next.metadata))
                    OVER (ORDER BY next.tx_id, next.global_position) AS running,
                pg_column_size(next.payload) + pg_column_size(next.metadata) AS size
         FROM (
             SELECT * FROM events
             WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())
               AND (tx_id, global_position) > ($1::text::xid8, $2)
             ORDER BY tx_id, global_position
             LIMIT $3
         ) AS next
     ) AS e
     WHERE e.running - e.size < $4
     ORDER BY e.tx_id, e.global_position"
);

/// The next events after `after`: at most `limit` of them and about `max_bytes` of payload
/// and metadata, whichever is reached first.
pub async fn fetch(
    pool: &PgPool,
    after: &Checkpoint,
    limit: i64,
    max_bytes: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query(FETCH_SQL)
        .bind(after.tx_id.to_string())
        .bind(after.global_position)
        .bind(limit)
        .bind(max_bytes)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredEvent {
                checkpoint: checkpoint_of(row)?,
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: row.try_get("sequence")?,
                event_type: row.try_get("event_type")?,
                event_version: row.try_get("event_version")?,
                payload: row.try_get("payload")?,
                metadata: HeaderMetadata::from_row(row)?,
                event_id: row.try_get("event_id")?,
            })
        })
        .collect()
}

pub async fn load_checkpoint(pool: &PgPool, name: &str) -> Result<Checkpoint, sqlx::Error> {
    let row = sqlx::query(
        "SELECT tx_id::text AS tx_id, global_position FROM relay_checkpoints WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    match row {
        None => Ok(Checkpoint {
            tx_id: 0,
            global_position: 0,
        }),
        Some(row) => checkpoint_of(&row),
    }
}

/// The `(tx_id::text, global_position)` columns of a row.
fn checkpoint_of(row: &sqlx::postgres::PgRow) -> Result<Checkpoint, sqlx::Error> {
    let tx_id: String = row.try_get("tx_id")?;
    Ok(Checkpoint {
        tx_id: tx_id
            .parse()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        global_position: row.try_get("global_position")?,
    })
}

/// Moves the checkpoint forward (never back, whoever writes), on `conn`: the relay passes its
/// lock connection (see `Relay::settle`).
pub async fn save_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    at: &Checkpoint,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO relay_checkpoints (name, tx_id, global_position) VALUES ($1, $2::text::xid8, $3)
         ON CONFLICT (name) DO UPDATE
             SET tx_id = EXCLUDED.tx_id, global_position = EXCLUDED.global_position, updated_at = now()
             WHERE (relay_checkpoints.tx_id, relay_checkpoints.global_position)
                 < (EXCLUDED.tx_id, EXCLUDED.global_position)",
    )
    .bind(name)
    .bind(at.tx_id.to_string())
    .bind(at.global_position)
    .execute(conn)
    .await?;
    Ok(())
}

/// The first transaction id this cluster has not handed out yet. A checkpoint at or past it
/// was not taken on this cluster (the store was copied to another one, by a dump and restore
/// or logical replication, and transaction ids belong to a cluster): events appended now get
/// lower ids and would sort before it, never to be read.
pub async fn next_tx_id(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let next: String = sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
        .fetch_one(pool)
        .await?;
    next.parse()
        .map_err(|e: std::num::ParseIntError| sqlx::Error::Decode(Box::new(e)))
}

/// Pending events counted exactly up to this many; past it, estimated (see [`lag`]).
pub const LAG_COUNTED: i64 = 100_000;

/// Events committed but not yet published, and the age in seconds of the oldest of them.
/// Counted exactly up to [`LAG_COUNTED`] (counting stays cheap that far); past it, estimated by
/// the global positions given out since the checkpoint, which is at least the count (positions
/// of rolled-back transactions are skipped, never reused), so a backlog of a million reads as
/// about a million, not as the cap. A checkpoint this cluster cannot have taken
/// ([`next_tx_id`]) is measured by position alone: the events after its position are the
/// ones it keeps from being published.
pub async fn lag(pool: &PgPool, after: &Checkpoint) -> Result<(i64, f64), sqlx::Error> {
    if after.tx_id >= next_tx_id(pool).await? {
        let row = sqlx::query(
            "SELECT count(*) AS pending,
                    COALESCE(EXTRACT(EPOCH FROM now() - min(recorded_at)), 0)::float8 AS age
             FROM events WHERE global_position > $1",
        )
        .bind(after.global_position)
        .fetch_one(pool)
        .await?;
        return Ok((row.try_get("pending")?, row.try_get("age")?));
    }
    let row = sqlx::query(
        // Index walks that stay cheap under a prepared statement's generic plan: the count
        // needs no order (any 100,000 pending rows cap it the same), the newest position is
        // the last entry of its unique index, and the oldest pending event is the first in
        // the tailing index's order.
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM events
                     WHERE (tx_id, global_position) > ($1::text::xid8, $2)
                     LIMIT $3) AS pending) AS pending,
                COALESCE((SELECT max(global_position) FROM events), 0) - $2 AS positions,
                COALESCE((SELECT EXTRACT(EPOCH FROM now() - recorded_at) FROM events
                          WHERE (tx_id, global_position) > ($1::text::xid8, $2)
                          ORDER BY tx_id, global_position LIMIT 1), 0)::float8 AS age",
    )
    .bind(after.tx_id.to_string())
    .bind(after.global_position)
    .bind(LAG_COUNTED)
    .fetch_one(pool)
    .await?;
    let (pending, positions): (i64, i64) = (row.try_get("pending")?, row.try_get("positions")?);
    let pending = match pending < LAG_COUNTED {
        true => pending,
        false => positions.max(pending),
    };
    Ok((pending, row.try_get("age")?))
}
