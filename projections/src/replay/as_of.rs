//! As-of sets: what read models said at an earlier point of the log, built by `projector
//! replay --as-of <position | time>` into a schema of their own and recorded in `as_of_sets`
//! under a name. Nothing writes them after they are built; the query API serves them on
//! request (`?as_of=<name>`), for audits and disputes.
//!
//! A set at position P holds every event with a global position up to P; a set at time T
//! every event recorded (`recorded_at`) up to T. A transaction still open when the build
//! starts may yet commit an event inside the cut (positions and times are taken when an event
//! is written, not when it commits), so the build first waits until every transaction open
//! then has ended ([`wait_for_the_cut`]): two builds at one bound hold the same events, and the
//! position reported with the set (`position`, the last one inside the cut) is one of them. A
//! bound past the log's head (a position not handed out yet, a time to come) is refused.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{suffix, ReplayError};
use crate::lease::Lease;
use crate::projection::ReadModel;
use crate::rebuild::{self, Target};

/// The point of the log a set shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Position(i64),
    Time(DateTime<Utc>),
}

impl std::str::FromStr for Bound {
    type Err = String;

    /// A global position (digits) or an RFC 3339 time.
    fn from_str(raw: &str) -> Result<Self, String> {
        if let Ok(position) = raw.parse::<i64>() {
            return if position >= 0 {
                Ok(Self::Position(position))
            } else {
                Err("a position is not negative".into())
            };
        }
        DateTime::parse_from_rfc3339(raw)
            .map(|t| Self::Time(t.with_timezone(&Utc)))
            .map_err(|_| format!("{raw:?} is neither a global position nor an RFC 3339 time"))
    }
}

impl Bound {
    /// The set's name when none is given: `pos-<P>` or `at-<yyyymmddThhmmssZ>` (lower case).
    pub fn default_name(&self) -> String {
        match self {
            Self::Position(p) => format!("pos-{p}"),
            Self::Time(t) => format!("at-{}", t.format("%Y%m%dt%H%M%Sz")),
        }
    }

    fn requested(&self) -> String {
        match self {
            Self::Position(p) => p.to_string(),
            Self::Time(t) => t.to_rfc3339(),
        }
    }
}

