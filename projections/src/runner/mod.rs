//! Running one projection: consume its topics from its stored offsets, apply each batch and
//! store the offsets in the same transaction.
//!
//! Exactly-once effect: offsets commit with the rows, so a crash replays only uncommitted
//! work; an event already applied (same aggregate sequence or lower, e.g. republished by the
//! relay after a crash) is skipped by `projection_versions`. No gap is applied over or
//! skipped: an event later than its aggregate's next sequence is held back until the missing
//! ones are applied from the event store in the same transaction ([`crate::gap`]). An event
//! that cannot be applied is rolled back to a savepoint and, by policy, dead-lettered (and the
//! aggregate's later events go on) or halts the projection.

mod apply;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use infra::kafka::LagReporter;
use infra::settings::Settings;
use rdkafka::consumer::{Consumer as _, StreamConsumer};

type Consumer = StreamConsumer<LagReporter>;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use schemas::wire::EventDecoder;
use sqlx::{PgPool, Row};
use tokio::sync::watch;

use crate::envelope::Source;
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
    #[error("projection {projection}: the event store lacks sequences {missing:?} of {aggregate_type} {aggregate_id}, which the log skipped")]
    Unfillable {
        projection: &'static str,
        aggregate_type: String,
        aggregate_id: String,
        missing: Vec<i64>,
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
            // Everything taken off the consumer, duplicates included: a restart that re-read the
            // topics from the beginning would show here, not in the applied count.
            metrics::counter!("projection_messages_consumed_total", "projection" => self.projection.name())
                .increment(batch.len() as u64);
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
}
