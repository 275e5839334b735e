//! kill -9 of the command API (the real `command-api` binary) in the middle of group commits
//! under load: every acknowledged command is in the store, nothing is half-written (a
//! registration's email claim exists exactly when its event does), and after a restart the
//! read models equal a fold of the event store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::app::unique_email;
use crate::support::fold::assert_read_models_match_the_events;
use crate::support::kafka::shared_bootstrap;
use crate::support::processes::CommandApiProcess;
use crate::support::projector::wait_until_projected;
use crate::support::stack::{spawn_stack, wait_until_published};

/// Acknowledged commands: the aggregate and the version the answer carried.
type Acknowledged = Mutex<Vec<(String, i64)>>;

/// Posts `body` to `url`; the aggregate id and version of a 2xx answer, None otherwise (a
/// refused connection once the process is gone).
async fn post(client: &reqwest::Client, url: &str, body: Value) -> Option<(String, i64)> {
    let response = client
        .post(url)
        .bearer_auth(crate::support::auth::admin_token())
        .json(&body)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let answer: Value = response.json().await.ok()?;
    Some((
        answer["id"].as_str()?.to_owned(),
        answer["version"].as_i64()?,
    ))
}

/// Registers users and changes their profiles until the first failure.
async fn write(base: &str, dead: &AtomicBool, acknowledged: &Acknowledged) {
    let client = reqwest::Client::new();
    while !dead.load(Ordering::SeqCst) {
        let body = json!({"email": unique_email(), "display_name": "Killed", "password": "customer-password-1"});
        let Some((user, version)) = post(&client, &format!("{base}/v1/users"), body).await else {
            return;
        };
        acknowledged
            .lock()
            .expect("lock")
            .push((user.clone(), version));
        let path = format!("{base}/v1/users/{user}/profile");
        let Some(ack) = post(&client, &path, json!({"display_name": "Renamed"})).await else {
            return;
        };
        acknowledged.lock().expect("lock").push(ack);
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_api_killed_mid_group_commit_loses_no_acknowledged_command() {
    // The in-process stack's relay publishes; the killed process only takes commands.
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    let process = CommandApiProcess::start(&stack.settings);
    process.wait_ready().await;
    let (dead, acknowledged) = (AtomicBool::new(false), Acknowledged::default());
    let writers = join_all((0..16).map(|_| write(&process.url, &dead, &acknowledged)));
    let killer = async {
        // Mid-load: after three seconds, and once enough commands were acknowledged for the
        // check below to mean something (a busy machine, say the whole suite in parallel,
        // acknowledges fewer in three seconds).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while acknowledged.lock().expect("lock").len() <= 100
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process.process.signal("-KILL");
        dead.store(true, Ordering::SeqCst);
    };
    tokio::join!(writers, killer);
    drop(process);

    let acknowledged = acknowledged.into_inner().expect("lock");
    assert!(
        acknowledged.len() > 100,
        "only {} acknowledged",
        acknowledged.len()
    );
    for (aggregate, version) in &acknowledged {
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE aggregate_id = $1 AND sequence = $2",
        )
        .bind(aggregate)
        .bind(version)
        .fetch_one(pool)
        .await
        .expect("look up an acknowledged event");
        assert_eq!(
            stored, 1,
            "acknowledged {aggregate} v{version} is not stored"
        );
    }
    let claims_without_event = count(
        pool,
        "SELECT count(*) FROM unique_claims c WHERE NOT EXISTS (
             SELECT 1 FROM events e WHERE e.aggregate_id = c.aggregate_id AND e.sequence = 1)",
    )
    .await;
    let registrations_without_claim = count(
        pool,
        "SELECT count(*) FROM events e WHERE e.event_type = 'UserRegistered' AND NOT EXISTS (
             SELECT 1 FROM unique_claims c WHERE c.aggregate_id = e.aggregate_id)",
    )
    .await;
    assert_eq!((claims_without_event, registrations_without_claim), (0, 0));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let projector = tokio::spawn(projections::run_all(
        pool.clone(),
        stack.settings.clone(),
        None,
        stopped,
    ));
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    assert_read_models_match_the_events(pool).await;
    eprintln!(
        "command API killed after {} acknowledged commands; {} events stored",
        acknowledged.len(),
        stack.app.event_count().await
    );
    let _ = stop.send(true);
    let _ = projector.await;
}
