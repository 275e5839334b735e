//! Where each projection is in each topic partition (`projection_offsets`).
//!
//! An offset only moves forward within one log: a batch applied again after a rewind (a
//! consumer that seeks to an older position, a second instance that lags) records its offsets
//! without lowering one that a later batch already stored, so a restart never re-reads from
//! further back than necessary. The one move back is to the start of a log that replaced the
//! one the offsets counted in ([`reset_to_log_start`]).

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

/// Moves `projection`'s stored offset in `topic`/`partition` back to `low`, the start of the
/// partition's log, once that log is known not to be the one the offset counted in (it ends
/// below some projection's offset: the topic was recreated, or cut back by an unclean leader
/// election), so that messages of the new log are not skipped as applied. Done under the
/// projection's lock (the one every batch takes), so no batch commits in between. Reading the
/// log again from its start applies nothing twice: each aggregate's version skips what was
/// applied. The offset stored afterwards.
pub async fn reset_to_log_start(
    pool: &sqlx::PgPool,
    projection: &str,
    topic: &str,
    partition: i32,
    low: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('projection:' || $1))")
        .bind(projection)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE projection_offsets SET next_offset = $4
         WHERE projection = $1 AND topic = $2 AND partition = $3 AND next_offset > $4",
    )
    .bind(projection)
    .bind(topic)
    .bind(partition)
    .bind(low)
    .execute(&mut *tx)
    .await?;
    let stored = sqlx::query_scalar(
        "SELECT next_offset FROM projection_offsets
         WHERE projection = $1 AND topic = $2 AND partition = $3",
    )
    .bind(projection)
    .bind(topic)
    .bind(partition)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(stored)
}
