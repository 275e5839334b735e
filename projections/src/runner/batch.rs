//! Taking a batch off the consumer and decoding it once for every projection of the fan-out.

use std::time::{Duration, Instant};

use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use schemas::wire::EventDecoder;
use tokio::sync::watch;

use super::fanout::{FIRST_BACKOFF, MAX_BACKOFF};
use super::{own, Message, Raw, RunError};
use crate::envelope::Envelope;

/// Decodes every message once for all projections (a schema fetch happens here, before any
/// transaction starts). While the registry cannot be reached the batch waits and tries again;
/// `None` if the process is told to stop meanwhile.
pub(super) async fn decode(
    decoder: &EventDecoder,
    batch: Vec<Raw>,
    stopped: &mut watch::Receiver<bool>,
) -> Result<Option<Vec<Message>>, RunError> {
    let mut backoff = FIRST_BACKOFF;
    let started = Instant::now();
    'attempt: loop {
        let mut decoded = Vec::with_capacity(batch.len());
        for raw in &batch {
            // Written by newer code than this projector's (a rolling update under way): this
            // build cannot read it as it was meant, and set aside it would be skipped for good
            // (later events of its aggregate apply over the gap). The batch waits for a newer
            // projector to take the partition over, as the relay waits for a newer relay.
            let waited_long = started.elapsed() >= UNKNOWN_TYPE_WAIT;
            if let Some(newer) = newer_than_known(&raw.headers, waited_long) {
                metrics::counter!("projection_newer_events_waited_total").increment(1);
                tracing::warn!(event = %newer, topic = %raw.source.topic,
                    partition = raw.source.partition, offset = raw.source.offset,
                    retry_in_ms = backoff.as_millis() as u64,
                    "an event newer than this projector knows: the batch waits for a newer projector (finish the rollout)");
                if !pause(&mut backoff, stopped).await {
                    return Ok(None);
                }
                continue 'attempt;
            }
            match decoder.decode(&raw.payload).await {
                Ok(event) => decoded.push(
                    Envelope::of_decoded(raw.source.clone(), raw.headers.clone(), event)
                        .map_err(|error| error.to_string()),
                ),
                // The registry being unreachable says nothing about the message; nor, for a
                // while, does a schema it does not have (a follower not caught up, a registry
                // being switched over) or credentials it refuses (a rotation half done).
                Err(schemas::SchemaError::Registry(error))
                    if !waited_long && refused_for_now(&error) =>
                {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64,
                        "schema registry refused the schema for now: the batch waits");
                    if !pause(&mut backoff, stopped).await {
                        return Ok(None);
                    }
                    continue 'attempt;
                }
                Err(schemas::SchemaError::RegistryUnreachable(error)) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64,
                        "schema registry unreachable: the batch waits");
                    if !pause(&mut backoff, stopped).await {
                        return Ok(None);
                    }
                    continue 'attempt;
                }
                Err(error) => decoded.push(Err(format!("undecodable: {error}"))),
            }
        }
        return Ok(Some(
            batch
                .into_iter()
                .zip(decoded)
                .map(|(raw, decoded)| Message { raw, decoded })
                .collect(),
        ));
    }
}

/// Waits `backoff` before the batch is tried again, and doubles it up to [`MAX_BACKOFF`];
/// `false` if the process is told to stop meanwhile.
async fn pause(backoff: &mut Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = stopped.changed() => return false,
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    true
}

/// How long a batch waits on a message of a type this build does not know at all, or whose
/// schema the registry says it does not have or refuses to give: a new event type is newer
/// code too (waited for like a newer version), and a registry can lag or be mid-rotation, but
/// a message some other producer put on the topic by mistake will never be readable; after
/// this long it is left to decoding, which sets it aside, and the partition moves on.
pub(super) const UNKNOWN_TYPE_WAIT: Duration = Duration::from_secs(600);

/// A registry answer that may change without the message changing: no such schema (404), or
/// credentials refused (401, 403).
fn refused_for_now(error: &str) -> bool {
    schemas::wire::registry_status(error).is_some_and(|code| matches!(code, 401 | 403 | 404))
}

/// The event a message's headers name, when this build knows only older versions of its type
/// or (until `waited_long`) has no schema for the type at all. A message without these headers
/// (not the relay's) or with a version that is not a number is left to decoding, which sets
/// aside what it cannot read.
fn newer_than_known(headers: &crate::envelope::Headers, waited_long: bool) -> Option<String> {
    let event_type = headers.get("event_type")?;
    let version = headers.get("event_version")?;
    newer_event(event_type, version, waited_long)
}

