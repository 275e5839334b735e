//! Every read model's in-memory fold (replay's and verify's fast path) leaves the same rows as
//! its `apply`, event by event, on a log with every event type and the awkward cases: an
//! update before the row exists, a repeated creation, a duplicate role, removals, a revenue
//! total that would overflow, a capture after a refund, and a payload no domain event decodes.

use chrono::{DateTime, Duration, Utc};
use projections::envelope::{Envelope, Source};
use projections::{ReadModel, Table};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::support::database::TestDatabase;

fn envelope(n: i64, aggregate: (&str, Uuid, i64), payload: Value, at: DateTime<Utc>) -> Envelope {
    Envelope {
        source: Source {
            topic: "events".into(),
            partition: 0,
            offset: n,
        },
        event_id: Uuid::new_v4(),
        event_type: payload["type"].as_str().unwrap_or("Unknown").to_owned(),
        event_version: "1".into(),
        aggregate_type: aggregate.0.into(),
        aggregate_id: aggregate.1.to_string(),
        sequence: aggregate.2,
        global_position: n,
        occurred_at: at,
        actor: "tester".into(),
        correlation_id: "c\tw\\ith\nescapes".into(),
        causation_id: "cause".into(),
        traceparent: String::new(),
        parent: None,
        payload,
    }
}

