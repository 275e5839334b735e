//! The projector: reads settings, starts telemetry, serves `/healthz`, `/readyz`, `/metrics` on
//! `projector.port` and runs every projection (and the process manager) until Ctrl-C or SIGTERM, committing the batch in
//! hand before it exits.

use anyhow::Context;
use infra::http::{ops_routes, record_http_metrics, OpsState};
use infra::settings::Settings;

fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading settings")?;
    infra::telemetry::init_tracing(&settings.log);
    infra::runtime(0)
        .context("starting the async runtime")?
        .block_on(async {
            let pool = infra::db::connect(&settings.database)
                .await
                .context("connecting to the database")?;
            let (listener, address) =
                infra::http::bind(&settings.projector.host, settings.projector.port)
                    .await
                    .context("binding the projector's ops port")?;
            let ops = ops_routes(OpsState::new(pool.clone()))
                .layer(axum::middleware::from_fn(record_http_metrics));
            let commands = projections::process_manager_commands(&settings)
                .context("building the process manager's HTTP client")?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let projections = tokio::spawn(projections::run_all(
                pool.clone(),
                settings.clone(),
                commands,
                stopped,
            ));
            tracing::info!(%address, "projector running");
            axum::serve(listener, ops)
                .with_graceful_shutdown(infra::http::shutdown_signal())
                .await
                .context("serving the ops endpoints")?;
            let _ = stop.send(true);
            let _ = projections.await;
            pool.close().await;
            Ok(())
        })
}
