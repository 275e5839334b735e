//! The write stack: the command API with its relay and a schema registry on one test database,
//! with a unique topic prefix ([`spawn_stack`]; [`stack_without_relay`] for a relay in its own
//! processes), waiting until the relay has published everything, and [`verify_log`], which
//! checks the topics against the events table.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use infra::secrecy::ExposeSecret;
use infra::settings::Settings;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::app::{spawn_app_on, TestApp};
use crate::support::database::TestDatabase;
use crate::support::kafka::{consume, shared_bootstrap, Consumed};
use crate::support::registry::start_registry;

/// The write side with its relay: command API, registry, a unique topic prefix.
pub struct Stack {
    pub app: TestApp,
    pub registry_url: String,
    pub bootstrap: String,
    pub prefix: String,
    pub settings: Settings,
}

/// Settings for the write stack on `db` against `bootstrap` and `registry_url`.
fn stack_settings(db: &TestDatabase, bootstrap: &str, registry_url: &str) -> Settings {
    let mut settings = db.settings();
    settings.relay.enabled = true;
    settings.relay.poll_interval_ms = 200;
    settings.kafka.bootstrap_servers = bootstrap.to_owned();
    settings.kafka.topic_prefix = format!("t{}.", &Uuid::new_v4().simple().to_string()[..12]);
    // Against a cluster of the test's own, which fault tests stop, undelivered messages fail
    // after 5 s, so that the faults stay short. The shared cluster is not stopped but is
    // busy: under a whole `make test` its acknowledgements took over 5 s at times, and each
    // timeout made the relay send its batch again (a "clean" run then had duplicates).
    settings.kafka.delivery_timeout_ms = if bootstrap == shared_bootstrap() {
        15_000
    } else {
        5_000
    };
    settings.schema_registry.url = registry_url.to_owned();
    settings
}

/// The write stack on `bootstrap` with its relay in this process.
pub async fn spawn_stack(bootstrap: &str, adjust: impl FnOnce(&mut Settings)) -> Stack {
    start_stack(bootstrap, adjust, true).await
}

/// A write stack on the shared brokers whose relay runs in separate processes: the command API
/// runs without one, and the stack's settings are those for the relay processes.
pub async fn stack_without_relay() -> Stack {
    start_stack(&shared_bootstrap(), |_| {}, false).await
}

async fn start_stack(
    bootstrap: &str,
    adjust: impl FnOnce(&mut Settings),
    relay_in_process: bool,
) -> Stack {
    let db = TestDatabase::create().await;
    let registry_url = start_registry(&db).await;
    let mut settings = stack_settings(&db, bootstrap, &registry_url);
    adjust(&mut settings);
    let mut app_settings = settings.clone();
    if !relay_in_process {
        app_settings.relay.enabled = false;
    }
    let app = spawn_app_on(db, app_settings).await;
    Stack {
        app,
        registry_url,
        bootstrap: bootstrap.to_owned(),
        prefix: settings.kafka.topic_prefix.clone(),
        settings,
    }
}

impl Stack {
    /// The URL of the stack's database.
    pub fn database_url(&self) -> String {
        self.settings.database.url.expose_secret().to_owned()
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

/// Polls until at most `left` events are unpublished, within `timeout`; the count then. A
/// relay publishes only below the oldest transaction running anywhere on the server, so a
/// transaction another test holds open delays it: a test asserts what stays unpublished only
/// after what should be published is.
pub async fn wait_until_unpublished_at_most(pool: &PgPool, left: i64, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let now = unpublished(pool).await;
        if now <= left {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{now} events still unpublished after {timeout:?}, expected at most {left}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
