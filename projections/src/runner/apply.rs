//! Applying a batch: each message decoded, checked against its aggregate's applied sequence
//! (a duplicate is skipped, a gap filled from the event store first, see [`crate::gap`]),
//! applied inside a savepoint or dead-lettered, and the offsets stored, all in one transaction.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use chrono::{DateTime, Utc};
use infra::settings::DeadLetterPolicy;
use schemas::wire::EventDecoder;
use sqlx::PgConnection;
use tracing::Instrument;

use super::{Raw, RunError, Runner};
use crate::envelope::{Envelope, Source};
use crate::gap::{self, Position};

/// What a dead letter records of the message (or stored event) it could not apply.
struct Letter<'a> {
    source: &'a Source,
    event_id: Option<String>,
    aggregate_id: Option<&'a str>,
    payload: Option<&'a [u8]>,
}

impl Runner {
    /// Applies the batch and stores its offsets in one transaction; returns how many events
    /// changed the read model.
    pub(super) async fn apply_batch(
        &self,
        decoder: &EventDecoder,
        batch: &[Raw],
    ) -> Result<u64, RunError> {
        // Decoding may fetch a schema from the registry: a network call, so it happens before
        // the transaction starts (no transaction is ever open across one).
        let mut decoded = Vec::with_capacity(batch.len());
        for raw in batch {
            decoded.push(self.decode(decoder, raw).await?);
        }
        let mut tx = self.pool.begin().await?;
        // Two instances of one projection (a restart overlapping the old process, or a second
        // replica) take turns: the sequence checks below then cannot race.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('projection:' || $1))")
            .bind(self.projection.name())
            .execute(&mut *tx)
            .await?;
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        let mut occurred = Vec::new();
        for (raw, decoded) in batch.iter().zip(decoded) {
            let key = (raw.source.topic.clone(), raw.source.partition);
            let offset = next.entry(key).or_insert(0);
            *offset = (*offset).max(raw.source.offset + 1);
            match decoded {
                Ok(envelope) => {
                    self.handle(&mut tx, &envelope, &raw.payload, &mut occurred)
                        .await?
                }
                Err(error) => {
                    let letter = Letter {
                        source: &raw.source,
                        event_id: raw.headers.get("event_id").cloned(),
                        aggregate_id: raw.headers.get("aggregate_id").map(String::as_str),
                        payload: Some(&raw.payload),
                    };
                    self.dead_letter(&mut tx, letter, &error).await?
                }
            }
        }
        for ((topic, partition), offset) in next {
            crate::offsets::save_offset(
                &mut *tx,
                self.projection.name(),
                &topic,
                partition,
                offset,
            )
            .await?;
        }
        tx.commit().await?;
        // Freshness: from the event's occurrence (in the command handler) until its effect is
        // committed here, relay and broker included.
        let now = Utc::now();
        let age = metrics::histogram!("projection_event_age_seconds", "projection" => self.projection.name());
        for at in &occurred {
            age.record((now - *at).as_seconds_f64().max(0.0));
        }
        Ok(occurred.len() as u64)
    }

    /// The message's envelope, or (inside `Ok`) why it cannot be applied by anyone.
    async fn decode(
        &self,
        decoder: &EventDecoder,
        raw: &Raw,
    ) -> Result<Result<Envelope, String>, RunError> {
        match decoder.decode(&raw.payload).await {
            Ok(decoded) => {
                Ok(
                    Envelope::from_parts(raw.source.clone(), &raw.headers, decoded.payload)
                        .map_err(|error| error.to_string()),
                )
            }
            // The registry being unreachable says nothing about the message: retry the batch.
            Err(schemas::SchemaError::RegistryUnreachable(error)) => Err(RunError::Transient {
                projection: self.projection.name(),
                error: format!("schema registry unreachable: {error}"),
            }),
            Err(error) => Ok(Err(format!("undecodable: {error}"))),
        }
    }

