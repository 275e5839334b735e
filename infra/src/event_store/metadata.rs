//! Metadata carried by every event (ARCHITECTURE.md guarantee 9).

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
