//! A table set being built or caught up event by event: its schema and, per aggregate, the
//! last sequence folded.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::{PgConnection, Row};

use super::Report;
use crate::bulk::CopyRows;
use crate::projection::ReadModel;
use crate::rebuild::Applied;

/// Events read whole per query while catching up.
const CHUNK: usize = 2000;

/// Events' keys read per query while catching up (see [`Set::fold`]).
const KEYS_CHUNK: i64 = 20_000;

pub(super) struct Set {
    pub schema: String,
    /// The versions the set held when it was saved: a replay's first pass, shared by every
    /// set it built (of every aggregate type it read: a set looks up only those of its
    /// model's types), or a set's own when loaded.
    base: Arc<Applied>,
    /// What the set folded since.
    applied: Applied,
    /// What changed in `applied` since it was last saved.
    changed: Applied,
    /// Whether what each chunk folded and refused is kept in the set's schema as well
    /// ([`Set::keeping_outcomes`]).
    pub(super) keeps_outcomes: bool,
}

impl Set {
    /// A set whose `<schema>.applied` already holds `base` (of its model's aggregate types).
    pub fn saved(schema: &str, base: Arc<Applied>) -> Self {
        Self {
            schema: schema.to_owned(),
            base,
            applied: Applied::new(),
            changed: Applied::new(),
            keeps_outcomes: false,
        }
    }

    /// The last sequence the set holds of an aggregate.
    fn version(&self, key: &(String, String)) -> Option<i64> {
        self.applied
            .get(key)
            .or_else(|| self.base.get(key))
            .copied()
    }

