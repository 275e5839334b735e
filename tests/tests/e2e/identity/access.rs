//! Who may run which command: every command route with two customers (another's resource is
//! answered as if it did not exist), the roles that may not, mass assignment, and the actor
//! recorded whatever headers say.

use infra::auth::{Principal, Role, Subject};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::app::{
    accepted, address, order_body, spawn_app, Answer, Auth, Customer, TestApp,
};
use crate::support::auth::mint;

/// A customer with an order and a payment of it.
struct Owned {
    customer: Customer,
    order: String,
    payment: String,
    /// An order of theirs with no payment yet (an order has one payment at a time).
    unpaid: String,
}

async fn owned(app: &TestApp) -> Owned {
    let customer = app.customer().await;
    let place = || async {
        let order = app
            .post_as(
                Auth::Bearer(&customer.token),
                "/v1/orders",
                order_body(&customer.id),
            )
            .await;
        assert_eq!(order.status, StatusCode::CREATED, "{}", order.body);
        order.id()
    };
    let order = place().await;
    let unpaid = place().await;
    let payment = app
        .post_as(
            Auth::Bearer(&customer.token),
            "/v1/payments",
            json!({"order_id": order, "amount_minor": 3000, "currency": "EUR", "method": "card"}),
        )
        .await;
    assert_eq!(payment.status, StatusCode::CREATED, "{}", payment.body);
    Owned {
        payment: payment.id(),
        order,
        customer,
        unpaid,
    }
}

/// Every command a customer may send about their own things: (method, path, body).
fn customer_commands(o: &Owned) -> Vec<(Method, String, Value)> {
    let user = &o.customer.id;
    vec![
        (
            Method::POST,
            format!("/v1/users/{user}/profile"),
            json!({"display_name": "Mine"}),
        ),
        (
            Method::POST,
            format!("/v1/users/{user}/email"),
            json!({"email": crate::support::app::unique_email()}),
        ),
        (
            Method::POST,
            format!("/v1/users/{user}/addresses"),
            address(),
        ),
        (
            Method::DELETE,
            format!("/v1/users/{user}/addresses/{}", uuid::Uuid::now_v7()),
            Value::Null,
        ),
        (Method::POST, "/v1/orders".to_owned(), order_body(user)),
        (
            Method::POST,
            "/v1/payments".to_owned(),
            json!({"order_id": o.unpaid, "amount_minor": 3000, "currency": "EUR", "method": "card"}),
        ),
        (
            Method::POST,
            format!("/v1/orders/{}/cancel", o.order),
            json!({"reason": "changed mind"}),
        ),
        (
            Method::POST,
            format!("/v1/users/{user}/deactivate"),
            json!({}),
        ),
    ]
}

