//! The audit export shared by the query API (`GET /v1/audit/export`, NDJSON) and the
//! projector's `audit-export` command (JSON lines or CSV to a file): every stored event with
//! its metadata, straight from the event store, filtered by aggregate type and occurrence
//! time, read a page at a time so that an export holds no transaction open, and resumable
//! after the last position it wrote.
//!
//! **Order, and why resuming skips nothing.** Positions are taken when an event is inserted,
//! not when its transaction commits, so a lower position can become visible after a higher
//! one; an export in position order that resumed after the higher one would never return the
//! lower. (An export of the audit read model has a second such race: its three topics are
//! consumed apart, so one aggregate type's entries can lag another's.) So the export reads the
//! events table in the relay's order, by transaction then position, and only transactions
//! older than every one still running (`tx_id < pg_snapshot_xmin`): nothing can appear before
//! what it has returned. A position to resume after names its event, whose transaction places
//! it in that order.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// The aggregate types with a history.
pub const AGGREGATE_TYPES: [&str; 3] = ["user", "order", "payment"];

/// Rows read per query.
pub const PAGE: i64 = 1000;
/// Bytes a page holds at most, rendered (past the line that crosses it): a thousand events of
/// up to 64 KiB each would otherwise be 64 MiB per page, per export.
pub const PAGE_BYTES: usize = 4 << 20;

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
    /// Positions rise within a transaction, and mostly across them (see the module's text).
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

/// The event's occurrence, from its metadata; when that is not an RFC 3339 instant (an
/// event imported by hand), when it was stored.
macro_rules! occurred {
    () => {
        "(CASE WHEN e.metadata->>'occurred_at' ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9:]+)$'
               THEN (e.metadata->>'occurred_at')::timestamptz ELSE e.recorded_at END)"
    };
}

