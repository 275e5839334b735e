//! Leases: what a replay, an as-of build or a verify holds while it works, so that what it
//! leaves behind when its process dies is found and cleared (see the migration
//! `20261202000002_projector_leases`).
//!
//! A lease is a session advisory lock, named by a random id, on a connection of its own:
//! PostgreSQL releases it when that connection ends, however the process ended. Every schema
//! the work creates is recorded under its lease before it is created
//! ([`Lease::record_schema`]), and its `replay_runs` row carries the lease. [`sweep`] drops
//! the schemas of leases no longer held (unless they became an as-of set or a replaced set)
//! and marks their runs `abandoned`.

use sqlx::{Connection, PgConnection, PgPool};

/// A lease held for as long as this value lives (its connection closes with it).
pub struct Lease {
    id: String,
    connection: PgConnection,
}

impl Lease {
    /// Takes a new lease, on a connection of its own rather than one of `pool`'s (a replay
    /// may run on a pool of one connection, and must not lose it to the lease).
    pub async fn take(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let options = pool.connect_options().as_ref().clone();
        let mut connection = PgConnection::connect_with(&options).await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        // Taken before anything is recorded under it: a sweep never sees a record of a lease
        // that is not held yet.
        sqlx::query("SELECT pg_advisory_lock(hashtext('projector-lease:' || $1))")
            .bind(&id)
            .execute(&mut connection)
            .await?;
        Ok(Self { id, connection })
    }

    /// The lease's id, as `replay_runs.lease` and `projector_work_schemas.lease` hold it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records `schema` as this lease's, on `conn`; call it before creating the schema, so
    /// that no schema exists unrecorded.
    pub async fn record_schema(
        &self,
        conn: &mut PgConnection,
        schema: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO projector_work_schemas (schema_name, lease) VALUES ($1, $2)")
            .bind(schema)
            .bind(&self.id)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Ends the lease: forgets its schemas that are gone or were kept, and releases it.
    /// A schema it could not drop stays recorded, and the next sweep drops it.
    pub async fn release(mut self) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "DELETE FROM projector_work_schemas w WHERE w.lease = $1 AND {SETTLED}"
        ))
        .bind(&self.id)
        .execute(&mut self.connection)
        .await?;
        self.connection.close().await
    }
}

/// A recorded schema `w` that needs no dropping: it is gone, or it became an as-of set or a
/// replaced set.
const SETTLED: &str = "(to_regnamespace(w.schema_name) IS NULL
     OR w.schema_name IN (SELECT schema_name FROM as_of_sets)
     OR w.schema_name IN (SELECT schema_name FROM projection_previous_sets))";

/// What a [`sweep`] cleared.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// The abandoned schemas dropped.
    pub schemas: Vec<String>,
    /// The ids of the runs marked abandoned.
    pub runs: Vec<i64>,
}

impl Swept {
    pub fn is_empty(&self) -> bool {
        self.schemas.is_empty() && self.runs.is_empty()
    }
}

/// Clears what work whose lease is no longer held left behind: drops its schemas (those that
/// did not become an as-of set or a replaced set) and marks its running runs `abandoned`.
/// Sweeps take turns.
pub async fn sweep(pool: &PgPool) -> Result<Swept, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('projector-sweep'))")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "DELETE FROM projector_work_schemas w
         WHERE NOT projector_lease_held(w.lease) AND {SETTLED}"
    ))
    .execute(&mut *tx)
    .await?;
    let schemas: Vec<String> = sqlx::query_scalar(
        "DELETE FROM projector_work_schemas w WHERE NOT projector_lease_held(w.lease)
         RETURNING schema_name",
    )
    .fetch_all(&mut *tx)
    .await?;
    for schema in &schemas {
        // Quoted: the name is read back from a table, not made here.
        let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {quoted} CASCADE"))
            .execute(&mut *tx)
            .await?;
    }
    // A run that ends writes its state before its lease goes: one still `running` whose lease
    // is gone was never finished.
    let runs: Vec<i64> = sqlx::query_scalar(
        "UPDATE replay_runs SET state = 'abandoned', updated_at = now(), finished_at = now(),
             error = 'the process running it ended before the run finished'
         WHERE state = 'running' AND lease IS NOT NULL AND NOT projector_lease_held(lease)
         RETURNING id",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut schemas = schemas;
    schemas.sort();
    if !schemas.is_empty() || !runs.is_empty() {
        tracing::warn!(
            ?schemas,
            ?runs,
            "cleared what replays, as-of builds or verifies that ended without finishing left"
        );
    }
    Ok(Swept { schemas, runs })
}
