//! Publishing a batch: upcast each stored event to its current version, Avro-encode it through
//! the schema registry, send it keyed by aggregate id with the metadata headers, and wait for
//! the broker's acknowledgements in order.

use std::time::Duration;

use infra::event_store::{message_headers, PublishedEvent};
use infra::telemetry::propagation;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use schemas::wire::EventEncoder;
use sqlx::PgPool;
use tracing::Instrument;

use crate::inflight::InFlight;
use crate::tail::StoredEvent;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("encoding {event_type} (event {event_id}) failed")]
    Encode {
        event_type: String,
        event_id: uuid::Uuid,
        #[source]
        source: schemas::SchemaError,
    },
    #[error("parking an unencodable event failed")]
    Park(#[source] sqlx::Error),
    #[error("parking an unencodable event: the database did not answer within {0:?}")]
    ParkUnanswered(Duration),
    /// Written by newer code than this relay's (during a rolling update, say): encoding it with
    /// the schemas this relay has would drop what it does not know of, and parking it would
    /// leave it out of the log. The relay gives its lock up and tries again later, so a newer
    /// relay standing by takes over.
    #[error("event {event_id} is {event_type} v{version}, newer than this relay knows ({known}); a newer relay must publish it")]
    Newer {
        event_type: String,
        version: String,
        known: String,
        event_id: uuid::Uuid,
    },
    #[error("the broker did not acknowledge event {event_id}")]
    Delivery {
        event_id: uuid::Uuid,
        #[source]
        source: KafkaError,
    },
}

impl PublishError {
    /// The event and the brokers' error, when they refused it with an error they give again
    /// however often it is sent: it is larger than its topic allows, the relay may not write
    /// the topic, a policy forbids it. Sending it again cannot help until an operator changes
    /// the topic or the relay's rights; the relay still retries (its checkpoint may not pass
    /// the event), and says so louder ([`refuses_for_good`]). The events after it in its batch
    /// were already handed to the producer when the refusal came back, so those of other
    /// topics and partitions may reach Kafka before it, and again at each retry (consumers
    /// skip the copies by their versions).
    pub fn refusal(&self) -> Option<(uuid::Uuid, RDKafkaErrorCode)> {
        match self {
            PublishError::Delivery {
                event_id,
                source: KafkaError::MessageProduction(code),
            } if refuses_for_good(*code) => Some((*event_id, *code)),
            _ => None,
        }
    }
}

/// Produce errors the brokers (or the producer, for its own size limit) give every time for
/// the same message and the same rights: Kafka marks none of them retriable.
fn refuses_for_good(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageSizeTooLarge
            | C::MessageBatchTooLarge
            | C::InvalidTopic
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::PolicyViolation
            | C::InvalidRecord
            | C::UnsupportedForMessageFormat
    )
}

pub struct Publisher {
    producer: FutureProducer,
    encoder: EventEncoder,
    topic_prefix: String,
    /// How long a whole batch may wait for its acknowledgements.
    ack_timeout: Duration,
    /// How long parking an event may wait for the database (`relay.database_timeout_ms`).
    park_timeout: Duration,
}

/// An encoded message ready to send.
struct Outgoing {
    topic: String,
    key: String,
    payload: Vec<u8>,
    headers: OwnedHeaders,
    /// Its producer span while spans are exported; it ends with the broker's answer.
    span: Option<tracing::Span>,
}

/// The producer span of one message (OpenTelemetry's messaging conventions), a child of the
/// trace stored with the event.
fn producer_span(event: &StoredEvent, topic: &str) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "publish",
        otel.name = %format_args!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = %topic,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.message.key = %event.aggregate_id,
        messaging.kafka.offset = tracing::field::Empty,
        messaging.message.id = %event.event_id,
        global_position = event.checkpoint.global_position,
    );
    propagation::set_parent(
        &span,
        &propagation::from_traceparent(&event.metadata.traceparent),
    );
    span
}

