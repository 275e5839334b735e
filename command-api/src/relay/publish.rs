//! Publishing a batch: upcast each stored event to its current version, Avro-encode it through
//! the schema registry, send it keyed by aggregate id with the metadata headers, and wait for
//! the broker's acknowledgements in order.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use schemas::wire::EventEncoder;

use super::tail::StoredEvent;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("encoding {event_type} (event {event_id}) failed")]
    Encode {
        event_type: String,
        event_id: uuid::Uuid,
        #[source]
        source: schemas::SchemaError,
    },
    #[error("the broker did not acknowledge event {event_id}")]
    Delivery {
        event_id: uuid::Uuid,
        #[source]
        source: KafkaError,
    },
}

pub struct Publisher {
    producer: FutureProducer,
    encoder: EventEncoder,
    topic_prefix: String,
    /// How long a whole batch may wait for its acknowledgements.
    ack_timeout: Duration,
}

/// An encoded message ready to send.
struct Outgoing {
    topic: String,
    key: String,
    payload: Vec<u8>,
    headers: OwnedHeaders,
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

fn headers(event: &StoredEvent, event_version: &str) -> OwnedHeaders {
    let meta = |key: &str| {
        event
            .metadata
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    let (correlation, causation, trace) = (
        meta("correlation_id"),
        meta("causation_id"),
        meta("traceparent"),
    );
    let (occurred_at, actor) = (meta("occurred_at"), meta("actor"));
    let (event_id, sequence, position) = (
        event.event_id.to_string(),
        event.sequence.to_string(),
        event.checkpoint.global_position.to_string(),
    );
    OwnedHeaders::new_with_capacity(12)
        .insert(header("event_id", &event_id))
        .insert(header("event_type", &event.event_type))
        .insert(header("event_version", event_version))
        .insert(header("aggregate_type", &event.aggregate_type))
        .insert(header("aggregate_id", &event.aggregate_id))
        .insert(header("sequence", &sequence))
        .insert(header("global_position", &position))
        .insert(header("correlation_id", &correlation))
        .insert(header("causation_id", &causation))
        .insert(header("traceparent", &trace))
        .insert(header("occurred_at", &occurred_at))
        .insert(header("actor", &actor))
}

impl Publisher {
    pub fn new(
        producer: FutureProducer,
        encoder: EventEncoder,
        topic_prefix: String,
        ack_timeout: Duration,
    ) -> Self {
        Self {
            producer,
            encoder,
            topic_prefix,
            ack_timeout,
        }
    }

    async fn encode(&self, event: &StoredEvent) -> Result<Outgoing, PublishError> {
        let (version, payload) = domain::upcast::upcast(
            &event.event_type,
            &event.event_version,
            event.payload.clone(),
        );
        let topic = infra::kafka::topic_for(&self.topic_prefix, &event.aggregate_type);
        let bytes = self
            .encoder
            .encode(&topic, &event.event_type, &payload)
            .await
            .map_err(|source| PublishError::Encode {
                event_type: event.event_type.clone(),
                event_id: event.event_id,
                source,
            })?;
        Ok(Outgoing {
            topic,
            key: event.aggregate_id.clone(),
            payload: bytes,
            headers: headers(event, &version),
        })
    }

    /// Publishes the batch. On failure, returns how many leading events were acknowledged
    /// (the checkpoint may move past those) with the error.
    pub async fn publish(&self, events: &[StoredEvent]) -> Result<(), (usize, PublishError)> {
        let mut outgoing = Vec::with_capacity(events.len());
        for event in events {
            outgoing.push(self.encode(event).await.map_err(|e| (0, e))?);
        }
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(outgoing.len());
        for (index, message) in outgoing.iter().enumerate() {
            let future = self.enqueue(message).await.map_err(|source| {
                (
                    0,
                    PublishError::Delivery {
                        event_id: events[index].event_id,
                        source,
                    },
                )
            })?;
            pending.push(future);
        }
        // The producer fails a message after `message.timeout.ms`; this bound also covers a
        // client or broker that stops answering altogether (seen with Tansu), so the relay
        // reconnects and re-publishes instead of waiting forever.
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        tracing::debug!(events = events.len(), "relay: awaiting acknowledgements");
        for (index, future) in pending.into_iter().enumerate() {
            let failure = match tokio::time::timeout_at(deadline, future).await {
                Ok(Ok(Ok(_))) => continue,
                Ok(Ok(Err((error, _)))) => error,
                Ok(Err(_)) => KafkaError::Canceled,
                Err(_) => KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            };
            tracing::debug!(index, error = %failure, "relay: delivery failed");
            return Err((
                index,
                PublishError::Delivery {
                    event_id: events[index].event_id,
                    source: failure,
                },
            ));
        }
        Ok(())
    }

    /// Hands one message to the producer, waiting while its local queue is full.
    async fn enqueue(&self, message: &Outgoing) -> Result<DeliveryFuture, KafkaError> {
        loop {
            let record = FutureRecord::to(&message.topic)
                .key(&message.key)
                .payload(&message.payload)
                .headers(message.headers.clone());
            match self.producer.send_result(record) {
                Ok(future) => return Ok(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tracing::debug!("relay: producer queue full");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }
}
