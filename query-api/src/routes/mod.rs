//! The read routes of the HTTP contract (`docs/api.md`), and what single-resource reads share:
//! the cache, `min_version`, `ETag` and `If-None-Match`.

pub mod analytics;
pub mod audit;
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

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub cache: Arc<ReadCache>,
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(users::routes())
        .merge(orders::routes())
        .merge(payments::routes())
        .merge(analytics::routes())
        .merge(audit::routes())
}

/// Serializes a resource for serving and caching.
pub fn represent<T: Serialize>(version: i64, etag: String, value: &T) -> Representation {
    Representation {
        version,
        etag,
        // Serializing plain structs of strings, numbers and JSON values cannot fail.
        body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
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
}

/// A single-resource read: the id from the path, the representation through the cache
/// (honouring `min_version`), and a conditional response.
pub async fn single<F, Fut>(
    state: &AppState,
    raw_id: &str,
    key: fn(Uuid) -> Key,
    params: ReadParams,
    request: &HeaderMap,
    load: F,
) -> Result<Response, QueryError>
where
    F: Fn(PgPool, Uuid) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Representation>, sqlx::Error>>,
{
    let what = key(Uuid::nil()).kind();
    let id = params::path_id(raw_id, what)?;
    let min_version = params::min_version(params.min_version)?;
    let committed = || committed_version(&state.pool, what, id);
    let found = state
        .cache
        .get(
            key(id),
            min_version,
            || load(state.pool.clone(), id),
            committed,
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
    Ok(conditional(&found, request))
}

/// The aggregate's version in the event store, `None` when it has no events (`what` is its
/// aggregate type).
async fn committed_version(
    pool: &PgPool,
    what: &'static str,
    id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT MAX(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(what)
    .bind(id.to_string())
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
