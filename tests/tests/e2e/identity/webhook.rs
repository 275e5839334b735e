//! The payments webhook: HMAC-SHA256 over `"<t>.<raw body>"`, 300 s tolerance, two secrets
//! during a rotation, and a replayed `provider_event_id` acknowledged without a second write,
//! however much later and however the provider serialises it again.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::{spawn_app, Answer, TestApp};
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

/// Delivers `body` signed with the current secret, now.
async fn signed(app: &TestApp, body: &[u8]) -> Answer {
    let now = chrono::Utc::now().timestamp();
    deliver(app, body, Some(&signature(WEBHOOK_SECRET, now, body))).await
}

/// A callback's body.
fn callback(id: &str, payment: &str, kind: &str, amount_minor: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({"provider_event_id": id, "payment_id": payment,
        "type": kind, "amount_minor": amount_minor}))
    .unwrap()
}

#[tokio::test]
async fn signed_callbacks_move_the_payment_once() {
    let app = spawn_app().await;
    let payment = app.payment().await;
    let now = chrono::Utc::now().timestamp();
    let authorized = callback("evt-1", &payment, "authorized", 3000);
    let first = signed(&app, &authorized).await;
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
    let captured = callback("evt-2", &payment, "captured", 3000);
    let answer = deliver(
        &app,
        &captured,
        Some(&signature(WEBHOOK_PREVIOUS_SECRET, now, &captured)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let refunded = callback("evt-3", &payment, "refunded", 1000);
    let answer = signed(&app, &refunded).await;
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
    let payment = app.payment().await;
    let before = app.event_count().await;
    let now = chrono::Utc::now().timestamp();
    let body = callback("evt-x", &payment, "authorized", 3000);
    let altered = callback("evt-x", &payment, "authorized", 1);
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

#[tokio::test]
async fn a_provider_event_is_applied_once_after_the_key_ttl_and_in_any_serialisation() {
    let app = spawn_app().await;
    let payment = app.payment().await;
    let mut answers = Vec::new();
    for (id, kind, amount) in [
        ("evt-t1", "authorized", 3000),
        ("evt-t2", "captured", 3000),
        ("evt-t3", "refunded", 1000),
    ] {
        let answer = signed(&app, &callback(id, &payment, kind, amount)).await;
        assert_eq!(answer.status, StatusCode::OK, "{kind}: {}", answer.body);
        answers.push(answer.body);
    }
    let events = app.event_count().await;
    // An ordinary key, a person's, to show that those still expire.
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash, completed, outcome)
         VALUES ('user:someone', 'an-ordinary-key', '', true, 'null')",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    // Days later, past the idempotency TTL (24 h here), and after the expiry task ran: the
    // provider retries the refund, signed afresh. It was refunded once; it stays so.
    app.age_idempotency_keys(None).await;
    let refund = callback("evt-t3", &payment, "refunded", 1000);
    let later = signed(&app, &refund).await;
    assert_eq!(later.status, StatusCode::OK, "{}", later.body);
    assert_eq!(later.body, answers[2]);
    assert_eq!(app.event_count().await, events);

    // The same event serialised again (other key order, whitespace, the id in capitals): a
    // replay too.
    let reserialised = format!(
        "{{ \"type\": \"refunded\",\n  \"amount_minor\": 1000, \"payment_id\": \"{}\", \"provider_event_id\": \"evt-t3\" }}",
        payment.to_uppercase()
    );
    let again = signed(&app, reserialised.as_bytes()).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body, answers[2]);
    assert_eq!(app.event_count().await, events);

    // The same event id saying something else is not a replay: refused, nothing written.
    let other = callback("evt-t3", &payment, "refunded", 500);
    let answer = signed(&app, &other).await;
    answer.assert_problem(422, "idempotency-key-reused");
    assert_eq!(app.event_count().await, events);

    // A callback recorded before keys were bound to what a callback says was bound to the
    // digest of its raw body (SHA-256 over the operation's digest and the body's): the same
    // bytes sent again are still a replay.
    let capture = callback("evt-t2", &payment, "captured", 3000);
    sqlx::query(
        "UPDATE idempotency_keys
         SET request_hash = sha256(sha256('POST /v1/webhooks/payments'::bytea) || sha256($1))
         WHERE key = 'evt-t2'",
    )
    .bind(&capture)
    .execute(&app.pool)
    .await
    .unwrap();
    let recorded_before = signed(&app, &capture).await;
    assert_eq!(
        recorded_before.status,
        StatusCode::OK,
        "{}",
        recorded_before.body
    );
    assert_eq!(recorded_before.body, answers[1]);
    assert_eq!(app.event_count().await, events);

    let left: Vec<String> = sqlx::query_scalar(
        "SELECT key FROM idempotency_keys WHERE key IN ('an-ordinary-key', 'evt-t1', 'evt-t2', 'evt-t3') ORDER BY key",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(left, ["evt-t1", "evt-t2", "evt-t3"]);
}

/// A signed callback is judged by what is signed: headers a provider or a proxy adds that other
/// routes would refuse (an id longer than they take, an `Idempotency-Key` or `If-Match` of its
/// own) are left out, and the payment moves. Before, such a header answered 400 to every
/// retry, and the provider's fact was never recorded.
#[tokio::test]
async fn a_signed_callback_is_not_refused_for_headers_it_does_not_sign() {
    let app = spawn_app().await;
    let payment = app.payment().await;
    let body = callback("evt-headers", &payment, "authorized", 3000);
    let now = chrono::Utc::now().timestamp();
    let answer = app
        .client
        .post(format!("{}/v1/webhooks/payments", app.url))
        .header("content-type", "application/json")
        .header("X-Signature", signature(WEBHOOK_SECRET, now, &body))
        .header("X-Correlation-Id", "c".repeat(300))
        .header("X-Causation-Id", "has a space")
        .header("Idempotency-Key", "not a token")
        .header("If-Match", "\"1\" or so")
        .body(body);
    let answer = crate::support::app::read(answer.send().await.expect("webhook request")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let status: String = sqlx::query_scalar(
        "SELECT payload->>'type' FROM events WHERE aggregate_id = $1 ORDER BY sequence DESC LIMIT 1",
    )
    .bind(&payment)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(status, "PaymentAuthorized");
}
