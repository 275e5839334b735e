//! Folds a run of the events table into several read models at once (replay's first pass and
//! verify's rebuild): one ordered scan, each event turned into what a consumer sees once, and
//! handed to every model that reads its aggregate type; the models' rows go out with `COPY`
//! (see [`crate::bulk`]).

use std::collections::HashMap;

use futures::TryStreamExt;
use sqlx::PgPool;

use crate::bulk::{Fold, TableRows};
use crate::envelope::Envelope;
use crate::projection::ReadModel;

mod scan;

pub(crate) use scan::fold_events;

/// Events folded between two writes (and progress reports).
const CHUNK: u64 = 20_000;

/// Per aggregate (type, id), the last sequence folded.
pub(crate) type Applied = HashMap<(String, String), i64>;

/// A model being folded into the tables of `schema`.
pub(crate) struct Target {
    pub model: &'static dyn ReadModel,
    pub schema: String,
    /// Its fold, until the pass ends and hands it to the encoder ([`encode_last`]).
    fold: Option<Box<dyn Fold>>,
    /// Events folded.
    pub events: u64,
    /// Events it could not apply (event id, error), as the live projection would have
    /// dead-lettered them.
    pub failed: Vec<(String, String)>,
    /// The rows its fold held at the end of the pass, as the encoder hands them over.
    last: Option<tokio::sync::oneshot::Receiver<Vec<TableRows>>>,
}

impl Target {
    pub fn new(model: &'static dyn ReadModel, schema: &str) -> Self {
        Self {
            model,
            schema: schema.to_owned(),
            fold: Some(model.fold()),
            events: 0,
            failed: Vec::new(),
            last: None,
        }
    }

    /// Copies the rows its fold held at the end of the pass into its schema on `conn`, once
    /// they are encoded.
    pub async fn write_last(&mut self, conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        let rows = match (self.last.take(), self.fold.take()) {
            (Some(encoded), _) => encoded.await.map_err(|_| {
                sqlx::Error::Protocol("encoding a fold's last rows failed".to_owned())
            })?,
            (None, Some(mut fold)) => fold.take(true),
            (None, None) => Vec::new(),
        };
        for rows in rows {
            rows.copy_into(&mut *conn, &self.schema).await?;
        }
        Ok(())
    }

    fn reads(&self, aggregate_type: &str) -> bool {
        self.model.aggregates().contains(&aggregate_type)
    }
}

/// Targets (or references to them), each with its index, those with the most events first:
/// the order their last rows are encoded in and their sets finished in (so that the longest
/// is not left to run alone at the end).
pub(crate) fn largest_first<T: std::borrow::Borrow<Target>>(
    targets: impl IntoIterator<Item = T>,
) -> Vec<(usize, T)> {
    let mut ordered: Vec<(usize, T)> = targets.into_iter().enumerate().collect();
    ordered.sort_by_key(|(_, target)| std::cmp::Reverse(target.borrow().events));
    ordered
}

/// Encodes the rows every fold holds at the end of a pass on a thread of its own, one fold
/// after another in [`largest_first`] order, and hands each target its rows as soon as they
/// are ready: its set is written and indexed on PostgreSQL's core while the next folds are
/// encoded on the other. Each fold's maps go as soon as its rows are encoded (the `COPY` data
/// is more compact than the maps: encoding each model's rows only when its set was built held
/// every map to the end, and raised the projector's peak memory for `replay all` of a million
/// events from 534-548 MB to 625-633 MB). A fold whose target is gone (dropped on an error
/// elsewhere) is not encoded.
fn encode_last(targets: &mut [Target]) -> tokio::task::JoinHandle<()> {
    let mut folds = Vec::new();
    for (_, target) in largest_first(targets.iter_mut()) {
        if let Some(fold) = target.fold.take() {
            let (ready, last) = tokio::sync::oneshot::channel();
            target.last = Some(last);
            folds.push((fold, ready));
        }
    }
    tokio::task::spawn_blocking(move || {
        for (mut fold, ready) in folds {
            // Seconds of work for a large model, for nobody.
            if ready.is_closed() {
                continue;
            }
            let rows = fold.take(true);
            drop(fold);
            let _ = ready.send(rows);
        }
    })
}

