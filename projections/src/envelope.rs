//! A consumed message with its headers parsed and its payload decoded.

use chrono::{DateTime, Utc};
use rdkafka::message::{Headers as _, Message};
use serde_json::Value;

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A decoded event and its metadata, as every projection sees it.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub source: Source,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub event_version: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    /// The event's position in the event store.
    pub global_position: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub correlation_id: String,
    pub causation_id: String,
    /// The event's own trace context, as stored with it: what read models record.
    pub traceparent: String,
    /// The context this message's processing continues where it is not the event's own: the
    /// relay's producer span, when the relay exported one.
    pub parent: Option<String>,
    pub payload: Value,
}

/// A message's headers, as text, in the order they came. The relay writes a dozen short ones:
/// looking one up by going through them costs less than hashing its name, and building them
/// costs no table (this is done for every message consumed). Where a name comes twice, the
/// last one counts.
#[derive(Debug, Clone, Default)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// The headers of a consumed message (a value that is not UTF-8 is read lossily, and a
    /// NUL, which no PostgreSQL text can hold, as U+FFFD too; one without a value is empty).
    /// The relay never writes either; a message from elsewhere that does is dead-lettered
    /// (see [`Envelope::from_parts`]) instead of failing every attempt at its batch.
    pub fn of(message: &impl Message) -> Self {
        message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|header| {
                        let value = header.value.map(storable_text);
                        (header.key.to_owned(), value.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Headers of the given names and values, for tests that build messages by hand.
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Takes the header's value out (the headers are being turned into an envelope).
    fn take(&mut self, name: &str) -> Option<String> {
        let at = self.0.iter().rposition(|(key, _)| key == name)?;
        Some(std::mem::take(&mut self.0[at].1))
    }
}

/// `bytes` as text PostgreSQL can store: invalid UTF-8 and NUL as U+FFFD.
fn storable_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.into_owned()
    }
}

impl FromIterator<(String, String)> for Headers {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Self(pairs.into_iter().collect())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("header {0} is missing or invalid")]
    Header(&'static str),
    #[error(
        "the message was written as {written} (its schema's record) but its headers say {headers}"
    )]
    Mismatch { written: String, headers: String },
    #[error("the message's payload does not fit its event's newest schema once upcast: {0}")]
    Upcast(String),
}

impl Envelope {
    /// Builds the envelope of a message decoded from the topics, refusing one whose writer
    /// schema names another event than its headers: a schema id that now resolves to another
    /// schema (a registry reset or switched) can decode a message as a different event
    /// without any error (several events share a record's shape: an empty one, or one role),
    /// and the read models would apply what was not written. A message of an older version
    /// than this build's newest (the topics keep every message ever published) is upcast as
    /// a stored event is, so the read models see one shape whichever way the event came.
    pub fn of_decoded(
        source: Source,
        headers: Headers,
        decoded: schemas::wire::Decoded,
    ) -> Result<Self, EnvelopeError> {
        let mut envelope = Self::from_owned_parts(source, headers, decoded.payload)?;
        if envelope.event_type != decoded.event_type {
            return Err(EnvelopeError::Mismatch {
                written: decoded.event_type,
                headers: envelope.event_type,
            });
        }
        let payload = std::mem::take(&mut envelope.payload);
        let (version, payload) =
            domain::upcast::upcast(&envelope.event_type, &envelope.event_version, payload);
        envelope.payload = match version == envelope.event_version {
            true => payload,
            false => schemas::wire::as_consumed(&envelope.event_type, &payload)
                .map_err(|e| EnvelopeError::Upcast(crate::error_chain(&e)))?,
        };
        envelope.event_version = version;
        Ok(envelope)
    }

    /// Builds the envelope from the relay's headers and the decoded payload.
    pub fn from_parts(
        source: Source,
        headers: &Headers,
        payload: Value,
    ) -> Result<Self, EnvelopeError> {
        Self::build(source, |name| headers.get(name).map(str::to_owned), payload)
    }

