//! Running one projection: consume its topics from its stored offsets, apply each batch and
//! store the offsets in the same transaction.
//!
//! Exactly-once effect: offsets commit with the rows, so a crash replays only uncommitted
//! work; an event already applied (same aggregate sequence or lower, e.g. republished by the
//! relay after a crash) is skipped by `projection_versions`. An event that cannot be applied is
//! rolled back to a savepoint and, by policy, dead-lettered (and later aggregates go on) or
//! halts the projection.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use infra::kafka::LagReporter;
use infra::settings::{DeadLetterPolicy, Settings};
use rdkafka::consumer::{Consumer as _, StreamConsumer};

type Consumer = StreamConsumer<LagReporter>;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use schemas::wire::EventDecoder;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::watch;
use tracing::Instrument;

use crate::envelope::{Envelope, Source};
use crate::projection::Projection;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("Kafka error")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {0} has no partitions yet")]
    NoPartitions(String),
    #[error("projection {projection} must retry its batch: {error}")]
    Transient {
        projection: &'static str,
        error: String,
    },
    #[error("projection {projection} halted on {at:?}: {error}")]
    Halted {
        projection: &'static str,
        at: Source,
        error: String,
    },
}

/// A message taken off the consumer, owned.
struct Raw {
    source: Source,
    headers: HashMap<String, String>,
    payload: Vec<u8>,
}

