//! Applying a batch: each decoded message checked against its aggregate's handled sequence
//! (a duplicate is skipped, a gap filled from the event store first, see [`crate::gap`]),
//! applied or dead-lettered, and the offsets and sequences stored, all in one transaction.
//!
//! A batch is first applied without a savepoint per event: savepoints cost a round trip each,
//! and past 64 written subtransactions in one transaction PostgreSQL's snapshots overflow,
//! which slows every other session of the database. Should the projection refuse an event,
//! that attempt is rolled back and the batch applied again with each event in its own
//! savepoint, so the refused one is dead-lettered alone.

use chrono::{DateTime, Utc};
use infra::settings::DeadLetterPolicy;
use sqlx::PgConnection;
use tracing::Instrument;

use std::collections::HashMap;
use std::ops::RangeInclusive;

use super::letters::{resolve_dead_letters, Letter};
use super::{Copy, Message, RunError, Runner};
use crate::envelope::Envelope;
use crate::gap::{self, Position};
use crate::versions::Versions;

/// Why an attempt at a batch stopped.
enum Stop {
    Failed(RunError),
    /// The projection refused an event in an attempt without savepoints: apply the batch again
    /// with them.
    Isolate,
}

impl From<RunError> for Stop {
    fn from(error: RunError) -> Self {
        Self::Failed(error)
    }
}

impl From<sqlx::Error> for Stop {
    fn from(error: sqlx::Error) -> Self {
        Self::Failed(error.into())
    }
}

/// One attempt at a batch: what it handled so far, and whether events get savepoints.
struct Attempt {
    versions: Versions,
    occurred: Vec<DateTime<Utc>>,
    /// The ids of the events applied, whose dead letters (if any) the batch resolves.
    applied: Vec<String>,
    /// Gaps found, events filled, events dead-lettered: counted once the attempt commits.
    counts: [u64; 3],
    savepoints: bool,
}

impl Runner {
    /// Applies the batch and stores its offsets in one transaction; returns how many events
    /// changed the read model.
    pub(super) async fn apply_batch(&self, batch: &[&Message]) -> Result<u64, RunError> {
        let occurred = match self.attempt(batch, false).await {
            Ok(occurred) => occurred,
            Err(Stop::Failed(error)) => return Err(error),
            Err(Stop::Isolate) => {
                metrics::counter!("projection_batches_isolated_total", "projection" => self.projection.name())
                    .increment(1);
                match self.attempt(batch, true).await {
                    Ok(occurred) => occurred,
                    Err(Stop::Failed(error)) => return Err(error),
                    // With savepoints a refused event is dead-lettered, never isolated.
                    Err(Stop::Isolate) => {
                        return Err(RunError::Transient {
                            projection: self.projection.name(),
                            error: "a refused event was not isolated".to_owned(),
                        })
                    }
                }
            }
        };
        // Freshness: from the event's occurrence (in the command handler) until its effect is
        // committed here, relay and broker included.
        let now = Utc::now();
        let age = metrics::histogram!("projection_event_age_seconds", "projection" => self.projection.name());
        for at in &occurred {
            age.record((now - *at).as_seconds_f64().max(0.0));
        }
        Ok(occurred.len() as u64)
    }

