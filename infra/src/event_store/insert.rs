//! The one statement that writes appends: events, unique claims and snapshots of any number of
//! aggregates, all or nothing. Used alone inside a transaction and by the group-commit workers.

use std::collections::HashMap;

use sqlx::{PgExecutor, Row};

use super::types::{AppendRequest, Appended};

/// Events, claims and snapshots of any number of aggregates in one atomic statement.
const INSERT_SQL: &str = r#"
WITH claims AS (
    INSERT INTO unique_claims (scope, key, aggregate_type, aggregate_id)
    SELECT * FROM UNNEST($9::text[], $10::text[], $11::text[], $12::text[])
), snapshot AS (
    INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
    SELECT t, i, s, 1, p FROM UNNEST($13::text[], $14::text[], $15::bigint[], $16::jsonb[])
        AS x(t, i, s, p)
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
        SET last_sequence = EXCLUDED.last_sequence,
            current_snapshot = snapshots.current_snapshot + 1,
            payload = EXCLUDED.payload
        WHERE snapshots.last_sequence < EXCLUDED.last_sequence
)
INSERT INTO events
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, event_id)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[],
    $7::jsonb[], $8::uuid[])
RETURNING aggregate_type, aggregate_id, sequence, global_position
"#;

#[derive(Default)]
struct Columns {
    types: Vec<String>,
    ids: Vec<String>,
    sequences: Vec<i64>,
    event_types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<serde_json::Value>,
    metadata: Vec<serde_json::Value>,
    event_ids: Vec<uuid::Uuid>,
    claim_scopes: Vec<String>,
    claim_keys: Vec<String>,
    claim_types: Vec<String>,
    claim_ids: Vec<String>,
    snap_types: Vec<String>,
    snap_ids: Vec<String>,
    snap_sequences: Vec<i64>,
    snap_payloads: Vec<serde_json::Value>,
}

impl Columns {
    fn add(&mut self, request: &AppendRequest) {
        let (aggregate_type, aggregate_id) = (&request.aggregate_type, &request.aggregate_id);
        for (offset, event) in (1..).zip(&request.events) {
            self.types.push(aggregate_type.clone());
            self.ids.push(aggregate_id.clone());
            self.sequences.push(request.expected_sequence + offset);
            self.event_types.push(event.event_type.clone());
            self.versions.push(event.event_version.clone());
            self.payloads.push(event.payload.clone());
            self.metadata.push(event.metadata.clone());
            self.event_ids.push(event.event_id);
        }
        for claim in request.claims.iter().filter(|c| !c.release) {
            self.claim_scopes.push(claim.scope.clone());
            self.claim_keys.push(claim.key.clone());
            self.claim_types.push(aggregate_type.clone());
            self.claim_ids.push(aggregate_id.clone());
        }
        if let Some(snapshot) = &request.snapshot {
            self.snap_types.push(aggregate_type.clone());
            self.snap_ids.push(aggregate_id.clone());
            self.snap_sequences
                .push(request.expected_sequence + request.events.len() as i64);
            self.snap_payloads.push(snapshot.clone());
        }
    }
}

/// Writes the requests in one statement; returns where each one's last event landed, in order.
pub(crate) async fn insert<'e>(
    executor: impl PgExecutor<'e>,
    requests: &[&AppendRequest],
) -> Result<Vec<Appended>, sqlx::Error> {
    let mut c = Columns::default();
    for request in requests {
        c.add(request);
    }
    let rows = sqlx::query(INSERT_SQL)
        .bind(c.types)
        .bind(c.ids)
        .bind(c.sequences)
        .bind(c.event_types)
        .bind(c.versions)
        .bind(c.payloads)
        .bind(c.metadata)
        .bind(c.event_ids)
        .bind(c.claim_scopes)
        .bind(c.claim_keys)
        .bind(c.claim_types)
        .bind(c.claim_ids)
        .bind(c.snap_types)
        .bind(c.snap_ids)
        .bind(c.snap_sequences)
        .bind(c.snap_payloads)
        .fetch_all(executor)
        .await?;
    let mut positions = HashMap::with_capacity(rows.len());
    for row in &rows {
        let key: (String, String, i64) = (
            row.try_get("aggregate_type")?,
            row.try_get("aggregate_id")?,
            row.try_get("sequence")?,
        );
        positions.insert(key, row.try_get::<i64, _>("global_position")?);
    }
    requests
        .iter()
        .map(|r| {
            let version = r.expected_sequence + r.events.len() as i64;
            let key = (r.aggregate_type.clone(), r.aggregate_id.clone(), version);
            positions
                .get(&key)
                .map(|&position| Appended { version, position })
                .ok_or_else(|| sqlx::Error::Protocol("an appended event was not returned".into()))
        })
        .collect()
}
