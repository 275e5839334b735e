//! A partition whose log is shorter than a projection's stored offset.
//!
//! Offsets are positions in one log. When a topic is deleted and created again (an operator,
//! a rebuilt cluster, a wiped broker volume beside a kept database), or a partition is cut back
//! by an unclean leader election, the relay goes on publishing from its own checkpoint into a
//! log that starts again at a lower offset, and every message there sits below the offsets the
//! projections stored for the old log: none would be applied, nothing dead-lettered, and the
//! lag, counted up to the high watermark, would read 0. The consumer's statistics note such a
//! partition ([`super::positions`]); the loop asks the brokers for its watermarks, and where
//! the log really ends below a projection's offset, moves every projection's offset in that
//! partition back to the log's start ([`crate::offsets::reset_to_log_start`]): a lagging one's
//! offset, below the new log's end, counted in the old log too. The partition is read again
//! from there. Only this process's projections are reset: a projection that another process
//! runs (`projector.read_models` split across processes) is reset there only if its own offset
//! lies past the log's end; a lagging one is not, and `projector replay` mends it. Nothing is
//! applied twice: each aggregate's version skips what was. Events the old log held and the new
//! one lacks come from the event store, as any gap does.

use std::time::Duration;

use rdkafka::consumer::Consumer as _;

use super::fanout::{Consumer, Fanout};
use super::RunError;

impl Fanout {
    /// Looks at the partitions the statistics found shorter than a projection's offset; moves
    /// back every offset past the end of its log, and the consumer with them.
    pub(super) async fn reset_beyond_log(&mut self, consumer: &Consumer) -> Result<(), RunError> {
        let suspects = self.shared.positions.take_beyond_log();
        let mut reset = false;
        for (topic, partition) in suspects {
            let watermarks = tokio::task::block_in_place(|| {
                consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))
            });
            let (low, high) = match watermarks {
                Ok(watermarks) => watermarks,
                Err(error) => {
                    // The next statistics note it again.
                    tracing::debug!(%topic, partition, %error, "reading a partition's watermarks failed");
                    continue;
                }
            };
            let key = (topic.clone(), partition);
            if !self.shared.positions.beyond(&key, high) {
                continue;
            }
            // The projections catching up on consumers of their own stop first: one would go
            // on committing batches from its old offset, moving it forward past the reset.
            if !reset {
                self.finish_catch_ups().await?;
            }
            // The log is not the one the offsets counted in: every projection's offset in it
            // goes back to its start, a lagging one's too (its offset, below the new log's
            // end, would skip the new log's first messages as well).
            for name in self.shared.positions.past(&key, low) {
                let stored =
                    crate::offsets::reset_to_log_start(&self.pool, name, &topic, partition, low)
                        .await?;
                let next = stored.unwrap_or(low);
                tracing::error!(projection = name, %topic, partition, low, high, next,
                    "the partition's log ends before a stored offset (the topic was recreated, \
                     or the partition cut back): reading it again from its start; what was \
                     applied is skipped by version");
                metrics::counter!("projection_log_resets_total", "projection" => name).increment(1);
                self.shared.positions.rewind(name, key.clone(), next);
                reset = true;
            }
        }
        if reset {
            // Every projection reads from the shared consumer again, from the offsets it has
            // now (the catch-up tasks were stopped above).
            self.seek_to_starts(consumer)?;
        }
        Ok(())
    }
}
