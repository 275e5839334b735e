//! The read routes of the HTTP contract (`docs/api.md`), and what single-resource reads share:
//! the cache, `min_version`, `ETag` and `If-None-Match`, and the ownership check that keeps a
//! customer to what is theirs (`crate::policy`). Every route needs a bearer token; each handler
//! takes [`Authenticated`](infra::auth::Authenticated) first and asks the policy before it
//! validates parameters, so the order of answers is 401, then 403, then 422 or 404.

#[cfg(test)]
mod access_tests;
pub mod analytics;
pub mod audit;
pub mod customer_value;
pub mod orders;
pub mod payments;
pub mod users;

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::cache::{Key, Miss, ReadCache, Representation};
use crate::error::QueryError;
use crate::params;
use crate::policy::Scope;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub cache: Arc<ReadCache>,
    /// The admin console's settings and login client.
    pub console: Arc<crate::admin::Console>,
    /// Pools of the as-of sets read (`?as_of=`).
    pub as_of: Arc<crate::as_of::AsOfPools>,
    /// Audit exports streaming at once, and how long each waits for its client.
    pub exports: Arc<audit::Exports>,
}

impl AppState {
    /// Where a read of `tables` goes: the live tables, or the as-of set `as_of` names (see
    /// [`crate::as_of`]).
    pub async fn read_pool(
        &self,
        scope: Scope,
        as_of: Option<&str>,
        tables: &[&str],
    ) -> Result<PgPool, QueryError> {
        match as_of {
            None => Ok(self.pool.clone()),
            Some(name) => self.as_of.pool(&self.pool, scope, name, None, tables).await,
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(users::routes())
        .merge(orders::routes())
        .merge(payments::routes())
        .merge(analytics::routes())
        .merge(customer_value::routes())
        .merge(audit::routes())
        .merge(crate::admin::routes())
}

/// Serializes a resource for serving and caching; `owner` is the customer it belongs to.
pub fn represent<T: Serialize>(
    version: i64,
    etag: String,
    owner: Option<Uuid>,
    value: &T,
) -> Representation {
    Representation {
        version,
        money: (0, 0),
        etag,
        // Serializing plain structs of strings, numbers and JSON values cannot fail.
        body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        owner,
    }
}

/// The usual entity tag: the version, quoted.
pub fn version_tag(version: i64) -> String {
    format!("\"{version}\"")
}

/// `?min_version=N` of single-resource reads.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// Wait (bounded) until the read model has reached this version.
    pub min_version: Option<i64>,
    /// Read the as-of set of this name (`projector replay --as-of`) instead of the live read
    /// model; operators only, not with `min_version`.
    pub as_of: Option<String>,
}

/// A single-resource read: the id from the path, the representation through the cache
/// (honouring `min_version`), the policy's verdict on its owner, and a conditional response.
///
/// For a customer (`Scope::Own`) another customer's resource must look exactly like a missing
/// one, including under `min_version`, where a missing one is 404 at once and an existing one
/// may be waited for: so what the cache finds counts for this reader only when the scope
/// permits its owner (otherwise it counts as absent; loads and the cache stay shared and
/// unfiltered), and the event store is asked whether an aggregate this
/// customer owns exists ([`committed_version`]), not whether any does. The owner is checked
/// again on what the cache returns, before anything (a 304 included) is answered. A payment
/// whose order is not projected yet has no known owner, so its customer is told 404 (or,
/// waiting, is answered once the order arrives, at the wait's next poll: the order's arrival
/// notifies the order, not its payments).
///
/// 403 for a reader outside [`Scope::All`] who names an as-of set: checked before anything
/// else about the request, as on every route (a malformed id answered 404 first, a bad limit
/// 422). The routes customers may call check it on [`crate::params::NamesAsOf`] before their
/// parameters are parsed, so that parameters that do not parse are not judged first either.
pub fn as_of_permitted(scope: Scope, as_of: Option<&str>) -> Result<(), QueryError> {
    match as_of {
        Some(_) if scope != Scope::All => Err(QueryError::Forbidden),
        _ => Ok(()),
    }
}

/// With `as_of`, the representation comes from that as-of set (which must hold `tables`),
/// uncached.
#[allow(clippy::too_many_arguments)]
pub async fn single<F, Fut>(
    state: &AppState,
    scope: Scope,
    raw_id: &str,
    key: fn(Uuid) -> Key,
    params: ReadParams,
    request: &HeaderMap,
    tables: &[&str],
    load: F,
) -> Result<Response, QueryError>
where
    F: Fn(PgPool, Uuid) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Representation>, sqlx::Error>>,
{
    let what = key(Uuid::nil()).kind();
    as_of_permitted(scope, params.as_of.as_deref())?;
    let id = params::path_id(raw_id, what)?;
    if let Some(name) = &params.as_of {
        let pool = (state.as_of)
            .pool(&state.pool, scope, name, params.min_version, tables)
            .await?;
        let found = load(pool, id)
            .await
            .map_err(|e| QueryError::of_read(true, e))?
            .ok_or(QueryError::NotFound { what })?;
        return Ok(conditional(&found, request));
    }
    let min_version = params::min_version(params.min_version)?;
    let committed = || committed_version(&state.pool, key(id), scope.viewer());
    let permitted = |r: &Representation| scope.permits(r.owner);
    let found = state
        .cache
        .get_for(
            key(id),
            min_version,
            || load(state.pool.clone(), id),
            committed,
            &permitted,
            scope.viewer(),
        )
        .await
        .map_err(|miss| match miss {
            Miss::NotFound | Miss::NoSuchAggregate => QueryError::NotFound { what },
            Miss::Behind { current, waited } => QueryError::Behind {
                what,
                min_version: min_version.unwrap_or_default(),
                current,
                waited,
            },
            Miss::Overloaded => QueryError::TooManyWaiters,
            Miss::Failed(error) => QueryError::Database(error),
        })?;
    // A cache hit was stored by whoever read it first.
    scope.check(found.owner, what)?;
    Ok(conditional(&found, request))
}

/// The aggregate's version in the event store, `None` when it has no events; with a `viewer`
/// (a customer), also `None` unless that customer owns it. Ownership is read from the
/// aggregate's first event (an order's `OrderPlaced` names its customer, a payment's
/// `PaymentInitiated` its order), since this is asked when the read model has nothing yet.
async fn committed_version(
    pool: &PgPool,
    key: Key,
    viewer: Option<Uuid>,
) -> Result<Option<i64>, sqlx::Error> {
    const ANY: &str =
        "SELECT MAX(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2";
    const OWN_ORDER: &str = "SELECT MAX(sequence) FROM events
        WHERE aggregate_type = 'order' AND aggregate_id = $1
          AND EXISTS (SELECT 1 FROM events
              WHERE aggregate_type = 'order' AND aggregate_id = $1 AND sequence = 1
                AND payload->>'customer_id' = $2)";
    const OWN_PAYMENT: &str = "SELECT MAX(sequence) FROM events
        WHERE aggregate_type = 'payment' AND aggregate_id = $1
          AND EXISTS (SELECT 1 FROM events p
              JOIN events o ON o.aggregate_type = 'order'
                  AND o.aggregate_id = p.payload->>'order_id' AND o.sequence = 1
              WHERE p.aggregate_type = 'payment' AND p.aggregate_id = $1 AND p.sequence = 1
                AND o.payload->>'customer_id' = $2)";
    let id = match key {
        Key::User(id) | Key::Order(id) | Key::Payment(id) => id,
    };
    let (sql, first, second) = match (key, viewer) {
        (Key::User(_), Some(viewer)) if viewer != id => return Ok(None),
        (Key::User(_), _) | (_, None) => (ANY, key.kind().to_owned(), id.to_string()),
        (Key::Order(_), Some(viewer)) => (OWN_ORDER, id.to_string(), viewer.to_string()),
        (Key::Payment(_), Some(viewer)) => (OWN_PAYMENT, id.to_string(), viewer.to_string()),
    };
    sqlx::query_scalar(sql)
        .bind(first)
        .bind(second)
        .fetch_one(pool)
        .await
}

/// 200 with the body and `ETag`, or 304 when `If-None-Match` names the current tag.
pub fn conditional(representation: &Representation, request: &HeaderMap) -> Response {
    let etag = HeaderValue::from_str(&representation.etag)
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    let matches = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| {
            // Weak comparison (RFC 9110 13.1.2): `W/"3"` matches `"3"`.
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == representation.etag
        });
    let cache_control = HeaderValue::from_static("no-cache");
    if matches {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache_control)],
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache_control),
        ],
        representation.body.clone(),
    )
        .into_response()
}

/// A page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    /// A parameter is in the path exactly when the path template names it; all others are
    /// query parameters (a struct deriving `IntoParams` defaults to the path).
    #[test]
    fn parameters_are_in_the_path_only_when_the_template_names_them() {
        let doc = crate::openapi::document();
        let paths = doc["paths"].as_object().expect("paths");
        let mut queries = 0;
        for (path, item) in paths {
            for parameter in item["get"]["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().expect("name");
                let expected = if path.contains(&format!("{{{name}}}")) {
                    "path"
                } else {
                    queries += 1;
                    "query"
                };
                assert_eq!(parameter["in"], expected, "{name} of {path}");
            }
        }
        assert!(queries >= 10, "{queries} query parameters");
    }
}