fn log() -> Vec<Envelope> {
    let (u1, u2, o1, o2, p1, p2, p3) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let (a1, a2) = (Uuid::new_v4(), Uuid::new_v4());
    // A payment captured before its order is consumed (topics are read in any relative order).
    let (o3, p4) = (Uuid::new_v4(), Uuid::new_v4());
    // A payment refunded in part and then captured further (the rest of its authorization).
    let p5 = Uuid::new_v4();
    let t0: DateTime<Utc> = "2026-11-30T23:59:59.123456789Z".parse().unwrap();
    let address = json!({"label": "home", "line1": "1 Main St", "line2": null, "city": "Berlin",
        "postal_code": "10115", "country": "DE"});
    let placed = |customer: Uuid, currency: &str| {
        json!({"type": "OrderPlaced", "customer_id": customer, "currency": currency,
            "total_minor": 3000, "shipping_address": address,
            "items": [{"sku": "SKU-1", "quantity": 2, "unit_price_minor": 1500, "line_total_minor": 3000}]})
    };
    let big = i64::MAX - 10;
    let events: Vec<((&str, Uuid, i64), Value)> = vec![
        (
            ("user", u2, 2),
            json!({"type": "UserProfileChanged", "display_name": "Early", "preferences": null}),
        ),
        (
            ("user", u1, 1),
            json!({"type": "UserRegistered", "email": "Ann@Example.com", "display_name": "Ann", "roles": ["customer"]}),
        ),
        (
            ("user", u1, 2),
            json!({"type": "UserRegistered", "email": "other@example.com", "display_name": "Other", "roles": []}),
        ),
        (
            ("user", u1, 3),
            json!({"type": "UserProfileChanged", "display_name": "Ann \"Tab\"\tB", "preferences": {"newsletter": true, "lang": "de"}}),
        ),
        (
            ("user", u1, 4),
            json!({"type": "UserProfileChanged", "display_name": null, "preferences": null}),
        ),
        (
            ("user", u1, 5),
            json!({"type": "UserEmailChanged", "previous_email": "Ann@Example.com", "email": "ann.b@example.com"}),
        ),
        (
            ("user", u1, 6),
            json!({"type": "UserAddressAdded", "address_id": a1, "address": address}),
        ),
        (
            ("user", u1, 7),
            json!({"type": "UserAddressAdded", "address_id": a2, "address": address}),
        ),
        (
            ("user", u1, 8),
            json!({"type": "UserAddressRemoved", "address_id": a1}),
        ),
        (
            ("user", u1, 9),
            json!({"type": "UserRoleGranted", "role": "support"}),
        ),
        (
            ("user", u1, 10),
            json!({"type": "UserRoleGranted", "role": "customer"}),
        ),
        (
            ("user", u1, 11),
            json!({"type": "UserRoleRevoked", "role": "customer"}),
        ),
        (
            ("user", u1, 12),
            json!({"type": "UserDeactivated", "reason": "asked to"}),
        ),
        (
            ("user", u2, 1),
            json!({"type": "UserRegistered", "email": "bo@example.com", "display_name": "Bo", "roles": ["customer", "admin"]}),
        ),
        (
            ("user", u2, 3),
            json!({"type": "UserRoleRevoked", "role": "support"}),
        ),
        (("order", o2, 2), json!({"type": "OrderConfirmed"})),
        (("order", o1, 1), placed(u1, "EUR")),
        (("order", o1, 2), json!({"type": "OrderConfirmed"})),
        (("order", o1, 3), json!({"type": "OrderProcessingStarted"})),
        (
            ("order", o1, 4),
            json!({"type": "OrderShipped", "carrier": "DHL", "tracking_number": "T1"}),
        ),
        (("order", o1, 5), json!({"type": "OrderDelivered"})),
        (("order", o2, 1), placed(u2, "USD")),
        (
            ("order", o2, 3),
            json!({"type": "OrderCancelled", "reason": "changed mind", "cancelled_from": "created"}),
        ),
        (
            ("order", o2, 4),
            json!({"type": "OrderPlaced", "customer_id": u2}),
        ),
        (
            ("payment", p2, 2),
            json!({"type": "PaymentFailed", "order_id": o2, "reason": "declined"}),
        ),
        (
            ("payment", p1, 1),
            json!({"type": "PaymentInitiated", "order_id": o1, "amount_minor": 3000, "currency": "EUR", "method": "card"}),
        ),
        (
            ("payment", p1, 2),
            json!({"type": "PaymentAuthorized", "order_id": o1, "amount_minor": 3000, "currency": "EUR"}),
        ),
        (
            ("payment", p1, 3),
            json!({"type": "PaymentCaptured", "order_id": o1, "amount_minor": 3000, "currency": "EUR", "captured_total_minor": 3000}),
        ),
        (
            ("payment", p1, 4),
            json!({"type": "PaymentRefunded", "order_id": o1, "amount_minor": 1000, "currency": "EUR", "reason": "damaged", "refunded_total_minor": 1000, "fully_refunded": false}),
        ),
        (
            ("payment", p1, 5),
            json!({"type": "PaymentRefunded", "order_id": o1, "amount_minor": 2000, "currency": "EUR", "reason": "damaged", "refunded_total_minor": 3000, "fully_refunded": true}),
        ),
        (
            ("payment", p2, 1),
            json!({"type": "PaymentInitiated", "order_id": o2, "amount_minor": 3000, "currency": "USD", "method": "card"}),
        ),
        (
            ("payment", p2, 3),
            json!({"type": "PaymentFailed", "order_id": o2, "reason": "declined"}),
        ),
        (
            ("payment", p3, 1),
            json!({"type": "PaymentInitiated", "order_id": o2, "amount_minor": big, "currency": "USD", "method": "card"}),
        ),
        (
            ("payment", p3, 2),
            json!({"type": "PaymentCaptured", "order_id": o2, "amount_minor": big, "currency": "USD", "captured_total_minor": big}),
        ),
        (
            ("payment", p3, 3),
            json!({"type": "PaymentCaptured", "order_id": o2, "amount_minor": big, "currency": "USD", "captured_total_minor": big}),
        ),
        (
            ("payment", p4, 1),
            json!({"type": "PaymentInitiated", "order_id": o3, "amount_minor": 3000, "currency": "EUR", "method": "card"}),
        ),
        (
            ("payment", p4, 2),
            json!({"type": "PaymentCaptured", "order_id": o3, "amount_minor": 3000, "currency": "EUR", "captured_total_minor": 3000}),
        ),
        (
            ("payment", p5, 1),
            json!({"type": "PaymentInitiated", "order_id": o1, "amount_minor": 3000, "currency": "EUR", "method": "card"}),
        ),
        (
            ("payment", p5, 2),
            json!({"type": "PaymentAuthorized", "order_id": o1, "amount_minor": 3000, "currency": "EUR"}),
        ),
        (
            ("payment", p5, 3),
            json!({"type": "PaymentCaptured", "order_id": o1, "amount_minor": 1000, "currency": "EUR", "captured_total_minor": 1000}),
        ),
        (
            ("payment", p5, 4),
            json!({"type": "PaymentRefunded", "order_id": o1, "amount_minor": 500, "currency": "EUR", "reason": "damaged", "refunded_total_minor": 500, "fully_refunded": false}),
        ),
        (
            ("payment", p5, 5),
            json!({"type": "PaymentCaptured", "order_id": o1, "amount_minor": 2000, "currency": "EUR", "captured_total_minor": 3000}),
        ),
        (("order", o3, 1), placed(u1, "EUR")),
        (("order", o3, 2), placed(u2, "USD")),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, (aggregate, payload))| {
            envelope(
                i as i64 + 1,
                aggregate,
                payload,
                t0 + Duration::minutes(i as i64),
            )
        })
        .collect()
}

