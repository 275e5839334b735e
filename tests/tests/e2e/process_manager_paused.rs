//! The process manager with the command API it calls paused (SIGSTOP): its commands wait in
//! the outbox, no transaction waits with them, so the relay keeps publishing and unrelated
//! commands (sent through another command API instance) stay visible in the read models
//! within seconds. After SIGCONT its reactions complete.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use infra::secrecy::ExposeSecret;
use infra::settings::Settings;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::helpers::{unique_email, TestApp};
use crate::kafka::{free_port, shared_bootstrap, spawn_stack};

/// How long the process manager's command API stays stopped.
const PAUSE: Duration = Duration::from_secs(20);
/// The longest an unrelated command may take to reach the read models meanwhile.
const VISIBLE_WITHIN: Duration = Duration::from_secs(5);

/// A `command-api` process of this test (relay off), ended by its pid when dropped.
pub struct CommandApiProcess {
    child: Child,
    pub url: String,
}

impl CommandApiProcess {
    pub fn start(settings: &Settings) -> Self {
        let exe = std::env::current_exe().expect("test binary path");
        let binary = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .join("command-api");
        assert!(
            binary.exists(),
            "{} missing: run `cargo build --bins` (make test does)",
            binary.display()
        );
        let port = free_port();
        let child = Command::new(binary)
            .env("APP__DATABASE__URL", settings.database.url.expose_secret())
            .env("APP__DATABASE__MIGRATE_ON_START", "false")
            .env("APP__RELAY__ENABLED", "false")
            .env("APP__COMMAND_API__PORT", port.to_string())
            .env(
                "APP__KAFKA__BOOTSTRAP_SERVERS",
                &settings.kafka.bootstrap_servers,
            )
            .env("APP__KAFKA__TOPIC_PREFIX", &settings.kafka.topic_prefix)
            .env("APP__SCHEMA_REGISTRY__URL", &settings.schema_registry.url)
            .env("APP__LOG__FILTER", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a command-api process");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client.get(format!("{}/readyz", self.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the command API process never got ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} failed");
    }
}

impl Drop for CommandApiProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Orders paid and captured through `app`; the process manager will want to confirm each.
async fn paid_orders(app: &TestApp, count: usize) -> Vec<String> {
    let mut orders = Vec::new();
    for _ in 0..count {
        let (_, order) = app.user_and_order().await;
        let payment = app
            .post(
                "/v1/payments",
                json!({"order_id": order, "amount_minor": 3000, "currency": "EUR", "method": "card"}),
            )
            .await
            .id();
        for step in ["authorize", "capture"] {
            let answer = app
                .post(
                    &format!("/v1/payments/{payment}/{step}"),
                    json!({"amount_minor": 3000}),
                )
                .await;
            assert!(answer.status.is_success(), "{}", answer.body);
        }
        orders.push(order);
    }
    orders
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn wait_for(pool: &PgPool, sql: &str, at_least: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while count(pool, sql).await < at_least {
        assert!(Instant::now() < deadline, "never reached {at_least}: {sql}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers a user through `app` and returns how long until the users read model shows it.
async fn visibility_of_a_new_user(app: &TestApp) -> Duration {
    let started = Instant::now();
    let user = app.register(&unique_email()).await;
    let sql = format!("SELECT count(*) FROM rm_users WHERE id = '{user}'");
    let deadline = started + Duration::from_secs(60);
    while count(&app.pool, &sql).await == 0 {
        assert!(
            Instant::now() < deadline,
            "user {user} never became visible"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_command_api_does_not_hold_back_the_read_models() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let (app, pool) = (&stack.app, &stack.app.pool);
    let target = CommandApiProcess::start(&stack.settings);
    target.wait_ready().await;
    let commands = projections::Commands::new(&target.url).expect("command client");
    let (stop, stopped) = watch::channel(false);
    let projector = tokio::spawn(projections::run_all(
        pool.clone(),
        stack.settings.clone(),
        Some(commands),
        stopped,
    ));
    // Everything is flowing before the pause.
    visibility_of_a_new_user(app).await;

    target.signal("-STOP");
    let paused_at = Instant::now();
    let orders = paid_orders(app, 5).await;
    let n = orders.len() as i64;
    // The process manager has decided, and its dispatcher is stuck sending.
    wait_for(
        pool,
        "SELECT count(*) FROM pm_outbox WHERE kind = 'confirm_order'",
        n,
        Duration::from_secs(30),
    )
    .await;
    wait_for(
        pool,
        "SELECT count(*) FROM pm_outbox WHERE attempts > 0",
        1,
        Duration::from_secs(10),
    )
    .await;

    let mut slowest = Duration::ZERO;
    while paused_at.elapsed() + Duration::from_secs(2) < PAUSE {
        slowest = slowest.max(visibility_of_a_new_user(app).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let confirmed_meanwhile = count(
        pool,
        "SELECT count(*) FROM rm_orders WHERE status = 'confirmed'",
    )
    .await;
    assert_eq!(
        confirmed_meanwhile, 0,
        "the paused command API confirmed orders"
    );
    assert!(
        slowest <= VISIBLE_WITHIN,
        "with the process manager's command API paused, a new user took {slowest:?} to appear"
    );
    tokio::time::sleep(PAUSE.saturating_sub(paused_at.elapsed())).await;
    target.signal("-CONT");

    // The reactions complete: every paid order confirmed, every command settled.
    wait_for(
        pool,
        "SELECT count(*) FROM rm_orders WHERE status = 'confirmed'",
        n,
        Duration::from_secs(90),
    )
    .await;
    wait_for(
        pool,
        "SELECT count(*) FROM pm_outbox WHERE status = 'done'",
        n,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM pm_outbox WHERE status <> 'done'"
        )
        .await,
        0
    );
    let by_pm = count(
        pool,
        "SELECT count(*) FROM events WHERE event_type = 'OrderConfirmed'
             AND metadata->>'actor' = 'process-manager'",
    )
    .await;
    assert_eq!(
        by_pm, n,
        "each order confirmed once, by the process manager"
    );
    let _ = stop.send(true);
    let _ = projector.await;
    drop(target);
}
