//! Replay's and verify's fast path: a read model folded in memory over a run of events and
//! written with `COPY`, instead of one statement per event.
//!
//! A [`Fold`] has the same effect on rows as its model's `apply` (an insert of a row that is
//! already there does nothing, an update of a row that is not there does nothing, a refused
//! event changes nothing), so a table set built by folding and then caught up by `apply` is
//! the set `apply` alone would have built. `projector verify` compares the live tables (built
//! by `apply`, event by event) with a fold, so the two are checked against each other on
//! every verification, and the replay test runs both on the same log.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use sqlx::PgConnection;

use crate::envelope::Envelope;
use crate::projection::ApplyError;

/// Bytes of COPY data sent per message.
const COPY_CHUNK: usize = 1 << 20;

/// Rows for one of a model's tables, in `COPY`'s binary format, ready to be copied into a
/// table set.
pub struct TableRows {
    pub table: &'static str,
    pub columns: &'static str,
    pub rows: CopyRows,
}

impl TableRows {
    /// Copies the rows into `<schema>.<table>`.
    pub async fn copy_into(self, conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
        self.rows
            .copy_into(conn, &format!("{schema}.{}", self.table), self.columns)
            .await
    }
}

/// A read model's rows, folded in memory. A fold does no I/O: it hands its rows over, and
/// the pass copies them on a connection of its own while the folding goes on
/// (`crate::rebuild`).
pub trait Fold: Send {
    /// Folds one event, in log order. On `Err` nothing changed (the event is reported as one
    /// the projection could not apply, as the live projection would dead-letter it).
    fn fold(&mut self, event: &Envelope) -> Result<(), ApplyError>;

    /// Hands over what it holds, as rows per table, and forgets it. `done` is false after a
    /// chunk of events: a fold of rows that later events may change keeps them (and hands
    /// over nothing); rows that never change (one per event) go out at once, so memory does
    /// not grow with the log.
    fn take(&mut self, done: bool) -> Vec<TableRows>;
}

/// [`Fold::take`] for a fold whose rows later events may change (a row per aggregate, kept
/// in `rows`): nothing until `done`, then every row, encoded by `encode`, for
/// `<table> (<columns>)`.
pub fn take_when_done<K, V>(
    rows: &mut HashMap<K, V>,
    target: (&'static str, &'static str),
    done: bool,
    encode: fn(&mut CopyRows, K, V),
) -> Vec<TableRows> {
    if !done {
        return Vec::new();
    }
    let (table, columns) = target;
    let mut out = CopyRows::new();
    // Taken, not drained: the map's memory goes as soon as its rows are encoded.
    for (key, row) in std::mem::take(rows) {
        encode(&mut out, key, row);
        out.end_row();
    }
    vec![TableRows {
        table,
        columns,
        rows: out,
    }]
}

/// The start of every binary `COPY` stream: its signature, no flags, no header extension.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The end of a binary `COPY` stream: a row of -1 fields.
const BINARY_TRAILER: &[u8] = &(-1i16).to_be_bytes();

/// The day PostgreSQL's timestamps (at its midnight, UTC) and dates count from.
fn postgres_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default()
}

/// Rows in PostgreSQL's binary `COPY` format: each row its field count, each field its length
/// and its value as the column type's binary input reads it (`text` its bytes, `bigint` eight
/// bytes, `uuid` sixteen, `timestamptz` microseconds and `date` days from 2000-01-01, `jsonb`
/// a version byte and its text). PostgreSQL takes these without parsing text: copying
/// `rm_audit`'s million rows this way took a quarter less of its time than the text format
/// (docs/performance.md), and nothing needs escaping.
///
/// Each method writes the type its column has: every read model column written here is
/// `text`, `bigint`, `uuid`, `timestamptz`, `date` or `jsonb`; a column of another type
/// refuses the copy ("incorrect binary data format").
pub struct CopyRows {
    buf: Vec<u8>,
    /// Where the current row's field count is, once it has a field.
    row_at: Option<usize>,
    fields: i16,
    rows: usize,
}

