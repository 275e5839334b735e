//! `projector replay | rollback | prune`: rebuild a read model beside the live one and swap
//! it in without stopping reads or the projector.
//!
//! A table set is the model's tables in a schema of their own, plus `applied`, the last
//! sequence folded per aggregate. A replay builds a new set per model from the events table,
//! in log order:
//!
//! 1. Everything written by transactions older than the oldest one running when it starts
//!    (`pg_snapshot_xmin`, as the relay reads): those have all ended, so nothing can appear
//!    among them later. One scan folds them into every model replayed, in memory, and the
//!    rows go out with `COPY` ([`crate::rebuild`], [`crate::bulk`]).
//! 2. Catch-up rounds over the transactions since, until little is left, with the
//!    projector's own `apply` (the set's schema first on the `search_path`).
//! 3. The swap, in one transaction holding the projection's advisory lock (the one the
//!    runner takes per batch, so no batch is applied meanwhile) and every table lock it needs,
//!    taken first, one attempt per transaction ([`locks`]): the last events are folded,
//!    the live tables move to a `previous_*` schema and the new ones to `public` (with the
//!    live tables' triggers), and the model's `projection_versions` become the new set's.
//!    The runner goes on from its Kafka offsets; what the new set already holds it skips by
//!    those versions. Readers resolve the table names again at their next statement, so the
//!    query API serves the old tables until the commit and the new ones after it; a
//!    notification makes it forget its cache.
//!
//! `rollback` catches the previous set up on every event it lacks, from the oldest transaction
//! of those on (deduplicated by its versions), and swaps it back the same way; `prune` drops
//! it. That is not only the transactions since the swap: what the projector had not applied
//! yet when the swap came went into the new set alone.

pub mod as_of;
mod kafka;
mod letters;
mod locks;
mod outcomes;
mod prune;
pub mod runs;
mod set;
mod shape;
mod swap;

use sqlx::{PgConnection, PgPool};

/// Every column of `dead_letters` but its id, as kept beside a replaced set.
pub use letters::COLUMNS as DEAD_LETTER_COLUMNS;
pub(crate) use prune::drop_recorded;
pub use prune::prune;

use crate::lease::Lease;
use crate::projection::ReadModel;
use crate::rebuild::{self, Applied, Last, Target};
use set::Set;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("{0} has no previous table set (nothing to roll back to)")]
    NoPrevious(&'static str),
    /// A migration changed the live table's columns since the set was swapped out: swapped
    /// back in, the set would undo the migration for good (every later replay copies the live
    /// shape), and its rows were never written with those columns.
    #[error(
        "{table} no longer has the live table's columns ({differences}; the set's, then the \
         live table's): a migration changed them since the replay, and rolling back would undo \
         it; run `projector replay` instead"
    )]
    Shape { table: String, differences: String },
    #[error(
        "the swap could not lock {tables} in {attempts} attempts over ten minutes (the last \
         attempt's wait): sessions kept it busy (see pg_locks); the live set is untouched"
    )]
    Locks { tables: String, attempts: u32 },
    #[error("reading the topics: {0}")]
    Source(String),
    #[error(
        "the new set {0} was swept as abandoned: this run's lease was lost (its connection to \
         the database ended) and another run's sweep took the set for left behind"
    )]
    Swept(String),
}

/// Where a replay's first pass reads the log.
pub enum Origin<'a> {
    /// The events table (the default).
    Store,
    /// The models' Kafka topics, with these settings (see [`kafka`]).
    Kafka(&'a infra::settings::Settings),
}

/// A replay that failed: the error, and the reports of the models it had swapped in before
/// (they stay swapped in, each with its previous set kept for `rollback`).
#[derive(Debug, thiserror::Error)]
#[error("the replay stopped after swapping in {} of its read models", .swapped.len())]
pub struct Interrupted {
    pub swapped: Vec<Report>,
    #[source]
    pub error: ReplayError,
}

/// What a replay or rollback did.
#[derive(Debug, Default)]
pub struct Report {
    /// Events folded into the set brought in.
    pub events: u64,
    /// Events it could not apply, as the live projection would have dead-lettered them.
    pub failed: Vec<(String, String)>,
    /// The positions of the events its catch-up folded (applied or refused).
    pub caught_up: Vec<i64>,
    /// The schema holding the set that was swapped out.
    pub previous_schema: String,
}