/// Commands no customer may send: fulfilment, payment state changes, roles.
fn operator_commands(o: &Owned) -> Vec<(Method, String, Value)> {
    let (order, payment, user) = (&o.order, &o.payment, &o.customer.id);
    vec![
        (
            Method::POST,
            format!("/v1/orders/{order}/confirm"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/v1/orders/{order}/start-processing"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/v1/orders/{order}/ship"),
            json!({"carrier": "DHL", "tracking_number": "T1"}),
        ),
        (
            Method::POST,
            format!("/v1/orders/{order}/deliver"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/v1/payments/{payment}/authorize"),
            json!({"amount_minor": 3000}),
        ),
        (
            Method::POST,
            format!("/v1/payments/{payment}/capture"),
            json!({"amount_minor": 3000}),
        ),
        (
            Method::POST,
            format!("/v1/payments/{payment}/fail"),
            json!({"reason": "declined"}),
        ),
        (
            Method::POST,
            format!("/v1/payments/{payment}/refund"),
            json!({"amount_minor": 10, "reason": "r"}),
        ),
        (
            Method::POST,
            format!("/v1/users/{user}/roles"),
            json!({"role": "admin"}),
        ),
        (
            Method::DELETE,
            format!("/v1/users/{user}/roles/customer"),
            Value::Null,
        ),
    ]
}

async fn send(
    app: &TestApp,
    token: &str,
    (method, path, body): &(Method, String, Value),
) -> Answer {
    let body = (!body.is_null()).then(|| body.clone());
    app.send_as(Auth::Bearer(token), method.clone(), path, body, &[])
        .await
}

#[tokio::test]
async fn another_customers_things_do_not_exist_for_a_customer() {
    let app = spawn_app().await;
    let alice = owned(&app).await;
    let bob = app.customer().await;
    let before = app.event_count().await;
    for command in customer_commands(&alice) {
        let answer = send(&app, &bob.token, &command).await;
        let path = &command.1;
        // What bob would be told if alice's things did not exist at all.
        let expected = if path == "/v1/orders" {
            (422, "validation-failed", "customer_id")
        } else if path == "/v1/payments" {
            (422, "validation-failed", "order_id")
        } else if path.starts_with("/v1/users") {
            (404, "user-not-found", "")
        } else {
            (404, "order-not-found", "")
        };
        answer.assert_problem(expected.0, expected.1);
        if !expected.2.is_empty() {
            assert_eq!(answer.error_fields(), [expected.2], "{path}");
        }
    }
    assert_eq!(
        app.event_count().await,
        before,
        "another customer's command wrote events"
    );
    // The same answers as for ids nobody has.
    let nobody = uuid::Uuid::now_v7();
    send(
        &app,
        &bob.token,
        &(
            Method::POST,
            format!("/v1/orders/{nobody}/cancel"),
            json!({"reason": "r"}),
        ),
    )
    .await
    .assert_problem(404, "order-not-found");
    send(
        &app,
        &bob.token,
        &(
            Method::POST,
            format!("/v1/users/{nobody}/profile"),
            json!({"display_name": "X"}),
        ),
    )
    .await
    .assert_problem(404, "user-not-found");
}

#[tokio::test]
async fn a_customer_runs_every_customer_command_on_their_own_things() {
    let app = spawn_app().await;
    let alice = owned(&app).await;
    for command in customer_commands(&alice) {
        let answer = send(&app, &alice.customer.token, &command).await;
        // Removing an address nobody added is the aggregate's 404, not the policy's.
        if command.0 == Method::DELETE {
            answer.assert_problem(404, "address-not-found");
        } else {
            assert!(answer.status.is_success(), "{}: {}", command.1, answer.body);
        }
    }
}

#[tokio::test]
async fn operator_and_admin_commands_are_403_for_customers_and_support() {
    let app = spawn_app().await;
    let alice = owned(&app).await;
    let support = mint(&Principal::new(
        Subject::User(uuid::Uuid::now_v7()),
        [Role::Customer, Role::Support],
    ));
    let service = mint(&Principal::new(
        Subject::Service("payments".into()),
        [Role::Service],
    ));
    let before = app.event_count().await;
    for command in operator_commands(&alice) {
        send(&app, &alice.customer.token, &command)
            .await
            .assert_problem(403, "forbidden");
        send(&app, &support, &command)
            .await
            .assert_problem(403, "forbidden");
        // With a body the command would refuse, still 403: the role is checked before the
        // body, so a role that may not run it learns nothing of its validation.
        let (method, path, _) = &command;
        let invalid = (method.clone(), path.clone(), json!({"not_a_field": true}));
        if method == Method::POST {
            for token in [&alice.customer.token, &support] {
                let answer = send(&app, token, &invalid).await;
                answer.assert_problem(403, "forbidden");
            }
        }
    }
    // Support writes nothing a customer owns either, and is told so (403), not that what it
    // may read does not exist. Before, it was answered 404 or 422 as another customer is.
    for command in customer_commands(&alice) {
        let answer = send(&app, &support, &command).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{}: {}",
            command.1,
            answer.body
        );
        answer.assert_problem(403, "forbidden");
    }
    // What does not exist is a 404 for support as for anyone (a command on an aggregate that
    // does not exist is 404). Before, support was told 403, as for what it may not write.
    let missing = (
        Method::POST,
        format!("/v1/orders/{}/cancel", uuid::Uuid::now_v7()),
        json!({"reason": "gone"}),
    );
    send(&app, &support, &missing)
        .await
        .assert_problem(404, "order-not-found");
    let missing = (
        Method::POST,
        format!("/v1/users/{}/profile", uuid::Uuid::now_v7()),
        json!({"display_name": "Nobody"}),
    );
    send(&app, &support, &missing)
        .await
        .assert_problem(404, "user-not-found");
    assert_eq!(
        app.event_count().await,
        before,
        "a refused command wrote events"
    );
    // A service may move orders and payments, but not grant roles or edit users.
    for command in operator_commands(&alice) {
        let answer = send(&app, &service, &command).await;
        if command.1.contains("/roles") {
            answer.assert_problem(403, "forbidden");
        } else {
            assert_ne!(
                answer.status,
                StatusCode::FORBIDDEN,
                "{}: {}",
                command.1,
                answer.body
            );
        }
    }
    send(
        &app,
        &service,
        &(
            Method::POST,
            format!("/v1/users/{}/profile", alice.customer.id),
            json!({"display_name": "S"}),
        ),
    )
    .await
    .assert_problem(403, "forbidden");
    // An admin may grant roles.
    let granted = app
        .post(
            &format!("/v1/users/{}/roles", alice.customer.id),
            json!({"role": "support"}),
        )
        .await;
    accepted(&granted);
}

