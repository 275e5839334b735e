//! Dead letters: an event no projection can decode is set aside per projection, and the
//! events behind it keep flowing.

use std::time::Duration;

use crate::support::app::unique_email;
use crate::support::commerce::paid_order;
use crate::support::kafka::shared_bootstrap;
use crate::support::projector::{wait_until_projected, InProcessProjector};
use crate::support::stack::{spawn_stack, wait_until_published};

/// The id of the payment's `PaymentCaptured`.
async fn capture_of(pool: &sqlx::PgPool, payment: &str) -> String {
    sqlx::query_scalar(
        "SELECT event_id::text FROM events WHERE aggregate_id = $1 AND event_type = 'PaymentCaptured'",
    )
    .bind(payment)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The registry's `PaymentCaptured` schema (its id and text).
async fn capture_schema(pool: &sqlx::PgPool) -> (i32, String) {
    sqlx::query_as(
        "SELECT s.id, s.schema FROM sr_subject_versions v JOIN sr_schemas s ON s.id = v.schema_id
         WHERE v.subject LIKE '%.PaymentCaptured'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Replaces the text of registry schema `id` (a schema no decoder can read, or the original).
async fn set_schema(pool: &sqlx::PgPool, id: i32, text: &str) {
    sqlx::query("UPDATE sr_schemas SET schema = $2 WHERE id = $1")
        .bind(id)
        .bind(text)
        .execute(pool)
        .await
        .unwrap();
}

/// What `rm_revenue_daily` counts as captured.
async fn captured_total(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(captured_minor), 0)::bigint FROM rm_revenue_daily")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Not a schema: every decoder fails on it.
const UNREADABLE: &str = r#"{"type": "no such type"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_is_dead_lettered_and_others_keep_flowing() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    // No process manager: the load confirms and refunds by itself.
    let projector = InProcessProjector::start(&stack, None);
    stack.app.register(&unique_email()).await;
    let pool = &stack.app.pool;
    wait_until_published(pool, Duration::from_secs(30)).await;
    // Not Confluent-framed Avro: no projection can decode it. Its aggregate id holds a NUL,
    // which no PostgreSQL text can: the dead letter stores it as U+FFFD (before, the insert
    // failed, and with it every attempt at the batch: the topic stopped for good).
    let producer: FutureProducer = infra::kafka::producer(&stack.settings.kafka).unwrap();
    let topic = infra::kafka::topic_for(&stack.prefix, "user");
    let poison = uuid::Uuid::now_v7().to_string();
    let poisoned_id = format!("{poison}\0");
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "event_id",
            value: Some(poison.as_str()),
        })
        .insert(Header {
            key: "aggregate_id",
            value: Some(poisoned_id.as_str()),
        });
    producer
        .send(
            FutureRecord::to(&topic)
                .key(&poison)
                .payload("definitely not avro")
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("produce the poison message");
    // Later events of other aggregates still project.
    let later = stack.app.register(&unique_email()).await;
    wait_until_projected(pool, Duration::from_secs(30)).await;
    let status: String = sqlx::query_scalar("SELECT status FROM rm_users WHERE id = $1::uuid")
        .bind(&later)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(status, "active");
    let letters: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT projection, event_id, error, aggregate_id FROM dead_letters ORDER BY projection",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let projections: Vec<&str> = letters.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(
        projections,
        ["audit", "users"],
        "each projection reading users.events dead-letters it once"
    );
    assert!(
        letters.iter().all(|l| l.1 == poison
            && l.2.contains("undecodable")
            && l.3 == format!("{poison}\u{FFFD}")),
        "{letters:?}"
    );
    projector.stop().await;
}

/// An event the projection refuses (here a revenue total that would overflow) is dead-lettered
/// alone: the runner applies a batch without savepoints first, and when an event is refused it
/// applies the batch again with one savepoint per event. Everything consumed with the refused
/// event, before and after it, is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_event_is_dead_lettered_alone_and_the_rest_of_its_batch_applies() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    let today = chrono::Utc::now().date_naive();
    // Today's EUR revenue is one capture away from overflowing.
    sqlx::query(
        "INSERT INTO rm_revenue_daily (day, currency, captured_minor, orders) VALUES ($1, 'EUR', $2, 0)",
    )
    .bind(today)
    .bind(i64::MAX - 10)
    .execute(pool)
    .await
    .unwrap();
    // All of it is in the log before the projector starts, so it arrives in few batches.
    let (paid, payment) = paid_order(&stack.app).await;
    let (_, later) = stack.app.user_and_order().await;
    wait_until_published(pool, Duration::from_secs(30)).await;
    let projector = InProcessProjector::start(&stack, None);
    wait_until_projected(pool, Duration::from_secs(60)).await;

    let letters: Vec<(String, Option<String>, String)> =
        sqlx::query_as("SELECT projection, aggregate_id, error FROM dead_letters")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].0, "analytics");
    assert_eq!(letters[0].1.as_deref(), Some(payment.as_str()));
    assert!(letters[0].2.contains("overflow"), "{letters:?}");
    // The capture changed nothing; both orders (one before it in the log, one after) count.
    let (captured, orders): (i64, i64) = sqlx::query_as(
        "SELECT captured_minor, orders FROM rm_revenue_daily WHERE day = $1 AND currency = 'EUR'",
    )
    .bind(today)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(captured, i64::MAX - 10);
    assert_eq!(orders, 2);
    let funnel: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_funnel WHERE order_id = ANY($1)")
        .bind(vec![
            uuid::Uuid::parse_str(&paid).unwrap(),
            uuid::Uuid::parse_str(&later).unwrap(),
        ])
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(funnel, 2);
    // The other read models took the capture.
    let status: String = sqlx::query_scalar("SELECT status FROM rm_payments WHERE id = $1::uuid")
        .bind(&payment)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(status, "captured");
    projector.stop().await;
}

