//! The relay: everything committed reaches Kafka, once in effect, in per-aggregate order,
//! whatever happens to transactions, the broker or the relay itself.

use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::support::app::{unique_email, TestApp};
use crate::support::database::{database_url, insert_user_registered, TestDatabase};
use crate::support::kafka::{shared_bootstrap, Broker};
use crate::support::processes::{free_port, metric_line, metric_sum, spawn_relay};
use crate::support::stack::{
    spawn_stack, stack_without_relay, unpublished, verify_log, wait_until_published, Stack,
};

/// `writers` concurrent clients, `per_writer` commands each: registrations, profile changes
/// and orders. Every command must succeed.
async fn write_load(app: &TestApp, writers: usize, per_writer: usize) {
    let tasks = (0..writers).map(|_| async move {
        let mut user = app.register(&unique_email()).await;
        for i in 0..per_writer {
            let answer = match i % 3 {
                0 => {
                    user = app.register(&unique_email()).await;
                    continue;
                }
                1 => {
                    app.post(
                        &format!("/v1/users/{user}/profile"),
                        json!({"display_name": format!("n{i}")}),
                    )
                    .await
                }
                _ => app.place_order(&user).await,
            };
            assert!(answer.status.is_success(), "{}", answer.body);
        }
    });
    join_all(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_land_exactly_the_events_table_on_the_topics() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    write_load(&stack.app, 8, 300).await;
    wait_until_published(&stack.app.pool, Duration::from_secs(120)).await;
    let events = stack.app.event_count().await as usize;
    assert!(events >= 2400, "{events}");
    let messages = verify_log(&stack, events).await;
    assert_eq!(
        messages.len(),
        events,
        "a clean run publishes every event exactly once"
    );
}

async fn insert_raw(conn: &mut PgConnection) {
    let id = uuid::Uuid::now_v7();
    let payload = json!({"type": "UserRegistered", "email": unique_email(), "display_name": "Raw", "roles": ["customer"]});
    let metadata = json!({"event_id": id.to_string(), "occurred_at": "2026-11-23T00:00:00Z", "actor": "test",
        "correlation_id": "c", "causation_id": "c", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"});
    insert_user_registered(conn, id, payload, metadata).await;
}

async fn connect(stack: &Stack) -> PgConnection {
    PgConnection::connect(&stack.database_url())
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_order_rollbacks_and_idle_transactions_lose_nothing() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    let (_, metrics_before) = stack.app.get("/metrics").await;
    // The relay publishes (else "B waits" below would hold for a relay not started yet).
    stack.app.register(&unique_email()).await;
    wait_until_published(pool, Duration::from_secs(30)).await;
    // A takes the lower position, B the higher; B commits first.
    let mut a = connect(&stack).await;
    let mut b = connect(&stack).await;
    sqlx::query("BEGIN").execute(&mut a).await.unwrap();
    insert_raw(&mut a).await;
    sqlx::query("BEGIN").execute(&mut b).await.unwrap();
    insert_raw(&mut b).await;
    sqlx::query("COMMIT").execute(&mut b).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        unpublished(pool).await,
        1,
        "B must wait for the older open transaction A"
    );
    sqlx::query("COMMIT").execute(&mut a).await.unwrap();
    wait_until_published(pool, Duration::from_secs(30)).await;

    // A rolled-back insert leaves a hole in the positions; the relay goes past it.
    let mut c = connect(&stack).await;
    sqlx::query("BEGIN").execute(&mut c).await.unwrap();
    insert_raw(&mut c).await;
    sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
    stack.app.register(&unique_email()).await;
    wait_until_published(pool, Duration::from_secs(30)).await;

    // An idle transaction with an id delays publication but loses nothing.
    let mut idle = connect(&stack).await;
    sqlx::query("BEGIN").execute(&mut idle).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut idle)
        .await
        .unwrap();
    stack.app.register(&unique_email()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        unpublished(pool).await,
        1,
        "an open older transaction holds the relay back"
    );
    sqlx::query("COMMIT").execute(&mut idle).await.unwrap();
    wait_until_published(pool, Duration::from_secs(30)).await;

    let messages = verify_log(&stack, 5).await;
    assert_eq!(messages.len(), 5);

    // The relay's metrics are on the command API's /metrics. (The recorder is process-wide:
    // other relays of this test binary count too, so the count of published events is
    // compared with the one before, and the gauges are only looked for.)
    let (_, metrics) = stack.app.get("/metrics").await;
    let published = metric_sum(&metrics, "relay_events_published_total", &[])
        - metric_sum(&metrics_before, "relay_events_published_total", &[]);
    assert!(published >= 5.0, "{published} published: {metrics}");
    for name in ["relay_lag_events", "relay_lag_seconds", "relay_active"] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_succeed_while_the_broker_is_down_and_the_relay_catches_up() {
    let mut broker = Broker::start();
    let stack = spawn_stack(&broker.bootstrap(), |_| {}).await;
    write_load(&stack.app, 4, 30).await;
    wait_until_published(&stack.app.pool, Duration::from_secs(60)).await;
    broker.stop();
    // Writes do not depend on the broker.
    write_load(&stack.app, 4, 30).await;
    assert!(unpublished(&stack.app.pool).await > 0);
    broker.restart();
    wait_until_published(&stack.app.pool, Duration::from_secs(120)).await;
    let events = stack.app.event_count().await as usize;
    verify_log(&stack, events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_killed_mid_batch_loses_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stack = stack_without_relay().await;
    let mut relay = spawn_relay(&stack.settings, free_port());
    let written = AtomicBool::new(false);
    let writing = async {
        write_load(&stack.app, 4, 150).await;
        written.store(true, Ordering::SeqCst);
    };
    // Each kill comes right after the relay moved its checkpoint (so it lands while the relay
    // works: a batch read, sent or awaiting its acknowledgements), for as long as the load runs.
    let checkpoint = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(max(global_position), 0) FROM relay_checkpoints",
        )
        .fetch_one(&stack.app.pool)
        .await
        .unwrap()
    };
    let killing = async {
        let mut kills = 0;
        while !written.load(Ordering::SeqCst) {
            let at = checkpoint().await;
            while checkpoint().await <= at && !written.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if checkpoint().await > at {
                relay.kill();
                relay = spawn_relay(&stack.settings, free_port());
                kills += 1;
            }
        }
        kills
    };
    let ((), kills) = tokio::join!(writing, killing);
    assert!(kills >= 1, "no kill landed while the relay published");
    eprintln!("the relay was killed {kills} times while it published");
    wait_until_published(&stack.app.pool, Duration::from_secs(120)).await;
    let events = stack.app.event_count().await as usize;
    // Duplicates are allowed here; verify_log checks each carries the same event id.
    verify_log(&stack, events).await;
    relay.kill();
}

/// A host that drops its relay handle without stopping it (a test's service dropped with its
/// runtime, a panicking startup) must not leave the relay running: it once kept retrying its
/// database in a tight loop for the rest of the process, here with the database gone, as a
/// test's database is after the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_whose_every_handle_is_dropped_stops() {
    let db = TestDatabase::create().await;
    let mut settings = db.settings();
    settings.relay.enabled = true;
    let absent = format!("absent_{}", uuid::Uuid::new_v4().simple());
    settings.database.url = database_url(&absent).into();
    let pool = infra::db::pool(&settings.database).expect("pool");
    let (handle, thread) = relay::Relay::new(pool, settings).spawn();
    // Let it fail a few times first, as it would with its database dropped under it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(handle);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !thread.is_finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        thread.is_finished(),
        "the relay kept running 15 s after its last handle was dropped"
    );
    thread.join().expect("the relay thread panicked");
}