#[tokio::test]
async fn roles_in_a_registration_body_are_refused() {
    let app = spawn_app().await;
    let answer = app
        .post_as(
            Auth::Anonymous,
            "/v1/users",
            json!({"email": crate::support::app::unique_email(), "display_name": "Mallory",
                   "password": "customer-password-1", "roles": ["admin"]}),
        )
        .await;
    answer.assert_problem(422, "validation-failed");
    assert_eq!(answer.error_fields(), ["roles"]);
    assert_eq!(app.event_count().await, 0);
    // Passwords outside 12 to 128 characters are refused, naming the field.
    for password in ["short", &"x".repeat(129)] {
        let answer = app
            .post_as(
                Auth::Anonymous,
                "/v1/users",
                json!({"email": crate::support::app::unique_email(), "display_name": "M", "password": password}),
            )
            .await;
        answer.assert_problem(422, "validation-failed");
        assert_eq!(answer.error_fields(), ["password"]);
    }
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn the_actor_is_the_token_subject_whatever_the_headers_say() {
    let app = spawn_app().await;
    let customer = app.customer().await;
    let answer = app
        .send_as(
            Auth::Bearer(&customer.token),
            Method::POST,
            &format!("/v1/users/{}/profile", customer.id),
            Some(json!({"display_name": "Renamed"})),
            &[("X-Actor", "service:process-manager"), ("X-User", "admin")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT metadata->>'actor' FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&customer.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let me = format!("user:{}", customer.id);
    assert_eq!(actors, [me.clone(), me]);
}

#[tokio::test]
async fn commands_per_principal_are_limited_with_retry_after() {
    let app = crate::support::app::spawn_app_with(|s| {
        s.auth.commands_per_second = 1;
        s.auth.commands_burst = 3;
    })
    .await;
    let customer = app.customer().await;
    let path = format!("/v1/users/{}/profile", customer.id);
    let mut statuses = Vec::new();
    for i in 0..5 {
        let answer = app
            .post_as(
                Auth::Bearer(&customer.token),
                &path,
                json!({"display_name": format!("N{i}")}),
            )
            .await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            answer.assert_problem(429, "rate-limited");
            assert!(answer.headers.contains_key("retry-after"));
        }
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(&statuses[..3], [200, 200, 200]);
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    // Another principal is not held back by the first one's use.
    let other = app.customer().await;
    let answer = app
        .post_as(
            Auth::Bearer(&other.token),
            &format!("/v1/users/{}/profile", other.id),
            json!({"display_name": "O"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}
