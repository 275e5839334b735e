//! Catching a set up and swapping it in under the projection's lock (see the parent module).

use sqlx::PgPool;

use super::letters::Swap;
use super::set::{Set, APPLIED_KEY};
use super::{suffix, xmin, ReplayError, Report};
use crate::projection::ReadModel;

/// A catch-up round leaves the rest to the swap (which holds the projection's lock) once it
/// folded fewer events than this.
const SMALL: u64 = 50;

/// Catch-up rounds without the lock, then the swap: `incoming` becomes the live set. Each
/// attempt at the swap's locks (see [`super::locks`]) follows a catch-up, in a transaction of
/// its own. A set `recorded` under a lease (a replay's, not a rollback's) is claimed once the
/// locks are held (see [`crate::lease::claim_schema`]).
pub(super) async fn catch_up_and_swap(
    pool: &PgPool,
    model: &'static dyn ReadModel,
    recorded: bool,
    mut incoming: Set,
    mut from: String,
    report: &mut Report,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ReplayError> {
    let name = model.name();
    let tables: Vec<&str> = model.tables().iter().map(|t| t.name).collect();
    let mut waiting = super::locks::Waiting::new();
    let mut tx = loop {
        loop {
            let mut conn = pool.acquire().await?;
            let to = xmin(&mut conn).await?;
            let folded = incoming
                .fold(&mut conn, model, &from, Some(&to), true, report, progress)
                .await;
            let folded = match folded {
                Ok(folded) => folded,
                Err(error) => {
                    return Err(gone_or(&mut conn, name, recorded, &incoming, error).await)
                }
            };
            from = to;
            if folded < SMALL {
                break;
            }
        }
        let mut tx = pool.begin().await?;
        match super::locks::take(&mut tx, name, &incoming.schema, &tables, &mut waiting).await {
            Ok(true) => break tx,
            Ok(false) => {}
            // A table of the set gone between its listing and its lock: swept, or pruned.
            Err(ReplayError::Database(error)) => {
                drop(tx);
                let mut conn = pool.acquire().await?;
                return Err(gone_or(&mut conn, name, recorded, &incoming, error).await);
            }
            Err(error) => return Err(error),
        }
        tx.rollback().await?;
        waiting.pause().await;
    };
    // A `prune` between two attempts may have dropped a rollback's set (the previous one).
    if !recorded && !still_previous(&mut tx, name, &incoming.schema).await? {
        return Err(ReplayError::NoPrevious(name));
    }
    // From here the transaction writes, holding every lock it needs.
    if recorded && !crate::lease::claim_schema(&mut tx, &incoming.schema).await? {
        return Err(ReplayError::Swept(incoming.schema.clone()));
    }
    incoming
        .fold(&mut tx, model, &from, None, false, report, progress)
        .await?;
    incoming.save_changed(&mut tx, name).await?;
    // The set swapped out, with the versions it had (and what the swap changed of the dead
    // letters, for a rollback to undo).
    let outgoing = format!("previous_{name}_{}", suffix());
    sqlx::query(&format!("CREATE SCHEMA {outgoing}"))
        .execute(&mut *tx)
        .await?;
    let swap = if recorded {
        Swap::Replay
    } else {
        Swap::Rollback
    };
    super::letters::settle(&mut tx, name, swap, &incoming.schema, &outgoing, report).await?;
    let swapped_xmin = xmin(&mut tx).await?;
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
        // A replay's new tables were built with autovacuum off (see `super::replay`).
        sqlx::query(&format!(
            "ALTER TABLE public.{t} RESET (autovacuum_enabled)"
        ))
        .execute(&mut *tx)
        .await?;
        for (_, definition) in triggers {
            sqlx::query(&definition).execute(&mut *tx).await?;
        }
    }
    sqlx::query(&format!(
        "ALTER TABLE {}.applied RESET (autovacuum_enabled)",
        incoming.schema
    ))
    .execute(&mut *tx)
    .await?;
    swap_versions(&mut tx, name, &incoming.schema, &outgoing).await?;
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

/// Whether `schema` is still `projection`'s previous set (a rollback's incoming one: a `prune`
/// between two attempts at the swap's locks may have dropped it).
async fn still_previous(
    tx: &mut sqlx::PgConnection,
    projection: &str,
    schema: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM projection_previous_sets
                        WHERE projection = $1 AND schema_name = $2)",
    )
    .bind(projection)
    .bind(schema)
    .fetch_one(tx)
    .await
}