fn own(message: &BorrowedMessage<'_>) -> Raw {
    let headers = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|header| {
                    let value = header
                        .value
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    (header.key.to_owned(), value.unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default();
    Raw {
        source: Source {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
        },
        headers,
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

pub struct Runner {
    pub projection: &'static dyn Projection,
    pub pool: PgPool,
    pub settings: Settings,
}

impl Runner {
    /// Consumes and applies until `stopped` turns true; returns after committing the batch in
    /// hand, so a shutdown leaves nothing half-done.
    pub async fn run(&self, stopped: watch::Receiver<bool>) -> Result<(), RunError> {
        let stored = self.stored_offsets().await?;
        let consumer = self.assign(&stored).await?;
        let result = self.consume(&consumer, &stored, stopped).await;
        // Closing a consumer blocks (it leaves the group, waits for the broker): keep that off
        // the async workers, whose other tasks it would stall.
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        result
    }

    async fn consume(
        &self,
        consumer: &Consumer,
        stored: &HashMap<(String, i32), i64>,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        let decoder = EventDecoder::new(&self.settings.schema_registry.url);
        while !*stopped.borrow() {
            let batch = tokio::select! {
                batch = self.next_batch(consumer) => batch?,
                _ = stopped.changed() => break,
            };
            if batch.is_empty() {
                continue;
            }
            let started = Instant::now();
            // Anything below the stored offsets was applied before a restart (should the broker
            // hand out records before the requested offset).
            let batch: Vec<Raw> = batch
                .into_iter()
                .filter(|raw| {
                    let key = (raw.source.topic.clone(), raw.source.partition);
                    stored
                        .get(&key)
                        .is_none_or(|&next| raw.source.offset >= next)
                })
                .collect();
            if batch.is_empty() {
                continue;
            }
            let applied = self.apply_batch(&decoder, &batch).await?;
            tracing::debug!(
                projection = self.projection.name(),
                messages = batch.len(),
                applied,
                "batch committed"
            );
            let name = self.projection.name();
            metrics::counter!("projection_events_applied_total", "projection" => name)
                .increment(applied);
            metrics::histogram!("projection_apply_seconds", "projection" => name)
                .record(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// A consumer assigned every partition of the projection's topics at its stored offsets.
    async fn assign(&self, stored: &HashMap<(String, i32), i64>) -> Result<Consumer, RunError> {
        let kafka = &self.settings.kafka;
        let group = format!(
            "{}{}",
            self.settings.projector.group_prefix,
            self.projection.name()
        );
        let consumer = infra::kafka::consumer(kafka, &group, self.projection.name())?;
        let topics = self.projection.topics(&kafka.topic_prefix);
        // The relay creates the topics; until it has, `NoPartitions` makes the supervisor retry.
        let mut assignment = TopicPartitionList::new();
        for topic in topics {
            // A blocking call (up to its timeout): let the runtime move other tasks away.
            let metadata = tokio::task::block_in_place(|| {
                consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))
            })?;
            let partitions = metadata
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            if partitions == 0 {
                return Err(RunError::NoPartitions(topic));
            }
            for partition in 0..partitions as i32 {
                let offset = stored
                    .get(&(topic.clone(), partition))
                    .map(|&next| Offset::Offset(next))
                    .unwrap_or(Offset::Beginning);
                assignment.add_partition_offset(&topic, partition, offset)?;
            }
        }
        consumer.assign(&assignment)?;
        tracing::info!(
            projection = self.projection.name(),
            partitions = assignment.count(),
            "consuming"
        );
        Ok(consumer)
    }

    async fn stored_offsets(&self) -> Result<HashMap<(String, i32), i64>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = $1",
        )
        .bind(self.projection.name())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    (r.try_get("topic")?, r.try_get("partition")?),
                    r.try_get("next_offset")?,
                ))
            })
            .collect()
    }

    /// Waits for one message, then takes what else is already fetched or arrives within a
    /// millisecond: a fetch hands over many messages at once, so batches stay large under load
    /// without delaying a lone event.
    async fn next_batch(&self, consumer: &Consumer) -> Result<Vec<Raw>, RunError> {
        let first = consumer.recv().await?;
        let mut batch = vec![own(&first)];
        drop(first);
        let deadline = Instant::now() + Duration::from_millis(1);
        while batch.len() < self.settings.projector.batch_size {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, consumer.recv()).await {
                Ok(Ok(message)) => batch.push(own(&message)),
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Applies the batch and stores its offsets in one transaction; returns how many events
    /// changed the read model.
    async fn apply_batch(&self, decoder: &EventDecoder, batch: &[Raw]) -> Result<u64, RunError> {
        let mut tx = self.pool.begin().await?;
        // Two instances of one projection (a restart overlapping the old process, or a second
        // replica) take turns: the duplicate checks below then cannot race.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('projection:' || $1))")
            .bind(self.projection.name())
            .execute(&mut *tx)
            .await?;
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        let mut occurred = Vec::new();
        for raw in batch {
            let key = (raw.source.topic.clone(), raw.source.partition);
            let offset = next.entry(key).or_insert(0);
            *offset = (*offset).max(raw.source.offset + 1);
            match self.apply_one(&mut tx, decoder, raw).await? {
                Outcome::Applied(at) => occurred.push(at),
                Outcome::Duplicate => {}
                Outcome::Failed(error) => self.dead_letter(&mut tx, raw, &error).await?,
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
        let now = chrono::Utc::now();
        let age = metrics::histogram!("projection_event_age_seconds", "projection" => self.projection.name());
        for at in &occurred {
            age.record((now - *at).as_seconds_f64().max(0.0));
        }
        Ok(occurred.len() as u64)
    }

    async fn apply_one(
        &self,
        conn: &mut PgConnection,
        decoder: &EventDecoder,
        raw: &Raw,
    ) -> Result<Outcome, RunError> {
        let envelope = match decoder.decode(&raw.payload).await {
            Ok(decoded) => {
                match Envelope::from_parts(raw.source.clone(), &raw.headers, decoded.payload) {
                    Ok(envelope) => envelope,
                    Err(error) => return Ok(Outcome::Failed(error.to_string())),
                }
            }
            // The registry being unreachable says nothing about the message: retry the batch.
            Err(schemas::SchemaError::RegistryUnreachable(error)) => {
                return Err(RunError::Transient {
                    projection: self.projection.name(),
                    error: format!("schema registry unreachable: {error}"),
                })
            }
            Err(error) => return Ok(Outcome::Failed(format!("undecodable: {error}"))),
        };
        let name = self.projection.name();
        let applied: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM projection_versions WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3",
        )
        .bind(name)
        .bind(&envelope.aggregate_type)
        .bind(&envelope.aggregate_id)
        .fetch_optional(&mut *conn)
        .await?;
        if applied.is_some_and(|v| envelope.sequence <= v) {
            return Ok(Outcome::Duplicate);
        }
        sqlx::query("SAVEPOINT apply_one")
            .execute(&mut *conn)
            .await?;
        // The event's trace context goes with everything logged while applying it (the
        // process manager also stores it with the commands it decides on).
        let span = tracing::info_span!("apply", projection = name, event_type = %envelope.event_type,
            event_id = %envelope.event_id, traceparent = %envelope.traceparent);
        let applied = self
            .projection
            .apply(conn, &envelope)
            .instrument(span)
            .await;
        match applied {
            Ok(()) => {}
            // Deadlock, serialization failure, lost connection: not the event's fault.
            Err(crate::ApplyError::Database(error)) if infra::db::is_transient(&error) => {
                return Err(RunError::Database(error))
            }
            Err(error) => {
                sqlx::query("ROLLBACK TO SAVEPOINT apply_one")
                    .execute(&mut *conn)
                    .await?;
                return Ok(Outcome::Failed(crate::error_chain(&error)));
            }
        }
        sqlx::query(
            "INSERT INTO projection_versions (projection, aggregate_type, aggregate_id, version) VALUES ($1, $2, $3, $4)
             ON CONFLICT (projection, aggregate_type, aggregate_id) DO UPDATE SET version = EXCLUDED.version",
        )
        .bind(name)
        .bind(&envelope.aggregate_type)
        .bind(&envelope.aggregate_id)
        .bind(envelope.sequence)
        .execute(&mut *conn)
        .await?;
        Ok(Outcome::Applied(envelope.occurred_at))
    }

    async fn dead_letter(
        &self,
        conn: &mut PgConnection,
        raw: &Raw,
        error: &str,
    ) -> Result<(), RunError> {
        let name = self.projection.name();
        if self.settings.projector.dead_letter_policy == DeadLetterPolicy::Halt {
            return Err(RunError::Halted {
                projection: name,
                at: raw.source.clone(),
                error: error.to_owned(),
            });
        }
        tracing::warn!(projection = name, topic = %raw.source.topic, partition = raw.source.partition,
            offset = raw.source.offset, %error, "event dead-lettered");
        metrics::counter!("projection_dead_letters_total", "projection" => name).increment(1);
        sqlx::query(
            "INSERT INTO dead_letters (projection, topic, partition, \"offset\", event_id, aggregate_id, error, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(&raw.source.topic)
        .bind(raw.source.partition)
        .bind(raw.source.offset)
        .bind(raw.headers.get("event_id"))
        .bind(raw.headers.get("aggregate_id"))
        .bind(error)
        .bind(&raw.payload)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

enum Outcome {
    /// Applied; the event occurred then.
    Applied(chrono::DateTime<chrono::Utc>),
    Duplicate,
    Failed(String),
}
