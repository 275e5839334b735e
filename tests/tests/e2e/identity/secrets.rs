//! Passwords and their hashes never leave the credentials table: after registrations, logins
//! (good and bad), a reset and the whole pipeline (relay, Kafka, projector, read models), no
//! event, topic message, read-model row or log line holds one.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::support::app::{registration, unique_email, Auth};
use crate::support::kafka::consume;
use crate::support::processes::CommandApiProcess;
use crate::support::projector::wait_until_projected;
use crate::support::query::spawn_read_stack;
use crate::support::stack::wait_until_published;

async fn post(client: &reqwest::Client, url: String, body: serde_json::Value) -> StatusCode {
    client
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("request")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_password_or_hash_reaches_an_event_a_topic_a_read_model_or_a_log() {
    let read = spawn_read_stack(|_| {}).await;
    let app = &read.stack.app;
    let canary = |what: &str| format!("canary-{what}-{}", Uuid::now_v7().simple());
    let (first, wrong, reset, logged, logged_wrong) = (
        canary("first"),
        canary("wrong"),
        canary("reset"),
        canary("logged"),
        canary("logged-wrong"),
    );

    // Through the in-process command API: register, log in, fail, reset.
    let email = unique_email();
    let mut body = registration(&email);
    body["password"] = json!(first);
    assert_eq!(
        app.post_as(Auth::Anonymous, "/v1/users", body).await.status,
        StatusCode::CREATED
    );
    let token =
        |password: &str| json!({"grant_type": "password", "email": email, "password": password});
    assert_eq!(
        app.post_as(Auth::Anonymous, "/v1/auth/token", token(&first))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.post_as(Auth::Anonymous, "/v1/auth/token", token(&wrong))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    app.post_as(
        Auth::Anonymous,
        "/v1/auth/password-reset",
        json!({"email": email}),
    )
    .await;
    let mut reset_token = None;
    for _ in 0..100 {
        reset_token = sqlx::query_scalar::<_, String>(
            "SELECT payload->>'token' FROM notification_outbox WHERE recipient = $1",
        )
        .bind(&email)
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        if reset_token.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let confirmed = app
        .post_as(
            Auth::Anonymous,
            "/v1/auth/password-reset/confirm",
            json!({"token": reset_token.expect("a reset token"), "new_password": reset}),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::NO_CONTENT);

    // Through a command API process logging everything at debug level.
    let log = std::env::temp_dir().join(format!("secrets-{}.log", Uuid::now_v7()));
    let process = CommandApiProcess::start_logged(&read.stack.settings, "debug", &log);
    process.wait_ready().await;
    let client = reqwest::Client::new();
    let logged_email = unique_email();
    let mut body = registration(&logged_email);
    body["password"] = json!(logged);
    assert_eq!(
        post(&client, format!("{}/v1/users", process.url), body).await,
        StatusCode::CREATED
    );
    for (password, expected) in [
        (&logged, StatusCode::OK),
        (&logged_wrong, StatusCode::UNAUTHORIZED),
    ] {
        let status = post(
            &client,
            format!("{}/v1/auth/token", process.url),
            json!({"grant_type": "password", "email": logged_email, "password": password}),
        )
        .await;
        assert_eq!(status, expected);
    }
    drop(process);

    let hashes: Vec<String> = sqlx::query_scalar("SELECT password_hash FROM credentials")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(hashes.len(), 2);
    // The PHC string and its hash part alone (the part after the last `$`).
    let mut needles: Vec<String> = vec![first, wrong, reset, logged, logged_wrong];
    for hash in &hashes {
        needles.push(hash.clone());
        needles.push(hash.rsplit('$').next().unwrap().to_owned());
    }

    wait_until_published(&app.pool, Duration::from_secs(60)).await;
    wait_until_projected(&app.pool, Duration::from_secs(60)).await;

    // Every table but the credentials themselves, row by row as text.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> 'credentials'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(tables.iter().any(|t| t == "events") && tables.iter().any(|t| t.starts_with("rm_")));
    for table in &tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT to_jsonb(t)::text FROM \"{table}\" t"))
                .fetch_all(&app.pool)
                .await
                .unwrap();
        for row in rows {
            for needle in &needles {
                assert!(
                    !row.contains(needle.as_str()),
                    "{table} holds a secret: {row}"
                );
            }
        }
    }

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let topics = infra::kafka::event_topics(&read.stack.settings.kafka);
    let messages = consume(
        &read.stack.settings.kafka.bootstrap_servers,
        &topics,
        read.stack.settings.kafka.partitions,
        events as usize,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        messages.len() >= events as usize,
        "{} of {events} messages read",
        messages.len()
    );
    for message in &messages {
        let text = String::from_utf8_lossy(&message.payload);
        let headers = format!("{:?}", message.headers);
        for needle in &needles {
            assert!(
                !text.contains(needle.as_str()) && !headers.contains(needle.as_str()),
                "a message on {} holds a secret",
                message.topic
            );
        }
    }

    let logs = std::fs::read_to_string(&log).expect("the process log");
    let _ = std::fs::remove_file(&log);
    assert!(
        logs.lines().count() > 5,
        "the process logged almost nothing:\n{logs}"
    );
    for needle in &needles {
        assert!(!logs.contains(needle.as_str()), "the log holds a secret");
    }
}
