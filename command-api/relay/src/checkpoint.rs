//! `command-api relay-checkpoint show | reset --to <position>`: what the relay has published,
//! and moving its checkpoint back so that it publishes again from an event on (consumers
//! recognise what they already applied by its aggregate sequence and skip it).
//!
//! A reset holds the relay's advisory lock while it writes, so it never races a running relay:
//! with one running, it is refused and changes nothing. A relay stores its checkpoint on the
//! connection that holds its lock, so one whose lock is gone cannot store over a reset. It only moves back: moving forward
//! would leave events unpublished, which this system never does on purpose.

use std::fmt;

use sqlx::{Connection, PgConnection, PgPool};

use crate::tail::{self, Checkpoint};

/// What `show` reports.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub name: String,
    pub tx_id: u64,
    pub global_position: i64,
    /// Committed events not yet published (counted up to 100,000, estimated past it: see
    /// [`tail::lag`]) and the oldest one's age.
    pub pending: i64,
    pub oldest_pending_seconds: f64,
    /// Whether a relay holds the lock (is publishing) right now.
    pub relay_running: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("a relay named {0:?} is running; stop it first (a reset must not race it)")]
    RelayRunning(String),
    #[error("no event at global position {0}")]
    NoSuchEvent(i64),
    #[error(
        "the checkpoint is at position {current}; a reset only moves it back (to {requested} \
         would leave events unpublished)"
    )]
    Forward { current: i64, requested: i64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The advisory lock a running relay named `name` holds, taken on a connection of its own
/// (released when the connection closes); `None` if a relay holds it. The relay takes it
/// the same way before it publishes.
pub(crate) async fn lock(pool: &PgPool, name: &str) -> Result<Option<PgConnection>, sqlx::Error> {
    let options = pool.connect_options().as_ref().clone();
    let mut connection = PgConnection::connect_with(&options).await?;
    infra::db::notice_a_dead_peer(&mut connection).await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('event-relay:' || $1))")
            .bind(name)
            .fetch_one(&mut connection)
            .await?;
    if locked {
        Ok(Some(connection))
    } else {
        connection.close().await.ok();
        Ok(None)
    }
}

pub async fn show(pool: &PgPool, name: &str) -> Result<Report, sqlx::Error> {
    let checkpoint = tail::load_checkpoint(pool, name).await?;
    let (pending, oldest_pending_seconds) = tail::lag(pool, &checkpoint).await?;
    let relay_running = match lock(pool, name).await? {
        Some(connection) => {
            connection.close().await.ok();
            false
        }
        None => true,
    };
    Ok(Report {
        name: name.to_owned(),
        tx_id: checkpoint.tx_id,
        global_position: checkpoint.global_position,
        pending,
        oldest_pending_seconds,
        relay_running,
    })
}

/// Moves the checkpoint of relay `name` back to just before the event at `to` in publication
/// order, so the relay publishes that event and everything after it again; `to = 0` means
/// from the very first event. Returns the checkpoint before and after.
pub async fn reset(
    pool: &PgPool,
    name: &str,
    to: i64,
) -> Result<(Checkpoint, Checkpoint), ResetError> {
    let Some(mut connection) = lock(pool, name).await? else {
        return Err(ResetError::RelayRunning(name.to_owned()));
    };
    let result = async {
        let current = tail::load_checkpoint(pool, name).await?;
        let target = if to <= 0 {
            Checkpoint {
                tx_id: 0,
                global_position: 0,
            }
        } else {
            let tx_id: Option<String> = sqlx::query_scalar(
                "SELECT tx_id::text FROM events WHERE global_position = $1",
            )
            .bind(to)
            .fetch_optional(&mut connection)
            .await?;
            let tx_id = tx_id.ok_or(ResetError::NoSuchEvent(to))?;
            // Just before (tx_id, to) in the relay's (tx_id, global_position) order.
            Checkpoint {
                tx_id: tx_id
                    .parse()
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                global_position: to - 1,
            }
        };
        if target > current {
            return Err(ResetError::Forward {
                current: current.global_position,
                requested: to,
            });
        }
        sqlx::query(
            "INSERT INTO relay_checkpoints (name, tx_id, global_position) VALUES ($1, $2::text::xid8, $3)
             ON CONFLICT (name) DO UPDATE
                 SET tx_id = EXCLUDED.tx_id, global_position = EXCLUDED.global_position,
                     updated_at = now()",
        )
        .bind(name)
        .bind(target.tx_id.to_string())
        .bind(target.global_position)
        .execute(&mut connection)
        .await?;
        Ok((current, target))
    }
    .await;
    connection.close().await.ok();
    result
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "relay {}: checkpoint at position {} (transaction {}; published is everything before it in commit order)",
            self.name, self.global_position, self.tx_id
        )?;
        writeln!(
            f,
            "pending: {} events, the oldest {:.1} s old",
            self.pending, self.oldest_pending_seconds
        )?;
        writeln!(
            f,
            "running: {}",
            if self.relay_running { "yes" } else { "no" }
        )
    }
}
