//! Values PostgreSQL refuses (a NUL in text or jsonb) are a 422 naming the field, write
//! nothing, and never fail another request of the same group commit.

use futures::future::join_all;
use infra::event_store::{AppendError, AppendRequest, EventStore, NewEvent};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::app::{spawn_app, unique_email};

#[tokio::test]
async fn nul_in_preferences_is_a_422_naming_the_field() {
    let app = spawn_app().await;
    let user = app.register(&unique_email()).await;
    let before = app.event_count().await;
    let answer = app
        .post(
            &format!("/v1/users/{user}/profile"),
            json!({"preferences": {"note": "a\u{0}b"}}),
        )
        .await;
    answer.assert_problem(422, "validation-failed");
    assert_eq!(answer.error_fields(), vec!["preferences.note"]);
    let key = app
        .post(
            &format!("/v1/users/{user}/profile"),
            json!({"preferences": {"k\u{0}": 1}}),
        )
        .await;
    assert_eq!(key.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", key.body);
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn nul_in_any_string_field_is_a_422_naming_it() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"email": unique_email(), "display_name": "A\u{0}"}),
            "display_name",
        ),
        (
            json!({"email": "a\u{0}@example.com", "display_name": "A"}),
            "email",
        ),
    ];
    for (body, field) in cases {
        let answer = app.post("/v1/users", body).await;
        answer.assert_problem(422, "validation-failed");
        assert_eq!(answer.error_fields(), vec![field]);
    }
    let user = app.register(&unique_email()).await;
    let answer = app
        .post(
            &format!("/v1/users/{user}/deactivate"),
            json!({"reason": "gone\u{0}"}),
        )
        .await;
    answer.assert_problem(422, "validation-failed");
    assert_eq!(answer.error_fields(), vec!["reason"]);
    assert_eq!(app.event_count().await, 1);
}

/// Directional formatting characters (an override, an isolate) make what staff read differ
/// from what is stored: a request with one in a free-text field is a 422 naming the field,
/// and writes nothing. Before, they were accepted.
#[tokio::test]
async fn directional_overrides_in_free_text_are_a_422_naming_the_field() {
    let app = spawn_app().await;
    let answer = app
        .post(
            "/v1/users",
            json!({"email": unique_email(), "display_name": "invoice\u{202E}fdp.exe",
                   "password": "customer-password-1"}),
        )
        .await;
    answer.assert_problem(422, "validation-failed");
    assert_eq!(answer.error_fields(), vec!["display_name"]);
    let user = app.register(&unique_email()).await;
    let before = app.event_count().await;
    let answer = app
        .post(
            &format!("/v1/users/{user}/addresses"),
            json!({"label": "home", "line1": "1 Main St", "city": "Berlin\u{2066}x\u{2069}",
                   "postal_code": "10115", "country": "DE"}),
        )
        .await;
    answer.assert_problem(422, "validation-failed");
    assert_eq!(answer.error_fields(), vec!["city"]);
    let answer = app
        .post(
            &format!("/v1/users/{user}/deactivate"),
            json!({"reason": "gone\u{202D}"}),
        )
        .await;
    answer.assert_problem(422, "validation-failed");
    assert_eq!(answer.error_fields(), vec!["reason"]);
    assert_eq!(app.event_count().await, before);
}

fn request(payload: Value) -> AppendRequest {
    AppendRequest {
        aggregate_type: "Probe".to_owned(),
        aggregate_id: Uuid::now_v7().to_string(),
        expected_sequence: 0,
        events: vec![NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "Probed".to_owned(),
            event_version: "1.0".to_owned(),
            payload,
            metadata: json!({}),
        }],
        snapshot: None,
        claims: Vec::new(),
        idempotency: None,
        credential: None,
    }
}

#[tokio::test]
async fn a_refused_value_fails_only_its_own_request_of_a_group_commit() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), 0, 24).with_group_commit(1, 64);
    let mut requests: Vec<AppendRequest> = (0..40).map(|i| request(json!({"n": i}))).collect();
    requests.insert(17, request(json!({"note": "a\u{0}b"})));
    let results = join_all(requests.into_iter().map(|r| store.append(r))).await;
    for (i, result) in results.iter().enumerate() {
        if i == 17 {
            assert!(
                matches!(result, Err(AppendError::InvalidData(_))),
                "{result:?}"
            );
        } else {
            assert!(result.is_ok(), "request {i}: {result:?}");
        }
    }
    // Alone, outside a group commit, the answer is the same.
    let alone = EventStore::new(app.pool.clone(), 0, 24);
    let result = alone.append(request(json!({"k\u{0}": 1}))).await;
    assert!(
        matches!(result, Err(AppendError::InvalidData(_))),
        "{result:?}"
    );
    assert_eq!(app.event_count().await, 40);
}
