//! The events table: database-assigned columns, metadata, snapshots, the command path's
//! one-statement load, and an unreachable database.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::app::{spawn_app, spawn_app_with, unique_email, Auth};

#[tokio::test]
async fn events_carry_ids_positions_transaction_ids_and_metadata() {
    let app = spawn_app().await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // An `X-Actor` header is ignored: the actor is who the token says (here, a self-registration
    // without a token, so the new user).
    let headers = [
        ("X-Actor", "process-manager"),
        ("X-Correlation-Id", "corr-123"),
        ("X-Causation-Id", "cause-9"),
        ("traceparent", trace),
    ];
    let body =
        json!({"email": unique_email(), "display_name": "Meta", "password": "customer-password-1"});
    let answer = app
        .send_as(
            Auth::Anonymous,
            Method::POST,
            "/v1/users",
            Some(body),
            &headers,
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let row: (uuid::Uuid, i64, String, serde_json::Value, String) = sqlx::query_as(
        "SELECT event_id, global_position, tx_id::text, metadata, event_type FROM events WHERE aggregate_id = $1",
    )
    .bind(answer.id())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let (event_id, position, tx_id, metadata, event_type) = row;
    assert_eq!(event_id.get_version_num(), 7);
    assert_eq!(position, answer.body["position"].as_i64().unwrap());
    assert!(tx_id.parse::<u64>().unwrap() > 0);
    assert_eq!(event_type, "UserRegistered");
    assert_eq!(metadata["event_id"], event_id.to_string());
    assert_eq!(metadata["actor"], format!("user:{}", answer.id()));
    assert_eq!(metadata["correlation_id"], "corr-123");
    assert_eq!(metadata["causation_id"], "cause-9");
    let traceparent = metadata["traceparent"].as_str().unwrap();
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(metadata["occurred_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn commands_without_correlation_headers_get_fresh_correlation_and_trace() {
    let app = spawn_app().await;
    let answer = app
        .post(
            "/v1/users",
            json!({"email": unique_email(), "display_name": "Anon", "password": "customer-password-1"}),
        )
        .await;
    let metadata: serde_json::Value =
        sqlx::query_scalar("SELECT metadata FROM events WHERE aggregate_id = $1")
            .bind(answer.id())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    // Sent with the admin's token: the actor is its subject.
    assert_eq!(metadata["actor"], format!("user:{}", uuid::Uuid::nil()));
    assert!(uuid::Uuid::parse_str(metadata["correlation_id"].as_str().unwrap()).is_ok());
    assert_eq!(metadata["traceparent"].as_str().unwrap().len(), 55);
}

#[tokio::test]
async fn snapshots_are_written_and_used() {
    let app = spawn_app_with(|s| s.event_store.snapshot_every = 3).await;
    let user = app.register(&unique_email()).await;
    for i in 0..6 {
        let answer = app
            .post(
                &format!("/v1/users/{user}/profile"),
                json!({"display_name": format!("Name {i}")}),
            )
            .await;
        assert_eq!(answer.version(), i + 2);
    }
    let (last, count): (i64, i64) = sqlx::query_as(
        "SELECT last_sequence, current_snapshot FROM snapshots WHERE aggregate_id = $1",
    )
    .bind(&user)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((last, count), (6, 2));
    // The state rebuilt from the snapshot plus later events still enforces the rules.
    let roles = format!("/v1/users/{user}/roles");
    app.post(&roles, json!({"role": "customer"}))
        .await
        .assert_problem(409, "role-already-granted");
    assert_eq!(
        app.post(&roles, json!({"role": "admin"})).await.version(),
        8
    );
}

#[tokio::test]
async fn an_unreachable_database_is_503_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.database.url = "postgres://postgres@127.0.0.1:1/nowhere".to_owned().into();
        s.database.migrate_on_start = false;
        s.database.acquire_timeout_ms = 300;
    })
    .await;
    let answer = app
        .post(
            "/v1/users",
            json!({"email": unique_email(), "display_name": "Down", "password": "customer-password-1"}),
        )
        .await;
    answer.assert_problem(503, "service-unavailable");
    assert_eq!(answer.headers.get("retry-after").unwrap(), "2");
    let (status, _) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn old_event_versions_are_upcast_on_load() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7().to_string();
    let fixture = include_str!("../../../schemas/fixtures/UserRegistered.v1.json");
    let payload: serde_json::Value = serde_json::from_str(fixture).unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, event_id)
         VALUES ('user', $1, 1, 'UserRegistered', '1', $2, '{}', $3)",
    )
    .bind(&id)
    .bind(payload)
    .bind(uuid::Uuid::now_v7())
    .execute(&app.pool)
    .await
    .unwrap();
    // Version 1 did not record roles; upcast, the user has the customer role.
    app.post(
        &format!("/v1/users/{id}/roles"),
        json!({"role": "customer"}),
    )
    .await
    .assert_problem(409, "role-already-granted");
    let granted = app
        .post(&format!("/v1/users/{id}/roles"), json!({"role": "admin"}))
        .await;
    assert_eq!(granted.version(), 2);
}

