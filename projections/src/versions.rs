//! The last sequence a projection handled of each aggregate in a batch (`projection_versions`),
//! read with one query when the batch's transaction begins and written with one when it ends.
//!
//! Reading and writing the row once per event made up half of a batch's round trips to the
//! database. Within the transaction nobody else changes these rows: two instances of one
//! projection take turns on an advisory lock (see [`crate::runner`]), and nothing but the
//! runner writes them.

use std::collections::HashMap;

use sqlx::{PgConnection, Row};

/// An aggregate: its type and id.
type Aggregate = (String, String);

/// The handled sequences of the batch's aggregates, and which of them the batch moved.
#[derive(Debug, Default)]
pub struct Versions {
    handled: HashMap<Aggregate, i64>,
    moved: HashMap<Aggregate, i64>,
}

impl Versions {
    /// The stored sequences of `aggregates` for `projection`, on the batch's connection.
    pub async fn load<'a>(
        conn: &mut PgConnection,
        projection: &str,
        aggregates: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, sqlx::Error> {
        let (types, ids): (Vec<&str>, Vec<&str>) = aggregates.into_iter().unzip();
        if types.is_empty() {
            return Ok(Self::default());
        }
        let rows = sqlx::query(
            // A lateral lookup per aggregate: one primary-key probe each, whatever the size of
            // the table (a join, or a lateral subquery the planner may flatten into one, was
            // planned as a scan of every projection's rows).
            "SELECT k.aggregate_type, k.aggregate_id, v.version
             FROM UNNEST($2::text[], $3::text[]) AS k (aggregate_type, aggregate_id)
             CROSS JOIN LATERAL (
                 SELECT version FROM projection_versions
                 WHERE projection = $1 AND aggregate_type = k.aggregate_type
                   AND aggregate_id = k.aggregate_id
                 LIMIT 1 -- keeps the planner from flattening this into a (hash) join
             ) AS v",
        )
        .bind(projection)
        .bind(&types)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        let mut handled = HashMap::with_capacity(rows.len());
        for row in rows {
            handled.insert(
                (row.try_get("aggregate_type")?, row.try_get("aggregate_id")?),
                row.try_get("version")?,
            );
        }
        Ok(Self {
            handled,
            moved: HashMap::new(),
        })
    }

    /// The last sequence handled of the aggregate (`None`: none yet).
    pub fn handled(&self, aggregate_type: &str, aggregate_id: &str) -> Option<i64> {
        // Keys are owned strings; a lookup by borrowed parts needs a temporary key.
        self.handled
            .get(&(aggregate_type.to_owned(), aggregate_id.to_owned()))
            .copied()
    }

    /// Records `sequence` as the aggregate's last handled one.
    pub fn record(&mut self, aggregate_type: &str, aggregate_id: &str, sequence: i64) {
        let key = (aggregate_type.to_owned(), aggregate_id.to_owned());
        self.handled.insert(key.clone(), sequence);
        self.moved.insert(key, sequence);
    }

    /// Writes the sequences the batch moved, in the batch's transaction.
    pub async fn save(self, conn: &mut PgConnection, projection: &str) -> Result<(), sqlx::Error> {
        if self.moved.is_empty() {
            return Ok(());
        }
        let mut types = Vec::with_capacity(self.moved.len());
        let mut ids = Vec::with_capacity(self.moved.len());
        let mut sequences = Vec::with_capacity(self.moved.len());
        for ((aggregate_type, aggregate_id), sequence) in self.moved {
            types.push(aggregate_type);
            ids.push(aggregate_id);
            sequences.push(sequence);
        }
        sqlx::query(
            "INSERT INTO projection_versions (projection, aggregate_type, aggregate_id, version)
             SELECT $1, t, i, v FROM UNNEST($2::text[], $3::text[], $4::bigint[]) AS u (t, i, v)
             ON CONFLICT (projection, aggregate_type, aggregate_id)
               DO UPDATE SET version = EXCLUDED.version",
        )
        .bind(projection)
        .bind(&types)
        .bind(&ids)
        .bind(&sequences)
        .execute(conn)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_sequence_is_handled_and_saved_once_per_aggregate() {
        let mut versions = Versions::default();
        assert_eq!(versions.handled("user", "a"), None);
        versions.record("user", "a", 1);
        versions.record("user", "a", 2);
        versions.record("order", "a", 7);
        assert_eq!(versions.handled("user", "a"), Some(2));
        assert_eq!(versions.handled("order", "a"), Some(7));
        assert_eq!(versions.moved.len(), 2);
    }
}
