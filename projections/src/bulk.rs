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
use std::io::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use sqlx::PgConnection;

use crate::envelope::Envelope;
use crate::projection::ApplyError;

/// Bytes of COPY data sent per message.
const COPY_CHUNK: usize = 1 << 20;

/// Rows for one of a model's tables, in `COPY` text, ready to be copied into a table set.
pub struct TableRows {
    pub table: &'static str,
    pub columns: &'static str,
    pub rows: CopyRows,
}

impl TableRows {
    /// Copies the rows into `<schema>.<table>`.
    pub async fn copy_into(
        mut self,
        conn: &mut PgConnection,
        schema: &str,
    ) -> Result<(), sqlx::Error> {
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

/// Writes the last `width` decimal digits of `value`, zero-padded (a timestamp is written a
/// million times in a replay; `write!` costs several times this).
fn digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let mut text = [b'0'; 10];
    for place in text[..width].iter_mut().rev() {
        *place = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&text[..width]);
}

/// True when `bytes` hold a byte COPY's text format escapes. Written without an early exit,
/// so that the compiler checks many bytes at once: most values hold none of them and are
/// copied whole.
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |found, &byte| {
        found | (byte == b'\\') | (byte == b'\t') | (byte == b'\n') | (byte == b'\r')
    })
}

/// Writes `bytes` with COPY's text escapes.
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Rows in PostgreSQL's COPY text format (tab-separated, `\N` for null, backslash escapes).
pub struct CopyRows {
    buf: Vec<u8>,
    /// A JSON value's text before it is escaped into `buf` (kept to reuse its memory).
    scratch: Vec<u8>,
    /// True at the start of a row (no separator before the next field).
    row_start: bool,
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
            scratch: Vec::new(),
            row_start: true,
            rows: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    fn separate(&mut self) {
        if !self.row_start {
            self.buf.push(b'\t');
        }
        self.row_start = false;
    }

    /// A text field, escaped.
    pub fn text(&mut self, value: &str) -> &mut Self {
        self.separate();
        escape_into(&mut self.buf, value.as_bytes());
        self
    }

