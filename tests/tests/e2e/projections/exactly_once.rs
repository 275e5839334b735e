//! Exactly once: read models equal an independent fold of the events table, and a second
//! delivery of every message changes nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::support::fold::assert_read_models_match_the_events;
use crate::support::kafka::consume;
use crate::support::projector::projected_commerce;
use crate::support::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_models_equal_a_fold_of_the_events_and_ignore_redelivery() {
    let (stack, projector) = projected_commerce(60).await;
    let pool = &stack.app.pool;
    assert_read_models_match_the_events(pool).await;

    // Redelivery: every message is published a second time, byte for byte; nothing may change.
    let snapshot = read_model_snapshot(pool).await;
    let copies = republish_everything(&stack).await;
    assert!(copies.len() >= 540, "{}", copies.len());
    // The projections consume the copies (their offsets move past the last copy of each
    // partition) and apply none of them. Every projection that read a partition's originals
    // reads its copies too (the same keys, so the same partitions).
    let mut last: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (topic, partition, offset) in copies {
        let at = last.entry((topic, partition)).or_default();
        *at = (*at).max(offset);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows: Vec<(String, String, i32, i64)> = sqlx::query_as(
            "SELECT projection, topic, partition, next_offset FROM projection_offsets",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let behind: Vec<_> = rows
            .iter()
            .filter(|(_, topic, partition, next)| {
                last.get(&(topic.clone(), *partition))
                    .is_some_and(|copy| next <= copy)
            })
            .collect();
        let readers = rows
            .iter()
            .filter(|(_, topic, partition, _)| last.contains_key(&(topic.clone(), *partition)))
            .count();
        assert!(
            readers >= last.len(),
            "a partition with copies has no reader: {rows:?}"
        );
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the copies were not consumed: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        read_model_snapshot(pool).await,
        snapshot,
        "a redelivered event changed a read model"
    );
    assert_read_models_match_the_events(pool).await;
    projector.stop().await;
}

/// Every read-model row as text, to compare before and after.
async fn read_model_snapshot(pool: &PgPool) -> Vec<String> {
    let mut rows = Vec::new();
    for table in [
        "rm_users",
        "rm_orders",
        "rm_payments",
        "rm_revenue_daily",
        "rm_funnel",
        "rm_audit",
        "rm_customer_value",
    ] {
        let sql = format!("SELECT t::text FROM {table} t ORDER BY 1");
        let texts: Vec<String> = sqlx::query_scalar(&sql).fetch_all(pool).await.unwrap();
        rows.extend(texts.into_iter().map(|t| format!("{table}: {t}")));
    }
    rows
}

/// Reads every message of the stack's topics and produces it again, unchanged; where each copy
/// went (topic, partition, offset).
async fn republish_everything(stack: &Stack) -> Vec<(String, i32, i64)> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let topics = infra::kafka::event_topics(&stack.settings.kafka);
    let events = stack.app.event_count().await as usize;
    let messages = consume(
        &stack.bootstrap,
        &topics,
        stack.settings.kafka.partitions,
        events,
        Duration::from_secs(30),
    )
    .await;
    let producer: FutureProducer = infra::kafka::producer(&stack.settings.kafka).expect("producer");
    let mut copies = Vec::with_capacity(messages.len());
    for message in &messages {
        let headers = message
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |h, (key, value)| {
                h.insert(Header {
                    key: key.as_str(),
                    value: Some(value.as_str()),
                })
            });
        let record = FutureRecord::to(&message.topic)
            .key(&message.key)
            .payload(&message.payload)
            .headers(headers);
        let delivered = producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("republish");
        copies.push((message.topic.clone(), delivered.partition, delivered.offset));
    }
    copies
}