    pub async fn load(
        conn: &mut PgConnection,
        schema: &str,
        model: &'static dyn ReadModel,
    ) -> Result<Self, sqlx::Error> {
        // A set swapped out before `projection_versions` was partitioned kept `applied` as
        // (aggregate_type, aggregate_id, version), and one swapped out before its key led with
        // the aggregate id compared as bytes has the old collation, which a partition cannot
        // differ in: either is made a partition-ready table now.
        let old: bool = sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = 'applied' AND column_name = 'projection')
             OR NOT EXISTS (SELECT 1 FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = 'applied'
                   AND column_name = 'aggregate_id' AND collation_name = 'C')",
        )
        .bind(schema)
        .fetch_one(&mut *conn)
        .await?;
        if old {
            sqlx::query(&format!(
                "ALTER TABLE {schema}.applied RENAME TO applied_before"
            ))
            .execute(&mut *conn)
            .await?;
            sqlx::query(&applied_table_sql(schema, model.name()))
                .execute(&mut *conn)
                .await?;
            sqlx::query(&format!(
                "INSERT INTO {schema}.applied (aggregate_type, aggregate_id, version)
                 SELECT aggregate_type, aggregate_id, version FROM {schema}.applied_before"
            ))
            .execute(&mut *conn)
            .await?;
            for statement in [
                format!("DROP TABLE {schema}.applied_before"),
                format!("ALTER TABLE {schema}.applied ADD PRIMARY KEY {APPLIED_KEY}"),
            ] {
                sqlx::query(&statement).execute(&mut *conn).await?;
            }
        }
        let rows: Vec<(String, String, i64)> = sqlx::query_as(&format!(
            "SELECT aggregate_type, aggregate_id, version FROM {schema}.applied"
        ))
        .fetch_all(&mut *conn)
        .await?;
        Ok(Self::saved(
            schema,
            Arc::new(rows.into_iter().map(|(t, i, v)| ((t, i), v)).collect()),
        ))
    }

    /// Folds the events of transactions in `[from, to)` (`to` open: every one visible when
    /// the fold starts) into the set with the model's `apply`, in log order, skipping what it
    /// holds; calls `progress` per chunk. With `own_transactions` each chunk commits on its
    /// own with the versions it applied (each event applies in a savepoint, and one
    /// transaction with many of them would slow every other session; a fold cut short leaves
    /// the set's rows and its `applied` agreeing, so the next fold applies nothing twice);
    /// without, the caller's transaction holds it all and saves the versions itself
    /// ([`Set::save_changed`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn fold(
        &mut self,
        conn: &mut PgConnection,
        model: &'static dyn ReadModel,
        from: &str,
        to: Option<&str>,
        own_transactions: bool,
        report: &mut Report,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, sqlx::Error> {
        // Without an upper bound, every page of keys reads the transactions one snapshot saw.
        // Each page is a statement of its own: a page after a later snapshot could take an
        // aggregate's next event while one before it, committed meanwhile at a lower position
        // than the pages had passed, was never read (and then never applied).
        let snapshot: Option<String> = match to {
            Some(_) => None,
            None => Some(
                sqlx::query_scalar("SELECT pg_current_snapshot()::text")
                    .fetch_one(&mut *conn)
                    .await?,
            ),
        };
        let mut after = 0i64;
        let mut folded = 0;
        loop {
            // The keys alone first: a catch-up from the topics may start at a transaction that
            // wrote many events the pass folded already, and reading each whole, to skip it,
            // took about 1.5 s per model for a 50,000-event transaction.
            let keys: Vec<(i64, String, String, i64)> = sqlx::query_as(
                "SELECT e.global_position, e.aggregate_type, e.aggregate_id, e.sequence
                 FROM events e
                 WHERE e.tx_id >= $1::text::xid8 AND ($2::text IS NULL OR e.tx_id < $2::text::xid8)
                   AND ($6::text IS NULL OR pg_visible_in_snapshot(e.tx_id, $6::text::pg_snapshot))
                   AND e.global_position > $3 AND e.aggregate_type = ANY($4)
                 ORDER BY e.global_position LIMIT $5",
            )
            .bind(from)
            .bind(to)
            .bind(after)
            .bind(model.aggregates())
            .bind(KEYS_CHUNK)
            .bind(&snapshot)
            .fetch_all(&mut *conn)
            .await?;
            let Some(last) = keys.last() else { break };
            after = last.0;
            let fresh: Vec<(i64, (String, String), i64)> = keys
                .into_iter()
                .map(|(position, t, i, sequence)| (position, (t, i), sequence))
                .filter(|(_, key, sequence)| self.version(key).is_none_or(|v| *sequence > v))
                .collect();
            for fresh in fresh.chunks(CHUNK) {
                let positions: Vec<i64> = fresh.iter().map(|(position, _, _)| *position).collect();
                let rows = sqlx::query(&format!(
                    "SELECT {columns} FROM events e WHERE e.global_position = ANY($1)
                     ORDER BY e.global_position",
                    columns = crate::stored::COLUMNS
                ))
                .bind(&positions)
                .fetch_all(&mut *conn)
                .await?;
                if own_transactions {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    self.apply_chunk(&mut tx, model, &rows, fresh, report)
                        .await?;
                    self.save_changed(&mut tx, model.name()).await?;
                    tx.commit().await?;
                } else {
                    self.apply_chunk(conn, model, &rows, fresh, report).await?;
                }
                folded += fresh.len() as u64;
                progress(fresh.len() as u64);
            }
        }
        report.events += folded;
        Ok(folded)
    }

    /// Applies `rows` (the events of `fresh`) with the model's `apply` on the set's tables and
    /// takes their versions as applied. The set's schema alone is on the `search_path`: were
    /// it dropped meanwhile (a `prune`, a sweep), `apply` fails on a missing table instead of
    /// resolving its tables' names to the live ones.
    async fn apply_chunk(
        &mut self,
        conn: &mut PgConnection,
        model: &'static dyn ReadModel,
        rows: &[sqlx::postgres::PgRow],
        fresh: &[(i64, (String, String), i64)],
        report: &mut Report,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!("SET LOCAL search_path TO {}", self.schema))
            .execute(&mut *conn)
            .await?;
        let rows: Vec<&sqlx::postgres::PgRow> = rows.iter().collect();
        let refused = apply_rows(conn, model, &rows).await?;
        let positions: Vec<i64> = fresh.iter().map(|(position, _, _)| *position).collect();
        if self.keeps_outcomes {
            self.keep_outcomes(conn, &positions, &refused).await?;
        }
        report.failed.extend(refused);
        report.caught_up.extend(positions);
        for (_, key, sequence) in fresh {
            self.applied.insert(key.clone(), *sequence);
            self.changed.insert(key.clone(), *sequence);
        }
        sqlx::query("SET LOCAL search_path TO public")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Writes what changed since the last save into `<schema>.applied`.
    pub async fn save_changed(
        &mut self,
        conn: &mut PgConnection,
        projection: &str,
    ) -> Result<(), sqlx::Error> {
        let (mut types, mut ids, mut versions) = (Vec::new(), Vec::new(), Vec::new());
        for ((t, i), v) in self.changed.drain() {
            types.push(t);
            ids.push(i);
            versions.push(v);
        }
        sqlx::query(&format!(
            "INSERT INTO {}.applied (projection, aggregate_type, aggregate_id, version)
             SELECT $4, * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
             ON CONFLICT (projection, aggregate_type, aggregate_id)
             DO UPDATE SET version = EXCLUDED.version",
            self.schema
        ))
        .bind(types)
        .bind(ids)
        .bind(versions)
        .bind(projection)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// The key of `projection_versions` and so of every set's `applied` (see the migration
/// `20261202000001_identifier_keys.sql`): the aggregate id first, compared as bytes.
pub(super) const APPLIED_KEY: &str = "(aggregate_id, aggregate_type, projection)";

/// `<schema>.applied` of a set: the versions it holds, shaped as a partition of
/// `projection_versions` for `projection` (its projection column fixed by default and by a
/// CHECK, so the swap attaches it without a scan; the identifiers in the parent's collation),
/// without its key (added after a bulk load).
pub(super) fn applied_table_sql(schema: &str, projection: &str) -> String {
    format!(
        "CREATE TABLE {schema}.applied (
             projection text NOT NULL DEFAULT '{projection}',
             aggregate_type text COLLATE \"C\" NOT NULL, aggregate_id text COLLATE \"C\" NOT NULL,
             version bigint NOT NULL,
             CONSTRAINT projection_is CHECK (projection = '{projection}'))"
    )
}

