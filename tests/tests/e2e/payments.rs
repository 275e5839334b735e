//! Payment routes: amounts, transitions and 404s.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::app::{spawn_app, TestApp};

async fn initiate(
    app: &TestApp,
    order: &str,
    amount: i64,
    currency: &str,
) -> crate::support::app::Answer {
    app.post(
        "/v1/payments",
        json!({"order_id": order, "amount_minor": amount, "currency": currency, "method": "card"}),
    )
    .await
}

async fn payment(app: &TestApp) -> String {
    let (_, order) = app.user_and_order().await;
    let answer = initiate(app, &order, 3000, "EUR").await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    answer.id()
}

async fn act(
    app: &TestApp,
    payment: &str,
    action: &str,
    body: Value,
) -> crate::support::app::Answer {
    app.post(&format!("/v1/payments/{payment}/{action}"), body)
        .await
}

#[tokio::test]
async fn initiate_must_match_the_order() {
    let app = spawn_app().await;
    let (_, order) = app.user_and_order().await;
    let amount = initiate(&app, &order, 2999, "EUR").await;
    amount.assert_problem(422, "amount-mismatch");
    assert_eq!(amount.error_fields(), ["amount_minor"]);
    let currency = initiate(&app, &order, 3000, "USD").await;
    currency.assert_problem(422, "currency-mismatch");
    assert_eq!(currency.error_fields(), ["currency"]);
    let unknown = initiate(&app, &uuid::Uuid::now_v7().to_string(), 3000, "EUR").await;
    assert_eq!(unknown.error_fields(), ["order_id"]);
    let invalid = app
        .post(
            "/v1/payments",
            json!({"order_id": "x", "amount_minor": 0, "currency": "EURO", "method": "cash"}),
        )
        .await;
    invalid.assert_problem(422, "validation-failed");
    assert_eq!(
        invalid.error_fields(),
        ["order_id", "currency", "amount_minor", "method"]
    );

    app.post(
        &format!("/v1/orders/{order}/cancel"),
        json!({"reason": "r"}),
    )
    .await;
    initiate(&app, &order, 3000, "EUR")
        .await
        .assert_problem(409, "order-not-payable");
    let ok = app.user_and_order().await.1;
    assert_eq!(
        initiate(&app, &ok, 3000, "EUR").await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn authorize_capture_and_refund_within_the_amounts() {
    let app = spawn_app().await;
    let id = payment(&app).await;
    act(&app, &id, "authorize", json!({"amount_minor": 3001}))
        .await
        .assert_problem(409, "authorization-exceeds-amount");
    act(&app, &id, "capture", json!({"amount_minor": 1}))
        .await
        .assert_problem(409, "illegal-payment-transition");
    assert_eq!(
        act(&app, &id, "authorize", json!({"amount_minor": 3000}))
            .await
            .version(),
        2
    );
    assert_eq!(
        act(&app, &id, "capture", json!({"amount_minor": 1000}))
            .await
            .version(),
        3
    );
    act(&app, &id, "capture", json!({"amount_minor": 2001}))
        .await
        .assert_problem(409, "capture-exceeds-authorized");
    assert_eq!(
        act(&app, &id, "capture", json!({"amount_minor": 2000}))
            .await
            .version(),
        4
    );
    let refund = act(
        &app,
        &id,
        "refund",
        json!({"amount_minor": 500, "reason": "damaged"}),
    )
    .await;
    assert_eq!(refund.status, StatusCode::OK, "{}", refund.body);
    act(
        &app,
        &id,
        "refund",
        json!({"amount_minor": 2501, "reason": "too much"}),
    )
    .await
    .assert_problem(409, "refund-exceeds-captured");
    assert_eq!(
        act(
            &app,
            &id,
            "refund",
            json!({"amount_minor": 2500, "reason": "rest"})
        )
        .await
        .version(),
        6
    );
    act(&app, &id, "fail", json!({"reason": "late"}))
        .await
        .assert_problem(409, "illegal-payment-transition");
    act(
        &app,
        &id,
        "refund",
        json!({"amount_minor": 0, "reason": "zero"}),
    )
    .await
    .assert_problem(422, "validation-failed");
}

#[tokio::test]
async fn a_payment_can_fail_before_capture() {
    let app = spawn_app().await;
    let id = payment(&app).await;
    let failed = act(&app, &id, "fail", json!({"reason": "card declined"})).await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.body);
    act(&app, &id, "authorize", json!({"amount_minor": 10}))
        .await
        .assert_problem(409, "illegal-payment-transition");
}

#[tokio::test]
async fn every_payment_command_on_a_never_initiated_payment_is_404() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7();
    let commands = [
        ("authorize", json!({"amount_minor": 1})),
        ("capture", json!({"amount_minor": 1})),
        ("fail", json!({"reason": "r"})),
        ("refund", json!({"amount_minor": 1, "reason": "r"})),
    ];
    for (action, body) in commands {
        app.send(
            Method::POST,
            &format!("/v1/payments/{id}/{action}"),
            Some(body),
            &[],
        )
        .await
        .assert_problem(404, "payment-not-found");
    }
    assert_eq!(app.event_count().await, 0);
}

