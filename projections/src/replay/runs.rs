//! `replay_runs`: each replay or rollback with its progress while it runs (events folded,
//! written at most once a second by a task of its own) and how it ended, for `projector
//! status` readers and the admin console.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;

/// A run being recorded.
pub struct Run {
    pool: PgPool,
    id: i64,
    done: Arc<AtomicU64>,
    writer: JoinHandle<()>,
}

impl Run {
    /// Records the start of a run of `kind` (`replay` or `rollback`) over `projections`
    /// (their names, space-separated) expecting about `total` events.
    pub async fn start(
        pool: &PgPool,
        projections: &str,
        kind: &str,
        total: Option<i64>,
    ) -> Result<Self, sqlx::Error> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO replay_runs (projection, kind, total) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(projections)
        .bind(kind)
        .bind(total)
        .fetch_one(pool)
        .await?;
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

    /// Records how the run ended: `Err` holds the error's text.
    pub async fn finish(self, outcome: Result<(), String>) -> Result<(), sqlx::Error> {
        self.writer.abort();
        let (state, error) = match outcome {
            Ok(()) => ("done", None),
            Err(error) => ("failed", Some(error)),
        };
        sqlx::query(
            "UPDATE replay_runs SET state = $2, error = $3, events = $4, updated_at = now(),
                 finished_at = now() WHERE id = $1",
        )
        .bind(self.id)
        .bind(state)
        .bind(error)
        .bind(self.done.load(Ordering::Relaxed) as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
