//! `?as_of=<name>`: reads served from an as-of set (`projector replay --as-of`), what the read
//! models said at an earlier point of the log, for audits and disputes.
//!
//! Each set is read through a small pool of its own whose connections see only the set's
//! schema (`search_path` is that schema alone, so a table the set does not hold is an error,
//! never the live table) and are read-only (`default_transaction_read_only`). Such reads skip
//! the cache and `min_version` (a set never changes), and only operators (support, admin,
//! service) may make them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

use crate::error::QueryError;
use crate::policy::Scope;

/// Connections per set: as-of reads are occasional.
const CONNECTIONS: u32 = 2;

/// The pools of the as-of sets read so far, by set name, with the schema each was made for.
pub struct AsOfPools {
    options: PgConnectOptions,
    pools: Mutex<HashMap<String, (String, PgPool)>>,
}

impl AsOfPools {
    pub fn new(options: PgConnectOptions) -> Self {
        Self {
            options,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The pool reading the set `name`, for a reader in `scope`: 403 for a customer (before
    /// anything about the request is judged, as on every route), 422 for a malformed name or
    /// one given with `min_version`, 404 for a set that does not exist. `tables` are those the
    /// read needs: a set without one of them is a 404 too.
    pub async fn pool(
        &self,
        live: &PgPool,
        scope: Scope,
        name: &str,
        min_version: Option<i64>,
        tables: &[&str],
    ) -> Result<PgPool, QueryError> {
        if scope != Scope::All {
            return Err(QueryError::Forbidden);
        }
        if !projections::replay::as_of::valid_name(name) {
            return Err(QueryError::invalid(
                "as_of",
                "must name an as-of set: 1 to 40 lower-case letters, digits, '-' or '_'",
            ));
        }
        if min_version.is_some() {
            return Err(QueryError::invalid(
                "min_version",
                "cannot be combined with as_of: an as-of set never changes",
            ));
        }
        let set: Option<(String, Vec<String>)> =
            sqlx::query_as("SELECT schema_name, projections FROM as_of_sets WHERE name = $1")
                .bind(name)
                .fetch_optional(live)
                .await?;
        let Some((schema, models)) = set else {
            self.forget(name, None).await;
            return Err(QueryError::NotFound { what: "as-of set" });
        };
        let held = |table: &&str| {
            projections::READ_MODELS.iter().any(|m| {
                models.iter().any(|n| n == m.name()) && m.tables().iter().any(|t| t.name == *table)
            })
        };
        if !tables.iter().all(held) {
            return Err(QueryError::NotFound {
                what: "as-of set holding this read model",
            });
        }
        // A set re-created under the same name has a new schema, hence a new pool: the old
        // one is closed, as is the pool of a set found dropped, so neither they nor their
        // maintenance tasks outlive their sets.
        self.forget(name, Some(&schema)).await;
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let (_, pool) = pools
            .entry(name.to_owned())
            .or_insert_with(|| (schema.clone(), set_pool(self.options.clone(), schema)));
        Ok(pool.clone())
    }

    /// Closes and forgets the pool of set `name` unless it reads `current` (the set's schema
    /// now; `None`: the set is gone).
    async fn forget(&self, name: &str, current: Option<&str>) {
        let stale = {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            match pools.get(name) {
                Some((schema, _)) if Some(schema.as_str()) != current => pools.remove(name),
                _ => None,
            }
        };
        if let Some((_, pool)) = stale {
            pool.close().await;
        }
    }
}

/// A lazy pool whose connections see only `schema`, read-only.
fn set_pool(options: PgConnectOptions, schema: String) -> PgPool {
    PgPoolOptions::new()
        .max_connections(CONNECTIONS)
        .min_connections(0)
        .idle_timeout(Duration::from_secs(60))
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _| {
            let schema = schema.clone();
            Box::pin(async move {
                // The schema name is the set's recorded one (`asof_` and hex), quoted anyway.
                conn.execute(
                    format!(
                        "SET search_path TO \"{schema}\"; SET default_transaction_read_only = on"
                    )
                    .as_str(),
                )
                .await?;
                Ok(())
            })
        })
        .connect_lazy_with(options)
}
