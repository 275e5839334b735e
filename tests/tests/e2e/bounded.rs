//! Bounded resources: stored positions that only move forward.

use crate::support::app::spawn_app;

#[tokio::test]
async fn projection_offsets_never_move_backwards() {
    let app = spawn_app().await;
    let save = |offset: i64| {
        projections::offsets::save_offset(&app.pool, "probe", "events.user", 0, offset)
    };
    save(10).await.unwrap();
    // A batch applied again after a rewind records an older position.
    save(4).await.unwrap();
    let stored: i64 = sqlx::query_scalar(
        "SELECT next_offset FROM projection_offsets WHERE projection = 'probe' AND partition = 0",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 10);
    save(12).await.unwrap();
    let stored: i64 = sqlx::query_scalar(
        "SELECT next_offset FROM projection_offsets WHERE projection = 'probe' AND partition = 0",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 12);
}

#[tokio::test]
async fn relay_batches_are_capped_by_bytes_as_well_as_count() {
    let app = spawn_app().await;
    for _ in 0..5 {
        app.register(&crate::support::app::unique_email()).await;
    }
    let start = relay::tail::Checkpoint {
        tx_id: 0,
        global_position: 0,
    };
    // A transaction still open anywhere on the server (another test's) holds events back
    // from the relay until it ends.
    let mut all = Vec::new();
    for _ in 0..100 {
        all = relay::tail::fetch(&app.pool, &start, 100, 1 << 20)
            .await
            .unwrap();
        if all.len() == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(all.len(), 5);
    let counted = relay::tail::fetch(&app.pool, &start, 2, 1 << 20)
        .await
        .unwrap();
    assert_eq!(counted.len(), 2);
    // Each event is some hundred bytes: a 1-byte cap still reads one (never none), and a cap
    // of about two events' size reads two or three, in order.
    let one = relay::tail::fetch(&app.pool, &start, 100, 1).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].event_id, all[0].event_id);
    // The cap counts the stored size of payload and metadata.
    let two: i64 = sqlx::query_scalar(
        "SELECT sum(pg_column_size(payload) + pg_column_size(metadata))::bigint FROM events
         WHERE event_id = ANY($1)",
    )
    .bind(vec![all[0].event_id, all[1].event_id])
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let capped = relay::tail::fetch(&app.pool, &start, 100, two)
        .await
        .unwrap();
    assert!((2..=3).contains(&capped.len()), "{}", capped.len());
    let rest = relay::tail::fetch(&app.pool, &capped.last().unwrap().checkpoint, 100, 1 << 20)
        .await
        .unwrap();
    assert_eq!(capped.len() + rest.len(), 5);
}

#[tokio::test]
async fn a_revenue_total_that_would_overflow_is_parked_not_wrapped() {
    use projections::Projection as _;
    let app = spawn_app().await;
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    sqlx::query(
        "INSERT INTO rm_revenue_daily (day, currency, captured_minor) VALUES ('2026-11-23', 'EUR', $1)",
    )
    .bind(i64::MAX - 10)
    .execute(&app.pool)
    .await
    .unwrap();
    let envelope = projections::envelope::Envelope {
        source: projections::envelope::Source {
            topic: "events.payment".to_owned(),
            partition: 0,
            offset: 0,
        },
        event_id: uuid::Uuid::now_v7(),
        event_type: "PaymentCaptured".to_owned(),
        event_version: "1".to_owned(),
        aggregate_type: "payment".to_owned(),
        aggregate_id: uuid::Uuid::now_v7().to_string(),
        sequence: 3,
        global_position: 1,
        occurred_at: at,
        actor: "test".to_owned(),
        correlation_id: "c".to_owned(),
        causation_id: "c".to_owned(),
        traceparent: String::new(),
        parent: None,
        payload: serde_json::json!({"type": "PaymentCaptured", "order_id": uuid::Uuid::now_v7(),
            "amount_minor": 100, "currency": "EUR", "captured_total_minor": 100}),
    };
    let mut conn = app.pool.acquire().await.unwrap();
    let applied = projections::models::analytics::Analytics
        .apply(&mut conn, &envelope)
        .await;
    assert!(
        matches!(applied, Err(projections::ApplyError::Overflow { .. })),
        "{applied:?}"
    );
    let total: i64 = sqlx::query_scalar("SELECT captured_minor FROM rm_revenue_daily")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(total, i64::MAX - 10);
}