    /// One transaction over the batch; returns when each applied event occurred.
    async fn attempt(
        &self,
        batch: &[&Message],
        savepoints: bool,
    ) -> Result<Vec<DateTime<Utc>>, Stop> {
        let name = self.projection.name();
        let mut tx = self.pool.begin().await?;
        // Two instances of one projection (a restart overlapping the old process, or a second
        // replica) take turns: the sequence checks below then cannot race.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('projection:' || $1))")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        // An undecodable message's aggregate too, as its headers name it (see `Copy`).
        let aggregates = batch.iter().filter_map(|m| match &m.decoded {
            Ok(e) => Some((e.aggregate_type.as_str(), e.aggregate_id.as_str())),
            Err(_) => Copy::of(&m.raw).map(|c| (c.aggregate_type, c.aggregate_id)),
        });
        let mut attempt = Attempt {
            versions: Versions::load(&mut tx, name, aggregates).await?,
            occurred: Vec::new(),
            applied: Vec::new(),
            counts: [0; 3],
            savepoints,
        };
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        for Message { raw, decoded } in batch.iter().copied() {
            let key = (raw.source.topic.clone(), raw.source.partition);
            let offset = next.entry(key).or_insert(0);
            *offset = (*offset).max(raw.source.offset + 1);
            match decoded {
                Ok(envelope) => {
                    self.handle(&mut tx, &mut attempt, envelope, &raw.payload)
                        .await?
                }
                Err(error) => {
                    // An undecodable copy of an event applied already (from another copy, or
                    // by another process first) is no dead letter: retried, it would apply
                    // the event a second time.
                    let seen = Copy::of(raw).and_then(|c| {
                        let handled = attempt.versions.handled(c.aggregate_type, c.aggregate_id);
                        handled.map(|handled| handled >= c.sequence)
                    });
                    if seen == Some(true) {
                        continue;
                    }
                    let letter = Letter {
                        source: &raw.source,
                        event_id: raw.headers.get("event_id").map(str::to_owned),
                        aggregate_id: raw.headers.get("aggregate_id"),
                        payload: Some(&raw.payload),
                    };
                    self.dead_letter(&mut tx, letter, error).await?;
                    attempt.counts[2] += 1;
                }
            }
        }
        resolve_dead_letters(&mut tx, name, &attempt.applied).await?;
        attempt.versions.save(&mut tx, name).await?;
        for ((topic, partition), offset) in next {
            crate::offsets::save_offset(&mut *tx, name, &topic, partition, offset).await?;
        }
        tx.commit().await?;
        let [gaps, filled, letters] = attempt.counts;
        metrics::counter!("projection_gaps_total", "projection" => name).increment(gaps);
        metrics::counter!("projection_gap_events_filled_total", "projection" => name)
            .increment(filled);
        metrics::counter!("projection_dead_letters_total", "projection" => name).increment(letters);
        Ok(attempt.occurred)
    }

    /// Applies the event if it is its aggregate's next one, skips it if it was applied, and
    /// fills the gap before it first if it is later than the next one.
    async fn handle(
        &self,
        conn: &mut PgConnection,
        attempt: &mut Attempt,
        envelope: &Envelope,
        payload: &[u8],
    ) -> Result<(), Stop> {
        let handled = attempt
            .versions
            .handled(&envelope.aggregate_type, &envelope.aggregate_id);
        match gap::position(handled, envelope.sequence) {
            Position::Duplicate => return Ok(()),
            Position::Next => {}
            Position::Gap(missing) => self.fill(conn, attempt, envelope, missing).await?,
        }
        self.apply_event(conn, attempt, envelope, Some(payload))
            .await
    }

