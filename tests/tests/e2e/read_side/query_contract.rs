//! The query API's contract: a bounded wait for `min_version`, problems for unknown and
//! invalid requests, conditional reads, stable pagination, ops routes and the OpenAPI document.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::query::spawn_read_stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_query_api_answers_as_specified() {
    let read_stack = spawn_read_stack(|s| s.query_api.max_wait_ms = 400).await;
    let (app, query) = (&read_stack.stack.app, &read_stack.query);
    let (user, order) = app.user_and_order().await;
    query
        .eventually(&format!("/v1/orders/{order}"), |b| b["version"] == 1)
        .await;

    // min_version beyond what exists: a bounded wait, then a distinct status and type.
    let behind = query
        .get(&format!("/v1/orders/{order}?min_version=9"))
        .await;
    behind.assert_problem(504, "read-model-behind");
    assert_eq!(behind.body["current_version"], 1);
    assert_eq!(behind.body["min_version"], 9);
    assert!(behind.headers.contains_key("retry-after"));
    // No such aggregate in the event store at all: waiting cannot help, 404 at once (one that
    // exists but is not projected yet waits; see `version_waits.rs`).
    let unknown = uuid::Uuid::now_v7();
    query
        .get(&format!("/v1/users/{unknown}?min_version=1"))
        .await
        .assert_problem(404, "not-found");

    for path in [
        format!("/v1/users/{unknown}"),
        format!("/v1/orders/{unknown}"),
        format!("/v1/payments/{unknown}"),
        format!("/v1/orders/{unknown}/payments"),
        format!("/v1/users/{unknown}/orders"),
        format!("/v1/audit/order/{unknown}"),
        format!("/v1/audit/invoice/{order}"),
        "/v1/users/not-a-uuid".to_owned(),
        "/v1/users?email=nobody@example.com".to_owned(),
    ] {
        query.get(&path).await.assert_problem(404, "not-found");
    }
    query
        .get("/v1/nothing")
        .await
        .assert_problem(404, "route-not-found");
    for (path, field) in [
        (format!("/v1/users/{user}/orders?limit=0"), "limit"),
        (format!("/v1/users/{user}/orders?limit=101"), "limit"),
        (format!("/v1/users/{user}/orders?limit=ten"), "limit"),
        (format!("/v1/users/{user}/orders?status=lost"), "status"),
        (format!("/v1/users/{user}/orders?cursor=garbage"), "cursor"),
        (format!("/v1/users/{user}/orders?colour=red"), "colour"),
        (format!("/v1/orders/{order}?min_version=-1"), "min_version"),
        (format!("/v1/orders/{order}?min_version=x"), "min_version"),
        ("/v1/users".to_owned(), "email"),
        ("/v1/users?email=not-an-email".to_owned(), "email"),
        ("/v1/analytics/revenue?from=2026-02-30".to_owned(), "from"),
        (
            "/v1/analytics/revenue?from=2026-03-02&to=2026-03-01".to_owned(),
            "from",
        ),
        ("/v1/analytics/revenue?currency=EURO".to_owned(), "currency"),
        ("/v1/analytics/order-funnel?to=yesterday".to_owned(), "to"),
        (format!("/v1/audit/order/{order}?cursor=-4"), "cursor"),
        ("/v1/analytics/revenue?from=-5000-01-01".to_owned(), "from"),
        (
            "/v1/analytics/order-funnel?to=+20000-01-01".to_owned(),
            "to",
        ),
        (format!("/v1/users/{user}/orders?limit=1&limit=2"), "limit"),
    ] {
        let answer = query.get(&path).await;
        answer.assert_problem(422, "validation-failed");
        assert_eq!(answer.error_fields(), [field], "{path}: {}", answer.body);
    }

    // Conditional reads.
    let first = query.get(&format!("/v1/orders/{order}")).await;
    let etag = first.headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, "\"1\"");
    for tag in [etag.as_str(), "W/\"1\"", "\"0\", \"1\"", "*"] {
        let answer = query
            .get_with(&format!("/v1/orders/{order}"), &[("if-none-match", tag)])
            .await;
        assert_eq!(answer.status, StatusCode::NOT_MODIFIED, "{tag}");
        assert_eq!(answer.headers["etag"], etag.as_str());
    }

    // Pagination: newest first, stable while orders are being placed.
    let mut placed = vec![order.clone()];
    for _ in 0..11 {
        placed.push(app.place_order(&user).await.id());
    }
    let list_path = format!("/v1/users/{user}/orders");
    query
        .eventually(&list_path, |b| {
            b["items"].as_array().is_some_and(|i| i.len() == 12)
        })
        .await;
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_path = match &cursor {
            Some(c) => format!("{list_path}?limit=5&cursor={c}"),
            None => format!("{list_path}?limit=5"),
        };
        let page = query.get(&page_path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        // Meanwhile more orders arrive; they sort before the first page.
        app.place_order(&user).await;
        seen.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a page repeated an order");
    placed.reverse();
    let original: Vec<&String> = seen.iter().filter(|id| placed.contains(id)).collect();
    assert_eq!(
        original,
        placed.iter().collect::<Vec<_>>(),
        "newest first, none skipped"
    );
    let created = query
        .get(&format!("{list_path}?status=created&limit=100"))
        .await;
    assert!(created.body["items"].as_array().unwrap().len() >= 12);
    let none = query.get(&format!("{list_path}?status=shipped")).await;
    assert_eq!(none.body["items"], json!([]));

    // Ops and the published contract.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(query.get(path).await.status, StatusCode::OK, "{path}");
    }
    let spec = query.get("/openapi.json").await.body;
    for path in [
        "/v1/users/{id}",
        "/v1/users",
        "/v1/orders/{id}",
        "/v1/users/{id}/orders",
        "/v1/payments/{id}",
        "/v1/orders/{id}/payments",
        "/v1/analytics/revenue",
        "/v1/analytics/order-funnel",
        "/v1/audit/{aggregate_type}/{id}",
    ] {
        assert!(
            spec["paths"][path]["get"].is_object(),
            "{path} missing from the spec"
        );
    }
}

