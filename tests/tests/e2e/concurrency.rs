//! Races: 32 parallel commands on one order, and concurrent registrations of one email.

use std::collections::BTreeSet;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::app::{spawn_app, unique_email};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_commands_on_one_order_never_share_a_version() {
    let app = spawn_app().await;
    let (_, order) = app.user_and_order().await;
    let steps = [
        ("confirm", None),
        ("start-processing", None),
        (
            "ship",
            Some(json!({"carrier": "UPS", "tracking_number": "1Z999"})),
        ),
        ("deliver", None),
        ("cancel", Some(json!({"reason": "race"}))),
    ];
    let requests = (0..32).map(|i| {
        let (step, body) = steps[i % steps.len()].clone();
        let path = format!("/v1/orders/{order}/{step}");
        let app = &app;
        async move { app.send(Method::POST, &path, body, &[]).await }
    });
    let answers = join_all(requests).await;
    let mut versions = BTreeSet::new();
    for answer in &answers {
        assert!(
            answer.status.as_u16() < 500,
            "5xx under contention: {}",
            answer.body
        );
        match answer.status {
            StatusCode::OK => assert!(versions.insert(answer.version()), "version reused"),
            StatusCode::CONFLICT => {
                let kind = answer.body["type"].as_str().unwrap_or_default();
                assert!(
                    kind.ends_with("version-conflict")
                        || kind.ends_with("illegal-order-transition"),
                    "unexpected conflict {kind}"
                );
            }
            other => panic!("unexpected status {other}: {}", answer.body),
        }
    }
    assert!(!versions.is_empty(), "no command won");
    let stored: Vec<i64> = sqlx::query_scalar(
        "SELECT sequence FROM events WHERE aggregate_id = $1 AND sequence > 1 ORDER BY sequence",
    )
    .bind(&order)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        versions.into_iter().collect::<Vec<_>>(),
        "events are not exactly the successes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_one_email_have_one_winner() {
    let app = spawn_app().await;
    let email = unique_email();
    let requests = (0..16).map(|i| {
        let app = &app;
        let body = json!({"email": email.to_uppercase(), "display_name": format!("racer {i}"), "password": "customer-password-1"});
        async move { app.post("/v1/users", body).await }
    });
    let answers = join_all(requests).await;
    let winners = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    assert_eq!(winners, 1);
    for loser in answers.iter().filter(|a| a.status != StatusCode::CREATED) {
        loser.assert_problem(409, "email-taken");
    }
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_command_in_a_group_commit_does_not_fail_the_others() {
    let app = spawn_app().await;
    let taken = unique_email();
    app.register(&taken).await;
    let requests = (0..40).map(|i| {
        let app = &app;
        let email = if i % 4 == 0 {
            taken.clone()
        } else {
            unique_email()
        };
        async move {
            app.post(
                "/v1/users",
                json!({"email": email, "display_name": "batch", "password": "customer-password-1"}),
            )
            .await
        }
    });
    let answers = join_all(requests).await;
    for (i, answer) in answers.iter().enumerate() {
        if i % 4 == 0 {
            answer.assert_problem(409, "email-taken");
        } else {
            assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        }
    }
    assert_eq!(app.event_count().await, 31);
    let positions: i64 = sqlx::query_scalar("SELECT count(DISTINCT global_position) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(positions, 31);
}
