//! `projector dead-letters list | discard | retry`: the events projections set aside (policy
//! `skip`), for an operator to read, to apply again once the cause is gone ([`retry`]), or,
//! once dealt with, to discard. The projection has already gone on past each of them;
//! discarding only removes the record.

pub mod retry;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

pub use retry::{retry, Retried, RetryError};

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub projection: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub event_id: Option<String>,
    pub aggregate_id: Option<String>,
    pub error: String,
    pub created_at: DateTime<Utc>,
}

/// The newest `limit` dead letters, of `projection` only if it is named.
pub async fn list(
    pool: &PgPool,
    projection: Option<&str>,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, projection, topic, partition, \"offset\", event_id, aggregate_id, error, created_at
         FROM dead_letters
         WHERE $1::text IS NULL OR projection = $1
         ORDER BY id DESC
         LIMIT $2",
    )
    .bind(projection)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Removes the dead letters `ids`; returns the ids that were there (the others were not).
pub async fn discard(pool: &PgPool, ids: &[i64]) -> Result<Vec<i64>, sqlx::Error> {
    let mut removed: Vec<i64> =
        sqlx::query_scalar("DELETE FROM dead_letters WHERE id = ANY($1) RETURNING id")
            .bind(ids)
            .fetch_all(pool)
            .await?;
    removed.sort_unstable();
    Ok(removed)
}

impl fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}/{}@{} event {} aggregate {}: {}",
            self.id,
            self.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
            self.projection,
            self.topic,
            self.partition,
            self.offset,
            self.event_id.as_deref().unwrap_or("?"),
            self.aggregate_id.as_deref().unwrap_or("?"),
            self.error
        )
    }
}
