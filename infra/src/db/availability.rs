//! Failing fast while PostgreSQL is unreachable.
//!
//! When the database goes away, a pooled connection fails at once but a new one is retried
//! until the pool's acquire timeout, so every request would wait that long for its 503. Instead,
//! the first error that looks like unreachability starts a probe: a direct connection attempt
//! outside the pool. If that fails too, the database is marked down and [`Availability::check`]
//! refuses at once, until the probe (repeated every `PROBE_EVERY`) connects again.
//!
//! Overload must not be mistaken for an outage. A pool that only ran out of connections is
//! told apart by the probe connecting; and a probe that fails while other work still gets the
//! database's answers ([`Availability::answered`]) proves only that the server is slow to start
//! a backend, so the database is not marked down then either: under load on a small machine a
//! new connection can take longer than the probe's timeout while pooled ones are served.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::sync::watch;

const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Generous on purpose: a database that is really gone refuses a connection at once, while one
/// that is only busy may take a while to start a backend, and must not be taken for an outage.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The database is known to be unreachable right now.
#[derive(Debug, thiserror::Error)]
#[error("the database is unreachable (failing fast until a probe connects again)")]
pub struct DatabaseDown;

#[derive(Clone)]
pub struct Availability {
    inner: Arc<Inner>,
}

struct Inner {
    /// True while the database is known to be down; watched by [`Availability::went_down`].
    down: watch::Sender<bool>,
    probing: AtomicBool,
    /// When the database last answered work (see [`Availability::answered`]), in
    /// microseconds since `since`; 0 before it ever did.
    last_answer: AtomicU64,
    since: std::time::Instant,
    options: PgConnectOptions,
    probe_timeout: Duration,
}

impl std::fmt::Debug for Availability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Availability")
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}

impl Availability {
    /// Probes connect with `options` (the pool's own).
    pub fn new(options: PgConnectOptions) -> Self {
        Self::with_probe_timeout(options, PROBE_TIMEOUT)
    }

    fn with_probe_timeout(options: PgConnectOptions, probe_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                down: watch::Sender::new(false),
                probing: AtomicBool::new(false),
                last_answer: AtomicU64::new(0),
                since: std::time::Instant::now(),
                options: options.disable_statement_logging(),
                probe_timeout,
            }),
        }
    }

    /// Records that the database just answered some work (a command was stored or refused by
    /// what the database holds): it is reachable, however slow it may be to connect.
    pub fn answered(&self) {
        // At least 1: 0 means never.
        let at = self.inner.now().max(1);
        self.inner.last_answer.fetch_max(at, Ordering::Relaxed);
    }

    /// Whether the database answered some work within the last `window`: under load answers
    /// keep coming, while after an outage began the last one only grows older.
    pub fn answered_within(&self, window: Duration) -> bool {
        let last = self.inner.last_answer.load(Ordering::Relaxed);
        last > 0 && self.inner.now().saturating_sub(last) <= window.as_micros() as u64
    }

    pub fn is_down(&self) -> bool {
        *self.inner.down.borrow()
    }

    /// Resolves as soon as the database is marked down: work waiting on it (a pool acquire
    /// that would only time out) can give up at once.
    pub async fn went_down(&self) {
        let mut down = self.inner.down.subscribe();
        // The sender lives as long as `self`, so this only ends when the flag is set.
        let _ = down.wait_for(|down| *down).await;
    }

    /// `Err` at once while the database is known to be down.
    pub fn check(&self) -> Result<(), DatabaseDown> {
        if self.is_down() {
            Err(DatabaseDown)
        } else {
            Ok(())
        }
    }

    /// Reports a failed database call. An error that may mean the database is unreachable
    /// starts a probe (one at a time); other errors are ignored. Needs a Tokio runtime.
    pub fn observe(&self, error: &sqlx::Error) {
        if super::is_unavailable(error) {
            self.suspect();
        }
    }

    /// Something failed in a way that may mean the database is unreachable: probe it (one
    /// probe at a time). Needs a Tokio runtime.
    pub fn suspect(&self) {
        if self.inner.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            loop {
                let probed = inner.now();
                if inner.connects().await {
                    if inner.down.send_replace(false) {
                        tracing::info!("database reachable again");
                    }
                    break;
                }
                if inner.last_answer.load(Ordering::Relaxed) >= probed.max(1) {
                    // Others were served while the probe failed: busy, not gone.
                    tracing::info!(
                        "a database probe failed while the database answered other work; \
                         taken for load, not an outage"
                    );
                    break;
                }
                if !inner.down.send_replace(true) {
                    tracing::warn!("database unreachable; commands fail fast until it returns");
                    metrics::counter!("database_outages_total").increment(1);
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
            inner.probing.store(false, Ordering::Release);
        });
    }
}

impl Inner {
    /// Microseconds since `since`.
    fn now(&self) -> u64 {
        self.since.elapsed().as_micros() as u64
    }

    async fn connects(&self) -> bool {
        let attempt = async {
            let mut conn = self.options.connect().await?;
            conn.ping().await?;
            conn.close().await
        };
        matches!(
            tokio::time::timeout(self.probe_timeout, attempt).await,
            Ok(Ok(()))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_database_is_marked_down_and_refused_at_once() {
        let options: PgConnectOptions = "postgres://postgres@127.0.0.1:1/nowhere".parse().unwrap();
        let availability = Availability::new(options);
        assert!(availability.check().is_ok());
        availability.observe(&sqlx::Error::PoolTimedOut);
        for _ in 0..100 {
            if availability.is_down() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(availability.check().is_err());
        // Already down: waiting for it ends at once.
        tokio::time::timeout(Duration::from_secs(1), availability.went_down())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_probe_that_fails_while_the_database_answers_others_is_not_an_outage() {
        // A server that takes connections and never answers: each probe runs to its timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                open.push(socket);
            }
        });
        let options: PgConnectOptions = format!("postgres://postgres@127.0.0.1:{port}/slow")
            .parse()
            .unwrap();
        let availability = Availability::with_probe_timeout(options, Duration::from_millis(300));
        assert!(!availability.answered_within(Duration::from_secs(60)));
        availability.suspect();
        // Work keeps being answered while the probe waits, as under load.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            availability.answered();
        }
        assert!(availability.check().is_ok(), "overload taken for an outage");
        assert!(availability.answered_within(Duration::from_millis(500)));
        // Once nothing is answered any more, the next probe's failure is an outage.
        for _ in 0..100 {
            if !availability.inner.probing.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        availability.suspect();
        tokio::time::timeout(Duration::from_secs(5), availability.went_down())
            .await
            .expect("a silent database with nothing answered is down");
        held.abort();
    }

    #[tokio::test]
    async fn errors_the_database_answered_do_not_start_a_probe() {
        let options: PgConnectOptions = "postgres://postgres@127.0.0.1:1/nowhere".parse().unwrap();
        let availability = Availability::new(options);
        availability.observe(&sqlx::Error::RowNotFound);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(availability.check().is_ok());
    }
}
