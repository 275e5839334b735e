//! A consumed message with its headers parsed and its payload decoded.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
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

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("header {0} is missing or invalid")]
    Header(&'static str),
}

impl Envelope {
    /// Builds the envelope from the relay's headers and the decoded payload.
    pub fn from_parts(
        source: Source,
        headers: &HashMap<String, String>,
        payload: Value,
    ) -> Result<Self, EnvelopeError> {
        let text = |name: &'static str| {
            headers
                .get(name)
                .cloned()
                .ok_or(EnvelopeError::Header(name))
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
            traceparent: text("traceparent")?,
            payload,
            source,
        })
    }
}
