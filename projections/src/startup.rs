//! Builds the projector from settings, for the binary and for tests alike: its ops port
//! (`/healthz`, `/readyz`, `/metrics`) runs on the shared skeleton
//! ([`infra::server::Service`]), and every projection (with the process manager when
//! `projector.process_manager`) runs as the service's background task. On shutdown the
//! projections are told to stop, commit the batch in hand and return, within the shutdown
//! deadline.

use axum::Router;
use infra::http::StartupError;
use infra::server::Service;
use infra::settings::Settings;
use tokio::sync::watch;

/// A built, bound, not yet running projector.
pub type App = Service;

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("cannot set up the process manager's command client")]
    Commands(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("projector.read_models names {0:?}, which is no read model")]
    UnknownReadModel(String),
}

pub async fn build(settings: &Settings) -> Result<App, ProjectorError> {
    crate::selected_read_models(&settings.projector.read_models)
        .map_err(ProjectorError::UnknownReadModel)?;
    let pool = infra::db::connect(&settings.database)
        .await
        .map_err(StartupError::from)?;
    let commands = crate::process_manager_commands(settings).map_err(ProjectorError::Commands)?;
    let projector = &settings.projector;
    let service = Service::bind(
        "projector",
        &projector.host,
        projector.port,
        &settings.http,
        pool.clone(),
        Router::new(),
    )
    .await?;
    let settings = settings.clone();
    Ok(service.background("projections", move || {
        let (stop, stopped) = watch::channel(false);
        let mut stop_waiting = stopped.clone();
        // Nothing is consumed before the database holds this build's migrations: an event
        // applied to a table or column not there yet fails for good (not a transient error)
        // and would be dead-lettered.
        let running = tokio::spawn(async move {
            let migrated = tokio::select! {
                () = infra::db::wait_for_migrations(&pool, "projector") => true,
                () = async { drop(stop_waiting.wait_for(|stop| *stop).await) } => false,
            };
            if migrated {
                crate::run_all(pool, settings, commands, stopped).await;
            }
        });
        async move {
            let _ = stop.send(true);
            let _ = running.await;
        }
    }))
}
