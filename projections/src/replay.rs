//! `projector replay | rollback | prune`: rebuild a read model beside the live one and swap
//! it in without stopping reads or the projector.
//!
//! A table set is the model's tables in a schema of their own, plus `applied`, the last
//! sequence folded per aggregate. A replay builds a new set from the events table with the
//! projector's own apply code (the set's schema first on the `search_path`), in log order:
//!
//! 1. Everything written by transactions older than the oldest one running when it starts
//!    (`pg_snapshot_xmin`, as the relay reads): those have all ended, so nothing can appear
//!    among them later.
//! 2. Catch-up rounds over the transactions since, until little is left.
//! 3. The swap, in one transaction holding the projection's advisory lock (the one the
//!    runner takes per batch, so no batch is applied meanwhile): the last events are folded,
//!    the live tables move to a `previous_*` schema and the new ones to `public` (with the
//!    live tables' triggers), and the model's `projection_versions` become the new set's.
//!    The runner goes on from its Kafka offsets; what the new set already holds it skips by
//!    those versions. Readers resolve the table names again at their next statement, so the
//!    query API serves the old tables until the commit and the new ones after it; a
//!    notification makes it forget its cache.
//!
//! `rollback` catches the previous set up on every event of the transactions since the swap
//! (deduplicated by its versions) and swaps it back the same way; `prune` drops it.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool, Row};

use crate::projection::ReadModel;

/// Events read per query.
const CHUNK: i64 = 2000;
/// A catch-up round leaves the rest to the swap (which holds the projection's lock) once it
/// folded fewer events than this.
const SMALL: u64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("{0} has no previous table set (nothing to roll back to)")]
    NoPrevious(&'static str),
}

/// What a replay or rollback did.
#[derive(Debug, Default)]
pub struct Report {
    /// Events folded into the set brought in.
    pub events: u64,
    /// Events it could not apply, as the live projection would have dead-lettered them.
    pub failed: Vec<(String, String)>,
    /// The schema holding the set that was swapped out.
    pub previous_schema: String,
}

/// A set being built or caught up: its schema and, per aggregate, the last sequence folded.
struct Set {
    schema: String,
    applied: HashMap<(String, String), i64>,
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

async fn xmin(executor: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        .fetch_one(executor)
        .await
}

impl Set {
    /// Folds the events of transactions in `[from, to)` (`to` open: every visible one) into
    /// the set, in log order, skipping what it holds; calls `progress` per chunk. With
    /// `own_transactions` each chunk commits on its own (each event applies in a savepoint,
    /// and one transaction with many of them would slow every other session); without, the
    /// caller's transaction holds it all.
    #[allow(clippy::too_many_arguments)]
    async fn fold(
        &mut self,
        conn: &mut PgConnection,
        model: &'static dyn ReadModel,
        from: &str,
        to: Option<&str>,
        own_transactions: bool,
        report: &mut Report,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, sqlx::Error> {
        let mut after = 0i64;
        let mut folded = 0;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {columns} FROM events e
                 WHERE e.tx_id >= $1::text::xid8 AND ($2::text IS NULL OR e.tx_id < $2::text::xid8)
                   AND e.global_position > $3 AND e.aggregate_type = ANY($4)
                 ORDER BY e.global_position LIMIT $5",
                columns = crate::stored::COLUMNS
            ))
            .bind(from)
            .bind(to)
            .bind(after)
            .bind(model.aggregates())
            .bind(CHUNK)
            .fetch_all(&mut *conn)
            .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get("global_position")?;
            let fresh: Vec<&sqlx::postgres::PgRow> = rows
                .iter()
                .filter(|row| {
                    let key = (
                        row.try_get::<String, _>("aggregate_type")
                            .unwrap_or_default(),
                        row.try_get::<String, _>("aggregate_id").unwrap_or_default(),
                    );
                    let sequence: i64 = row.try_get("sequence").unwrap_or(0);
                    self.applied.get(&key).is_none_or(|v| sequence > *v)
                })
                .collect();
            if own_transactions {
                sqlx::query("BEGIN").execute(&mut *conn).await?;
            }
            sqlx::query(&format!("SET LOCAL search_path TO {}, public", self.schema))
                .execute(&mut *conn)
                .await?;
            report
                .failed
                .extend(crate::verify::apply_rows(conn, model, &fresh).await?);
            for row in &fresh {
                let key = (row.try_get("aggregate_type")?, row.try_get("aggregate_id")?);
                self.applied.insert(key, row.try_get("sequence")?);
            }
            sqlx::query("SET LOCAL search_path TO public")
                .execute(&mut *conn)
                .await?;
            if own_transactions {
                sqlx::query("COMMIT").execute(&mut *conn).await?;
            }
            folded += fresh.len() as u64;
            progress(fresh.len() as u64);
        }
        report.events += folded;
        Ok(folded)
    }

    /// Writes the in-memory versions into `<schema>.applied`.
    async fn save_applied(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(&format!("TRUNCATE {}.applied", self.schema))
            .execute(&mut *conn)
            .await?;
        let (mut types, mut ids, mut versions) = (Vec::new(), Vec::new(), Vec::new());
        for ((t, i), v) in &self.applied {
            types.push(t.as_str());
            ids.push(i.as_str());
            versions.push(*v);
        }
        sqlx::query(&format!(
            "INSERT INTO {}.applied SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])",
            self.schema
        ))
        .bind(types)
        .bind(ids)
        .bind(versions)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn load(conn: &mut PgConnection, schema: &str) -> Result<Self, sqlx::Error> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(&format!(
            "SELECT aggregate_type, aggregate_id, version FROM {schema}.applied"
        ))
        .fetch_all(&mut *conn)
        .await?;
        Ok(Self {
            schema: schema.to_owned(),
            applied: rows.into_iter().map(|(t, i, v)| ((t, i), v)).collect(),
        })
    }
}

