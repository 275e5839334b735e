//! Builds the query API from settings, the same way for `main` and for tests: connect,
//! migrate, assemble the routes and hand them to the shared skeleton
//! ([`infra::server::Service`]: bind, ops routes, fallbacks, layers, shutdown deadline), with
//! the cache's change listener as its background task.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use infra::db;
use infra::http::StartupError;
use infra::server::Service;
use infra::settings::Settings;

use crate::cache::ReadCache;
use crate::openapi::openapi_json;
use crate::routes::{self, AppState};

/// A built, bound, not yet serving query API.
pub type App = Service;

pub async fn build(settings: &Settings) -> Result<App, StartupError> {
    let pool = db::connect(&settings.database).await?;
    let q = &settings.query_api;
    let cache = Arc::new(ReadCache::new(
        q.cache_max_bytes,
        Duration::from_secs(q.cache_ttl_secs),
        Duration::from_millis(q.max_wait_ms),
        q.max_version_waiters,
    ));
    let state = AppState {
        pool: pool.clone(),
        cache: cache.clone(),
    };
    let listen = cache.listen(pool.clone());
    let service = Service::bind(
        "query-api",
        &q.host,
        q.port,
        &settings.http,
        pool,
        router(state),
    )
    .await?;
    Ok(service.task("cache-listener", listen))
}

/// The read routes and the OpenAPI document; the skeleton adds ops routes and fallbacks.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::routes())
        .with_state(state)
        .route("/openapi.json", get(openapi_json))
}
