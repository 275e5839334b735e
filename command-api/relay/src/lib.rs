//! The event relay: publishes every committed event to Kafka, with no gaps and in
//! per-aggregate order, keyed by aggregate id, Avro-encoded against the schema registry; a
//! broker outage delays publication but never stops writes.
//!
//! - Exactly one relay is active: it holds a PostgreSQL advisory lock on a dedicated
//!   connection; the others wait on standby and take over when that connection goes away.
//! - It reads in commit-safe order (see [`tail`]), publishes a batch with the idempotent
//!   producer, and moves its checkpoint only over events the broker acknowledged. A crash
//!   therefore re-publishes at most one batch; duplicates carry the same event id.
//! - It wakes on `LISTEN events_appended` and polls as a fallback.
//! - The broker being down stops only the relay: commands keep committing, the relay retries
//!   with backoff and catches up.
//!
//! It uses nothing of the command API's HTTP side: the `command-api` binary runs it on a
//! thread of its own next to the routes (or alone, as `command-api relay`).
#![forbid(unsafe_code)]

pub mod checkpoint;
mod error;
mod inflight;
mod lag;
mod publish;
mod registration;
pub mod tail;

use std::time::Duration;

use infra::settings::Settings;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

pub use crate::error::RelayError;
use crate::inflight::InFlight;
use crate::lag::LagProbe;
use crate::publish::Publisher;
use crate::registration::{encoder, register_schemas};
use crate::tail::Checkpoint;

pub struct Relay {
    pool: PgPool,
    settings: Settings,
}

/// Stops a running relay after its current batch, when told to or when its last clone is
/// dropped.
#[derive(Clone)]
pub struct RelayHandle(watch::Sender<bool>);