impl Default for CopyRows {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyRows {
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            row_at: None,
            fields: 0,
            rows: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Takes the rows, leaving an empty buffer with room for as many bytes: a fold that hands
    /// its rows over after every chunk of events fills about as many each time, and growing
    /// each buffer from nothing copied it several times over.
    pub fn take_leaving_room(&mut self) -> CopyRows {
        let room = self.buf.len();
        std::mem::replace(
            self,
            CopyRows {
                buf: Vec::with_capacity(room),
                ..CopyRows::new()
            },
        )
    }

    /// Starts a field of `len` bytes (the row's field count goes first).
    fn field(&mut self, len: i32) {
        if self.row_at.is_none() {
            self.row_at = Some(self.buf.len());
            self.buf.extend_from_slice(&0i16.to_be_bytes());
        }
        self.fields += 1;
        self.buf.extend_from_slice(&len.to_be_bytes());
    }

    /// A field whose length is known only once it is written: `write` appends its bytes.
    fn field_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.field(0);
        let at = self.buf.len();
        write(&mut self.buf);
        let len = i32::try_from(self.buf.len() - at).unwrap_or(i32::MAX);
        self.buf[at - 4..at].copy_from_slice(&len.to_be_bytes());
    }

    pub fn text(&mut self, value: &str) -> &mut Self {
        self.field_with(|buf| buf.extend_from_slice(value.as_bytes()));
        self
    }

    /// A text field, or null (a null is the same in every column type).
    pub fn opt_text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.text(value),
            None => {
                self.field(-1);
                self
            }
        }
    }

    /// A `bigint`.
    pub fn int(&mut self, value: i64) -> &mut Self {
        self.field(8);
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn uuid(&mut self, value: &uuid::Uuid) -> &mut Self {
        self.field(16);
        self.buf.extend_from_slice(value.as_bytes());
        self
    }

    /// A `timestamptz`, to the microsecond, computed as a bound parameter's (so that a fold
    /// writes what `apply` binds, to the microsecond).
    pub fn time(&mut self, value: &DateTime<Utc>) -> &mut Self {
        // chrono's times span about 262,000 years either way, some 8.3e18 microseconds: a
        // count always fits.
        let micros = (value.naive_utc() - postgres_epoch().and_time(NaiveTime::MIN))
            .num_microseconds()
            .unwrap_or(i64::MAX);
        self.field(8);
        self.buf.extend_from_slice(&micros.to_be_bytes());
        self
    }

    pub fn date(&mut self, value: NaiveDate) -> &mut Self {
        // chrono's dates span fewer than 2^31 days.
        let days = (value - postgres_epoch()).num_days() as i32;
        self.field(4);
        self.buf.extend_from_slice(&days.to_be_bytes());
        self
    }

    /// A `jsonb`: its format's version byte, then the JSON text.
    pub fn json(&mut self, value: &serde_json::Value) -> &mut Self {
        self.field_with(|buf| {
            buf.push(1);
            // Serializing a `Value` into memory cannot fail.
            let _ = serde_json::to_writer(buf, value);
        });
        self
    }

    pub fn end_row(&mut self) {
        let at = self.row_at.take().unwrap_or_else(|| {
            // A row of no fields still says so.
            self.buf.extend_from_slice(&0i16.to_be_bytes());
            self.buf.len() - 2
        });
        self.buf[at..at + 2].copy_from_slice(&self.fields.to_be_bytes());
        self.fields = 0;
        self.rows += 1;
    }

    /// Sends the rows to `COPY <table> (<columns>) FROM STDIN (FORMAT binary)`.
    pub async fn copy_into(
        &self,
        conn: &mut PgConnection,
        table: &str,
        columns: &str,
    ) -> Result<(), sqlx::Error> {
        copy_all(conn, table, columns, &[self]).await
    }
}

