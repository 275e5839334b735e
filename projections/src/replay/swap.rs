//! Catching a set up and swapping it in under the projection's lock (see the parent module).

use sqlx::PgPool;

use super::set::{Set, APPLIED_KEY};
use super::{suffix, xmin, ReplayError, Report};
use crate::projection::ReadModel;

/// A catch-up round leaves the rest to the swap (which holds the projection's lock) once it
/// folded fewer events than this.
const SMALL: u64 = 50;

/// Catch-up rounds without the lock, then the swap: `incoming` becomes the live set. A set
/// `recorded` under a lease (a replay's, not a rollback's) is claimed first (see
/// [`crate::lease::claim_schema`]).
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
    if recorded && !crate::lease::claim_schema(&mut tx, &incoming.schema).await? {
        return Err(ReplayError::Swept(incoming.schema.clone()));
    }
    incoming
        .fold(&mut tx, model, &from, None, false, report, progress)
        .await?;
    incoming.save_changed(&mut tx, name).await?;
    if recorded {
        settle_dead_letters(&mut tx, name, &report.failed).await?;
    }
    let swapped_xmin = xmin(&mut tx).await?;
    // The set swapped out, with the versions it had.
    let outgoing = format!("previous_{name}_{}", suffix());
    sqlx::query(&format!("CREATE SCHEMA {outgoing}"))
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

/// A replayed set holds every event up to the swap, applied or refused. The live
/// projection's dead letters of events the set applied would apply them a second time if
/// retried (an order-insensitive total counted twice), so they go; the events the set refused
/// become its dead letters (read from the event store: topic `event-store`, the position as
/// the offset), to be seen and retried like any other rather than left out in silence. (A
/// rollback's set was not folded whole by this run, so a rollback leaves dead letters as they
/// are.)
async fn settle_dead_letters(
    tx: &mut sqlx::PgConnection,
    name: &str,
    failed: &[(String, String)],
) -> Result<(), sqlx::Error> {
    let (mut ids, mut errors) = (Vec::new(), Vec::new());
    for (event_id, error) in failed {
        if let Ok(id) = uuid::Uuid::parse_str(event_id) {
            ids.push(id);
            // An error may quote what it refused; no text column holds a NUL.
            errors.push(error.replace('\0', "\u{FFFD}"));
        }
    }
    let texts: Vec<String> = ids.iter().map(uuid::Uuid::to_string).collect();
    let resolved = sqlx::query(
        "DELETE FROM dead_letters d WHERE d.projection = $1 AND d.event_id IS NOT NULL
             AND NOT (d.event_id = ANY($2))
             AND EXISTS (SELECT 1 FROM events e WHERE e.event_id = CASE
                 WHEN d.event_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                 THEN d.event_id::uuid END)",
    )
    .bind(name)
    .bind(&texts)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let refused = sqlx::query(
        "INSERT INTO dead_letters (projection, topic, partition, \"offset\", event_id, aggregate_id, error)
         SELECT $1, 'event-store', 0, e.global_position, e.event_id::text, e.aggregate_id, f.error
         FROM UNNEST($2::uuid[], $3::text[]) AS f(event_id, error)
         JOIN events e ON e.event_id = f.event_id
         WHERE NOT EXISTS (SELECT 1 FROM dead_letters d
                           WHERE d.projection = $1 AND d.event_id = e.event_id::text)
         ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .bind(&ids)
    .bind(&errors)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if resolved > 0 || refused > 0 {
        tracing::info!(projection = name, resolved, refused,
            "dead letters settled at the swap: those the new set applied removed, those it refused added");
    }
    metrics::counter!("projection_dead_letters_total", "projection" => name.to_owned())
        .increment(refused);
    Ok(())
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
