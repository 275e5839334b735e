//! The read side end to end: an order's every step, from registration to delivery and a failed
//! payment's cancellation, becomes visible through the query API at the version its command
//! returned, with the process manager closing the order–payment loop and the audit and
//! analytics read models following.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::support::app::{accepted, address, unique_email};
use crate::support::query::spawn_read_stack;

/// The id of the one event of `event_type` on `aggregate_id`.
async fn event_id(pool: &PgPool, aggregate_id: &str, event_type: &str) -> String {
    sqlx::query_scalar(
        "SELECT event_id::text FROM events WHERE aggregate_id = $1 AND event_type = $2",
    )
    .bind(aggregate_id)
    .bind(event_type)
    .fetch_one(pool)
    .await
    .expect("the event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_flows_end_to_end_and_every_step_is_visible() {
    let read_stack = spawn_read_stack(|s| s.query_api.max_wait_ms = 20_000).await;
    let (app, query) = (&read_stack.stack.app, &read_stack.query);

    let email = unique_email();
    let registered = app
        .post(
            "/v1/users",
            json!({"email": email, "display_name": "Ada", "password": "customer-password-1"}),
        )
        .await;
    let user = registered.id();
    let v = accepted(&registered);
    let body = query.at_least(&format!("/v1/users/{user}"), v).await;
    assert_eq!(body["email"], email);
    assert_eq!(body["display_name"], "Ada");
    assert_eq!(body["status"], "active");
    let v = accepted(
        &app.post(&format!("/v1/users/{user}/addresses"), address())
            .await,
    );
    let body = query.at_least(&format!("/v1/users/{user}"), v).await;
    assert_eq!(body["addresses"][0]["city"], "Berlin");
    let by_email = query
        .get(&format!("/v1/users?email={}", email.to_uppercase()))
        .await;
    assert_eq!(by_email.status, StatusCode::OK, "{}", by_email.body);
    assert_eq!(by_email.body["id"], user.as_str());

    // Place, pay: the process manager confirms the order once the payment is captured.
    let placed = app.place_order(&user).await;
    let order = placed.id();
    let total = placed.body["total_minor"].as_i64().unwrap();
    let body = query
        .at_least(&format!("/v1/orders/{order}"), accepted(&placed))
        .await;
    assert_eq!(body["status"], "created");
    assert_eq!(body["total_minor"], total);
    assert_eq!(body["paid_minor"], 0);
    let initiated = app
        .post(
            "/v1/payments",
            json!({"order_id": order, "amount_minor": total, "currency": "EUR", "method": "card"}),
        )
        .await;
    let payment = initiated.id();
    accepted(&initiated);
    accepted(
        &app.post(
            &format!("/v1/payments/{payment}/authorize"),
            json!({"amount_minor": total}),
        )
        .await,
    );
    let v = accepted(
        &app.post(
            &format!("/v1/payments/{payment}/capture"),
            json!({"amount_minor": total}),
        )
        .await,
    );
    let body = query.at_least(&format!("/v1/payments/{payment}"), v).await;
    assert_eq!(body["status"], "captured");
    assert_eq!(body["captured_minor"], total);
    let body = query.at_least(&format!("/v1/orders/{order}"), 2).await;
    assert_eq!(body["status"], "confirmed", "{body}");
    assert_eq!(body["paid_minor"], total);

    // The order's tag now carries the money moved, and a command takes it as If-Match (the
    // order's version); before, that tag was a 422 bad header.
    let read = query.get(&format!("/v1/orders/{order}")).await;
    let tag = read.headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(tag, format!("\"2.{total}.0\""));
    let processing = app
        .send(
            Method::POST,
            &format!("/v1/orders/{order}/start-processing"),
            None,
            &[("If-Match", &tag)],
        )
        .await;
    accepted(&processing);

    // Ship and deliver, each visible at its version.
    let v = accepted(
        &app.post(
            &format!("/v1/orders/{order}/ship"),
            json!({"carrier": "DHL", "tracking_number": "JD0001"}),
        )
        .await,
    );
    let body = query.at_least(&format!("/v1/orders/{order}"), v).await;
    assert_eq!(body["status"], "shipped");
    assert_eq!(body["carrier"], "DHL");
    assert_eq!(body["tracking_number"], "JD0001");
    let v = accepted(&app.post_empty(&format!("/v1/orders/{order}/deliver")).await);
    assert_eq!(v, 5);
    let body = query.at_least(&format!("/v1/orders/{order}"), v).await;
    assert_eq!(body["status"], "delivered");

    // Lists, audit and analytics reflect it.
    let list = query.get(&format!("/v1/users/{user}/orders")).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(list.body["items"][0]["id"], order.as_str());
    assert_eq!(list.body["items"][0]["status"], "delivered");
    let payments = query.get(&format!("/v1/orders/{order}/payments")).await;
    assert_eq!(payments.body["items"][0]["id"], payment.as_str());
    let audit = query
        .eventually(&format!("/v1/audit/order/{order}"), |b| {
            b["items"].as_array().is_some_and(|i| i.len() == 5)
        })
        .await;
    let types: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "OrderPlaced",
            "OrderConfirmed",
            "OrderProcessingStarted",
            "OrderShipped",
            "OrderDelivered"
        ]
    );
    let confirmed = &audit["items"][1];
    let pool = &app.pool;
    assert_eq!(confirmed["actor"], "service:process-manager");
    assert_eq!(
        confirmed["causation_id"],
        event_id(pool, &payment, "PaymentCaptured").await,
        "the confirmation names the capture as its cause"
    );
    assert_eq!(audit["items"][0]["sequence"], 1);
    assert!(audit["items"][0]["payload"]["total_minor"] == total);
    let today = chrono::Utc::now().date_naive();
    let revenue = query
        .eventually(
            &format!("/v1/analytics/revenue?from={today}&to={today}&currency=EUR"),
            |b| b["items"][0]["captured_minor"] == total,
        )
        .await;
    let day = &revenue["items"][0];
    assert_eq!(day["day"], today.to_string());
    assert_eq!(day["refunded_minor"], 0);
    assert_eq!(day["net_minor"], total);
    assert_eq!(day["orders"], 1);
    let funnel = query
        .eventually("/v1/analytics/order-funnel", |b| {
            b["counts"]["delivered"] == 1
        })
        .await;
    assert_eq!(funnel["total"], 1);

    // A failed payment cancels its order, with reason `payment_failed`.
    let second = app.place_order(&user).await.id();
    let failing = app
        .post(
            "/v1/payments",
            json!({"order_id": second, "amount_minor": total, "currency": "EUR", "method": "card"}),
        )
        .await
        .id();
    accepted(
        &app.post(
            &format!("/v1/payments/{failing}/fail"),
            json!({"reason": "card_declined"}),
        )
        .await,
    );
    let body = query.at_least(&format!("/v1/orders/{second}"), 2).await;
    assert_eq!(body["status"], "cancelled");
    let history = query
        .eventually(&format!("/v1/audit/order/{second}"), |b| {
            b["items"].as_array().is_some_and(|i| i.len() == 2)
        })
        .await;
    assert_eq!(history["items"][1]["event_type"], "OrderCancelled");
    assert_eq!(history["items"][1]["payload"]["reason"], "payment_failed");
    assert_eq!(history["items"][1]["actor"], "service:process-manager");
}

