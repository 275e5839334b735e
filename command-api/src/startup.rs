//! Builds the command API from settings, the same way for `main` and for tests: bind (port 0
//! in tests), connect, migrate, assemble the router, then serve until shut down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use infra::db;
use infra::event_store::EventStore;
use infra::http::{
    method_not_allowed, ops_routes, record_http_metrics, route_not_found, OpsState, StartupError,
};
use infra::settings::Settings;
use relay::Relay;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::core::CommandBus;
use crate::openapi::openapi_json;
use crate::routes;
use crate::state::AppState;

/// A built, bound, not yet serving command API.
pub struct App {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    pool: PgPool,
    events: EventStore,
    /// The relay to run alongside the API (`relay.enabled`).
    relay: Option<Relay>,
}

pub async fn build(settings: &Settings) -> Result<App, StartupError> {
    let pool = db::connect(&settings.database).await?;
    let events = EventStore::new(
        pool.clone(),
        settings.event_store.snapshot_every,
        settings.event_store.idempotency_ttl_hours,
    )
    .with_group_commit(
        settings.event_store.commit_workers,
        settings.event_store.commit_max_batch,
    );
    let availability = db::Availability::new(db::connect_options(&settings.database)?);
    let bus = CommandBus::new(
        events.clone(),
        settings.event_store.snapshot_every,
        availability,
    );
    let state = AppState {
        bus: Arc::new(bus),
        body_limit: settings.command_api.body_limit_bytes,
    };
    let (listener, address) = bind_api(settings).await?;
    let ops = OpsState::new(pool.clone());
    let relay = settings
        .relay
        .enabled
        .then(|| Relay::new(pool.clone(), settings.clone()));
    Ok(App {
        listener,
        address,
        router: router(state, ops),
        pool,
        events,
        relay,
    })
}

/// Only the relay, with `/healthz`, `/readyz` and `/metrics` on the command API's address:
/// for running the relay as its own process.
pub async fn build_relay_only(settings: &Settings) -> Result<App, StartupError> {
    let pool = db::connect(&settings.database).await?;
    let events = EventStore::new(pool.clone(), 0, settings.event_store.idempotency_ttl_hours);
    let (listener, address) = bind_api(settings).await?;
    let ops = OpsState::new(pool.clone());
    Ok(App {
        listener,
        address,
        router: ops_routes(ops),
        relay: Some(Relay::new(pool.clone(), settings.clone())),
        pool,
        events,
    })
}

async fn bind_api(settings: &Settings) -> Result<(TcpListener, SocketAddr), StartupError> {
    infra::http::bind(&settings.command_api.host, settings.command_api.port).await
}

pub fn router(state: AppState, ops: OpsState) -> Router {
    Router::new()
        .merge(routes::users::routes())
        .merge(routes::orders::routes())
        .merge(routes::payments::routes())
        .with_state(state)
        .route("/openapi.json", get(openapi_json))
        .merge(ops_routes(ops))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(record_http_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    let correlation = request
                        .headers()
                        .get("x-correlation-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("http", method = %request.method(),
                        path = %request.uri().path(), correlation_id = %correlation)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
}

impl App {
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let expiry = tokio::spawn(expire_idempotency_keys(self.events.clone()));
        let relay = self.relay.map(Relay::spawn);
        tracing::info!(address = %self.address, "command API listening");
        // Responses are small and written whole; Nagle's algorithm would only delay them.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let result = axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        expiry.abort();
        if let Some((handle, thread)) = relay {
            handle.stop();
            // The relay finishes its batch; a stuck broker must not block shutdown forever.
            let joined = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout(Duration::from_secs(15), joined)
                .await
                .is_err()
            {
                tracing::warn!("relay did not stop within 15 s");
            }
        }
        self.pool.close().await;
        result
    }
}

/// Forgets idempotency keys past their TTL, every ten minutes.
async fn expire_idempotency_keys(events: EventStore) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        match events.expire_idempotency_keys().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired idempotency keys"),
            Err(error) => tracing::warn!(
                error = &error as &dyn std::error::Error,
                "expiring idempotency keys failed"
            ),
        }
    }
}