/// An order has one payment at a time: a second one (a double click, a retry under a new key)
/// is 409 `payment-exists` and writes nothing, so the customer cannot be charged twice; a
/// payment that failed frees the order for the next. Before, any number could be started,
/// authorized and captured for one order.
#[tokio::test]
async fn an_order_has_one_payment_until_it_fails() {
    let app = spawn_app().await;
    let (_, order) = app.user_and_order().await;
    let first = initiate(&app, &order, 3000, "EUR").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let second = initiate(&app, &order, 3000, "EUR").await;
    second.assert_problem(409, "payment-exists");
    assert_eq!(second.error_fields(), ["order_id"]);
    let payments: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'PaymentInitiated' AND payload->>'order_id' = $1",
    )
    .bind(&order)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(payments, 1, "the refused payment wrote nothing");

    let failed = act(
        &app,
        &first.id(),
        "fail",
        json!({"reason": "card declined"}),
    )
    .await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.body);
    let next = initiate(&app, &order, 3000, "EUR").await;
    assert_eq!(next.status, StatusCode::CREATED, "{}", next.body);
}

/// Payments initiated before the one-payment rule held no claim: the migration that brought
/// the rule gives those that have not failed their order's claim.
#[tokio::test]
async fn payments_from_before_the_rule_get_their_orders_claim() {
    let app = spawn_app().await;
    let (_, order) = app.user_and_order().await;
    let earlier = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, event_id)
         VALUES ('payment', $1, 1, 'PaymentInitiated', '1', $2, '{}', $3)",
    )
    .bind(earlier.to_string())
    .bind(
        json!({"type": "PaymentInitiated", "order_id": order, "amount_minor": 3000,
        "currency": "EUR", "method": "card"}),
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::raw_sql(include_str!(
        "../../../infra/migrations/20261202000007_order_payment_claims.sql"
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    initiate(&app, &order, 3000, "EUR")
        .await
        .assert_problem(409, "payment-exists");
}

/// What is left of an authorization is captured after a refund, and the payment reads as
/// partly refunded with both totals. Before, the capture was refused as an illegal transition
/// (409), and a provider's report of it left money taken that the books did not show.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rest_of_an_authorization_is_captured_after_a_refund() {
    let read_stack = crate::support::query::spawn_read_stack(|_| {}).await;
    let (app, query) = (&read_stack.stack.app, &read_stack.query);
    let (_, payment) = crate::support::commerce::authorized_payment(app).await;
    for (action, body) in [
        ("capture", json!({"amount_minor": 1000})),
        ("refund", json!({"amount_minor": 500, "reason": "damaged"})),
        ("capture", json!({"amount_minor": 2000})),
    ] {
        let answer = act(app, &payment, action, body).await;
        assert_eq!(answer.status, StatusCode::OK, "{action}: {}", answer.body);
    }
    let read = query.at_least(&format!("/v1/payments/{payment}"), 5).await;
    assert_eq!(read["status"], "partially_refunded", "{read}");
    assert_eq!(
        (
            read["captured_minor"].clone(),
            read["refunded_minor"].clone()
        ),
        (json!(3000), json!(500))
    );
}