/// A lookup by email can name another user later (one gave the address up, another took it):
/// a client holding the first answer's tag gets the second user, not 304. Before, a lookup
/// answered `If-None-Match`, and two users at version 1 share the tag `"1"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_email_lookup_is_not_304_for_another_user_holding_the_email() {
    let read_stack = spawn_read_stack(|s| s.query_api.max_wait_ms = 20_000).await;
    let (app, query) = (&read_stack.stack.app, &read_stack.query);
    let email = unique_email();
    let lookup = format!("/v1/users?email={email}");
    let first = app.register(&email).await;
    query.at_least(&format!("/v1/users/{first}"), 1).await;
    let held = query.get(&lookup).await;
    assert_eq!(held.body["id"], first.as_str());
    let tag = held.headers["etag"].to_str().unwrap().to_owned();
    // The first user moves to another email; a second user registers the first one.
    let moved = app
        .post(
            &format!("/v1/users/{first}/email"),
            json!({"email": unique_email()}),
        )
        .await;
    query
        .at_least(&format!("/v1/users/{first}"), accepted(&moved))
        .await;
    let second = app.register(&email).await;
    query.at_least(&format!("/v1/users/{second}"), 1).await;
    let again = query.get_with(&lookup, &[("if-none-match", &tag)]).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["id"], second.as_str());
    // The tag is the version, as everywhere (and as If-Match takes it): the same for both
    // users, so a lookup is always answered in full.
    assert_eq!(again.headers["etag"].to_str().unwrap(), tag);
    assert_eq!(tag, "\"1\"");
}
