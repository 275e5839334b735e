//! Operational endpoints: health, readiness, metrics, OpenAPI and unknown routes.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::{spawn_app, unique_email};
use crate::support::processes::metric_sum;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(app.get("/readyz").await.0, StatusCode::OK);
    let accepted = [r#"command="register_user""#, r#"outcome="accepted""#];
    let requests = [r#"route="/v1/users""#];
    let (status, before) = app.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let registered = app
        .post(
            "/v1/users",
            json!({"email": unique_email(), "display_name": "M", "password": "customer-password-1"}),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    let refused = app
        .post(
            "/v1/users",
            json!({"email": "bad", "display_name": "M", "password": "customer-password-1"}),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    let (status, after) = app.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    // Other tests of this binary register users too: at least these two are counted.
    let grew = |name: &str, labels: &[&str]| {
        metric_sum(&after, name, labels) - metric_sum(&before, name, labels)
    };
    assert!(grew("commands_total", &accepted) >= 1.0, "{after}");
    assert!(
        grew("http_request_duration_seconds_count", &requests) >= 2.0,
        "{after}"
    );
    assert!(
        metric_sum(&after, "http_request_duration_seconds_bucket", &requests) > 0.0,
        "{after}"
    );
}

/// A service whose database lacks a migration it embeds is not ready (a rolling update whose
/// migrations run apart: the new pods wait for them instead of answering errors). Before,
/// readiness asked the database for `SELECT 1` only.
#[tokio::test]
async fn a_database_behind_this_version_is_not_ready() {
    let app = spawn_app().await;
    let set = |success: bool| {
        sqlx::query(
            "UPDATE _sqlx_migrations SET success = $1
             WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
        )
        .bind(success)
        .execute(&app.pool)
    };
    set(false).await.unwrap();
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("lacks migrations"), "{body}");
    set(true).await.unwrap();
    assert_eq!(app.get("/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn openapi_lists_every_command_route() {
    let app = spawn_app().await;
    let (status, body) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/users",
        "/v1/users/{id}/profile",
        "/v1/users/{id}/email",
        "/v1/users/{id}/addresses",
        "/v1/users/{id}/addresses/{address_id}",
        "/v1/users/{id}/roles",
        "/v1/users/{id}/roles/{role}",
        "/v1/users/{id}/deactivate",
        "/v1/orders",
        "/v1/orders/{id}/confirm",
        "/v1/orders/{id}/start-processing",
        "/v1/orders/{id}/ship",
        "/v1/orders/{id}/deliver",
        "/v1/orders/{id}/cancel",
        "/v1/payments",
        "/v1/payments/{id}/authorize",
        "/v1/payments/{id}/capture",
        "/v1/payments/{id}/fail",
        "/v1/payments/{id}/refund",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    app.post("/v1/nothing", json!({}))
        .await
        .assert_problem(404, "route-not-found");
    app.send(reqwest::Method::PUT, "/v1/users", Some(json!({})), &[])
        .await
        .assert_problem(405, "method-not-allowed");
}
