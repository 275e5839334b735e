//! No gap is applied over or skipped: a projector that reads an aggregate's events out of
//! order and with a hole applies each exactly once, in sequence, filling holes from the event
//! store, and counts every gap it saw.

use std::collections::HashMap;
use std::time::Duration;

use infra::event_store::{message_headers, HeaderMetadata, PublishedEvent};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use crate::support::app::unique_email;
use crate::support::fold::assert_read_models_match_the_events;
use crate::support::kafka::shared_bootstrap;
use crate::support::processes::{free_port, metric_sum};
use crate::support::projector::{
    metrics_page, projection_counter, spawn_projector_on, wait_until_projected,
};
use crate::support::stack::{spawn_stack, Stack};

/// A stored event encoded exactly as the relay would publish it.
pub struct Message {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: OwnedHeaders,
}

/// A row of the events table: id, aggregate type and id, sequence, type, version, payload,
/// metadata, global position.
type StoredRow = (
    uuid::Uuid,
    String,
    String,
    i64,
    String,
    String,
    Value,
    Value,
    i64,
);

/// Every stored event of the stack's database as the relay's message, by aggregate id and
/// sequence (Avro through the schemas crate's encoder, the relay's twelve headers).
pub async fn encode_stored(stack: &Stack) -> HashMap<(String, i64), Message> {
    let rows: Vec<StoredRow> = sqlx::query_as(
        "SELECT event_id, aggregate_type, aggregate_id, sequence, event_type, event_version,
                    payload, metadata, global_position FROM events",
    )
    .fetch_all(&stack.app.pool)
    .await
    .expect("read events");
    let encoder = crate::support::registry::encoder(&stack.registry_url);
    let mut out = HashMap::new();
    for (event_id, kind, id, sequence, event_type, version, payload, metadata, position) in rows {
        let (version, payload) = domain::upcast::upcast(&event_type, &version, payload);
        let topic = infra::kafka::topic_for(&stack.prefix, &kind);
        let bytes = encoder
            .encode(&topic, &event_type, &payload)
            .await
            .expect("encode");
        let published = PublishedEvent {
            event_id,
            event_type: &event_type,
            event_version: &version,
            aggregate_type: &kind,
            aggregate_id: &id,
            sequence,
            global_position: position,
            metadata: &HeaderMetadata::of_json(&metadata),
        };
        let headers =
            message_headers(&published)
                .iter()
                .fold(OwnedHeaders::new(), |h, (key, value)| {
                    h.insert(Header {
                        key,
                        value: Some(&**value),
                    })
                });
        let message = Message {
            topic,
            key: id.clone(),
            payload: bytes,
            headers,
        };
        out.insert((id, sequence), message);
    }
    out
}

/// Produces `messages` one after the other (each acknowledged before the next is sent, so the
/// partition holds them in this order).
pub async fn produce_in_order(stack: &Stack, messages: &[&Message]) {
    let producer: FutureProducer = infra::kafka::producer(&stack.settings.kafka).expect("producer");
    for message in messages {
        let record = FutureRecord::to(&message.topic)
            .key(&message.key)
            .payload(&message.payload)
            .headers(message.headers.clone());
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("produce");
    }
}

/// Changes `user`'s display name `times` times: one event each.
async fn rename(stack: &Stack, user: &str, times: usize) {
    for i in 1..=times {
        let path = format!("/v1/users/{user}/profile");
        let answer = stack
            .app
            .post(&path, json!({"display_name": format!("Name {i}")}))
            .await;
        assert!(answer.status.is_success(), "{}", answer.body);
    }
}

/// A user of three events, the second changed in the store by `change` (an `UPDATE events
/// SET` list), and the log holding the first and third alone: a projector meets a gap that
/// only the store can fill. The user's id.
async fn gap_over(stack: &Stack, change: &str) -> String {
    let user = stack.app.register(&unique_email()).await;
    rename(stack, &user, 2).await;
    let stored = encode_stored(stack).await;
    sqlx::query(&format!(
        "UPDATE events SET {change} WHERE aggregate_id = $1 AND sequence = 2"
    ))
    .bind(&user)
    .execute(&stack.app.pool)
    .await
    .unwrap();
    create_topics(stack).await;
    produce_in_order(
        stack,
        &[&stored[&(user.clone(), 1)], &stored[&(user.clone(), 3)]],
    )
    .await;
    user
}