/// About how many events of `types` the store holds: the planner's estimate from the events
/// table's statistics, for a progress total. Counting them exactly scans the table, which on a
/// store of a million events took from 0.2 s (cached) to 3.3 s (not) before the replay began.
pub async fn estimated_events(pool: &PgPool, types: &[&str]) -> Result<u64, sqlx::Error> {
    // The types are names from the code (`ReadModel::aggregates`), never input.
    let quoted: Vec<String> = types.iter().map(|t| format!("'{t}'")).collect();
    let sql = format!(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM events WHERE aggregate_type = ANY(ARRAY[{}]::text[])",
        quoted.join(",")
    );
    let plan: serde_json::Value = sqlx::query_scalar(&sql).fetch_one(pool).await?;
    Ok(plan[0]["Plan"]["Plan Rows"]
        .as_f64()
        .unwrap_or(0.0)
        .max(0.0) as u64)
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

async fn xmin(executor: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        .fetch_one(executor)
        .await
}

/// Creates an empty set per model (recording each schema in `schemas` before creating it);
/// returns their targets and the xmin the first pass reads up to.
async fn create_sets(
    pool: &PgPool,
    lease: &Lease,
    models: &[&'static dyn ReadModel],
    schemas: &mut Vec<String>,
) -> Result<(Vec<Target>, String), ReplayError> {
    let mut targets = Vec::new();
    let mut conn = pool.acquire().await?;
    for model in models {
        let schema = format!("replay_{}_{}", model.name(), suffix());
        schemas.push(schema.clone());
        lease.record_schema(&mut conn, &schema).await?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut *conn)
            .await?;
        for table in model.tables() {
            sqlx::query(&table.create_unindexed_sql(&schema))
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query(&set::applied_table_sql(&schema, model.name()))
            .execute(&mut *conn)
            .await?;
        // Autovacuum leaves the new tables alone until the swap turns it back on
        // (`swap::catch_up_and_swap`): it started on the freshly filled tables during a replay
        // and the swap's `ALTER TABLE`s waited up to a second each for it to give way. Their
        // sizes are recorded by their index builds; their columns' statistics come from
        // autovacuum after the swap (an `ANALYZE` of each set before it added 1.3 to 2 s to a
        // replay of a million events, mostly the `jsonb` columns).
        for table in model.tables().iter().map(|t| t.name).chain(["applied"]) {
            sqlx::query(&format!(
                "ALTER TABLE {schema}.{table} SET (autovacuum_enabled = false)"
            ))
            .execute(&mut *conn)
            .await?;
        }
        targets.push(Target::new(*model, &schema));
    }
    let start = xmin(&mut conn).await?;
    Ok((targets, start))
}

/// Rebuilds `models` from the events table into new sets and swaps each in: one ordered
/// scan folds them all in memory and writes them in bulk (see [`crate::rebuild`]), then each
/// is caught up and swapped in turn. Returns a report per model, in their order. The new
/// sets' schemas are recorded under `lease` before they are created: if the process dies
/// before they are swapped in or dropped, a sweep drops them (see [`crate::lease`]).
pub async fn replay(
    pool: &PgPool,
    lease: &Lease,
    models: &[&'static dyn ReadModel],
    origin: Origin<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<Report>, Interrupted> {
    // Every schema is recorded before it is created: a failure anywhere drops all of them.
    let mut schemas: Vec<String> = Vec::new();
    let created = create_sets(pool, lease, models, &mut schemas).await;
    let mut reports = Vec::new();
    let built = async {
        let (mut targets, start) = created?;
        let (applied, catch_up_from) = match origin {
            Origin::Store => {
                let filter = format!(
                    "e.tx_id < '{start}'::xid8 AND e.aggregate_type = ANY({})",
                    rebuild::aggregate_types_sql(&targets)
                );
                let applied =
                    rebuild::fold_events(pool, &mut targets, &filter, Last::Keep, progress).await?;
                (applied, start.clone())
            }
            Origin::Kafka(settings) => {
                let from = kafka::fold_topics(pool, settings, &mut targets, progress).await?;
                (from.applied, from.catch_up_from)
            }
        };
        let applied = std::sync::Arc::new(applied);
        for target in build_sets(pool, targets, &applied).await? {
            let mut report = Report {
                events: target.events,
                failed: target.failed,
                ..Report::default()
            };
            let set = Set::saved(&target.schema, applied.clone());
            swap::catch_up_and_swap(
                pool,
                target.model,
                true,
                set,
                catch_up_from.clone(),
                &mut report,
                progress,
            )
            .await?;
            reports.push(report);
        }
        Ok::<_, ReplayError>(())
    }
    .await;
    if built.is_err() {
        // Half-built sets are of no use (those swapped in are gone from their schemas
        // already); the live sets are untouched.
        for schema in schemas {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(pool)
                .await;
        }
    }
    match built {
        Ok(()) => Ok(reports),
        Err(error) => Err(Interrupted {
            swapped: reports,
            error,
        }),
    }
}

/// Finishes each target's set after the first pass: the rows its fold still holds, its
/// indexes, and its `applied` (the versions it holds of the aggregate types it reads, with
/// its key). Two sets at a time ([`rebuild::at_once`]) on connections of their own: each
/// set's statements are PostgreSQL's work on one core, and one set at a time left a core of
/// this two-core machine idle (docs/performance.md). Those with the most events go first
/// ([`rebuild::largest_first`], the order their last rows are encoded in), while the
/// versions are encoded once per aggregate type on a thread of their own; returns the
/// targets in their order.
async fn build_sets(
    pool: &PgPool,
    targets: Vec<Target>,
    applied: &std::sync::Arc<Applied>,
) -> Result<Vec<Target>, ReplayError> {
    use futures::{FutureExt, StreamExt, TryStreamExt};
    let versions = tokio::task::spawn_blocking({
        let applied = applied.clone();
        move || set::versions_by_type(&applied)
    })
    .map(|encoded| encoded.map(std::sync::Arc::new).map_err(|e| e.to_string()))
    .shared();
    let ordered = rebuild::largest_first(targets);
    let mut built: Vec<(usize, Target)> =
        futures::stream::iter(ordered.into_iter().map(|(index, mut target)| {
            let versions = versions.clone();
            async move {
                let mut conn = pool.acquire().await?;
                target.write_last(&mut conn).await?;
                for table in target.model.tables() {
                    table.add_indexes(&mut conn, &target.schema).await?;
                }
                let versions = versions.await.map_err(|e| {
                    sqlx::Error::Protocol(format!("encoding the sets' versions failed: {e}"))
                })?;
                set::save_all(&mut conn, &target.schema, target.model, &versions).await?;
                Ok::<_, ReplayError>((index, target))
            }
        }))
        .buffer_unordered(rebuild::at_once(pool))
        .try_collect()
        .await?;
    built.sort_by_key(|(index, _)| *index);
    Ok(built.into_iter().map(|(_, target)| target).collect())
}

/// Brings the previous set up to date (in the live tables' shape, [`shape`]) and swaps it
/// back in (the live set becomes the previous one).
pub async fn rollback(
    pool: &PgPool,
    model: &'static dyn ReadModel,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, ReplayError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT schema_name, swapped_xmin::text FROM projection_previous_sets WHERE projection = $1",
    )
    .bind(model.name())
    .fetch_optional(pool)
    .await?;
    let (schema, since) = row.ok_or(ReplayError::NoPrevious(model.name()))?;
    // Made ready in one transaction: a reshaping cut short leaves the set as it was.
    let mut tx = pool.begin().await?;
    let mut report = Report::default();
    let set = Set::load(&mut tx, &schema, model)
        .await?
        .keeping_outcomes(&mut tx, &mut report)
        .await?;
    shape::conform(&mut tx, &schema, model).await?;
    let since = oldest_lacking(&mut tx, &schema, model, since).await?;
    tx.commit().await?;
    let swapped =
        swap::catch_up_and_swap(pool, model, false, set, since, &mut report, progress).await;
    swapped.map(|()| report)
}

/// Where a rollback's catch-up starts: the swap's xmin, or the transaction of the oldest
/// event before it that the set lacks. The projector applies events some time after they are
/// committed; those it had not applied to the live set when a replay swapped it out went into
/// the new set alone, with transactions older than the swap's xmin. (A rollback from the
/// swap's xmin alone lost them: the replay test caught one audit event so lost.)
async fn oldest_lacking(
    conn: &mut PgConnection,
    schema: &str,
    model: &'static dyn ReadModel,
    swapped_xmin: String,
) -> Result<String, sqlx::Error> {
    let lacking: Option<String> = sqlx::query_scalar(&format!(
        "SELECT e.tx_id::text FROM events e
         WHERE e.aggregate_type = ANY($1) AND e.tx_id < $2::text::xid8
           AND NOT EXISTS (SELECT 1 FROM {schema}.applied a
               WHERE a.aggregate_id = e.aggregate_id AND a.aggregate_type = e.aggregate_type
                 AND a.version >= e.sequence)
         ORDER BY e.tx_id LIMIT 1"
    ))
    .bind(model.aggregates())
    .bind(&swapped_xmin)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(lacking.unwrap_or(swapped_xmin))
}