/// Catch-up rounds without the lock, then the swap: `incoming` becomes the live set.
async fn catch_up_and_swap(
    pool: &PgPool,
    model: &'static dyn ReadModel,
    mut incoming: Set,
    mut from: String,
    report: &mut Report,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ReplayError> {
    let name = model.name();
    loop {
        let mut conn = pool.acquire().await?;
        let to = xmin(&mut conn).await?;
        let folded = incoming
            .fold(&mut conn, model, &from, Some(&to), true, report, progress)
            .await?;
        from = to;
        if folded < SMALL {
            break;
        }
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('projection:' || $1))")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    incoming
        .fold(&mut tx, model, &from, None, false, report, progress)
        .await?;
    incoming.save_applied(&mut tx).await?;
    let swapped_xmin = xmin(&mut tx).await?;
    // The set swapped out, with the versions it had.
    let outgoing = format!("previous_{name}_{}", suffix());
    sqlx::query(&format!("CREATE SCHEMA {outgoing}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE {outgoing}.applied AS SELECT aggregate_type, aggregate_id, version
         FROM projection_versions WHERE projection = $1"
    ))
    .bind(name)
    .execute(&mut *tx)
    .await?;
    for table in model.tables() {
        let t = table.name;
        // The live table's triggers (change notifications) go with the name, not the rows: the
        // set swapped out keeps none, so catching it up later notifies no reader.
        let triggers: Vec<(String, String)> = sqlx::query_as(
            "SELECT tgname::text, pg_get_triggerdef(oid) FROM pg_trigger
             WHERE tgrelid = ('public.' || $1)::regclass AND NOT tgisinternal",
        )
        .bind(t)
        .fetch_all(&mut *tx)
        .await?;
        for (trigger, _) in &triggers {
            sqlx::query(&format!("DROP TRIGGER {trigger} ON public.{t}"))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(&format!("ALTER TABLE public.{t} SET SCHEMA {outgoing}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "ALTER TABLE {}.{t} SET SCHEMA public",
            incoming.schema
        ))
        .execute(&mut *tx)
        .await?;
        for (_, definition) in triggers {
            sqlx::query(&definition).execute(&mut *tx).await?;
        }
    }
    sqlx::query("DELETE FROM projection_versions WHERE projection = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO projection_versions (projection, aggregate_type, aggregate_id, version)
         SELECT $1, aggregate_type, aggregate_id, version FROM {}.applied",
        incoming.schema
    ))
    .bind(name)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!("DROP SCHEMA {} CASCADE", incoming.schema))
        .execute(&mut *tx)
        .await?;
    // Only the newest previous set is kept (a rollback's incoming set was the previous one).
    let older: Option<String> = sqlx::query_scalar(
        "DELETE FROM projection_previous_sets WHERE projection = $1 RETURNING schema_name",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(older) = older.filter(|s| *s != incoming.schema) {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {older} CASCADE"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO projection_previous_sets (projection, schema_name, swapped_xmin)
         VALUES ($1, $2, $3::text::xid8)",
    )
    .bind(name)
    .bind(&outgoing)
    .bind(&swapped_xmin)
    .execute(&mut *tx)
    .await?;
    // The query API's cache forgets everything: its entries came from the old tables.
    sqlx::query("SELECT pg_notify('read_models', '*')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    report.previous_schema = outgoing;
    Ok(())
}

/// Rebuilds `model` from the events table into a new set and swaps it in.
pub async fn replay(
    pool: &PgPool,
    model: &'static dyn ReadModel,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, ReplayError> {
    let schema = format!("replay_{}_{}", model.name(), suffix());
    let mut conn = pool.acquire().await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *conn)
        .await?;
    for table in model.tables() {
        sqlx::query(&table.create_empty_sql(&schema))
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(&crate::verify::applied_table_sql(&schema))
        .execute(&mut *conn)
        .await?;
    let start = xmin(&mut conn).await?;
    drop(conn);
    let mut set = Set {
        schema: schema.clone(),
        applied: HashMap::new(),
    };
    let mut report = Report::default();
    let built = async {
        let mut conn = pool.acquire().await?;
        set.fold(
            &mut conn,
            model,
            "0",
            Some(&start),
            true,
            &mut report,
            progress,
        )
        .await?;
        drop(conn);
        catch_up_and_swap(pool, model, set, start, &mut report, progress).await
    }
    .await;
    if built.is_err() {
        // The half-built set is of no use; the live one is untouched.
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(pool)
            .await;
    }
    built.map(|()| report)
}

/// Brings the previous set up to date and swaps it back in (the live set becomes the
/// previous one).
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
    let mut conn = pool.acquire().await?;
    let set = Set::load(&mut conn, &schema).await?;
    drop(conn);
    let mut report = Report::default();
    let swapped = catch_up_and_swap(pool, model, set, since, &mut report, progress).await;
    swapped.map(|()| report)
}

/// Drops the previous set; false if there was none.
pub async fn prune(pool: &PgPool, model: &'static dyn ReadModel) -> Result<bool, ReplayError> {
    let mut tx = pool.begin().await?;
    let schema: Option<String> = sqlx::query_scalar(
        "DELETE FROM projection_previous_sets WHERE projection = $1 RETURNING schema_name",
    )
    .bind(model.name())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(schema) = &schema {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(schema.is_some())
}
