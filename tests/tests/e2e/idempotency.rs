//! Idempotency-Key: replays return the first response and write nothing.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::app::{spawn_app, unique_email, Auth};

#[tokio::test]
async fn same_key_and_body_replays_the_first_response() {
    let app = spawn_app().await;
    let body =
        json!({"email": unique_email(), "display_name": "Once", "password": "customer-password-1"});
    let headers = [("Idempotency-Key", "register-1")];
    let first = app
        .send(Method::POST, "/v1/users", Some(body.clone()), &headers)
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = app
        .send(Method::POST, "/v1/users", Some(body.clone()), &headers)
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(app.event_count().await, 1);

    let mut other = body.clone();
    other["display_name"] = json!("Twice");
    let mismatch = app
        .send(Method::POST, "/v1/users", Some(other), &headers)
        .await;
    mismatch.assert_problem(422, "idempotency-key-reused");

    // Keys belong to a principal: another may use the same key for its own request, and an
    // `X-Actor` header does not move a request into someone else's namespace.
    let customer = app.customer().await;
    let theirs = json!({"display_name": "Other"});
    let other_actor = [
        ("Idempotency-Key", "register-1"),
        ("X-Actor", "user:00000000-0000-0000-0000-000000000000"),
    ];
    let path = format!("/v1/users/{}/profile", customer.id);
    let answer = app
        .send_as(
            Auth::Bearer(&customer.token),
            Method::POST,
            &path,
            Some(theirs),
            &other_actor,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.id(), customer.id);
    assert!(answer.headers.get("idempotent-replayed").is_none());
    assert_eq!(app.event_count().await, 3);
}

#[tokio::test]
async fn replays_of_state_changing_commands_do_not_apply_twice() {
    let app = spawn_app().await;
    let (_, order) = app.user_and_order().await;
    let path = format!("/v1/orders/{order}/confirm");
    let headers = [("Idempotency-Key", "confirm-once")];
    let first = app.send(Method::POST, &path, None, &headers).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    // Without the key the same command is refused by the state machine; with it, it replays.
    let replay = app.send(Method::POST, &path, None, &headers).await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.body, first.body);
    app.post_empty(&path)
        .await
        .assert_problem(409, "illegal-order-transition");
    assert_eq!(app.event_count().await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_commit_once() {
    let app = spawn_app().await;
    let body = json!({"email": unique_email(), "display_name": "Concurrent", "password": "customer-password-1"});
    let requests = (0..8).map(|_| {
        let app = &app;
        let body = body.clone();
        async move {
            app.send(
                Method::POST,
                "/v1/users",
                Some(body),
                &[("Idempotency-Key", "burst")],
            )
            .await
        }
    });
    let answers = join_all(requests).await;
    let first = &answers[0];
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        assert_eq!(answer.id(), first.id());
    }
    assert_eq!(app.event_count().await, 1);
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE completed")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys, 1);
}

/// A replay is the remembered outcome rendered by the route again: members the route derives
/// from the events (an order's total, a new address's id) and the ETag come back identical.
#[tokio::test]
async fn replays_render_what_the_route_derives_from_the_events() {
    let app = spawn_app().await;
    let customer = app.register(&unique_email()).await;
    let place = [("Idempotency-Key", "place-once")];
    let body = crate::support::app::order_body(&customer);
    let first = app
        .send(Method::POST, "/v1/orders", Some(body.clone()), &place)
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert!(first.body["total_minor"].as_i64().is_some_and(|t| t > 0));
    let again = app
        .send(Method::POST, "/v1/orders", Some(body), &place)
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers.get("etag"), first.headers.get("etag"));

    let path = format!("/v1/users/{customer}/addresses");
    let add = [("Idempotency-Key", "address-once")];
    let first = app
        .send(
            Method::POST,
            &path,
            Some(crate::support::app::address()),
            &add,
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = app
        .send(
            Method::POST,
            &path,
            Some(crate::support::app::address()),
            &add,
        )
        .await;
    assert_eq!(again.body, first.body);
    assert!(again.body["address_id"].is_string());
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
}
