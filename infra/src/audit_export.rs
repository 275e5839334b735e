//! The audit export shared by the query API (`GET /v1/audit/export`, NDJSON) and the
//! projector's `audit-export` command (JSON lines or CSV to a file): every audit entry with its
//! metadata, in global position order, filtered by aggregate type and occurrence time, read a
//! page at a time by position so that an export holds no transaction open and resumes after
//! the last position it wrote.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// The aggregate types with a history.
pub const AGGREGATE_TYPES: [&str; 3] = ["user", "order", "payment"];

/// Rows read per query.
pub const PAGE: i64 = 1000;

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this aggregate type (one of [`AGGREGATE_TYPES`]).
    pub aggregate_type: Option<String>,
    /// Events that occurred at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Events that occurred before this instant.
    pub to: Option<DateTime<Utc>>,
}

/// One exported entry: the event and its metadata.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    /// The event's position in the event store; resume after the last one written.
    pub global_position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: String,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub traceparent: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// The CSV columns, in order.
pub const CSV_HEADER: &str = "global_position,aggregate_type,aggregate_id,sequence,event_id,\
event_type,event_version,occurred_at,actor,correlation_id,causation_id,traceparent,payload";

/// The entries after `after` (a global position) that `filter` selects, at most `limit`.
pub async fn page(
    pool: &PgPool,
    filter: &Filter,
    after: i64,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT global_position, aggregate_type, aggregate_id, sequence, event_id, event_type,
             event_version, occurred_at, actor, correlation_id, causation_id, traceparent, payload
         FROM rm_audit
         WHERE global_position > $1
           AND ($2::text IS NULL OR aggregate_type = $2)
           AND ($3::timestamptz IS NULL OR occurred_at >= $3)
           AND ($4::timestamptz IS NULL OR occurred_at < $4)
         ORDER BY global_position
         LIMIT $5",
    )
    .bind(after)
    .bind(&filter.aggregate_type)
    .bind(filter.from)
    .bind(filter.to)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How many entries after `after` `filter` selects (for progress).
pub async fn count(pool: &PgPool, filter: &Filter, after: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM rm_audit
         WHERE global_position > $1
           AND ($2::text IS NULL OR aggregate_type = $2)
           AND ($3::timestamptz IS NULL OR occurred_at >= $3)
           AND ($4::timestamptz IS NULL OR occurred_at < $4)",
    )
    .bind(after)
    .bind(&filter.aggregate_type)
    .bind(filter.from)
    .bind(filter.to)
    .fetch_one(pool)
    .await
}

impl AuditEntry {
    /// One JSON line, newline included.
    pub fn json_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned());
        line.push('\n');
        line
    }

    /// One CSV record (RFC 4180), newline included; the payload is its JSON text.
    pub fn csv_line(&self) -> String {
        let fields = [
            self.global_position.to_string(),
            self.aggregate_type.clone(),
            self.aggregate_id.clone(),
            self.sequence.to_string(),
            self.event_id.to_string(),
            self.event_type.clone(),
            self.event_version.clone(),
            self.occurred_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
            self.actor.clone(),
            self.correlation_id.clone(),
            self.causation_id.clone(),
            self.traceparent.clone(),
            self.payload.to_string(),
        ];
        let mut line = fields
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",");
        line.push_str("\r\n");
        line
    }
}

/// A CSV field, quoted (quotes doubled) when it holds a comma, quote or line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// The global position of the last record of an existing export (JSON lines or CSV), to
/// resume after it; `None` for an empty file or one with only a header.
pub fn last_position(text: &str) -> Option<i64> {
    let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(last) {
        return value.get("global_position")?.as_i64();
    }
    last.split(',').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(payload: serde_json::Value) -> AuditEntry {
        AuditEntry {
            global_position: 7,
            aggregate_type: "order".into(),
            aggregate_id: "a".into(),
            sequence: 2,
            event_id: Uuid::nil(),
            event_type: "OrderPlaced".into(),
            event_version: "1".into(),
            occurred_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            actor: "user:1".into(),
            correlation_id: "c".into(),
            causation_id: "d".into(),
            traceparent: "00-x".into(),
            payload,
        }
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_json_lines_round_trip() {
        let e = entry(serde_json::json!({"note": "a, \"b\"\nc"}));
        let csv = e.csv_line();
        assert!(csv.starts_with("7,order,a,2,"), "{csv}");
        assert!(
            csv.ends_with("\"{\"\"note\"\":\"\"a, \\\"\"b\\\"\"\\nc\"\"}\"\r\n"),
            "{csv}"
        );
        assert_eq!(CSV_HEADER.split(',').count(), 13);
        let fields: Vec<&str> = csv.splitn(13, ',').collect();
        assert_eq!(fields.len(), 13);
        assert_eq!(fields[7], "2023-11-14T22:13:20.000000Z");
        assert!(fields[12].starts_with('"'), "the payload is quoted: {csv}");
        let line = e.json_line();
        let back: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(back["global_position"], 7);
        assert_eq!(back["payload"]["note"], "a, \"b\"\nc");
    }

    #[test]
    fn an_export_resumes_after_its_last_record() {
        let e = entry(serde_json::json!({}));
        assert_eq!(last_position(&e.json_line()), Some(7));
        assert_eq!(
            last_position(&format!("{CSV_HEADER}\r\n{}", e.csv_line())),
            Some(7)
        );
        assert_eq!(last_position(&format!("{CSV_HEADER}\r\n")), None);
        assert_eq!(last_position(""), None);
    }
}
