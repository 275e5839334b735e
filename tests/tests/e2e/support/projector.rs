//! The projector in this process ([`InProcessProjector`]), how many events a projection has not
//! applied yet, [`wait_until_projected`], and [`projected_commerce`]: a write stack whose
//! commerce load the projector has caught up with.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::support::commerce::commerce_load;
use crate::support::kafka::shared_bootstrap;
use crate::support::processes::{service_command, Process};
use crate::support::stack::{spawn_stack, wait_until_published, Stack};

/// Every projection of `projections::run_all` on the stack's database, in this process; told
/// to stop when dropped.
pub struct InProcessProjector {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl InProcessProjector {
    /// Starts the projections; with `command_api`, the process manager too, sending there.
    pub fn start(stack: &Stack, command_api: Option<&str>) -> Self {
        let commands = command_api.map(|url| {
            projections::Commands::new(url, crate::support::auth::pm_credentials())
                .expect("a command client")
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(projections::run_all(
            stack.app.pool.clone(),
            stack.settings.clone(),
            commands,
            stopped,
        ));
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Tells the projections to stop and waits until they have.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for InProcessProjector {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Events a projection has not applied yet.
pub async fn unprojected(pool: &PgPool, projection: &str, aggregates: &[&str]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events e WHERE e.aggregate_type = ANY($2) AND NOT EXISTS (
             SELECT 1 FROM projection_versions v WHERE v.projection = $1
             AND v.aggregate_type = e.aggregate_type AND v.aggregate_id = e.aggregate_id AND v.version >= e.sequence)",
    )
    .bind(projection)
    .bind(aggregates.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    .fetch_one(pool)
    .await
    .expect("count unprojected")
}

/// Waits until every read model has applied every event of its aggregates.
pub async fn wait_until_projected(pool: &PgPool, timeout: Duration) {
    wait_until_models_projected(pool, |_| true, timeout).await
}

/// Waits until every read model `selected` by name has applied every event of its aggregates
/// (for a projector that runs a selection of them).
pub async fn wait_until_models_projected(
    pool: &PgPool,
    selected: impl Fn(&str) -> bool,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let models = projections::READ_MODELS
        .iter()
        .filter(|m| selected(m.name()));
    for model in models {
        let (projection, aggregates) = (model.name(), model.aggregates());
        loop {
            let left = unprojected(pool, projection, aggregates).await;
            if left == 0 {
                break;
            }
            if Instant::now() > deadline {
                let letters: Vec<String> =
                    sqlx::query_scalar("SELECT error FROM dead_letters LIMIT 5")
                        .fetch_all(pool)
                        .await
                        .unwrap_or_default();
                panic!("{projection}: {left} events not projected after {timeout:?}; dead letters: {letters:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A write stack and an in-process projector (no process manager: the load confirms and
/// refunds by itself) that has projected `customers` customers' commerce.
pub async fn projected_commerce(customers: usize) -> (Stack, InProcessProjector) {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let projector = InProcessProjector::start(&stack, None);
    commerce_load(&stack.app, customers).await;
    let pool = &stack.app.pool;
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    (stack, projector)
}

/// The value of `metric{projection="<projection>"}` on a `/metrics` page (0 when absent).
pub fn projection_counter(page: &str, metric: &str, projection: &str) -> f64 {
    let label = format!("projection=\"{projection}\"");
    crate::support::processes::metric_sum(page, metric, &[&label])
}

/// A projector process (no process manager) whose ops port is `port`.
pub fn spawn_projector_on(settings: &infra::settings::Settings, port: u16) -> Process {
    let mut command = service_command("projector", settings);
    command
        .env("APP__PROJECTOR__PROCESS_MANAGER", "false")
        .env("APP__PROJECTOR__PORT", port.to_string());
    Process::spawn(command, "a projector process")
}

/// The `/metrics` page of the service (a projector, a relay) whose ops port is `port`, once
/// it answers.
pub async fn metrics_page(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await;
        if let Ok(response) = answer {
            if let Ok(page) = response.text().await {
                return page;
            }
        }
        assert!(
            Instant::now() < deadline,
            "/metrics on port {port} never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
