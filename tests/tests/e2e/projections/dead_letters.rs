//! Dead letters: an event no projection can decode is set aside per projection, and the
//! events behind it keep flowing.

use std::time::Duration;

use crate::support::app::unique_email;
use crate::support::kafka::shared_bootstrap;
use crate::support::projector::{wait_until_projected, InProcessProjector};
use crate::support::stack::{spawn_stack, wait_until_published};

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
    // Not Confluent-framed Avro: no projection can decode it.
    let producer: FutureProducer = infra::kafka::producer(&stack.settings.kafka).unwrap();
    let topic = infra::kafka::topic_for(&stack.prefix, "user");
    let poison = uuid::Uuid::now_v7().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "event_id",
            value: Some(poison.as_str()),
        })
        .insert(Header {
            key: "aggregate_id",
            value: Some(poison.as_str()),
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
    let letters: Vec<(String, String, String)> =
        sqlx::query_as("SELECT projection, event_id, error FROM dead_letters ORDER BY projection")
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
        letters
            .iter()
            .all(|l| l.1 == poison && l.2.contains("undecodable")),
        "{letters:?}"
    );
    projector.stop().await;
}