/// The aggregate types any of `targets` reads, each once.
pub(crate) fn aggregate_types(targets: &[Target]) -> Vec<&'static str> {
    let mut types: Vec<&'static str> = targets
        .iter()
        .flat_map(|t| t.model.aggregates().iter().copied())
        .collect();
    types.sort_unstable();
    types.dedup();
    types
}

/// [`aggregate_types`] as an SQL array literal (they are names from the code, never input).
pub(crate) fn aggregate_types_sql(targets: &[Target]) -> String {
    let types = aggregate_types(targets);
    let quoted: Vec<String> = types.iter().map(|t| format!("'{t}'")).collect();
    format!("ARRAY[{}]::text[]", quoted.join(","))
}

/// What a pass does at its end with the rows its folds still hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Last {
    /// Writes them ([`write_last`]).
    Write,
    /// Leaves them to the caller ([`Target::write_last`]): a replay writes each model's and
    /// goes on to index that model, two models at a time.
    Keep,
}

/// Targets finishing at once after a pass, each on a connection of its own: PostgreSQL works
/// on each one's statements on one core, and the fold, done by then, leaves the machine's
/// other core free.
pub(crate) const AT_ONCE: usize = 2;

/// How many targets finish at once with `pool`: [`AT_ONCE`], or fewer if the pool holds
/// fewer connections (a second job would wait out its acquire timeout and fail the pass).
pub(crate) fn at_once(pool: &PgPool) -> usize {
    AT_ONCE.min(pool.options().get_max_connections().max(1) as usize)
}

/// Writes every target's last rows into its schema, [`at_once`] targets at a time, in
/// [`largest_first`] order.
pub(crate) async fn write_last(pool: &PgPool, targets: &mut [Target]) -> Result<(), sqlx::Error> {
    use futures::StreamExt;
    let ordered = largest_first(targets.iter_mut());
    futures::stream::iter(ordered.into_iter().map(|(_, target)| async move {
        let mut conn = pool.acquire().await?;
        target.write_last(&mut conn).await
    }))
    .buffer_unordered(at_once(pool))
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

/// Tables' rows handed from the fold to the writer at once: the fold goes on while the
/// writer copies them, and waits when this many are queued (memory stays bounded).
const WRITES_QUEUED: usize = 2;

/// One pass of events into `targets`: folds each into every target that reads its aggregate
/// type, hands the targets' rows to a writer task every [`CHUNK`] events (it copies them on a
/// connection of its own while the fold goes on), writes or leaves what the folds hold at the
/// end ([`Last`]), and keeps what was folded
/// per aggregate (every event seen, including those a target refused: the live projection
/// goes past those too).
pub(crate) struct Pass<'a> {
    pool: PgPool,
    targets: &'a mut [Target],
    writes: Option<tokio::sync::mpsc::Sender<(String, TableRows)>>,
    /// Taken by [`Pass::finish`]; a pass dropped before it (on an error) stops its writer.
    writer: Option<tokio::task::JoinHandle<Result<(), sqlx::Error>>>,
    pending: u64,
    pub applied: Applied,
}

impl<'a> Pass<'a> {
    pub async fn new(pool: &PgPool, targets: &'a mut [Target]) -> Result<Self, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        let (writes, mut queued) = tokio::sync::mpsc::channel::<(String, TableRows)>(WRITES_QUEUED);
        let writer = tokio::spawn(async move {
            while let Some((schema, rows)) = queued.recv().await {
                rows.copy_into(&mut conn, &schema).await?;
            }
            Ok(())
        });
        Ok(Self {
            pool: pool.clone(),
            targets,
            writes: Some(writes),
            writer: Some(writer),
            pending: 0,
            applied: Applied::new(),
        })
    }