/// An event dead-lettered as undecodable and then applied from the event store (the next
/// event of its aggregate found the gap and filled it) leaves no dead letter behind: a retry of
/// one would apply it a second time, and `customer_value` and `analytics` add captured amounts
/// whatever the order, so the capture would count twice. Before, the dead letters stayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_applied_by_a_gap_fill_leaves_no_dead_letter_to_retry() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let app = &stack.app;
    let pool = &app.pool;
    // Captured, then partly refunded: the refund is the capture's next event.
    let (_, payment) = paid_order(app).await;
    let refunded = app
        .post(
            &format!("/v1/payments/{payment}/refund"),
            serde_json::json!({"amount_minor": 1000, "reason": "damaged"}),
        )
        .await;
    assert_eq!(
        refunded.status,
        reqwest::StatusCode::OK,
        "{}",
        refunded.body
    );
    wait_until_published(pool, Duration::from_secs(30)).await;
    // The capture's schema cannot be read when the projector first meets it: its message is
    // undecodable (a failure the decoder keeps), the refund's is not.
    let (schema_id, schema) = capture_schema(pool).await;
    set_schema(pool, schema_id, UNREADABLE).await;
    let projector = InProcessProjector::start(&stack, None);
    wait_until_projected(pool, Duration::from_secs(60)).await;
    projector.stop().await;
    set_schema(pool, schema_id, &schema).await;
    let capture = capture_of(pool, &payment).await;
    let gaps_filled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rm_audit WHERE event_id = $1::uuid")
            .bind(&capture)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        gaps_filled, 1,
        "the capture was applied (from the event store)"
    );
    let left: Vec<(String, String)> =
        sqlx::query_as("SELECT projection, error FROM dead_letters WHERE event_id = $1")
            .bind(&capture)
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(
        left.is_empty(),
        "dead letters of an applied event: {left:?}"
    );
    assert_eq!(captured_total(pool).await, 3000);
}

/// An event dead-lettered as undecodable and later applied from a decodable copy of its
/// message (the relay published it again after a restart) leaves no dead letter behind either:
/// before, only a gap fill resolved one, and a retry of this one would have counted the capture
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_applied_from_a_later_copy_leaves_no_dead_letter_to_retry() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    let (_, payment) = paid_order(&stack.app).await;
    wait_until_published(pool, Duration::from_secs(30)).await;
    let capture = capture_of(pool, &payment).await;
    // The capture's schema cannot be read when the projector first meets it.
    let (schema_id, schema) = capture_schema(pool).await;
    set_schema(pool, schema_id, UNREADABLE).await;
    let letters = "SELECT count(*) FROM dead_letters WHERE event_id = $1";
    let dead_letters = || async {
        let n: i64 = sqlx::query_scalar(letters)
            .bind(&capture)
            .fetch_one(pool)
            .await
            .unwrap();
        n
    };
    let projector = InProcessProjector::start(&stack, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while dead_letters().await < 3 {
        assert!(std::time::Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    projector.stop().await;
    set_schema(pool, schema_id, &schema).await;

    // The same message again, as the relay sends it after a restart.
    let topic = infra::kafka::topic_for(&stack.prefix, "payment");
    let published: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'payment'")
            .fetch_one(pool)
            .await
            .unwrap();
    let messages = crate::support::kafka::consume(
        &stack.bootstrap,
        std::slice::from_ref(&topic),
        stack.settings.kafka.partitions,
        published as usize,
        Duration::from_secs(30),
    )
    .await;
    let original = messages
        .iter()
        .find(|m| m.headers.get("event_id") == Some(&capture))
        .expect("the capture's message");
    let mut headers = OwnedHeaders::new();
    for (key, value) in &original.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_str()),
        });
    }
    let producer: FutureProducer = infra::kafka::producer(&stack.settings.kafka).unwrap();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(&original.key)
                .payload(&original.payload)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("produce the copy");
    let projector = InProcessProjector::start(&stack, None);
    wait_until_projected(pool, Duration::from_secs(60)).await;
    projector.stop().await;
    assert_eq!(dead_letters().await, 0, "dead letters of an applied event");
    assert_eq!(captured_total(pool).await, 3000);
}
