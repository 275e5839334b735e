//! `min_version` waits are bounded: an aggregate that does not exist is answered at once, and
//! past the cap on waiting reads a read is refused with `Retry-After` instead of queueing.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::app::{spawn_app_on, unique_email};
use crate::support::database::TestDatabase;
use crate::support::query::spawn_query_api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_that_cannot_succeed_are_answered_at_once_and_waiters_are_capped() {
    let db = TestDatabase::create().await;
    let mut settings = db.settings();
    settings.query_api.max_wait_ms = 6000;
    settings.query_api.max_version_waiters = 1;
    // No projector runs: the read model never catches up with the event store.
    let app = spawn_app_on(db, settings.clone()).await;
    let query = spawn_query_api(&settings).await;
    let user = app.register(&unique_email()).await;

    // The user exists but is not projected: its reads wait (bounded), at most one at a time.
    let url = format!("{}/v1/users/{user}?min_version=1", query.url);
    let token = crate::support::auth::admin_token();
    let waiting = tokio::spawn(async move {
        let client = reqwest::Client::new();
        client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    });
    // Long enough for the spawned read to take the one waiting place, well within its wait.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // A read of an aggregate the store lacks does not wait: with the one waiting place taken,
    // it is answered 404, not refused for want of a place.
    let missing = query
        .get(&format!("/v1/users/{}?min_version=1", uuid::Uuid::now_v7()))
        .await;
    missing.assert_problem(404, "not-found");
    let refused = query.get(&format!("/v1/users/{user}?min_version=1")).await;
    refused.assert_problem(503, "too-many-waiters");
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(waiting.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
}