    /// [`Envelope::from_parts`], taking the headers' values instead of copying them.
    pub fn from_owned_parts(
        source: Source,
        mut headers: Headers,
        payload: Value,
    ) -> Result<Self, EnvelopeError> {
        Self::build(source, |name| headers.take(name), payload)
    }

    fn build(
        source: Source,
        mut header: impl FnMut(&'static str) -> Option<String>,
        payload: Value,
    ) -> Result<Self, EnvelopeError> {
        use infra::telemetry::propagation::{EVENT_TRACEPARENT, TRACEPARENT};
        // The relay that exported a producer span named it in `traceparent` and kept the
        // event's own in `event_traceparent`; a message without the latter carries the event's
        // own in `traceparent` (no span exported, or a relay of an earlier release).
        let own = header(EVENT_TRACEPARENT);
        // A value read lossily (not UTF-8, or holding a NUL) is not what the relay wrote.
        let mut text = |name: &'static str| {
            header(name)
                .filter(|value| !value.contains(char::REPLACEMENT_CHARACTER))
                .ok_or(EnvelopeError::Header(name))
        };
        let (traceparent, parent) = match own {
            Some(own) if own.contains(char::REPLACEMENT_CHARACTER) => {
                return Err(EnvelopeError::Header(EVENT_TRACEPARENT))
            }
            Some(own) => (own, Some(text(TRACEPARENT)?)),
            None => (text(TRACEPARENT)?, None),
        };
        Ok(Self {
            event_id: text("event_id")?
                .parse()
                .map_err(|_| EnvelopeError::Header("event_id"))?,
            event_type: text("event_type")?,
            event_version: text("event_version")?,
            aggregate_type: text("aggregate_type")?,
            aggregate_id: text("aggregate_id")?,
            sequence: text("sequence")?
                .parse()
                .map_err(|_| EnvelopeError::Header("sequence"))?,
            global_position: text("global_position")?
                .parse()
                .map_err(|_| EnvelopeError::Header("global_position"))?,
            occurred_at: text("occurred_at")?
                .parse()
                .map_err(|_| EnvelopeError::Header("occurred_at"))?,
            actor: text("actor")?,
            correlation_id: text("correlation_id")?,
            causation_id: text("causation_id")?,
            traceparent,
            parent,
            payload,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name that comes twice reads as its last value, copied or taken.
    #[test]
    fn the_last_header_of_a_name_counts() {
        let mut headers: Headers = [("a", "1"), ("b", "2"), ("a", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(headers.get("a"), Some("3"));
        assert_eq!(headers.get("c"), None);
        assert_eq!(headers.take("a").as_deref(), Some("3"));
        assert_eq!(headers.take("b").as_deref(), Some("2"));
        assert_eq!(headers.get("b"), Some(""));
    }

    /// The relay's headers of a `event_type` v`version` event, its aggregate id given as
    /// bytes (a producer other than the relay may send any).
    fn relay_headers(event_type: &str, version: &str, aggregate_id: &[u8]) -> Headers {
        use infra::event_store::{message_headers, HeaderMetadata, PublishedEvent};
        use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
        let metadata = HeaderMetadata::of_json(&serde_json::json!({
            "occurred_at": "2026-12-02T10:00:00.000000Z", "actor": "user:x",
            "correlation_id": "c", "causation_id": "c",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}));
        let published = PublishedEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type,
            event_version: version,
            aggregate_type: "user",
            aggregate_id: "placeholder",
            sequence: 2,
            global_position: 7,
            metadata: &metadata,
        };
        let mut headers = OwnedHeaders::new();
        for (key, value) in message_headers(&published) {
            let value = if key == "aggregate_id" {
                aggregate_id
            } else {
                value.as_bytes()
            };
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let message = OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            9,
            Some(headers),
        );
        Headers::of(&message)
    }

    /// A message whose producer span took `traceparent` is recorded with the event's own
    /// context from `event_traceparent` (what a rebuild from the store records), and processed
    /// under the producer span; without that header, `traceparent` is both.
    #[test]
    fn the_events_own_trace_context_is_recorded_and_the_producer_span_continued() {
        let id = uuid::Uuid::new_v4().to_string();
        let plain = relay_headers("UserDeactivated", "1", id.as_bytes());
        let own = plain.get("traceparent").unwrap().to_owned();
        let producer = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01".to_owned();
        let mut spanned = plain.clone();
        spanned.0.push(("traceparent".into(), producer.clone()));
        spanned.0.push(("event_traceparent".into(), own.clone()));
        let source = || Source {
            topic: "t".into(),
            partition: 0,
            offset: 9,
        };
        let payload = || serde_json::json!({"type": "UserDeactivated"});
        for (headers, parent) in [(spanned, Some(producer)), (plain, None)] {
            for built in [
                Envelope::from_parts(source(), &headers, payload()),
                Envelope::from_owned_parts(source(), headers.clone(), payload()),
            ] {
                let envelope = built.unwrap();
                assert_eq!(envelope.traceparent, own);
                assert_eq!(envelope.parent, parent);
            }
        }
    }

    /// A message from another producer whose `aggregate_id` holds a NUL (or bytes that are
    /// not UTF-8): its headers hold no NUL afterwards (PostgreSQL refuses it in text, and the
    /// batch failed for good at the dead-letter insert), and it makes no envelope, so it is
    /// dead-lettered.
    #[test]
    fn a_header_no_text_column_can_hold_makes_no_envelope() {
        let message = |aggregate_id: &[u8]| relay_headers("UserDeactivated", "1", aggregate_id);
        let source = Source {
            topic: "t".into(),
            partition: 0,
            offset: 9,
        };
        let payload = serde_json::json!({"type": "UserDeactivated"});
        let fine = message(b"0193a1b2-0000-7000-8000-000000000001");
        assert!(Envelope::from_parts(source.clone(), &fine, payload.clone()).is_ok());
        for bad in [&b"0193a1b2\0-tail"[..], &b"0193a1b2\xff-tail"[..]] {
            let headers = message(bad);
            let id = headers.get("aggregate_id").unwrap();
            assert!(!id.contains('\0'), "{id:?}");
            assert!(matches!(
                Envelope::from_parts(source.clone(), &headers, payload.clone()),
                Err(EnvelopeError::Header("aggregate_id"))
            ));
        }
        // Nor does one whose writer schema names another event than its headers (a schema id
        // resolving to another schema: before, it was applied as the event it decoded to).
        let decoded = |event_type: &str| schemas::wire::Decoded {
            event_type: event_type.into(),
            schema_id: 1,
            payload: payload.clone(),
        };
        let written =
            |event_type| Envelope::of_decoded(source.clone(), fine.clone(), decoded(event_type));
        assert!(written("UserDeactivated").is_ok());
        assert!(matches!(
            written("UserReactivated"),
            Err(EnvelopeError::Mismatch { .. })
        ));
    }

    /// A message of an older version (the topics keep every message ever published) reaches
    /// the read models upcast, as the same event read from the event store does. Before,
    /// a `UserRegistered` v1 from the topics came without the roles v2 requires.
    #[test]
    fn an_older_message_is_upcast_as_a_stored_event_is() {
        let headers = relay_headers(
            "UserRegistered",
            "1",
            b"0193a1b2-0000-7000-8000-000000000001",
        );
        let source = Source {
            topic: "t".into(),
            partition: 0,
            offset: 1,
        };
        let decoded = schemas::wire::Decoded {
            event_type: "UserRegistered".into(),
            schema_id: 1,
            payload: serde_json::json!({"type": "UserRegistered", "email": "a@example.com",
                "display_name": "A"}),
        };
        let envelope = Envelope::of_decoded(source, headers, decoded).unwrap();
        assert_eq!(envelope.event_version, "2");
        assert_eq!(envelope.payload["roles"], serde_json::json!(["customer"]));
    }
}
