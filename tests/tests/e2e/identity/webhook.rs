//! The payments webhook: HMAC-SHA256 over `"<t>.<raw body>"`, 300 s tolerance, two secrets
//! during a rotation, and a replayed `provider_event_id` acknowledged without a second write.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::{accepted, spawn_app, Answer, TestApp};
use crate::support::auth::{WEBHOOK_PREVIOUS_SECRET, WEBHOOK_SECRET};

fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    command_api::webhook::signature_header(secret, t, body)
}

async fn deliver(app: &TestApp, body: &[u8], signature: Option<&str>) -> Answer {
    let mut request = app
        .client
        .post(format!("{}/v1/webhooks/payments", app.url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("X-Signature", signature);
    }
    crate::support::app::read(request.send().await.expect("webhook request")).await
}

async fn payment(app: &TestApp) -> String {
    let (_, order) = app.user_and_order().await;
    let answer = app
        .post(
            "/v1/payments",
            json!({"order_id": order, "amount_minor": 3000, "currency": "EUR", "method": "card"}),
        )
        .await;
    accepted(&answer);
    answer.id()
}

#[tokio::test]
async fn signed_callbacks_move_the_payment_once() {
    let app = spawn_app().await;
    let payment = payment(&app).await;
    let now = chrono::Utc::now().timestamp();
    let authorized =
        serde_json::to_vec(&json!({"provider_event_id": "evt-1", "payment_id": payment,
        "type": "authorized", "amount_minor": 3000}))
        .unwrap();
    let first = deliver(
        &app,
        &authorized,
        Some(&signature(WEBHOOK_SECRET, now, &authorized)),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let events = app.event_count().await;
    // The provider retries: acknowledged, nothing written.
    let again = deliver(
        &app,
        &authorized,
        Some(&signature(WEBHOOK_SECRET, now + 5, &authorized)),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body, first.body);
    assert_eq!(app.event_count().await, events);
    // Signed with the previous secret during a rotation.
    let captured = serde_json::to_vec(&json!({"provider_event_id": "evt-2", "payment_id": payment,
        "type": "captured", "amount_minor": 3000}))
    .unwrap();
    let answer = deliver(
        &app,
        &captured,
        Some(&signature(WEBHOOK_PREVIOUS_SECRET, now, &captured)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let refunded = serde_json::to_vec(&json!({"provider_event_id": "evt-3", "payment_id": payment,
        "type": "refunded", "amount_minor": 1000}))
    .unwrap();
    let answer = deliver(
        &app,
        &refunded,
        Some(&signature(WEBHOOK_SECRET, now, &refunded)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let actors: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, metadata->>'actor' FROM events WHERE aggregate_id = $1 AND sequence > 1 ORDER BY sequence",
    )
    .bind(&payment)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let actor = "service:payments-webhook".to_owned();
    assert_eq!(
        actors,
        [
            ("PaymentAuthorized".to_owned(), actor.clone()),
            ("PaymentCaptured".to_owned(), actor.clone()),
            ("PaymentRefunded".to_owned(), actor),
        ]
    );
}

#[tokio::test]
async fn unsigned_misigned_stale_or_altered_callbacks_are_401_and_write_nothing() {
    let app = spawn_app().await;
    let payment = payment(&app).await;
    let before = app.event_count().await;
    let now = chrono::Utc::now().timestamp();
    let body = serde_json::to_vec(&json!({"provider_event_id": "evt-x", "payment_id": payment,
        "type": "authorized", "amount_minor": 3000}))
    .unwrap();
    let altered = serde_json::to_vec(&json!({"provider_event_id": "evt-x", "payment_id": payment,
        "type": "authorized", "amount_minor": 1}))
    .unwrap();
    let cases: Vec<(&str, Option<String>, &[u8])> = vec![
        ("unsigned", None, &body),
        (
            "wrong secret",
            Some(signature("another-secret", now, &body)),
            &body,
        ),
        (
            "too old",
            Some(signature(WEBHOOK_SECRET, now - 301, &body)),
            &body,
        ),
        (
            "from the future",
            // Well past the 300 s tolerance: the request may reach the server seconds after
            // `now` was taken on a busy machine, which brings a timestamp closer.
            Some(signature(WEBHOOK_SECRET, now + 330, &body)),
            &body,
        ),
        (
            "body altered",
            Some(signature(WEBHOOK_SECRET, now, &body)),
            &altered,
        ),
        ("garbage", Some("t=abc,v1=xyz".to_owned()), &body),
    ];
    for (name, signature, sent) in cases {
        let answer = deliver(&app, sent, signature.as_deref()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{name}: {}",
            answer.body
        );
        answer.assert_problem(401, "invalid-signature");
    }
    assert_eq!(app.event_count().await, before);
    // Within the tolerance is fine.
    let answer = deliver(
        &app,
        &body,
        Some(&signature(WEBHOOK_SECRET, now - 290, &body)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}