async fn tables_in(conn: &mut PgConnection, model: &dyn ReadModel, schema: &str) {
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *conn)
        .await
        .unwrap();
    for table in model.tables() {
        sqlx::query(&table.create_unindexed_sql(schema))
            .execute(&mut *conn)
            .await
            .unwrap();
        table.add_indexes(&mut *conn, schema).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fold_leaves_the_rows_its_apply_leaves() {
    let db = TestDatabase::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    infra::db::migrate(&pool).await.unwrap();
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let log = log();
    // The events some model must refuse: a display name with a control character (the domain's
    // value refuses it, so the event does not decode), the OrderPlaced that lacks its items, and
    // the second capture of `i64::MAX - 10`, which overflows every sum of money.
    let position = |found: &dyn Fn(&Envelope) -> bool| {
        log.iter()
            .find(|e| found(e))
            .map(|e| e.global_position)
            .unwrap()
    };
    let bad_name = position(&|e| {
        e.payload["display_name"]
            .as_str()
            .is_some_and(|n| n.contains('\t'))
    });
    let undecodable =
        position(&|e| e.event_type == "OrderPlaced" && e.payload.get("items").is_none());
    let overflowing = position(&|e| {
        e.event_type == "PaymentCaptured"
            && e.payload["captured_total_minor"] == json!(i64::MAX - 10)
            && e.sequence == 3
    });
    let expected: std::collections::BTreeMap<&str, Vec<i64>> = [
        ("users", vec![bad_name]),
        ("orders", vec![undecodable]),
        ("payments", vec![]),
        ("analytics", vec![undecodable, overflowing]),
        ("audit", vec![]),
        ("customer_value", vec![undecodable, overflowing]),
    ]
    .into();
    let mut refused = std::collections::BTreeMap::new();
    for model in projections::READ_MODELS {
        let name = model.name();
        let (applied, folded) = (format!("applied_{name}"), format!("folded_{name}"));
        tables_in(&mut conn, *model, &applied).await;
        tables_in(&mut conn, *model, &folded).await;
        let events: Vec<&Envelope> = log
            .iter()
            .filter(|e| model.aggregates().contains(&e.aggregate_type.as_str()))
            .collect();

        // Event by event, a refused event rolled back as the runner's dead-lettering does.
        let mut refused_by_apply = Vec::new();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query(&format!("SET LOCAL search_path TO {applied}, public"))
            .execute(&mut conn)
            .await
            .unwrap();
        for event in &events {
            sqlx::query("SAVEPOINT one")
                .execute(&mut conn)
                .await
                .unwrap();
            if model.apply(&mut conn, event).await.is_err() {
                refused_by_apply.push(event.global_position);
                sqlx::query("ROLLBACK TO SAVEPOINT one")
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
        sqlx::query("COMMIT").execute(&mut conn).await.unwrap();

        let mut fold = model.fold();
        let mut refused_by_fold = Vec::new();
        for event in &events {
            if fold.fold(event).is_err() {
                refused_by_fold.push(event.global_position);
            }
        }
        for rows in fold.take(true) {
            rows.copy_into(&mut conn, &folded).await.unwrap();
        }

        assert_eq!(refused_by_fold, refused_by_apply, "{name}: refused events");
        refused.insert(name, refused_by_apply);
        for table in model.tables() {
            let sum = |schema: &str| Table::checksum_sql(&format!("{schema}.{}", table.name));
            let a: (i64, String) = sqlx::query_as(&sum(&applied))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            let f: (i64, String) = sqlx::query_as(&sum(&folded))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert!(a.0 > 0, "{name}: {} has rows", table.name);
            if a != f {
                let rows = |schema: &str| {
                    format!("SELECT t::text FROM {schema}.{} t ORDER BY 1", table.name)
                };
                let a_rows: Vec<String> = sqlx::query_scalar(&rows(&applied))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                let f_rows: Vec<String> = sqlx::query_scalar(&rows(&folded))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                panic!(
                    "{name}: {} differs\napply: {a_rows:#?}\nfold:  {f_rows:#?}",
                    table.name
                );
            }
        }
    }
    // Both paths refused exactly the events each model cannot take, and nothing else.
    assert_eq!(refused, expected, "refused events");
    conn.close().await.ok();
    pool.close().await;
}
