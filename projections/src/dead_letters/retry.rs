//! `projector dead-letters retry <id>...` and the admin console's retry button: apply a
//! dead-lettered event again, once its cause (a transient failure, a fixed bug) is gone.
//!
//! The event is read from the event store by its id and turned into exactly the envelope a
//! consumer would have built ([`crate::stored::envelope`], as verify and replay do). It is
//! applied by the read model's own `apply` in one transaction that holds the projection's
//! advisory lock (the one the runner takes per batch and replay's swap takes), so it never
//! interleaves with a batch or a swap. On success the dead letter goes and the aggregate's
//! applied version is at least the event's sequence; on failure the dead letter stays with
//! the new error.
//!
//! Order matters to most read models: a row holds an aggregate's latest state, and folding an
//! old event over a newer state would move it back. So an event is retried only when the
//! projection has applied nothing of its aggregate past it, unless the read model's effect of
//! that event does not depend on order ([`order_insensitive`]). An event the projection has
//! not reached is refused too when applying it would jump over events not applied yet.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::projection::ReadModel;

/// A dead letter applied and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retried {
    pub id: i64,
    pub projection: String,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
}

/// Why a dead letter was not applied.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("no dead letter {id}")]
    Missing { id: i64 },
    #[error(
        "dead letter {id} is the process manager's: its decisions depend on what it saw \
             before and after, so one event is not retried on its own; discard it and act by hand"
    )]
    NotRetryable { id: i64 },
    #[error("dead letter {id} belongs to {projection:?}, which is no read model")]
    UnknownProjection { id: i64, projection: String },
    #[error(
        "dead letter {id} names no event of the event store (an undecodable message); \
             discard it once dealt with"
    )]
    NoEvent { id: i64 },
    #[error(
        "dead letter {id}: {projection} has applied {aggregate} up to sequence {applied}, \
             past this event's {sequence}; applying it now could move that state back, so \
             replay the projection instead (`projector replay {projection}`)"
    )]
    OutOfOrder {
        id: i64,
        projection: String,
        aggregate: String,
        applied: i64,
        sequence: i64,
    },
    #[error(
        "dead letter {id}: {projection} has applied {aggregate} only up to sequence \
             {applied}; applying sequence {sequence} now would skip the events between, which \
             the projection applies itself when it gets there"
    )]
    NotReached {
        id: i64,
        projection: String,
        aggregate: String,
        applied: i64,
        sequence: i64,
    },
    #[error("dead letter {id} failed again and stays: {error}")]
    Failed { id: i64, error: String },
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl RetryError {
    /// The outcome label of `projection_dead_letter_retries_total`.
    fn outcome(&self) -> &'static str {
        match self {
            Self::Failed { .. } => "failed",
            Self::Database(_) => "error",
            _ => "refused",
        }
    }
}

/// Whether the effect of `event_type` on `projection`'s tables is the same whatever events of
/// its aggregate were applied before or after it: `audit` keeps one row per event,
/// `analytics` adds captured and refunded amounts to daily totals, and `customer_value` adds
/// them to their order's row and takes an order's customer from its one `OrderPlaced` (no
/// other event of an order changes its row).
pub fn order_insensitive(projection: &str, aggregate_type: &str, event_type: &str) -> bool {
    match (projection, aggregate_type) {
        ("audit", _) | ("customer_value", _) => true,
        ("analytics", "payment") => matches!(event_type, "PaymentCaptured" | "PaymentRefunded"),
        _ => false,
    }
}

/// What the ordering rule looks at of an event.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub aggregate_type: &'a str,
    pub event_type: &'a str,
    pub sequence: i64,
}

/// Where an event stands against what the projection applied of its aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// It may be applied now.
    Fine,
    /// A later event of the aggregate is applied already (and order matters).
    Later { applied: i64 },
    /// Events before it are not applied yet.
    Ahead { applied: i64 },
}

/// The ordering rule (see the module documentation) for `event` of `projection`; `applied`
/// is the aggregate's applied version (`None`: nothing applied yet).
pub fn order(projection: &str, event: &Event<'_>, applied: Option<i64>) -> Order {
    let applied_to = applied.unwrap_or(0);
    if applied_to < event.sequence - 1 {
        return Order::Ahead {
            applied: applied_to,
        };
    }
    let insensitive = order_insensitive(projection, event.aggregate_type, event.event_type);
    if applied_to > event.sequence && !insensitive {
        return Order::Later {
            applied: applied_to,
        };
    }
    Order::Fine
}

/// Applies dead letter `id` again (see the module documentation).
pub async fn retry(pool: &PgPool, id: i64) -> Result<Retried, RetryError> {
    let result = attempt(pool, id).await;
    let (outcome, projection) = match &result {
        Ok(retried) => ("applied", retried.projection.clone()),
        Err(error) => (error.outcome(), String::new()),
    };
    metrics::counter!("projection_dead_letter_retries_total", "outcome" => outcome).increment(1);
    if !projection.is_empty() {
        tracing::info!(dead_letter = id, %projection, "dead letter applied and removed");
    }
    result
}

