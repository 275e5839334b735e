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

/// A payment of 3000 captured, then 1000 of it refunded, all published; returns its id.
async fn captured_and_partly_refunded(app: &crate::support::app::TestApp) -> String {
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
    wait_until_published(&app.pool, Duration::from_secs(30)).await;
    payment
}

/// A stack with a captured payment published, whose capture's registry schema is made
/// unreadable; returns the stack, the capture's event id and the schema to put back.
async fn with_an_unreadable_capture() -> (crate::support::stack::Stack, String, (i32, String)) {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    let (_, payment) = paid_order(&stack.app).await;
    wait_until_published(pool, Duration::from_secs(30)).await;
    let capture = capture_of(pool, &payment).await;
    let (schema_id, schema) = capture_schema(pool).await;
    set_schema(pool, schema_id, UNREADABLE).await;
    (stack, capture, (schema_id, schema))
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
    let payment = captured_and_partly_refunded(app).await;
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
    // The capture's schema cannot be read when the projector first meets it.
    let (stack, capture, (schema_id, schema)) = with_an_unreadable_capture().await;
    let pool = &stack.app.pool;
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
    publish_again(&stack, &capture).await;
    let projector = InProcessProjector::start(&stack, None);
    wait_until_projected(pool, Duration::from_secs(60)).await;
    projector.stop().await;
    assert_eq!(dead_letters().await, 0, "dead letters of an applied event");
    assert_eq!(captured_total(pool).await, 3000);
}

/// Produces the message of event `event_id` (a payment's) once more, headers and all, as the
/// relay does when it sends a batch again after a restart.
async fn publish_again(stack: &crate::support::stack::Stack, event_id: &str) -> (i32, i64) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let pool = &stack.app.pool;
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
        .find(|m| m.headers.get("event_id").map(String::as_str) == Some(event_id))
        .expect("the event's message");
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
        .map(|delivered| (delivered.partition, delivered.offset))
        .expect("produce the copy")
}

/// Two undecodable copies of one event (the relay published it again while its schema was
/// still unreadable) leave one dead letter per projection, and retrying applies the event
/// once. Before, each copy got a dead letter of its own, and retrying both counted the capture
/// twice (`analytics` and `customer_value` add captured amounts whatever the order).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_set_aside_twice_has_one_dead_letter_and_is_retried_once() {
    // The capture's schema cannot be read when the projector first meets it.
    let (stack, capture, (schema_id, schema)) = with_an_unreadable_capture().await;
    let pool = &stack.app.pool;
    let letters = || async {
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM dead_letters WHERE event_id = $1 ORDER BY id")
                .bind(&capture)
                .fetch_all(pool)
                .await
                .unwrap();
        ids
    };
    // Every read model of payments sets the capture aside.
    let readers = projections::READ_MODELS
        .iter()
        .filter(|m| m.aggregates().contains(&"payment"))
        .count();
    let projector = InProcessProjector::start(&stack, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while letters().await.len() < readers {
        assert!(std::time::Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    projector.stop().await;
    let first = letters().await;

    let (partition, offset) = publish_again(&stack, &capture).await;
    let topic = infra::kafka::topic_for(&stack.prefix, "payment");
    let projector = InProcessProjector::start(&stack, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // Every reader has consumed the copy (its stored offset is past it).
        let past: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM projection_offsets
             WHERE topic = $1 AND partition = $2 AND next_offset > $3",
        )
        .bind(&topic)
        .bind(partition)
        .bind(offset)
        .fetch_one(pool)
        .await
        .unwrap();
        if past >= readers as i64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the copy was not consumed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    projector.stop().await;
    assert_eq!(letters().await, first, "a second copy added dead letters");

    set_schema(pool, schema_id, &schema).await;
    assert_eq!(captured_total(pool).await, 0);
    for id in first {
        projections::dead_letters::retry(pool, id)
            .await
            .unwrap_or_else(|error| panic!("retry of {id}: {error}"));
    }
    assert!(letters().await.is_empty());
    assert_eq!(captured_total(pool).await, 3000, "the capture counted once");
}

/// A projection of the test's own whose code panics on every capture (a bug).
struct PanicsOnCapture;

impl projections::Projection for PanicsOnCapture {
    fn name(&self) -> &'static str {
        "panics_on_capture"
    }

    fn aggregates(&self) -> &'static [&'static str] {
        &["payment"]
    }

    fn apply<'a>(
        &'a self,
        _conn: &'a mut sqlx::PgConnection,
        event: &'a projections::envelope::Envelope,
    ) -> projections::projection::ApplyFuture<'a> {
        Box::pin(async move {
            assert_ne!(
                event.event_type, "PaymentCaptured",
                "a bug in the projection"
            );
            Ok(())
        })
    }
}

