//! Kafka client factories: the idempotent producer the relay publishes with, topic creation,
//! and consumers. Nothing here is specific to one broker or deployment (three local Apache
//! Kafka brokers or a production cluster); nothing depends on Kafka transactions.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

use crate::settings::KafkaSettings;

/// The settings every client of the event topics shares: the brokers, small requests sent at
/// once, and the operator's `kafka.properties` (TLS, SASL, ...) last, so they win.
pub fn base(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("client.id", "commerce")
        // Small requests (one event, one fetch) must not wait for Nagle's algorithm to meet
        // the peer's delayed ACK: that alone adds up to 40 ms per hop on Linux.
        .set("socket.nagle.disable", "true")
        // After a broker that stopped answering comes back, reconnect within a second:
        // librdkafka's own bound (10 s) kept the projector idle for up to ten seconds after
        // the relay had already caught up (`make bench-stall`, docs/performance.md).
        .set("reconnect.backoff.max.ms", "1000");
    // Operators' properties last, so they win: TLS, SASL and anything else librdkafka takes.
    for (key, value) in &settings.properties.0 {
        config.set(key, value);
    }
    config
}

/// An idempotent producer: acks from all in-sync replicas, no duplicates or reordering from
/// its own retries, per-partition order preserved.
pub fn producer(settings: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
    base(settings)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "2")
        .set(
            "message.timeout.ms",
            settings.delivery_timeout_ms.to_string(),
        )
        .create()
}

/// The configuration of a consumer in `group` that commits nothing to Kafka (callers store
/// their offsets) and reads a partition from its beginning when told nothing else; librdkafka's
/// statistics every five seconds go to the client context. A group member that stops
/// heartbeating (killed) gives its partitions up after ten seconds.
pub fn consumer_config(settings: &KafkaSettings, group: &str) -> ClientConfig {
    let mut config = base(settings);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", "5000")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "2000")
        .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string());
    // Operators' properties last again, so they win over these too.
    for (key, value) in &settings.properties.0 {
        config.set(key, value);
    }
    config
}

/// Creates the topics that do not exist yet, with unlimited retention (replays read them).
pub async fn ensure_topics(settings: &KafkaSettings, topics: &[String]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = base(settings).create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
            .set("retention.ms", "-1")
        })
        .collect();
    // Both timeouts: a broker that accepts the connection but never answers must surface as an
    // error (the relay then retries), not hang the caller.
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(%topic, ?code, "creating a topic failed");
                })
            }
        }
    }
    Ok(())
}

/// The three event topics, with the configured prefix.
pub fn event_topics(settings: &KafkaSettings) -> Vec<String> {
    ["user", "order", "payment"]
        .iter()
        .map(|aggregate| topic_for(&settings.topic_prefix, aggregate))
        .collect()
}

/// `users.events` for `user`, with the prefix in front.
pub fn topic_for(prefix: &str, aggregate_type: &str) -> String {
    format!("{prefix}{aggregate_type}s.events")
}

/// Every partition of `topic` with its low and high watermarks, as `consumer` gets them from
/// the brokers (each request bounded by `timeout`); the error names what did not answer.
pub fn watermarks<C: rdkafka::consumer::Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64, i64)>, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    (0..partitions as i32)
        .map(|partition| {
            consumer
                .fetch_watermarks(topic, partition, timeout)
                .map(|(low, high)| (partition, low, high))
                .map_err(|e| format!("watermarks of {topic}/{partition}: {e}"))
        })
        .collect()
}