async fn attempt(pool: &PgPool, id: i64) -> Result<Retried, RetryError> {
    let letter: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT projection, event_id FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let (projection, event_id) = letter.ok_or(RetryError::Missing { id })?;
    let model = retryable(id, &projection)?;
    let event_id = event_id
        .and_then(|raw| Uuid::parse_str(&raw).ok())
        .ok_or(RetryError::NoEvent { id })?;
    let row = sqlx::query(&format!(
        "SELECT {} FROM events e WHERE e.event_id = $1",
        crate::stored::COLUMNS
    ))
    .bind(event_id)
    .fetch_optional(pool)
    .await?
    .ok_or(RetryError::NoEvent { id })?;
    let event = match crate::stored::envelope(&row) {
        Ok(event) => event,
        Err(error) => {
            sqlx::query("UPDATE dead_letters SET error = $2 WHERE id = $1")
                .bind(id)
                .bind(&error)
                .execute(pool)
                .await?;
            return Err(RetryError::Failed { id, error });
        }
    };
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('projection:' || $1))")
        .bind(model.name())
        .execute(&mut *tx)
        .await?;
    apply_locked(&mut tx, model, id, &event).await?;
    tx.commit().await?;
    Ok(Retried {
        id,
        projection,
        event_id,
        aggregate_type: event.aggregate_type,
        aggregate_id: event.aggregate_id,
        sequence: event.sequence,
    })
}

/// The read model a dead letter of `projection` is retried with.
fn retryable(id: i64, projection: &str) -> Result<&'static dyn ReadModel, RetryError> {
    if let Some(model) = crate::read_model(projection) {
        return Ok(model);
    }
    if crate::projections(true)
        .iter()
        .any(|p| p.name() == projection)
    {
        return Err(RetryError::NotRetryable { id });
    }
    Err(RetryError::UnknownProjection {
        id,
        projection: projection.to_owned(),
    })
}

/// Under the projection's lock: checks the dead letter is still there and the order, applies
/// the event, and removes the dead letter (or records the new error). `Err(Failed)` comes
/// after the error was written, so the caller still commits.
async fn apply_locked(
    conn: &mut PgConnection,
    model: &'static dyn ReadModel,
    id: i64,
    event: &Envelope,
) -> Result<(), RetryError> {
    let there: Option<i64> =
        sqlx::query_scalar("SELECT id FROM dead_letters WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    there.ok_or(RetryError::Missing { id })?;
    let projection = model.name();
    let applied: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM projection_versions
         WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3",
    )
    .bind(projection)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .fetch_optional(&mut *conn)
    .await?;
    let aggregate = format!("{} {}", event.aggregate_type, event.aggregate_id);
    let sequence = event.sequence;
    let seen = Event {
        aggregate_type: &event.aggregate_type,
        event_type: &event.event_type,
        sequence,
    };
    match order(projection, &seen, applied) {
        Order::Fine => {}
        Order::Later { applied } => {
            return Err(RetryError::OutOfOrder {
                id,
                projection: projection.to_owned(),
                aggregate,
                applied,
                sequence,
            })
        }
        Order::Ahead { applied } => {
            return Err(RetryError::NotReached {
                id,
                projection: projection.to_owned(),
                aggregate,
                applied,
                sequence,
            })
        }
    }
    sqlx::query("SAVEPOINT retry_one")
        .execute(&mut *conn)
        .await?;
    if let Err(error) = model.apply(conn, event).await {
        let error = crate::error_chain(&error);
        sqlx::query("ROLLBACK TO SAVEPOINT retry_one")
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE dead_letters SET error = $2 WHERE id = $1")
            .bind(id)
            .bind(&error)
            .execute(&mut *conn)
            .await?;
        return Err(RetryError::Failed { id, error });
    }
    // Every dead letter of this event for this projection goes, not only this one: another
    // (from a copy of its message set aside before copies were told apart) retried later
    // would pass the ordering rule (the version is now this event's) and apply it again.
    // Where the projection keeps a replaced set, the letters go beside it as well, as a swap
    // keeps those it resolves: the event was applied to the live set only, and a rollback to
    // the replaced one, which lacks it too, brings them back (before, they were lost, and the
    // set rolled back to lacked the event with nothing to retry).
    // Not a letter the swap itself added: its event was refused by the live set alone, and
    // the set kept applied it (brought back, its letter would be retried and applied twice).
    let kept = kept_resolved(conn, projection).await?;
    let gone = "DELETE FROM dead_letters
         WHERE id = $1 OR (projection = $2 AND event_id = $3::text) RETURNING *";
    let columns = crate::replay::DEAD_LETTER_COLUMNS;
    let delete = match &kept {
        Some(schema) => format!(
            "WITH gone AS ({gone})
             INSERT INTO {schema}.dead_letters_resolved (id, {columns})
             SELECT id, {columns} FROM gone
             WHERE id NOT IN (SELECT id FROM {schema}.dead_letters_added)"
        ),
        None => gone.to_owned(),
    };
    sqlx::query(&delete)
        .bind(id)
        .bind(projection)
        .bind(event.event_id.to_string())
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO projection_versions (projection, aggregate_type, aggregate_id, version)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (projection, aggregate_type, aggregate_id)
           DO UPDATE SET version = greatest(projection_versions.version, EXCLUDED.version)",
    )
    .bind(projection)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(sequence)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The schema of `projection`'s replaced set, if it keeps the dead letters its swap resolved
/// (sets replaced before that was kept have none); its record is locked against a `prune`
/// until the transaction ends.
async fn kept_resolved(
    conn: &mut PgConnection,
    projection: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT schema_name FROM projection_previous_sets
         WHERE projection = $1
           AND to_regclass(schema_name || '.dead_letters_resolved') IS NOT NULL
           AND to_regclass(schema_name || '.dead_letters_added') IS NOT NULL
         FOR SHARE",
    )
    .bind(projection)
    .fetch_optional(&mut *conn)
    .await
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