/// The events after the cursor (`$1`) that a filter selects. Two texts, from the start and
/// after a cursor, rather than one with an `OR`: a plan made for any `$1` (a generic plan)
/// could not use the cursor as an index bound, and every page would read from the start.
macro_rules! selected {
    (start) => {
        selected!("$1::bigint IS NULL")
    };
    (after) => {
        selected!(
            "(e.tx_id, e.global_position)
             > (SELECT c.tx_id, c.global_position FROM events c WHERE c.global_position = $1)"
        )
    };
    ($cursor:literal) => {
        concat!(
            " FROM events e
             WHERE e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
               AND ",
            $cursor,
            "
               AND ($2::text IS NULL OR e.aggregate_type = $2)
               AND ($3::timestamptz IS NULL OR ",
            occurred!(),
            " >= $3)
               AND ($4::timestamptz IS NULL OR ",
            occurred!(),
            " < $4)"
        )
    };
}

/// Where an export resumes: after the event at `after` (a global position), or from the start
/// for 0. Refused when no event has that position: resuming after it could not be placed.
pub async fn cursor(pool: &PgPool, after: i64) -> Result<Option<i64>, CursorError> {
    if after == 0 {
        return Ok(None);
    }
    let known: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE global_position = $1)")
            .bind(after)
            .fetch_one(pool)
            .await?;
    if known {
        Ok(Some(after))
    } else {
        Err(CursorError::Unknown(after))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("no event is at position {0}: resume after a position an export returned")]
    Unknown(i64),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// The columns of an entry.
macro_rules! columns {
    () => {
        concat!(
            "SELECT e.global_position, e.aggregate_type, e.aggregate_id, e.sequence, e.event_id,
                    e.event_type, e.event_version, ",
            occurred!(),
            " AS occurred_at,
                    COALESCE(e.metadata->>'actor', '') AS actor,
                    COALESCE(e.metadata->>'correlation_id', '') AS correlation_id,
                    COALESCE(e.metadata->>'causation_id', '') AS causation_id,
                    COALESCE(e.metadata->>'traceparent', '') AS traceparent,
                    e.payload"
        )
    };
}

const PAGE_FROM_START: &str = concat!(
    columns!(),
    selected!(start),
    " ORDER BY e.tx_id, e.global_position LIMIT $5"
);
const PAGE_AFTER: &str = concat!(
    columns!(),
    selected!(after),
    " ORDER BY e.tx_id, e.global_position LIMIT $5"
);
const COUNT_FROM_START: &str = concat!("SELECT count(*)", selected!(start));
const COUNT_AFTER: &str = concat!("SELECT count(*)", selected!(after));

/// A page of entries, rendered.
#[derive(Debug, Default)]
pub struct Page {
    /// The entries' lines.
    pub text: String,
    /// How many entries, and the position of the last (where the next page resumes).
    pub entries: u64,
    pub last: Option<i64>,
    /// Whether the page stopped at its count or its bytes, so that more may follow.
    pub full: bool,
}

/// The entries after `cursor` ([`cursor`]) that `filter` selects, at most `limit` of them
/// and, past the entry that crosses it, [`PAGE_BYTES`] of text, each rendered by `render` as
/// it is read (the rows are streamed, never held all at once).
pub async fn page(
    pool: &PgPool,
    filter: &Filter,
    cursor: Option<i64>,
    limit: i64,
    render: impl Fn(&AuditEntry) -> String,
) -> Result<Page, sqlx::Error> {
    use futures::TryStreamExt;
    let sql = if cursor.is_some() {
        PAGE_AFTER
    } else {
        PAGE_FROM_START
    };
    let mut rows = sqlx::query_as::<_, AuditEntry>(sql)
        .bind(cursor)
        .bind(&filter.aggregate_type)
        .bind(filter.from)
        .bind(filter.to)
        .bind(limit)
        .fetch(pool);
    let mut page = Page::default();
    while let Some(entry) = rows.try_next().await? {
        page.text.push_str(&render(&entry));
        page.entries += 1;
        page.last = Some(entry.global_position);
        if page.text.len() >= PAGE_BYTES {
            page.full = true;
            break;
        }
    }
    page.full |= page.entries as i64 == limit;
    Ok(page)
}

/// How many entries after `cursor` `filter` selects (for progress).
pub async fn count(
    pool: &PgPool,
    filter: &Filter,
    cursor: Option<i64>,
) -> Result<i64, sqlx::Error> {
    let sql = if cursor.is_some() {
        COUNT_AFTER
    } else {
        COUNT_FROM_START
    };
    sqlx::query_scalar(sql)
        .bind(cursor)
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

/// A CSV field, quoted (quotes doubled) when it holds a comma, quote or line break. A value
/// that a spreadsheet would take for a formula (one beginning with `=`, `+`, `-`, `@`, a tab
/// or a carriage return: a correlation id sent as `=HYPERLINK(…)`, say) gets a leading `'`,
/// so that opening an export shows it as text instead of evaluating it with the rows around.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{value}"))
    } else {
        std::borrow::Cow::Borrowed(value)
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.into_owned()
    }
}

/// Where an export being resumed ends cleanly: the length of `file` up to the end of its last
/// complete line (a line an interrupted export cut short is dropped by truncating to it), and
/// that line. Reads only the end of the file, a block at a time.
pub fn last_complete_line<F: std::io::Read + std::io::Seek>(
    file: &mut F,
) -> std::io::Result<(u64, String)> {
    use std::io::SeekFrom;
    const BLOCK: u64 = 64 * 1024;
    let mut start = file.seek(SeekFrom::End(0))?;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let newlines: Vec<usize> = tail
            .iter()
            .enumerate()
            .filter_map(|(i, b)| (*b == b'\n').then_some(i))
            .collect();
        if newlines.len() >= 2 || start == 0 {
            let Some(&end) = newlines.last() else {
                return Ok((0, String::new()));
            };
            let begin = newlines.len().checked_sub(2).map_or(0, |i| newlines[i] + 1);
            let line = String::from_utf8_lossy(&tail[begin..end]).into_owned();
            return Ok((start + end as u64 + 1, line));
        }
        let step = BLOCK.min(start);
        start -= step;
        file.seek(SeekFrom::Start(start))?;
        let mut block = vec![0; step as usize];
        file.read_exact(&mut block)?;
        block.extend_from_slice(&tail);
        tail = block;
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
#[path = "audit_export_tests.rs"]
mod tests;
