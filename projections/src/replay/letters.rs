//! The dead letters at a swap: made to match the set brought in, with what changed kept beside
//! the set swapped out, so that a rollback can undo it.
//!
//! - A replay's set holds every event up to the swap, applied or refused. The live dead
//!   letters of events it applied go: retried, they would apply their events a second time (an
//!   order-insensitive total counted twice). The events it refused become dead letters of
//!   their own (read from the event store: topic `event-store`, the position as the offset),
//!   to be seen and retried like any other rather than left out in silence.
//! - A rollback's set is the one swapped out before, caught up. What the swap that made it
//!   previous changed is undone: the dead letters it added go, those it removed come back
//!   (their events were refused by this set, and are still missing from it). Then the events
//!   its catch-up applied lose their dead letters, and those it refused get one.
//!
//! Either way, `<outgoing>.dead_letters_resolved` keeps the rows removed and
//! `<outgoing>.dead_letters_added` the ids added. A dead letter retried with success while the
//! replaced set is kept joins `dead_letters_resolved` too (`crate::dead_letters::retry`): the
//! event went into the live set only, and a rollback brings the letter back unless its
//! catch-up applies the event.

use sqlx::PgConnection;

use super::Report;

/// Which swap is settling its dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Swap {
    Replay,
    Rollback,
}

/// Every column of `dead_letters` but its id.
pub const COLUMNS: &str =
    "projection, topic, partition, \"offset\", event_id, aggregate_id, error, payload, created_at";

/// Settles the dead letters of projection `name` for the set in schema `incoming` (see the
/// module documentation), keeping the change in schema `outgoing`.
pub(super) async fn settle(
    tx: &mut PgConnection,
    name: &str,
    swap: Swap,
    incoming: &str,
    outgoing: &str,
    report: &Report,
) -> Result<(), sqlx::Error> {
    for table in [
        "dead_letters_resolved (LIKE dead_letters)",
        "dead_letters_added (id bigint NOT NULL)",
    ] {
        sqlx::query(&format!("CREATE TABLE {outgoing}.{table}"))
            .execute(&mut *tx)
            .await?;
    }
    let (mut ids, mut errors) = (Vec::new(), Vec::new());
    for (event_id, error) in &report.failed {
        if let Ok(id) = uuid::Uuid::parse_str(event_id) {
            ids.push(id);
            // An error may quote what it refused; no text column holds a NUL.
            errors.push(error.replace('\0', "\u{FFFD}"));
        }
    }
    // As dead letters name them.
    let refused: Vec<String> = ids.iter().map(uuid::Uuid::to_string).collect();
    // The events folded in this run, as dead letters name them.
    let applied: Vec<String> = sqlx::query_scalar(
        "SELECT e.event_id::text FROM events e
         WHERE e.global_position = ANY($1) AND NOT (e.event_id::text = ANY($2))",
    )
    .bind(&report.caught_up)
    .bind(&refused)
    .fetch_all(&mut *tx)
    .await?;
    let mut undone = 0;
    if swap == Swap::Rollback && kept_change(tx, incoming).await? {
        undone += remove(
            tx,
            outgoing,
            &format!("d.id IN (SELECT id FROM {incoming}.dead_letters_added)"),
            name,
            &[],
        )
        .await?;
        undone += sqlx::query(&format!(
            "WITH back AS (
                 INSERT INTO dead_letters ({COLUMNS})
                 SELECT {COLUMNS} FROM {incoming}.dead_letters_resolved r
                 WHERE NOT (r.event_id = ANY($2))
                   AND NOT EXISTS (SELECT 1 FROM dead_letters d
                                   WHERE d.projection = $1 AND d.event_id = r.event_id)
                 ON CONFLICT DO NOTHING
                 RETURNING id)
             INSERT INTO {outgoing}.dead_letters_added SELECT id FROM back"
        ))
        .bind(name)
        .bind(&applied)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    let resolved = match swap {
        // Everything up to the swap is in the set: every stored event's letter but the
        // refused ones goes.
        Swap::Replay => {
            let stored = "d.event_id IS NOT NULL AND NOT (d.event_id = ANY($2))
                AND EXISTS (SELECT 1 FROM events e WHERE e.event_id = CASE
                    WHEN d.event_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                    THEN d.event_id::uuid END)";
            remove(tx, outgoing, stored, name, &refused).await?
        }
        Swap::Rollback => remove(tx, outgoing, "d.event_id = ANY($2)", name, &applied).await?,
    };
    let added = sqlx::query(&format!(
        "WITH added AS (
             INSERT INTO dead_letters (projection, topic, partition, \"offset\", event_id, aggregate_id, error)
             SELECT $1, 'event-store', 0, e.global_position, e.event_id::text, e.aggregate_id, f.error
             FROM UNNEST($2::uuid[], $3::text[]) AS f(event_id, error)
             JOIN events e ON e.event_id = f.event_id
             WHERE NOT EXISTS (SELECT 1 FROM dead_letters d
                               WHERE d.projection = $1 AND d.event_id = e.event_id::text)
             ON CONFLICT DO NOTHING
             RETURNING id)
         INSERT INTO {outgoing}.dead_letters_added SELECT id FROM added"
    ))
    .bind(name)
    .bind(&ids)
    .bind(&errors)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if undone > 0 || resolved > 0 || added > 0 {
        tracing::info!(projection = name, ?swap, undone, resolved, refused = added,
            "dead letters settled at the swap: those the set brought in applied removed, those it refused added");
    }
    metrics::counter!("projection_dead_letters_total", "projection" => name.to_owned())
        .increment(added);
    Ok(())
}

/// Deletes the dead letters (`d`) of projection `name` matching `condition` (which may use
/// `$2`, bound to `events`), keeping them in `<outgoing>.dead_letters_resolved`; how many.
async fn remove(
    tx: &mut PgConnection,
    outgoing: &str,
    condition: &str,
    name: &str,
    events: &[String],
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(&format!(
        "WITH gone AS (
             DELETE FROM dead_letters d WHERE d.projection = $1 AND ({condition}) RETURNING d.*)
         INSERT INTO {outgoing}.dead_letters_resolved SELECT * FROM gone"
    ))
    .bind(name)
    .bind(events)
    .execute(&mut *tx)
    .await?
    .rows_affected())
}

/// Whether the set in `schema` kept the dead-letter change of the swap that took it out
/// (sets swapped out before this was kept have none).
async fn kept_change(tx: &mut PgConnection, schema: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT to_regclass($1 || '.dead_letters_added') IS NOT NULL
            AND to_regclass($1 || '.dead_letters_resolved') IS NOT NULL",
    )
    .bind(schema)
    .fetch_one(&mut *tx)
    .await
}
