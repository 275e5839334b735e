//! Projector workers: one consumer per process reads the event topics for all its projections,
//! each of which builds its tables in PostgreSQL, exactly once in effect (see [`runner`]).
//!
//! The read models are declared once each (see [`projection`] and [`models::READ_MODELS`]);
//! the order–payment [`process_manager`] runs the same way, but decides on commands that its
//! dispatcher sends after commit.
#![forbid(unsafe_code)]

pub mod bulk;
pub mod dead_letters;
pub mod envelope;
pub mod gap;
pub mod lease;
pub mod models;
pub mod offsets;
pub mod process_manager;
pub mod projection;
pub mod rebuild;
pub mod replay;
pub mod runner;
pub mod startup;
pub mod status;
pub mod stored;
pub mod verify;
pub mod versions;

use std::time::Duration;

use infra::settings::Settings;
use sqlx::PgPool;
use tokio::sync::watch;

pub use models::{ApplyError, READ_MODELS};
pub use process_manager::{ClientCredentials, Commands};
pub use projection::{Projection, ReadModel, Table};

pub use infra::error_chain;

/// The read model called `name`.
pub fn read_model(name: &str) -> Option<&'static dyn ReadModel> {
    READ_MODELS.iter().copied().find(|m| m.name() == name)
}

/// What the runner runs: every read model, and the process manager when it is on.
pub fn projections(with_process_manager: bool) -> Vec<&'static dyn Projection> {
    let mut all = Vec::<&'static dyn Projection>::new();
    for model in READ_MODELS {
        all.push(*model);
    }
    if with_process_manager {
        all.push(&process_manager::ProcessManager);
    }
    all
}

/// The read models `projector.read_models` names (`all`: every one), or the name it does not
/// know.
pub fn selected_read_models(spec: &str) -> Result<Vec<&'static dyn ReadModel>, String> {
    let spec = spec.trim();
    if spec.is_empty() || spec == "all" {
        return Ok(READ_MODELS.to_vec());
    }
    spec.split(',')
        .map(str::trim)
        .map(|name| read_model(name).ok_or_else(|| name.to_owned()))
        .collect()
}

/// Runs the selected read models (and, with `commands`, the process manager and its dispatcher) until
/// `stopped`; a projection that fails restarts from its stored offsets after a backoff, so one
/// failing projection does not stop the others.
pub async fn run_all(
    pool: PgPool,
    settings: Settings,
    commands: Option<Commands>,
    stopped: watch::Receiver<bool>,
) {
    // `startup::build` refused a selection naming an unknown model before this runs.
    let mut selected: Vec<&'static dyn Projection> =
        selected_read_models(&settings.projector.read_models)
            .unwrap_or_default()
            .into_iter()
            .map(|m| m as &'static dyn Projection)
            .collect();
    if commands.is_some() {
        selected.push(&process_manager::ProcessManager);
    }
    let mut tasks = vec![tokio::spawn(run_projections(
        pool.clone(),
        settings.clone(),
        selected,
        stopped.clone(),
    ))];
    if let Some(commands) = commands {
        let policy = process_manager::RetryPolicy::from_settings(&settings.projector);
        let dispatcher = process_manager::Dispatcher::new(pool.clone(), commands, policy);
        tasks.push(tokio::spawn(dispatcher.run(stopped.clone())));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Runs `projections` on one shared consumer until `stopped`, restarting it from the stored
/// offsets when it fails: what [`run_all`] runs its selection with, open to projections of an
/// embedding's own (the tests run one whose code panics).
pub async fn run_projections(
    pool: PgPool,
    settings: Settings,
    projections: Vec<&'static dyn Projection>,
    stopped: watch::Receiver<bool>,
) {
    let runners = projections
        .into_iter()
        .map(|projection| runner::Runner {
            projection,
            pool: pool.clone(),
            settings: settings.clone(),
        })
        .collect();
    let fanout = runner::Fanout::new(runners, pool, settings);
    supervise(fanout, stopped).await;
}

/// The process manager's command client, when `projector.process_manager` is on.
pub fn process_manager_commands(
    settings: &Settings,
) -> Result<Option<Commands>, Box<dyn std::error::Error + Send + Sync>> {
    let projector = &settings.projector;
    if !projector.process_manager {
        return Ok(None);
    }
    let client_secret =
        infra::settings::secret_value(&projector.client_secret, &projector.client_secret_file)?;
    if infra::secrecy::ExposeSecret::expose_secret(&client_secret).is_empty() {
        return Err(
            "projector.client_secret is empty while projector.process_manager is on".into(),
        );
    }
    let credentials = ClientCredentials {
        client_id: projector.client_id.clone(),
        client_secret,
    };
    Ok(Some(Commands::new(
        &projector.command_api_url,
        credentials,
    )?))
}

/// Runs the fan-out until `stopped`; when its consumer fails (a broker error, topics not yet
/// created, the database gone while positions are read), it starts again from the stored
/// offsets after a backoff. A projection's own failures do not come here: the fan-out retries
/// that projection alone while the others go on.
async fn supervise(mut fanout: runner::Fanout, stopped: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(200);
    while !*stopped.borrow() {
        // A panic (in a projection's code, say) restarts the consumer like an error does.
        // Before, it ended this task for good while the process went on looking healthy, every
        // projection stopped.
        let error = match infra::unless_panics(fanout.run(stopped.clone())).await {
            Ok(Ok(())) => break,
            Ok(Err(error)) => error_chain(&error),
            Err(panic) => {
                tracing::error!(group = %fanout.group(), %panic, "projector consumer panicked");
                format!("panicked: {panic}")
            }
        };
        for name in fanout.names() {
            metrics::counter!("projection_restarts_total", "projection" => name).increment(1);
        }
        tracing::warn!(group = %fanout.group(), %error,
            retry_in_ms = backoff.as_millis() as u64, "projector consumer interrupted");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
