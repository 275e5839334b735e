//! Sends the outbox's commands after their decisions committed: claims due rows in a short
//! transaction, sends them with no transaction open, and settles each by its answer.
//!
//! Retries back off exponentially up to a per-row budget; a row that spends it, or that the
//! command API calls malformed, is parked: counted in `process_manager_parked_total`, shown in
//! the `process_manager_outbox_parked` gauge (alert on either), kept with its last error for a
//! person, who can reset it with `projector outbox retry` (`outbox::retry_parked`). A crash mid-send leaves the row
//! leased; when the lease ends it is sent again under the same idempotency key, which the
//! command API answers with its first response, so a command never acts twice.

use std::time::{Duration, Instant};

use futures::StreamExt;
use infra::settings::ProjectorSettings;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::Instrument;

use super::client::{Answer, Commands, REQUEST_TIMEOUT};
use super::outbox::{self, Claimed};

/// Rows claimed per round, all on the wire at once: a row claimed but queued behind others
/// would spend its lease waiting.
const BATCH: i64 = 8;
/// The longest one attempt may take: a token from the token endpoint, then the command, each
/// bounded by the request timeout (a timeout is a retry).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2 * REQUEST_TIMEOUT.as_secs() + 2);
/// A claimed row is not claimed again before this: longer than one attempt can take, so that
/// two dispatchers do not send one row at once. (Were they to, the command API would apply it
/// once, under its idempotency key, and the claim's attempt count keeps a late settlement
/// from overwriting the newer one: see `outbox::finish`.)
const LEASE: Duration = Duration::from_secs(ATTEMPT_TIMEOUT.as_secs() + 5);
/// Settled rows are kept this long for inspection, then deleted.
const KEEP_SETTLED: Duration = Duration::from_secs(7 * 24 * 3600);
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// How hard a row is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before a row is parked.
    pub max_attempts: i32,
    pub initial: Duration,
    pub max: Duration,
    /// How often due rows are looked for when no notification arrives (retries come due this
    /// way).
    pub poll: Duration,
}

impl RetryPolicy {
    pub fn from_settings(settings: &ProjectorSettings) -> Self {
        Self {
            max_attempts: settings.outbox_max_attempts.max(1) as i32,
            initial: Duration::from_millis(settings.outbox_backoff_initial_ms),
            max: Duration::from_millis(settings.outbox_backoff_max_ms),
            poll: Duration::from_millis(settings.outbox_poll_ms.max(10)),
        }
    }

    /// The wait after the `attempts`-th failed attempt: doubling from `initial`, at most `max`.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let doublings = attempts.saturating_sub(1).clamp(0, 30) as u32;
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }

    /// Whether a row that failed its `attempts`-th attempt is out of budget.
    pub fn exhausted(&self, attempts: i32) -> bool {
        attempts >= self.max_attempts
    }
}

pub struct Dispatcher {
    pool: PgPool,
    commands: Commands,
    policy: RetryPolicy,
}

impl Dispatcher {
    pub fn new(pool: PgPool, commands: Commands, policy: RetryPolicy) -> Self {
        Self {
            pool,
            commands,
            policy,
        }
    }