/// Sends the rows of every one of `parts` to one `COPY <table> (<columns>) FROM STDIN
/// (FORMAT binary)`.
pub async fn copy_all(
    conn: &mut PgConnection,
    table: &str,
    columns: &str,
    parts: &[&CopyRows],
) -> Result<(), sqlx::Error> {
    if parts.iter().all(|rows| rows.is_empty()) {
        return Ok(());
    }
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    copy.send(BINARY_HEADER).await?;
    for rows in parts {
        for piece in rows.buf.chunks(COPY_CHUNK) {
            copy.send(piece).await?;
        }
    }
    copy.send(BINARY_TRAILER).await?;
    copy.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field count, then each field's length and bytes.
    #[test]
    fn rows_hold_their_field_counts_lengths_and_values() {
        let id = uuid::Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        let mut rows = CopyRows::new();
        rows.text("a\tb")
            .opt_text(None)
            .int(-7)
            .uuid(&id)
            .json(&serde_json::json!({"k": "v\n"}));
        rows.end_row();
        rows.text("").end_row();
        let mut expected = Vec::new();
        expected.extend_from_slice(&5i16.to_be_bytes());
        expected.extend_from_slice(&3i32.to_be_bytes());
        expected.extend_from_slice(b"a\tb");
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        expected.extend_from_slice(&8i32.to_be_bytes());
        expected.extend_from_slice(&(-7i64).to_be_bytes());
        expected.extend_from_slice(&16i32.to_be_bytes());
        expected.extend_from_slice(&(1..=16).collect::<Vec<u8>>());
        let json = br#"{"k":"v\n"}"#;
        expected.extend_from_slice(&(json.len() as i32 + 1).to_be_bytes());
        expected.push(1);
        expected.extend_from_slice(json);
        expected.extend_from_slice(&1i16.to_be_bytes());
        expected.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(rows.buf, expected);
        assert_eq!(rows.rows, 2);
    }

    /// The audit fold hands its rows over with `take_leaving_room`: what is left must start
    /// its next row with a field count of its own, in a buffer with room for as many bytes.
    #[test]
    fn rows_taken_leave_a_buffer_that_starts_a_row() {
        let mut rows = CopyRows::new();
        rows.text("a").text("b").end_row();
        let taken = rows.take_leaving_room();
        assert!(rows.is_empty() && rows.buf.capacity() >= taken.buf.len());
        rows.text("c").end_row();
        assert_eq!(&taken.buf[..2], &2i16.to_be_bytes());
        assert_eq!(
            rows.buf,
            [&1i16.to_be_bytes()[..], &1i32.to_be_bytes(), b"c"].concat()
        );
        assert_eq!(rows.rows, 1);
    }

    /// What sqlx binds for `value`, as a field: its length, then its bytes.
    fn bound<T: sqlx::Encode<'static, sqlx::Postgres>>(value: T) -> Vec<u8> {
        let mut buf = sqlx::postgres::PgArgumentBuffer::default();
        let _ = value.encode_by_ref(&mut buf).unwrap();
        [&(buf.len() as i32).to_be_bytes()[..], &buf[..]].concat()
    }

    /// Times, dates, ids and numbers are written as `apply`'s bound parameters are, on both
    /// sides of PostgreSQL's epoch, below the microsecond and in a leap second.
    #[test]
    fn fields_are_what_a_bound_parameter_sends() {
        let times = [
            "2000-01-01T00:00:00Z",
            "2000-01-01T00:00:01.000001999Z",
            "1999-12-31T23:59:59.4999995Z",
            "1969-07-20T20:17:40.1234567Z",
            "2026-12-01T10:20:30.123456789Z",
            "2016-12-31T23:59:60.5Z",
        ];
        for text in times {
            let at: DateTime<Utc> = text.parse().unwrap();
            let mut rows = CopyRows::new();
            rows.time(&at);
            assert_eq!(rows.buf[2..], bound(at), "{text}");
        }
        for (y, m, d) in [(2000, 1, 1), (2026, 12, 1), (1999, 12, 31), (1, 1, 1)] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            let mut rows = CopyRows::new();
            rows.date(date);
            assert_eq!(rows.buf[2..], bound(date), "{date}");
        }
        let id = uuid::Uuid::now_v7();
        let mut rows = CopyRows::new();
        rows.uuid(&id).int(i64::MIN).text("ünï");
        let expected = [bound(id), bound(i64::MIN), bound("ünï")].concat();
        assert_eq!(rows.buf[2..], expected);
    }
}
