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
    #[error("applying migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

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

pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await.map_err(DbError::Migrate)
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
            // cannot connect now), 53300 (too many connections).
            db.code().is_some_and(|code| {
                code.starts_with("08") || code.starts_with("57P") || code == "53300"
            })
        }
        _ => false,
    }
}
