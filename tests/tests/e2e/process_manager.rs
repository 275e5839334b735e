//! The process manager without a broker: real events from the command API are applied by the
//! process manager's projection (as the runner would), its decisions land in the outbox, and
//! the dispatcher sends them to the real command API, parking what cannot be sent.

use std::time::{Duration, Instant};

use infra::event_store::{message_headers, HeaderMetadata, PublishedEvent};
use projections::envelope::{Envelope, Source};
use projections::process_manager::outbox;
use projections::process_manager::{Commands, Dispatcher, ProcessManager, RetryPolicy};
use projections::Projection;
use serde_json::json;
use sqlx::{PgPool, Row};
use tokio::sync::watch;

use crate::support::app::spawn_app;
use crate::support::commerce::paid_order;
use crate::support::processes::{free_port, run_projector};

/// Every stored event of `aggregate_id`, as a consumer would receive it.
async fn envelopes(pool: &PgPool, aggregate_id: &str) -> Vec<Envelope> {
    let rows = sqlx::query(
        "SELECT global_position, event_id, aggregate_type, aggregate_id, sequence, event_type,
             event_version, payload, metadata FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(aggregate_id)
    .fetch_all(pool)
    .await
    .expect("events");
    rows.iter()
        .map(|row| {
            let get = |c: &str| row.try_get::<String, _>(c).expect(c);
            let (event_type, version, aggregate_type) = (
                get("event_type"),
                get("event_version"),
                get("aggregate_type"),
            );
            let metadata: serde_json::Value = row.try_get("metadata").unwrap();
            let published = PublishedEvent {
                event_id: row.try_get("event_id").unwrap(),
                event_type: &event_type,
                event_version: &version,
                aggregate_type: &aggregate_type,
                aggregate_id,
                sequence: row.try_get("sequence").unwrap(),
                global_position: row.try_get("global_position").unwrap(),
                metadata: &HeaderMetadata::of_json(&metadata),
            };
            let headers: projections::envelope::Headers = message_headers(&published)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into_owned()))
                .collect();
            let source = Source {
                topic: "events".to_owned(),
                partition: 0,
                offset: published.global_position,
            };
            Envelope::from_parts(source, &headers, row.try_get("payload").unwrap())
                .expect("an envelope")
        })
        .collect()
}

