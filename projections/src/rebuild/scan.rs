//! The first pass over the events table: one task scans and turns rows into envelopes, and
//! hands them to the fold in the order read (see [`fold_events`]).

use std::collections::HashMap;

use futures::TryStreamExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use super::{Applied, Last, Pass, Target};
use crate::envelope::Envelope;

/// Events read and turned into envelopes per message from the reading task to the fold.
const READ_CHUNK: usize = 1_000;

/// Chunks in flight between the reader and the fold: enough for the reader to go on while
/// the fold waits to hand a chunk of [`super::CHUNK`] events' rows to a busy writer.
const READ_AHEAD: usize = 32;

/// An event as the reading task hands it to the fold.
struct Read {
    key: (String, String),
    sequence: i64,
    event_id: uuid::Uuid,
    envelope: Result<Envelope, String>,
}

fn read(stored: crate::stored::Stored) -> Read {
    Read {
        key: (stored.aggregate_type.clone(), stored.aggregate_id.clone()),
        sequence: stored.sequence,
        event_id: stored.event_id,
        envelope: stored.into_envelope(),
    }
}

/// A chunk of scanned rows as the fold takes them: the rows whose metadata texts may be
/// values of other kinds than strings are read again with their fields checked (see
/// [`crate::stored::SCAN_COLUMNS`]), on a connection of the reader's own, opened the first
/// time (the pool's may all be taken by the pass's writer and the caller).
async fn reads(
    checker: &mut Option<PgConnection>,
    options: &PgConnectOptions,
    scanned: Vec<crate::stored::Stored>,
) -> Result<Vec<Read>, sqlx::Error> {
    let unsure: Vec<i64> = scanned
        .iter()
        .filter(|stored| stored.metadata.may_hold_other_kinds())
        .map(|stored| stored.global_position)
        .collect();
    let mut checked = if unsure.is_empty() {
        HashMap::new()
    } else {
        let conn = match checker {
            Some(conn) => conn,
            None => checker.insert(PgConnection::connect_with(options).await?),
        };
        crate::stored::checked_metadata(conn, &unsure).await?
    };
    Ok(scanned
        .into_iter()
        .map(|mut stored| {
            if let Some(metadata) = checked.remove(&stored.global_position) {
                stored.metadata = metadata;
            }
            read(stored)
        })
        .collect())
}

/// Folds the events `filter` selects (an SQL condition on `events e`, built by the caller from
/// its own names), in log order, into every target that reads their aggregate type, and writes
/// the targets' rows into their schemas (those the folds hold at the end only with
/// [`Last::Write`]); returns what was folded per aggregate.
///
/// Three tasks, so that both cores work: one scans and turns rows into envelopes (the upcast
/// and the Avro round trip), this one folds them in the order read, and the pass's writer
/// copies the folded rows into the tables.
pub(crate) async fn fold_events(
    pool: &PgPool,
    targets: &mut [Target],
    filter: &str,
    last: Last,
    progress: &mut dyn FnMut(u64),
) -> Result<Applied, sqlx::Error> {
    let sql = format!(
        "SELECT {columns} FROM events e WHERE {filter} ORDER BY e.global_position",
        columns = crate::stored::SCAN_COLUMNS
    );
    let (send, mut chunks) = tokio::sync::mpsc::channel::<Vec<Read>>(READ_AHEAD);
    let scan_pool = pool.clone();
    let reader = tokio::spawn(async move {
        // The scan is one statement that streams for as long as the fold takes: on a
        // connection of its own that does not report it as a slow statement.
        let options = (*scan_pool.connect_options())
            .clone()
            .disable_statement_logging();
        let mut conn = PgConnection::connect_with(&options).await?;
        let mut checker = None;
        let mut rows = sqlx::query(&sql).fetch(&mut conn);
        let mut chunk = Vec::with_capacity(READ_CHUNK);
        while let Some(row) = rows.try_next().await? {
            chunk.push(crate::stored::Stored::from_row(&row)?);
            if chunk.len() == READ_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(READ_CHUNK));
                if send
                    .send(reads(&mut checker, &options, full).await?)
                    .await
                    .is_err()
                {
                    // The fold stopped on an error of its own, which it reports.
                    return Ok(());
                }
            }
        }
        drop(rows);
        if !chunk.is_empty() {
            let _ = send.send(reads(&mut checker, &options, chunk).await?).await;
        }
        if let Some(checker) = checker {
            checker.close().await?;
        }
        conn.close().await
    });
    let mut pass = Pass::new(pool, targets).await?;
    let folded = async {
        while let Some(chunk) = chunks.recv().await {
            for event in chunk {
                let envelope = event.envelope.as_ref().map_err(String::as_str);
                pass.add(
                    event.key,
                    event.sequence,
                    event.event_id,
                    envelope,
                    progress,
                )
                .await?;
            }
        }
        Ok::<_, sqlx::Error>(())
    }
    .await;
    // On a fold error the reader stops at its next chunk; on a scan error the channel closes
    // early, and the pass must not be written as if complete.
    drop(chunks);
    let scanned = reader
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("the scan's task failed: {e}")))?;
    folded?;
    scanned?;
    pass.finish(last, progress).await
}
