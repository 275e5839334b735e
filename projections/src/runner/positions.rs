//! Where each projection of this process stands in each topic partition, shared by the consumer
//! loop ([`super::fanout`]) and the consumer's callbacks (rebalances and statistics).
//!
//! The stored offsets in `projection_offsets` are the truth; what is kept here is never ahead of
//! them (it is loaded from them, and moved only after a batch committed), so a partition
//! assigned at [`Positions::start`] can never skip a message a projection still needs: at worst
//! it reads again what was applied, which the projection then skips.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

/// A topic partition.
pub(super) type Partition = (String, i32);

/// One projection's place: its topics and, per partition, the next offset it has to apply.
struct Track {
    name: &'static str,
    topics: Vec<String>,
    next: HashMap<Partition, i64>,
}

#[derive(Default)]
struct Inner {
    tracks: Vec<Track>,
    /// The partitions the group gave this process, with the offset each was assigned at.
    assigned: HashMap<Partition, Option<i64>>,
    /// Assigned since the loop last looked: their stored offsets may have moved on (another
    /// process applied them), so the loop reads them again.
    fresh: HashSet<Partition>,
    /// Partitions whose high watermark, by the last statistics, is below a projection's
    /// offset: the log was recreated or cut back, until the loop has looked (see
    /// `super::log_reset`).
    beyond_log: HashSet<Partition>,
}

pub(super) struct Positions {
    inner: Mutex<Inner>,
    /// Woken by an assignment, so a loop with nothing to consume yet looks at it.
    pub(super) assigned: Notify,
    /// Why applying the last rebalance to the consumer failed, until the fan-out takes it.
    rebalance_failed: Mutex<Option<String>>,
}

