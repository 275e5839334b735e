//! Idempotency-Key: replays return the first response and write nothing.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::app::{spawn_app, unique_email, Auth};
use crate::support::auth::{PM_CLIENT_ID, PM_SECRET};

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
    // The same order named in capitals (the route takes it) is the same request: it replays.
    // Before, the key was bound to the path's text, and this was 422 idempotency-key-reused.
    let shouted = format!("/v1/orders/{}/confirm", order.to_uppercase());
    let replay = app.send(Method::POST, &shouted, None, &headers).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
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

/// Sends of one request with one key and `If-Match` at once all get the first one's answer.
/// A send whose first look for the key came before the first send committed, and whose load
/// came after it, used to see the version it had just made and answer 409 version-conflict,
/// which tells a client to reload and send again under a new key: a second change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_with_one_key_and_if_match_all_get_the_first_answer() {
    let app = spawn_app().await;
    for round in 0..12 {
        let user = app.register(&unique_email()).await;
        let path = format!("/v1/users/{user}/profile");
        let key = format!("rename-{round}");
        let headers = [("Idempotency-Key", key.as_str()), ("If-Match", "\"1\"")];
        let sends = (0..8).map(|_| {
            app.send(
                Method::POST,
                &path,
                Some(json!({"display_name": "Renamed once"})),
                &headers,
            )
        });
        let answers = join_all(sends).await;
        for answer in &answers {
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "round {round}: {}",
                answer.body
            );
            assert_eq!(answer.body["version"], 2, "round {round}: {}", answer.body);
        }
    }
}

/// A new customer and an order placed for them with `key`: the customer, the body, the answer.
async fn place_with_key(
    app: &crate::support::app::TestApp,
    key: &str,
) -> (String, serde_json::Value, crate::support::app::Answer) {
    let customer = app.register(&unique_email()).await;
    let body = crate::support::app::order_body(&customer);
    let first = app
        .send(
            Method::POST,
            "/v1/orders",
            Some(body.clone()),
            &[("Idempotency-Key", key)],
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    (customer, body, first)
}

/// A replay is the remembered outcome rendered by the route again: members the route derives
/// from the events (an order's total, a new address's id) and the ETag come back identical.
#[tokio::test]
async fn replays_render_what_the_route_derives_from_the_events() {
    let app = spawn_app().await;
    let (customer, body, first) = place_with_key(&app, "place-once").await;
    let place = [("Idempotency-Key", "place-once")];
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

/// A repeated request is answered as the first one was even when the checks of other
/// aggregates the route makes first would now fail: the order was placed, and placing it
/// again (a client's retry after a lost answer) must say so, not that the customer is gone.
#[tokio::test]
async fn an_order_placed_is_replayed_after_its_customer_is_deactivated() {
    let app = spawn_app().await;
    let (customer, body, first) = place_with_key(&app, "place-before-deactivation").await;
    let place = [("Idempotency-Key", "place-before-deactivation")];
    let deactivated = app
        .send(
            Method::POST,
            &format!("/v1/users/{customer}/deactivate"),
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!(deactivated.status, StatusCode::OK, "{}", deactivated.body);
    let events = app.event_count().await;
    let again = app
        .send(Method::POST, "/v1/orders", Some(body.clone()), &place)
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(app.event_count().await, events);
    // A new order for the deactivated customer is still refused.
    let fresh = app.post("/v1/orders", body).await;
    assert_eq!(
        fresh.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        fresh.body
    );
}

/// A machine client's key outlives the TTL (the process manager may send a parked refund again
/// days later, after the first one went through and its answer was lost); a person's does not.
#[tokio::test]
async fn a_service_clients_refund_is_not_done_twice_after_the_ttl() {
    let app = spawn_app().await;
    let payment = app.payment().await;
    for step in ["authorize", "capture"] {
        let answer = app
            .post(
                &format!("/v1/payments/{payment}/{step}"),
                json!({"amount_minor": 3000}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{step}: {}", answer.body);
    }
    let token = app
        .client
        .post(format!("{}/v1/auth/token", app.url))
        .json(&json!({"grant_type": "client_credentials", "client_id": PM_CLIENT_ID, "client_secret": PM_SECRET}))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .expect("a service token")
        .to_owned();
    let path = format!("/v1/payments/{payment}/refund");
    let refund = json!({"amount_minor": 1000, "reason": "order cancelled"});
    let key = [("Idempotency-Key", "pm-refund-evt-1")];
    let as_service = || {
        app.send_as(
            Auth::Bearer(&token),
            Method::POST,
            &path,
            Some(refund.clone()),
            &key,
        )
    };
    let first = as_service().await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let events = app.event_count().await;
    app.age_idempotency_keys(None).await;
    let again = as_service().await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(app.event_count().await, events);

    // A person's key past the TTL is a new request: the admin's refund with an expired key runs.
    let admin_key = [("Idempotency-Key", "admin-refund-1")];
    let by_admin = app
        .send(Method::POST, &path, Some(refund.clone()), &admin_key)
        .await;
    assert_eq!(by_admin.status, StatusCode::OK, "{}", by_admin.body);
    app.age_idempotency_keys(None).await;
    let later = app
        .send(Method::POST, &path, Some(refund), &admin_key)
        .await;
    assert_eq!(later.status, StatusCode::OK, "{}", later.body);
    assert!(later.headers.get("idempotent-replayed").is_none());
    assert_eq!(app.event_count().await, events + 2);
}

/// Registrations without a token keep their keys per email: two strangers choosing the same
/// key for their own sign-ups both register, and each one's retry is still a replay. Before,
/// every tokenless registration shared one scope, so a key anyone sent first (`signup-1`)
/// refused everyone else's with 422 for a day.
#[tokio::test]
async fn strangers_choosing_one_key_each_register() {
    let app = spawn_app().await;
    let headers = [("Idempotency-Key", "signup-1")];
    let mut firsts = Vec::new();
    for _ in 0..2 {
        let body = json!({"email": unique_email(), "display_name": "Stranger",
            "password": "customer-password-1"});
        let answer = app
            .send_as(
                Auth::Anonymous,
                Method::POST,
                "/v1/users",
                Some(body.clone()),
                &headers,
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        assert!(answer.headers.get("idempotent-replayed").is_none());
        firsts.push((body, answer.body));
    }
    for (body, first) in firsts {
        let again = app
            .send_as(
                Auth::Anonymous,
                Method::POST,
                "/v1/users",
                Some(body),
                &headers,
            )
            .await;
        assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
        assert_eq!(again.body, first, "a retry is answered as the first time");
        assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    }
    assert_eq!(app.event_count().await, 2);
}
