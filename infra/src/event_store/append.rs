//! Appending events with their side writes, atomically.
//!
//! Without an idempotency key, a credential or released claims, the append is one SQL statement
//! (claims and snapshot in CTEs), group-committed with other such appends (see `batch`).
//! Otherwise it is a transaction that first takes the idempotency key (blocking a concurrent
//! request with the same key until this one ends), then writes everything, then records the
//! command's outcome under the key, so a repeated request is answered from it.

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use tracing::Instrument;

use super::batch::CommitQueue;
use super::insert::insert;
use super::types::{
    classify, db, AppendError, AppendRequest, Appended, Idempotency, RecordedOutcome, Remembered,
};
use crate::db::Availability;

/// The write side of the event store.
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
    snapshot_every: usize,
    idempotency_ttl_hours: u32,
    queue: Option<CommitQueue>,
    availability: Option<Availability>,
}

const TAKE_KEY_SQL: &str = r#"
INSERT INTO idempotency_keys (scope, key, request_hash, completed, outcome, lasting)
VALUES ($1, $2, $3, false, 'null', $5)
ON CONFLICT (scope, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, completed = false, outcome = 'null',
        created_at = now(), lasting = EXCLUDED.lasting
    WHERE NOT idempotency_keys.lasting
      AND idempotency_keys.created_at < now() - make_interval(hours => $4)
RETURNING 1
"#;

impl EventStore {
    pub fn new(pool: PgPool, snapshot_every: usize, idempotency_ttl_hours: u32) -> Self {
        Self {
            pool,
            snapshot_every,
            idempotency_ttl_hours,
            queue: None,
            availability: None,
        }
    }

    /// An append still waiting for a connection gives up at once with
    /// [`AppendError::DatabaseDown`] when `availability` finds the database unreachable; one
    /// that holds a connection (and may have written) is always waited for. Call it before
    /// [`Self::with_group_commit`].
    pub fn failing_fast(mut self, availability: Availability) -> Self {
        self.availability = Some(availability);
        self
    }

    /// Routes appends that need no transaction through `workers` group-commit workers writing
    /// up to `max_batch` requests per statement. Must be called inside a Tokio runtime.
    pub fn with_group_commit(mut self, workers: usize, max_batch: usize) -> Self {
        if workers > 0 && max_batch > 1 {
            self.queue = Some(CommitQueue::start(
                self.pool.clone(),
                workers,
                max_batch,
                self.availability.clone(),
            ));
        }
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// True when moving from `from` to `to` crosses a snapshot boundary.
    pub fn snapshot_due(&self, from: i64, to: i64) -> bool {
        crosses_boundary(self.snapshot_every, from, to)
    }

    /// The outcome remembered under an idempotency key that is still live (within the TTL, or
    /// lasting).
    pub async fn remembered(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<Remembered>, sqlx::Error> {
        sqlx::query(
            "SELECT outcome, request_hash FROM idempotency_keys
             WHERE scope = $1 AND key = $2 AND completed
               AND (lasting OR created_at >= now() - make_interval(hours => $3))",
        )
        .bind(scope)
        .bind(key)
        .bind(self.idempotency_ttl_hours as i32)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| remembered(&row))
        .transpose()
    }

    /// The aggregate's current version (0 if it has no events).
    pub async fn current_version(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT COALESCE(MAX(sequence), 0)::bigint FROM events
             WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_one(&self.pool)
        .await
    }

    /// Appends the events and their side writes atomically; with an idempotency key, the
    /// command's outcome is recorded under it in the same transaction.
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        if request.events.is_empty() {
            return Err(AppendError::Empty);
        }
        let needs_transaction = request.idempotency.is_some()
            || request.credential.is_some()
            || request.claims.iter().any(|c| c.release);
        let aggregate = (request.aggregate_type.clone(), request.aggregate_id.clone());
        // A database client span (OpenTelemetry's database conventions); with group commit it
        // covers the wait for the shared statement.
        let span = tracing::info_span!(
            "append",
            otel.name = "INSERT events",
            otel.kind = "client",
            db.system.name = "postgresql",
            db.operation.name = "INSERT",
            db.collection.name = "events",
            aggregate.type = %request.aggregate_type,
            events = request.events.len(),
        );
        let result = async {
            if needs_transaction {
                self.append_in_transaction(&request).await
            } else if let Some(queue) = &self.queue {
                queue.submit(request).await
            } else {
                let acquired = unless_down(self.availability.as_ref(), self.pool.acquire());
                let mut conn = acquired
                    .await
                    .ok_or(AppendError::DatabaseDown)?
                    .map_err(db)?;
                insert(&mut *conn, &[&request])
                    .await
                    .map_err(|e| classify(e, &request))
                    .and_then(|mut v| v.pop().ok_or(AppendError::Empty))
            }
        }
        .instrument(span)
        .await;
        match result {
            // 0 means the writer did not learn the current version; look it up.
            Err(AppendError::VersionConflict { current_version: 0 }) => {
                let current_version = self
                    .current_version(&aggregate.0, &aggregate.1)
                    .await
                    .map_err(db)?;
                Err(AppendError::VersionConflict { current_version })
            }
            other => other,
        }
    }

    async fn append_in_transaction(
        &self,
        request: &AppendRequest,
    ) -> Result<Appended, AppendError> {
        // Nothing is sent before `begin` has a connection: given up before, nothing was written.
        let began = unless_down(self.availability.as_ref(), self.pool.begin());
        let mut tx = began.await.ok_or(AppendError::DatabaseDown)?.map_err(db)?;
        if let Some(idempotency) = &request.idempotency {
            if !self.take_key(&mut tx, idempotency).await? {
                tx.rollback().await.map_err(db)?;
                let stored = self
                    .remembered(&idempotency.scope, &idempotency.key)
                    .await
                    .map_err(db)?;
                // The key is held by a live row, so it has a stored response by now.
                return match stored {
                    Some(stored) => Err(AppendError::IdempotencyKeyUsed(stored)),
                    None => Err(AppendError::VersionConflict { current_version: 0 }),
                };
            }
        }
        for claim in request.claims.iter().filter(|c| c.release) {
            sqlx::query(
                "DELETE FROM unique_claims WHERE scope = $1 AND key = $2
                 AND aggregate_type = $3 AND aggregate_id = $4",
            )
            .bind(&claim.scope)
            .bind(&claim.key)
            .bind(&request.aggregate_type)
            .bind(&request.aggregate_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        let appended = insert(&mut *tx, &[request])
            .await
            .map_err(|e| classify(e, request))?
            .pop()
            .ok_or(AppendError::Empty)?;
        if let Some(credential) = &request.credential {
            sqlx::query("INSERT INTO credentials (user_id, password_hash) VALUES ($1, $2)")
                .bind(credential.user_id)
                .bind(&credential.password_hash)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        if let Some(idempotency) = &request.idempotency {
            let outcome = serde_json::to_value(request.outcome(&appended))
                .map_err(|e| db(sqlx::Error::Encode(Box::new(e))))?;
            sqlx::query(
                "UPDATE idempotency_keys SET completed = true, outcome = $3
                 WHERE scope = $1 AND key = $2",
            )
            .bind(&idempotency.scope)
            .bind(&idempotency.key)
            .bind(outcome)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(appended)
    }

    /// Takes the key for this transaction; false when a live row already holds it.
    async fn take_key(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        idempotency: &Idempotency,
    ) -> Result<bool, AppendError> {
        let taken = sqlx::query(TAKE_KEY_SQL)
            .bind(&idempotency.scope)
            .bind(&idempotency.key)
            .bind(&idempotency.request_hash)
            .bind(self.idempotency_ttl_hours as i32)
            .bind(idempotency.lasting)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?;
        Ok(taken.is_some())
    }

    /// Deletes idempotency records older than the TTL, except lasting ones; returns how many.
    pub async fn expire_idempotency_keys(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE NOT lasting AND created_at < now() - make_interval(hours => $1)",
        )
        .bind(self.idempotency_ttl_hours as i32)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

fn remembered(row: &PgRow) -> Result<Remembered, sqlx::Error> {
    let outcome: serde_json::Value = row.try_get("outcome")?;
    let outcome: RecordedOutcome =
        serde_json::from_value(outcome).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Remembered {
        outcome,
        request_hash: row.try_get("request_hash")?,
    })
}

/// True when some multiple of `every` lies in `(from, to]`; `every == 0` never.
fn crosses_boundary(every: usize, from: i64, to: i64) -> bool {
    let every = every as i64;
    every > 0 && to / every > from / every
}

/// `work` (which must send nothing to the database before it holds a connection), or `None`
/// when `availability` finds the database unreachable first.
pub(crate) async fn unless_down<T>(
    availability: Option<&Availability>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    match availability {
        None => Some(work.await),
        Some(availability) => tokio::select! {
            biased;
            done = work => Some(done),
            () = availability.went_down() => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_due_when_a_boundary_is_crossed() {
        assert!(!crosses_boundary(50, 0, 49));
        assert!(crosses_boundary(50, 49, 50));
        assert!(crosses_boundary(50, 48, 51));
        assert!(!crosses_boundary(50, 50, 99));
        assert!(!crosses_boundary(0, 0, 1000));
    }
}
