//! A projection that fell behind the others of its fan-out, catching up on a consumer of its
//! own.
//!
//! When a projection's batch fails, the shared consumer goes on for the others and hands it
//! nothing more. Its catch-up task reads the partitions of its topics that this process is
//! assigned, from its stored offsets, on a consumer outside the group (`assign`, nothing
//! committed), and applies them with a backoff between failed attempts (200 ms doubling to
//! 5 s). Once it has applied everything the shared consumer has handed out, the fan-out stops
//! the task and hands the projection its share again ([`super::fanout`]). So a projection that
//! keeps failing costs the others nothing: before, the shared consumer was moved back to the
//! failing projection's offset at each retry, and the others re-read everything since.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use schemas::wire::EventDecoder;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::batch::{decode, fill_batch, note_recoverable, recoverable};
use super::fanout::{Fanout, FIRST_BACKOFF, MAX_BACKOFF};
use super::positions::{Partition, Positions};
use super::{own, Message, RunError, Runner};

/// What a catch-up task shares with its fan-out.
pub(super) struct Shared {
    pub(super) positions: Arc<Positions>,
    pub(super) decoder: Arc<EventDecoder>,
    /// Woken after each batch a catch-up task applied: the fan-out then looks whether the
    /// projection has caught up.
    pub(super) progress: Arc<Notify>,
    pub(super) settings: infra::settings::Settings,
}

/// A running catch-up task.
pub(super) struct Behind {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), RunError>>,
    /// Set as the task ends, before it wakes the fan-out (the handle reports the end only
    /// after the task's last poll, which may be after the fan-out has looked).
    ended: Arc<AtomicBool>,
}

impl Behind {
    /// Starts catching `runner`'s projection up on `topics`, after a first backoff (its batch
    /// has just failed).
    pub(super) fn start(
        runner: Arc<Runner>,
        topics: Vec<String>,
        shared: &Shared,
        group: &str,
    ) -> Result<Self, RunError> {
        let name = runner.projection.name();
        let kafka = &shared.settings.kafka;
        let mut config = infra::kafka::consumer_config(kafka, &format!("{group}.{name}"));
        // Its lag is the projection's, which the shared consumer's statistics already report.
        config.set("statistics.interval.ms", "0");
        // One such consumer per projection behind: keep what each fetches ahead small, unless
        // the operators said otherwise.
        if !kafka
            .properties
            .0
            .iter()
            .any(|(key, _)| key == "queued.max.messages.kbytes")
        {
            config.set("queued.max.messages.kbytes", "8192");
        }
        let consumer: StreamConsumer = config.create()?;
        let (stop, stopped) = watch::channel(false);
        let ended = Arc::new(AtomicBool::new(false));
        let task = CatchUp {
            ended: ended.clone(),
            runner,
            topics,
            consumer,
            positions: shared.positions.clone(),
            decoder: shared.decoder.clone(),
            progress: shared.progress.clone(),
            batch_size: shared.settings.projector.batch_size,
        };
        Ok(Self {
            stop,
            task: tokio::spawn(task.run(stopped)),
            ended,
        })
    }

    /// Whether the task ended by itself: only a failure of its consumer ends it.
    pub(super) fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst) || self.task.is_finished()
    }

    /// Stops the task after the batch in hand and waits for it; its error, if it ended with one.
    pub(super) async fn finish(self) -> Result<(), RunError> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Ok(()),
        }
    }
}

struct CatchUp {
    ended: Arc<AtomicBool>,
    runner: Arc<Runner>,
    topics: Vec<String>,
    consumer: StreamConsumer,
    positions: Arc<Positions>,
    decoder: Arc<EventDecoder>,
    progress: Arc<Notify>,
    batch_size: usize,
}

impl CatchUp {
    async fn run(self, mut stopped: watch::Receiver<bool>) -> Result<(), RunError> {
        // However the task ends (a failure, a panic), the fan-out looks at it at once.
        let _wake = Wake(self.ended.clone(), self.progress.clone());
        let result = self.catch_up(&mut stopped).await;
        // Closing a consumer blocks: keep it off the async workers.
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        result
    }

    async fn catch_up(&self, stopped: &mut watch::Receiver<bool>) -> Result<(), RunError> {
        let name = self.runner.projection.name();
        let mut backoff = FIRST_BACKOFF;
        let mut wait = Some(backoff);
        // The partitions the consumer reads; `None` means "assign again at the stored offsets"
        // (at the start, and after a failed batch: even when this process's assignment is
        // empty by then, so that the consumer does not read on past the batch that failed).
        let mut reading: Option<Vec<Partition>> = None;
        loop {
            if let Some(pause) = wait.take() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stopped.changed() => return Ok(()),
                }
            }
            if *stopped.borrow() {
                return Ok(());
            }
            // The group may have moved partitions since: follow this process's assignment.
            let mut assigned = self.positions.assigned_of(&self.topics);
            assigned.sort_unstable();
            if reading.as_ref() != Some(&assigned) {
                self.assign(&assigned)?;
                reading = Some(assigned);
            }
            let first = tokio::select! {
                first = self.consumer.recv() => match first {
                    Ok(message) => own(&message),
                    Err(error) if recoverable(&error) => {
                        note_recoverable(&error);
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                },
                _ = stopped.changed() => return Ok(()),
                // Nothing to read: look at the assignment again now and then.
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            };
            let batch = fill_batch(&self.consumer, first, self.batch_size).await?;
            let Some(messages) = decode(&self.decoder, batch, stopped).await? else {
                return Ok(());
            };
            metrics::counter!("projection_messages_consumed_total", "projection" => name)
                .increment(messages.len() as u64);
            let new = unapplied(&self.positions, name, messages.iter());
            if new.is_empty() {
                self.progress.notify_one();
                continue;
            }
            let started = Instant::now();
            match self.runner.apply_batch(&new).await {
                Ok(applied) => {
                    committed(&self.positions, name, &new, applied, started);
                    backoff = FIRST_BACKOFF;
                    self.progress.notify_one();
                }
                Err(error) => {
                    failed(name, &error, backoff);
                    wait = Some(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    // Read the batch again: from the stored offsets.
                    reading = None;
                }
            }
        }
    }

