//! `projector verify <projection>`: proves a live read model equals a rebuild from the log
//! (replay is deterministic), or shows where it does not.
//!
//! 1. In one snapshot (`REPEATABLE READ`), copy the projection's live tables and its applied
//!    versions (`projection_versions`) into a scratch schema. Rows and versions commit together
//!    (ADR 0004), so the copy is a consistent point of the live model.
//! 2. Rebuild the projection from the PostgreSQL events table into empty tables of the same
//!    shape in the scratch schema: every event up to the version the live model had applied
//!    for its aggregate, in log order, each turned into exactly what a consumer sees (upcast,
//!    Avro round trip, the relay's headers) and folded in memory by the model's
//!    [`Fold`](crate::bulk::Fold),
//!    written with `COPY`. The live tables were built by the model's `apply`, event by event:
//!    verify checks the two against each other as well as the live rows against the log.
//! 3. Compare each table's row count and checksum (MD5 over the rows' text, sorted), and list
//!    rows found on one side only. The scratch schema is dropped at the end.
//!
//! The rebuild stops at what the live model applied, so it cannot show an event the live model
//! never got (a message lost to a topic cut short, an aggregate never consumed). So verify
//! also counts those, after step 1 and in its snapshot: events of the model's aggregates,
//! recorded at least `grace` before the copy, beyond the versions the live model applied (dead-lettered events count as applied;
//! one dead-lettered without its version, a message that could not be decoded, counts again
//! once its dead letter is discarded)
//! and not parked by the relay as unencodable (`relay_parked_events`, which no consumer gets).
//! A projector further behind than `grace` is counted the same way: the model lacks them.

use std::fmt;
use std::time::Duration;

use sqlx::{PgPool, Row};

use crate::lease::Lease;
use crate::projection::{ReadModel, Table};
use crate::rebuild::{self, Target};

/// How many differing rows are listed per table and side.
const SHOWN: i64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// One table, live against rebuilt.
#[derive(Debug, Clone)]
pub struct TableCheck {
    pub table: &'static str,
    pub live_rows: i64,
    pub rebuilt_rows: i64,
    pub live_checksum: String,
    pub rebuilt_checksum: String,
    /// Rows (as text) only in the live table, at most ten.
    pub only_live: Vec<String>,
    /// Rows (as text) only in the rebuilt table, at most ten.
    pub only_rebuilt: Vec<String>,
}

impl TableCheck {
    pub fn matches(&self) -> bool {
        self.live_rows == self.rebuilt_rows && self.live_checksum == self.rebuilt_checksum
    }
}

/// Events the live model has not applied, recorded at least `grace` before the check.
#[derive(Debug, Clone)]
pub struct Unapplied {
    pub grace: Duration,
    pub count: i64,
    /// The first of them in the log.
    pub oldest: Option<(i64, String)>,
}

#[derive(Debug, Clone)]
pub struct Verification {
    pub projection: &'static str,
    pub unapplied: Unapplied,
    /// Events the rebuild applied.
    pub events: u64,
    /// Events the rebuild could not apply (as the live projection would have dead-lettered
    /// them): event id and error.
    pub failed: Vec<(String, String)>,
    pub tables: Vec<TableCheck>,
}

impl Verification {
    pub fn matches(&self) -> bool {
        self.tables.iter().all(TableCheck::matches) && self.unapplied.count == 0
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "projection {}: rebuilt from {} events ({} could not be applied)",
            self.projection,
            self.events,
            self.failed.len()
        )?;
        for (event, error) in &self.failed {
            writeln!(f, "  not applied: event {event}: {error}")?;
        }
        if let Some((position, event)) = &self.unapplied.oldest {
            writeln!(
                f,
                "  MISSING: {} event{} recorded over {} s before the check never reached the \
                 live model, the first at global position {position} (event {event})",
                self.unapplied.count,
                if self.unapplied.count == 1 { "" } else { "s" },
                self.unapplied.grace.as_secs()
            )?;
        }
        for t in &self.tables {
            let verdict = if t.matches() { "equal" } else { "DIFFERENT" };
            writeln!(
                f,
                "  {:<18} {verdict:<9} live {} rows md5 {}  rebuilt {} rows md5 {}",
                t.table, t.live_rows, t.live_checksum, t.rebuilt_rows, t.rebuilt_checksum
            )?;
            for row in &t.only_live {
                writeln!(f, "    only live:    {row}")?;
            }
            for row in &t.only_rebuilt {
                writeln!(f, "    only rebuilt: {row}")?;
            }
        }
        Ok(())
    }
}