    /// Applies the event if it is its aggregate's next one, skips it if it was applied, and
    /// fills the gap before it first if it is later than the next one.
    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
        payload: &[u8],
        occurred: &mut Vec<DateTime<Utc>>,
    ) -> Result<(), RunError> {
        let applied: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM projection_versions WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3",
        )
        .bind(self.projection.name())
        .bind(&envelope.aggregate_type)
        .bind(&envelope.aggregate_id)
        .fetch_optional(&mut *conn)
        .await?;
        match gap::position(applied, envelope.sequence) {
            Position::Duplicate => return Ok(()),
            Position::Next => {}
            Position::Gap(missing) => self.fill(conn, envelope, missing, occurred).await?,
        }
        self.apply_event(conn, envelope, Some(payload), occurred)
            .await
    }

    /// Applies the stored events of `missing` (the sequences before `later`) in order; fails
    /// the batch, to be retried, if the event store lacks any of them.
    async fn fill(
        &self,
        conn: &mut PgConnection,
        later: &Envelope,
        missing: RangeInclusive<i64>,
        occurred: &mut Vec<DateTime<Utc>>,
    ) -> Result<(), RunError> {
        let name = self.projection.name();
        metrics::counter!("projection_gaps_total", "projection" => name).increment(1);
        let rows =
            gap::missing_events(conn, &later.aggregate_type, &later.aggregate_id, &missing).await?;
        let found = gap::sequences(&rows)?;
        tracing::warn!(projection = name, aggregate_type = %later.aggregate_type,
            aggregate_id = %later.aggregate_id, sequence = later.sequence,
            missing_from = missing.start(), missing_to = missing.end(), found = found.len(),
            topic = %later.source.topic, partition = later.source.partition, offset = later.source.offset,
            "gap before an event: filling it from the event store");
        let unfilled = gap::unfilled(&missing, &found);
        if !unfilled.is_empty() {
            return Err(RunError::Unfillable {
                projection: name,
                aggregate_type: later.aggregate_type.clone(),
                aggregate_id: later.aggregate_id.clone(),
                missing: unfilled,
            });
        }
        for (row, sequence) in rows.iter().zip(found) {
            match crate::stored::envelope(row) {
                Ok(envelope) => self.apply_event(conn, &envelope, None, occurred).await?,
                Err(error) => {
                    let source = crate::stored::source(sqlx::Row::try_get(row, "global_position")?);
                    let letter = Letter {
                        source: &source,
                        event_id: sqlx::Row::try_get::<uuid::Uuid, _>(row, "event_id")
                            .ok()
                            .map(|id| id.to_string()),
                        aggregate_id: Some(&later.aggregate_id),
                        payload: None,
                    };
                    self.dead_letter(conn, letter, &error).await?;
                    self.record(conn, &later.aggregate_type, &later.aggregate_id, sequence)
                        .await?;
                }
            }
        }
        metrics::counter!("projection_gap_events_filled_total", "projection" => name)
            .increment(rows.len() as u64);
        Ok(())
    }

    /// Applies one event inside a savepoint (dead-lettering it if the projection refuses it)
    /// and records its sequence as handled either way.
    async fn apply_event(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
        payload: Option<&[u8]>,
        occurred: &mut Vec<DateTime<Utc>>,
    ) -> Result<(), RunError> {
        let name = self.projection.name();
        sqlx::query("SAVEPOINT apply_one")
            .execute(&mut *conn)
            .await?;
        // The event's trace context goes with everything logged while applying it (the
        // process manager also stores it with the commands it decides on).
        let span = tracing::info_span!("apply", projection = name, event_type = %envelope.event_type,
            event_id = %envelope.event_id, traceparent = %envelope.traceparent);
        let applied = self.projection.apply(conn, envelope).instrument(span).await;
        match applied {
            Ok(()) => occurred.push(envelope.occurred_at),
            // Deadlock, serialization failure, lost connection: not the event's fault.
            Err(crate::ApplyError::Database(error)) if infra::db::is_transient(&error) => {
                return Err(RunError::Database(error))
            }
            Err(error) => {
                sqlx::query("ROLLBACK TO SAVEPOINT apply_one")
                    .execute(&mut *conn)
                    .await?;
                let letter = Letter {
                    source: &envelope.source,
                    event_id: Some(envelope.event_id.to_string()),
                    aggregate_id: Some(&envelope.aggregate_id),
                    payload,
                };
                self.dead_letter(conn, letter, &crate::error_chain(&error))
                    .await?;
            }
        }
        // A dead-lettered event is handled too: the aggregate's later events must not wait
        // for it (a rebuild skips it the same way).
        self.record(
            conn,
            &envelope.aggregate_type,
            &envelope.aggregate_id,
            envelope.sequence,
        )
        .await
    }

    /// Records `sequence` as the aggregate's last handled one.
    async fn record(
        &self,
        conn: &mut PgConnection,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
    ) -> Result<(), RunError> {
        sqlx::query(
            "INSERT INTO projection_versions (projection, aggregate_type, aggregate_id, version) VALUES ($1, $2, $3, $4)
             ON CONFLICT (projection, aggregate_type, aggregate_id) DO UPDATE SET version = EXCLUDED.version",
        )
        .bind(self.projection.name())
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn dead_letter(
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
        metrics::counter!("projection_dead_letters_total", "projection" => name).increment(1);
        sqlx::query(
            "INSERT INTO dead_letters (projection, topic, partition, \"offset\", event_id, aggregate_id, error, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(&source.topic)
        .bind(source.partition)
        .bind(source.offset)
        .bind(letter.event_id)
        .bind(letter.aggregate_id)
        .bind(error)
        .bind(letter.payload)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
