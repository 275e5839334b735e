//! The Confluent wire format (magic byte, 4-byte schema id, Avro binary) through a schema
//! registry, with the topic + record name subject strategy: subject
//! `<topic>-<record full name>`, one subject per event type.

use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value as Json;
use tracing::Instrument;

use crate::catalogue::{latest, EventSchema};
use crate::convert::{avro_to_json, json_to_avro};
use crate::error::SchemaError;

/// The converter's error as ours. It retries (and does not cache) only network errors and
/// answers 502 and 503; any other 5xx (a registry's 500 on a store error, a proxy's 504), 408
/// and 429 say nothing about the schema either, so they are transient here too. Callers drop
/// what the converter cached of such a failure, so that the next attempt asks again (else a
/// schema id met during a registry's passing 500 stayed "undecodable" for the process's life).
fn registry_error(error: SRCError) -> SchemaError {
    if error.retriable || transient_status(&error.error) {
        SchemaError::RegistryUnreachable(error.to_string())
    } else {
        SchemaError::Registry(error.to_string())
    }
}

/// Whether the converter's text for a failed HTTP call ("… failed with status 500 Internal
/// Server Error") names a status worth waiting out.
fn transient_status(message: &str) -> bool {
    registry_status(message).is_some_and(|code| code >= 500 || code == 408 || code == 429)
}

/// The HTTP status a failed registry call was answered with, from the converter's text.
pub fn registry_status(message: &str) -> Option<u16> {
    message
        .split("failed with status ")
        .nth(1)
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
}

/// The subject an event type's schemas are registered under on `topic`.
pub fn subject(topic: &str, schema: &EventSchema) -> String {
    format!("{topic}-{}", schema.full_name)
}

fn strategy(topic: &str, schema: &EventSchema) -> SubjectNameStrategy {
    SubjectNameStrategy::TopicRecordNameStrategyWithSchema(
        topic.to_owned(),
        SuppliedSchema::new(
            Some(schema.full_name.clone()),
            SchemaType::Avro,
            schema.file.text.to_owned(),
        ),
    )
}

/// What an encoder or decoder has already fetched from the registry: the converter keeps
/// what it fetched, so only a first use calls the registry, and only a first use gets a
/// client span ([`lookup_span`]).
#[derive(Default)]
struct Seen<K>(Mutex<HashSet<K>>);

impl<K: std::hash::Hash + Eq> Seen<K> {
    /// True the first time `key` is asked about (and until [`Self::forget`] is called).
    fn first(&self, key: K) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key)
    }

    fn forget(&self, key: &K) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// A client span around a call that fetches from (or registers with) the schema registry,
/// a child of the current span.
fn lookup_span(operation: &'static str, subject: &str, schema_id: Option<u32>) -> tracing::Span {
    tracing::info_span!(
        "schema_registry",
        otel.name = %format_args!("schema registry {operation}"),
        otel.kind = "client",
        subject,
        schema_id,
    )
}

/// Encodes events with their newest schema, registering it (idempotently) on first use.
pub struct EventEncoder {
    encoder: AvroEncoder,
    seen: Seen<String>,
}

impl EventEncoder {
    /// For a registry that takes writes without credentials.
    pub fn new(registry_url: &str) -> Self {
        Self {
            encoder: AvroEncoder::new(plain_settings(registry_url)),
            seen: Seen::default(),
        }
    }

    /// With HTTP Basic credentials on every call, as a registry that protects writes needs.
    pub fn with_basic(registry_url: &str, user: &str, password: &str) -> Result<Self, SchemaError> {
        Self::with_timeout(registry_url, Some((user, password)), REGISTRY_TIMEOUT)
    }

    fn with_timeout(
        registry_url: &str,
        basic: Option<(&str, &str)>,
        timeout: Duration,
    ) -> Result<Self, SchemaError> {
        Ok(Self {
            encoder: AvroEncoder::new(settings(registry_url, basic, timeout)?),
            seen: Seen::default(),
        })
    }

    /// `payload` is the event's JSON form at its newest version (upcast it first).
    pub async fn encode(
        &self,
        topic: &str,
        event_type: &str,
        payload: &Json,
    ) -> Result<Vec<u8>, SchemaError> {
        let schema = latest(event_type)?;
        let value = json_to_avro(payload, &schema.schema)?;
        let key = subject(topic, schema);
        if !self.seen.first(key.clone()) {
            return self
                .encoder
                .encode_value(value, &strategy(topic, schema))
                .await
                .map_err(|error| self.failed(error));
        }
        let encoded = self
            .encoder
            .encode_value(value, &strategy(topic, schema))
            .instrument(lookup_span("register", &key, None))
            .await
            .map_err(|error| self.failed(error));
        if encoded.is_err() {
            self.seen.forget(&key);
        }
        encoded
    }