/// Verifies `model` (see the module documentation), counting as missing the events recorded
/// at least `grace` before the check that it has not applied. The scratch schema is recorded
/// under `lease` before it is created: if the process dies before dropping it, a sweep does
/// (see [`crate::lease`]).
pub async fn verify(
    pool: &PgPool,
    lease: &Lease,
    model: &'static dyn ReadModel,
    grace: Duration,
) -> Result<Verification, VerifyError> {
    let scratch = format!(
        "verify_{}_{}",
        model.name(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    lease
        .record_schema(&mut *pool.acquire().await?, &scratch)
        .await?;
    let result = run(pool, model, &scratch, grace).await;
    let dropped = sqlx::query(&format!("DROP SCHEMA IF EXISTS {scratch} CASCADE"))
        .execute(pool)
        .await;
    if let Err(error) = dropped {
        tracing::warn!(schema = %scratch, error = %error, "could not drop the scratch schema");
    }
    result
}

async fn run(
    pool: &PgPool,
    model: &'static dyn ReadModel,
    scratch: &str,
    grace: Duration,
) -> Result<Verification, VerifyError> {
    let tables = model.tables();
    // 1. A consistent copy of the live model and of what it has applied.
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {scratch}"))
        .execute(&mut *tx)
        .await?;
    for table in tables {
        // No indexes: the rebuild is only compared, never looked up.
        sqlx::query(&table.create_unindexed_sql(scratch))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&table.copy_live_sql(scratch))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(&applied_table_sql(scratch))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO {scratch}.applied SELECT aggregate_type, aggregate_id, version
         FROM projection_versions WHERE projection = $1"
    ))
    .bind(model.name())
    .execute(&mut *tx)
    .await?;
    // The projection's dead letters as the copy saw them (a dead letter resolved after it
    // would otherwise leave its event in neither), and the copy's moment and snapshot, for
    // counting what it lacks after the commit (the copy's transaction holds an id, which holds
    // the relay back while it is open).
    sqlx::query(&format!(
        "CREATE TABLE {scratch}.dead_lettered AS
         SELECT DISTINCT event_id FROM dead_letters WHERE projection = $1 AND event_id IS NOT NULL"
    ))
    .bind(model.name())
    .execute(&mut *tx)
    .await?;
    let copied: (chrono::DateTime<chrono::Utc>, String) =
        sqlx::query_as("SELECT now(), pg_current_snapshot()::text")
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    let unapplied = unapplied(pool, model, scratch, grace, &copied).await?;

    // 2. The rebuild, in log order, folded in memory and written in bulk.
    let mut targets = [Target::new(model, scratch)];
    let filter = format!(
        "EXISTS (SELECT 1 FROM {scratch}.applied a WHERE a.aggregate_type = e.aggregate_type
             AND a.aggregate_id = e.aggregate_id AND e.sequence <= a.version)"
    );
    rebuild::fold_events(
        pool,
        &mut targets,
        &filter,
        rebuild::Last::Write,
        &mut |_| {},
    )
    .await?;
    let [target] = targets;
    let (events, failed) = (target.events, target.failed);

    // 3. Compare.
    let mut checks = Vec::new();
    for table in tables {
        let (live_copy, rebuilt_copy) = (
            format!("{scratch}.{}", table.live_copy_name()),
            format!("{scratch}.{}", table.name),
        );
        let live = checksum(pool, &live_copy).await?;
        let rebuilt = checksum(pool, &rebuilt_copy).await?;
        let (only_live, only_rebuilt) = if live == rebuilt {
            (Vec::new(), Vec::new())
        } else {
            (
                only_in(pool, &live_copy, &rebuilt_copy).await?,
                only_in(pool, &rebuilt_copy, &live_copy).await?,
            )
        };
        checks.push(TableCheck {
            table: table.name,
            live_rows: live.0,
            rebuilt_rows: rebuilt.0,
            live_checksum: live.1,
            rebuilt_checksum: rebuilt.1,
            only_live,
            only_rebuilt,
        });
    }
    Ok(Verification {
        projection: model.name(),
        unapplied,
        events,
        failed,
        tables: checks,
    })
}

