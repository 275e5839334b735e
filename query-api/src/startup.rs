//! Builds the query API from settings, the same way for `main` and for tests: connect,
//! migrate, bind (port 0 in tests), start the cache's change listener, serve until shut down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use infra::db;
use infra::http::{
    method_not_allowed, ops_routes, record_http_metrics, route_not_found, OpsState, StartupError,
};
use infra::settings::Settings;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::cache::ReadCache;
use crate::openapi::openapi_json;
use crate::routes::{self, AppState};

/// A built, bound, not yet serving query API.
pub struct App {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    pool: PgPool,
    cache: Arc<ReadCache>,
}

pub async fn build(settings: &Settings) -> Result<App, StartupError> {
    let pool = db::connect(&settings.database).await?;
    let q = &settings.query_api;
    let cache = Arc::new(ReadCache::new(
        q.cache_capacity,
        Duration::from_secs(q.cache_ttl_secs),
        Duration::from_millis(q.max_wait_ms),
    ));
    let (listener, address) = infra::http::bind(&q.host, q.port).await?;
    let state = AppState {
        pool: pool.clone(),
        cache: cache.clone(),
    };
    Ok(App {
        listener,
        address,
        router: router(state, OpsState::new(pool.clone())),
        pool,
        cache,
    })
}

pub fn router(state: AppState, ops: OpsState) -> Router {
    Router::new()
        .merge(routes::routes())
        .with_state(state)
        .route("/openapi.json", get(openapi_json))
        .merge(ops_routes(ops))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(record_http_metrics))
}

impl App {
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let listener_task = tokio::spawn(self.cache.clone().listen(self.pool.clone()));
        tracing::info!(address = %self.address, "query API listening");
        let listener = self.listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let result = axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        listener_task.abort();
        self.pool.close().await;
        result
    }
}
