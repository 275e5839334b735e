//! Customer flows of several commands: [`paid_order`] (an order paid and captured) and
//! [`commerce_load`] (many customers ordering, paying, cancelling and shipping at once).

use futures::future::join_all;
use serde_json::{json, Value};

use crate::support::app::{accepted, unique_email, TestApp};

/// Users who order and pay; some orders are cancelled (with refunds), some shipped.
pub async fn commerce_load(app: &TestApp, customers: usize) {
    let flows = (0..customers).map(|i| async move {
        let user = app.register(&unique_email()).await;
        let order = app.place_order(&user).await.id();
        let payment = app
            .post("/v1/payments", json!({"order_id": order, "amount_minor": 3000, "currency": "EUR", "method": "card"}))
            .await
            .id();
        let steps: Vec<(String, Value)> = vec![
            (format!("/v1/payments/{payment}/authorize"), json!({"amount_minor": 3000})),
            (format!("/v1/payments/{payment}/capture"), json!({"amount_minor": 3000})),
            (format!("/v1/orders/{order}/confirm"), json!({})),
        ];
        for (path, body) in steps {
            let answer = app.post(&path, body).await;
            assert!(answer.status.is_success(), "{path}: {}", answer.body);
        }
        let tail: Vec<(String, Value)> = if i % 3 == 0 {
            vec![
                (format!("/v1/orders/{order}/cancel"), json!({"reason": "changed mind"})),
                (format!("/v1/payments/{payment}/refund"), json!({"amount_minor": 3000, "reason": "cancelled"})),
            ]
        } else {
            vec![
                (format!("/v1/orders/{order}/start-processing"), json!({})),
                (format!("/v1/orders/{order}/ship"), json!({"carrier": "DHL", "tracking_number": format!("T{i}")})),
            ]
        };
        for (path, body) in tail {
            let answer = app.post(&path, body).await;
            assert!(answer.status.is_success(), "{path}: {}", answer.body);
        }
        app.post(&format!("/v1/users/{user}/profile"), json!({"display_name": format!("Customer {i}")})).await;
    });
    join_all(flows).await;
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
