//! What a rollback's catch-up folded and refused, kept beside its set so that a rollback run
//! again after one cut short settles the dead letters as one run would have.

use sqlx::PgConnection;

use super::set::Set;
use super::Report;

/// The tables a rollback keeps its catch-up's outcomes in, beside the set: the positions it
/// folded and the events it refused.
const OUTCOME_TABLES: [&str; 2] = [
    "rollback_caught_up (global_position bigint PRIMARY KEY)",
    "rollback_refused (event_id text NOT NULL, error text NOT NULL)",
];

impl Set {
    /// The set, keeping what each chunk of its catch-up folded and refused in its own schema,
    /// in the chunk's transaction; `report` gets what an earlier run cut short kept there. A
    /// rollback's catch-up commits chunk by chunk, and its swap settles the dead letters from
    /// the report: a rollback cut short after its catch-up and run again found those events
    /// held already and skipped them, so the events refused went without a dead letter, and
    /// the dead letters of those applied stayed, to be retried and applied twice.
    pub async fn keeping_outcomes(
        mut self,
        conn: &mut PgConnection,
        report: &mut Report,
    ) -> Result<Self, sqlx::Error> {
        let schema = &self.schema;
        for table in OUTCOME_TABLES {
            sqlx::query(&format!("CREATE TABLE IF NOT EXISTS {schema}.{table}"))
                .execute(&mut *conn)
                .await?;
        }
        report.caught_up = sqlx::query_scalar(&format!(
            "SELECT global_position FROM {schema}.rollback_caught_up ORDER BY global_position"
        ))
        .fetch_all(&mut *conn)
        .await?;
        report.failed = sqlx::query_as(&format!(
            "SELECT event_id, error FROM {schema}.rollback_refused"
        ))
        .fetch_all(&mut *conn)
        .await?;
        self.keeps_outcomes = true;
        Ok(self)
    }

    /// Keeps a chunk's outcomes in the set's schema ([`Set::keeping_outcomes`]).
    pub(super) async fn keep_outcomes(
        &self,
        conn: &mut PgConnection,
        positions: &[i64],
        refused: &[(String, String)],
    ) -> Result<(), sqlx::Error> {
        let schema = &self.schema;
        sqlx::query(&format!(
            "INSERT INTO {schema}.rollback_caught_up SELECT * FROM UNNEST($1::bigint[])
             ON CONFLICT DO NOTHING"
        ))
        .bind(positions)
        .execute(&mut *conn)
        .await?;
        // An error may quote what it refused; no text column holds a NUL.
        let (ids, errors): (Vec<&str>, Vec<String>) = refused
            .iter()
            .map(|(id, error)| (id.as_str(), error.replace('\0', "\u{FFFD}")))
            .unzip();
        sqlx::query(&format!(
            "INSERT INTO {schema}.rollback_refused SELECT * FROM UNNEST($1::text[], $2::text[])"
        ))
        .bind(ids)
        .bind(errors)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