/// The message headers; `traceparent` names the producer span when there is one, and then
/// `event_traceparent` keeps the event's own (a consumer records that one, as a rebuild from
/// the store does).
fn headers(event: &StoredEvent, event_version: &str, span: Option<&tracing::Span>) -> OwnedHeaders {
    let traceparent = span.and_then(propagation::traceparent_of_span);
    let published = PublishedEvent {
        event_id: event.event_id,
        event_type: &event.event_type,
        event_version,
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        sequence: event.sequence,
        global_position: event.checkpoint.global_position,
        metadata: &event.metadata,
    };
    let headers = message_headers(&published).iter().fold(
        OwnedHeaders::new_with_capacity(13),
        |headers, (key, value)| {
            let value: &str = match &traceparent {
                Some(ours) if *key == propagation::TRACEPARENT => ours,
                _ => value,
            };
            headers.insert(Header {
                key,
                value: Some(value),
            })
        },
    );
    match traceparent {
        Some(_) => headers.insert(Header {
            key: propagation::EVENT_TRACEPARENT,
            value: Some(event.metadata.traceparent.as_str()),
        }),
        None => headers,
    }
}

impl Publisher {
    pub fn new(
        producer: FutureProducer,
        encoder: EventEncoder,
        topic_prefix: String,
        (ack_timeout, park_timeout): (Duration, Duration),
    ) -> Self {
        Self {
            producer,
            encoder,
            topic_prefix,
            ack_timeout,
            park_timeout,
        }
    }

    /// The message for `event`, whose payload (taken out of it) is `payload`.
    async fn encode(
        &self,
        event: &StoredEvent,
        payload: serde_json::Value,
    ) -> Result<Outgoing, PublishError> {
        let (version, payload) =
            domain::upcast::upcast(&event.event_type, &event.event_version, payload);
        newer_than_known(event, &version)?;
        let topic = infra::kafka::topic_for(&self.topic_prefix, &event.aggregate_type);
        let span = infra::telemetry::exporting().then(|| producer_span(event, &topic));
        // A registry call on a schema's first use is a child of the producer span.
        let encoding = self.encoder.encode(&topic, &event.event_type, &payload);
        let encoded = match &span {
            Some(span) => encoding.instrument(span.clone()).await,
            None => encoding.await,
        };
        let bytes = encoded.map_err(|source| PublishError::Encode {
            event_type: event.event_type.clone(),
            event_id: event.event_id,
            source,
        })?;
        Ok(Outgoing {
            key: event.aggregate_id.clone(),
            payload: bytes,
            headers: headers(event, &version, span.as_ref()),
            topic,
            span,
        })
    }

    /// Encodes the batch and hands it to the producer; the broker's acknowledgements are
    /// awaited later ([`InFlight::acknowledged`]), so the next batch can be read and encoded
    /// meanwhile.
    ///
    /// An event whose payload cannot be encoded against its schema is parked (see [`park`])
    /// and left out. Any other failure (an event newer than this relay knows, the registry
    /// unreachable, the producer refusing the message at once) ends the batch before that
    /// event: what came before is sent, and [`InFlight::halted`] says why the relay must stop
    /// after settling it, so a retry starts at the failed event and sends nothing twice.
    /// Before, such a failure dropped the batch's prefix and the batch in flight unsettled,
    /// and every retry published them again.
    pub async fn send(&self, pool: &PgPool, events: Vec<StoredEvent>) -> InFlight {
        let mut futures = Vec::with_capacity(events.len());
        let mut sent = Vec::with_capacity(events.len());
        let mut spans = Vec::new();
        let mut halted = None;
        for mut event in events {
            let payload = std::mem::take(&mut event.payload);
            let message = match self.encode(&event, payload).await {
                Ok(message) => message,
                Err(PublishError::Encode { source, .. }) if is_permanent(&source) => {
                    let parked =
                        tokio::time::timeout(self.park_timeout, park(pool, &event, &source));
                    let parked = parked
                        .await
                        .unwrap_or(Err(PublishError::ParkUnanswered(self.park_timeout)));
                    if let Err(error) = parked {
                        halted = Some(error);
                        break;
                    }
                    // Settled with the batch: the checkpoint moves past it. Before, a parked
                    // event with nothing published after it stayed ahead of the checkpoint,
                    // was parked again at every restart, and its age paged RelayBehind.
                    futures.push(None);
                    sent.push((event.checkpoint, event.event_id));
                    continue;
                }
                Err(error) => {
                    halted = Some(error);
                    break;
                }
            };
            let span = message.span;
            let record = FutureRecord::to(&message.topic)
                .key(&message.key)
                .payload(&message.payload)
                .headers(message.headers);
            let future = match self.enqueue(record).await {
                Ok(future) => future,
                Err(source) => {
                    halted = Some(PublishError::Delivery {
                        event_id: event.event_id,
                        source,
                    });
                    break;
                }
            };
            futures.push(Some(future));
            sent.push((event.checkpoint, event.event_id));
            if let Some(span) = span {
                spans.resize_with(sent.len() - 1, || None);
                spans.push(Some(span));
            }
        }
        InFlight {
            events: sent,
            futures,
            spans,
            ack_timeout: self.ack_timeout,
            halted,
        }
    }