impl RelayHandle {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// How long the check that the relay still holds its lock may take.
const LOCK_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// `work`, given up as [`RelayError::Unanswered`] once `limit` has passed.
async fn bounded<T, E>(
    what: &'static str,
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, RelayError>
where
    RelayError: From<E>,
{
    match tokio::time::timeout(limit, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(RelayError::Unanswered { what, limit }),
    }
}

impl Relay {
    pub fn new(pool: PgPool, settings: Settings) -> Self {
        Self { pool, settings }
    }

    /// Runs the relay on threads and a runtime of its own, with its own connections: no task
    /// of the host process (a handler, a blocking client call) can starve it. The loop runs
    /// on the `event-relay` thread; the next batch is read on the runtime's one worker
    /// (`event-relay-read`) meanwhile.
    pub fn spawn(self) -> (RelayHandle, std::thread::JoinHandle<()>) {
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("event-relay".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("event-relay-read")
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        runtime.block_on(async move { self.own_pool().run(stopped).await })
                    }
                    Err(error) => tracing::error!(%error, "cannot start the relay's runtime"),
                }
            });
        match thread {
            Ok(thread) => (RelayHandle(stop), thread),
            Err(error) => {
                tracing::error!(%error, "cannot start the relay thread");
                (RelayHandle(stop), std::thread::spawn(|| {}))
            }
        }
    }

    /// A small pool created on the relay's runtime (connections belong to the runtime that
    /// opened them).
    fn own_pool(mut self) -> Self {
        let mut database = self.settings.database.clone();
        database.max_connections = 3;
        database.min_connections = 0;
        if let Ok(pool) = infra::db::pool(&database) {
            self.pool = pool;
        }
        self
    }

    /// Runs until stopped: wait for the lock, publish while holding it, back off on errors.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.settings.relay.poll_interval_ms);
        let mut backoff = Duration::from_millis(200);
        while !stop_requested(&stopped) {
            let outcome = match self.try_lock().await {
                Ok(Some(lock)) => {
                    tracing::info!(relay = %self.settings.relay.name, "relay lock acquired");
                    let active = infra::unless_panics(self.active(lock, &mut stopped));
                    let result = active.await.unwrap_or_else(|panic| {
                        tracing::error!(%panic, "the relay panicked; a bug");
                        Err(RelayError::Panicked(panic))
                    });
                    metrics::gauge!("relay_active").set(0.0);
                    result
                }
                Ok(None) => {
                    // Another relay is active: stand by. What this process measured while it
                    // was the active one is no longer its to report (RelayBehind would page on
                    // a stale value).
                    metrics::gauge!("relay_refused_by_brokers").set(0.0);
                    metrics::gauge!("relay_lag_events").set(0.0);
                    metrics::gauge!("relay_lag_seconds").set(0.0);
                    backoff = Duration::from_millis(200);
                    wait(&mut stopped, poll).await;
                    continue;
                }
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => break,
                Err(error) => {
                    metrics::counter!("relay_errors_total").increment(1);
                    let retry_in_ms = backoff.as_millis() as u64;
                    if let Some((event_id, code)) = error.refusal() {
                        metrics::gauge!("relay_refused_by_brokers").set(1.0);
                        tracing::error!(%event_id, ?code, retry_in_ms,
                            "the brokers refuse this event and will until its topic or the relay's rights change; the relay cannot move past it (runbook: RelayRefusedByBrokers)");
                    } else if matches!(error, RelayError::CheckpointOfAnotherCluster { .. }) {
                        tracing::error!(error = %infra::error_chain(&error), retry_in_ms,
                            "the relay publishes nothing until its checkpoint is set on this cluster (runbook: RelayBehind)");
                    } else {
                        tracing::warn!(error = %infra::error_chain(&error), retry_in_ms, "relay interrupted");
                    }
                    lag::measure(&self.pool, &self.settings.relay.name, self.limit()).await;
                    wait(&mut stopped, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!("relay stopped");
    }

    /// How long any one database wait of the active relay may take.
    fn limit(&self) -> Duration {
        Duration::from_millis(self.settings.relay.database_timeout_ms)
    }

    /// The advisory lock on a connection of its own, or None if another relay holds it.
    async fn try_lock(&self) -> Result<Option<PgConnection>, RelayError> {
        Ok(checkpoint::lock(&self.pool, &self.settings.relay.name).await?)
    }

    async fn active(
        &self,
        mut lock: PgConnection,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<(), RelayError> {
        let kafka = &self.settings.kafka;
        if kafka.create_topics {
            infra::kafka::ensure_topics(kafka, &infra::kafka::event_topics(kafka)).await?;
            tracing::debug!("relay: topics ready");
        }
        let encoder = encoder(&self.settings.schema_registry)?;
        register_schemas(&encoder, &kafka.topic_prefix).await?;
        tracing::debug!("relay: schemas registered");
        let ack_timeout = Duration::from_millis(kafka.delivery_timeout_ms) + Duration::from_secs(5);
        let publisher = Publisher::new(
            infra::kafka::producer(kafka)?,
            encoder,
            kafka.topic_prefix.clone(),
            (ack_timeout, self.limit()),
        );
        let limit = self.limit();
        // The server gives up what this relay gives up: a statement of the lock's connection
        // (the lock check, a checkpoint) left waiting there after the relay dropped it would
        // keep the lock, and so every relay out, until it ended.
        let timeout = format!("SET statement_timeout = {}", limit.as_millis());
        bounded(
            "setting the lock connection up",
            limit,
            sqlx::query(&timeout).execute(&mut lock),
        )
        .await?;
        let mut listener = bounded("listening", limit, async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen("events_appended").await?;
            Ok::<_, sqlx::Error>(listener)
        })
        .await?;
        let name = &self.settings.relay.name;
        let loaded = tail::load_checkpoint(&self.pool, name);
        let mut checkpoint = bounded("loading the checkpoint", limit, loaded).await?;
        let next = bounded(
            "reading the next transaction id",
            limit,
            tail::next_tx_id(&self.pool),
        )
        .await?;
        if checkpoint.tx_id >= next {
            return Err(RelayError::CheckpointOfAnotherCluster {
                checkpoint: checkpoint.tx_id,
                next,
            });
        }
        let poll = Duration::from_millis(self.settings.relay.poll_interval_ms);
        let mut lag = LagProbe::default();
        // Three batches move at once: the one being read (`reading`, after `cursor`, on the
        // runtime's worker), the one being encoded and sent, and the one before it, awaiting
        // its acknowledgements (`in_flight`). `checkpoint` is the last event acknowledged (and
        // stored). Dropping `reading` (an error, a stop) aborts the read.
        let mut cursor = checkpoint.clone();
        let mut in_flight: Option<InFlight> = None;
        let mut reading = tokio::task::JoinSet::new();
        reading.spawn(self.read_after(cursor.clone()));
        // Active from here, not from the lock: until now it may have waited on the brokers
        // (creating topics), the registry or the database, and RelayInactive is the alert
        // that says so.
        metrics::gauge!("relay_active").set(1.0);
        tracing::info!(relay = %name, "relay publishing");
        while !stop_requested(stopped) {
            // Publish only while the lock is certainly ours; a connection that does not answer
            // in time (half-open after a network fault) is as good as lost.
            let check = sqlx::query("SELECT 1").execute(&mut lock);
            match tokio::time::timeout(LOCK_CHECK_TIMEOUT, check).await {
                Ok(Ok(_)) => {}
                _ => return Err(RelayError::LostLock),
            }
            let batch = match bounded("reading a batch", limit, async {
                Ok::<_, RelayError>(reading.join_next().await)
            })
            .await?
            {
                Some(read) => read.map_err(RelayError::Reader)??,
                None => Vec::new(),
            };
            if batch.is_empty() {
                if let Some(sent) = in_flight.take() {
                    self.settle(&mut lock, sent, &mut checkpoint).await?;
                    reading.spawn(self.read_after(cursor.clone()));
                    continue;
                }
                lag.record(&self.pool, &checkpoint, limit).await;
                tokio::select! {
                    notified = listener.recv() => { notified?; }
                    () = tokio::time::sleep(poll) => {}
                    _ = stopped.changed() => {}
                }
                reading.spawn(self.read_after(cursor.clone()));
                continue;
            }
            if let Some(last) = batch.last() {
                cursor = last.checkpoint.clone();
            }
            reading.spawn(self.read_after(cursor.clone()));
            tracing::debug!(events = batch.len(), "relay: publishing a batch");
            let mut sent = publisher.send(&self.pool, batch).await;
            if let Some(halted) = sent.halted() {
                // What came before the event this relay could not or must not publish is
                // settled first, so a retry does not send it again.
                if let Some(previous) = in_flight.take() {
                    self.settle(&mut lock, previous, &mut checkpoint).await?;
                }
                self.settle(&mut lock, sent, &mut checkpoint).await?;
                return Err(halted.into());
            }
            if let Some(previous) = in_flight.replace(sent) {
                self.settle(&mut lock, previous, &mut checkpoint).await?;
            }
            lag.record(&self.pool, &checkpoint, limit).await;
        }
        if let Some(sent) = in_flight.take() {
            self.settle(&mut lock, sent, &mut checkpoint).await?;
        }
        Ok(())
    }
}

impl Relay {
    /// Reads the batch after `after` (a task of its own, so it runs while the loop encodes).
    fn read_after(
        &self,
        after: Checkpoint,
    ) -> impl std::future::Future<Output = Result<Vec<tail::StoredEvent>, sqlx::Error>> + Send + 'static
    {
        let pool = self.pool.clone();
        let (limit, max_bytes) = (
            self.settings.relay.batch_size,
            self.settings.relay.batch_max_bytes,
        );
        async move { tail::fetch(&pool, &after, limit, max_bytes).await }
    }

    /// Waits for a sent batch's acknowledgements and stores the checkpoint of what was
    /// acknowledged; an unacknowledged event ends the active phase (it is re-sent later).
    ///
    /// The checkpoint goes through the `lock` connection: stored there, it is stored only while
    /// the lock is held. Through another connection, a relay whose lock connection had ended
    /// (and so its lock, which a `relay-checkpoint reset` or another relay may then take) still
    /// stored what it had in hand, undoing the reset or moving the other relay's checkpoint.
    async fn settle(
        &self,
        lock: &mut PgConnection,
        sent: InFlight,
        checkpoint: &mut Checkpoint,
    ) -> Result<(), RelayError> {
        let (acknowledged, count, error) = sent.acknowledged().await;
        if let Some(last) = acknowledged {
            let saved = tail::save_checkpoint(lock, &self.settings.relay.name, &last);
            bounded("storing the checkpoint", self.limit(), saved).await?;
            *checkpoint = last;
            metrics::counter!("relay_events_published_total").increment(count as u64);
            metrics::gauge!("relay_refused_by_brokers").set(0.0);
        }
        match error {
            None => Ok(()),
            Some(error) => {
                metrics::counter!("relay_broker_errors_total").increment(1);
                Err(error.into())
            }
        }
    }
}

/// Stopped by [`RelayHandle::stop`], or by dropping every handle: a host that goes away
/// without stopping its relay (dropped with its runtime, failed at startup) must not leave it
/// running. Without the second half, `changed()` fails at once on a dropped handle and every
/// wait below returns immediately: the relay retried its database in a tight loop.
fn stop_requested(stopped: &watch::Receiver<bool>) -> bool {
    *stopped.borrow() || stopped.has_changed().is_err()
}

async fn wait(stopped: &mut watch::Receiver<bool>, duration: Duration) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        _ = stopped.changed() => {}
    }
}
