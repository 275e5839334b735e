//! Leases: what a replay, rollback, as-of build or verify holds while it works, so that what
//! it leaves behind when its process dies is found and cleared (see the migration
//! `20261202000002_projector_leases`).
//!
//! A lease is a session advisory lock, named by a random id, on a connection of its own:
//! PostgreSQL releases it when that connection ends, however the process ended. Every schema
//! the work creates is recorded under its lease before it is created
//! ([`Lease::record_schema`]), and its `replay_runs` row carries the lease. [`sweep`] drops
//! the schemas of leases no longer held and marks their runs `abandoned`.
//!
//! A lease can also be lost while its process lives (the database restarted, the connection
//! was cut): a task checks the connection every [`KEEP_EVERY`] and takes the lease again on a
//! new one, but a sweep in between may drop its schemas while it works. So work that keeps a
//! schema (a replay's swap, an as-of set's registration) first claims the schema's record, in the
//! transaction that keeps it ([`claim_schema`]); a sweep deletes the record in the
//! transaction that drops the schema. The record's row lock lets exactly one of them win, and
//! the loser fails or skips instead of keeping a dropped schema or dropping a kept one.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How long a sweep waits for a lock on what it drops (a killed process's server session may
/// still hold one for a moment) before it leaves that schema to the next sweep.
const SWEEP_LOCK_TIMEOUT: &str = "5s";

/// How often the lease's connection is checked (and kept from looking idle to anything that
/// cuts idle connections).
const KEEP_EVERY: Duration = Duration::from_secs(2);

/// How long a check of the lease's connection, or taking the lease again, may take: a
/// connection cut without a word (a partition) would otherwise keep a query waiting for as
/// long as TCP takes to give up. Also how long [`Lease::release`] waits for the keeper.
const KEEP_TIMEOUT: Duration = Duration::from_secs(5);

/// A lease held for as long as this value lives: a task keeps it, and takes it again on a new
/// connection if its connection is lost (see the module documentation for what happens to
/// work swept meanwhile). Dropping the value ends it, as [`Lease::release`] does.
pub struct Lease {
    id: String,
    stop: Option<oneshot::Sender<()>>,
    keeper: Option<JoinHandle<()>>,
}

impl Lease {
    /// Takes a new lease, on a connection of its own rather than one of `pool`'s (a replay
    /// may run on a pool of one connection, and must not lose it to the lease).
    pub async fn take(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let options = pool.connect_options().as_ref().clone();
        // Taken before anything is recorded under it: a sweep never sees a record of a lease
        // that is not held yet. Never waited for: a key already held (another lock's, by a
        // 64-bit hash collision) is passed over for a new one.
        let (id, connection) = loop {
            let id = uuid::Uuid::new_v4().simple().to_string();
            if let Some(connection) = lock(&options, &id).await? {
                break (id, connection);
            }
        };
        let (stop, stopped) = oneshot::channel();
        let keeper = tokio::spawn(keep(id.clone(), options, connection, stopped));
        Ok(Self {
            id,
            stop: Some(stop),
            keeper: Some(keeper),
        })
    }

    /// The lease's id, as `replay_runs.lease` and `projector_work_schemas.lease` hold it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records `schema` as this lease's, on `conn`; call it before creating the schema, so
    /// that no schema exists unrecorded.
    pub async fn record_schema(
        &self,
        conn: &mut PgConnection,
        schema: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO projector_work_schemas (schema_name, lease) VALUES ($1, $2)")
            .bind(schema)
            .bind(&self.id)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Ends the lease: forgets its schemas that are gone or were kept, and releases it. A
    /// failure is logged, not returned: the work is over either way, the lock goes with the
    /// connection, and the next sweep clears any record left.
    pub async fn release(mut self) {
        self.stop.take();
        if let Some(mut keeper) = self.keeper.take() {
            // Bounded: a keeper stuck on a dead connection is ended, which closes it (the
            // records it could not forget are the next sweep's).
            match tokio::time::timeout(KEEP_TIMEOUT, &mut keeper).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.id, error = %error, "the lease's keeper failed")
                }
                Err(_) => {
                    keeper.abort();
                    tracing::warn!(lease = %self.id, "the lease's keeper did not end in time");
                }
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The keeper sees its channel closed, forgets what it can and closes its connection.
        self.stop.take();
    }
}

/// The lease `id` on a new connection, or `None` if another session holds its key.
async fn lock(options: &PgConnectOptions, id: &str) -> Result<Option<PgConnection>, sqlx::Error> {
    let mut connection = PgConnection::connect_with(options).await?;
    infra::db::notice_a_dead_peer(&mut connection).await?;
    let taken: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_lock(hashtextextended('projector-lease:' || $1, 0))",
    )
    .bind(id)
    .fetch_one(&mut connection)
    .await?;
    Ok(taken.then_some(connection))
}