/// Creates the stack's topics (no relay runs to create them).
async fn create_topics(stack: &Stack) {
    // Retried as the relay retries it: a creation the controller has not finished within the
    // request's timeout is refused (as it was once under a whole `make test`), and goes on.
    let topics = infra::kafka::event_topics(&stack.settings.kafka);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Err(error) = infra::kafka::ensure_topics(&stack.settings.kafka, &topics).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the topics were not created in 60 s: {error}"
        );
        eprintln!("creating the topics failed ({error}); again in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_out_of_order_and_with_a_hole_are_applied_in_sequence_and_counted() {
    // No relay: the test writes the log itself.
    let stack = spawn_stack(&shared_bootstrap(), |s| s.relay.enabled = false).await;
    let (reordered, holed) = (
        stack.app.register(&unique_email()).await,
        stack.app.register(&unique_email()).await,
    );
    for user in [&reordered, &holed] {
        rename(&stack, user, 4).await;
    }
    let stored = encode_stored(&stack).await;
    assert_eq!(stored.len(), 10, "two users of five events each");
    let at = |user: &String, sequence: i64| &stored[&(user.clone(), sequence)];
    // What a timed-out idempotent producer and a re-publishing relay leave: 1, 4, 5, 2, 3, 4, 5.
    // And a hole that nothing re-publishes: 1, 2, 5.
    let mut log: Vec<&Message> = [1, 4, 5, 2, 3, 4, 5]
        .iter()
        .map(|&s| at(&reordered, s))
        .collect();
    log.extend([1, 2, 5].iter().map(|&s| at(&holed, s)));
    create_topics(&stack).await;
    produce_in_order(&stack, &log).await;

    let port = free_port();
    let projector = spawn_projector_on(&stack.settings, port);
    let pool = &stack.app.pool;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    assert_read_models_match_the_events(pool).await;
    let audited: i64 = sqlx::query_scalar("SELECT count(DISTINCT event_id) FROM rm_audit")
        .fetch_one(pool)
        .await
        .expect("count audit rows");
    assert_eq!(audited, 10, "every event audited once, none skipped");

    // One gap per user in each projection that reads users (a batch retried after a gap would
    // see it again, hence at least).
    let page = metrics_page(port).await;
    for projection in ["users", "audit"] {
        let gaps = projection_counter(&page, "projection_gaps_total", projection);
        assert!(gaps >= 2.0, "{projection}: {gaps} gaps counted\n{page}");
    }
    drop(projector);
}

/// The event a gap lacks, read from the event store, is of a version newer than this projector
/// knows (written by newer code during a rolling update): the batch waits for a newer
/// projector, and nothing past the gap is applied. Before, the stored event was read through
/// this build's older schema and applied (or, of a type it lacks, set aside for good), and the
/// later event applied over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gap_that_holds_an_event_newer_than_the_projector_waits_for_a_newer_projector() {
    let stack = spawn_stack(&shared_bootstrap(), |s| s.relay.enabled = false).await;
    let pool = &stack.app.pool;
    let user = gap_over(&stack, "event_version = '99'").await;

    let port = free_port();
    let projector = spawn_projector_on(&stack.settings, port);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = metrics_page(port).await;
        if metric_sum(&page, "projection_newer_events_waited_total", &[]) >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the projector never waited for the newer event: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let applied: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM projection_versions
         WHERE projection = 'users' AND aggregate_type = 'user' AND aggregate_id = $1",
    )
    .bind(&user)
    .fetch_optional(pool)
    .await
    .unwrap();
    // The batch that holds the gap waits whole: its first event may not be applied yet either.
    assert!(
        applied.is_none_or(|version| version < 2),
        "applied past the newer event: {applied:?}"
    );
    let letters: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE aggregate_id = $1")
            .bind(&user)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(letters, 0, "the newer event was set aside");
    drop(projector);
}

/// The event a gap lacks is of a type this projector has no schema for, and was written long
/// ago (longer than a message of an unknown type is waited for: a release rolled back after
/// writing it, say, whose newer projector never comes): it is set aside as a message would be,
/// and the later event is applied. Before, the partition waited for it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gap_that_holds_an_old_event_of_an_unknown_type_sets_it_aside() {
    let stack = spawn_stack(&shared_bootstrap(), |s| s.relay.enabled = false).await;
    let pool = &stack.app.pool;
    let user = gap_over(
        &stack,
        "event_type = 'UserFrobnicated', recorded_at = now() - interval '1 hour'",
    )
    .await;

    let projector = spawn_projector_on(&stack.settings, free_port());
    crate::support::projector::wait_until_models_projected(
        pool,
        |m| m == "users",
        Duration::from_secs(60),
    )
    .await;
    let letters: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE projection = 'users' AND aggregate_id = $1",
    )
    .bind(&user)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(letters, 1, "the unknown event's dead letter");
    drop(projector);
}
