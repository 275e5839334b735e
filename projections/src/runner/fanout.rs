//! One Kafka consumer per projector process, fanning out to its projections.
//!
//! The consumer subscribes to the union of the projections' topics in one consumer group per
//! set of projections (processes running the same set share its partitions, with cooperative
//! rebalancing: a process joining or leaving moves only the partitions that change hands).
//! Every message is decoded once and handed to each projection that reads its topic, and each
//! projection applies its share in its own transaction, all of them at once.
//!
//! A projection whose batch fails is handed nothing more: it catches up on a consumer of its
//! own ([`super::catch_up`]) while the others go on, and is handed its share again once it has
//! applied everything the shared consumer handed out. Positions live in PostgreSQL
//! (`projection_offsets`), never in Kafka: see [`super::positions`] for why an assignment can
//! never skip a message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use schemas::wire::EventDecoder;
use sqlx::{PgPool, Row};
use tokio::sync::{watch, Notify};

use super::batch::{decode, fill_batch, note_recoverable, recoverable, seek};
use super::catch_up::{committed, failed, unapplied, Behind, Shared};
use super::positions::{Context, Partition, Positions};
use super::{own, Message, RunError, Runner};

pub(super) type Consumer = StreamConsumer<Context>;

pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(200);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A projection in the fan-out, and its catch-up task while it is behind.
pub(super) struct Slot {
    pub(super) runner: Arc<Runner>,
    pub(super) topics: Vec<String>,
    pub(super) behind: Option<Behind>,
}

pub struct Fanout {
    pub(super) slots: Vec<Slot>,
    pub(super) pool: PgPool,
    /// The positions, settings and decoder, shared with the catch-up tasks.
    pub(super) shared: Shared,
    /// Per partition, the offset after the last message the shared consumer handed out: a
    /// projection behind has caught up once it has applied up to here.
    pub(super) head: HashMap<Partition, i64>,
    /// The wait before the shared consumer is moved back when every projection has failed.
    backoff: Duration,
}

impl Fanout {
    pub fn new(runners: Vec<Runner>, pool: PgPool, settings: infra::settings::Settings) -> Self {
        let prefix = settings.kafka.topic_prefix.clone();
        let slots: Vec<Slot> = runners
            .into_iter()
            .map(|runner| Slot {
                topics: runner.projection.topics(&prefix),
                runner: Arc::new(runner),
                behind: None,
            })
            .collect();
        let positions = Arc::new(Positions::new(
            slots
                .iter()
                .map(|s| (s.runner.projection.name(), s.topics.clone())),
        ));
        let shared = Shared {
            positions,
            decoder: Arc::new(EventDecoder::new(&settings.schema_registry.url)),
            progress: Arc::new(Notify::new()),
            settings,
        };
        Self {
            slots,
            pool,
            shared,
            head: HashMap::new(),
            backoff: FIRST_BACKOFF,
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
            self.shared.settings.projector.group_prefix,
            self.shared.settings.kafka.topic_prefix,
            names.join("+")
        )
    }

    /// Consumes and applies until `stopped` turns true; returns after committing the batch in
    /// hand, so a shutdown leaves nothing half-done.
    pub async fn run(&mut self, stopped: watch::Receiver<bool>) -> Result<(), RunError> {
        self.load_positions().await?;
        // A fresh decoder each run: a restart also forgets the schema lookups that failed.
        self.shared.decoder =
            Arc::new(EventDecoder::new(&self.shared.settings.schema_registry.url));
        let consumer = self.subscribe().await?;
        let mut result = self.consume(&consumer, stopped).await;
        // The projections behind stop too; a restart starts every one from its stored offsets.
        let ended = self.finish_catch_ups().await;
        if result.is_ok() {
            result = ended;
        }
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
        self.shared.positions.merge(stored);
        Ok(())
    }