    /// Sends due commands until `stopped`. An attempt cut short by the stop stays leased and is
    /// sent again later under its key.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut listener: Option<PgListener> = None;
        let mut last_purge: Option<Instant> = None;
        let mut trouble = Duration::from_millis(200);
        while !*stopped.borrow() {
            if listener.is_none() {
                listener = self.listen().await;
            }
            // A panic in a round (a bug) is retried like an unavailable outbox: left to unwind,
            // it ended the dispatcher for good while the projector went on filling the outbox.
            // The rows it had leased are sent again when their leases run out.
            let round = tokio::select! {
                round = infra::unless_panics(self.round()) => round,
                _ = stopped.changed() => break,
            };
            let round = match round {
                Ok(round) => round.map_err(|error| infra::error_chain(&error)),
                Err(panic) => Err(format!("panicked (a bug): {panic}")),
            };
            let more = match round {
                Ok(sent) => {
                    trouble = Duration::from_millis(200);
                    sent as i64 == BATCH
                }
                Err(error) => {
                    tracing::warn!(%error, "process manager dispatch round failed; retrying");
                    // The gauges go on: rounds failing for good (a bug in one row's attempt)
                    // must still show the oldest pending command's age to its alert.
                    self.housekeeping(&mut last_purge).await;
                    tokio::time::sleep(trouble).await;
                    trouble = (trouble * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            self.housekeeping(&mut last_purge).await;
            if more {
                continue;
            }
            tokio::select! {
                _ = stopped.changed() => break,
                _ = tokio::time::sleep(self.policy.poll) => {}
                heard = notified(&mut listener) => if heard.is_err() { listener = None },
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await.ok()?;
        listener.listen(outbox::CHANNEL).await.ok()?;
        Some(listener)
    }

    /// Claims due rows and attempts each; returns how many were claimed.
    async fn round(&self) -> Result<usize, sqlx::Error> {
        for (id, key) in outbox::park_unsettled(&self.pool, self.policy.max_attempts).await? {
            metrics::counter!("process_manager_parked_total").increment(1);
            tracing::error!(id, %key,
                "process manager command parked: claimed past its budget, its last attempt never ended (runbook: ProcessManagerCommandParked)");
        }
        let claimed = outbox::claim(&self.pool, BATCH, LEASE).await?;
        let count = claimed.len();
        let settled: Vec<Result<(), sqlx::Error>> = futures::stream::iter(claimed)
            .map(|row| self.attempt(row))
            .buffer_unordered(BATCH as usize)
            .collect()
            .await;
        settled.into_iter().collect::<Result<(), _>>()?;
        Ok(count)
    }

    async fn attempt(&self, row: Claimed) -> Result<(), sqlx::Error> {
        let command = &row.command;
        // An HTTP client span, a child of the consumer span that decided on the command.
        let span = tracing::info_span!(
            parent: None,
            "process_manager_command",
            otel.name = %format_args!("POST {}", command.kind.as_str()),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = "POST",
            http.response.status_code = tracing::field::Empty,
            url.path = %command.path,
            key = %command.idempotency_key,
            attempt = row.attempts,
            traceparent = %command.cause.traceparent,
        );
        infra::telemetry::propagation::set_parent(
            &span,
            &infra::telemetry::propagation::from_traceparent(&command.cause.traceparent),
        );
        let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, self.commands.send(command))
            .instrument(span)
            .await
            .unwrap_or_else(|_| Answer::Retry("the attempt timed out".to_owned()));
        metrics::counter!("process_manager_commands_total", "outcome" => answer.label())
            .increment(1);
        self.settle(&row, answer).await
    }

    async fn settle(&self, row: &Claimed, answer: Answer) -> Result<(), sqlx::Error> {
        let command = &row.command;
        let instead = command
            .refund_amount()
            .and_then(|asked| answer.refund_left(asked))
            .and_then(|left| command.refund_instead(left));
        let (id, attempts) = (row.id, row.attempts);
        let settled = match answer {
            Answer::Done => outbox::finish(&self.pool, id, attempts, "done", None).await?,
            Answer::Refused { status, code, .. } => {
                let note = format!("{status} {}", code.unwrap_or_default());
                tracing::info!(path = %command.path, key = %command.idempotency_key,
                    answer = %note, "process manager command refused by the aggregate");
                match instead {
                    Some(instead) => {
                        outbox::replace(&self.pool, id, attempts, &note, &instead).await?
                    }
                    None => {
                        outbox::finish(&self.pool, id, attempts, "refused", Some(&note)).await?
                    }
                }
            }
            Answer::Retry(error) if !self.policy.exhausted(attempts) => {
                let delay = self.policy.backoff(attempts);
                tracing::debug!(path = %command.path, %error, retry_in_ms = delay.as_millis() as u64,
                    "process manager command will be retried");
                outbox::retry_later(&self.pool, id, attempts, delay, &error).await?
            }
            Answer::Retry(error) | Answer::Reject(error) => self.park(row, &error).await?,
        };
        if !settled {
            tracing::info!(id, attempts, path = %command.path,
                "process manager command was claimed again meanwhile; its new attempt settles it");
        }
        Ok(())
    }

    /// Parks the row (if still this claim); true if it was.
    async fn park(&self, row: &Claimed, error: &str) -> Result<bool, sqlx::Error> {
        let command = &row.command;
        let parked =
            outbox::finish(&self.pool, row.id, row.attempts, "parked", Some(error)).await?;
        if parked {
            tracing::error!(id = row.id, path = %command.path, key = %command.idempotency_key,
                attempts = row.attempts, %error, "process manager command parked");
            metrics::counter!("process_manager_parked_total").increment(1);
        }
        Ok(parked)
    }

    /// Refreshes the parked and waiting gauges; now and then deletes old settled rows.
    async fn housekeeping(&self, last_purge: &mut Option<Instant>) {
        match outbox::parked(&self.pool).await {
            Ok(parked) => metrics::gauge!("process_manager_outbox_parked").set(parked as f64),
            Err(error) => tracing::warn!(%error,
                "counting parked commands failed; process_manager_outbox_parked keeps its last value"),
        }
        match outbox::oldest_pending_age(&self.pool).await {
            Ok(age) => metrics::gauge!("process_manager_outbox_oldest_pending_seconds").set(age),
            Err(error) => tracing::warn!(%error,
                "measuring the oldest pending command failed; its gauge keeps its last value"),
        }
        if last_purge.is_some_and(|at| at.elapsed() < PURGE_EVERY) {
            return;
        }
        *last_purge = Some(Instant::now());
        if let Err(error) = outbox::purge_settled(&self.pool, KEEP_SETTLED).await {
            tracing::warn!(error = %infra::error_chain(&error), "could not purge the outbox");
        }
    }
}

async fn notified(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await.map(|_| ()),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            poll: Duration::from_millis(100),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let waits: Vec<u128> = (1..=6).map(|a| policy().backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500, 500]);
        assert_eq!(policy().backoff(i32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn the_budget_is_spent_after_max_attempts() {
        assert!(!policy().exhausted(3));
        assert!(policy().exhausted(4));
    }
}
