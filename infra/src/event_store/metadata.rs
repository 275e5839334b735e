//! Metadata carried by every event (guarantee 9 in `docs/architecture.md`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Stored as a JSON object of strings, the shape cqrs-es's `EventEnvelope::metadata` expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// UUIDv7: unique, and ordered by creation time.
    pub event_id: Uuid,
    /// RFC 3339, UTC, when the command that produced the event was handled.
    pub occurred_at: String,
    /// Who issued the command.
    pub actor: String,
    /// Shared by everything that happened because of one original request.
    pub correlation_id: String,
    /// The id of the message (request or event) that directly caused this event.
    pub causation_id: String,
    /// W3C trace context of the request that produced the event.
    pub traceparent: String,
}

impl EventMetadata {
    pub fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            ("event_id".to_owned(), self.event_id.to_string()),
            ("occurred_at".to_owned(), self.occurred_at.clone()),
            ("actor".to_owned(), self.actor.clone()),
            ("correlation_id".to_owned(), self.correlation_id.clone()),
            ("causation_id".to_owned(), self.causation_id.clone()),
            ("traceparent".to_owned(), self.traceparent.clone()),
        ])
    }

    /// The same object as [`Self::to_map`], serialised directly.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "event_id": self.event_id.to_string(),
            "occurred_at": self.occurred_at,
            "actor": self.actor,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "traceparent": self.traceparent,
        })
    }
}

/// A stored event as the relay publishes it, for [`message_headers`].
pub struct PublishedEvent<'a> {
    pub event_id: Uuid,
    pub event_type: &'a str,
    /// The version the payload is at once upcast.
    pub event_version: &'a str,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub global_position: i64,
    /// The stored metadata object ([`EventMetadata`]'s fields).
    pub metadata: &'a serde_json::Value,
}

/// The twelve headers every published message carries (listed in `docs/architecture.md`), so
/// that any consumer can discard duplicates and trace the event. The relay sends them;
/// `projector verify` rebuilds what a consumer saw from them.
pub fn message_headers(event: &PublishedEvent<'_>) -> [(&'static str, String); 12] {
    let meta = |key: &str| {
        event
            .metadata
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    [
        ("event_id", event.event_id.to_string()),
        ("event_type", event.event_type.to_owned()),
        ("event_version", event.event_version.to_owned()),
        ("aggregate_type", event.aggregate_type.to_owned()),
        ("aggregate_id", event.aggregate_id.to_owned()),
        ("sequence", event.sequence.to_string()),
        ("global_position", event.global_position.to_string()),
        ("correlation_id", meta("correlation_id")),
        ("causation_id", meta("causation_id")),
        ("traceparent", meta("traceparent")),
        ("occurred_at", meta("occurred_at")),
        ("actor", meta("actor")),
    ]
}
