//! `projector status`: where each projection is (its stored offsets against the brokers' high
//! watermarks), what it set aside (dead letters, the newest error), the process manager's
//! outbox, the relay's checkpoint, the replays still marked running and what replays whose
//! process died left behind. Everything but the watermarks comes from the database;
//! brokers that do not answer leave the lag unknown instead of failing the report.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use infra::settings::Settings;
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::Projection;

/// How long the brokers get to answer each watermark request.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize)]
pub struct ProjectionStatus {
    pub name: &'static str,
    /// Messages applied (or skipped) so far, summed over its topic partitions.
    pub consumed: i64,
    /// Messages on the brokers not yet consumed; `None` when the brokers did not answer.
    pub lag: Option<i64>,
    pub dead_letters: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

/// A replay, rollback or as-of build still marked running.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct RunStatus {
    pub id: i64,
    pub kind: String,
    /// Its read models, space-separated.
    pub projection: String,
    pub events: i64,
    pub total: Option<i64>,
    pub started_at: DateTime<Utc>,
    /// False once its process ended without finishing it (its lease is gone; see
    /// [`crate::lease`]).
    pub alive: bool,
}

/// How many of the events a relay still has to publish are counted exactly.
pub const PENDING_COUNTED: i64 = 100_000;

#[derive(Debug, Serialize)]
pub struct Status {
    pub projections: Vec<ProjectionStatus>,
    /// Process-manager commands by outbox status (pending, done, refused, parked).
    pub outbox: HashMap<String, i64>,
    /// The relay's last published position per relay name, and the store's newest position.
    pub relay_checkpoints: HashMap<String, i64>,
    pub newest_position: i64,
    /// Per relay name, the events still to publish: those after its checkpoint in the order
    /// it publishes, by transaction then position (not the positions above the checkpoint's:
    /// a transaction that commits late publishes its high positions before lower ones still
    /// waiting), counted up to [`PENDING_COUNTED`] (a larger number means "more than that").
    pub relay_pending: HashMap<String, i64>,
    /// Why the lag is unknown, if it is.
    pub brokers_error: Option<String>,
    /// Replays, rollbacks and as-of builds still marked running, oldest first.
    pub runs: Vec<RunStatus>,
    /// Schemas left by replays, as-of builds or verifies whose process died, until a sweep
    /// (`projector prune`) drops them.
    pub left_behind: Vec<String>,
}

impl Status {
    /// True when nothing waits for a person: no dead letters, no parked command, and nothing
    /// left by a replay that died.
    pub fn healthy(&self) -> bool {
        self.projections.iter().all(|p| p.dead_letters == 0)
            && self.outbox.get("parked").copied().unwrap_or(0) == 0
            && self.runs.iter().all(|r| r.alive)
            && self.left_behind.is_empty()
    }
}

