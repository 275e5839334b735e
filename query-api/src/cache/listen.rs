//! The change listener: one `LISTEN` connection that invalidates cache entries as the
//! read-model triggers report changes.
//!
//! A connection can die without a word (a failover, a firewall forgetting it): reads then
//! block for ever while the cache keeps serving what may have changed. So the listener
//! sends itself a heartbeat on the channel every [`HEARTBEAT`], from the pool; when nothing at
//! all arrives for [`SILENCE`], it takes the connection for lost: the cache is cleared and the
//! listener connects anew.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};

use super::{Key, ReadCache, CHANNEL};

/// How often the listener notifies itself.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long the listener waits for any notification before it takes its connection for lost.
pub const SILENCE: Duration = Duration::from_secs(15);
/// The heartbeat's payload (never a key: keys have a table and an id).
const BEAT: &str = "heartbeat";

/// Ends the heartbeat task when the listener ends.
struct Beating(JoinHandle<()>);

impl Drop for Beating {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("no notification, not even the listener's own heartbeat, for {0:?}")]
    Silent(Duration),
    #[error("the connection was closed")]
    Closed,
}

impl ReadCache {
    /// Listens for change notifications until the process ends, reconnecting with backoff.
    /// While disconnected nothing is cached; on every (re)connection the cache starts empty.
    pub async fn listen(self: Arc<Self>, pool: PgPool) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut listened = false;
            let Err(error) = self.listen_once(&pool, &mut listened).await;
            // One that listened for a while reconnects at once; one that cannot connect backs off.
            if listened {
                backoff = Duration::from_millis(100);
            }
            metrics::counter!("query_cache_listener_lost_total").increment(1);
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                retry_in_ms = backoff.as_millis() as u64,
                "read-model change listener lost; cache disabled until it reconnects"
            );
            self.listening.store(false, Ordering::SeqCst);
            self.forget_all();
            metrics::gauge!("query_cache_listening").set(0.0);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Listens until the connection is lost, and says why; `listened` turns true once it
    /// listens.
    async fn listen_once(
        &self,
        pool: &PgPool,
        listened: &mut bool,
    ) -> Result<std::convert::Infallible, Lost> {
        let mut listener = PgListener::connect_with(pool).await?;
        // `try_recv` returns `None` when the connection was lost (notifications may have been
        // missed): this listener ends, and the caller clears the cache and connects anew.
        // A pool being closed (shutdown) is not such a loss.
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        self.forget_all();
        self.listening.store(true, Ordering::SeqCst);
        metrics::gauge!("query_cache_listening").set(1.0);
        tracing::info!(channel = CHANNEL, "listening for read-model changes");
        *listened = true;
        let _beating = Beating(tokio::spawn(beat(pool.clone())));
        loop {
            // A wait that times out drops this listener, so what it had half read is lost
            // with it (the caller clears the cache and connects anew).
            let Ok(received) = tokio::time::timeout(SILENCE, listener.try_recv()).await else {
                return Err(Lost::Silent(SILENCE));
            };
            let Some(notification) = received? else {
                return Err(Lost::Closed);
            };
            if notification.payload() == BEAT {
                continue;
            }
            // `*`: whole tables were replaced (a replay's swap); nothing cached is current.
            if notification.payload() == "*" {
                tracing::info!("read models replaced; the cache starts afresh");
                self.forget_all();
                continue;
            }
            match Key::parse(notification.payload()) {
                Some(key) => self.changed(key).await,
                None => tracing::warn!(
                    payload = notification.payload(),
                    "unrecognised read-model notification"
                ),
            }
        }
    }
}

/// Notifies the channel every [`HEARTBEAT`], on a connection of its own (a pool busy with
/// reads must not make a healthy listener look dead), connected again after any failure; a
/// failure is only logged (the listener's silence is what counts).
async fn beat(pool: PgPool) {
    let options = pool.connect_options().as_ref().clone();
    let mut connection: Option<PgConnection> = None;
    let mut every = tokio::time::interval(HEARTBEAT);
    loop {
        every.tick().await;
        let sent = tokio::time::timeout(HEARTBEAT, async {
            if connection.is_none() {
                connection = Some(PgConnection::connect_with(&options).await?);
            }
            let Some(conn) = connection.as_mut() else {
                return Ok(());
            };
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(BEAT)
                .execute(conn)
                .await
                .map(|_| ())
        })
        .await;
        match sent {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => tracing::debug!(%error, "read-model listener heartbeat not sent"),
            Err(_) => tracing::debug!("read-model listener heartbeat timed out"),
        }
        connection = None;
    }
}