    async fn subscribe(&self) -> Result<Consumer, RunError> {
        let mut config = infra::kafka::consumer_config(&self.shared.settings.kafka, &self.group());
        config.set("partition.assignment.strategy", "cooperative-sticky");
        let context = Context {
            positions: self.shared.positions.clone(),
        };
        let topics = self.topics();
        let checked = topics.clone();
        // The relay creates the topics; until it has, `NoPartitions` makes the supervisor retry
        // (a subscription to a missing topic would only notice it at the next metadata refresh).
        // The metadata calls block (up to their timeout each): on a thread for blocking work,
        // which any runtime has (`block_in_place` panicked on a single-threaded one).
        let consumer = tokio::task::spawn_blocking(move || {
            let consumer: Consumer = config.create_with_context(context)?;
            for topic in &checked {
                let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
                let partitions = metadata
                    .topics()
                    .first()
                    .map_or(0, |t| t.partitions().len());
                if partitions == 0 {
                    return Err(RunError::NoPartitions(topic.clone()));
                }
            }
            Ok(consumer)
        })
        .await
        .unwrap_or_else(|panicked| std::panic::resume_unwind(panicked.into_panic()))?;
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
        let batch_size = self.shared.settings.projector.batch_size;
        let progress = self.shared.progress.clone();
        while !*stopped.borrow() {
            if let Some(error) = self.shared.positions.take_rebalance_failure() {
                return Err(RunError::Rebalance(error));
            }
            self.position_fresh(consumer).await?;
            self.reset_beyond_log(consumer).await?;
            self.rejoin_caught_up().await?;
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
                _ = self.shared.positions.assigned.notified() => continue,
                _ = progress.notified() => continue,
            };
            let batch = fill_batch(consumer, first, batch_size).await?;
            // The batch's polls may have run a rebalance: learn its partitions' places first.
            self.position_fresh(consumer).await?;
            for raw in &batch {
                let s = &raw.source;
                let head = self.head.entry((s.topic.clone(), s.partition)).or_insert(0);
                *head = (*head).max(s.offset + 1);
            }
            let decoder = self.shared.decoder.clone();
            let Some(messages) = decode(&decoder, batch, &mut stopped).await? else {
                break;
            };
            let live = self.slots.iter().filter(|s| s.behind.is_none()).count();
            let failures = self.deliver(&messages).await;
            if failures.len() < live {
                self.backoff = FIRST_BACKOFF;
            }
            let everyone = failures.len() == live;
            if everyone && !failures.is_empty() {
                // Nobody needs the shared consumer to go on (the database is down, say): rather
                // than a consumer each, it is moved back for all of them, after a backoff.
                for (index, error) in &failures {
                    failed(
                        self.slots[*index].runner.projection.name(),
                        error,
                        self.backoff,
                    );
                }
                if !self.rewind_all(consumer, &mut stopped).await? {
                    break;
                }
                continue;
            }
            for (index, error) in failures {
                let group = self.group();
                let slot = &mut self.slots[index];
                failed(slot.runner.projection.name(), &error, FIRST_BACKOFF);
                let behind = tokio::task::block_in_place(|| {
                    Behind::start(
                        slot.runner.clone(),
                        slot.topics.clone(),
                        &self.shared,
                        &group,
                    )
                })?;
                slot.behind = Some(behind);
            }
        }
        Ok(())
    }

    /// Every projection is behind: stops their catch-up tasks, waits out the backoff and moves
    /// the shared consumer back to where each assigned partition's projections need it. False
    /// if told to stop meanwhile.
    async fn rewind_all(
        &mut self,
        consumer: &Consumer,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<bool, RunError> {
        self.finish_catch_ups().await?;
        tokio::select! {
            _ = tokio::time::sleep(self.backoff) => {}
            _ = stopped.changed() => return Ok(false),
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.seek_to_starts(consumer)?;
        Ok(true)
    }

    /// Moves the shared consumer to where each assigned partition's projections need it.
    pub(super) fn seek_to_starts(&self, consumer: &Consumer) -> Result<(), RunError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in self.shared.positions.assigned_of(&self.topics()) {
            let start = self.shared.positions.start(&topic, partition);
            tpl.add_partition_offset(
                &topic,
                partition,
                start.map_or(Offset::Beginning, Offset::Offset),
            )?;
        }
        if tpl.count() > 0 {
            seek(consumer, tpl)?;
        }
        Ok(())
    }

    /// Every topic of the fan-out's projections, once each.
    fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.slots.iter().flat_map(|s| s.topics.clone()).collect();
        topics.sort_unstable();
        topics.dedup();
        topics
    }

    /// Hands each projection that is not behind the messages of its topics it has not applied
    /// yet, all projections at once; returns the slots whose batch failed, with why.
    async fn deliver(&mut self, messages: &[Message]) -> Vec<(usize, RunError)> {
        let positions = &self.shared.positions;
        let work = self
            .slots
            .iter_mut()
            .enumerate()
            // A projection behind reads for itself until it has caught up.
            .filter(|(_, slot)| slot.behind.is_none())
            .map(|(index, slot)| async move {
                let name = slot.runner.projection.name();
                let mine = messages
                    .iter()
                    .filter(|m| slot.topics.contains(&m.raw.source.topic));
                let new = unapplied(positions, name, mine.clone());
                // Everything taken off the consumer for it, duplicates included: a restart that
                // re-read the topics from the beginning would show here, not in the applied count.
                metrics::counter!("projection_messages_consumed_total", "projection" => name)
                    .increment(mine.count() as u64);
                if new.is_empty() {
                    return None;
                }
                let started = Instant::now();
                match slot.runner.apply_batch(&new).await {
                    Ok(applied) => {
                        committed(positions, name, &new, applied, started);
                        None
                    }
                    Err(error) => Some((index, error)),
                }
            });
        join_all(work).await.into_iter().flatten().collect()
    }

    /// Newly assigned partitions were started where this process last knew the projections
    /// to be; another process may have applied more since. Reads the stored offsets again and
    /// moves the consumer forward past what every projection has applied.
    async fn position_fresh(&mut self, consumer: &Consumer) -> Result<(), RunError> {
        let fresh = self.shared.positions.take_fresh();
        if fresh.is_empty() {
            return Ok(());
        }
        self.load_positions().await?;
        let mut forward = TopicPartitionList::new();
        for ((topic, partition), assigned_at) in fresh {
            // The shared consumer starts this partition again: at or below every projection's
            // offset in it, so what it handed out before says nothing now.
            self.head.remove(&(topic.clone(), partition));
            let Some(start) = self.shared.positions.start(&topic, partition) else {
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
}
