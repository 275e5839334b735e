//! Taking a batch off the consumer and decoding it once for every projection of the fan-out.

use std::time::{Duration, Instant};

use schemas::wire::EventDecoder;
use tokio::sync::watch;

use super::fanout::{Consumer, FIRST_BACKOFF, MAX_BACKOFF};
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
    'attempt: loop {
        let mut decoded = Vec::with_capacity(batch.len());
        for raw in &batch {
            match decoder.decode(&raw.payload).await {
                Ok(event) => decoded.push(
                    Envelope::from_parts(raw.source.clone(), &raw.headers, event.payload)
                        .map_err(|error| error.to_string()),
                ),
                // The registry being unreachable says nothing about the message.
                Err(schemas::SchemaError::RegistryUnreachable(error)) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64,
                        "schema registry unreachable: the batch waits");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopped.changed() => return Ok(None),
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
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

/// After a batch's first message, takes what else is already fetched or arrives within a
/// millisecond: a fetch hands over many messages at once, so batches stay large under load
/// without delaying a lone event.
pub(super) async fn fill_batch(
    consumer: &Consumer,
    first: Raw,
    batch_size: usize,
) -> Result<Vec<Raw>, RunError> {
    let mut batch = vec![first];
    let deadline = Instant::now() + Duration::from_millis(1);
    while batch.len() < batch_size {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(message)) => batch.push(own(&message)),
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => break,
        }
    }
    Ok(batch)
}
