//! A replay's scan takes each event's metadata fields as their texts and reads again, checked,
//! those that may be values of other kinds: the audit rows it builds hold what the relay's
//! headers carry (a field that is not a string is empty), whatever kind each field is.

use infra::event_store::HeaderMetadata;
use serde_json::{json, Value};
use sqlx::Row;

use crate::support::database::{insert_user_registered, TestDatabase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_reads_metadata_fields_of_every_kind_as_the_headers_do() {
    let db = TestDatabase::create().await;
    // One connection, which the first pass's writer holds while the scan runs: the second
    // read of unsure rows must not need one from the pool.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&db.url)
        .await
        .unwrap();
    infra::db::migrate(&pool).await.unwrap();
    let at = "2026-12-02T01:04:12.742074Z";
    let metadata: Vec<Value> = vec![
        json!({"occurred_at": at, "actor": "service:a", "correlation_id": "c", "causation_id": "d",
            "traceparent": "00-0c53cbe5c1924eb99b92bf2fed399399-638408f961b840f4-01"}),
        // Other kinds, whose texts a string could also have.
        json!({"occurred_at": at, "actor": 7, "correlation_id": true, "causation_id": {"a": [1]},
            "traceparent": [null]}),
        // Strings that read like other kinds, kept as they are.
        json!({"occurred_at": at, "actor": "7", "correlation_id": "true", "causation_id": "{\"a\": [1]}",
            "traceparent": "[null]"}),
        // Missing and null fields.
        json!({"occurred_at": at, "actor": null, "causation_id": -1.5e3}),
    ];
    for (n, metadata) in metadata.iter().enumerate() {
        let id = uuid::Uuid::now_v7();
        let payload = json!({"type": "UserRegistered", "email": format!("scan{n}@example.com"),
            "display_name": "Scan", "roles": ["customer"]});
        insert_user_registered(&pool, id, payload, metadata.clone()).await;
    }
    let audit = projections::read_model("audit").unwrap();
    let lease = projections::lease::Lease::take(&pool).await.unwrap();
    let reports = projections::replay::replay(
        &pool,
        &lease,
        &[audit],
        projections::replay::Origin::Store,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(reports[0].events, 4, "{:?}", reports[0].failed);
    let rows = sqlx::query(
        "SELECT actor, correlation_id, causation_id, traceparent FROM rm_audit
         ORDER BY global_position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let read: Vec<[String; 4]> = rows
        .iter()
        .map(|row| [0, 1, 2, 3].map(|i| row.get::<String, _>(i)))
        .collect();
    let expected: Vec<[String; 4]> = metadata
        .iter()
        .map(|metadata| {
            let h = HeaderMetadata::of_json(metadata);
            [h.actor, h.correlation_id, h.causation_id, h.traceparent]
        })
        .collect();
    assert_eq!(read, expected);
    assert_eq!(
        expected[1],
        [String::new(), String::new(), String::new(), String::new()]
    );
    assert_eq!(expected[2][0], "7");
}
