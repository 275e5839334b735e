//! The change listener: one `LISTEN` connection that invalidates cache entries as the
//! read-model triggers report changes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;

use super::{Key, ReadCache, CHANNEL};

impl ReadCache {
    /// Listens for change notifications until the process ends, reconnecting with backoff.
    /// While disconnected nothing is cached; on every (re)connection the cache starts empty.
    pub async fn listen(self: Arc<Self>, pool: PgPool) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.listen_once(&pool).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        retry_in_ms = backoff.as_millis() as u64,
                        "read-model change listener lost; cache disabled until it reconnects"
                    );
                }
            }
            self.listening.store(false, Ordering::SeqCst);
            self.forget_all();
            metrics::gauge!("query_cache_listening").set(0.0);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn listen_once(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
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
        while let Some(notification) = listener.try_recv().await? {
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
        Ok(())
    }
}
