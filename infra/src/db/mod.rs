//! The PostgreSQL pool and the schema migrations every service shares.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::settings::DatabaseSettings;

mod availability;

pub use availability::{Availability, DatabaseDown};

/// Migrations in `infra/migrations`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the database URL is invalid")]
    BadUrl(#[source] sqlx::Error),
    #[error("the database did not take a connection within {0:?}")]
    Unreachable(Duration, #[source] sqlx::Error),
    #[error("connecting to the database failed")]
    Connect(#[source] sqlx::Error),
    #[error("applying migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// How long a starting process waits for the database to take the connection its migrations
/// run on. The pool's acquire timeout is for requests, which should fail fast; a service or a
/// job that starts while the database is busy or still coming up should wait for it instead
/// of exiting (under load, one connection can take longer than the 500 ms default).
pub const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// Column `index` of `row`, which must be named `name`: a read by position (a lookup by name
/// hashes the name, which counts when millions of rows are read, as the relay and replay do)
/// that still fails loudly when the select's columns are not in the order its reader expects.
pub fn column_at<'r, T>(
    row: &'r sqlx::postgres::PgRow,
    index: usize,
    name: &str,
) -> Result<T, sqlx::Error>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    use sqlx::{Column, Row};
    match row.columns().get(index) {
        Some(column) if column.name() == name => row.try_get(index),
        _ => Err(sqlx::Error::ColumnNotFound(name.to_owned())),
    }
}

/// A lazily connecting pool: a service starts (and reports not-ready) while the database is
/// down, and recovers when it returns.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    let options = connect_options(settings)?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(options))
}

/// How the pool (and an [`Availability`] probe) connects.
pub fn connect_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, DbError> {
    let options: PgConnectOptions = settings
        .url
        .expose_secret()
        .parse()
        .map_err(DbError::BadUrl)?;
    Ok(options.application_name("commerce"))
}

/// The pool, migrated first when `migrate_on_start` says so: what every service starts with.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    let pool = pool(settings)?;
    if settings.migrate_on_start {
        migrate(&pool).await?;
    }
    Ok(pool)
}

/// Applies the pending migrations on a connection of their own, opened within
/// [`STARTUP_WAIT`] (the pool's acquire timeout does not apply), then closes it.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    let mut connection = startup_connection(&pool.connect_options(), STARTUP_WAIT).await?;
    let applied = MIGRATOR
        .run(&mut connection)
        .await
        .map_err(DbError::Migrate);
    // A failed close only loses the goodbye message; the server drops the session anyway.
    let _ = sqlx::Connection::close(connection).await;
    applied
}

/// The newest migration this build embeds: the database must hold it (and every one before
/// it) for this build's queries.
pub fn needed_migration() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The newest migration the database holds (0 before any).
pub async fn applied_migration(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
}

/// Returns once the database holds every migration this build embeds, checking every two
/// seconds and logging a warning every half minute while it waits (for a service that must
/// not work on an older schema: a rolling update whose migrations run as a separate job, which
/// the new pods may start before). A database that cannot be asked is waited for the same way.
pub async fn wait_for_migrations(pool: &PgPool, service: &str) {
    let needed = needed_migration();
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let applied = applied_migration(pool).await;
        if matches!(applied, Ok(applied) if applied >= needed) {
            if last_warning.is_some() {
                tracing::info!(service, needed, "the database's migrations are in place");
            }
            return;
        }
        if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
            match &applied {
                Ok(applied) => tracing::warn!(
                    service,
                    applied,
                    needed,
                    "waiting for the database's migrations before starting work"
                ),
                Err(error) => tracing::warn!(
                    service,
                    needed,
                    error = error as &dyn std::error::Error,
                    "waiting for the database's migrations before starting work"
                ),
            }
            last_warning = Some(tokio::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// A connection, retried with growing pauses while the database is unreachable, refuses for
/// now (starting up, out of connection slots) or is too slow to answer, until `wait` has
/// passed; any other error (a wrong password, a database that does not exist) at once.
async fn startup_connection(
    options: &PgConnectOptions,
    wait: Duration,
) -> Result<sqlx::PgConnection, DbError> {
    use sqlx::ConnectOptions;
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(100);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let error = match tokio::time::timeout(left, options.connect()).await {
            Ok(Ok(connection)) => return Ok(connection),
            Ok(Err(error)) if is_unavailable(&error) => error,
            Ok(Err(error)) => return Err(DbError::Connect(error)),
            Err(_) => {
                let slow = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer");
                return Err(DbError::Unreachable(wait, sqlx::Error::Io(slow)));
            }
        };
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(DbError::Unreachable(wait, error));
        }
        tracing::warn!(error = %error, retry_in_ms = pause.as_millis() as u64,
            "waiting for the database");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Has the server notice within about half a minute that the peer of `connection` is gone
/// (its machine died, a partition cut it off), instead of the operating system's default of
/// over two hours: for a connection that holds a session advisory lock (the relay's, a
/// projector lease), which the server releases only when it ends the session. Ignored on
/// Unix-domain sockets, which have no silent peers.
pub async fn notice_a_dead_peer(connection: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('tcp_keepalives_idle', '10', false),
                set_config('tcp_keepalives_interval', '5', false),
                set_config('tcp_keepalives_count', '3', false),
                set_config('tcp_user_timeout', '30000', false)",
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// True when retrying the same work later may succeed: the database was unreachable, or it
/// rolled the transaction back for a reason of its own (class 40: serialization failure,
/// deadlock), cancelled the statement (57014) or ran short of resources (class 53).
pub fn is_transient(error: &sqlx::Error) -> bool {
    is_unavailable(error)
        || matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|code| {
            code.starts_with("40") || code.starts_with("53") || code == "57014"
        }))
}

/// True when PostgreSQL refused a value the request carried (SQLSTATE class 22, data
/// exception: a NUL in text or jsonb, a number out of range, an untranslatable character):
/// the request is at fault, never the server, so callers answer 422 and retrying cannot help.
pub fn is_data_exception(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|code| code.starts_with("22")))
}

/// True when the error means the database could not be reached (as opposed to a query that
/// the database refused): callers answer 503 with `Retry-After` for these.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // Class 08 (connection exception), 57P01..03 (admin shutdown, crash shutdown,
            // cannot connect now), 53300 (too many connections), 25006 (a write in a read-only
            // transaction: the pool reached a standby, as after a failover).
            db.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("57P")
                    || code == "53300"
                    || code == "25006"
            })
        }
        _ => false,
    }
}
