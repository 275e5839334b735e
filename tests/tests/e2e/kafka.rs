//! Kafka-side harness: Apache Kafka brokers the tests control, the whole write stack (command API with
//! relay, schema registry) on one test database, and a consumer that reads topics from the
//! beginning and checks them against the events table.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use infra::settings::Settings;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{start_registry, TestApp, TestDatabase};

/// The three-broker cluster `make test` starts, shared by tests that do not stop it.
pub fn shared_bootstrap() -> String {
    std::env::var("TEST_KAFKA_BOOTSTRAP")
        .unwrap_or_else(|_| "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094".to_owned())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A one-node Apache Kafka cluster of the test's own (started with `infra/local/kafka.sh`), for
/// tests that stop the broker; its data survives a restart.
pub struct Broker {
    port: u16,
    controller_port: u16,
    dir: PathBuf,
}

impl Broker {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("kafka-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("broker dir");
        let mut broker = Self {
            port: free_port(),
            controller_port: free_port(),
            dir,
        };
        broker.restart();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same ports and storage; returns once the broker takes requests.
    pub fn restart(&mut self) {
        let status = Self::script()
            .arg("up")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .arg(self.controller_port.to_string())
            .stdout(Stdio::null())
            .status()
            .expect("run infra/local/kafka.sh");
        assert!(status.success(), "the test's Kafka broker did not start");
    }

    pub fn stop(&mut self) {
        let _ = Self::script()
            .arg("down")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn script() -> Command {
        Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../infra/local/kafka.sh"
        ))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The write side with its relay: command API, registry, a unique topic prefix.
pub struct Stack {
    pub app: TestApp,
    pub registry_url: String,
    pub bootstrap: String,
    pub prefix: String,
    pub settings: Settings,
}

/// Settings for the write stack on `db` against `bootstrap` and `registry_url`.
pub fn stack_settings(db: &TestDatabase, bootstrap: &str, registry_url: &str) -> Settings {
    let mut settings = db.settings();
    settings.relay.enabled = true;
    settings.relay.poll_interval_ms = 200;
    settings.kafka.bootstrap_servers = bootstrap.to_owned();
    settings.kafka.topic_prefix = format!("t{}.", &Uuid::new_v4().simple().to_string()[..12]);
    settings.kafka.delivery_timeout_ms = 5_000;
    settings.schema_registry.url = registry_url.to_owned();
    settings
}

pub async fn spawn_stack(bootstrap: &str, adjust: impl FnOnce(&mut Settings)) -> Stack {
    let db = TestDatabase::create().await;
    let registry_url = start_registry(&db).await;
    let mut settings = stack_settings(&db, bootstrap, &registry_url);
    adjust(&mut settings);
    let app = crate::helpers::spawn_app_on(db, settings.clone()).await;
    Stack {
        app,
        registry_url,
        bootstrap: bootstrap.to_owned(),
        prefix: settings.kafka.topic_prefix.clone(),
        settings,
    }
}

/// Events the relay has not published yet.
pub async fn unpublished(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events e
         WHERE NOT EXISTS (SELECT 1 FROM relay_checkpoints c WHERE c.name = 'default'
                           AND (e.tx_id, e.global_position) <= (c.tx_id, c.global_position))",
    )
    .fetch_one(pool)
    .await
    .expect("count unpublished events")
}

pub async fn wait_until_published(pool: &PgPool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = unpublished(pool).await;
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} events still unpublished after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Debug, Clone)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub key: String,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
}

/// Reads every partition of `topics` from the beginning until messages with `count` distinct
/// event ids arrived (duplicates are kept) or `timeout` passed.
pub async fn consume(
    bootstrap: &str,
    topics: &[String],
    partitions: i32,
    count: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .expect("assignment");
        }
    }
    consumer.assign(&assignment).expect("assign");
    let mut out: Vec<Consumed> = Vec::new();
    let mut distinct = std::collections::HashSet::new();
    let deadline = Instant::now() + timeout;
    while distinct.len() < count && Instant::now() < deadline {
        let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        else {
            continue;
        };
        let headers: HashMap<String, String> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|header| {
                        let value = header.value.map(|v| String::from_utf8_lossy(v).to_string());
                        (header.key.to_owned(), value.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        distinct.insert(headers.get("event_id").cloned().unwrap_or_default());
        out.push(Consumed {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).to_string())
                .unwrap_or_default(),
            headers,
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        });
    }
    out
}

