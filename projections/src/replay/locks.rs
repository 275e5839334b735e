//! The swap's locks, all taken before any of its statements runs, in an order and with waits
//! that hold no reader up for long; one attempt per transaction.
//!
//! Readers (the query API) read the live tables, never `projection_versions` or a set's own
//! tables. So those are locked first: the incoming set's tables and the older replaced set's
//! (which the swap drops), then the versions' parent, the projection's partition and the
//! default one (which every projector's batch needs, so they come after anything else may
//! be waited for); each statement waits a little past `deadlock_timeout`, long enough for a
//! batch of another projection to end or for PostgreSQL to cancel an autovacuum in the way.
//! Only then the live tables, each attempt waiting at most [`LIVE_WAIT_MS`], since readers
//! queue behind that request. Every eighth attempt waits on the live tables past
//! `deadlock_timeout`, so that an autovacuum of a live table is cancelled too rather than
//! waited out. Taken statement by statement, as before, the swap held the live tables while
//! it waited for the versions (behind other projections' batches, or a vacuum), and every
//! reader of those tables waited with it: under load the query API's connections ran out and
//! unrelated reads answered 503.
//!
//! An attempt that does not get them all ends its transaction, and the caller catches the set
//! up and begins another after a pause. A transaction that waits holds back the relay and
//! every catch-up, which go only below the oldest open transaction id: the swap's writes take
//! one, and so does an `ACCESS EXCLUSIVE` lock itself (PostgreSQL logs such locks for standbys
//! at any `wal_level` from `replica`). Kept across attempts, as before, that id held back
//! publication for as long as the swap waited, up to ten minutes; now for one attempt at most
//! (a few seconds). Between attempts the live projector has the projection too, and what the
//! swap folds under its locks is what committed during one attempt.

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

/// The swap's attempts so far.
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

    /// The pause after a failed attempt, longer each time (up to 2 s).
    pub(super) async fn pause(&mut self) {
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_secs(2));
    }
}

/// One attempt, in `tx` (a transaction of its own), at the locks the swap of projection `name`
/// needs: the projection's (which its projector's batches take) and its `previous-set` lock
/// (which a `prune` takes), then its live `tables`, the tables of the set in schema
/// `incoming`, the versions, and the older replaced set's tables. False when one was not had
/// in time: the caller rolls `tx` back, pauses ([`Waiting::pause`]) and tries again.
pub(super) async fn take(
    tx: &mut PgConnection,
    name: &str,
    incoming: &str,
    tables: &[&str],
    waiting: &mut Waiting,
) -> Result<bool, ReplayError> {
    waiting.attempts += 1;
    let attempts = waiting.attempts;
    let deadlock_ms: i64 = sqlx::query_scalar(
        "SELECT setting::bigint FROM pg_settings WHERE name = 'deadlock_timeout'",
    )
    .fetch_one(&mut *tx)
    .await?;
    let short_wait = deadlock_ms.max(0) as u64 + PAST_DEADLOCK_CHECK_MS;
    let live_wait = match attempts.is_multiple_of(8) {
        true => deadlock_ms.max(0) as u64 + LIVE_WAIT_MS,
        false => LIVE_WAIT_MS,
    };
    let live: Vec<String> = tables.iter().map(|t| format!("public.{t}")).collect();
    let mut waited_for = String::new();
    let attempted = attempt(
        tx,
        (name, incoming),
        &live,
        (short_wait, live_wait),
        &mut waited_for,
    )
    .await;
    match attempted {
        Ok(()) => {
            sqlx::query("SET LOCAL lock_timeout = 0")
                .execute(&mut *tx)
                .await?;
            Ok(true)
        }
        // A lock not had in time, or this attempt chosen as a deadlock's victim (a long wait
        // runs the deadlock check, and `projector verify` takes the live tables before the
        // versions).
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("55P03") | Some("40P01")) =>
        {
            if waiting.started.elapsed() > GIVE_UP {
                return Err(ReplayError::Locks {
                    tables: waited_for,
                    attempts,
                });
            }
            if attempts.is_multiple_of(25) {
                tracing::warn!(projection = name, attempts, waiting_for = %waited_for, error = %e,
                    "the swap still waits for its locks: sessions keep them busy");
            }
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

/// The locks of one attempt, each statement under its wait: `short` (milliseconds) for the
/// advisory locks and the tables no reader reads, `live_wait` for the `live` tables.
/// What each statement waits for goes into `waited_for`, for the error of a swap that gives up.
async fn attempt(
    tx: &mut PgConnection,
    (name, incoming): (&str, &str),
    live: &[String],
    (short, live_wait): (u64, u64),
    waited_for: &mut String,
) -> Result<(), sqlx::Error> {
    set_lock_timeout(tx, short).await?;
    for (lock, holders) in [
        (
            "projection:",
            "its projector's batches, a dead-letter retry",
        ),
        ("previous-set:", "a prune"),
    ] {
        *waited_for = format!("the advisory lock '{lock}{name}' (held by {holders})");
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1 || $2))")
            .bind(lock)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
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
    // The incoming set's tables move or are attached; the older replaced set is dropped (no
    // `prune` drops it meanwhile: it takes the `previous-set` lock).
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
    // The sets' tables before the versions: waiting for a set's table (an operator comparing
    // sets, a dump) then holds no projector's batch up.
    for (tables, wait_ms) in [
        (&sets[..], short),
        (&versions[..], short),
        (live, live_wait),
    ] {
        if tables.is_empty() {
            continue;
        }
        set_lock_timeout(tx, wait_ms).await?;
        *waited_for = tables.join(", ");
        sqlx::query(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            tables.join(", ")
        ))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn set_lock_timeout(tx: &mut PgConnection, wait_ms: u64) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("SET LOCAL lock_timeout = '{wait_ms}ms'"))
        .execute(&mut *tx)
        .await?;
    Ok(())
}
