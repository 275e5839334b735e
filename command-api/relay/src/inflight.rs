//! A batch handed to the producer, until its acknowledgements are in.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::DeliveryFuture;

use crate::publish::PublishError;
use crate::tail::Checkpoint;

/// A sent batch whose acknowledgements are still due.
pub struct InFlight {
    pub(crate) events: Vec<(Checkpoint, uuid::Uuid)>,
    /// By position in `events`; `None` for an event parked instead of sent, which counts as
    /// settled (the checkpoint moves past it) but not as published.
    pub(crate) futures: Vec<Option<DeliveryFuture>>,
    /// Producer spans by position in `events` (empty while spans are not exported).
    pub(crate) spans: Vec<Option<tracing::Span>>,
    pub(crate) ack_timeout: Duration,
    /// Why the batch ended before its last event (which this relay could not or must not
    /// publish now).
    pub(crate) halted: Option<PublishError>,
}

impl InFlight {
    /// Why the relay must stop once this batch (and the one before it) is settled.
    pub fn halted(&mut self) -> Option<PublishError> {
        self.halted.take()
    }

    /// Waits for every acknowledgement, in order. Returns the checkpoint of the last event of
    /// the longest acknowledged (or parked) prefix (None if none was), how many of it were
    /// published, and the error that ended it, if any.
    pub async fn acknowledged(self) -> (Option<Checkpoint>, usize, Option<PublishError>) {
        // The producer fails a message after `message.timeout.ms`; this bound also covers a
        // client or broker that stops answering altogether, so the relay reconnects and
        // re-publishes instead of waiting forever.
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        let (mut last, mut count) = (None, 0);
        let mut spans = self.spans.into_iter();
        for ((checkpoint, event_id), future) in self.events.into_iter().zip(self.futures) {
            let span = spans.next().flatten();
            let Some(future) = future else {
                last = Some(checkpoint);
                continue;
            };
            let failure = match tokio::time::timeout_at(deadline, future).await {
                Ok(Ok(Ok(delivery))) => {
                    // Entered once more so that the span ends with the acknowledgement (a
                    // span's end is the last time it was left, not when it is dropped).
                    if let Some(span) = &span {
                        span.in_scope(|| {
                            span.record("messaging.destination.partition.id", delivery.partition);
                            span.record("messaging.kafka.offset", delivery.offset);
                        });
                    }
                    last = Some(checkpoint);
                    count += 1;
                    continue;
                }
                Ok(Ok(Err((error, _)))) => error,
                Ok(Err(_)) => KafkaError::Canceled,
                Err(_) => KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            };
            if let Some(span) = &span {
                span.in_scope(|| span.record("otel.status_code", "error"));
            }
            return (
                last,
                count,
                Some(PublishError::Delivery {
                    event_id,
                    source: failure,
                }),
            );
        }
        (last, count, None)
    }
}