/// The relay and replay read stored rows and their header metadata by position; a select
/// whose columns are not in the order its reader expects is an error, not swapped fields.
#[tokio::test]
async fn rows_read_by_position_refuse_columns_in_another_order() {
    let app = spawn_app().await;
    let metadata = concat!(
        "'t' AS occurred_at, 'a' AS actor, 'c' AS correlation_id, 'd' AS causation_id, ",
        "'p' AS traceparent"
    );
    let row = sqlx::query(&format!("SELECT 1 AS x, {metadata}"))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let read = infra::event_store::HeaderMetadata::from_row(&row).unwrap();
    assert_eq!(
        (
            read.occurred_at.as_str(),
            read.actor.as_str(),
            read.traceparent.as_str()
        ),
        ("t", "a", "p")
    );
    let swapped = metadata.replace(
        "'a' AS actor, 'c' AS correlation_id",
        "'c' AS correlation_id, 'a' AS actor",
    );
    let row = sqlx::query(&format!("SELECT 1 AS x, {swapped}"))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(matches!(
        infra::event_store::HeaderMetadata::from_row(&row),
        Err(sqlx::Error::ColumnNotFound(name)) if name == "actor"
    ));
    let short = sqlx::query("SELECT 'a' AS actor")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(infra::event_store::HeaderMetadata::from_row(&short).is_err());
}

/// The command bus loads an aggregate's snapshot and later events in one statement; what it
/// loads equals what cqrs-es's own load over postgres-es gives, for streams with and without a
/// snapshot, and a snapshot that no longer deserializes is rebuilt from every event.
#[tokio::test]
async fn one_statement_loads_equal_cqrs_es_loads() {
    use cqrs_es::persist::PersistedEventStore;
    use cqrs_es::EventStore as _;
    use domain::User;
    use infra::event_store::{EventStore, PgEventRepository};

    let app = spawn_app_with(|s| s.event_store.snapshot_every = 3).await;
    let events = EventStore::new(app.pool.clone(), 3, 24);
    let availability = infra::db::Availability::new((*app.pool.connect_options()).clone());
    let bus = command_api::core::CommandBus::new(events.clone(), availability);
    let cqrs = |snapshots: bool| {
        let repository = PgEventRepository::new(events.clone());
        let store = if snapshots {
            PersistedEventStore::<_, User>::new_snapshot_store(repository, 3)
        } else {
            PersistedEventStore::<_, User>::new_event_store(repository)
        };
        store.with_upcasters(domain::upcast::upcasters())
    };
    // Users with 1, 3 (a snapshot, nothing after it) and 8 events (a snapshot at 6, two after).
    let mut users = Vec::new();
    for renames in [0, 2, 7] {
        let user = app.register(&unique_email()).await;
        for i in 0..renames {
            let path = format!("/v1/users/{user}/profile");
            let answer = app
                .post(&path, json!({"display_name": format!("Name {i}")}))
                .await;
            assert_eq!(answer.version(), i + 2);
        }
        users.push((user, renames + 1));
    }
    let snapshots: i64 =
        sqlx::query_scalar("SELECT count(*) FROM snapshots WHERE aggregate_id = ANY($1)")
            .bind(users.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(snapshots, 2, "the 3- and 8-event users have snapshots");
    for (user, version) in &users {
        let id: uuid::Uuid = user.parse().unwrap();
        let loaded = bus
            .load::<User>(id)
            .await
            .unwrap()
            .expect("the user exists");
        let expected = cqrs(true).load_aggregate(user).await.unwrap();
        assert_eq!(expected.current_sequence, *version as usize);
        assert_eq!(loaded, expected.aggregate, "user with {version} events");
        let name = match version {
            1 => "Test User".to_owned(),
            v => format!("Name {}", v - 2),
        };
        let state = serde_json::to_value(&loaded).unwrap();
        assert_eq!(state["state"]["display_name"], json!(name), "{state}");
    }
    // A snapshot of an older shape: the aggregate is rebuilt from all eight events.
    let (user, _) = &users[2];
    sqlx::query("UPDATE snapshots SET payload = '{\"state\": 5}' WHERE aggregate_id = $1")
        .bind(user)
        .execute(&app.pool)
        .await
        .unwrap();
    let loaded = bus
        .load::<User>(user.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let expected = cqrs(true).load_aggregate(user).await.unwrap();
    assert_eq!(loaded, expected.aggregate);
    assert_eq!(
        loaded,
        cqrs(false).load_aggregate(user).await.unwrap().aggregate
    );
    // And a command on it is decided on that state, at the right version.
    let answer = app
        .post(
            &format!("/v1/users/{user}/profile"),
            json!({"display_name": "After"}),
        )
        .await;
    assert_eq!(answer.version(), 9);
    // An id with no events is no aggregate.
    assert!(bus
        .load::<User>(uuid::Uuid::now_v7())
        .await
        .unwrap()
        .is_none());
}