    pub fn opt_text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.text(value),
            None => {
                self.separate();
                self.buf.extend_from_slice(b"\\N");
                self
            }
        }
    }

    pub fn int(&mut self, value: i64) -> &mut Self {
        self.separate();
        // Writing into a Vec cannot fail.
        let _ = write!(self.buf, "{value}");
        self
    }

    pub fn uuid(&mut self, value: &uuid::Uuid) -> &mut Self {
        self.separate();
        let mut text = uuid::Uuid::encode_buffer();
        self.buf
            .extend_from_slice(value.hyphenated().encode_lower(&mut text).as_bytes());
        self
    }

    /// A `timestamptz`, to the microsecond, truncated as a bound parameter is.
    pub fn time(&mut self, value: &DateTime<Utc>) -> &mut Self {
        self.date(value.date_naive());
        self.buf.push(b' ');
        digits(&mut self.buf, value.hour(), 2);
        self.buf.push(b':');
        digits(&mut self.buf, value.minute(), 2);
        self.buf.push(b':');
        digits(&mut self.buf, value.second(), 2);
        self.buf.push(b'.');
        // A leap second's nanoseconds pass a billion; it stays in its second, as chrono
        // prints it.
        digits(
            &mut self.buf,
            (value.nanosecond() % 1_000_000_000) / 1000,
            6,
        );
        self.buf.extend_from_slice(b"+00");
        self
    }

    pub fn date(&mut self, value: NaiveDate) -> &mut Self {
        self.separate();
        match u32::try_from(value.year()) {
            Ok(year) if year <= 9999 => digits(&mut self.buf, year, 4),
            // Outside four digits (not an RFC 3339 time), the general formatter.
            _ => {
                let _ = write!(self.buf, "{:04}", value.year());
            }
        }
        self.buf.push(b'-');
        digits(&mut self.buf, value.month(), 2);
        self.buf.push(b'-');
        digits(&mut self.buf, value.day(), 2);
        self
    }

    /// JSON text, serialized into a buffer kept for the next value and escaped from there.
    pub fn json(&mut self, value: &serde_json::Value) -> &mut Self {
        self.separate();
        // Serialized whole, then escaped in one pass (JSON text holds backslashes, and no raw
        // tab or line break). Serializing a `Value` into memory cannot fail.
        self.scratch.clear();
        let _ = serde_json::to_writer(&mut self.scratch, value);
        escape_into(&mut self.buf, &self.scratch);
        self
    }

    pub fn end_row(&mut self) {
        self.buf.push(b'\n');
        self.row_start = true;
        self.rows += 1;
    }

    /// Sends the rows to `COPY <table> (<columns>) FROM STDIN` and empties the buffer.
    pub async fn copy_into(
        &mut self,
        conn: &mut PgConnection,
        table: &str,
        columns: &str,
    ) -> Result<(), sqlx::Error> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut copy = conn
            .copy_in_raw(&format!("COPY {table} ({columns}) FROM STDIN"))
            .await?;
        for piece in self.buf.chunks(COPY_CHUNK) {
            copy.send(piece).await?;
        }
        copy.finish().await?;
        self.buf.clear();
        self.rows = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_escaped_and_separated() {
        let mut rows = CopyRows::new();
        rows.text("a\tb\\c\nd")
            .opt_text(None)
            .int(-7)
            .json(&serde_json::json!({"k": "v\n"}));
        rows.end_row();
        rows.text("x");
        rows.end_row();
        assert_eq!(
            String::from_utf8(rows.buf.clone()).unwrap(),
            "a\\tb\\\\c\\nd\t\\N\t-7\t{\"k\":\"v\\\\n\"}\nx\n"
        );
        assert_eq!(rows.rows, 2);
    }

    /// The fast path copies a value whole only when none of the four bytes is in it,
    /// wherever it stands.
    #[test]
    fn every_escaped_byte_is_found_wherever_it_is() {
        for (byte, escaped) in [('\\', "\\\\"), ('\t', "\\t"), ('\n', "\\n"), ('\r', "\\r")] {
            for at in [0, 1, 17, 40] {
                let mut value: String = "x".repeat(41);
                value.replace_range(at..=at, &byte.to_string());
                let mut out = Vec::new();
                escape_into(&mut out, value.as_bytes());
                let expected = format!("{}{escaped}{}", &value[..at], &value[at + 1..]);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    expected,
                    "{byte:?} at {at}"
                );
            }
        }
        let mut out = Vec::new();
        escape_into(&mut out, "plain ünïcode".as_bytes());
        assert_eq!(String::from_utf8(out).unwrap(), "plain ünïcode");
    }

    /// The audit fold hands its rows over with `mem::take`: what is left must start its
    /// next row without a separator.
    #[test]
    fn rows_taken_leave_a_buffer_that_starts_a_row() {
        let mut rows = CopyRows::new();
        rows.text("a").text("b").end_row();
        let taken = std::mem::take(&mut rows);
        rows.text("c").text("d").end_row();
        assert_eq!(String::from_utf8(taken.buf).unwrap(), "a\tb\n");
        assert_eq!(String::from_utf8(rows.buf.clone()).unwrap(), "c\td\n");
        assert_eq!(rows.rows, 1);
    }

    #[test]
    fn times_are_truncated_to_the_microsecond() {
        let at: DateTime<Utc> = "2026-12-01T10:20:30.123456789Z".parse().unwrap();
        let mut rows = CopyRows::new();
        rows.time(&at).date(at.date_naive());
        assert_eq!(
            String::from_utf8(rows.buf.clone()).unwrap(),
            "2026-12-01 10:20:30.123456+00\t2026-12-01"
        );
        let early: DateTime<Utc> = "0007-02-03T04:05:06.000007Z".parse().unwrap();
        let mut rows = CopyRows::new();
        rows.time(&early);
        assert_eq!(
            String::from_utf8(rows.buf.clone()).unwrap(),
            "0007-02-03 04:05:06.000007+00"
        );
    }
}
