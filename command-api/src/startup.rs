//! Builds the command API from settings, the same way for `main` and for tests: connect,
//! migrate, assemble the routes, and hand them to the shared skeleton
//! ([`infra::server::Service`]: bind, ops routes, fallbacks, layers, shutdown deadline), with
//! the idempotency-key expiry and (when `relay.enabled`) the relay as its background tasks.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use infra::db;
use infra::event_store::EventStore;
use infra::http::StartupError;
use infra::server::Service;
use infra::settings::Settings;
use relay::Relay;

use crate::core::CommandBus;
use crate::identity::{bootstrap, Identity};
use crate::openapi::openapi_json;
use crate::routes;
use crate::state::AppState;
use crate::webhook::{self, Webhook};

/// A built, bound, not yet serving command API.
pub type App = Service;

pub async fn build(settings: &Settings) -> Result<App, StartupError> {
    let pool = db::connect(&settings.database).await?;
    let availability = db::Availability::new(db::connect_options(&settings.database)?);
    let events = EventStore::new(
        pool.clone(),
        settings.event_store.snapshot_every,
        settings.event_store.idempotency_ttl_hours,
    )
    .failing_fast(availability.clone())
    .with_group_commit(
        settings.event_store.commit_workers,
        settings.event_store.commit_max_batch,
    );
    let bus = CommandBus::new(events.clone(), availability);
    let identity = Arc::new(
        Identity::new(pool.clone(), &settings.auth)
            .map_err(|e| StartupError::config("identity settings", e))?,
    );
    let bus = Arc::new(bus);
    let auth = &settings.auth;
    if !auth.bootstrap_admin_email.is_empty() {
        let password = infra::settings::secret_value(&auth.bootstrap_admin_password, "")
            .map_err(|e| StartupError::config("auth.bootstrap_admin_password", e))?;
        bootstrap::ensure_admin(&bus, &identity, &auth.bootstrap_admin_email, &password)
            .await
            .map_err(|e| StartupError::config("bootstrapping the admin", e))?;
    }
    let secrets =
        infra::settings::secret_list(&settings.webhook.secrets, &settings.webhook.secrets_file)
            .map_err(|e| StartupError::config("webhook.secrets_file", e))?;
    let state = AppState {
        bus,
        identity: identity.clone(),
        webhook: Arc::new(
            Webhook::new(
                &secrets,
                settings.webhook.tolerance_secs,
                settings.command_api.body_limit_bytes,
            )
            .map_err(|short| {
                StartupError::config(
                    "webhook.secrets",
                    std::io::Error::other(format!(
                        "{short} secret(s) shorter than {} characters",
                        webhook::MIN_SECRET_CHARS
                    )),
                )
            })?,
        ),
        body_limit: settings.command_api.body_limit_bytes,
    };
    let service = bind_api(settings, pool.clone(), router(state))
        .await?
        .task("idempotency-expiry", expire_idempotency_keys(events))
        .task("identity-upkeep", identity.upkeep());
    Ok(with_relay(service, settings, pool))
}

/// Only the relay, with `/healthz`, `/readyz` and `/metrics` on the command API's address:
/// for running the relay as its own process.
pub async fn build_relay_only(settings: &Settings) -> Result<App, StartupError> {
    let pool = db::connect(&settings.database).await?;
    let service = bind_api(settings, pool.clone(), Router::new()).await?;
    let relay = Relay::new(pool, settings.clone());
    Ok(service.background("relay", move || start_relay(relay)))
}

async fn bind_api(
    settings: &Settings,
    pool: sqlx::PgPool,
    routes: Router,
) -> Result<Service, StartupError> {
    let api = &settings.command_api;
    Service::bind(
        "command-api",
        &api.host,
        api.port,
        &settings.http,
        pool,
        routes,
    )
    .await
}

fn with_relay(service: Service, settings: &Settings, pool: sqlx::PgPool) -> Service {
    if !settings.relay.enabled {
        return service;
    }
    let relay = Relay::new(pool, settings.clone());
    service.background("relay", move || start_relay(relay))
}

/// Starts the relay on its own thread; the returned future stops it. The relay finishes its
/// batch; the thread is polled rather than joined on a blocking thread, so a relay stuck on
/// its broker is simply abandoned at the shutdown deadline instead of holding the runtime.
fn start_relay(relay: Relay) -> impl std::future::Future<Output = ()> + Send {
    let (handle, thread) = relay.spawn();
    async move {
        handle.stop();
        while !thread.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if thread.join().is_err() {
            tracing::error!("the relay thread panicked");
        }
    }
}

/// The command routes and the OpenAPI document; the skeleton adds ops routes and fallbacks.
pub fn router(state: AppState) -> Router {
    let verifier = state.identity.verifier.clone();
    Router::new()
        .merge(routes::users::routes())
        .merge(routes::orders::routes())
        .merge(routes::payments::routes())
        .merge(crate::identity::routes::routes())
        .merge(webhook::routes())
        .with_state(state)
        .route("/openapi.json", get(openapi_json))
        .layer(Extension(verifier))
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
