//! One Kafka consumer per projector process, fanning out to its projections.
//!
//! The consumer subscribes to the union of the projections' topics in one consumer group per
//! set of projections (processes running the same set share its partitions, with cooperative
//! rebalancing: a process joining or leaving moves only the partitions that change hands).
//! Every message is decoded once and handed to each projection that reads its topic, and each
//! projection applies its share in its own transaction, all of them at once.
//!
//! A projection whose batch fails waits out its backoff while the others go on; when it is
//! due, the consumer is moved back to the oldest offset it still needs, and the others skip
//! what they have already applied. Positions live in PostgreSQL (`projection_offsets`), never
//! in Kafka: see [`super::positions`] for why an assignment can never skip a message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use schemas::wire::EventDecoder;
use sqlx::{PgPool, Row};
use tokio::sync::watch;

use super::batch::{decode, fill_batch, note_recoverable, recoverable};
use super::positions::{Context, Positions};
use super::{own, Message, RunError, Runner};

pub(super) type Consumer = StreamConsumer<Context>;

pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(200);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A projection in the fan-out, and when it may try again after a failed batch.
struct Slot {
    runner: Runner,
    topics: Vec<String>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

pub struct Fanout {
    slots: Vec<Slot>,
    positions: Arc<Positions>,
    pool: PgPool,
    settings: infra::settings::Settings,
}

impl Fanout {
    pub fn new(runners: Vec<Runner>, pool: PgPool, settings: infra::settings::Settings) -> Self {
        let prefix = settings.kafka.topic_prefix.clone();
        let slots: Vec<Slot> = runners
            .into_iter()
            .map(|runner| Slot {
                topics: runner.projection.topics(&prefix),
                runner,
                retry_at: None,
                backoff: FIRST_BACKOFF,
            })
            .collect();
        let positions = Arc::new(Positions::new(
            slots
                .iter()
                .map(|s| (s.runner.projection.name(), s.topics.clone())),
        ));
        Self {
            slots,
            positions,
            pool,
            settings,
        }
    }

    /// The projections' names.
    pub fn names(&self) -> Vec<&'static str> {
        self.slots
            .iter()
            .map(|s| s.runner.projection.name())
            .collect()
    }

    /// The consumer group of this set of projections: processes that run the same set under the
    /// same topic prefix share its partitions.
    pub fn group(&self) -> String {
        let mut names = self.names();
        names.sort_unstable();
        format!(
            "{}{}{}",
            self.settings.projector.group_prefix,
            self.settings.kafka.topic_prefix,
            names.join("+")
        )
    }

    /// Consumes and applies until `stopped` turns true; returns after committing the batch in
    /// hand, so a shutdown leaves nothing half-done.
    pub async fn run(&mut self, stopped: watch::Receiver<bool>) -> Result<(), RunError> {
        self.load_positions().await?;
        let consumer = self.subscribe().await?;
        let result = self.consume(&consumer, stopped).await;
        // Closing a consumer blocks (it leaves the group, waits for the broker): keep that off
        // the async workers, whose other tasks it would stall.
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        result
    }

    async fn load_positions(&self) -> Result<(), sqlx::Error> {
        let names: Vec<&str> = self.names();
        let rows = sqlx::query(
            "SELECT projection, topic, partition, next_offset FROM projection_offsets
             WHERE projection = ANY($1)",
        )
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        let stored = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("projection")?,
                    (r.try_get("topic")?, r.try_get("partition")?),
                    r.try_get("next_offset")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        self.positions.merge(stored);
        Ok(())
    }