/// What a pass folded, as `<schema>.applied` rows per aggregate type: encoded once and copied
/// into each set that reads the type.
pub(super) fn versions_by_type(applied: &Applied) -> HashMap<String, CopyRows> {
    let mut by_type: HashMap<String, CopyRows> = HashMap::new();
    for ((t, i), v) in applied {
        if !by_type.contains_key(t) {
            by_type.insert(t.clone(), CopyRows::new());
        }
        if let Some(rows) = by_type.get_mut(t) {
            rows.text(t).text(i).int(*v).end_row();
        }
    }
    by_type
}

/// Writes the versions of the aggregate types `model` reads (from [`versions_by_type`]) into
/// the empty `<schema>.applied`, then gives it its key.
pub(super) async fn save_all(
    conn: &mut PgConnection,
    schema: &str,
    model: &'static dyn ReadModel,
    by_type: &HashMap<String, CopyRows>,
) -> Result<(), sqlx::Error> {
    let parts: Vec<&CopyRows> = model
        .aggregates()
        .iter()
        .filter_map(|t| by_type.get(*t))
        .collect();
    crate::bulk::copy_all(
        conn,
        &format!("{schema}.applied"),
        "aggregate_type, aggregate_id, version",
        &parts,
    )
    .await?;
    sqlx::query(&format!(
        "ALTER TABLE {schema}.applied ADD PRIMARY KEY {APPLIED_KEY}"
    ))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Applies stored events in order as the projector would have received them; returns those
/// the projection could not apply (event id and error), as it would have dead-lettered them.
///
/// The rows go in under one savepoint: a savepoint per event would give the transaction a
/// subtransaction per event, and past 64 of them PostgreSQL's snapshots overflow, which slows
/// every other session of the database. Only when the projection refuses one are the rows
/// applied again one by one, each in a savepoint of its own.
async fn apply_rows(
    conn: &mut PgConnection,
    model: &'static dyn ReadModel,
    rows: &[&sqlx::postgres::PgRow],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query("SAVEPOINT apply_rows")
        .execute(&mut *conn)
        .await?;
    let mut clean = true;
    for row in rows {
        let applied = match crate::stored::envelope(row) {
            Ok(envelope) => model.apply(conn, &envelope).await.is_ok(),
            Err(_) => false,
        };
        if !applied {
            clean = false;
            break;
        }
    }
    if !clean {
        sqlx::query("ROLLBACK TO SAVEPOINT apply_rows")
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("RELEASE SAVEPOINT apply_rows")
        .execute(&mut *conn)
        .await?;
    if clean {
        return Ok(Vec::new());
    }
    let mut failed = Vec::new();
    for row in rows {
        if let Err(failure) = apply_row(conn, model, row).await? {
            failed.push(failure);
        }
    }
    Ok(failed)
}

/// Applies one stored event as the projector would have received it; `Err` inside `Ok` is an
/// event the projection cannot apply (rolled back to a savepoint, like a dead letter).
async fn apply_row(
    conn: &mut PgConnection,
    model: &'static dyn ReadModel,
    row: &sqlx::postgres::PgRow,
) -> Result<Result<(), (String, String)>, sqlx::Error> {
    let event_id: uuid::Uuid = row.try_get("event_id")?;
    let envelope = match crate::stored::envelope(row) {
        Ok(envelope) => envelope,
        Err(error) => return Ok(Err((event_id.to_string(), error))),
    };
    sqlx::query("SAVEPOINT verify_one")
        .execute(&mut *conn)
        .await?;
    match model.apply(conn, &envelope).await {
        Ok(()) => {
            sqlx::query("RELEASE SAVEPOINT verify_one")
                .execute(&mut *conn)
                .await?;
            Ok(Ok(()))
        }
        Err(error) => {
            sqlx::query("ROLLBACK TO SAVEPOINT verify_one")
                .execute(&mut *conn)
                .await?;
            Ok(Err((event_id.to_string(), crate::error_chain(&error))))
        }
    }
}
