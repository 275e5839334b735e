//! Order routes: the life cycle, forbidden transitions, 404s and If-Match.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::app::{order_body, spawn_app, unique_email};

#[tokio::test]
async fn place_order_computes_the_total() {
    let app = spawn_app().await;
    let user = app.register(&unique_email()).await;
    let placed = app.place_order(&user).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
    assert_eq!(placed.body["total_minor"], 3000);
    assert_eq!(placed.version(), 1);
}

#[tokio::test]
async fn place_order_needs_an_active_customer_and_valid_items() {
    let app = spawn_app().await;
    let unknown = app.place_order(&uuid::Uuid::now_v7().to_string()).await;
    unknown.assert_problem(422, "validation-failed");
    assert_eq!(unknown.error_fields(), ["customer_id"]);

    let user = app.register(&unique_email()).await;
    let mut body = order_body(&user);
    body["items"] = json!([]);
    let empty = app.post("/v1/orders", body.clone()).await;
    empty.assert_problem(422, "order-without-items");
    assert_eq!(empty.error_fields(), ["items"]);
    body["items"] = json!([
        {"sku": "A", "quantity": 1, "unit_price_minor": 1},
        {"sku": "A", "quantity": 2, "unit_price_minor": 1}
    ]);
    let duplicate = app.post("/v1/orders", body).await;
    duplicate.assert_problem(422, "duplicate-sku");
    assert_eq!(duplicate.error_fields(), ["items[1].sku"]);
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn the_life_cycle_runs_to_delivery_and_then_stops() {
    let app = spawn_app().await;
    let (_, order) = app.user_and_order().await;
    let base = format!("/v1/orders/{order}");
    let steps = [
        ("confirm", None),
        ("start-processing", None),
        (
            "ship",
            Some(json!({"carrier": "DHL", "tracking_number": "JD0001"})),
        ),
        ("deliver", None),
    ];
    for (expected_version, (step, body)) in (2..).zip(steps) {
        let answer = app
            .send(Method::POST, &format!("{base}/{step}"), body, &[])
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{step}: {}", answer.body);
        assert_eq!(answer.version(), expected_version, "{step}");
    }
    let cancel = app
        .post(&format!("{base}/cancel"), json!({"reason": "too late"}))
        .await;
    cancel.assert_problem(409, "illegal-order-transition");
    assert!(cancel.body["detail"]
        .as_str()
        .unwrap()
        .contains("delivered"));
}

#[tokio::test]
async fn forbidden_transitions_are_409_and_write_nothing() {
    let app = spawn_app().await;
    let (_, order) = app.user_and_order().await;
    let base = format!("/v1/orders/{order}");
    let before = app.event_count().await;
    let ship = app
        .post(
            &format!("{base}/ship"),
            json!({"carrier": "DHL", "tracking_number": "X1"}),
        )
        .await;
    ship.assert_problem(409, "illegal-order-transition");
    app.post_empty(&format!("{base}/deliver"))
        .await
        .assert_problem(409, "illegal-order-transition");
    let cancelled = app
        .post(&format!("{base}/cancel"), json!({"reason": "changed mind"}))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK);
    app.post_empty(&format!("{base}/confirm"))
        .await
        .assert_problem(409, "illegal-order-transition");
    assert_eq!(app.event_count().await, before + 1);
}

#[tokio::test]
async fn every_order_command_on_a_never_placed_order_is_404() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7();
    let commands = [
        ("confirm", None),
        ("start-processing", None),
        (
            "ship",
            Some(json!({"carrier": "DHL", "tracking_number": "T"})),
        ),
        ("deliver", None),
        ("cancel", Some(json!({"reason": "r"}))),
    ];
    for (step, body) in commands {
        app.send(Method::POST, &format!("/v1/orders/{id}/{step}"), body, &[])
            .await
            .assert_problem(404, "order-not-found");
    }
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn if_match_guards_the_expected_version() {
    let app = spawn_app().await;
    let (_, order) = app.user_and_order().await;
    let confirm = format!("/v1/orders/{order}/confirm");
    let stale = app
        .send(Method::POST, &confirm, None, &[("If-Match", "\"7\"")])
        .await;
    stale.assert_problem(409, "version-conflict");
    assert_eq!(stale.body["current_version"], 1);
    let fresh = app
        .send(Method::POST, &confirm, None, &[("If-Match", "\"1\"")])
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
    assert_eq!(fresh.headers.get("etag").unwrap(), "\"2\"");
    let bad = app
        .send(Method::POST, &confirm, None, &[("If-Match", "soon")])
        .await;
    bad.assert_problem(400, "bad-header");
}
