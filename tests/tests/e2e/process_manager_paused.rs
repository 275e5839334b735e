//! The process manager with the command API it calls paused (SIGSTOP): its commands wait in
//! the outbox, no transaction waits with them, so the relay keeps publishing and unrelated
//! commands (sent through another command API instance) reach the read models while it stays
//! paused. After SIGCONT its reactions complete.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::support::app::{unique_email, TestApp};
use crate::support::commerce::paid_order;
use crate::support::kafka::shared_bootstrap;
use crate::support::processes::CommandApiProcess;
use crate::support::projector::InProcessProjector;
use crate::support::stack::spawn_stack;

/// Orders paid and captured through `app`; the process manager will want to confirm each.
async fn paid_orders(app: &TestApp, count: usize) -> Vec<String> {
    let mut orders = Vec::new();
    for _ in 0..count {
        let (order, _) = paid_order(app).await;
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

/// Registers a user through `app` and waits (a minute at most, else fails) until the users
/// read model shows it.
async fn a_new_user_becomes_visible(app: &TestApp) {
    let user = app.register(&unique_email()).await;
    let sql = format!("SELECT count(*) FROM rm_users WHERE id = '{user}'");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&app.pool, &sql).await == 0 {
        assert!(
            Instant::now() < deadline,
            "user {user} never became visible"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_command_api_does_not_hold_back_the_read_models() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let (app, pool) = (&stack.app, &stack.app.pool);
    let target = CommandApiProcess::start(&stack.settings);
    target.wait_ready().await;
    let projector = InProcessProjector::start(&stack, Some(&target.url));
    // Everything is flowing before the pause.
    a_new_user_becomes_visible(app).await;

    target.process.signal("-STOP");
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

    // New users reach the read models one after another while the command API stays paused:
    // nothing the process manager waits for holds them back (held back, none would appear
    // before the resume, which comes only after them).
    for _ in 0..3 {
        a_new_user_becomes_visible(app).await;
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
    let sent_meanwhile = count(pool, "SELECT count(*) FROM pm_outbox WHERE status = 'done'").await;
    assert_eq!(
        sent_meanwhile, 0,
        "a command reached the paused command API"
    );
    target.process.signal("-CONT");

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
             AND metadata->>'actor' = 'service:process-manager'",
    )
    .await;
    assert_eq!(
        by_pm, n,
        "each order confirmed once, by the process manager"
    );
    projector.stop().await;
    drop(target);
}
