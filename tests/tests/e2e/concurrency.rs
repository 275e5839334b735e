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

/// A command PostgreSQL rolls back as the loser of a deadlock is a 503 `rolled-back` with
/// `Retry-After` and writes nothing; before, it was a 500. The deadlock is the one two users
/// trading emails can make: each releases its own email's claim and then waits to claim the
/// other's. Here a session of the test plays the second user, holding the release of one
/// claim while the command releases the other, and the command (waiting first, so checked for
/// a deadlock first) loses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_lost_to_a_deadlock_is_a_503_and_writes_nothing() {
    let app = spawn_app().await;
    let (mine, theirs) = (unique_email(), unique_email());
    let me = app.register(&mine).await;
    let them = app.register(&theirs).await;
    let key_of = |user: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT key FROM unique_claims WHERE scope = 'user_email' AND aggregate_id = $1",
            )
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (my_key, their_key) = (key_of(me.clone()).await, key_of(them.clone()).await);
    let events_before = app.event_count().await;
    let mut other = app.pool.begin().await.unwrap();
    let other_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *other)
        .await
        .unwrap();
    // This session waits long before checking for a deadlock: the command's check comes first.
    sqlx::query("SET LOCAL deadlock_timeout = '30s'")
        .execute(&mut *other)
        .await
        .unwrap();
    sqlx::query("DELETE FROM unique_claims WHERE scope = 'user_email' AND key = $1")
        .bind(&their_key)
        .execute(&mut *other)
        .await
        .unwrap();
    let change = {
        let (url, token, path) = (
            app.url.clone(),
            crate::support::auth::admin_token(),
            format!("/v1/users/{me}/email"),
        );
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}{path}"))
                .bearer_auth(token)
                .json(&json!({ "email": theirs }))
                .send()
                .await
                .unwrap()
        })
    };
    // The command has released its claim and waits to claim the email this session released.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        // Blocked by this session: other tests share the cluster, and wait on locks too.
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(other_pid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the command never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Now claim the command's email: each waits for the other.
    let claimed = sqlx::query(
        "INSERT INTO unique_claims (scope, key, aggregate_type, aggregate_id)
         VALUES ('user_email', $1, 'user', $2)",
    )
    .bind(&my_key)
    .bind(&them)
    .execute(&mut *other)
    .await;
    let answer = change.await.unwrap();
    // The command rolled back, so its email's claim is back and this session's insert meets it.
    assert!(claimed.is_err(), "the session's claim went through");
    other.rollback().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers().contains_key("retry-after"));
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["type"], "/problems/rolled-back", "{body}");
    assert_eq!(app.event_count().await, events_before);
    assert_eq!(key_of(me).await, my_key);
}