/// Keeps the lease `id` until `stop` fires or is dropped: checks its connection every
/// [`KEEP_EVERY`] (each check bounded by [`KEEP_TIMEOUT`]), and when it is lost takes the
/// lease again on a new one (its key is free once the old session is gone; until then that
/// session still holds it for us). Then forgets the lease's settled records and closes the
/// connection.
async fn keep(
    id: String,
    options: PgConnectOptions,
    connection: PgConnection,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connection = Some(connection);
    let mut tick = tokio::time::interval(KEEP_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        if let Some(conn) = connection.as_mut() {
            match tokio::time::timeout(KEEP_TIMEOUT, sqlx::query("SELECT 1").execute(conn)).await {
                Ok(Ok(_)) => continue,
                // A check cancelled (or timed out by a statement timeout) on a connection
                // that lives: the lock is still held.
                Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("57014") => {
                    continue
                }
                Ok(Err(error)) => tracing::warn!(lease = %id, error = %error,
                    "the lease's connection was lost; taking the lease again"),
                Err(_) => tracing::warn!(lease = %id,
                    "the lease's connection did not answer in time; taking the lease again"),
            }
            // Dropped, so that its session, if the server still has it, can end and free the
            // key for the new one.
            connection = None;
        }
        match tokio::time::timeout(KEEP_TIMEOUT, lock(&options, &id)).await {
            Ok(Ok(Some(again))) => {
                tracing::warn!(lease = %id, "the lease is held again, on a new connection");
                connection = Some(again);
            }
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                tracing::warn!(lease = %id, error = %error, "could not take the lease again yet")
            }
            Err(_) => tracing::warn!(lease = %id, "could not take the lease again yet: no answer"),
        }
    }
    let Some(mut conn) = connection else { return };
    let forgotten = sqlx::query(&format!(
        "DELETE FROM projector_work_schemas w WHERE w.lease = $1 AND {SETTLED}"
    ))
    .bind(&id)
    .execute(&mut conn)
    .await;
    if let Err(error) = forgotten {
        tracing::warn!(lease = %id, error = %error, "could not forget the lease's schemas");
    }
    if let Err(error) = conn.close().await {
        tracing::warn!(lease = %id, error = %error, "could not close the lease's connection");
    }
}

/// A recorded schema `w` that needs no dropping: it is gone, or it became an as-of set.
pub(crate) const SETTLED: &str = "(to_regnamespace(w.schema_name) IS NULL
     OR w.schema_name IN (SELECT schema_name FROM as_of_sets))";

/// Claims the record of `schema` in `tx`, the transaction that keeps the schema (a replay's
/// swap, an as-of set's registration): `false` if a sweep took it (the lease was lost and the
/// schema dropped or about to be), and then the transaction must not commit. A sweep that
/// comes later finds no record and leaves the schema alone.
pub async fn claim_schema(tx: &mut PgConnection, schema: &str) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query("DELETE FROM projector_work_schemas WHERE schema_name = $1")
        .bind(schema)
        .execute(tx)
        .await?;
    Ok(claimed.rows_affected() == 1)
}

/// What a [`sweep`] cleared, and what it could not.
#[derive(Debug, Default)]
pub struct Swept {
    /// The abandoned schemas dropped.
    pub schemas: Vec<String>,
    /// The ids of the runs marked abandoned.
    pub runs: Vec<i64>,
    /// Abandoned schemas left for the next sweep, with why (a lock not granted in time, a
    /// schema the projector may not drop).
    pub left: Vec<(String, String)>,
}

/// Clears what work whose lease is no longer held left behind: drops its schemas (unless they
/// became an as-of set) and marks its running runs `abandoned`. Each schema is dropped in a
/// transaction of its own, waiting at most [`SWEEP_LOCK_TIMEOUT`] for its locks; one that
/// cannot be dropped is left, recorded, for the next sweep, and the sweep goes on.
pub async fn sweep(pool: &PgPool) -> Result<Swept, sqlx::Error> {
    let mut swept = Swept::default();
    let abandoned: Vec<String> = sqlx::query_scalar(
        "SELECT schema_name FROM projector_work_schemas
         WHERE NOT projector_lease_held(lease) ORDER BY schema_name",
    )
    .fetch_all(pool)
    .await?;
    for schema in abandoned {
        match drop_abandoned(pool, &schema).await {
            Ok(true) => swept.schemas.push(schema),
            Ok(false) => {}
            Err(error) => swept.left.push((schema, crate::error_chain(&error))),
        }
    }
    // A run that ends writes its state before its lease goes: one still `running` whose lease
    // is gone was never finished (or lost its lease: its end then writes its state again).
    swept.runs = sqlx::query_scalar(
        "UPDATE replay_runs SET state = 'abandoned', updated_at = now(), finished_at = now(),
             error = 'the process running it ended before the run finished'
         WHERE state = 'running' AND NOT replay_run_alive(lease)
         RETURNING id",
    )
    .fetch_all(pool)
    .await?;
    if !swept.schemas.is_empty() || !swept.runs.is_empty() {
        tracing::warn!(
            schemas = ?swept.schemas,
            runs = ?swept.runs,
            "cleared what replays, rollbacks, as-of builds or verifies that ended without finishing left"
        );
    }
    for (schema, error) in &swept.left {
        tracing::warn!(%schema, %error, "could not drop an abandoned schema; the next sweep tries again");
    }
    Ok(swept)
}

/// Drops `schema` if its record is still there under a lease no longer held, and is not
/// settled (see [`SETTLED`]); the record goes in the same transaction. `true` if dropped.
async fn drop_abandoned(pool: &PgPool, schema: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{SWEEP_LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    // The record's row lock orders this against a claim (see [`claim_schema`]): if the
    // claim committed first, no row is deleted here.
    let settled: Option<bool> = sqlx::query_scalar(&format!(
        "DELETE FROM projector_work_schemas w
         WHERE w.schema_name = $1 AND NOT projector_lease_held(w.lease)
         RETURNING {SETTLED}"
    ))
    .bind(schema)
    .fetch_optional(&mut *tx)
    .await?;
    let dropped = settled == Some(false);
    if dropped {
        // Quoted: the name is read back from a table, not made here.
        let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {quoted} CASCADE"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(dropped)
}
