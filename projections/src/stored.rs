//! A stored event (a row of the PostgreSQL events table) turned into exactly the envelope a
//! consumer of the log would have built for it: upcast to the newest version, through the
//! Avro round trip of its schema, with what the relay's headers carry. `projector verify` and
//! replay rebuild with it, and the runner fills a gap in what it consumed with it (see
//! [`crate::gap`]).
//!
//! The relay derives its headers from the row (`infra::event_store::message_headers`) and a
//! consumer parses them back ([`Envelope::from_parts`]); this builds the same envelope from
//! the row directly, without writing and parsing the twelve headers (a replay does this a
//! million times). The test below holds the two ways equal.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;

use infra::event_store::HeaderMetadata;

use crate::envelope::{Envelope, EnvelopeError, Source};

/// The columns [`envelope`] reads, for a `SELECT … FROM events e`: the metadata's fields are
/// taken out by PostgreSQL.
pub const COLUMNS: &str = concat!(
    "e.global_position, e.event_id, e.aggregate_type, e.aggregate_id, e.sequence, ",
    "e.event_type, e.event_version, e.payload, ",
    infra::header_metadata_columns!()
);

/// [`COLUMNS`] with the metadata's fields as their texts, unchecked (see
/// `infra::header_metadata_texts!`): a replay's scan reads these, and reads again with
/// [`checked_metadata`] the rows whose texts may be values of other kinds.
pub const SCAN_COLUMNS: &str = concat!(
    "e.global_position, e.event_id, e.aggregate_type, e.aggregate_id, e.sequence, ",
    "e.event_type, e.event_version, e.payload, ",
    infra::header_metadata_texts!()
);

/// The header metadata of the events at `positions`, each field checked to be a string (as
/// [`COLUMNS`] reads it), by position.
pub async fn checked_metadata(
    conn: &mut sqlx::PgConnection,
    positions: &[i64],
) -> Result<HashMap<i64, HeaderMetadata>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT e.global_position, ",
        infra::header_metadata_columns!(),
        " FROM events e WHERE e.global_position = ANY($1)"
    ))
    .bind(positions)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                infra::db::column_at(row, 0, "global_position")?,
                HeaderMetadata::from_row(row)?,
            ))
        })
        .collect()
}

/// Where an event taken from the events table says it came from: the table, at its global
/// position.
pub fn source(global_position: i64) -> Source {
    Source {
        topic: "events".to_owned(),
        partition: 0,
        offset: global_position,
    }
}

/// A stored event's fields, as selected with [`COLUMNS`].
pub struct Stored {
    pub global_position: i64,
    pub event_id: uuid::Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    /// The metadata's string fields; a missing one is empty, as its header would be.
    pub metadata: HeaderMetadata,
}

impl Stored {
    /// From a row selected with [`COLUMNS`] (or [`SCAN_COLUMNS`]), read by position (in their order there; see
    /// `infra::db::column_at`).
    pub fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        use infra::db::column_at;
        Ok(Self {
            global_position: column_at(row, 0, "global_position")?,
            event_id: column_at(row, 1, "event_id")?,
            aggregate_type: column_at(row, 2, "aggregate_type")?,
            aggregate_id: column_at(row, 3, "aggregate_id")?,
            sequence: column_at(row, 4, "sequence")?,
            event_type: column_at(row, 5, "event_type")?,
            event_version: column_at(row, 6, "event_version")?,
            payload: column_at(row, 7, "payload")?,
            metadata: HeaderMetadata::from_row(row)?,
        })
    }

    /// The envelope a consumer would have built; `Err` says why it cannot be built (as a
    /// consumer could not decode it).
    pub fn into_envelope(self) -> Result<Envelope, String> {
        let (version, payload) =
            domain::upcast::upcast(&self.event_type, &self.event_version, self.payload);
        let payload = schemas::wire::as_consumed(&self.event_type, &payload)
            .map_err(|e| crate::error_chain(&e))?;
        let metadata = self.metadata;
        let occurred_at: DateTime<Utc> = metadata
            .occurred_at
            .parse()
            .map_err(|_| EnvelopeError::Header("occurred_at").to_string())?;
        Ok(Envelope {
            source: source(self.global_position),
            event_id: self.event_id,
            event_type: self.event_type,
            event_version: version,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            global_position: self.global_position,
            occurred_at,
            actor: metadata.actor,
            correlation_id: metadata.correlation_id,
            causation_id: metadata.causation_id,
            traceparent: metadata.traceparent,
            parent: None,
            payload,
        })
    }
}

/// The envelope a consumer would have built for this stored event (selected with
/// [`COLUMNS`]); `Err` says why it cannot be built (as a consumer could not decode it).
pub fn envelope(row: &PgRow) -> Result<Envelope, String> {
    Stored::from_row(row)
        .map_err(|e| e.to_string())?
        .into_envelope()
}

#[cfg(test)]
mod tests {

    use infra::event_store::{message_headers, HeaderMetadata, PublishedEvent};
    use serde_json::json;

    use super::*;

    /// What a consumer builds from the relay's message: headers from the row, parsed back.
    fn through_headers(stored: &Stored, metadata: &serde_json::Value) -> Result<Envelope, String> {
        let (version, payload) = domain::upcast::upcast(
            &stored.event_type,
            &stored.event_version,
            stored.payload.clone(),
        );
        let payload = schemas::wire::as_consumed(&stored.event_type, &payload)
            .map_err(|e| crate::error_chain(&e))?;
        let published = PublishedEvent {
            event_id: stored.event_id,
            event_type: &stored.event_type,
            event_version: &version,
            aggregate_type: &stored.aggregate_type,
            aggregate_id: &stored.aggregate_id,
            sequence: stored.sequence,
            global_position: stored.global_position,
            metadata: &HeaderMetadata::of_json(metadata),
        };
        let headers: crate::envelope::Headers = message_headers(&published)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_owned()))
            .collect();
        Envelope::from_parts(source(stored.global_position), &headers, payload)
            .map_err(|e| e.to_string())
    }

    fn stored(metadata: &serde_json::Value) -> Stored {
        Stored {
            global_position: 42,
            event_id: uuid::Uuid::now_v7(),
            aggregate_type: "order".into(),
            aggregate_id: uuid::Uuid::new_v4().to_string(),
            sequence: 3,
            event_type: "OrderShipped".into(),
            event_version: "1".into(),
            payload: json!({"type": "OrderShipped", "carrier": "DHL", "tracking_number": "T1"}),
            metadata: HeaderMetadata::of_json(metadata),
        }
    }

    #[test]
    fn the_direct_envelope_is_the_one_built_from_the_relays_headers() {
        let full = json!({"occurred_at": "2026-12-01T10:20:30.123456789Z", "actor": "a",
            "correlation_id": "c", "causation_id": "d",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"});
        let sparse = json!({"occurred_at": "2026-12-01T10:20:30+02:00", "actor": 7});
        let broken = json!({"actor": "a"});
        for metadata in [full, sparse, broken] {
            let row = stored(&metadata);
            let expected = through_headers(&row, &metadata);
            let direct = row.into_envelope();
            match (direct, expected) {
                (Ok(direct), Ok(expected)) => {
                    assert_eq!(format!("{direct:?}"), format!("{expected:?}"))
                }
                (Err(direct), Err(expected)) => assert_eq!(direct, expected),
                (direct, expected) => panic!("{direct:?} against {expected:?}"),
            }
        }
    }
}