/// Reads all three topics of the stack (expecting at least `count` messages), decodes every
/// message through the registry and checks the log against the events table: every event is
/// there with its payload and headers, each aggregate's events appear in sequence order, and
/// any duplicate is the same event (same id, same content). Returns the messages.
pub async fn verify_log(stack: &Stack, count: usize) -> Vec<Consumed> {
    let topics = infra::kafka::event_topics(&stack.settings.kafka);
    let messages = consume(
        &stack.bootstrap,
        &topics,
        stack.settings.kafka.partitions,
        count,
        Duration::from_secs(60),
    )
    .await;
    let decoder = schemas::wire::EventDecoder::new(&stack.registry_url);
    let rows: Vec<(Uuid, String, String, i64, String, Value, String)> = sqlx::query_as(
        "SELECT event_id, aggregate_type, aggregate_id, sequence, event_type, payload, event_version
         FROM events ORDER BY global_position",
    )
    .fetch_all(&stack.app.pool)
    .await
    .expect("read events");
    let mut by_id: HashMap<String, Value> = HashMap::new();
    let mut ids: HashMap<(String, String), String> = HashMap::new();
    let mut last_sequence: HashMap<(String, i32, String), i64> = HashMap::new();
    for message in &messages {
        let decoded = decoder
            .decode(&message.payload)
            .await
            .expect("decodable through the registry");
        let event_id = message.headers.get("event_id").cloned().unwrap_or_default();
        if let Some(previous) = by_id.insert(event_id.clone(), decoded.payload.clone()) {
            assert_eq!(previous, decoded.payload, "duplicate {event_id} differs");
        }
        let sequence: i64 = message.headers["sequence"]
            .parse()
            .expect("sequence header");
        let slot = (message.key.clone(), message.headers["sequence"].clone());
        let first_id = ids.entry(slot).or_insert_with(|| event_id.clone());
        assert_eq!(
            *first_id, event_id,
            "one aggregate sequence published under two event ids"
        );
        let position = (
            message.topic.clone(),
            message.partition,
            message.key.clone(),
        );
        let last = last_sequence.entry(position).or_insert(0);
        // Duplicates from a re-published batch may repeat earlier sequences; new events of an
        // aggregate always come in order.
        assert!(
            sequence <= *last + 1,
            "aggregate {} jumped from {last} to {sequence}",
            message.key
        );
        *last = (*last).max(sequence);
    }
    assert_eq!(
        by_id.len(),
        rows.len(),
        "the log and the events table disagree on the event count"
    );
    for (event_id, aggregate_type, aggregate_id, sequence, event_type, payload, version) in rows {
        let decoded = by_id
            .get(&event_id.to_string())
            .unwrap_or_else(|| panic!("event {event_id} missing from the log"));
        let (_, upcast) = domain::upcast::upcast(&event_type, &version, payload);
        assert_eq!(decoded, &upcast, "payload of {event_id}");
        let message = messages
            .iter()
            .find(|m| m.headers["event_id"] == event_id.to_string())
            .expect("message");
        assert_eq!(message.key, aggregate_id);
        assert_eq!(
            message.topic,
            infra::kafka::topic_for(&stack.prefix, &aggregate_type)
        );
        assert_eq!(message.headers["sequence"], sequence.to_string());
        assert_eq!(message.headers["event_type"], event_type);
        for header in [
            "event_version",
            "aggregate_id",
            "global_position",
            "correlation_id",
            "causation_id",
            "traceparent",
        ] {
            assert!(
                !message.headers[header].is_empty(),
                "header {header} is empty"
            );
        }
    }
    messages
}
