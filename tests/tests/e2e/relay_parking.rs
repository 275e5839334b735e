//! One event the relay cannot encode is parked, counted and logged; it never stops the relay.

use std::time::Duration;

use serde_json::json;

use crate::support::app::unique_email;
use crate::support::database::insert_user_registered;
use crate::support::kafka::shared_bootstrap;
use crate::support::stack::{spawn_stack, wait_until_published};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unencodable_event_is_parked_and_later_events_are_still_published() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    let id = uuid::Uuid::now_v7();
    // A payload that does not fit the UserRegistered schema (the email is a number).
    let payload =
        json!({"type": "UserRegistered", "email": 5, "display_name": "Bad", "roles": ["customer"]});
    let metadata = json!({"event_id": id.to_string(), "occurred_at": "2026-11-23T00:00:00Z", "actor": "test",
        "correlation_id": "c", "causation_id": "c", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"});
    insert_user_registered(pool, id, payload, metadata).await;
    stack.app.register(&unique_email()).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    let parked: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT event_id, error FROM relay_parked_events")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].0, id);
    assert!(!parked[0].1.is_empty());
}
