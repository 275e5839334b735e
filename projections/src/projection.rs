//! What the runner runs and what verify and replay rebuild, declared once per model.
//!
//! A [`Projection`] consumes the topics of its aggregate types and applies each event inside
//! the runner's transaction (rows, offsets and applied versions commit together). A
//! [`ReadModel`] is a projection whose tables are a pure function of the log, so they can be
//! verified against, and rebuilt from, the events. The process manager is a projection but no
//! read model: its tables hold decisions and commands to send, not a view to rebuild.

use std::future::Future;
use std::pin::Pin;

use sqlx::PgConnection;

use crate::envelope::Envelope;

/// Why a projection could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("payload of {event_type} does not decode into a domain event")]
    Payload {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    /// A running total would pass what its column holds: the event is parked (dead-lettered)
    /// rather than the total wrapped or the projection stopped; see `analytics`.
    #[error("{table}: the total for {key} would overflow")]
    Overflow { table: &'static str, key: String },
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// The projection's code panicked on the event: a bug, which the event is set aside for
    /// (as a refused one is) instead of stopping every projection that shares its consumer.
    #[error("applying the event panicked: {0}")]
    Panicked(String),
}

/// The future `apply` returns: boxed, so projections can be iterated as `&'static dyn`.
pub type ApplyFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ApplyError>> + Send + 'a>>;

/// Anything the runner consumes the log for.
pub trait Projection: Send + Sync {
    /// Stable name: consumer group suffix and key of its stored offsets and versions.
    fn name(&self) -> &'static str;
    /// The aggregate types (hence topics) it reads.
    fn aggregates(&self) -> &'static [&'static str];
    /// Folds one event into its tables, on the runner's connection and inside its transaction.
    /// It must not call out over the network: the transaction stays short.
    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a Envelope) -> ApplyFuture<'a>;

    /// The topics of [`Projection::aggregates`] under `prefix`.
    fn topics(&self, prefix: &str) -> Vec<String> {
        self.aggregates()
            .iter()
            .map(|a| infra::kafka::topic_for(prefix, a))
            .collect()
    }
}

/// A projection whose tables can be rebuilt from the log and compared with the live ones.
pub trait ReadModel: Projection {
    /// The tables it owns, all in the `public` schema; nothing else writes them.
    fn tables(&self) -> &'static [Table];
    /// An empty in-memory fold of its tables (replay's and verify's fast path, see
    /// [`crate::bulk`]): same rows as [`Projection::apply`], written in bulk.
    fn fold(&self) -> Box<dyn crate::bulk::Fold>;
}

/// A table a read model owns, with what verify and replay need to copy and compare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
}

impl Table {
    /// An empty table of the live one's columns in `schema`, without its indexes (keys
    /// included) or triggers (a rebuild notifies nobody): a bulk load into it, then
    /// [`Table::add_indexes`], is several times faster than a load that maintains them row by
    /// row.
    pub fn create_unindexed_sql(&self, schema: &str) -> String {
        format!(
            "CREATE TABLE {schema}.{name} (LIKE public.{name} INCLUDING ALL EXCLUDING INDEXES)",
            name = self.name
        )
    }

    /// Gives `<schema>.<name>` the live table's keys and indexes, under the same names (each
    /// schema has its own): constraints by their definitions, other indexes by theirs.
    pub async fn add_indexes(
        &self,
        conn: &mut PgConnection,
        schema: &str,
    ) -> Result<(), sqlx::Error> {
        let name = self.name;
        let definitions: Vec<(Option<String>, String)> = sqlx::query_as(
            "SELECT c.conname::text,
                    CASE WHEN c.oid IS NULL THEN pg_get_indexdef(i.indexrelid)
                         ELSE pg_get_constraintdef(c.oid) END
             FROM pg_index i
             LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x')
             WHERE i.indrelid = ('public.' || $1)::regclass
             ORDER BY c.oid IS NULL, i.indexrelid",
        )
        .bind(name)
        .fetch_all(&mut *conn)
        .await?;
        let live = format!(" ON public.{name} ");
        for (constraint, definition) in definitions {
            let sql = match constraint {
                Some(constraint) => {
                    format!("ALTER TABLE {schema}.{name} ADD CONSTRAINT {constraint} {definition}")
                }
                None if definition.contains(&live) => {
                    definition.replacen(&live, &format!(" ON {schema}.{name} "), 1)
                }
                None => {
                    return Err(sqlx::Error::Protocol(format!(
                        "index of {name} not understood: {definition}"
                    )))
                }
            };
            sqlx::query(&sql).execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// A copy of the live rows as `<schema>.live_<name>`, taken in the caller's snapshot.
    pub fn copy_live_sql(&self, schema: &str) -> String {
        format!(
            "CREATE TABLE {schema}.{copy} AS SELECT * FROM public.{name}",
            copy = self.live_copy_name(),
            name = self.name
        )
    }

    pub fn live_copy_name(&self) -> String {
        format!("live_{}", self.name)
    }

    /// Row count and MD5 of the rows' text, sorted by that text: equal rows give equal sums
    /// whatever the physical order.
    pub fn checksum_sql(qualified: &str) -> String {
        format!(
            "SELECT count(*) AS n, md5(COALESCE(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS sum
             FROM {qualified} t"
        )
    }
}
