//! The swap's locks, all taken before any of its statements runs, in an order and with waits
//! that hold no reader up for long, and before the swap's transaction writes anything.
//!
//! Readers (the query API) read the live tables, never `projection_versions` or a set's own
//! tables. So those are locked first: the incoming set's tables and the older replaced set's
//! (which the swap drops), then the versions' parent, the projection's partition and the
//! default one (which every projector's batch needs, so they come after anything else may
//! be waited for); each statement waits a little past `deadlock_timeout`, long enough for a
//! batch of another projection to end or for PostgreSQL to cancel an autovacuum in the way.
//! Only then the live tables, each attempt waiting at most [`LIVE_WAIT_MS`], since readers
//! queue behind that request. An attempt that does not get them all gives everything back
//! (to a savepoint: the projection's advisory locks are kept) and tries again after a pause.
//! Every eighth attempt waits on the live tables past `deadlock_timeout`, so that an
//! autovacuum of a live table is cancelled too rather than waited out.
//!
//! Taken statement by statement, as before, the swap held the live tables while it waited
//! for the versions (behind other projections' batches, or a vacuum), and every reader of
//! those tables waited with it: under load the query API's connections ran out and unrelated
//! reads answered 503.
//!
//! The transaction has no transaction id while it waits (locks and reads take none), so it
//! holds back neither the relay nor a catch-up, which go only below the oldest open one. Before,
//! the swap had written its last catch-up first, and nothing committed after that was
//! published until the swap committed or gave up. A round of [`ROUND`] attempts that does not
//! get every lock ends, so that the caller can give the projection back to its live projector
//! and catch the set up meanwhile, and the events the swap folds under the locks stay few.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use super::ReplayError;

/// The longest one attempt waits for the live tables, readers waiting behind it.
const LIVE_WAIT_MS: u64 = 200;

/// How much longer than `deadlock_timeout` one attempt waits for the tables readers do not
/// read: a blocking autovacuum is cancelled once a request has waited `deadlock_timeout`.
const PAST_DEADLOCK_CHECK_MS: u64 = 500;

/// How long the swap keeps trying before it fails.
const GIVE_UP: Duration = Duration::from_secs(600);

/// Attempts in one round (the last of them the long one).
const ROUND: u32 = 8;

/// The swap's attempts so far, over its rounds.
pub(super) struct Waiting {
    started: Instant,
    attempts: u32,
    pause: Duration,
}

impl Waiting {
    pub(super) fn new() -> Self {
        Self {
            started: Instant::now(),
            attempts: 0,
            pause: Duration::from_millis(50),
        }
    }
}

/// Takes the locks the swap of projection `name` needs: its live `tables`, the tables of the
/// set in schema `incoming`, the versions, and the older replaced set's tables. False when a
/// round of attempts ended without them (the transaction then holds none of them); the caller
/// holds the projection's `previous-set` lock, so no `prune` drops a set listed here.
pub(super) async fn take(
    tx: &mut PgConnection,
    name: &str,
    incoming: &str,
    tables: &[&str],
    waiting: &mut Waiting,
) -> Result<bool, ReplayError> {
    // DETACH and ATTACH need the parent itself (not every partition), the projection's own
    // partition when it has one, and the default partition (attaching checks it).
    let own: Option<String> = sqlx::query_scalar(
        "SELECT format('public.%I', c.relname) FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE i.inhparent = 'public.projection_versions'::regclass
           AND n.nspname = 'public' AND c.relname = $1",
    )
    .bind(format!("projection_versions_{name}"))
    .fetch_optional(&mut *tx)
    .await?;
    // The incoming set's tables move or are attached; the older replaced set is dropped.
    let sets: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
         WHERE schemaname = $1 OR schemaname IN (
             SELECT schema_name FROM projection_previous_sets WHERE projection = $2)
         ORDER BY 1",
    )
    .bind(incoming)
    .bind(name)
    .fetch_all(&mut *tx)
    .await?;
    let versions: Vec<String> = ["ONLY public.projection_versions".to_owned()]
        .into_iter()
        .chain(own)
        .chain(["public.projection_versions_default".to_owned()])
        .collect();
    let live: Vec<String> = tables.iter().map(|t| format!("public.{t}")).collect();
    let deadlock_ms: i64 = sqlx::query_scalar(
        "SELECT setting::bigint FROM pg_settings WHERE name = 'deadlock_timeout'",
    )
    .fetch_one(&mut *tx)
    .await?;
    for _ in 0..ROUND {
        waiting.attempts += 1;
        let attempts = waiting.attempts;
        let live_wait = match attempts.is_multiple_of(ROUND) {
            true => deadlock_ms.max(0) as u64 + LIVE_WAIT_MS,
            false => LIVE_WAIT_MS,
        };
        sqlx::query("SAVEPOINT swap_locks")
            .execute(&mut *tx)
            .await?;
        let versions_wait = deadlock_ms.max(0) as u64 + PAST_DEADLOCK_CHECK_MS;
        // The sets' tables before the versions: waiting for a set's table (an operator
        // comparing sets, a dump) then holds no projector's batch up.
        let steps = [
            (&sets, versions_wait),
            (&versions, versions_wait),
            (&live, live_wait),
        ];
        match attempt(tx, steps).await {
            Ok(()) => {
                sqlx::query("RELEASE SAVEPOINT swap_locks")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("SET LOCAL lock_timeout = 0")
                    .execute(&mut *tx)
                    .await?;
                return Ok(true);
            }
            // A lock not had in time, or this attempt chosen as a deadlock's victim (a long
            // wait runs the deadlock check, and `projector verify` takes the live tables
            // before the versions): give everything back and try again.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("55P03") | Some("40P01")) =>
            {
                // Released too: a savepoint rolled back to stays, and each attempt would nest
                // one more (past 64, every other session's reads slow down).
                sqlx::query("ROLLBACK TO SAVEPOINT swap_locks")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("RELEASE SAVEPOINT swap_locks")
                    .execute(&mut *tx)
                    .await?;
                let tables: Vec<String> =
                    sets.iter().chain(&versions).chain(&live).cloned().collect();
                if waiting.started.elapsed() > GIVE_UP {
                    return Err(ReplayError::Locks {
                        tables: tables.join(", "),
                        attempts,
                    });
                }
                if attempts.is_multiple_of(25) {
                    tracing::warn!(tables = %tables.join(", "), attempts,
                        "the swap still waits for its tables: sessions keep them busy");
                }
                tokio::time::sleep(waiting.pause).await;
                waiting.pause = (waiting.pause * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(false)
}

/// One attempt: each step's tables in one statement, under the step's wait (in milliseconds);
/// a step with no tables is skipped.
async fn attempt(
    tx: &mut PgConnection,
    steps: [(&Vec<String>, u64); 3],
) -> Result<(), sqlx::Error> {
    for (tables, wait_ms) in steps {
        if tables.is_empty() {
            continue;
        }
        sqlx::query(&format!("SET LOCAL lock_timeout = '{wait_ms}ms'"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            tables.join(", ")
        ))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
