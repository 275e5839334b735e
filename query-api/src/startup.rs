//! Builds the query API from settings, the same way for `main` and for tests: connect,
//! migrate, assemble the routes and hand them to the shared skeleton
//! ([`infra::server::Service`]: bind, ops routes, fallbacks, layers, shutdown deadline), with
//! the cache's change listener and the signing-key refresh as its background tasks.
//!
//! Access tokens are verified against the command API's JWKS (`auth.jwks_url`). The command
//! API need not be up when this one starts: the keys are then fetched when the first token
//! names one not seen yet, and every [`JWKS_REFRESH`] regardless, so keys the command API
//! has retired stop being accepted here too.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use infra::auth::jwks::JwksSource;
use infra::auth::Verifier;
use infra::db;
use infra::http::StartupError;
use infra::server::Service;
use infra::settings::Settings;

use crate::cache::ReadCache;
use crate::openapi::openapi_json;
use crate::routes::{self, AppState};

/// A built, bound, not yet serving query API.
pub type App = Service;

/// How often the signing keys are fetched again even when no token asks for a new one.
pub const JWKS_REFRESH: Duration = Duration::from_secs(5 * 60);

pub async fn build(settings: &Settings) -> Result<App, StartupError> {
    let verifier = verifier(settings).await?;
    let pool = db::connect(&settings.database).await?;
    let q = &settings.query_api;
    let cache = Arc::new(
        ReadCache::new(
            q.cache_max_bytes,
            Duration::from_secs(q.cache_ttl_secs),
            Duration::from_millis(q.max_wait_ms),
            q.max_version_waiters,
        )
        .with_waiters_per_customer(q.max_version_waiters_per_customer),
    );
    let proxies = infra::http::TrustedProxies::parse(&settings.auth.trusted_proxies)
        .map_err(|e| StartupError::config("auth.trusted_proxies", e))?;
    let console = crate::admin::Console::new(settings, proxies)
        .map_err(|e| StartupError::config("query_api.command_api_url", e))?;
    let state = AppState {
        pool: pool.clone(),
        cache: cache.clone(),
        console: Arc::new(console),
        as_of: Arc::new(crate::as_of::AsOfPools::new(
            db::connect_options(&settings.database)
                .map_err(|e| StartupError::config("database.url", e))?,
        )),
        exports: Arc::new(crate::routes::audit::Exports::new(
            q.max_exports,
            Duration::from_millis(q.export_stall_ms),
        )),
    };
    let report_size = cache.clone().report_size(Duration::from_secs(5));
    let listen = cache.listen(pool.clone());
    let service = Service::bind(
        "query-api",
        &q.host,
        q.port,
        &settings.http,
        pool,
        router(state, verifier.clone()),
    )
    .await?;
    Ok(service
        .task("cache-listener", listen)
        .task("cache-size", report_size)
        .task("jwks-refresh", refresh_keys(verifier)))
}

/// The token verifier: the configured issuer and audience, the command API's keys. One fetch
/// is tried now; failing it is only a warning (see the module documentation).
async fn verifier(settings: &Settings) -> Result<Arc<Verifier>, StartupError> {
    let auth = &settings.auth;
    let source =
        JwksSource::new(&auth.jwks_url).map_err(|e| StartupError::config("auth.jwks_url", e))?;
    let verifier = Verifier::new(&auth.issuer, &auth.audience).with_source(source);
    match verifier.refresh().await {
        Ok(_) => tracing::info!(url = %auth.jwks_url, "fetched the signing keys"),
        Err(error) => tracing::warn!(
            url = %auth.jwks_url,
            error = %infra::error_chain(&error),
            "the signing keys could not be fetched yet; tokens will fetch them"
        ),
    }
    Ok(Arc::new(verifier))
}

/// Fetches the signing keys every [`JWKS_REFRESH`] (the first time one period after start,
/// which fetched them already).
async fn refresh_keys(verifier: Arc<Verifier>) {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + JWKS_REFRESH, JWKS_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = verifier.refresh().await {
            tracing::warn!(
                error = %infra::error_chain(&error),
                "refreshing the signing keys failed; the known keys stay in use"
            );
        }
    }
}

/// The read routes and the OpenAPI document, with `verifier` for the routes' bearer tokens;
/// the skeleton adds ops routes and fallbacks. `/openapi.json` needs no token.
pub fn router(state: AppState, verifier: Arc<Verifier>) -> Router {
    Router::new()
        .merge(routes::routes())
        .with_state(state)
        .route("/openapi.json", get(openapi_json))
        .layer(Extension(verifier))
}