static PANICS_ON_CAPTURE: PanicsOnCapture = PanicsOnCapture;

/// A projection whose code panics on an event sets that event aside as a dead letter and goes
/// on, and the projections sharing its consumer are not held up. Before, the panic ended the
/// batch of every projection of the consumer and restarted it, which met the same event
/// again: `payments` never showed the capture.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_a_projection_dead_letters_its_event_and_holds_up_no_other() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let app = &stack.app;
    let pool = &app.pool;
    let payment = captured_and_partly_refunded(app).await;
    let capture = capture_of(pool, &payment).await;
    let refund_sequence: i64 = sqlx::query_scalar(
        "SELECT sequence FROM events WHERE aggregate_id = $1 AND event_type = 'PaymentRefunded'",
    )
    .bind(&payment)
    .fetch_one(pool)
    .await
    .unwrap();

    let payments = projections::read_model("payments").expect("the payments model");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(projections::run_projections(
        pool.clone(),
        stack.settings.clone(),
        vec![&PANICS_ON_CAPTURE, payments],
        stopped,
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (letters, status, handled) = loop {
        let letters: Vec<String> = sqlx::query_scalar(
            "SELECT error FROM dead_letters WHERE projection = 'panics_on_capture' AND event_id = $1",
        )
        .bind(&capture)
        .fetch_all(pool)
        .await
        .unwrap();
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM rm_payments WHERE id = $1::uuid")
                .bind(&payment)
                .fetch_optional(pool)
                .await
                .unwrap();
        let handled: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM projection_versions
             WHERE projection = 'panics_on_capture' AND aggregate_id = $1",
        )
        .bind(&payment)
        .fetch_optional(pool)
        .await
        .unwrap();
        let done = !letters.is_empty()
            && status.as_deref() == Some("partially_refunded")
            && handled >= Some(refund_sequence);
        if done || std::time::Instant::now() >= deadline {
            break (letters, status, handled);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = stop.send(true);
    running.await.unwrap();
    assert_eq!(letters.len(), 1, "the capture's dead letters: {letters:?}");
    assert!(
        letters[0].contains("panicked") && letters[0].contains("a bug in the projection"),
        "{}",
        letters[0]
    );
    assert_eq!(
        status.as_deref(),
        Some("partially_refunded"),
        "payments held up"
    );
    assert!(
        handled >= Some(refund_sequence),
        "the panicking projection stopped at {handled:?}"
    );
}

/// A message written by newer code than this projector (an event type or version it has no
/// schema for: a rolling update under way) is not set aside: its batch waits for a newer
/// projector, and nothing of its partition is consumed past it. Before, it was dead-lettered
/// and counted as handled, and later events of its aggregate applied over the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_newer_than_the_projector_waits_instead_of_being_set_aside() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let projector = InProcessProjector::start(&stack, None);
    let pool = &stack.app.pool;
    stack.app.register(&unique_email()).await;
    wait_until_published(pool, Duration::from_secs(30)).await;
    wait_until_projected(pool, Duration::from_secs(30)).await;
    // The projector runs in this process: its counters are on the app's /metrics.
    let waited = || async {
        let (_, page) = stack.app.get("/metrics").await;
        crate::support::processes::metric_sum(&page, "projection_newer_events_waited_total", &[])
    };
    let before = waited().await;
    let producer: FutureProducer = infra::kafka::producer(&stack.settings.kafka).unwrap();
    let topic = infra::kafka::topic_for(&stack.prefix, "user");
    let id = uuid::Uuid::now_v7().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "event_id",
            value: Some(id.as_str()),
        })
        .insert(Header {
            key: "event_type",
            value: Some("UserRegistered"),
        })
        .insert(Header {
            key: "event_version",
            value: Some("99"),
        });
    let delivered = producer
        .send(
            FutureRecord::to(&topic)
                .key(&id)
                .payload("written by a newer build")
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("produce the newer message");
    // The projector has met the message (else "nothing set aside" below would hold for one
    // that never read it), and a few of the batch's retries go by.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while waited().await < before + 3.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the projector never waited on the newer message"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let letters: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(letters, 0, "the newer event was set aside");
    let past: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projection_offsets
         WHERE topic = $1 AND partition = $2 AND next_offset > $3",
    )
    .bind(&topic)
    .bind(delivered.partition)
    .bind(delivered.offset)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(past, 0, "a projection consumed past the newer event");
    projector.stop().await;
}
