//! Restart cost is independent of topic length: a restarted projector resumes from the offsets
//! it stored, so it takes only what was published after it stopped off the broker.

use std::time::Duration;

use serde_json::json;

use crate::support::app::unique_email;
use crate::support::fold::assert_read_models_match_the_events;
use crate::support::kafka::shared_bootstrap;
use crate::support::processes::free_port;
use crate::support::projector::{
    metrics_page, projection_counter, spawn_projector_on, wait_until_projected,
};
use crate::support::stack::{spawn_stack, wait_until_published, Stack};

/// Registers `users` users, each with one profile change: two events on users.events each.
async fn write_users(stack: &Stack, users: usize) {
    for i in 0..users {
        let user = stack.app.register(&unique_email()).await;
        let path = format!("/v1/users/{user}/profile");
        let answer = stack
            .app
            .post(&path, json!({"display_name": format!("User {i}")}))
            .await;
        assert!(answer.status.is_success(), "{}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_projector_consumes_only_what_came_after_its_stored_offsets() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    let (before, after) = (100, 10);
    write_users(&stack, before).await;
    let first = spawn_projector_on(&stack.settings, free_port());
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    // kill -9: only what was committed (offsets with rows) survives.
    drop(first);

    write_users(&stack, after).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    let port = free_port();
    let second = spawn_projector_on(&stack.settings, port);
    wait_until_projected(pool, Duration::from_secs(60)).await;
    assert_read_models_match_the_events(pool).await;
    let page = metrics_page(port).await;
    let consumed = projection_counter(&page, "projection_messages_consumed_total", "users");
    let applied = projection_counter(&page, "projection_events_applied_total", "users");
    eprintln!(
        "users.events holds {} events; the restarted projector consumed {consumed} and applied {applied}",
        2 * (before + after)
    );
    assert_eq!(applied, (2 * after) as f64, "only the new events applied");
    assert_eq!(
        consumed,
        (2 * after) as f64,
        "the restarted projector re-read messages it had committed"
    );
    drop(second);
}