/// Gathers the status of `projections`.
pub async fn status(
    pool: &PgPool,
    settings: &Settings,
    projections: &[&'static dyn Projection],
) -> Result<Status, sqlx::Error> {
    let watermarks = tokio::task::spawn_blocking({
        let settings = settings.clone();
        // Each topic once: several projections read the same topics.
        let topics: std::collections::BTreeSet<String> = projections
            .iter()
            .flat_map(|p| p.topics(&settings.kafka.topic_prefix))
            .collect();
        move || high_watermarks(&settings, &topics)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let mut out = Vec::new();
    for projection in projections {
        let name = projection.name();
        let offsets: Vec<(String, i32, i64)> = sqlx::query_as(
            "SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = $1",
        )
        .bind(name)
        .fetch_all(pool)
        .await?;
        let stored: HashMap<(String, i32), i64> =
            offsets.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
        let consumed = stored.values().sum();
        let topics = projection.topics(&settings.kafka.topic_prefix);
        let lag = watermarks.as_ref().ok().map(|high| {
            high.iter()
                .filter(|((topic, _), _)| topics.contains(topic))
                .map(|(key, high)| (high - stored.get(key).copied().unwrap_or(0)).max(0))
                .sum()
        });
        let letters = sqlx::query(
            "SELECT count(*) AS n,
                    (SELECT error FROM dead_letters WHERE projection = $1 ORDER BY id DESC LIMIT 1) AS error,
                    max(created_at) AS at
             FROM dead_letters WHERE projection = $1",
        )
        .bind(name)
        .fetch_one(pool)
        .await?;
        out.push(ProjectionStatus {
            name,
            consumed,
            lag,
            dead_letters: letters.try_get("n")?,
            last_error: letters.try_get("error")?,
            last_error_at: letters.try_get("at")?,
        });
    }
    let outbox = sqlx::query_as::<_, (String, i64)>(
        "SELECT status, count(*) FROM pm_outbox GROUP BY status",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let relays = sqlx::query_as::<_, (String, i64, i64)>(
        "SELECT c.name, c.global_position,
                (SELECT count(*) FROM (SELECT 1 FROM events e
                     WHERE (e.tx_id, e.global_position) > (c.tx_id, c.global_position)
                     LIMIT $1) AS p)
         FROM relay_checkpoints c",
    )
    .bind(PENDING_COUNTED + 1)
    .fetch_all(pool)
    .await?;
    let relay_checkpoints = relays.iter().map(|(n, p, _)| (n.clone(), *p)).collect();
    let relay_pending = relays.into_iter().map(|(n, _, c)| (n, c)).collect();
    let newest_position: i64 =
        sqlx::query_scalar("SELECT coalesce(max(global_position), 0) FROM events")
            .fetch_one(pool)
            .await?;
    let mut runs: Vec<RunStatus> = sqlx::query_as(
        "SELECT id, kind, projection, events, total, started_at,
                replay_run_alive(lease) AS alive
         FROM replay_runs WHERE state = 'running' ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    // A run writes its end before its lease goes: one seen without its lease may have ended
    // between the snapshot and the look at the locks, and is abandoned only if its row, read
    // again, still says running.
    let unsure: Vec<i64> = runs.iter().filter(|r| !r.alive).map(|r| r.id).collect();
    if !unsure.is_empty() {
        let still: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM replay_runs WHERE id = ANY($1) AND state = 'running'",
        )
        .bind(&unsure)
        .fetch_all(pool)
        .await?;
        runs.retain(|r| r.alive || still.contains(&r.id));
    }
    // What a sweep would drop: not the records of schemas already gone or kept.
    let left_behind = sqlx::query_scalar(&format!(
        "SELECT w.schema_name FROM projector_work_schemas w
         WHERE NOT projector_lease_held(w.lease) AND NOT {} ORDER BY 1",
        crate::lease::SETTLED
    ))
    .fetch_all(pool)
    .await?;
    Ok(Status {
        projections: out,
        outbox,
        relay_checkpoints,
        newest_position,
        relay_pending,
        brokers_error: watermarks.err(),
        runs,
        left_behind,
    })
}

/// The high watermark of every partition of `topics`.
fn high_watermarks(
    settings: &Settings,
    topics: &std::collections::BTreeSet<String>,
) -> Result<HashMap<(String, i32), i64>, String> {
    let consumer: BaseConsumer = infra::kafka::base(&settings.kafka)
        .create()
        .map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    for topic in topics {
        for (partition, _, high) in infra::kafka::watermarks(&consumer, topic, BROKER_TIMEOUT)? {
            out.insert((topic.clone(), partition), high);
        }
    }
    Ok(out)
}

impl Status {
    /// The events relay `name` has still to publish, as text ("more than 100000" past the
    /// count's cap; "unknown" for a relay with no checkpoint).
    pub fn pending_text(&self, name: &str) -> String {
        match self.relay_pending.get(name) {
            Some(n) if *n > PENDING_COUNTED => format!("more than {PENDING_COUNTED}"),
            Some(n) => n.to_string(),
            None => "unknown".to_owned(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16} {:>10} {:>8} {:>12}  last error",
            "projection", "consumed", "lag", "dead letters"
        )?;
        for p in &self.projections {
            let lag = p.lag.map_or("?".to_owned(), |l| l.to_string());
            let error = match (&p.last_error, &p.last_error_at) {
                (Some(error), Some(at)) => format!("{} {error}", at.format("%Y-%m-%dT%H:%M:%SZ")),
                _ => "-".to_owned(),
            };
            writeln!(
                f,
                "{:<16} {:>10} {:>8} {:>12}  {error}",
                p.name, p.consumed, lag, p.dead_letters
            )?;
        }
        if let Some(error) = &self.brokers_error {
            writeln!(f, "lag unknown: {error}")?;
        }
        let mut outbox: Vec<_> = self.outbox.iter().collect();
        outbox.sort();
        let outbox: Vec<String> = outbox.iter().map(|(s, n)| format!("{s} {n}")).collect();
        writeln!(
            f,
            "process manager outbox: {}",
            if outbox.is_empty() {
                "empty".to_owned()
            } else {
                outbox.join(", ")
            }
        )?;
        let mut relays: Vec<_> = self.relay_checkpoints.iter().collect();
        relays.sort();
        for (name, position) in relays {
            writeln!(
                f,
                "relay {name}: checkpoint at position {position} of {}; {} events to publish",
                self.newest_position,
                self.pending_text(name)
            )?;
        }
        if self.runs.is_empty() {
            writeln!(f, "replays: none running")?;
        }
        for run in &self.runs {
            let of = run.total.map_or(String::new(), |t| format!(" of {t}"));
            let state = if run.alive {
                format!("running, {} events{of} folded", run.events)
            } else {
                "abandoned: its process ended before it finished".to_owned()
            };
            writeln!(
                f,
                "{} {} ({}), started {}: {state}",
                run.kind.replace('_', "-"),
                run.id,
                run.projection,
                run.started_at.format("%Y-%m-%dT%H:%M:%SZ")
            )?;
        }
        if !self.left_behind.is_empty() {
            writeln!(
                f,
                "left by runs that ended without finishing: {} (projector prune drops them)",
                self.left_behind.join(", ")
            )?;
        }
        Ok(())
    }
}
