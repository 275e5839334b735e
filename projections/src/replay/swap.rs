//! Catching a set up and swapping it in under the projection's lock (see the parent module).

use sqlx::PgPool;

use super::set::Set;
use super::{suffix, xmin, ReplayError, Report};
use crate::projection::ReadModel;

/// A catch-up round leaves the rest to the swap (which holds the projection's lock) once it
/// folded fewer events than this.
const SMALL: u64 = 50;

/// Catch-up rounds without the lock, then the swap: `incoming` becomes the live set.
pub(super) async fn catch_up_and_swap(
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
    incoming.save_changed(&mut tx).await?;
    let swapped_xmin = xmin(&mut tx).await?;
    // The set swapped out, with the versions it had.
    let outgoing = format!("previous_{name}_{}", suffix());
    sqlx::query(&format!("CREATE SCHEMA {outgoing}"))
        .execute(&mut *tx)
        .await?;
    // With its key (added after the rows, which is faster): a rollback's catch-up upserts
    // into it.
    sqlx::query(&format!(
        "CREATE TABLE {outgoing}.applied AS SELECT aggregate_type, aggregate_id, version
         FROM projection_versions WHERE projection = $1"
    ))
    .bind(name)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "ALTER TABLE {outgoing}.applied ADD PRIMARY KEY (aggregate_type, aggregate_id)"
    ))
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
    // The projection's versions become the new set's. They mostly equal the live ones already
    // (both sets are current), so only the differences are written: the lock is held for a
    // read of both, not a rewrite of every row. A model that has none yet (new) gets a plain
    // insert, which is faster than the upsert.
    let live: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM projection_versions WHERE projection = $1)",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    let upsert = if live {
        "ON CONFLICT (projection, aggregate_type, aggregate_id) DO UPDATE SET version = EXCLUDED.version
         WHERE projection_versions.version <> EXCLUDED.version"
    } else {
        ""
    };
    sqlx::query(&format!(
        "INSERT INTO projection_versions (projection, aggregate_type, aggregate_id, version)
         SELECT $1, aggregate_type, aggregate_id, version FROM {}.applied {upsert}",
        incoming.schema
    ))
    .bind(name)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "DELETE FROM projection_versions v WHERE v.projection = $1 AND NOT EXISTS (
             SELECT 1 FROM {}.applied a
             WHERE a.aggregate_type = v.aggregate_type AND a.aggregate_id = v.aggregate_id)",
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