    /// Folds one event (or records, for every target reading its type, why it could not be
    /// turned into what a consumer sees).
    pub async fn add(
        &mut self,
        key: (String, String),
        sequence: i64,
        event_id: uuid::Uuid,
        envelope: Result<&Envelope, &str>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), sqlx::Error> {
        for target in self.targets.iter_mut().filter(|t| t.reads(&key.0)) {
            let Some(fold) = target.fold.as_mut() else {
                continue;
            };
            let folded = match envelope {
                Ok(envelope) => fold.fold(envelope).map_err(|e| crate::error_chain(&e)),
                Err(error) => Err(error.to_owned()),
            };
            match folded {
                Ok(()) => target.events += 1,
                Err(error) => target.failed.push((event_id.to_string(), error)),
            }
        }
        self.applied.insert(key, sequence);
        self.pending += 1;
        if self.pending == CHUNK {
            self.flush().await?;
            progress(self.pending);
            self.pending = 0;
        }
        Ok(())
    }

    /// Hands every target's rows to the writer. `Err` once the writer has stopped (on an
    /// error that [`Pass::finish`] reports).
    async fn flush(&mut self) -> Result<(), sqlx::Error> {
        for target in self.targets.iter_mut() {
            let Some(fold) = target.fold.as_mut() else {
                continue;
            };
            for rows in fold.take(false) {
                if rows.rows.is_empty() {
                    continue;
                }
                let Some(writes) = &self.writes else { break };
                if writes.send((target.schema.clone(), rows)).await.is_err() {
                    return Err(sqlx::Error::Protocol(
                        "the rebuild's writer stopped".to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Waits until the writer has copied what it was handed, then copies the rows the folds
    /// still hold or leaves them in the targets, as `last` says; returns what was folded per
    /// aggregate.
    pub async fn finish(
        mut self,
        last: Last,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Applied, sqlx::Error> {
        // Closing the queue lets the writer end once it has copied what is queued.
        self.writes = None;
        let writer = self.writer.take().expect("a pass finishes once");
        writer
            .await
            .map_err(|e| sqlx::Error::Protocol(format!("the rebuild's writer failed: {e}")))??;
        // Not waited for: each target waits for its own rows.
        drop(encode_last(self.targets));
        if last == Last::Write {
            write_last(&self.pool, self.targets).await?;
        }
        progress(self.pending);
        Ok(std::mem::take(&mut self.applied))
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            writer.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};

    use super::*;
    use crate::bulk::{Fold, TableRows};
    use crate::envelope::Envelope;
    use crate::models::ApplyError;

    /// Counts the times its rows are taken; with `go`, waits for it first.
    struct Counting {
        takes: Arc<AtomicUsize>,
        go: Option<mpsc::Receiver<()>>,
    }

    impl Fold for Counting {
        fn fold(&mut self, _: &Envelope) -> Result<(), ApplyError> {
            Ok(())
        }

        fn take(&mut self, _: bool) -> Vec<TableRows> {
            if let Some(go) = self.go.take() {
                go.recv().expect("the test says go");
            }
            self.takes.fetch_add(1, Ordering::SeqCst);
            Vec::new()
        }
    }

    #[tokio::test]
    async fn the_folds_of_targets_dropped_on_an_error_are_not_encoded() {
        let takes = Arc::new(AtomicUsize::new(0));
        let (go, wait) = mpsc::channel();
        let model = crate::read_model("users").expect("the users model");
        let mut targets: Vec<Target> = (0..3)
            .map(|n| {
                let mut target = Target::new(model, "unused");
                // The first is the largest, so it is encoded first.
                target.events = 10 - n;
                target.fold = Some(Box::new(Counting {
                    takes: takes.clone(),
                    go: None,
                }));
                target
            })
            .collect();
        targets[0].fold = Some(Box::new(Counting {
            takes: takes.clone(),
            go: Some(wait),
        }));
        let encoding = encode_last(&mut targets);
        // While the first is encoded, the others go, as on an error elsewhere.
        let first = targets.remove(0);
        drop(targets);
        go.send(()).unwrap();
        encoding.await.unwrap();
        assert_eq!(
            takes.load(Ordering::SeqCst),
            1,
            "dropped targets' folds were encoded"
        );
        drop(first);
    }
}
