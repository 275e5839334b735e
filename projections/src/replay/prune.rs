//! Dropping a kept set: `projector prune` (the previous set) and the as-of sets' drop.

use sqlx::{PgPool, Postgres, Transaction};

use super::ReplayError;
use crate::projection::ReadModel;

/// Drops the previous set; false if there was none. A swap of the projection under way (which
/// replaces the record and drops the set it names) is waited for; the set named when the prune
/// began is the one dropped, so one that swap kept for a rollback is not (false then: the swap
/// dropped the set the prune meant).
pub async fn prune(pool: &PgPool, model: &'static dyn ReadModel) -> Result<bool, ReplayError> {
    let name = model.name();
    let named: Option<String> = sqlx::query_scalar(
        "SELECT schema_name FROM projection_previous_sets WHERE projection = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    let Some(named) = named else {
        return Ok(false);
    };
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('previous-set:' || $1))")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let schema: Option<String> = sqlx::query_scalar(
        "DELETE FROM projection_previous_sets WHERE projection = $1 AND schema_name = $2
         RETURNING schema_name",
    )
    .bind(name)
    .bind(&named)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(drop_and_commit(tx, schema).await?)
}

/// Deletes the record `delete` (one parameter, `key`; returning the set's schema) and drops
/// that schema with its tables, in one transaction; false if there was no such record.
pub(crate) async fn drop_recorded(
    pool: &PgPool,
    delete: &str,
    key: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let schema: Option<String> = sqlx::query_scalar(delete)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
    drop_and_commit(tx, schema).await
}

/// Drops `schema` (deleted from its record in `tx`) with its tables and commits; whether there
/// was one.
async fn drop_and_commit(
    mut tx: Transaction<'_, Postgres>,
    schema: Option<String>,
) -> Result<bool, sqlx::Error> {
    if let Some(schema) = &schema {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(schema.is_some())
}