impl Positions {
    pub(super) fn new(projections: impl IntoIterator<Item = (&'static str, Vec<String>)>) -> Self {
        let tracks = projections
            .into_iter()
            .map(|(name, topics)| Track {
                name,
                topics,
                next: HashMap::new(),
            })
            .collect();
        Self {
            inner: Mutex::new(Inner {
                tracks,
                ..Inner::default()
            }),
            assigned: Notify::new(),
            rebalance_failed: Mutex::new(None),
        }
    }

    /// Why applying a rebalance to the consumer failed, if it did since the last call: the
    /// group then counts partitions as this consumer's that it does not read, so the fan-out
    /// starts over with a consumer of its own (see `Fanout::consume`).
    pub(super) fn take_rebalance_failure(&self) -> Option<String> {
        self.rebalance_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain numbers behind, still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes stored offsets in (`projection`, topic, partition, next offset); a position only
    /// moves forward.
    pub(super) fn merge(&self, stored: impl IntoIterator<Item = (String, Partition, i64)>) {
        let mut inner = self.lock();
        for (projection, partition, next) in stored {
            if let Some(track) = inner.tracks.iter_mut().find(|t| t.name == projection) {
                let at = track.next.entry(partition).or_insert(next);
                *at = (*at).max(next);
            }
        }
    }

    /// The next offset `projection` needs in each partition it has stored one for: one
    /// look-up per batch, not one per message.
    pub(super) fn next_of(&self, projection: &str) -> Vec<(Partition, i64)> {
        let inner = self.lock();
        inner
            .tracks
            .iter()
            .find(|t| t.name == projection)
            .map(|track| track.next.iter().map(|(p, n)| (p.clone(), *n)).collect())
            .unwrap_or_default()
    }

    /// The next offset `projection` needs in `partition`, if it has stored one.
    pub(super) fn next(&self, projection: &str, topic: &str, partition: i32) -> Option<i64> {
        let inner = self.lock();
        let track = inner.tracks.iter().find(|t| t.name == projection)?;
        track.next.get(&(topic.to_owned(), partition)).copied()
    }

    /// Where a consumer of `partition` has to start so that every projection reading its topic
    /// gets what it still needs: the lowest of their offsets, the beginning if one has none.
    pub(super) fn start(&self, topic: &str, partition: i32) -> Option<i64> {
        start(&self.lock(), topic, partition)
    }

    /// The partitions assigned since the last call, with the offset each was assigned at.
    pub(super) fn take_fresh(&self) -> Vec<(Partition, Option<i64>)> {
        let mut inner = self.lock();
        let fresh: Vec<Partition> = inner.fresh.drain().collect();
        fresh
            .into_iter()
            .filter_map(|p| inner.assigned.get(&p).map(|at| (p.clone(), *at)))
            .collect()
    }

    /// The partitions the statistics found shorter than a projection's offset since the last
    /// call.
    pub(super) fn take_beyond_log(&self) -> Vec<Partition> {
        self.lock().beyond_log.drain().collect()
    }

    /// Whether a projection's offset in `partition` is past `high`, the log's end.
    pub(super) fn beyond(&self, partition: &Partition, high: i64) -> bool {
        let inner = self.lock();
        inner
            .tracks
            .iter()
            .any(|t| t.next.get(partition).is_some_and(|next| *next > high))
    }

    /// The projections with an offset in `partition` past `low`, the log's start.
    pub(super) fn past(&self, partition: &Partition, low: i64) -> Vec<&'static str> {
        let inner = self.lock();
        inner
            .tracks
            .iter()
            .filter(|t| t.next.get(partition).is_some_and(|next| *next > low))
            .map(|t| t.name)
            .collect()
    }

    /// Sets `projection`'s offset in `partition` to `next`, lower or not: after its stored
    /// offset was moved back to the start of a log that was recreated ([`Self::merge`] only
    /// moves forward).
    pub(super) fn rewind(&self, projection: &str, partition: Partition, next: i64) {
        let mut inner = self.lock();
        if let Some(track) = inner.tracks.iter_mut().find(|t| t.name == projection) {
            track.next.insert(partition, next);
        }
    }

    /// The assigned partitions of `topics`.
    pub(super) fn assigned_of(&self, topics: &[String]) -> Vec<Partition> {
        self.lock()
            .assigned
            .keys()
            .filter(|(topic, _)| topics.contains(topic))
            .cloned()
            .collect()
    }

    fn assign(&self, tpl: &mut TopicPartitionList) {
        let mut inner = self.lock();
        let partitions: Vec<Partition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        for (topic, partition) in partitions {
            let at = start(&inner, &topic, partition);
            let offset = at.map_or(Offset::Beginning, Offset::Offset);
            if let Err(error) = tpl.set_partition_offset(&topic, partition, offset) {
                tracing::warn!(%topic, partition, %error, "cannot set an assigned partition's offset");
            }
            inner.assigned.insert((topic.clone(), partition), at);
            inner.fresh.insert((topic, partition));
        }
    }

    fn revoke(&self, tpl: &TopicPartitionList) {
        let mut inner = self.lock();
        for element in tpl.elements() {
            let partition = (element.topic().to_owned(), element.partition());
            inner.assigned.remove(&partition);
            inner.fresh.remove(&partition);
            inner.beyond_log.remove(&partition);
        }
    }
}

fn start(inner: &Inner, topic: &str, partition: i32) -> Option<i64> {
    let key = (topic.to_owned(), partition);
    let mut lowest: Option<i64> = None;
    for track in inner
        .tracks
        .iter()
        .filter(|t| t.topics.iter().any(|t| t == topic))
    {
        let next = *track.next.get(&key)?;
        lowest = Some(lowest.map_or(next, |l| l.min(next)));
    }
    lowest
}

/// The consumer's callbacks: every assigned partition starts at [`Positions::start`], and
/// librdkafka's periodic statistics become each projection's lag.
pub(super) struct Context {
    pub(super) positions: Arc<Positions>,
}

impl ClientContext for Context {
    /// `projection_consumer_lag{projection}`: per assigned partition of its topics, the high
    /// watermark minus the next offset it has to apply (librdkafka's own lag counts from
    /// offsets committed to Kafka, which this consumer never commits: they live in PostgreSQL).
    /// A partition whose high watermark is below a projection's offset is noted for the loop,
    /// which wakes up to look at it.
    fn stats(&self, statistics: Statistics) {
        let mut inner = self.positions.lock();
        let mut beyond = Vec::new();
        for track in &inner.tracks {
            let mut lag = 0i64;
            for (topic, partition) in inner.assigned.keys() {
                if !track.topics.contains(topic) {
                    continue;
                }
                let Some(stats) = statistics
                    .topics
                    .get(topic)
                    .and_then(|t| t.partitions.get(partition))
                else {
                    continue;
                };
                if stats.hi_offset < 0 {
                    continue;
                }
                let next = track
                    .next
                    .get(&(topic.clone(), *partition))
                    .copied()
                    .unwrap_or(stats.lo_offset.max(0));
                if next > stats.hi_offset {
                    beyond.push((topic.clone(), *partition));
                }
                lag += (stats.hi_offset - next).max(0);
            }
            metrics::gauge!("projection_consumer_lag", "projection" => track.name).set(lag as f64);
        }
        if !beyond.is_empty() {
            inner.beyond_log.extend(beyond);
            drop(inner);
            self.positions.assigned.notify_one();
        }
    }
}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            self.positions.assign(tpl);
            tracing::info!(partitions = tpl.count(), "partitions assigned");
            self.positions.assigned.notify_one();
            if cooperative {
                consumer.incremental_assign(tpl)
            } else {
                consumer.assign(tpl)
            }
        } else {
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                tracing::warn!(error = ?err, "rebalance error: giving up the partitions");
            }
            self.positions.revoke(tpl);
            tracing::info!(partitions = tpl.count(), "partitions revoked");
            if cooperative {
                consumer.incremental_unassign(tpl)
            } else {
                consumer.unassign()
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "applying a rebalance failed; the consumer starts over");
            *self
                .positions
                .rebalance_failed
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
            self.positions.assigned.notify_one();
        }
    }
}

#[cfg(test)]
#[path = "positions_tests.rs"]
mod tests;
