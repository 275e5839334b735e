//! As-of sets: `projector replay --as-of` builds what the read models said at a point of the
//! log, and the query API serves it with `?as_of=<name>` while the live models move on; only
//! operators may read one, never with `min_version`, and a set that lacks a read model the
//! read needs is a 404, never the live table.

use std::time::Duration;

use crate::support::app::unique_email;
use crate::support::commerce::commerce_load;
use crate::support::database::insert_registration;
use crate::support::processes::run_projector;
use crate::support::projector::wait_until_projected;
use crate::support::query::spawn_read_stack;
use crate::support::stack::wait_until_published;

async fn run(settings: &infra::settings::Settings, args: &[&str]) -> std::process::Output {
    let (settings, args): (_, Vec<String>) = (
        settings.clone(),
        args.iter().map(|a| a.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_projector(&settings, &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_as_of_set_shows_the_past_while_the_live_models_move_on() {
    let read = spawn_read_stack(|_| {}).await;
    let (app, query, settings) = (&read.stack.app, &read.query, &read.stack.settings);
    let pool = &app.pool;
    commerce_load(app, 6).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    let order: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM rm_orders WHERE status = 'shipped' LIMIT 1")
            .fetch_one(pool)
            .await
            .unwrap();
    let position: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    let revenue_before = query.get("/v1/analytics/revenue").await.body;

    let out = run(
        settings,
        &[
            "replay",
            "all",
            "--as-of",
            &position.to_string(),
            "--name",
            "before-delivery",
        ],
    )
    .await;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        printed.contains("before-delivery")
            && printed.contains(&format!("global position {position}")),
        "{printed}"
    );
    let out = run(
        settings,
        &[
            "replay",
            "users",
            "--as-of",
            &position.to_string(),
            "--name",
            "users-only",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    // A name is taken once.
    let out = run(
        settings,
        &["replay", "users", "--as-of", "1", "--name", "users-only"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Both builds are on record for operators (the admin console's replays page).
    let runs: Vec<(String, String)> = sqlx::query_as(
        "SELECT projection, state FROM replay_runs WHERE kind = 'as_of' AND target = 'users-only'
         ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let expected = [("users", "done"), ("users", "failed")].map(|(p, s)| (p.into(), s.into()));
    assert_eq!(runs, expected);

    // The live order moves on, and money with it (a refund: payments, orders and revenue
    // change); the set does not.
    let answer = app.post_empty(&format!("/v1/orders/{order}/deliver")).await;
    assert!(answer.status.is_success(), "{}", answer.body);
    let payment: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM rm_payments WHERE order_id = $1 AND captured_minor > 0 LIMIT 1",
    )
    .bind(order)
    .fetch_one(pool)
    .await
    .unwrap();
    let answer = app
        .post(
            &format!("/v1/payments/{payment}/refund"),
            serde_json::json!({"amount_minor": 1, "reason": "goodwill"}),
        )
        .await;
    assert!(answer.status.is_success(), "{}", answer.body);
    wait_until_published(pool, Duration::from_secs(30)).await;
    wait_until_projected(pool, Duration::from_secs(30)).await;
    let live = query
        .eventually(&format!("/v1/orders/{order}"), |o| {
            o["status"] == "delivered" && o["refunded_minor"].as_i64() > Some(0)
        })
        .await;
    let past = query
        .get(&format!("/v1/orders/{order}?as_of=before-delivery"))
        .await;
    assert_eq!(past.status, 200, "{}", past.body);
    assert_eq!(past.body["status"], "shipped");
    assert_eq!(
        past.body["version"].as_i64().unwrap() + 1,
        live["version"].as_i64().unwrap()
    );
    assert_eq!(
        past.body["refunded_minor"].as_i64().unwrap() + 1,
        live["refunded_minor"].as_i64().unwrap(),
        "the order's money comes from the set too"
    );
    let history = query
        .get(&format!("/v1/audit/order/{order}?as_of=before-delivery"))
        .await;
    let live_history = query.get(&format!("/v1/audit/order/{order}")).await;
    assert_eq!(
        history.body["items"].as_array().unwrap().len() + 1,
        live_history.body["items"].as_array().unwrap().len()
    );
    let revenue = query
        .get("/v1/analytics/revenue?as_of=before-delivery")
        .await;
    assert_eq!(revenue.body, revenue_before);
    let revenue_now = query.get("/v1/analytics/revenue").await.body;
    assert_ne!(
        revenue_now, revenue_before,
        "the refund moved the live revenue"
    );
    let customer =
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT customer_id FROM rm_orders WHERE id = $1")
            .bind(order)
            .fetch_one(pool)
            .await
            .unwrap();
    let orders = query
        .get(&format!(
            "/v1/users/{customer}/orders?as_of=before-delivery"
        ))
        .await;
    assert_eq!(orders.status, 200, "{}", orders.body);
    assert_eq!(orders.body["items"][0]["status"], "shipped");
    let payments = query
        .get(&format!(
            "/v1/orders/{order}/payments?as_of=before-delivery"
        ))
        .await;
    assert_eq!(payments.status, 200, "{}", payments.body);
    let refunded_in_set = payments.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == payment.to_string())
        .map(|p| p["refunded_minor"].clone());
    let live_payment = query.get(&format!("/v1/payments/{payment}")).await;
    assert_eq!(
        refunded_in_set.and_then(|r| r.as_i64()).map(|r| r + 1),
        live_payment.body["refunded_minor"].as_i64(),
        "the payments come from the set"
    );

    // Refusals.
    let status = |path: String| async move { query.get(&path).await.status };
    assert_eq!(status(format!("/v1/orders/{order}?as_of=nope")).await, 404);
    assert_eq!(
        status(format!("/v1/orders/{order}?as_of=users-only")).await,
        404,
        "the set lacks orders"
    );
    assert_eq!(
        status(format!("/v1/users/{customer}?as_of=users-only")).await,
        200
    );
    assert_eq!(
        status(format!("/v1/orders/{order}?as_of=Bad%21")).await,
        422
    );
    assert_eq!(
        status(format!(
            "/v1/orders/{order}?as_of=before-delivery&min_version=1"
        ))
        .await,
        422
    );
    let someone = app.customer().await;
    let mine = query
        .get_as(
            Some(&someone.token),
            &format!("/v1/users/{}?as_of=before-delivery", someone.id),
            &[],
        )
        .await;
    assert_eq!(
        mine.status, 403,
        "only operators read as-of sets: {}",
        mine.body
    );
    // Refused before the request is judged, as on every route: a customer's malformed set
    // name is a 403 too (it was a 422), and so is a set named beside parameters that do not
    // parse, or are unknown (they were 422).
    for query_string in [
        "as_of=Bad%21",
        "as_of=before-delivery&min_version=1",
        "as_of=before-delivery&min_version=soon",
        "as_of=before-delivery&colour=blue",
    ] {
        let refused = query
            .get_as(
                Some(&someone.token),
                &format!("/v1/users/{}?{query_string}", someone.id),
                &[],
            )
            .await;
        assert_eq!(refused.status, 403, "{query_string}: {}", refused.body);
    }

    // A set at a time, named after it; listing and dropping.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = run(settings, &["replay", "orders", "payments", "--as-of", &now]).await;
    assert!(out.status.success(), "{out:?}");
    let out = run(settings, &["as-of", "list"]).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("before-delivery")
            && listed.contains("users-only")
            && listed.contains("at-"),
        "{listed}"
    );
    let out = run(settings, &["as-of", "drop", "before-delivery"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        status(format!("/v1/orders/{order}?as_of=before-delivery")).await,
        404
    );
    let out = run(settings, &["as-of", "drop", "before-delivery"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let schemas: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'asof\\_%'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        schemas, 2,
        "the dropped set's tables are gone, the others kept"
    );

    // A set whose tables go after a read found it (here its schema dropped under its record,
    // as a drop between the two does) is a 404, as a set dropped before. Before, 500.
    let at: String = sqlx::query_scalar("SELECT name FROM as_of_sets WHERE name LIKE 'at-%'")
        .fetch_one(pool)
        .await
        .unwrap();
    let reads = [
        format!("/v1/users/{customer}?as_of=users-only"),
        format!("/v1/orders/{order}/payments?as_of={at}"),
    ];
    for read in &reads {
        assert_eq!(status(read.clone()).await, 200, "{read}");
    }
    let set_schemas: Vec<String> = sqlx::query_scalar("SELECT schema_name FROM as_of_sets")
        .fetch_all(pool)
        .await
        .unwrap();
    for schema in set_schemas {
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(pool)
            .await
            .unwrap();
    }
    for read in &reads {
        let answer = query.get(read).await;
        assert_eq!(answer.status, 404, "{read}: {}", answer.body);
    }
}

/// A transaction open when a set is built may still commit an event inside its cut (an event's
/// position is taken when it is written): the build waits for it, so two builds at one bound
/// hold the same events. Before, the set was built at once and lacked the event for good.
/// A bound past the log's head is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_as_of_set_waits_for_what_can_still_land_inside_its_cut() {
    let stack =
        crate::support::stack::spawn_stack(&crate::support::kafka::shared_bootstrap(), |_| {})
            .await;
    let (app, settings) = (&stack.app, &stack.settings);
    let pool = &app.pool;
    app.register(&unique_email()).await;
    let mut open = pool.begin().await.unwrap();
    let held = insert_registration(&mut *open, "held@example.com").await;
    app.register(&unique_email()).await;
    let head: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();

    let building = tokio::spawn({
        let settings = settings.clone();
        async move {
            let at = head.to_string();
            run(
                &settings,
                &["replay", "users", "--as-of", &at, "--name", "cut"],
            )
            .await
        }
    });
    // Until the build polls for the transactions open at its cut to end (it never does while
    // `open` is open).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let polling: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
                 AND query LIKE 'SELECT pg_snapshot_xmin(pg_current_snapshot()) >= %')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if polling {
            break;
        }
        assert!(
            !building.is_finished(),
            "the set was built with a transaction inside its cut still open"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the build never waited for the transactions open at its cut"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recorded: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM as_of_sets WHERE name = 'cut')")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(
        !recorded && !building.is_finished(),
        "the set was built with a transaction inside its cut still open"
    );
    open.commit().await.unwrap();
    let out = building.await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let schema: String =
        sqlx::query_scalar("SELECT schema_name FROM as_of_sets WHERE name = 'cut'")
            .fetch_one(pool)
            .await
            .unwrap();
    let holds: bool = sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM {schema}.rm_users WHERE id = $1)"
    ))
    .bind(held)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(holds, "the set lacks the event committed inside its cut");

    let ahead = (head + 1000).to_string();
    let out = run(settings, &["replay", "users", "--as-of", &ahead]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("past the log's head"),
        "{out:?}"
    );
}
