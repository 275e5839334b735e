//! User routes: success and failure codes.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::app::{address, spawn_app, unique_email};

#[tokio::test]
async fn register_returns_id_version_and_position() {
    let app = spawn_app().await;
    let answer = app
        .post(
            "/v1/users",
            json!({"email": unique_email(), "display_name": "Ada", "password": "customer-password-1"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert!(uuid::Uuid::parse_str(&answer.id()).is_ok());
    assert_eq!(answer.version(), 1);
    assert!(answer.body["position"].as_i64().unwrap() >= 1);
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn email_is_unique_ignoring_case_and_freed_when_changed() {
    let app = spawn_app().await;
    let user = app.register("Jane@Example.com").await;
    let taken = app
        .post(
            "/v1/users",
            json!({"email": "jane@example.COM", "display_name": "J", "password": "customer-password-1"}),
        )
        .await;
    taken.assert_problem(409, "email-taken");
    assert_eq!(taken.error_fields(), ["email"]);

    let changed = app
        .post(
            &format!("/v1/users/{user}/email"),
            json!({"email": "jane@new.example"}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.version(), 2);
    // The old address is free again, the new one is taken.
    app.register("jane@example.com").await;
    let other = app.register(&unique_email()).await;
    app.post(
        &format!("/v1/users/{other}/email"),
        json!({"email": "JANE@new.example"}),
    )
    .await
    .assert_problem(409, "email-taken");
    app.post(
        &format!("/v1/users/{user}/email"),
        json!({"email": "jane@new.example"}),
    )
    .await
    .assert_problem(409, "email-unchanged");
    app.post(&format!("/v1/users/{user}/email"), json!({"email": "nope"}))
        .await
        .assert_problem(422, "validation-failed");
}

#[tokio::test]
async fn profile_changes_and_their_failures() {
    let app = spawn_app().await;
    let user = app.register(&unique_email()).await;
    let path = format!("/v1/users/{user}/profile");
    let answer = app
        .post(
            &path,
            json!({"display_name": "Ada L.", "preferences": {"theme": "dark"}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.version(), 2);
    let only_prefs = app
        .post(&path, json!({"preferences": {"lang": "en"}}))
        .await;
    assert_eq!(only_prefs.version(), 3);
    let nothing = app.post(&path, json!({})).await;
    nothing.assert_problem(422, "validation-failed");
    assert_eq!(nothing.error_fields(), ["display_name"]);
    let not_object = app.post(&path, json!({"preferences": [1, 2]})).await;
    assert_eq!(not_object.error_fields(), ["preferences"]);
    let missing = uuid::Uuid::now_v7();
    app.post(
        &format!("/v1/users/{missing}/profile"),
        json!({"display_name": "X"}),
    )
    .await
    .assert_problem(404, "user-not-found");
    app.post("/v1/users/not-a-uuid/profile", json!({"display_name": "X"}))
        .await
        .assert_problem(404, "user-not-found");
}

#[tokio::test]
async fn addresses_are_added_and_removed() {
    let app = spawn_app().await;
    let user = app.register(&unique_email()).await;
    let added = app
        .post(&format!("/v1/users/{user}/addresses"), address())
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    let address_id = added.body["address_id"].as_str().unwrap().to_owned();
    assert_eq!(added.version(), 2);

    let bad = app
        .post(
            &format!("/v1/users/{user}/addresses"),
            json!({"label": "x", "line1": "", "city": "C", "postal_code": "1", "country": "XX"}),
        )
        .await;
    bad.assert_problem(422, "validation-failed");
    assert_eq!(bad.error_fields(), ["line1", "country"]);

    let path = format!("/v1/users/{user}/addresses/{address_id}");
    let removed = app.delete(&path).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    assert_eq!(removed.version(), 3);
    app.delete(&path)
        .await
        .assert_problem(404, "address-not-found");
    let missing = uuid::Uuid::now_v7();
    app.delete(&format!("/v1/users/{missing}/addresses/{address_id}"))
        .await
        .assert_problem(404, "user-not-found");
}

#[tokio::test]
async fn roles_are_granted_and_revoked() {
    let app = spawn_app().await;
    let user = app.register(&unique_email()).await;
    let roles = format!("/v1/users/{user}/roles");
    let granted = app.post(&roles, json!({"role": "admin"})).await;
    assert_eq!(granted.status, StatusCode::OK);
    app.post(&roles, json!({"role": "admin"}))
        .await
        .assert_problem(409, "role-already-granted");
    let invalid = app.post(&roles, json!({"role": "root"})).await;
    invalid.assert_problem(422, "validation-failed");
    assert_eq!(invalid.error_fields(), ["role"]);
    let revoked = app.delete(&format!("{roles}/admin")).await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(revoked.version(), 3);
    app.delete(&format!("{roles}/admin"))
        .await
        .assert_problem(404, "role-not-granted");
    app.delete(&format!("{roles}/root"))
        .await
        .assert_problem(422, "validation-failed");
}

#[tokio::test]
async fn deactivated_users_refuse_further_commands() {
    let app = spawn_app().await;
    let user = app.register(&unique_email()).await;
    let path = format!("/v1/users/{user}/deactivate");
    let done = app.send(Method::POST, &path, None, &[]).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    app.post(&path, json!({"reason": "again"}))
        .await
        .assert_problem(409, "user-deactivated");
    app.post(
        &format!("/v1/users/{user}/profile"),
        json!({"display_name": "X"}),
    )
    .await
    .assert_problem(409, "user-deactivated");
    // A deactivated user cannot place orders either.
    let order = app.place_order(&user).await;
    order.assert_problem(422, "validation-failed");
    assert_eq!(order.error_fields(), ["customer_id"]);
}
