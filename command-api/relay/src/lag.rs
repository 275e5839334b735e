//! The relay's lag gauges, `relay_lag_events` and `relay_lag_seconds`, measured against its
//! stored checkpoint. Every query has the relay's database time limit: a measurement that
//! cannot be made leaves the gauges as they were and says so, never holds the relay.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::tail::{self, Checkpoint};

/// Measures the relay's lag at most once a second: the count is a query over the backlog, too
/// costly to run after every batch while catching up.
#[derive(Default)]
pub(crate) struct LagProbe {
    last: Option<Instant>,
}

impl LagProbe {
    pub(crate) async fn record(&mut self, pool: &PgPool, checkpoint: &Checkpoint, limit: Duration) {
        if self
            .last
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last = Some(Instant::now());
        match crate::bounded("measuring the lag", limit, tail::lag(pool, checkpoint)).await {
            Ok((events, seconds)) => {
                metrics::gauge!("relay_lag_events").set(events as f64);
                metrics::gauge!("relay_lag_seconds").set(seconds);
            }
            Err(error) => {
                tracing::warn!(error = %infra::error_chain(&error),
                    "measuring relay lag failed; its gauges keep their last values")
            }
        }
    }
}

/// The lag behind the relay `name`'s stored checkpoint, measured once (after a failure: a relay
/// that fails before it publishes anything, the brokers unreachable while it creates its
/// topics, would otherwise leave the gauges at their last values, and RelayBehind would never
/// fire).
pub(crate) async fn measure(pool: &PgPool, name: &str, limit: Duration) {
    match crate::bounded(
        "loading the checkpoint",
        limit,
        tail::load_checkpoint(pool, name),
    )
    .await
    {
        Ok(checkpoint) => LagProbe::default().record(pool, &checkpoint, limit).await,
        Err(error) => {
            tracing::warn!(error = %infra::error_chain(&error),
                "measuring relay lag failed; its gauges keep their last values")
        }
    }
}