    async fn subscribe(&self) -> Result<Consumer, RunError> {
        let kafka = &self.settings.kafka;
        let consumer: Consumer = infra::kafka::consumer_config(kafka, &self.group())
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create_with_context(Context {
                positions: self.positions.clone(),
            })?;
        let mut topics: Vec<String> = self.slots.iter().flat_map(|s| s.topics.clone()).collect();
        topics.sort();
        topics.dedup();
        // The relay creates the topics; until it has, `NoPartitions` makes the supervisor retry
        // (a subscription to a missing topic would only notice it at the next metadata refresh).
        for topic in &topics {
            // A blocking call (up to its timeout): let the runtime move other tasks away.
            let metadata = tokio::task::block_in_place(|| {
                consumer.fetch_metadata(Some(topic), Duration::from_secs(10))
            })?;
            let partitions = metadata
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len());
            if partitions == 0 {
                return Err(RunError::NoPartitions(topic.clone()));
            }
        }
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        tracing::info!(group = %self.group(), projections = ?self.names(), topics = ?topics, "consuming");
        Ok(consumer)
    }

    async fn consume(
        &mut self,
        consumer: &Consumer,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        let decoder = EventDecoder::new(&self.settings.schema_registry.url);
        let batch_size = self.settings.projector.batch_size;
        while !*stopped.borrow() {
            self.position_fresh(consumer).await?;
            self.rewind_due(consumer)?;
            let due = self.slots.iter().filter_map(|s| s.retry_at).min();
            let wake = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            // Only the wait for a batch's first message may be interrupted: `recv` gives up
            // nothing when dropped, while a batch being filled would lose what it holds.
            let first = tokio::select! {
                first = consumer.recv() => match first {
                    Ok(message) => own(&message),
                    Err(error) if recoverable(&error) => {
                        note_recoverable(&error);
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                },
                _ = stopped.changed() => break,
                _ = self.positions.assigned.notified() => continue,
                _ = tokio::time::sleep_until(wake.into()) => continue,
            };
            let batch = fill_batch(consumer, first, batch_size).await?;
            // The batch's polls may have run a rebalance: learn its partitions' places first.
            self.position_fresh(consumer).await?;
            let Some(messages) = decode(&decoder, batch, &mut stopped).await? else {
                break;
            };
            self.deliver(&messages).await;
        }
        Ok(())
    }

    /// Hands each due projection the messages of its topics it has not applied yet, all
    /// projections at once.
    async fn deliver(&mut self, messages: &[Message]) {
        let positions = &self.positions;
        let work = self
            .slots
            .iter_mut()
            // A projection waiting for its retry gets nothing until `rewind_due` has moved the
            // consumer back for it: it must not see messages past the ones it failed on.
            .filter(|slot| slot.retry_at.is_none())
            .map(|slot| async move {
                let name = slot.runner.projection.name();
                let mine: Vec<&Message> = messages
                    .iter()
                    .filter(|m| slot.topics.contains(&m.raw.source.topic))
                    .collect();
                // Everything taken off the consumer for it, duplicates included: a restart that
                // re-read the topics from the beginning would show here, not in the applied count.
                metrics::counter!("projection_messages_consumed_total", "projection" => name)
                    .increment(mine.len() as u64);
                let stored = positions.next_of(name);
                let new: Vec<&Message> = mine
                    .into_iter()
                    .filter(|m| {
                        let s = &m.raw.source;
                        stored
                            .iter()
                            .find(|((topic, partition), _)| {
                                *partition == s.partition && *topic == s.topic
                            })
                            .is_none_or(|(_, next)| s.offset >= *next)
                    })
                    .collect();
                if new.is_empty() {
                    return;
                }
                let started = Instant::now();
                match slot.runner.apply_batch(&new).await {
                    Ok(applied) => {
                        // Once per partition: the batch's highest offset in it, plus one.
                        let mut reached: Vec<((String, i32), i64)> = Vec::new();
                        for m in &new {
                            let s = &m.raw.source;
                            match reached
                                .iter_mut()
                                .find(|(p, _)| p.1 == s.partition && p.0 == s.topic)
                            {
                                Some((_, next)) => *next = (*next).max(s.offset + 1),
                                None => {
                                    reached.push(((s.topic.clone(), s.partition), s.offset + 1))
                                }
                            }
                        }
                        positions.merge(
                            reached
                                .into_iter()
                                .map(|(p, next)| (name.to_owned(), p, next)),
                        );
                        slot.backoff = FIRST_BACKOFF;
                        tracing::debug!(
                            projection = name,
                            messages = new.len(),
                            applied,
                            "batch committed"
                        );
                        metrics::counter!("projection_events_applied_total", "projection" => name)
                            .increment(applied);
                        metrics::histogram!("projection_apply_seconds", "projection" => name)
                            .record(started.elapsed().as_secs_f64());
                    }
                    Err(error) => {
                        metrics::counter!("projection_restarts_total", "projection" => name)
                            .increment(1);
                        tracing::warn!(projection = name, error = %crate::error_chain(&error),
                            retry_in_ms = slot.backoff.as_millis() as u64,
                            "projection interrupted: it retries from its stored offsets");
                        slot.retry_at = Some(Instant::now() + slot.backoff);
                        slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
                    }
                }
            });
        join_all(work).await;
    }

    /// Newly assigned partitions were started where this process last knew the projections
    /// to be; another process may have applied more since. Reads the stored offsets again and
    /// moves the consumer forward past what every projection has applied.
    async fn position_fresh(&self, consumer: &Consumer) -> Result<(), RunError> {
        let fresh = self.positions.take_fresh();
        if fresh.is_empty() {
            return Ok(());
        }
        self.load_positions().await?;
        let mut forward = TopicPartitionList::new();
        for ((topic, partition), assigned_at) in fresh {
            let Some(start) = self.positions.start(&topic, partition) else {
                continue;
            };
            if assigned_at.is_none_or(|at| start > at) {
                forward.add_partition_offset(&topic, partition, Offset::Offset(start))?;
            }
        }
        if forward.count() > 0 {
            // Only saves re-reading: a failed seek leaves the consumer behind, which is safe.
            if let Err(error) = seek(consumer, forward) {
                tracing::debug!(%error, "moving newly assigned partitions forward failed");
            }
        }
        Ok(())
    }

    /// Moves the consumer back for each projection whose retry is due, to the oldest offset it
    /// still needs in each assigned partition of its topics.
    fn rewind_due(&mut self, consumer: &Consumer) -> Result<(), RunError> {
        let now = Instant::now();
        let mut back: Vec<((String, i32), Offset)> = Vec::new();
        for slot in self.slots.iter_mut() {
            if slot.retry_at.is_none_or(|at| at > now) {
                continue;
            }
            slot.retry_at = None;
            let name = slot.runner.projection.name();
            for (topic, partition) in self.positions.assigned_of(&slot.topics) {
                let offset = self
                    .positions
                    .next(name, &topic, partition)
                    .map_or(Offset::Beginning, Offset::Offset);
                back.push(((topic, partition), offset));
            }
        }
        if back.is_empty() {
            return Ok(());
        }
        // The lowest per partition: `Beginning` sorts below any offset.
        back.sort_by_key(|((t, p), o)| (t.clone(), *p, offset_rank(*o)));
        back.dedup_by(|b, a| a.0 == b.0);
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in back {
            tpl.add_partition_offset(&topic, partition, offset)?;
        }
        seek(consumer, tpl)
    }
}

fn offset_rank(offset: Offset) -> i64 {
    match offset {
        Offset::Offset(n) => n,
        _ => -1,
    }
}

fn seek(consumer: &Consumer, tpl: TopicPartitionList) -> Result<(), RunError> {
    let result =
        tokio::task::block_in_place(|| consumer.seek_partitions(tpl, Duration::from_secs(10)))?;
    for element in result.elements() {
        if let Err(error) = element.error() {
            return Err(error.into());
        }
    }
    Ok(())
}