/// The events of `model`'s aggregates recorded at least `grace` before the copy into `scratch`
/// (`copied`: its transaction's start and snapshot) and visible to it, that the versions copied
/// do not cover, leaving those the relay parked and those the projection held as dead letters
/// when copied (a message it could not decode is dead-lettered without its version: no
/// aggregate sequence could be read from it).
async fn unapplied(
    pool: &PgPool,
    model: &'static dyn ReadModel,
    scratch: &str,
    grace: Duration,
    (copied_at, snapshot): &(chrono::DateTime<chrono::Utc>, String),
) -> Result<Unapplied, sqlx::Error> {
    let row = sqlx::query(&format!(
        "WITH missing AS (
             SELECT e.global_position, e.event_id FROM events e
             WHERE e.aggregate_type = ANY($1)
               AND e.recorded_at <= $3 - make_interval(secs => $2)
               AND pg_visible_in_snapshot(e.tx_id, $4::text::pg_snapshot)
               AND NOT EXISTS (SELECT 1 FROM {scratch}.applied a
                               WHERE a.aggregate_type = e.aggregate_type
                                 AND a.aggregate_id = e.aggregate_id AND a.version >= e.sequence)
               AND NOT EXISTS (SELECT 1 FROM relay_parked_events p WHERE p.event_id = e.event_id)
               AND NOT EXISTS (SELECT 1 FROM {scratch}.dead_lettered d
                               WHERE d.event_id = e.event_id::text))
         SELECT (SELECT count(*) FROM missing) AS n, first.global_position AS position,
                first.event_id::text AS event
         FROM (SELECT 1) AS one LEFT JOIN LATERAL (
             SELECT * FROM missing ORDER BY global_position LIMIT 1) AS first ON true"
    ))
    .bind(model.aggregates())
    .bind(grace.as_secs_f64())
    .bind(copied_at)
    .bind(snapshot)
    .fetch_one(pool)
    .await?;
    let position: Option<i64> = row.try_get("position")?;
    let event: Option<String> = row.try_get("event")?;
    Ok(Unapplied {
        grace,
        count: row.try_get("n")?,
        oldest: position.zip(event),
    })
}

/// Rows of `a` (as text) that `b` lacks, at most [`SHOWN`].
async fn only_in(pool: &PgPool, a: &str, b: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT t::text FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}) t
         ORDER BY 1 LIMIT {SHOWN}"
    ))
    .fetch_all(pool)
    .await
}

/// Row count and MD5 of the rows' text in sorted order.
async fn checksum(pool: &PgPool, table: &str) -> Result<(i64, String), sqlx::Error> {
    let row = sqlx::query(&Table::checksum_sql(table))
        .fetch_one(pool)
        .await?;
    Ok((row.try_get("n")?, row.try_get("sum")?))
}

/// `<schema>.applied` of verify's scratch schema: the live model's versions, copied (a replay's
/// set has its own, partition-shaped: `replay::set`).
fn applied_table_sql(schema: &str) -> String {
    format!(
        "CREATE TABLE {schema}.applied (aggregate_type text, aggregate_id text, version bigint,
             PRIMARY KEY (aggregate_type, aggregate_id))"
    )
}