/// Applies `events` in one transaction, as the runner does; returns the outbox's size after.
async fn apply(pool: &PgPool, events: &[Envelope]) -> i64 {
    let mut tx = pool.begin().await.unwrap();
    for event in events {
        ProcessManager.apply(&mut tx, event).await.expect("apply");
    }
    tx.commit().await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM pm_outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Runs a dispatcher to `url` until no row is pending (bounded).
async fn dispatch(pool: &PgPool, url: &str, policy: RetryPolicy) {
    let (stop, stopped) = watch::channel(false);
    let commands = Commands::new(url, crate::support::auth::pm_credentials()).unwrap();
    let task = tokio::spawn(Dispatcher::new(pool.clone(), commands, policy).run(stopped));
    let deadline = Instant::now() + Duration::from_secs(30);
    while pending(pool).await > 0 {
        assert!(Instant::now() < deadline, "the outbox never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    task.await.expect("the dispatcher stops");
}

async fn pending(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pm_outbox WHERE status = 'pending'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// (idempotency key, status, attempts) of every row, oldest first.
async fn rows(pool: &PgPool) -> Vec<(String, String, i32)> {
    sqlx::query_as("SELECT idempotency_key, status, attempts FROM pm_outbox ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A command API with a paid order whose confirmation the process manager has decided (one
/// row in its outbox); returns the payment's id too.
async fn a_confirmation_decided() -> (crate::support::app::TestApp, String) {
    let app = spawn_app().await;
    let (_, payment) = paid_order(&app).await;
    let events = envelopes(&app.pool, &payment).await;
    assert_eq!(apply(&app.pool, &events).await, 1, "a confirmation");
    (app, payment)
}

fn quick(max_attempts: i32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial: Duration::from_millis(10),
        max: Duration::from_millis(40),
        poll: Duration::from_millis(20),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_sent_once_and_a_refund_takes_what_is_left() {
    let app = spawn_app().await;
    let pool = &app.pool;
    let (order, payment) = paid_order(&app).await;
    let goodwill = app
        .post(
            &format!("/v1/payments/{payment}/refund"),
            json!({"amount_minor": 1000, "reason": "goodwill"}),
        )
        .await;
    assert!(goodwill.status.is_success(), "{}", goodwill.body);
    let cancelled = app
        .post(
            &format!("/v1/orders/{order}/cancel"),
            json!({"reason": "changed_mind"}),
        )
        .await;
    assert!(cancelled.status.is_success(), "{}", cancelled.body);

    // The process manager sees the capture and the cancellation, not yet the goodwill refund.
    let mut seen = envelopes(pool, &payment).await;
    seen.retain(|e| e.event_type != "PaymentRefunded");
    seen.extend(envelopes(pool, &order).await);
    assert_eq!(apply(pool, &seen).await, 2, "a confirmation and a refund");
    let capture = seen
        .iter()
        .find(|e| e.event_type == "PaymentCaptured")
        .unwrap();
    let cancel = seen
        .iter()
        .find(|e| e.event_type == "OrderCancelled")
        .unwrap();
    // Redelivered, the same events decide nothing new.
    assert_eq!(apply(pool, &seen).await, 2);

    dispatch(pool, &app.url, quick(5)).await;
    let (c, p) = (cancel.event_id, &payment);
    assert_eq!(
        rows(pool).await,
        [
            (
                format!("pm-confirm-{}", capture.event_id),
                "refused".to_owned(),
                1
            ),
            (format!("pm-refund-{c}-{p}-3000"), "refused".to_owned(), 1),
            (format!("pm-refund-{c}-{p}-2000"), "done".to_owned(), 1),
        ]
    );
    let refunds: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT (payload->>'amount_minor')::bigint, metadata->>'actor', metadata->>'causation_id'
         FROM events WHERE aggregate_id = $1 AND event_type = 'PaymentRefunded' ORDER BY sequence",
    )
    .bind(&payment)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(refunds.len(), 2, "{refunds:?}");
    assert_eq!(refunds[0].0, 1000);
    assert_eq!(
        refunds[1],
        (2000, "service:process-manager".to_owned(), c.to_string())
    );
}

/// A row claimed past its budget (its budget's attempts and one more) whose last attempt never
/// ended (the dispatcher that took it failed or stopped while sending it: a bug that panics on
/// it, a crash loop) is parked when it is due again, saying so, instead of being claimed for
/// ever; one whose last attempt within the budget was cut short is sent once more. Before, it
/// was claimed again at every lease's end, its attempts growing past the budget, never parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_attempts_never_end_is_parked_once_past_its_budget() {
    let (app, _) = a_confirmation_decided().await;
    let pool = &app.pool;
    let row = || async {
        sqlx::query_as::<_, (String, i32, Option<String>)>(
            "SELECT status, attempts, last_error FROM pm_outbox",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };
    sqlx::query("UPDATE pm_outbox SET attempts = 4, next_attempt_at = now()")
        .execute(pool)
        .await
        .unwrap();
    dispatch(pool, &app.url, quick(3)).await;
    let (status, attempts, error) = row().await;
    assert_eq!((status.as_str(), attempts), ("parked", 4), "{error:?}");
    assert!(
        error.is_some_and(|e| e.contains("its last attempt never ended")),
        "the reason is kept"
    );
    // At its budget, cut short once: sent again under its key, and done.
    sqlx::query("UPDATE pm_outbox SET status = 'pending', attempts = 3, next_attempt_at = now()")
        .execute(pool)
        .await
        .unwrap();
    dispatch(pool, &app.url, quick(3)).await;
    let (status, attempts, _) = row().await;
    assert_eq!((status.as_str(), attempts), ("done", 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsendable_commands_are_parked_visibly_and_can_be_retried() {
    let (app, payment) = a_confirmation_decided().await;
    let pool = &app.pool;

    // Nobody listens there: retried with backoff, then parked with what went wrong.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    dispatch(pool, &nowhere, quick(3)).await;
    let parked: (String, i32, Option<String>) =
        sqlx::query_as("SELECT status, attempts, last_error FROM pm_outbox")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((parked.0.as_str(), parked.1), ("parked", 3));
    assert!(parked.2.is_some_and(|e| !e.is_empty()));
    assert_eq!(outbox::parked(pool).await.unwrap(), 1);

    // Listed for a person (`projector outbox list`), who resets it (`outbox retry`): it is sent
    // again with a fresh budget, and takes effect. An id not parked is said so (exit 1).
    let settings = app.settings();
    let projector = |args: &[&str]| tokio::task::block_in_place(|| run_projector(&settings, args));
    let listed = projector(&["outbox", "list", "--json"]);
    assert!(listed.status.success(), "{listed:?}");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (&rows[0]["kind"], &rows[0]["attempts"]),
        (&json!("confirm_order"), &json!(3))
    );
    let id = rows[0]["id"].as_i64().unwrap().to_string();
    let none = projector(&["outbox", "retry", "999999999"]);
    assert_eq!(none.status.code(), Some(1), "{none:?}");
    let retried = projector(&["outbox", "retry", &id]);
    assert!(retried.status.success(), "{retried:?}");
    assert!(
        String::from_utf8_lossy(&retried.stdout).contains("made 1 parked commands pending"),
        "{retried:?}"
    );
    dispatch(pool, &app.url, quick(3)).await;
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM pm_outbox")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("done", 1));
    let confirmed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'OrderConfirmed'
             AND metadata->>'actor' = 'service:process-manager'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(confirmed, 1);

    // A command the command API calls malformed is parked at once, not retried.
    sqlx::query(
        "INSERT INTO pm_outbox (idempotency_key, kind, target, path, body, correlation_id,
             causation_id, traceparent)
         SELECT 'malformed', 'refund_payment', target, '/v1/payments/' || $1 || '/refund',
             '{\"amount_minor\": \"lots\"}', correlation_id, causation_id, traceparent
         FROM pm_outbox LIMIT 1",
    )
    .bind(&payment)
    .execute(pool)
    .await
    .unwrap();
    dispatch(pool, &app.url, quick(5)).await;
    let (status, attempts): (String, i32) = sqlx::query_as(
        "SELECT status, attempts FROM pm_outbox WHERE idempotency_key = 'malformed'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), attempts), ("parked", 1));
}

/// A dispatcher whose lease ran out while it sent (a slow command API) must not overwrite what
/// the dispatcher that claimed the row next settled: before, the first one's late "out of
/// budget" parked a row the second had already done, and paged a person for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_settlement_of_an_expired_claim_changes_nothing() {
    let (app, _) = a_confirmation_decided().await;
    let pool = &app.pool;

    let lease = Duration::from_secs(30);
    let first = outbox::claim(pool, 8, lease).await.unwrap();
    assert_eq!(first.len(), 1);
    // The first claim's lease runs out; another dispatcher claims the row and settles it.
    sqlx::query("UPDATE pm_outbox SET next_attempt_at = now() - interval '1 second'")
        .execute(pool)
        .await
        .unwrap();
    let second = outbox::claim(pool, 8, lease).await.unwrap();
    assert_eq!(second.len(), 1);
    let (id, newer) = (second[0].id, second[0].attempts);
    assert!(outbox::finish(pool, id, newer, "done", None).await.unwrap());

    let older = first[0].attempts;
    assert!(
        !outbox::finish(pool, id, older, "parked", Some("out of budget"))
            .await
            .unwrap()
    );
    assert!(
        !outbox::retry_later(pool, id, older, Duration::from_secs(1), "timed out")
            .await
            .unwrap()
    );
    let (status, last_error): (String, Option<String>) =
        sqlx::query_as("SELECT status, last_error FROM pm_outbox WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), last_error), ("done", None));
}

/// How long the oldest unsent decision has waited, the figure ProcessManagerCommandsWaiting
/// pages on: its age while pending, nothing once it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_waiting_command_is_measured_until_it_is_sent() {
    let (app, _) = a_confirmation_decided().await;
    let pool = &app.pool;
    sqlx::query("UPDATE pm_outbox SET created_at = now() - interval '10 minutes'")
        .execute(pool)
        .await
        .unwrap();
    let age = outbox::oldest_pending_age(pool).await.unwrap();
    assert!((600.0..700.0).contains(&age), "{age}");
    dispatch(pool, &app.url, quick(3)).await;
    assert_eq!(outbox::oldest_pending_age(pool).await.unwrap(), 0.0);
}
