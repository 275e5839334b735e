//! A replaced set brought to the live tables' shape before a rollback swaps it back in.
//!
//! A set swapped out keeps the shape its tables had then. A migration since may have changed
//! the live tables' collations or keys (`20261202000001_identifier_keys.sql` did, for
//! `rm_audit`); swapping the old shape back in would undo it for good, since every later
//! replay copies the live shape, and would change the columns under the query API's prepared
//! statements. Collations and the primary key are given the live shape; any other difference
//! in the columns (one added, dropped or retyped since) refuses the rollback before anything
//! is changed, since the set's rows were never written with those columns.

use sqlx::PgConnection;

use super::ReplayError;
use crate::projection::ReadModel;

/// Gives each of `model`'s tables in `schema` the live table's column collations and primary
/// key, where they differ; refuses a set whose columns differ otherwise.
pub(super) async fn conform(
    conn: &mut PgConnection,
    schema: &str,
    model: &'static dyn ReadModel,
) -> Result<(), ReplayError> {
    for table in model.tables() {
        conform_table(conn, schema, table.name).await?;
        let differences = column_differences(conn, schema, table.name).await?;
        if !differences.is_empty() {
            return Err(ReplayError::Shape {
                table: format!("{schema}.{}", table.name),
                differences: differences.join("; "),
            });
        }
    }
    Ok(())
}

/// The columns of `name` in `schema` and of the live table that differ in name, type or
/// nullability, each said as `<column>: <set's> / <live's>` (`absent` for a missing one).
async fn column_differences(
    conn: &mut PgConnection,
    schema: &str,
    name: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH cols AS (
             SELECT a.attrelid, a.attname::text AS name,
                    format_type(a.atttypid, a.atttypmod)
                      || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END AS shape
             FROM pg_attribute a
             WHERE a.attrelid IN (format('%I.%I', $1, $2)::regclass, format('public.%I', $2)::regclass)
               AND a.attnum > 0 AND NOT a.attisdropped),
         s AS (SELECT name, shape FROM cols WHERE attrelid = format('%I.%I', $1, $2)::regclass),
         l AS (SELECT name, shape FROM cols WHERE attrelid = format('public.%I', $2)::regclass)
         SELECT coalesce(s.name, l.name) || ': ' || coalesce(s.shape, 'absent') || ' / '
                || coalesce(l.shape, 'absent')
         FROM s FULL JOIN l ON s.name = l.name
         WHERE s.shape IS DISTINCT FROM l.shape
         ORDER BY 1",
    )
    .bind(schema)
    .bind(name)
    .fetch_all(&mut *conn)
    .await
}

async fn conform_table(
    conn: &mut PgConnection,
    schema: &str,
    name: &str,
) -> Result<(), sqlx::Error> {
    // Columns whose collation differs from the live table's, with the live type and collation.
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT quote_ident(s.attname),
                format_type(l.atttypid, l.atttypmod) || ' COLLATE ' || quote_ident(c.collname)
         FROM pg_attribute s
         JOIN pg_attribute l ON l.attrelid = format('public.%I', $2)::regclass
              AND l.attname = s.attname AND NOT l.attisdropped
         JOIN pg_collation c ON c.oid = l.attcollation
         WHERE s.attrelid = format('%I.%I', $1, $2)::regclass AND s.attnum > 0
           AND NOT s.attisdropped AND s.attcollation <> l.attcollation",
    )
    .bind(schema)
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    let key = |relation: String| {
        sqlx::query_as::<_, (String, String)>(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
             WHERE conrelid = $1::regclass AND contype = 'p'",
        )
        .bind(relation)
    };
    let own = key(format!("{schema}.{name}"))
        .fetch_optional(&mut *conn)
        .await?;
    let live = key(format!("public.{name}"))
        .fetch_optional(&mut *conn)
        .await?;
    let same_key = own.as_ref().map(|k| &k.1) == live.as_ref().map(|k| &k.1);
    if columns.is_empty() && same_key {
        return Ok(());
    }
    tracing::info!(table = %format!("{schema}.{name}"), "reshaping a replaced table as the live one");
    if let Some((constraint, _)) = &own {
        sqlx::query(&format!(
            "ALTER TABLE {schema}.{name} DROP CONSTRAINT {constraint}"
        ))
        .execute(&mut *conn)
        .await?;
    }
    if !columns.is_empty() {
        let changes: Vec<String> = columns
            .iter()
            .map(|(column, shape)| format!("ALTER COLUMN {column} TYPE {shape}"))
            .collect();
        sqlx::query(&format!(
            "ALTER TABLE {schema}.{name} {}",
            changes.join(", ")
        ))
        .execute(&mut *conn)
        .await?;
    }
    if let Some((constraint, definition)) = &live {
        sqlx::query(&format!(
            "ALTER TABLE {schema}.{name} ADD CONSTRAINT {constraint} {definition}"
        ))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