    /// `error` as ours, dropping what the converter cached of a transient failure.
    fn failed(&self, error: SRCError) -> SchemaError {
        let error = registry_error(error);
        if matches!(error, SchemaError::RegistryUnreachable(_)) {
            self.encoder.remove_errors_from_cache();
        }
        error
    }

    /// Registers every event type's newest schema under its subject on `topic`.
    pub async fn register(&self, topic: &str, schema: &EventSchema) -> Result<u32, SchemaError> {
        let key = subject(topic, schema);
        let registered = self
            .encoder
            .get_schema_and_id(&key, strategy(topic, schema))
            .instrument(lookup_span("register", &key, None))
            .await
            .map(|registered| registered.id)
            .map_err(|error| self.failed(error))?;
        // The converter keeps what it registered: encoding with it calls the registry no more.
        self.seen.first(key);
        Ok(registered)
    }
}

/// The JSON a consumer decodes from a message carrying `payload` (the newest version of
/// `event_type`): what the Avro round trip keeps, without the broker. Rebuilding a read model
/// from the events table goes through this so it sees exactly what the live one saw.
pub fn as_consumed(event_type: &str, payload: &Json) -> Result<Json, SchemaError> {
    let schema = latest(event_type)?;
    crate::convert::round_trip(payload, &schema.schema, event_type)
}

/// A decoded message: its event type (the record name) and JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub event_type: String,
    pub schema_id: u32,
    pub payload: Json,
}

/// Decodes any message written by [`EventEncoder`] (or any Confluent Avro producer of these
/// records), fetching writer schemas from the registry by id.
pub struct EventDecoder {
    decoder: AvroDecoder,
    seen: Seen<u32>,
}

impl EventDecoder {
    pub fn new(registry_url: &str) -> Self {
        Self {
            decoder: AvroDecoder::new(plain_settings(registry_url)),
            seen: Seen::default(),
        }
    }

    /// With HTTP Basic credentials (reads need none here, but a registry may ask for them).
    pub fn with_basic(registry_url: &str, user: &str, password: &str) -> Result<Self, SchemaError> {
        let basic = Some((user, password));
        Ok(Self {
            decoder: AvroDecoder::new(settings(registry_url, basic, REGISTRY_TIMEOUT)?),
            seen: Seen::default(),
        })
    }

    pub async fn decode(&self, bytes: &[u8]) -> Result<Decoded, SchemaError> {
        // The writer schema's id, bytes 1 to 4 of the Confluent wire format.
        let id = bytes
            .get(1..5)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes);
        let decoding = self.decoder.decode_with_schema(Some(bytes));
        let decoded = match id.filter(|id| self.seen.first(*id)) {
            Some(id) => {
                let decoded = decoding
                    .instrument(lookup_span("fetch", "", Some(id)))
                    .await;
                if decoded.is_err() {
                    self.seen.forget(&id);
                }
                decoded
            }
            None => decoding.await,
        };
        let result = decoded
            .map_err(|error| {
                // The converter keeps the errors it does not count as retriable (a 404, a
                // 401, a body that is not JSON) for every later message with that schema id:
                // one wrong answer would make a whole event type undecodable until the
                // process restarts. Each failure is asked again instead (one call per message
                // that fails, which is then set aside or retried anyway).
                self.decoder.remove_errors_from_cache();
                registry_error(error)
            })?
            .ok_or_else(|| SchemaError::Registry("empty message".to_owned()))?;
        let event_type = result
            .name
            .map(|name| name.name().to_owned())
            .ok_or_else(|| SchemaError::Registry("message is not a named record".to_owned()))?;
        let payload = avro_to_json(&result.value, &result.schema.parsed, &event_type)?;
        Ok(Decoded {
            event_type,
            schema_id: result.schema.id,
            payload,
        })
    }
}

/// How long one call to the registry may take, connecting and reading: a registry that takes
/// the connection and never answers fails the call (a relay or consumer then retries with a
/// backoff, and its lag shows) instead of holding it for good.
pub const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Registry client settings without credentials. Building them fails only when no HTTP
/// client can be made at all (its TLS backend cannot start), which the converter's own
/// `SrSettings::new` panics on too.
fn plain_settings(url: &str) -> SrSettings {
    settings(url, None, REGISTRY_TIMEOUT).expect("an HTTP client for the schema registry")
}

/// Registry client settings: `timeout` on every call and, with `basic` (user, password),
/// `Authorization: Basic` on every call.
fn settings(
    url: &str,
    basic: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<SrSettings, SchemaError> {
    let mut builder = SrSettings::new_builder(url.to_owned());
    builder.set_timeout(timeout);
    if let Some((user, password)) = basic {
        builder.set_basic_authorization(user, Some(password));
    }
    builder
        .build()
        .map_err(|e| SchemaError::Registry(e.to_string()))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
