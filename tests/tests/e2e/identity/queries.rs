//! The query API's rules end to end: with two customers, every single-resource and list read
//! of another's things is answered as if it did not exist; staff reads are 403 for customers.

use infra::auth::{Principal, Role, Subject};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::{order_body, Auth};
use crate::support::auth::mint;
use crate::support::query::spawn_read_stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customers_read_only_their_own_things_and_staff_reads_are_staff_only() {
    let read = spawn_read_stack(|_| {}).await;
    let app = &read.stack.app;
    let query = &read.query;
    let alice = app.customer().await;
    let bob = app.customer().await;
    let order = app
        .post_as(
            Auth::Bearer(&alice.token),
            "/v1/orders",
            order_body(&alice.id),
        )
        .await;
    assert_eq!(order.status, StatusCode::CREATED, "{}", order.body);
    let order = order.id();
    let payment = app
        .post_as(
            Auth::Bearer(&alice.token),
            "/v1/payments",
            json!({"order_id": order, "amount_minor": 3000, "currency": "EUR", "method": "card"}),
        )
        .await;
    let payment_version = payment.version();
    let payment = payment.id();
    // Visible to staff first, so that bob's 404s below are not just "not projected yet".
    query
        .at_least(&format!("/v1/payments/{payment}"), payment_version)
        .await;
    query.at_least(&format!("/v1/orders/{order}"), 1).await;
    query.at_least(&format!("/v1/users/{}", alice.id), 1).await;

    let owned = [
        format!("/v1/users/{}", alice.id),
        format!("/v1/orders/{order}"),
        format!("/v1/payments/{payment}"),
        format!("/v1/orders/{order}/payments"),
        format!("/v1/users/{}/orders", alice.id),
    ];
    let missing = [
        format!("/v1/users/{}", uuid::Uuid::now_v7()),
        format!("/v1/orders/{}", uuid::Uuid::now_v7()),
        format!("/v1/payments/{}", uuid::Uuid::now_v7()),
        format!("/v1/orders/{}/payments", uuid::Uuid::now_v7()),
        format!("/v1/users/{}/orders", uuid::Uuid::now_v7()),
    ];
    for (mine, nobodys) in owned.iter().zip(&missing) {
        let own = query.get_as(Some(&alice.token), mine, &[]).await;
        assert_eq!(own.status, StatusCode::OK, "{mine}: {}", own.body);
        let theirs = query.get_as(Some(&bob.token), mine, &[]).await;
        let absent = query.get_as(Some(&bob.token), nobodys, &[]).await;
        assert_eq!(theirs.status, absent.status, "{mine}: {}", theirs.body);
        assert_eq!(theirs.body["type"], absent.body["type"], "{mine}");
        assert!(
            theirs.status == StatusCode::NOT_FOUND,
            "{mine}: {}",
            theirs.body
        );
        // With min_version too: at once, the same answer, no hint of a version.
        let waited = query
            .get_as(Some(&bob.token), &format!("{mine}?min_version=1"), &[])
            .await;
        if !mine.ends_with("/payments") && !mine.ends_with("/orders") {
            assert_eq!(
                waited.status,
                StatusCode::NOT_FOUND,
                "{mine}: {}",
                waited.body
            );
        }
    }
    // Conditional reads do not leak either.
    let etag = query
        .get_as(Some(&alice.token), &owned[1], &[])
        .await
        .headers["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let conditional = query
        .get_as(Some(&bob.token), &owned[1], &[("If-None-Match", &etag)])
        .await;
    assert_eq!(conditional.status, StatusCode::NOT_FOUND);

    let support = mint(&Principal::new(
        Subject::User(uuid::Uuid::now_v7()),
        [Role::Customer, Role::Support],
    ));
    let staff_only = [
        format!("/v1/users?email={}", alice.email),
        "/v1/analytics/revenue?from=2026-01-01&to=2026-12-31&currency=EUR".to_owned(),
        "/v1/analytics/order-funnel?from=2026-01-01&to=2026-12-31".to_owned(),
        format!("/v1/audit/order/{order}"),
    ];
    for path in &staff_only {
        query
            .get_as(Some(&alice.token), path, &[])
            .await
            .assert_problem(403, "forbidden");
        let answer = query.get_as(Some(&support), path, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
    }
    for path in owned.iter() {
        let answer = query.get_as(Some(&support), path, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
    }
}
