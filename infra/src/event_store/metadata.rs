//! Metadata carried by every event (guarantee 9 in `docs/architecture.md`).

use std::borrow::Cow;
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

/// The metadata fields a message header carries, each as its text when it is a string in the
/// stored object and empty otherwise (missing, or not a string).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMetadata {
    pub occurred_at: String,
    pub actor: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub traceparent: String,
}

/// The columns [`HeaderMetadata::from_row`] reads, for a `SELECT … FROM events e`: PostgreSQL
/// takes the fields out of the stored object, so the reader never parses it.
#[macro_export]
macro_rules! header_metadata_columns {
    () => {
        concat!(
            "CASE WHEN jsonb_typeof(e.metadata->'occurred_at') = 'string' \
             THEN e.metadata->>'occurred_at' END AS occurred_at, ",
            "CASE WHEN jsonb_typeof(e.metadata->'actor') = 'string' \
             THEN e.metadata->>'actor' END AS actor, ",
            "CASE WHEN jsonb_typeof(e.metadata->'correlation_id') = 'string' \
             THEN e.metadata->>'correlation_id' END AS correlation_id, ",
            "CASE WHEN jsonb_typeof(e.metadata->'causation_id') = 'string' \
             THEN e.metadata->>'causation_id' END AS causation_id, ",
            "CASE WHEN jsonb_typeof(e.metadata->'traceparent') = 'string' \
             THEN e.metadata->>'traceparent' END AS traceparent"
        )
    };
}

/// [`header_metadata_columns!`] without the check that each field is a string: a field of
/// another kind reads as its JSON text (`7`, `true`, `{"a": 1}`) where the checked column is
/// null. The check cost PostgreSQL more than the texts themselves in a replay's scan of a
/// million events (docs/performance.md), so that scan selects these and reads again, with the
/// checked columns, the rows whose texts [`HeaderMetadata::may_hold_other_kinds`].
#[macro_export]
macro_rules! header_metadata_texts {
    () => {
        concat!(
            "e.metadata->>'occurred_at' AS occurred_at, ",
            "e.metadata->>'actor' AS actor, ",
            "e.metadata->>'correlation_id' AS correlation_id, ",
            "e.metadata->>'causation_id' AS causation_id, ",
            "e.metadata->>'traceparent' AS traceparent"
        )
    };
}

/// True when `text` could be how `->>` writes a JSON number, boolean, object or array.
fn may_be_another_kind(text: &str) -> bool {
    matches!(text.as_bytes().first(), Some(b'{' | b'['))
        || text == "true"
        || text == "false"
        || is_json_number(text)
}

/// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_json_number(text: &str) -> bool {
    fn digits(bytes: &[u8]) -> usize {
        bytes.iter().take_while(|b| b.is_ascii_digit()).count()
    }
    let mut rest = text.as_bytes();
    if let [b'-', tail @ ..] = rest {
        rest = tail;
    }
    match rest {
        [b'0', tail @ ..] => rest = tail,
        [b'1'..=b'9', ..] => rest = &rest[digits(rest)..],
        _ => return false,
    }
    if let [b'.', tail @ ..] = rest {
        let n = digits(tail);
        if n == 0 {
            return false;
        }
        rest = &tail[n..];
    }
    if let [b'e' | b'E', tail @ ..] = rest {
        let tail = match tail {
            [b'+' | b'-', tail @ ..] => tail,
            tail => tail,
        };
        let n = digits(tail);
        if n == 0 {
            return false;
        }
        rest = &tail[n..];
    }
    rest.is_empty()
}

impl HeaderMetadata {
    /// True when a field read with [`header_metadata_texts!`] could be a value of another kind
    /// than a string, which the header would leave empty: only the checked columns of
    /// [`header_metadata_columns!`] tell. Our writers store strings, none of which looks like
    /// that (times, `service:…` and `user:…` actors, UUIDs, trace contexts).
    pub fn may_hold_other_kinds(&self) -> bool {
        [
            &self.occurred_at,
            &self.actor,
            &self.correlation_id,
            &self.causation_id,
            &self.traceparent,
        ]
        .iter()
        .any(|text| may_be_another_kind(text))
    }