/// [`newer_than_known`] for an event's type and version.
pub(super) fn newer_event(event_type: &str, version: &str, waited_long: bool) -> Option<String> {
    let version = version.parse::<u32>().ok()?;
    match schemas::catalogue::latest(event_type) {
        Err(_) if waited_long => None,
        Err(_) => Some(format!("{event_type} v{version} (no such type here)")),
        Ok(latest) if version > latest.file.version => Some(format!(
            "{event_type} v{version} (v{} here)",
            latest.file.version
        )),
        Ok(_) => None,
    }
}

/// After a batch's first message, takes what else is already fetched or arrives within a
/// millisecond: a fetch hands over many messages at once, so batches stay large under load
/// without delaying a lone event.
pub(super) async fn fill_batch<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    first: Raw,
    batch_size: usize,
) -> Result<Vec<Raw>, RunError> {
    let mut batch = vec![first];
    let deadline = Instant::now() + Duration::from_millis(1);
    while batch.len() < batch_size {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(message)) => batch.push(own(&message)),
            Ok(Err(error)) if recoverable(&error) => {
                note_recoverable(&error);
                break;
            }
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => break,
        }
    }
    Ok(batch)
}

/// Moves `consumer` to the offsets of `tpl` (a blocking call: the runtime moves other tasks
/// away meanwhile); a partition that could not be moved fails it.
pub(super) fn seek<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    tpl: rdkafka::TopicPartitionList,
) -> Result<(), RunError> {
    use rdkafka::consumer::Consumer as _;
    let result =
        tokio::task::block_in_place(|| consumer.seek_partitions(tpl, Duration::from_secs(10)))?;
    for element in result.elements() {
        if let Err(error) = element.error() {
            return Err(error.into());
        }
    }
    Ok(())
}

/// Whether a consumer error is one librdkafka recovers from by itself (a broker down or not
/// answering, a connection lost, a request timed out): every error but a fatal one. The
/// consumer is kept through them. Replacing it would be worse: the new consumer joins the
/// group as a new member, and the group waits for the old member's session to expire (ten
/// seconds) before it assigns anything; after a broker stall that kept every projection idle
/// for ten seconds more (`make bench-stall`, docs/performance.md).
pub(super) fn recoverable(error: &KafkaError) -> bool {
    matches!(error, KafkaError::MessageConsumption(code) if *code != RDKafkaErrorCode::Fatal)
}

/// Logs and counts an error the consumer recovers from (`projection_consumer_errors_total`).
pub(super) fn note_recoverable(error: &KafkaError) {
    metrics::counter!("projection_consumer_errors_total").increment(1);
    tracing::warn!(%error, "consumer error; the consumer reconnects by itself");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schema the registry answers 404 for, then has: the batch waits and decodes the
    /// message instead of setting it aside. Before, the message that met the 404 was
    /// dead-lettered (only later ones asked again).
    #[tokio::test]
    async fn a_schema_the_registry_lacks_for_now_is_waited_for() {
        let url = schemas::testing::registry_answering_first(
            (
                "404 Not Found",
                r#"{"error_code":40403,"message":"Schema not found"}"#,
            ),
            "UserRoleGranted",
        )
        .await;
        let payload = serde_json::json!({"type": "UserRoleGranted", "role": "admin"});
        let bytes = schemas::testing::framed("UserRoleGranted", &payload, 7);
        let id = uuid::Uuid::now_v7().to_string();
        let headers = crate::envelope::Headers::from_pairs(&[
            ("event_id", id.as_str()),
            ("event_type", "UserRoleGranted"),
            ("event_version", "1"),
            ("aggregate_type", "user"),
            ("aggregate_id", id.as_str()),
            ("sequence", "2"),
            ("global_position", "9"),
            ("occurred_at", "2026-12-01T00:00:00Z"),
            ("actor", "test"),
            ("correlation_id", "c"),
            ("causation_id", "c"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ]);
        let raw = Raw {
            source: crate::envelope::Source {
                topic: "users.events".to_owned(),
                partition: 0,
                offset: 1,
            },
            headers,
            payload: bytes,
        };
        let decoder = EventDecoder::new(&url);
        let (_stop, mut stopped) = watch::channel(false);
        let decoded = decode(&decoder, vec![raw], &mut stopped)
            .await
            .unwrap()
            .expect("not stopped");
        let envelope = decoded[0].decoded.as_ref().expect("decoded after the wait");
        assert_eq!(envelope.event_type, "UserRoleGranted");
    }

    #[test]
    fn only_a_fatal_consumer_error_replaces_the_consumer() {
        for code in [
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::NotCoordinator,
        ] {
            assert!(
                recoverable(&KafkaError::MessageConsumption(code)),
                "{code:?}"
            );
        }
        assert!(!recoverable(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::Fatal
        )));
        // Errors of other calls than receiving (subscribing, seeking) are not the consumer's
        // own reports and still end the run.
        assert!(!recoverable(&KafkaError::Subscription("topic".to_owned())));
        assert!(!recoverable(&KafkaError::Seek("offset".to_owned())));
    }
}