    /// Hands one message to the producer, waiting while its local queue is full (the record
    /// comes back with the refusal and is offered again as it is, headers included).
    async fn enqueue<'a>(
        &self,
        mut record: FutureRecord<'a, String, Vec<u8>>,
    ) -> Result<DeliveryFuture, KafkaError> {
        loop {
            match self.producer.send_result(record) {
                Ok(future) => return Ok(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), refused)) => {
                    tracing::debug!("relay: producer queue full");
                    record = refused;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }
}

/// Refuses an event of a type this build has no schema for, or of a version above its newest
/// schema: newer code wrote it. A version that is not a number is left to the encoding (which
/// parks what does not fit).
fn newer_than_known(event: &StoredEvent, version: &str) -> Result<(), PublishError> {
    let newer = |known: String| PublishError::Newer {
        event_type: event.event_type.clone(),
        version: version.to_owned(),
        known,
        event_id: event.event_id,
    };
    match schemas::catalogue::latest(&event.event_type) {
        Err(_) => Err(newer("no such type".to_owned())),
        Ok(latest) => match version.parse::<u32>() {
            Ok(v) if v > latest.file.version => Err(newer(format!("v{}", latest.file.version))),
            _ => Ok(()),
        },
    }
}

/// True when encoding the same event again cannot succeed: the payload does not fit the
/// schema, or there is no usable schema for it. The registry being unreachable or refusing a
/// call may pass.
fn is_permanent(error: &schemas::SchemaError) -> bool {
    use schemas::SchemaError as E;
    !matches!(error, E::Registry(_) | E::RegistryUnreachable(_))
}

/// Parks an event the relay cannot encode in `relay_parked_events`, counted by
/// `relay_events_parked_total` and logged as an error, so one bad event never stops the relay.
/// An event parked already (met again after an interruption before the checkpoint passed it)
/// is neither counted nor logged again.
pub async fn park(
    pool: &PgPool,
    event: &StoredEvent,
    error: &schemas::SchemaError,
) -> Result<(), PublishError> {
    let reason = infra::error_chain(error);
    let parked = sqlx::query(
        "INSERT INTO relay_parked_events
             (event_id, global_position, aggregate_type, aggregate_id, event_type, error)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event.event_id)
    .bind(event.checkpoint.global_position)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(&event.event_type)
    .bind(&reason)
    .execute(pool)
    .await
    .map_err(PublishError::Park)?;
    if parked.rows_affected() == 1 {
        metrics::counter!("relay_events_parked_total").increment(1);
        tracing::error!(event_id = %event.event_id, event_type = %event.event_type,
            global_position = event.checkpoint.global_position, error = %reason,
            "relay: event cannot be encoded; parked in relay_parked_events");
    }
    Ok(())
}
