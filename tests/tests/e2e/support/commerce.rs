//! Customer flows of several commands: [`paid_order`] (an order paid and captured) and
//! [`commerce_load`] (many customers ordering, paying, cancelling and shipping at once).

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::app::{
    accepted, order_body, registration, unique_email, Answer, Auth, TestApp,
};

/// Users who order and pay; some orders are cancelled (with refunds), some shipped. Every
/// command is sent as a client under load would send it (see [`post_until_taken`]).
pub async fn commerce_load(app: &TestApp, customers: usize) {
    let flows = (0..customers).map(|i| async move {
        let taken = |auth, path: String, body: Value| async move {
            let answer = post_until_taken(app, auth, &path, body).await;
            assert!(answer.status.is_success(), "{path}: {}", answer.body);
            answer
        };
        let user = taken(
            Auth::Anonymous,
            "/v1/users".into(),
            registration(&unique_email()),
        )
        .await
        .id();
        let order = taken(Auth::Admin, "/v1/orders".into(), order_body(&user))
            .await
            .id();
        let payment = taken(
            Auth::Admin,
            "/v1/payments".into(),
            json!({"order_id": order, "amount_minor": 3000, "currency": "EUR", "method": "card"}),
        )
        .await
        .id();
        let mut steps: Vec<(String, Value)> = vec![
            (
                format!("/v1/payments/{payment}/authorize"),
                json!({"amount_minor": 3000}),
            ),
            (
                format!("/v1/payments/{payment}/capture"),
                json!({"amount_minor": 3000}),
            ),
            (format!("/v1/orders/{order}/confirm"), json!({})),
        ];
        if i % 3 == 0 {
            steps.extend([
                (
                    format!("/v1/orders/{order}/cancel"),
                    json!({"reason": "changed mind"}),
                ),
                (
                    format!("/v1/payments/{payment}/refund"),
                    json!({"amount_minor": 3000, "reason": "cancelled"}),
                ),
            ]);
        } else {
            steps.extend([
                (format!("/v1/orders/{order}/start-processing"), json!({})),
                (
                    format!("/v1/orders/{order}/ship"),
                    json!({"carrier": "DHL", "tracking_number": format!("T{i}")}),
                ),
            ]);
        }
        steps.push((
            format!("/v1/users/{user}/profile"),
            json!({"display_name": format!("Customer {i}")}),
        ));
        for (path, body) in steps {
            taken(Auth::Admin, path, body).await;
        }
    });
    // At most 32 flows at once: the whole load at once (250 customers in the kill test) queued
    // its commands past the pool's acquire timeout on a machine as slow as CI, where most of
    // them were refused with 503s, and no client would send that way.
    futures::stream::iter(flows)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// `POST path` as `auth` under an idempotency key of its own, sent again with the same key
/// (for up to two minutes) while the command API answers 503, or 504 `request-timeout`: as
/// its problems ask. With the whole suite pinned to one core, the load's commands held every
/// connection of the pool past its acquire timeout ("the database is unavailable; nothing was
/// written, retry later"), and 250 registrations at once, each hashing a password, outlasted
/// the 30 s request timeout ("its outcome is unknown, retry it with the same Idempotency-Key").
async fn post_until_taken(app: &TestApp, auth: Auth<'_>, path: &str, body: Value) -> Answer {
    let key = Uuid::new_v4().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut backoff = Duration::from_secs(1);
    loop {
        let answer = app
            .send_as(
                auth,
                Method::POST,
                path,
                Some(body.clone()),
                &[("Idempotency-Key", &key)],
            )
            .await;
        let retry = answer.status == StatusCode::SERVICE_UNAVAILABLE
            || (answer.status == StatusCode::GATEWAY_TIMEOUT
                && answer.body["type"] == "/problems/request-timeout");
        if !retry || Instant::now() >= deadline {
            return answer;
        }
        // Backing off (1 s doubling to 8 s), as a client should: retries every second kept an
        // overloaded pool overloaded.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(8));
    }
}

/// Registers, orders and pays 3000 (captured); returns the order and payment ids.
pub async fn paid_order(app: &TestApp) -> (String, String) {
    let (order, payment) = authorized_payment(app).await;
    accepted(
        &app.post(
            &format!("/v1/payments/{payment}/capture"),
            json!({"amount_minor": 3000}),
        )
        .await,
    );
    (order, payment)
}

/// Registers, orders and authorizes a payment of 3000 (not captured); returns the order and
/// payment ids.
pub async fn authorized_payment(app: &TestApp) -> (String, String) {
    let (_, order) = app.user_and_order().await;
    let payment = app
        .post(
            "/v1/payments",
            json!({"order_id": order, "amount_minor": 3000, "currency": "EUR", "method": "card"}),
        )
        .await
        .id();
    accepted(
        &app.post(
            &format!("/v1/payments/{payment}/authorize"),
            json!({"amount_minor": 3000}),
        )
        .await,
    );
    (order, payment)
}
