//! Where each projection is in each topic partition (`projection_offsets`).
//!
//! An offset only moves forward: a batch applied again after a rewind (a consumer that seeks to
//! an older position, a second instance that lags) records its offsets without lowering one
//! that a later batch already stored, so a restart never re-reads from further back than
//! necessary, and `next_offset` is a high-water mark monitoring can trust.

use sqlx::PgExecutor;

/// Records that `projection` has applied everything in `topic`/`partition` below
/// `next_offset`; keeps the stored offset when it is already further.
pub async fn save_offset<'e>(
    executor: impl PgExecutor<'e>,
    projection: &str,
    topic: &str,
    partition: i32,
    next_offset: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_offsets (projection, topic, partition, next_offset)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (projection, topic, partition) DO UPDATE
             SET next_offset = GREATEST(projection_offsets.next_offset, EXCLUDED.next_offset)",
    )
    .bind(projection)
    .bind(topic)
    .bind(partition)
    .bind(next_offset)
    .execute(executor)
    .await?;
    Ok(())
}
