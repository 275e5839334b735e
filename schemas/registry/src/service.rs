//! Builds the schema-registry service from settings, for the binary and for tests alike, on
//! the shared skeleton ([`infra::server::Service`]: bind, ops routes, problem fallbacks for
//! unknown routes and methods, layers, shutdown deadline).

use infra::db;
use infra::http::StartupError;
use infra::settings::Settings;

use crate::auth::{require_for_writes, WriteCredentials};
use crate::compat::Level;
use crate::routes::routes;
use crate::store::Store;

/// A built, bound, not yet serving schema registry.
pub type Service = infra::server::Service;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("database set-up failed")]
    Database(#[from] db::DbError),
    #[error("invalid default compatibility level {0}")]
    Level(String),
    #[error(transparent)]
    Startup(#[from] StartupError),
}

pub async fn build(settings: &Settings) -> Result<Service, ServiceError> {
    let registry = &settings.schema_registry;
    let level = Level::parse(&registry.default_compatibility)
        .ok_or_else(|| ServiceError::Level(registry.default_compatibility.clone()))?;
    let pool = db::connect(&settings.database).await?;
    let password = infra::settings::secret_value(&registry.password, &registry.password_file)
        .map_err(|e| StartupError::config("schema_registry.password_file", e))?;
    let credentials = WriteCredentials::new(
        &registry.user,
        infra::secrecy::ExposeSecret::expose_secret(&password),
    );
    let routes = routes(Store::new(pool.clone(), level)).layer(
        axum::middleware::from_fn_with_state(credentials, require_for_writes),
    );
    let service = Service::bind(
        "schema-registry",
        &registry.host,
        registry.port,
        &settings.http,
        pool,
        routes,
    )
    .await?;
    Ok(service)
}
