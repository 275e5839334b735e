//! The process manager through the whole stack: a cancellation after capture is refunded
//! exactly once although the projector is killed meanwhile, and a cancellation after a partial
//! refund refunds what is left.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;
use sqlx::PgPool;

use crate::support::app::{accepted, TestApp};
use crate::support::commerce::paid_order;
use crate::support::kafka::shared_bootstrap;
use crate::support::processes::spawn_projector;
use crate::support::projector::unprojected;
use crate::support::query::spawn_read_stack;
use crate::support::stack::{spawn_stack, unpublished, wait_until_published};

/// Customers pay, then cancel. Each order is refunded exactly once by the process manager,
/// although its projector process is killed (SIGKILL) and restarted while this happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_after_capture_refunds_exactly_once_across_projector_kills() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let app = &stack.app;
    let (settings, url, watched) = (stack.settings.clone(), app.url.clone(), app.pool.clone());
    const PAYMENTS: usize = 24;
    // Each projector process is killed once it has consumed something (the process manager's
    // offsets moved since it started), so kills land while it works; how many of them came
    // while refunds were still to be made.
    let killer = tokio::spawn(async move {
        let mut projector = spawn_projector(&settings, Some(&url));
        let mut mid_work = 0;
        for _ in 0..4 {
            let started = process_manager_offsets(&watched).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            while process_manager_offsets(&watched).await == started && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Mid-work: this process consumed something, and refunds are still to be made.
            let consumed = process_manager_offsets(&watched).await > started;
            if consumed && refunds(&watched).await.len() < PAYMENTS {
                mid_work += 1;
            }
            projector = spawn_projector(&settings, Some(&url)); // SIGKILLs the old one
        }
        (projector, mid_work)
    });
    let payments = join_all((0..PAYMENTS).map(|_| pay_then_cancel(app))).await;
    let (projector, mid_work) = killer.await.expect("killer task");
    assert!(
        mid_work >= 1,
        "no projector was killed while refunds were pending"
    );
    let pool = &app.pool;
    wait_until_published(pool, Duration::from_secs(60)).await;

    // Every payment is refunded, and once the process manager has seen everything (its own
    // refunds included), still exactly once.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let refunded = refunds(pool).await;
        let caught_up = unprojected(pool, "process_manager", &["order", "payment"]).await == 0;
        if refunded.len() == payments.len() && caught_up && unpublished_is_zero(pool).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} payments refunded",
            refunded.len(),
            payments.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refunded = refunds(pool).await;
    for payment in &payments {
        let (count, amount, actor) = refunded
            .iter()
            .find(|r| &r.0 == payment)
            .map(|r| (r.1, r.2, r.3.clone()))
            .unwrap_or_default();
        assert_eq!(count, 1, "payment {payment} refunded {count} times");
        assert_eq!(amount, 3000, "payment {payment}");
        assert_eq!(actor, "service:process-manager");
    }
    drop(projector);
}

/// How far the process manager has consumed, over every partition.
async fn process_manager_offsets(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(next_offset), 0)::bigint FROM projection_offsets
         WHERE projection = 'process_manager'",
    )
    .fetch_one(pool)
    .await
    .expect("process manager offsets")
}

async fn unpublished_is_zero(pool: &PgPool) -> bool {
    unpublished(pool).await == 0
}

/// Cancels the order; the process manager may confirm it at the same moment, so a version
/// conflict is retried.
async fn cancel(app: &TestApp, order: &str) {
    for _ in 0..20 {
        let answer = app
            .post(
                &format!("/v1/orders/{order}/cancel"),
                json!({"reason": "changed_mind"}),
            )
            .await;
        if answer.status.is_success() {
            return;
        }
        answer.assert_problem(409, "version-conflict");
    }
    panic!("order {order} could not be cancelled");
}

/// Registers, orders, pays (captured) and cancels; returns the payment id.
async fn pay_then_cancel(app: &TestApp) -> String {
    let (order, payment) = paid_order(app).await;
    cancel(app, &order).await;
    payment
}

/// Per payment: refund events, total refunded, and the last refund's actor.
async fn refunds(pool: &PgPool) -> Vec<(String, i64, i64, String)> {
    sqlx::query_as(
        "SELECT aggregate_id, count(*), sum((payload->>'amount_minor')::bigint)::bigint,
             max(metadata->>'actor')
         FROM events WHERE event_type = 'PaymentRefunded' GROUP BY aggregate_id",
    )
    .fetch_all(pool)
    .await
    .expect("refunds")
}

