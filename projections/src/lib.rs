//! Projector workers: each projection consumes the event topics in its own consumer group and
//! builds its read models in PostgreSQL, exactly once in effect (see [`runner`]).
//!
//! Projections: `users`, `orders`, `payments`, `analytics` (revenue per day and currency, order
//! funnel) and `audit` (every event with its metadata); and the order–payment
//! [`process_manager`], which runs the same way but reacts with commands.
#![forbid(unsafe_code)]

pub mod envelope;
pub mod models;
pub mod process_manager;
pub mod runner;
pub mod startup;
pub mod verify;

use std::time::Duration;

use infra::settings::Settings;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

use envelope::Envelope;
use models::ApplyError;
use process_manager::Commands;

/// The projections this crate maintains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    Users,
    Orders,
    Payments,
    Analytics,
    Audit,
    ProcessManager,
}

impl Projection {
    /// The read models (the process manager is not one: it acts, and is run on request).
    pub const READ_MODELS: [Projection; 5] = [
        Self::Users,
        Self::Orders,
        Self::Payments,
        Self::Analytics,
        Self::Audit,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Orders => "orders",
            Self::Payments => "payments",
            Self::Analytics => "analytics",
            Self::Audit => "audit",
            Self::ProcessManager => "process_manager",
        }
    }

    /// The projection called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Users,
            Self::Orders,
            Self::Payments,
            Self::Analytics,
            Self::Audit,
            Self::ProcessManager,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }

    /// The aggregate types (hence topics) the projection reads.
    fn aggregates(&self) -> &'static [&'static str] {
        match self {
            Self::Users => &["user"],
            Self::Orders => &["order"],
            Self::Payments => &["payment"],
            Self::Analytics => &["order", "payment"],
            Self::Audit => &["user", "order", "payment"],
            Self::ProcessManager => &["order", "payment"],
        }
    }

    pub fn topics(&self, prefix: &str) -> Vec<String> {
        self.aggregates()
            .iter()
            .map(|a| infra::kafka::topic_for(prefix, a))
            .collect()
    }

    pub async fn apply(
        &self,
        conn: &mut PgConnection,
        e: &Envelope,
        commands: Option<&Commands>,
    ) -> Result<(), ApplyError> {
        match self {
            Self::Users => models::users::apply(conn, e).await,
            Self::Orders => models::orders::apply(conn, e).await,
            Self::Payments => models::payments::apply(conn, e).await,
            Self::Analytics => models::analytics::apply(conn, e).await,
            Self::Audit => models::audit::apply(conn, e).await,
            Self::ProcessManager => match commands {
                Some(commands) => process_manager::apply(conn, e, commands).await,
                None => Err(ApplyError::Transient(
                    "the process manager has no command API client".to_owned(),
                )),
            },
        }
    }
}

pub use infra::error_chain;

/// Runs every projection (and the process manager, if `projector.process_manager`) until
/// `stopped`; a projection that fails restarts from its stored offsets after a backoff, so one
/// failing projection does not stop the others.
pub async fn run_all(
    pool: PgPool,
    settings: Settings,
    commands: Option<Commands>,
    stopped: watch::Receiver<bool>,
) {
    let mut projections = Projection::READ_MODELS.to_vec();
    if commands.is_some() {
        projections.push(Projection::ProcessManager);
    }
    let tasks: Vec<_> = projections
        .into_iter()
        .map(|projection| {
            let runner = runner::Runner {
                projection,
                pool: pool.clone(),
                settings: settings.clone(),
                commands: commands.clone(),
            };
            tokio::spawn(supervise(runner, stopped.clone()))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// The process manager's command client, when `projector.process_manager` is on.
pub fn process_manager_commands(settings: &Settings) -> Result<Option<Commands>, reqwest::Error> {
    settings
        .projector
        .process_manager
        .then(|| Commands::new(&settings.projector.command_api_url))
        .transpose()
}

async fn supervise(runner: runner::Runner, stopped: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(200);
    while !*stopped.borrow() {
        match runner.run(stopped.clone()).await {
            Ok(()) => break,
            Err(error) => {
                metrics::counter!("projection_restarts_total", "projection" => runner.projection.name()).increment(1);
                tracing::warn!(projection = runner.projection.name(), error = %error_chain(&error),
                    retry_in_ms = backoff.as_millis() as u64, "projection interrupted");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