async fn relay_active(client: &reqwest::Client, port: u16) -> Option<bool> {
    metric_line(
        client,
        &format!("http://127.0.0.1:{port}"),
        "relay_active 1",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_one_relay_publishes_and_another_takes_over() {
    let stack = stack_without_relay().await;
    let ports = [free_port(), free_port()];
    let mut relays = [
        spawn_relay(&stack.settings, ports[0]),
        spawn_relay(&stack.settings, ports[1]),
    ];
    write_load(&stack.app, 2, 30).await;
    wait_until_published(&stack.app.pool, Duration::from_secs(60)).await;
    let client = reqwest::Client::new();
    let mut states = Vec::new();
    for port in ports {
        states.push(relay_active(&client, port).await.unwrap_or(false));
    }
    assert_eq!(
        states.iter().filter(|active| **active).count(),
        1,
        "exactly one relay is active: {states:?}"
    );
    let active = states.iter().position(|a| *a).unwrap_or(0);
    relays[active].kill();
    write_load(&stack.app, 2, 30).await;
    wait_until_published(&stack.app.pool, Duration::from_secs(60)).await;
    let standby = 1 - active;
    assert_eq!(
        relay_active(&client, ports[standby]).await,
        Some(true),
        "the standby took over"
    );
    let events = stack.app.event_count().await as usize;
    verify_log(&stack, events).await;
    relays[standby].kill();
}

/// The relay's lag is counted exactly up to 100,000 pending events (counting stays cheap that
/// far) and estimated past it from the global positions given out since the checkpoint, so a
/// backlog larger than the cap reads as its size, not as the cap. Before, the gauge stopped at
/// 100,000 whatever the backlog.
#[tokio::test]
async fn a_relay_lag_past_the_counted_cap_reads_as_the_backlog() {
    let db = TestDatabase::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    infra::db::migrate(&pool).await.unwrap();
    let backlog = relay::tail::LAG_COUNTED + 2_345;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, event_id)
         SELECT 'user', 'u' || n, 1, 'UserRegistered', '1', '{}', '{}', gen_random_uuid()
         FROM generate_series(1, $1) AS n",
    )
    .bind(backlog)
    .execute(&pool)
    .await
    .unwrap();
    let start = relay::tail::Checkpoint {
        tx_id: 0,
        global_position: 0,
    };
    let (pending, age) = relay::tail::lag(&pool, &start).await.unwrap();
    assert_eq!(pending, backlog);
    assert!(age > 0.0, "the backlog's oldest event has an age: {age}");
    // Below the cap the count is exact: ten events after this one.
    let (tx_id, global_position): (String, i64) = sqlx::query_as(
        "SELECT tx_id::text, global_position FROM events ORDER BY global_position DESC
         OFFSET 10 LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let near_the_end = relay::tail::Checkpoint {
        tx_id: tx_id.parse().unwrap(),
        global_position,
    };
    assert_eq!(relay::tail::lag(&pool, &near_the_end).await.unwrap().0, 10);
    pool.close().await;
}