    /// From a stored metadata object.
    pub fn of_json(metadata: &serde_json::Value) -> Self {
        let field = |key: &str| {
            metadata
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned()
        };
        Self {
            occurred_at: field("occurred_at"),
            actor: field("actor"),
            correlation_id: field("correlation_id"),
            causation_id: field("causation_id"),
            traceparent: field("traceparent"),
        }
    }

    /// From a row whose last five columns are
    /// [`header_metadata_columns!`](crate::header_metadata_columns), read by position (see
    /// [`crate::db::column_at`]); a row whose last columns are not those is an error.
    pub fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let first = row
            .len()
            .checked_sub(5)
            .ok_or_else(|| sqlx::Error::ColumnNotFound("occurred_at".to_owned()))?;
        let text = |i: usize, name: &str| -> Result<String, sqlx::Error> {
            Ok(crate::db::column_at::<Option<String>>(row, first + i, name)?.unwrap_or_default())
        };
        Ok(Self {
            occurred_at: text(0, "occurred_at")?,
            actor: text(1, "actor")?,
            correlation_id: text(2, "correlation_id")?,
            causation_id: text(3, "causation_id")?,
            traceparent: text(4, "traceparent")?,
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
    pub metadata: &'a HeaderMetadata,
}

/// The twelve headers every published message carries (listed in `docs/architecture.md`), so
/// that any consumer can discard duplicates and trace the event. The relay sends them;
/// `projector verify` rebuilds what a consumer saw from them. Text fields are borrowed, so the
/// relay copies each value once, into the message.
pub fn message_headers<'a>(event: &PublishedEvent<'a>) -> [(&'static str, Cow<'a, str>); 12] {
    let metadata = event.metadata;
    [
        ("event_id", Cow::Owned(event.event_id.to_string())),
        ("event_type", Cow::Borrowed(event.event_type)),
        ("event_version", Cow::Borrowed(event.event_version)),
        ("aggregate_type", Cow::Borrowed(event.aggregate_type)),
        ("aggregate_id", Cow::Borrowed(event.aggregate_id)),
        ("sequence", Cow::Owned(event.sequence.to_string())),
        (
            "global_position",
            Cow::Owned(event.global_position.to_string()),
        ),
        ("correlation_id", Cow::Borrowed(&metadata.correlation_id)),
        ("causation_id", Cow::Borrowed(&metadata.causation_id)),
        ("traceparent", Cow::Borrowed(&metadata.traceparent)),
        ("occurred_at", Cow::Borrowed(&metadata.occurred_at)),
        ("actor", Cow::Borrowed(&metadata.actor)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `->>` writes for a number, boolean, object or array is told apart from the
    /// strings our writers store; a string that reads like one of them is sent to be checked.
    #[test]
    fn texts_of_other_kinds_are_told_from_stored_strings() {
        for other in [
            "7",
            "-0",
            "0.5",
            "-12.75e-3",
            "1E+20",
            "true",
            "false",
            "{}",
            "{\"a\": 1}",
            "[1]",
        ] {
            assert!(may_be_another_kind(other), "{other}");
        }
        for text in [
            "",
            "2026-12-02T01:04:12.742074Z",
            "service:bootstrap",
            "user:01a23447-d5c6-7456-b23a-36b1e22a0865",
            "01a23447-d5c0-70d0-9ca5-9d825e62b3c2",
            "00-0c53cbe5c1924eb99b92bf2fed399399-638408f961b840f4-01",
            "007",
            "1.",
            ".5",
            "1e",
            "-",
            "True",
            "7 ",
        ] {
            assert!(!may_be_another_kind(text), "{text}");
        }
        let mut metadata = HeaderMetadata::of_json(&serde_json::json!({
            "occurred_at": "2026-12-02T01:04:12Z", "actor": "service:a",
            "correlation_id": "c", "causation_id": "d", "traceparent": ""
        }));
        assert!(!metadata.may_hold_other_kinds());
        metadata.traceparent = "[]".to_owned();
        assert!(metadata.may_hold_other_kinds());
    }
}