    /// Applies the stored events of `missing` (the sequences before `later`) in order; fails
    /// the batch, to be retried, if the event store lacks any of them.
    async fn fill(
        &self,
        conn: &mut PgConnection,
        attempt: &mut Attempt,
        later: &Envelope,
        missing: RangeInclusive<i64>,
    ) -> Result<(), Stop> {
        let name = self.projection.name();
        attempt.counts[0] += 1;
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
            return Err(Stop::Failed(RunError::Unfillable {
                projection: name,
                aggregate_type: later.aggregate_type.clone(),
                aggregate_id: later.aggregate_id.clone(),
                missing: unfilled,
            }));
        }
        // An event of a type or version this build does not know is newer code's (a rolling
        // update under way): the batch waits for a newer projector, as for such a message.
        // Before, it was read through an older schema or set aside for good. As for a message,
        // a type unknown here is waited for only while the event is younger than the message
        // path's limit (a release rolled back after writing it, say, has no newer projector).
        for row in &rows {
            let event_type: String = sqlx::Row::try_get(row, "event_type")?;
            let version: String = sqlx::Row::try_get(row, "event_version")?;
            let newer = match super::batch::newer_event(&event_type, &version, false) {
                Some(_) => {
                    let position: i64 = sqlx::Row::try_get(row, "global_position")?;
                    let old: bool = sqlx::query_scalar(
                        "SELECT recorded_at < now() - make_interval(secs => $2)
                         FROM events WHERE global_position = $1",
                    )
                    .bind(position)
                    .bind(super::batch::UNKNOWN_TYPE_WAIT.as_secs_f64())
                    .fetch_one(&mut *conn)
                    .await?;
                    super::batch::newer_event(&event_type, &version, old)
                }
                None => None,
            };
            if let Some(event) = newer {
                metrics::counter!("projection_newer_events_waited_total").increment(1);
                return Err(Stop::Failed(RunError::NewerThanKnown {
                    projection: name,
                    event,
                    aggregate_type: later.aggregate_type.clone(),
                    aggregate_id: later.aggregate_id.clone(),
                }));
            }
        }
        for (row, sequence) in rows.iter().zip(found) {
            match crate::stored::envelope(row) {
                Ok(envelope) => self.apply_event(conn, attempt, &envelope, None).await?,
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
                    attempt.counts[2] += 1;
                    attempt
                        .versions
                        .record(&later.aggregate_type, &later.aggregate_id, sequence);
                }
            }
        }
        attempt.counts[1] += rows.len() as u64;
        Ok(())
    }

    /// Applies one event (inside a savepoint when the attempt takes them; otherwise a refusal
    /// stops the attempt) and records its sequence as handled, dead-lettered or not.
    async fn apply_event(
        &self,
        conn: &mut PgConnection,
        attempt: &mut Attempt,
        envelope: &Envelope,
        payload: Option<&[u8]>,
    ) -> Result<(), Stop> {
        let name = self.projection.name();
        if attempt.savepoints {
            sqlx::query("SAVEPOINT apply_one")
                .execute(&mut *conn)
                .await?;
        }
        // A consumer span (OpenTelemetry's messaging conventions), a child of the producer's
        // span named by the message's `traceparent`. The event's trace context goes with
        // everything logged while applying it (the process manager also passes it on with the
        // commands it decides on).
        let span = tracing::info_span!(
            parent: None,
            "apply",
            otel.name = %format_args!("process {}", envelope.source.topic),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.operation.name = "apply",
            messaging.destination.name = %envelope.source.topic,
            messaging.destination.partition.id = envelope.source.partition,
            messaging.kafka.offset = envelope.source.offset,
            messaging.message.id = %envelope.event_id,
            projection = name,
            event_type = %envelope.event_type,
            event_id = %envelope.event_id,
            traceparent = %envelope.traceparent,
        );
        infra::telemetry::propagation::set_parent(
            &span,
            &infra::telemetry::propagation::from_traceparent(
                envelope.parent.as_deref().unwrap_or(&envelope.traceparent),
            ),
        );
        // A panic in the projection's code is taken as the event's refusal (dead-lettered, or
        // halting under `halt`): left to unwind, it would end the batch of every projection
        // sharing the consumer, and again after each restart. The connection stays usable: a
        // statement interrupted mid-way is drained before the next one runs.
        let applied = infra::unless_panics(self.projection.apply(conn, envelope))
            .instrument(span)
            .await
            .unwrap_or_else(|panic| {
                tracing::error!(projection = self.projection.name(), event_id = %envelope.event_id,
                    %panic, "projection panicked applying an event; a bug");
                Err(crate::ApplyError::Panicked(panic))
            });
        match applied {
            Ok(()) => {
                attempt.occurred.push(envelope.occurred_at);
                attempt.applied.push(envelope.event_id.to_string());
            }
            // Deadlock, serialization failure, lost connection: not the event's fault.
            Err(crate::ApplyError::Database(error)) if infra::db::is_transient(&error) => {
                return Err(RunError::Database(error).into())
            }
            Err(error) => {
                let halts = self.settings.projector.dead_letter_policy == DeadLetterPolicy::Halt;
                if attempt.savepoints {
                    sqlx::query("ROLLBACK TO SAVEPOINT apply_one")
                        .execute(&mut *conn)
                        .await?;
                } else if !halts {
                    return Err(Stop::Isolate);
                }
                let letter = Letter {
                    source: &envelope.source,
                    event_id: Some(envelope.event_id.to_string()),
                    aggregate_id: Some(&envelope.aggregate_id),
                    payload,
                };
                self.dead_letter(conn, letter, &crate::error_chain(&error))
                    .await?;
                attempt.counts[2] += 1;
            }
        }
        // A dead-lettered event is handled too: the aggregate's later events must not wait
        // for it (a rebuild skips it the same way).
        attempt.versions.record(
            &envelope.aggregate_type,
            &envelope.aggregate_id,
            envelope.sequence,
        );
        Ok(())
    }
}