/// While the users topic's partitions are applied in another order than the events happened,
/// two rows can hold one email for a moment (a user took the email another has just given up,
/// and the giving up is not applied yet): the lookup answers the one that took it last.
/// Before, it answered whichever row the index gave first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_email_held_by_two_rows_is_answered_with_the_latest() {
    let read_stack = spawn_read_stack(|_| {}).await;
    let (app, query) = (&read_stack.stack.app, &read_stack.query);
    let email = crate::support::app::unique_email();
    let first = app.register(&email).await;
    query
        .eventually(&format!("/v1/users/{first}"), |b| b["version"] == 1)
        .await;
    // The second holder, as the projector would write it before the first's change.
    let second = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO rm_users (id, email, email_key, display_name, roles, status, version, created_at, updated_at)
         SELECT $1, email, email_key, 'Second', roles, status, 1, now() + interval '1 second', now() + interval '1 second'
         FROM rm_users WHERE id = $2",
    )
    .bind(second)
    .bind(uuid::Uuid::parse_str(&first).unwrap())
    .execute(&app.pool)
    .await
    .expect("a second row with the same email");
    let found = query.get(&format!("/v1/users?email={email}")).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.body["id"], second.to_string());
}

/// A deep page of a customer's orders is read from where its cursor points, also once
/// PostgreSQL plans the statement generically (as it does for a prepared statement after a
/// few runs on a connection): the scan stops near the page's own rows. Before, the cursor's
/// condition was optional (`$3 IS NULL OR ...`), a generic plan could not bound the index scan
/// with it, and every page read (and dropped) all of the customer's newer orders.
#[tokio::test]
async fn a_deep_order_page_reads_only_near_its_cursor_under_a_generic_plan() {
    let db = crate::support::database::TestDatabase::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    infra::db::migrate(&pool).await.unwrap();
    let customer = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO rm_orders (id, customer_id, status, items, currency, total_minor,
                                shipping_address, version, placed_at, updated_at)
         SELECT gen_random_uuid(), $1, 'created', '[]', 'EUR', 100, '{}', 1,
                timestamptz '2026-01-01' + n * interval '1 second', now()
         FROM generate_series(1, 20000) AS n",
    )
    .bind(customer)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE rm_orders")
        .execute(&pool)
        .await
        .unwrap();
    // A cursor 15,000 orders deep (newest first).
    let (at, id): (chrono::DateTime<chrono::Utc>, uuid::Uuid) = sqlx::query_as(
        "SELECT placed_at, id FROM rm_orders ORDER BY placed_at DESC, id DESC OFFSET 15000 LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let sql = query_api::customer_page_sql(false, true);
    for statement in [
        "SET plan_cache_mode = force_generic_plan".to_owned(),
        format!("PREPARE page (uuid, timestamptz, uuid, bigint) AS {sql}"),
    ] {
        sqlx::query(&statement).execute(&mut *conn).await.unwrap();
    }
    let plan: serde_json::Value = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page ('{customer}', '{}', '{id}', 101)",
        at.to_rfc3339()
    ))
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    // Every row any node of the plan read and dropped, or passed on.
    fn rows(node: &serde_json::Value, key: &str) -> i64 {
        node[key].as_i64().unwrap_or(0)
            + node["Plans"]
                .as_array()
                .map_or(0, |plans| plans.iter().map(|p| rows(p, key)).sum())
    }
    let top = &plan[0]["Plan"];
    let dropped = rows(top, "Rows Removed by Filter") + rows(top, "Rows Removed by Index Recheck");
    assert!(dropped < 1000, "the page dropped {dropped} rows: {plan:#}");
    assert_eq!(top["Actual Rows"], 101, "{plan:#}");
    drop(conn);
    pool.close().await;
}

/// The funnel's `from` and `to` are whole days in UTC, both included: an order placed at the
/// first or last instant of a day counts for that day only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_funnel_counts_whole_utc_days_from_and_to_included() {
    let db = crate::support::database::TestDatabase::create().await;
    let settings = db.settings();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    infra::db::migrate(&pool).await.unwrap();
    for at in [
        "2026-02-28T23:59:59.999999Z",
        "2026-03-01T00:00:00Z",
        "2026-03-01T23:59:59.999999Z",
        "2026-03-02T00:00:00Z",
    ] {
        sqlx::query(
            "INSERT INTO rm_funnel (order_id, status, placed_at) VALUES (gen_random_uuid(), 'created', $1::timestamptz)",
        )
        .bind(at)
        .execute(&pool)
        .await
        .unwrap();
    }
    let query = crate::support::query::spawn_query_api(&settings).await;
    for (range, total) in [
        ("from=2026-03-01&to=2026-03-01", 2),
        ("from=2026-03-01", 3),
        ("to=2026-03-01", 3),
        ("from=2026-02-28&to=2026-03-02", 4),
        ("", 4),
    ] {
        let answer = query
            .get(&format!("/v1/analytics/order-funnel?{range}"))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{range}: {}", answer.body);
        assert_eq!(answer.body["total"], total, "{range}: {}", answer.body);
    }
    pool.close().await;
}