/// A refund the process manager has not seen yet: it refunds what is left, not the whole
/// capture, so the customer gets the captured amount back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancellation_refunds_what_is_left_after_a_partial_refund() {
    let read_stack = spawn_read_stack(|s| s.query_api.max_wait_ms = 20_000).await;
    let (app, query) = (&read_stack.stack.app, &read_stack.query);
    let (order, payment) = paid_order(app).await;
    // A goodwill refund, then the cancellation right behind it.
    accepted(
        &app.post(
            &format!("/v1/payments/{payment}/refund"),
            json!({"amount_minor": 1000, "reason": "goodwill"}),
        )
        .await,
    );
    cancel(app, &order).await;
    let body = query.at_least(&format!("/v1/payments/{payment}"), 5).await;
    assert_eq!(body["status"], "refunded", "{body}");
    assert_eq!(body["refunded_minor"], 3000);
    let refunds: Vec<(i64, String)> = sqlx::query_as(
        "SELECT (payload->>'amount_minor')::bigint, metadata->>'actor' FROM events
         WHERE aggregate_id = $1 AND event_type = 'PaymentRefunded' ORDER BY sequence",
    )
    .bind(&payment)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        refunds,
        [
            (1000, format!("user:{}", uuid::Uuid::nil())),
            (2000, "service:process-manager".to_owned())
        ]
    );
}

/// A payment the process manager stored without its amounts (before they were kept, or by a
/// projector of the release before during a rolling upgrade) has them read from its own events
/// when its order is loaded, so the full-capture rule applies to it too: before, a missing
/// amount meant that any capture confirmed the order.
#[tokio::test]
async fn a_payment_stored_without_its_amounts_has_them_from_its_events() {
    use projections::process_manager::store;
    let db = crate::support::database::TestDatabase::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    infra::db::migrate(&pool).await.unwrap();
    let (order, payment) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for (sequence, payload) in [
        (
            1,
            json!({"type": "PaymentInitiated", "order_id": order, "amount_minor": 3000,
                   "currency": "EUR", "method": "card"}),
        ),
        (
            2,
            json!({"type": "PaymentAuthorized", "order_id": order, "amount_minor": 2000,
                   "currency": "EUR"}),
        ),
    ] {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, payload, metadata, event_id)
             VALUES ('payment', $1, $2, $3, '1', $4, '{}', gen_random_uuid())",
        )
        .bind(payment.to_string())
        .bind(sequence)
        .bind(payload["type"].as_str().unwrap())
        .bind(&payload)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO pm_payments (payment_id, order_id, captured_minor) VALUES ($1, $2, 1)",
    )
    .bind(payment)
    .bind(order)
    .execute(&pool)
    .await
    .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let state = store::load(&mut conn, order).await.unwrap();
    let known = state.payment(payment).expect("the payment");
    assert_eq!(known.amount_minor, Some(3000));
    assert_eq!(known.authorized_minor, Some(2000));
    drop(conn);
    pool.close().await;
}

/// A payment refunded before its last capture never pays its order: once its authorization is
/// spent the order is cancelled and what is left refunded, instead of the order confirmed with
/// less than its total received.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_before_the_last_capture_cancels_the_order_and_refunds_the_rest() {
    let read_stack = spawn_read_stack(|s| s.query_api.max_wait_ms = 20_000).await;
    let (app, query) = (&read_stack.stack.app, &read_stack.query);
    let (order, payment) = crate::support::commerce::authorized_payment(app).await;
    for (action, body) in [
        ("capture", json!({"amount_minor": 1000})),
        ("refund", json!({"amount_minor": 1000, "reason": "damaged"})),
        ("capture", json!({"amount_minor": 2000})),
    ] {
        accepted(
            &app.post(&format!("/v1/payments/{payment}/{action}"), body)
                .await,
        );
    }
    let read = query.at_least(&format!("/v1/orders/{order}"), 2).await;
    assert_eq!(read["status"], "cancelled", "{read}");
    let read = query.at_least(&format!("/v1/payments/{payment}"), 6).await;
    assert_eq!(read["status"], "refunded", "{read}");
    assert_eq!(read["refunded_minor"], 3000, "{read}");
}
