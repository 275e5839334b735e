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
    pub traceparent: String,
    pub payload: Value,
}

/// A message's headers, as text, in the order they came. The relay writes a dozen short ones:
/// looking one up by going through them costs less than hashing its name, and building them
/// costs no table (this is done for every message consumed). Where a name comes twice, the
/// last one counts.
#[derive(Debug, Clone, Default)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// The headers of a consumed message (a value that is not UTF-8 is read lossily; one
    /// without a value is empty).
    pub fn of(message: &impl Message) -> Self {
        message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|header| {
                        let value = header
                            .value
                            .map(|v| String::from_utf8_lossy(v).into_owned());
                        (header.key.to_owned(), value.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default()
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

impl FromIterator<(String, String)> for Headers {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Self(pairs.into_iter().collect())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("header {0} is missing or invalid")]
    Header(&'static str),
}

impl Envelope {
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
        let mut text = |name: &'static str| header(name).ok_or(EnvelopeError::Header(name));
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
            traceparent: text("traceparent")?,
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
}
