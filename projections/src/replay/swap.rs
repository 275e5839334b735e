//! Catching a set up and swapping it in under the projection's lock (see the parent module).

use sqlx::PgPool;

use super::letters::Swap;
use super::set::{Set, APPLIED_KEY};
use super::{suffix, xmin, ReplayError, Report};
use crate::projection::ReadModel;

/// A catch-up round leaves the rest to the swap (which holds the projection's lock) once it
/// folded fewer events than this.
const SMALL: u64 = 50;

/// How long one attempt at the swap's table locks waits ([`take_swap_locks`]): readers queue
/// behind a lock request, so this is about the longest a reader can be held up.
const LOCK_WAIT_MS: u64 = 200;

/// How long the swap keeps trying for its table locks before it fails.
const LOCKS_GIVE_UP: std::time::Duration = std::time::Duration::from_secs(600);

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
    let tables: Vec<&str> = model.tables().iter().map(|t| t.name).collect();
    take_swap_locks(&mut tx, &tables).await?;
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

/// Takes every lock the swap's statements need, all at once, before any of them runs: the live
/// tables of the model and `projection_versions` with its partitions. Each attempt waits at
/// most [`LOCK_WAIT_MS`] and gives way (to a savepoint: the swap's fold and the projection's
/// lock are kept) until the next. Taken one statement at a time, the swap held the live tables
/// while it waited for the versions (behind other projections' batches, or a vacuum of the
/// partition), and every reader of those tables waited with it: the query API's connections
/// ran out and unrelated reads failed with 503. A long reader (an export) held the swap, and
/// every reader queued behind it, the same way.
async fn take_swap_locks(tx: &mut sqlx::PgConnection, tables: &[&str]) -> Result<(), ReplayError> {
    let list: Vec<String> = tables
        .iter()
        .map(|t| format!("public.{t}"))
        .chain(["public.projection_versions".to_owned()])
        .collect();
    let lock = format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", list.join(", "));
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(50);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        sqlx::query("SAVEPOINT swap_locks")
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'"))
            .execute(&mut *tx)
            .await?;
        match sqlx::query(&lock).execute(&mut *tx).await {
            Ok(_) => {
                sqlx::query("RELEASE SAVEPOINT swap_locks")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("SET LOCAL lock_timeout = 0")
                    .execute(&mut *tx)
                    .await?;
                return Ok(());
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                sqlx::query("ROLLBACK TO SAVEPOINT swap_locks")
                    .execute(&mut *tx)
                    .await?;
                if started.elapsed() > LOCKS_GIVE_UP {
                    return Err(ReplayError::Locks {
                        tables: list.join(", "),
                        attempts,
                    });
                }
                if attempts.is_multiple_of(25) {
                    tracing::warn!(tables = %list.join(", "), attempts,
                        "the swap still waits for its tables: sessions keep them busy");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
            Err(error) => return Err(error.into()),
        }
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