/// A name the query API accepts: lower-case letters, digits, `-` and `_`, 1 to 40.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 40
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A recorded as-of set.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AsOfSet {
    pub name: String,
    pub schema_name: String,
    pub position: i64,
    pub requested: String,
    pub projections: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// What building a set did.
#[derive(Debug)]
pub struct AsOfReport {
    pub set: AsOfSet,
    pub models: Vec<ModelReport>,
}

/// One model of a set: events folded and those it could not apply (event id, error).
#[derive(Debug)]
pub struct ModelReport {
    pub name: &'static str,
    pub events: u64,
    pub failed: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum AsOfError {
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("an as-of set is named with 1 to 40 lower-case letters, digits, '-' or '_': {0:?}")]
    BadName(String),
    #[error("an as-of set named {0:?} exists (projector as-of drop {0} first)")]
    Exists(String),
    #[error("{0} is past the log's head: no event has been written there yet")]
    Future(String),
}

impl From<sqlx::Error> for AsOfError {
    fn from(error: sqlx::Error) -> Self {
        Self::Replay(error.into())
    }
}

/// Builds the set `name` of `models` at `bound`. Its schema is recorded under `lease` before
/// it is created: if the process dies before the set is recorded in `as_of_sets`, a sweep
/// drops it (see [`crate::lease`]).
pub async fn build(
    pool: &PgPool,
    lease: &Lease,
    models: &[&'static dyn ReadModel],
    bound: &Bound,
    name: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<AsOfReport, AsOfError> {
    if !valid_name(name) {
        return Err(AsOfError::BadName(name.to_owned()));
    }
    let taken: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM as_of_sets WHERE name = $1)")
            .bind(name)
            .fetch_one(pool)
            .await?;
    if taken {
        return Err(AsOfError::Exists(name.to_owned()));
    }
    wait_for_the_cut(pool, bound).await?;
    let schema = format!("asof_{}", suffix());
    lease
        .record_schema(&mut *pool.acquire().await?, &schema)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(pool)
        .await?;
    let built = async {
        let mut targets = Vec::new();
        for model in models {
            for table in model.tables() {
                sqlx::query(&table.create_unindexed_sql(&schema))
                    .execute(pool)
                    .await?;
            }
            targets.push(Target::new(*model, &schema));
        }
        let limit = match bound {
            Bound::Position(p) => format!("e.global_position <= {p}"),
            Bound::Time(t) => format!("e.recorded_at <= '{}'::timestamptz", t.to_rfc3339()),
        };
        let filter = format!(
            "{limit} AND e.aggregate_type = ANY({})",
            rebuild::aggregate_types_sql(&targets)
        );
        rebuild::fold_events(pool, &mut targets, &filter, rebuild::Last::Write, progress).await?;
        let mut conn = pool.acquire().await?;
        for model in models {
            for table in model.tables() {
                table.add_indexes(&mut conn, &schema).await?;
            }
        }
        drop(conn);
        let position: i64 = sqlx::query_scalar(&format!(
            "SELECT COALESCE(max(global_position), 0) FROM events e WHERE {limit}"
        ))
        .fetch_one(pool)
        .await?;
        let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
        // Kept: its record is claimed in the transaction that registers it (see
        // `crate::lease::claim_schema`).
        let mut tx = pool.begin().await?;
        if !crate::lease::claim_schema(&mut tx, &schema).await? {
            return Err(ReplayError::Swept(schema.clone()).into());
        }
        let inserted = sqlx::query_as::<_, AsOfSet>(
            "INSERT INTO as_of_sets (name, schema_name, position, requested, projections)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING
             RETURNING name, schema_name, position, requested, projections, created_at",
        )
        .bind(name)
        .bind(&schema)
        .bind(position)
        .bind(bound.requested())
        .bind(&names)
        .fetch_optional(&mut *tx)
        .await?;
        let set = inserted.ok_or_else(|| AsOfError::Exists(name.to_owned()))?;
        tx.commit().await?;
        let models = targets
            .into_iter()
            .map(|t| ModelReport {
                name: t.model.name(),
                events: t.events,
                failed: t.failed,
            })
            .collect();
        Ok(AsOfReport { set, models })
    }
    .await;
    if built.is_err() {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(pool)
            .await;
    }
    built
}

/// How long a statement may take between giving its event a position and time and taking a
/// transaction id (the defaults of one row, evaluated in the columns' order): the snapshot
/// the build waits on is taken this long after the bound is checked.
const ID_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Refuses a bound past the log's head, then waits until every transaction open when it was
/// checked (and so every one that can still commit an event inside the cut) has ended.
async fn wait_for_the_cut(pool: &PgPool, bound: &Bound) -> Result<(), AsOfError> {
    let ahead = match bound {
        Bound::Position(p) => sqlx::query_scalar(
            "SELECT $1 > COALESCE(pg_sequence_last_value(
                 pg_get_serial_sequence('events', 'global_position')), 0)",
        )
        .bind(p),
        Bound::Time(t) => sqlx::query_scalar("SELECT $1 > clock_timestamp()").bind(t),
    };
    if ahead.fetch_one(pool).await? {
        return Err(AsOfError::Future(bound.requested()));
    }
    tokio::time::sleep(ID_MARGIN).await;
    let mut conn = pool.acquire().await?;
    let open_until: String =
        sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
            .fetch_one(&mut *conn)
            .await?;
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        let ended: bool =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8")
                .bind(&open_until)
                .fetch_one(&mut *conn)
                .await?;
        if ended {
            return Ok(());
        }
        if !told && started.elapsed() > std::time::Duration::from_secs(10) {
            told = true;
            tracing::warn!(
                "the as-of build waits for transactions open when it started (any session idle \
                 in a transaction holds it: see the RelayBehind runbook for finding one)"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Every as-of set, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<AsOfSet>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, schema_name, position, requested, projections, created_at
         FROM as_of_sets ORDER BY created_at DESC, name",
    )
    .fetch_all(pool)
    .await
}

/// Drops the set `name` (its record and its tables); false if there was none.
pub async fn drop_set(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let sql = "DELETE FROM as_of_sets WHERE name = $1 RETURNING schema_name";
    super::drop_recorded(pool, sql, name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_names() {
        assert_eq!("42".parse::<Bound>(), Ok(Bound::Position(42)));
        assert!("-1".parse::<Bound>().is_err());
        assert!("yesterday".parse::<Bound>().is_err());
        let at: Bound = "2026-12-01T10:20:30+01:00".parse().unwrap();
        assert_eq!(at.default_name(), "at-20261201t092030z");
        assert_eq!(Bound::Position(7).default_name(), "pos-7");
        assert!(valid_name("dispute-4711") && valid_name("q3_close"));
        for bad in ["", "Upper", "-lead", "a b", "x;drop", &"a".repeat(41)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
