//! `pm_outbox`: the commands the process manager decided on, written in the same transaction
//! as its state and the runner's offsets, and sent later by the dispatcher.
//!
//! A row is `pending` until an attempt settles it: `done` (2xx), `refused` (the aggregate
//! decided against it; logged), or `parked` (its retry budget is spent, or the command API
//! called it malformed). Parked rows stay visible with their attempts and last error until a
//! person resets them with [`retry_parked`] (`projector outbox retry`). Each statement here is its own short transaction,
//! and none is open while a command is on the wire.

use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use super::command::{Cause, Command, Kind};

/// The channel a new row is announced on (delivered when its transaction commits).
pub const CHANNEL: &str = "pm_outbox";

/// A claimed row: its id, attempts so far (this one included) and the command.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub attempts: i32,
    pub command: Command,
}

/// Adds `command` unless a row with its key exists (a redelivered decision adds nothing).
pub async fn insert(conn: &mut PgConnection, command: &Command) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO pm_outbox (idempotency_key, kind, target, path, body, correlation_id,
             causation_id, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(&command.idempotency_key)
    .bind(command.kind.as_str())
    .bind(command.target)
    .bind(&command.path)
    .bind(&command.body)
    .bind(&command.cause.correlation_id)
    .bind(command.cause.event_id)
    .bind(&command.cause.traceparent)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// Takes up to `limit` due rows and leases them for `lease` (pushes their next attempt past
/// it), committing before any is sent: another dispatcher skips them, and if this one dies
/// mid-send they come due again when the lease ends.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query(
        "WITH due AS (
             SELECT id FROM pm_outbox WHERE status = 'pending' AND next_attempt_at <= now()
             ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
         UPDATE pm_outbox o SET attempts = o.attempts + 1, updated_at = now(),
             next_attempt_at = now() + make_interval(secs => $2)
         FROM due WHERE o.id = due.id
         RETURNING o.id, o.attempts, o.kind, o.target, o.idempotency_key, o.path, o.body,
             o.correlation_id, o.causation_id, o.traceparent",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    let mut claimed: Vec<Claimed> = rows.iter().map(row).collect::<Result<_, _>>()?;
    claimed.sort_by_key(|c| c.id);
    Ok(claimed)
}

fn row(r: &PgRow) -> Result<Claimed, sqlx::Error> {
    let kind: String = r.try_get("kind")?;
    let kind = Kind::parse(&kind).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "kind".to_owned(),
        source: format!("unknown command kind {kind:?}").into(),
    })?;
    Ok(Claimed {
        id: r.try_get("id")?,
        attempts: r.try_get("attempts")?,
        command: Command {
            kind,
            target: r.try_get("target")?,
            idempotency_key: r.try_get("idempotency_key")?,
            path: r.try_get("path")?,
            body: r.try_get("body")?,
            cause: Cause {
                event_id: r.try_get("causation_id")?,
                correlation_id: r.try_get("correlation_id")?,
                traceparent: r.try_get("traceparent")?,
            },
        },
    })
}

/// Settles a row as `done`, `refused` or `parked`, with what was learnt, if it is still the
/// claim of `attempts` ([`Claimed::attempts`]): a dispatcher whose lease ran out while it sent
/// must not overwrite what the one that claimed the row next settled. False if it was not.
pub async fn finish(
    pool: &PgPool,
    id: i64,
    attempts: i32,
    status: &str,
    note: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE pm_outbox SET status = $2, last_error = $3, updated_at = now()
         WHERE id = $1 AND attempts = $4 AND status = 'pending'",
    )
    .bind(id)
    .bind(status)
    .bind(note)
    .bind(attempts)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Leaves a row pending, next tried after `delay`, if it is still the claim of `attempts`
/// (see [`finish`]).
pub async fn retry_later(
    pool: &PgPool,
    id: i64,
    attempts: i32,
    delay: Duration,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE pm_outbox SET last_error = $2, updated_at = now(),
             next_attempt_at = now() + make_interval(secs => $3)
         WHERE id = $1 AND attempts = $4 AND status = 'pending'",
    )
    .bind(id)
    .bind(error)
    .bind(delay.as_secs_f64())
    .bind(attempts)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// A refused refund replaced by `instead` (what the payment says is left), in one transaction,
/// if the row is still the claim of `attempts` (see [`finish`]).
pub async fn replace(
    pool: &PgPool,
    id: i64,
    attempts: i32,
    note: &str,
    instead: &Command,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE pm_outbox SET status = 'refused', last_error = $2, updated_at = now()
         WHERE id = $1 AND attempts = $3 AND status = 'pending'",
    )
    .bind(id)
    .bind(note)
    .bind(attempts)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    insert(&mut tx, instead).await?;
    tx.commit().await?;
    Ok(true)
}

/// Makes parked rows pending again with a fresh budget: the one with `id`, or all of them.
/// Returns how many.
pub async fn retry_parked(pool: &PgPool, id: Option<i64>) -> Result<u64, sqlx::Error> {
    let reset = sqlx::query(
        "UPDATE pm_outbox SET status = 'pending', attempts = 0, next_attempt_at = now(),
             updated_at = now()
         WHERE status = 'parked' AND ($1::bigint IS NULL OR id = $1)",
    )
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected();
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(pool)
        .await?;
    Ok(reset)
}

/// Parks the due rows claimed past their budget, `max_attempts` times and once more, without
/// their last attempt settling them (the dispatcher that took it failed or stopped while
/// sending it, each time); their ids and keys. An attempt that ends settles its row, and parks
/// it once the budget is spent; the one extra claim lets a last attempt cut short (a stop, a
/// settlement later than the lease) be sent again, under its key, before the row parks.
pub async fn park_unsettled(
    pool: &PgPool,
    max_attempts: i32,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE pm_outbox SET status = 'parked', updated_at = now(),
             last_error = concat_ws('; ', last_error, format(
                 'claimed %s times, past its budget, and its last attempt never ended: the \
                  dispatcher that took it failed or stopped while sending it (see its logs)',
                 attempts))
         WHERE status = 'pending' AND attempts > $1 AND next_attempt_at <= now()
         RETURNING id, idempotency_key",
    )
    .bind(max_attempts)
    .fetch_all(pool)
    .await
}

/// A parked command, as `projector outbox list` shows it.
#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct Parked {
    pub id: i64,
    pub kind: String,
    pub target: uuid::Uuid,
    pub path: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Display for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} (POST {}), decided {}, parked {} after {} attempts: {}",
            self.id,
            self.kind,
            self.target,
            self.path,
            self.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.updated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.attempts,
            self.last_error.as_deref().unwrap_or("no error kept")
        )
    }
}

/// The parked rows, oldest first, at most `limit`.
pub async fn list_parked(pool: &PgPool, limit: i64) -> Result<Vec<Parked>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, target, path, attempts, last_error, created_at, updated_at
         FROM pm_outbox WHERE status = 'parked' ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How many rows are parked now.
pub async fn parked(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM pm_outbox WHERE status = 'parked'")
        .fetch_one(pool)
        .await
}

/// How long the oldest pending row has waited since it was decided, in seconds (0 if none).
pub async fn oldest_pending_age(pool: &PgPool) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8
         FROM pm_outbox WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await
}

/// Deletes settled rows (`done`, `refused`) last touched more than `age` ago; parked and
/// pending rows are never deleted. Returns how many.
pub async fn purge_settled(pool: &PgPool, age: Duration) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM pm_outbox WHERE status IN ('done', 'refused')
             AND updated_at < now() - make_interval(secs => $1)",
    )
    .bind(age.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected())
}
