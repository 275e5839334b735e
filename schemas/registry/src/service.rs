//! Builds the schema-registry service from settings, for the binary and for tests alike.

use std::future::Future;
use std::net::SocketAddr;

use infra::db;
use infra::http::{ops_routes, record_http_metrics, OpsState};
use infra::settings::Settings;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::compat::Level;
use crate::routes::routes;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("database set-up failed")]
    Database(#[from] db::DbError),
    #[error("invalid default compatibility level {0}")]
    Level(String),
    #[error("cannot bind {0}")]
    Bind(String, #[source] std::io::Error),
}

pub struct Service {
    listener: TcpListener,
    address: SocketAddr,
    router: axum::Router,
    pool: PgPool,
}

pub async fn build(settings: &Settings) -> Result<Service, ServiceError> {
    let pool = db::connect(&settings.database).await?;
    let level = Level::parse(&settings.schema_registry.default_compatibility).ok_or_else(|| {
        ServiceError::Level(settings.schema_registry.default_compatibility.clone())
    })?;
    let ops = OpsState {
        pool: pool.clone(),
        metrics: infra::telemetry::metrics_handle(),
    };
    let router = routes(Store::new(pool.clone(), level))
        .merge(ops_routes(ops))
        .layer(axum::middleware::from_fn(record_http_metrics));
    let address = format!(
        "{}:{}",
        settings.schema_registry.host, settings.schema_registry.port
    );
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|e| ServiceError::Bind(address.clone(), e))?;
    let address = listener
        .local_addr()
        .map_err(|e| ServiceError::Bind(address, e))?;
    Ok(Service {
        listener,
        address,
        router,
        pool,
    })
}

impl Service {
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(address = %self.address, "schema registry listening");
        let result = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        self.pool.close().await;
        result
    }
}