/// The error of a catch-up of `incoming`, or, when its schema is gone (swept as abandoned after
/// this run's lease was lost, or, for a rollback, pruned), what that means.
async fn gone_or(
    conn: &mut sqlx::PgConnection,
    projection: &'static str,
    recorded: bool,
    incoming: &Set,
    error: sqlx::Error,
) -> ReplayError {
    let exists: Result<bool, sqlx::Error> =
        sqlx::query_scalar("SELECT to_regnamespace($1) IS NOT NULL")
            .bind(&incoming.schema)
            .fetch_one(conn)
            .await;
    match (exists, recorded) {
        (Ok(false), true) => ReplayError::Swept(incoming.schema.clone()),
        (Ok(false), false) => ReplayError::NoPrevious(projection),
        _ => error.into(),
    }
}

/// The projection's versions become the new set's: its partition of `projection_versions`
/// (or, for a projection that has none yet, its rows of the default partition) leaves with
/// the outgoing set as its `applied`, and the incoming set's `applied` is attached in its
/// place. Both are catalogue changes, whatever the number of aggregates; the incoming table
/// carries a CHECK on its projection, so attaching it scans nothing. Detaching locks
/// `projection_versions` until the swap commits: the other projections wait that long (the
/// swap's last steps are catalogue changes too).
async fn swap_versions(
    tx: &mut sqlx::PgConnection,
    name: &str,
    incoming: &str,
    outgoing: &str,
) -> Result<(), sqlx::Error> {
    let partition = format!("projection_versions_{name}");
    let attached: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE i.inhparent = 'public.projection_versions'::regclass
           AND n.nspname = 'public' AND c.relname = $1)",
    )
    .bind(&partition)
    .fetch_one(&mut *tx)
    .await?;
    let statements = if attached {
        vec![
            format!("ALTER TABLE projection_versions DETACH PARTITION public.{partition}"),
            format!("ALTER TABLE public.{partition} SET SCHEMA {outgoing}"),
            format!("ALTER TABLE {outgoing}.{partition} RENAME TO applied"),
        ]
    } else {
        vec![
            format!(
                "CREATE TABLE {outgoing}.applied (LIKE projection_versions,
                     CONSTRAINT projection_is CHECK (projection = '{name}'))"
            ),
            format!(
                "WITH moved AS (DELETE FROM projection_versions_default WHERE projection = '{name}'
                     RETURNING *)
                 INSERT INTO {outgoing}.applied SELECT * FROM moved"
            ),
            format!("ALTER TABLE {outgoing}.applied ADD PRIMARY KEY {APPLIED_KEY}"),
        ]
    };
    for statement in statements {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    // The key's index takes the partition's name (index names are unique per schema).
    let key: String = sqlx::query_scalar(&format!(
        "SELECT conname::text FROM pg_constraint
         WHERE conrelid = '{incoming}.applied'::regclass AND contype = 'p'"
    ))
    .fetch_one(&mut *tx)
    .await?;
    let wanted = format!("{partition}_pkey");
    if key != wanted {
        sqlx::query(&format!(
            "ALTER TABLE {incoming}.applied RENAME CONSTRAINT {key} TO {wanted}"
        ))
        .execute(&mut *tx)
        .await?;
    }
    for statement in [
        format!("ALTER TABLE {incoming}.applied RENAME TO {partition}"),
        format!("ALTER TABLE {incoming}.{partition} SET SCHEMA public"),
        format!(
            "ALTER TABLE projection_versions ATTACH PARTITION public.{partition} FOR VALUES IN ('{name}')"
        ),
    ] {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    Ok(())
}
