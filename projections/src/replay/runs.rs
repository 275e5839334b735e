//! `replay_runs`: each replay, rollback or as-of build with its progress while it runs
//! (events folded, written at most once a second by a task of its own) and how it ended, for
//! `projector status` readers and the admin console. A run whose process died before it
//! ended is marked `abandoned` by the next sweep (see [`crate::lease`]).
//!
//! Two runs that swap the same read model (replays, rollbacks) do not run at once: the second
//! is refused at its start ([`StartError::Busy`]). Run together, each would build a set and
//! swap it in, and the second swap would drop the set the first replaced, the one to roll
//! back to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::lease::Lease;

/// The kinds of run that swap read models in.
const SWAPPING: &[&str] = &["replay", "rollback"];

/// Why a run did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error(
        "run {run} ({kind} of {projections}) is swapping {busy} already: wait for it to end (a \
         run whose process died no longer counts once PostgreSQL has noticed its connection \
         gone)"
    )]
    Busy {
        run: i64,
        kind: String,
        projections: String,
        /// The read models both would swap, space-separated.
        busy: String,
    },
}

/// A run being recorded.
pub struct Run {
    pool: PgPool,
    id: i64,
    done: Arc<AtomicU64>,
    writer: JoinHandle<()>,
}

impl Run {
    /// Records the start of a run of `kind` (`replay`, `rollback` or `as_of`, with the as-of
    /// set's name as `target`) over `projections` (their names, space-separated) expecting
    /// about `total` events, under `lease`: if the process dies before [`Run::finish`], a
    /// sweep marks the run abandoned (see [`crate::lease`]). A replay or rollback is refused
    /// while a live one swaps any of the same read models.
    pub async fn start(
        pool: &PgPool,
        lease: &Lease,
        projections: &str,
        kind: &str,
        target: Option<&str>,
        total: Option<i64>,
    ) -> Result<Self, StartError> {
        let mut tx = pool.begin().await?;
        // Runs start one at a time, so that two that would swap the same model cannot both
        // find the other absent.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('projector-runs'))")
            .execute(&mut *tx)
            .await?;
        if SWAPPING.contains(&kind) {
            let live: Vec<(i64, String, String)> = sqlx::query_as(
                "SELECT id, kind, projection FROM replay_runs
                 WHERE state = 'running' AND kind = ANY($1) AND lease IS NOT NULL
                   AND projector_lease_held(lease)
                 ORDER BY id",
            )
            .bind(SWAPPING)
            .fetch_all(&mut *tx)
            .await?;
            for (run, kind, theirs) in live {
                let busy: Vec<&str> = projections
                    .split(' ')
                    .filter(|m| theirs.split(' ').any(|t| t == *m))
                    .collect();
                if !busy.is_empty() {
                    return Err(StartError::Busy {
                        run,
                        kind,
                        projections: theirs,
                        busy: busy.join(" "),
                    });
                }
            }
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO replay_runs (projection, kind, target, total, lease)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(projections)
        .bind(kind)
        .bind(target)
        .bind(total)
        .bind(lease.id())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let done = Arc::new(AtomicU64::new(0));
        let writer = tokio::spawn({
            let (pool, done) = (pool.clone(), done.clone());
            async move {
                let mut written = 0;
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let now = done.load(Ordering::Relaxed);
                    if now == written {
                        continue;
                    }
                    // Progress is best effort: a failed update is tried again next second.
                    let updated = sqlx::query(
                        "UPDATE replay_runs SET events = $2, updated_at = now() WHERE id = $1",
                    )
                    .bind(id)
                    .bind(now as i64)
                    .execute(&pool)
                    .await;
                    if updated.is_ok() {
                        written = now;
                    }
                }
            }
        });
        Ok(Self {
            pool: pool.clone(),
            id,
            done,
            writer,
        })
    }

    /// Counts `n` more events folded (cheap: called per chunk).
    pub fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Records how the run ended: `failed` with the error's chain of causes if `outcome` is
    /// an error, `done` otherwise. A failure to write it is logged, not returned: the run's
    /// own outcome is what its caller reports (and a run left `running` is marked abandoned
    /// by a later sweep, once its lease is gone).
    pub async fn finish<T, E>(self, outcome: &Result<T, E>)
    where
        E: std::error::Error + 'static,
    {
        self.writer.abort();
        let (state, error) = match outcome {
            Ok(_) => ("done", None),
            Err(error) => ("failed", Some(crate::error_chain(error))),
        };
        let recorded = sqlx::query(
            "UPDATE replay_runs SET state = $2, error = $3, events = $4, updated_at = now(),
                 finished_at = now() WHERE id = $1",
        )
        .bind(self.id)
        .bind(state)
        .bind(error)
        .bind(self.done.load(Ordering::Relaxed) as i64)
        .execute(&self.pool)
        .await;
        if let Err(error) = recorded {
            tracing::warn!(run = self.id, %state, error = %error, "could not record how the run ended");
        }
    }
}
