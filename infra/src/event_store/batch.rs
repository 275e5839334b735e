//! Group commit: appends that need no transaction are queued and written by a few workers,
//! each taking whatever has queued up (up to a limit) and writing it as one statement.
//!
//! Under load, one statement and one WAL flush then carry many commands instead of one each;
//! when idle, a batch is a single request and adds no delay. A batch is all-or-nothing, so if
//! it fails (a version conflict, a taken email or a value PostgreSQL refuses in any one of its
//! requests), every request in it is retried in halves until each gets its own answer: one
//! request's conflict or bad value never fails another. If the database is unreachable, the
//! whole batch gets that answer at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::append::unless_down;
use super::insert::insert;
use super::types::{classify, AppendError, AppendRequest, Appended};
use crate::db::Availability;

struct Pending {
    request: AppendRequest,
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// The queue in front of the group-commit workers.
#[derive(Debug, Clone)]
pub(crate) struct CommitQueue {
    sender: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl CommitQueue {
    /// Spawns `workers` tasks on the current runtime; they stop when the queue is dropped.
    pub(crate) fn start(
        pool: PgPool,
        workers: usize,
        max_batch: usize,
        availability: Option<Availability>,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(max_batch.max(1) * workers.max(1) * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..workers.max(1) {
            let writer = Writer {
                pool: pool.clone(),
                availability: availability.clone(),
            };
            tokio::spawn(worker(writer, receiver.clone(), max_batch.max(1)));
        }
        Self { sender }
    }

    pub(crate) async fn submit(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending { request, reply })
            .await
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)?
    }
}

/// What a group-commit worker writes with.
struct Writer {
    pool: PgPool,
    availability: Option<Availability>,
}

async fn worker(writer: Writer, receiver: Arc<Mutex<mpsc::Receiver<Pending>>>, max_batch: usize) {
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(first) => batch.push(first),
                None => return,
            }
            // Let handlers that are ready to submit do so before the batch is cut.
            tokio::task::yield_now().await;
            while batch.len() < max_batch {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        metrics::histogram!("event_store_commit_batch_size").record(batch.len() as f64);
        write_batch(&writer, batch).await;
    }
}

async fn write_batch(writer: &Writer, mut batch: Vec<Pending>) {
    // A request nobody waits for any more (its request timed out, its client went away) is
    // not written: no answer could say it was.
    batch.retain(|pending| !pending.reply.is_closed());
    if batch.is_empty() {
        return;
    }
    // A connection first, which the batch's statements then share: while none comes, an
    // outage found meanwhile answers the batch at once (nothing of it was sent), rather than
    // after the pool's timeout.
    let mut conn = match unless_down(writer.availability.as_ref(), writer.pool.acquire()).await {
        Some(Ok(conn)) => conn,
        Some(Err(error)) => {
            let shared = Arc::new(error);
            for pending in batch {
                let _ = pending
                    .reply
                    .send(Err(AppendError::Database(shared.clone())));
            }
            return;
        }
        None => {
            for pending in batch {
                let _ = pending.reply.send(Err(AppendError::DatabaseDown));
            }
            return;
        }
    };
    // Two appends to one aggregate in one statement would fail it as a whole; the later ones
    // (which lost the race anyway) go in a following statement.
    let mut seen = HashSet::with_capacity(batch.len());
    let (first, later): (Vec<Pending>, Vec<Pending>) = batch.into_iter().partition(|p| {
        seen.insert((
            p.request.aggregate_type.clone(),
            p.request.aggregate_id.clone(),
        ))
    });
    for group in [first, later] {
        if group.is_empty() {
            continue;
        }
        let requests: Vec<&AppendRequest> = group.iter().map(|p| &p.request).collect();
        let results = write_group(&mut conn, &requests).await;
        drop(requests);
        for (pending, result) in group.into_iter().zip(results) {
            let _ = pending.reply.send(result);
        }
    }
}

/// Writes the group in one statement. If that fails, requests decided against a version that
/// is no longer current are answered with a conflict (one cheap query finds them) and the rest
/// retried; if none was stale, the group is halved and each half retried. Every request gets
/// its own answer and a failing one never takes another down with it.
fn write_group<'a>(
    conn: &'a mut PgConnection,
    requests: &'a [&'a AppendRequest],
) -> BoxFuture<'a, Vec<Result<Appended, AppendError>>> {
    Box::pin(async move {
        let error = match insert(&mut *conn, requests).await {
            Ok(appended) => return appended.into_iter().map(Ok).collect(),
            Err(error) => error,
        };
        if requests.len() == 1 {
            return vec![Err(classify(error, requests[0]))];
        }
        // Not the requests' fault: retrying halves would only wait longer for the same answer.
        if crate::db::is_unavailable(&error) {
            return fail_all(error, requests.len());
        }
        // A refused value (class 22) is some request's own: find it by halving.
        if crate::db::is_data_exception(&error) {
            return halve(conn, requests).await;
        }
        let current = match current_versions(conn, requests).await {
            Ok(current) => current,
            Err(error) => return fail_all(error, requests.len()),
        };
        let stale = |r: &AppendRequest| {
            current
                .get(&(r.aggregate_type.clone(), r.aggregate_id.clone()))
                .is_some_and(|&v| v != r.expected_sequence)
        };
        let retry: Vec<&AppendRequest> = requests.iter().copied().filter(|r| !stale(r)).collect();
        let mut retried = if retry.len() == requests.len() {
            halve(conn, requests).await
        } else {
            write_group(conn, &retry).await
        }
        .into_iter();
        requests
            .iter()
            .map(
                |r| match current.get(&(r.aggregate_type.clone(), r.aggregate_id.clone())) {
                    Some(&current_version) if current_version != r.expected_sequence => {
                        Err(AppendError::VersionConflict { current_version })
                    }
                    _ => retried.next().unwrap_or(Err(AppendError::Empty)),
                },
            )
            .collect()
    })
}

/// Writes each half of the group on its own, so each request gets its own answer.
async fn halve(
    conn: &mut PgConnection,
    requests: &[&AppendRequest],
) -> Vec<Result<Appended, AppendError>> {
    let (left, right) = requests.split_at(requests.len() / 2);
    let mut results = write_group(conn, left).await;
    results.extend(write_group(conn, right).await);
    results
}

/// The same database error for each of `count` requests.
fn fail_all(error: sqlx::Error, count: usize) -> Vec<Result<Appended, AppendError>> {
    let shared = Arc::new(error);
    (0..count)
        .map(|_| Err(AppendError::Database(shared.clone())))
        .collect()
}

/// The current version of every aggregate the requests touch.
async fn current_versions(
    conn: &mut PgConnection,
    requests: &[&AppendRequest],
) -> Result<HashMap<(String, String), i64>, sqlx::Error> {
    let types: Vec<String> = requests.iter().map(|r| r.aggregate_type.clone()).collect();
    let ids: Vec<String> = requests.iter().map(|r| r.aggregate_id.clone()).collect();
    let rows = sqlx::query(
        "SELECT k.t, k.i, (SELECT COALESCE(MAX(sequence), 0) FROM events e
                          WHERE e.aggregate_type = k.t AND e.aggregate_id = k.i) AS version
         FROM (SELECT DISTINCT t, i FROM UNNEST($1::text[], $2::text[]) AS u(t, i)) AS k",
    )
    .bind(types)
    .bind(ids)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                (row.try_get("t")?, row.try_get("i")?),
                row.try_get("version")?,
            ))
        })
        .collect()
}
