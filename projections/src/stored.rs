//! A stored event (a row of the PostgreSQL events table) turned into exactly the envelope a
//! consumer of the log would have built for it: upcast to the newest version, through the
//! Avro round trip of its schema, with the relay's headers. `projector verify` rebuilds with
//! it, and the runner fills a gap in what it consumed with it (see [`crate::gap`]).

use std::collections::HashMap;

use infra::event_store::{message_headers, PublishedEvent};
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::envelope::{Envelope, Source};

/// The columns [`envelope`] reads, for a `SELECT … FROM events e`.
pub const COLUMNS: &str = "e.global_position, e.event_id, e.aggregate_type, e.aggregate_id, \
     e.sequence, e.event_type, e.event_version, e.payload, e.metadata";

/// Where an event taken from the events table says it came from: the table, at its global
/// position.
pub fn source(global_position: i64) -> Source {
    Source {
        topic: "events".to_owned(),
        partition: 0,
        offset: global_position,
    }
}

/// The envelope a consumer would have built for this stored event (selected with
/// [`COLUMNS`]); `Err` says why it cannot be built (as a consumer could not decode it).
pub fn envelope(row: &PgRow) -> Result<Envelope, String> {
    let text = |e: sqlx::Error| e.to_string();
    let event_type: String = row.try_get("event_type").map_err(text)?;
    let stored_version: String = row.try_get("event_version").map_err(text)?;
    let payload: serde_json::Value = row.try_get("payload").map_err(text)?;
    let metadata: serde_json::Value = row.try_get("metadata").map_err(text)?;
    let (version, payload) = domain::upcast::upcast(&event_type, &stored_version, payload);
    let payload =
        schemas::wire::as_consumed(&event_type, &payload).map_err(|e| crate::error_chain(&e))?;
    let position: i64 = row.try_get("global_position").map_err(text)?;
    let (aggregate_type, aggregate_id): (String, String) = (
        row.try_get("aggregate_type").map_err(text)?,
        row.try_get("aggregate_id").map_err(text)?,
    );
    let published = PublishedEvent {
        event_id: row.try_get("event_id").map_err(text)?,
        event_type: &event_type,
        event_version: &version,
        aggregate_type: &aggregate_type,
        aggregate_id: &aggregate_id,
        sequence: row.try_get("sequence").map_err(text)?,
        global_position: position,
        metadata: &metadata,
    };
    let headers: HashMap<String, String> = message_headers(&published)
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    Envelope::from_parts(source(position), &headers, payload).map_err(|e| e.to_string())
}