    /// Reads `partitions` from the projection's stored offsets (the beginning where it has none).
    fn assign(&self, partitions: &[Partition]) -> Result<(), RunError> {
        let name = self.runner.projection.name();
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            let offset = self
                .positions
                .next(name, topic, *partition)
                .map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(topic, *partition, offset)?;
        }
        Ok(self.consumer.assign(&tpl)?)
    }
}

/// The fan-out's side of catching up: rejoining, and stopping every task.
impl Fanout {
    /// Hands each projection behind whose catch-up has applied everything the shared consumer
    /// handed out its share again. A catch-up task that ended by itself (its consumer failed)
    /// fails the fan-out.
    pub(super) async fn rejoin_caught_up(&mut self) -> Result<(), RunError> {
        for slot in &mut self.slots {
            let Some(behind) = &slot.behind else {
                continue;
            };
            let name = slot.runner.projection.name();
            let caught_up = behind.ended()
                || self.shared.positions.assigned_of(&slot.topics).iter().all(
                    |(topic, partition)| {
                        // A partition the shared consumer has handed nothing of since it was
                        // assigned starts at or below this projection's offset.
                        let Some(head) = self.head.get(&(topic.clone(), *partition)) else {
                            return true;
                        };
                        self.shared
                            .positions
                            .next(name, topic, *partition)
                            .is_some_and(|next| next >= *head)
                    },
                );
            if caught_up {
                if let Some(behind) = slot.behind.take() {
                    behind.finish().await?;
                }
                tracing::info!(projection = name, "caught up: back on the shared consumer");
            }
        }
        Ok(())
    }

    /// Stops every catch-up task (each after its batch in hand); the first error one ended
    /// with. The shared consumer's `head` no longer means anything to anyone then.
    pub(super) async fn finish_catch_ups(&mut self) -> Result<(), RunError> {
        let mut result = Ok(());
        for slot in &mut self.slots {
            if let Some(behind) = slot.behind.take() {
                let ended = behind.finish().await;
                if result.is_ok() {
                    result = ended;
                }
            }
        }
        self.head.clear();
        result
    }
}

/// Marks the task ended and wakes the fan-out when dropped.
struct Wake(Arc<AtomicBool>, Arc<Notify>);

impl Drop for Wake {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        self.1.notify_one();
    }
}

/// The messages `projection` has not applied yet, by its positions: what a rebalance or a
/// retry hands it again is skipped here.
pub(super) fn unapplied<'a>(
    positions: &Positions,
    projection: &str,
    messages: impl Iterator<Item = &'a Message>,
) -> Vec<&'a Message> {
    let stored = positions.next_of(projection);
    messages
        .filter(|m| {
            let s = &m.raw.source;
            stored
                .iter()
                .find(|((topic, partition), _)| *partition == s.partition && *topic == s.topic)
                .is_none_or(|(_, next)| s.offset >= *next)
        })
        .collect()
}

/// After a batch of `projection` committed: its positions moved past it, and its metrics.
pub(super) fn committed(
    positions: &Positions,
    projection: &'static str,
    batch: &[&Message],
    applied: u64,
    started: Instant,
) {
    // Once per partition: the batch's highest offset in it, plus one.
    let mut reached: Vec<(Partition, i64)> = Vec::new();
    for m in batch {
        let s = &m.raw.source;
        match reached
            .iter_mut()
            .find(|(p, _)| p.1 == s.partition && p.0 == s.topic)
        {
            Some((_, next)) => *next = (*next).max(s.offset + 1),
            None => reached.push(((s.topic.clone(), s.partition), s.offset + 1)),
        }
    }
    positions.merge(
        reached
            .into_iter()
            .map(|(p, next)| (projection.to_owned(), p, next)),
    );
    tracing::debug!(
        projection,
        messages = batch.len(),
        applied,
        "batch committed"
    );
    metrics::counter!("projection_events_applied_total", "projection" => projection)
        .increment(applied);
    metrics::histogram!("projection_apply_seconds", "projection" => projection)
        .record(started.elapsed().as_secs_f64());
}

/// After a batch of `projection` failed: logged and counted; it is tried again in `retry_in`.
pub(super) fn failed(projection: &'static str, error: &RunError, retry_in: Duration) {
    metrics::counter!("projection_restarts_total", "projection" => projection).increment(1);
    tracing::warn!(projection, error = %crate::error_chain(error),
        retry_in_ms = retry_in.as_millis() as u64,
        "projection interrupted: it retries from its stored offsets on a consumer of its own");
}
