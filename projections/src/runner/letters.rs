//! Dead letters of a projection's batch: recording an event it could not apply, and
//! removing those of events it has now applied.

use infra::settings::DeadLetterPolicy;
use sqlx::PgConnection;

use super::{RunError, Runner};
use crate::envelope::Source;

/// What a dead letter records of the message (or stored event) it could not apply.
pub(super) struct Letter<'a> {
    pub(super) source: &'a Source,
    pub(super) event_id: Option<String>,
    pub(super) aggregate_id: Option<&'a str>,
    pub(super) payload: Option<&'a [u8]>,
}

impl Runner {
    pub(super) async fn dead_letter(
        &self,
        conn: &mut PgConnection,
        letter: Letter<'_>,
        error: &str,
    ) -> Result<(), RunError> {
        let name = self.projection.name();
        let source = letter.source;
        if self.settings.projector.dead_letter_policy == DeadLetterPolicy::Halt {
            return Err(RunError::Halted {
                projection: name,
                at: source.clone(),
                error: error.to_owned(),
            });
        }
        tracing::warn!(projection = name, topic = %source.topic, partition = source.partition,
            offset = source.offset, %error, "event dead-lettered");
        // One dead letter per event: another copy of an event set aside already (the relay
        // published it again) adds none, or a retry of each would apply it twice. The batch
        // holds the projection's advisory lock, so no other writer races this check.
        sqlx::query(
            "INSERT INTO dead_letters (projection, topic, partition, \"offset\", event_id, aggregate_id, error, payload)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8
             WHERE $5::text IS NULL OR NOT EXISTS (
                 SELECT 1 FROM dead_letters WHERE projection = $1 AND event_id = $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(&source.topic)
        .bind(source.partition)
        .bind(source.offset)
        .bind(letter.event_id)
        .bind(letter.aggregate_id)
        // An error may quote what it refused; no text column holds a NUL.
        .bind(error.replace('\0', "\u{FFFD}"))
        .bind(letter.payload)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// The events a batch applied (from their messages or, filling a gap, from the event store)
/// may have been dead-lettered before: an undecodable copy consumed earlier, by this process
/// or another. They are applied now, so their dead letters go in the same transaction. Left
/// behind, a retry of one would apply its event a second time, and on a model where order
/// does not matter nothing would stop it (a capture counted twice).
pub(super) async fn resolve_dead_letters(
    conn: &mut PgConnection,
    projection: &str,
    applied: &[String],
) -> Result<(), RunError> {
    if applied.is_empty() {
        return Ok(());
    }
    // By `dead_letters_event_idx` (infra/migrations/20261202000004_dead_letter_events.sql).
    let resolved =
        sqlx::query("DELETE FROM dead_letters WHERE projection = $1 AND event_id = ANY($2)")
            .bind(projection)
            .bind(applied)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if resolved > 0 {
        tracing::info!(
            projection,
            resolved,
            "dead letters resolved: their events were applied"
        );
    }
    Ok(())
}
