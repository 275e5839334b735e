//! Projections: read models equal an independent fold of the events table, and redelivered
//! events change nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};
use sqlx::{PgPool, Row};

use crate::helpers::{unique_email, TestApp};
use crate::kafka::{shared_bootstrap, spawn_stack, wait_until_published};

/// Users who order and pay; some orders are cancelled (with refunds), some shipped.
pub async fn commerce_load(app: &TestApp, customers: usize) {
    let flows = (0..customers).map(|i| async move {
        let user = app.register(&unique_email()).await;
        let order = app.place_order(&user).await.id();
        let payment = app
            .post("/v1/payments", json!({"order_id": order, "amount_minor": 3000, "currency": "EUR", "method": "card"}))
            .await
            .id();
        let steps: Vec<(String, Value)> = vec![
            (format!("/v1/payments/{payment}/authorize"), json!({"amount_minor": 3000})),
            (format!("/v1/payments/{payment}/capture"), json!({"amount_minor": 3000})),
            (format!("/v1/orders/{order}/confirm"), json!({})),
        ];
        for (path, body) in steps {
            let answer = app.post(&path, body).await;
            assert!(answer.status.is_success(), "{path}: {}", answer.body);
        }
        let tail: Vec<(String, Value)> = if i % 3 == 0 {
            vec![
                (format!("/v1/orders/{order}/cancel"), json!({"reason": "changed mind"})),
                (format!("/v1/payments/{payment}/refund"), json!({"amount_minor": 3000, "reason": "cancelled"})),
            ]
        } else {
            vec![
                (format!("/v1/orders/{order}/start-processing"), json!({})),
                (format!("/v1/orders/{order}/ship"), json!({"carrier": "DHL", "tracking_number": format!("T{i}")})),
            ]
        };
        for (path, body) in tail {
            let answer = app.post(&path, body).await;
            assert!(answer.status.is_success(), "{path}: {}", answer.body);
        }
        app.post(&format!("/v1/users/{user}/profile"), json!({"display_name": format!("Customer {i}")})).await;
    });
    join_all(flows).await;
}

/// Events a projection has not applied yet.
pub async fn unprojected(pool: &PgPool, projection: &str, aggregates: &[&str]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events e WHERE e.aggregate_type = ANY($2) AND NOT EXISTS (
             SELECT 1 FROM projection_versions v WHERE v.projection = $1
             AND v.aggregate_type = e.aggregate_type AND v.aggregate_id = e.aggregate_id AND v.version >= e.sequence)",
    )
    .bind(projection)
    .bind(aggregates.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    .fetch_one(pool)
    .await
    .expect("count unprojected")
}

pub async fn wait_until_projected(pool: &PgPool, timeout: Duration) {
    let all: [(&str, &[&str]); 5] = [
        ("users", &["user"]),
        ("orders", &["order"]),
        ("payments", &["payment"]),
        ("analytics", &["order", "payment"]),
        ("audit", &["user", "order", "payment"]),
    ];
    let deadline = Instant::now() + timeout;
    for (projection, aggregates) in all {
        loop {
            let left = unprojected(pool, projection, aggregates).await;
            if left == 0 {
                break;
            }
            if Instant::now() > deadline {
                let letters: Vec<String> =
                    sqlx::query_scalar("SELECT error FROM dead_letters LIMIT 5")
                        .fetch_all(pool)
                        .await
                        .unwrap_or_default();
                panic!("{projection}: {left} events not projected after {timeout:?}; dead letters: {letters:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Folds the events table independently of the projector and compares every read model.
pub async fn assert_read_models_match_the_events(pool: &PgPool) {
    let events = sqlx::query(
        "SELECT aggregate_type, aggregate_id, sequence, payload, event_id, metadata FROM events
         ORDER BY aggregate_type, aggregate_id, sequence",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut users: BTreeMap<String, (String, String, i64)> = BTreeMap::new();
    let mut orders: BTreeMap<String, (String, i64, Option<String>)> = BTreeMap::new();
    let mut payments: BTreeMap<String, (String, i64, i64, i64)> = BTreeMap::new();
    let mut revenue: BTreeMap<(String, String), (i64, i64, i64)> = BTreeMap::new();
    for row in &events {
        let (kind, id): (String, String) = (row.get("aggregate_type"), row.get("aggregate_id"));
        let sequence: i64 = row.get("sequence");
        let payload: Value = row.get("payload");
        let metadata: Value = row.get("metadata");
        let day = metadata["occurred_at"].as_str().unwrap_or_default()[..10].to_owned();
        let t = payload["type"].as_str().unwrap_or_default();
        match kind.as_str() {
            "user" => {
                let entry = users
                    .entry(id)
                    .or_insert((String::new(), "active".into(), 0));
                if let Some(name) = payload["display_name"].as_str() {
                    entry.0 = name.to_owned();
                }
                if t == "UserDeactivated" {
                    entry.1 = "deactivated".into();
                }
                entry.2 = sequence;
            }
            "order" => {
                let entry = orders.entry(id).or_insert((String::new(), 0, None));
                entry.0 = match t {
                    "OrderPlaced" => {
                        let currency = payload["currency"].as_str().unwrap_or_default().to_owned();
                        revenue.entry((day.clone(), currency)).or_default().2 += 1;
                        "created"
                    }
                    "OrderConfirmed" => "confirmed",
                    "OrderProcessingStarted" => "processing",
                    "OrderShipped" => {
                        entry.2 = payload["carrier"].as_str().map(str::to_owned);
                        "shipped"
                    }
                    "OrderDelivered" => "delivered",
                    _ => "cancelled",
                }
                .to_owned();
                entry.1 = sequence;
            }
            _ => {
                let entry = payments.entry(id).or_insert((String::new(), 0, 0, 0));
                let currency = payload["currency"].as_str().unwrap_or_default().to_owned();
                let amount = payload["amount_minor"].as_i64().unwrap_or_default();
                entry.0 = match t {
                    "PaymentInitiated" => "initiated".into(),
                    "PaymentAuthorized" => "authorized".into(),
                    "PaymentCaptured" => {
                        entry.1 = payload["captured_total_minor"].as_i64().unwrap_or_default();
                        revenue.entry((day.clone(), currency)).or_default().0 += amount;
                        "captured".into()
                    }
                    "PaymentFailed" => "failed".into(),
                    _ => {
                        entry.2 = payload["refunded_total_minor"].as_i64().unwrap_or_default();
                        revenue.entry((day.clone(), currency)).or_default().1 += amount;
                        if payload["fully_refunded"] == json!(true) {
                            "refunded".into()
                        } else {
                            "partially_refunded".into()
                        }
                    }
                };
                entry.3 = sequence;
            }
        }
    }
    let projected: BTreeMap<String, (String, String, i64)> = rows::<(String, String, String, i64)>(
        pool,
        "SELECT id::text, display_name, status, version FROM rm_users",
    )
    .await
    .into_iter()
    .map(|(id, name, status, version)| (id, (name, status, version)))
    .collect();
    assert_eq!(projected, users, "rm_users differs from the events");
    let projected: BTreeMap<String, (String, i64, Option<String>)> =
        rows::<(String, String, i64, Option<String>)>(
            pool,
            "SELECT id::text, status, version, carrier FROM rm_orders",
        )
        .await
        .into_iter()
        .map(|(id, status, version, carrier)| (id, (status, version, carrier)))
        .collect();
    assert_eq!(projected, orders, "rm_orders differs from the events");
    let projected: BTreeMap<String, (String, i64, i64, i64)> =
        rows::<(String, String, i64, i64, i64)>(
            pool,
            "SELECT id::text, status, captured_minor, refunded_minor, version FROM rm_payments",
        )
        .await
        .into_iter()
        .map(|(id, status, captured, refunded, version)| {
            (id, (status, captured, refunded, version))
        })
        .collect();
    assert_eq!(projected, payments, "rm_payments differs from the events");
    let projected: BTreeMap<(String, String), (i64, i64, i64)> = rows::<(
        String,
        String,
        i64,
        i64,
        i64,
    )>(
        pool,
        "SELECT day::text, currency, captured_minor, refunded_minor, orders FROM rm_revenue_daily",
    )
    .await
    .into_iter()
    .map(|(day, currency, captured, refunded, orders)| {
        ((day, currency), (captured, refunded, orders))
    })
    .collect();
    assert_eq!(
        projected, revenue,
        "rm_revenue_daily differs from the events"
    );
    let audit: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rm_audit a JOIN events e USING (aggregate_type, aggregate_id, sequence)
         WHERE a.event_id = e.event_id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        audit as usize,
        events.len(),
        "rm_audit differs from the events"
    );
}

/// Every row of a query, as tuples.
async fn rows<T>(pool: &PgPool, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A write stack and an in-process projector (no process manager: the load confirms and
/// refunds by itself) that has projected `customers` customers' commerce.
async fn projected_commerce(
    customers: usize,
) -> (
    crate::kafka::Stack,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let projector = tokio::spawn(projections::run_all(
        stack.app.pool.clone(),
        stack.settings.clone(),
        None,
        stopped,
    ));
    commerce_load(&stack.app, customers).await;
    let pool = &stack.app.pool;
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    (stack, stop, projector)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_models_equal_a_fold_of_the_events_and_ignore_redelivery() {
    let (stack, stop, projector) = projected_commerce(60).await;
    let pool = &stack.app.pool;
    assert_read_models_match_the_events(pool).await;

    // Redelivery: every message is published a second time, byte for byte; nothing may change.
    let snapshot = read_model_snapshot(pool).await;
    let offsets_before: i64 =
        sqlx::query_scalar("SELECT COALESCE(sum(next_offset), 0)::bigint FROM projection_offsets")
            .fetch_one(pool)
            .await
            .unwrap();
    let republished = republish_everything(&stack).await;
    assert!(republished >= 540, "{republished}");
    // The projections consume the copies (their offsets move on) and apply none of them.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let offsets: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(next_offset), 0)::bigint FROM projection_offsets",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        // Five projections read 3, 1, 1, 1 and 2 topics: each copy is consumed by all readers.
        if offsets >= offsets_before + 2 * republished as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "the copies were not consumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        read_model_snapshot(pool).await,
        snapshot,
        "a redelivered event changed a read model"
    );
    assert_read_models_match_the_events(pool).await;
    let _ = stop.send(true);
    let _ = projector.await;
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
    ] {
        let sql = format!("SELECT t::text FROM {table} t ORDER BY 1");
        let texts: Vec<String> = sqlx::query_scalar(&sql).fetch_all(pool).await.unwrap();
        rows.extend(texts.into_iter().map(|t| format!("{table}: {t}")));
    }
    rows
}

/// Reads every message of the stack's topics and produces it again, unchanged.
async fn republish_everything(stack: &crate::kafka::Stack) -> usize {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let topics = infra::kafka::event_topics(&stack.settings.kafka);
    let events = stack.app.event_count().await as usize;
    let messages = crate::kafka::consume(
        &stack.bootstrap,
        &topics,
        stack.settings.kafka.partitions,
        events,
        Duration::from_secs(30),
    )
    .await;
    let producer: FutureProducer = infra::kafka::producer(&stack.settings.kafka).expect("producer");
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
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("republish");
    }
    messages.len()
}

/// A projector of its own process (`projector` binary), for kill -9.
/// The `projector` binary with the settings of `settings` in its environment.
pub fn projector_command(settings: &infra::settings::Settings) -> std::process::Command {
    use infra::secrecy::ExposeSecret;
    let exe = std::env::current_exe().expect("test binary path");
    let binary = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("projector");
    assert!(
        binary.exists(),
        "{} missing: run `cargo build --bins` (make test does)",
        binary.display()
    );
    let mut command = std::process::Command::new(binary);
    command
        .env("APP__DATABASE__URL", settings.database.url.expose_secret())
        .env(
            "APP__KAFKA__BOOTSTRAP_SERVERS",
            &settings.kafka.bootstrap_servers,
        )
        .env("APP__KAFKA__TOPIC_PREFIX", &settings.kafka.topic_prefix)
        .env("APP__SCHEMA_REGISTRY__URL", &settings.schema_registry.url)
        .env("APP__LOG__FILTER", "warn");
    command
}

/// A projector process; with `command_api`, its process manager sends commands there.
pub fn spawn_projector(
    settings: &infra::settings::Settings,
    command_api: Option<&str>,
) -> std::process::Child {
    let mut command = projector_command(settings);
    match command_api {
        Some(url) => command.env("APP__PROJECTOR__COMMAND_API_URL", url),
        None => command.env("APP__PROJECTOR__PROCESS_MANAGER", "false"),
    };
    command
        .env(
            "APP__PROJECTOR__PORT",
            crate::kafka::free_port().to_string(),
        )
        .env("APP__PROJECTOR__BATCH_SIZE", "50")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a projector process")
}

/// Kills the child (SIGKILL) when dropped, so a failing test leaves no process behind.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projector_killed_repeatedly_applies_everything_exactly_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let loaded = AtomicBool::new(false);
    let load = async {
        commerce_load(&stack.app, 250).await;
        loaded.store(true, Ordering::SeqCst);
    };
    // SIGKILL and restart the projector each time it has made progress (so every kill lands
    // in the middle of its work), until the load is written, at least four times.
    let killer = async {
        let applied = || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM projection_versions")
                .fetch_one(&stack.app.pool)
                .await
                .unwrap()
        };
        let mut projector = Killed(spawn_projector(&stack.settings, None));
        let (mut kills, mut seen, mut at_kills) = (0, 0, Vec::new());
        while kills < 4 || !loaded.load(Ordering::SeqCst) {
            let deadline = Instant::now() + Duration::from_secs(3);
            while applied().await <= seen && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen = applied().await;
            at_kills.push(seen);
            tokio::time::sleep(Duration::from_millis(50 + 50 * (kills % 4))).await;
            let old = std::mem::replace(
                &mut projector,
                Killed(spawn_projector(&stack.settings, None)),
            );
            // Killing and reaping block: off the async workers.
            tokio::task::spawn_blocking(move || drop(old))
                .await
                .expect("kill the projector");
            kills += 1;
        }
        (projector, kills, at_kills)
    };
    let ((), (projector, kills, at_kills)) = tokio::join!(load, killer);
    let pool = &stack.app.pool;
    let events = stack.app.event_count().await;
    assert!(events >= 2000, "only {events} events flowed");
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(90)).await;
    assert_read_models_match_the_events(pool).await;
    eprintln!(
        "{events} events flowed; the projector was killed {kills} times, \
         having applied {at_kills:?} aggregate versions in all"
    );
    drop(projector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_is_dead_lettered_and_others_keep_flowing() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // No process manager: the load confirms and refunds by itself.
    let projector = tokio::spawn(projections::run_all(
        stack.app.pool.clone(),
        stack.settings.clone(),
        None,
        stopped,
    ));
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
    let _ = stop.send(true);
    let _ = projector.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_proves_each_read_model_equals_a_rebuild_and_shows_a_difference() {
    use projections::verify::verify;
    let (stack, stop, projector) = projected_commerce(30).await;
    let pool = &stack.app.pool;
    let _ = stop.send(true);
    let _ = projector.await;

    for model in projections::READ_MODELS {
        let verification = verify(pool, *model).await.expect("verify");
        assert!(verification.matches(), "{verification}");
        assert!(verification.failed.is_empty(), "{verification}");
        assert!(verification.events >= 30, "{verification}");
        assert!(
            verification.tables.iter().all(|t| t.live_rows > 0),
            "{verification}"
        );
    }

    // A live row that no event explains is found, and shown next to what the events say.
    let tampered: uuid::Uuid = sqlx::query_scalar(
        "UPDATE rm_orders SET status = 'delivered'
         WHERE id = (SELECT id FROM rm_orders WHERE status = 'shipped' ORDER BY id LIMIT 1) RETURNING id",
    )
    .fetch_one(pool)
    .await
    .expect("tamper with an order");
    let orders = projections::read_model("orders").expect("the orders read model");
    let verification = verify(pool, orders).await.expect("verify");
    assert!(!verification.matches());
    let table = &verification.tables[0];
    assert_eq!(
        (table.only_live.len(), table.only_rebuilt.len()),
        (1, 1),
        "{verification}"
    );
    assert!(
        table.only_live[0].contains(&tampered.to_string())
            && table.only_live[0].contains("delivered")
    );
    assert!(
        table.only_rebuilt[0].contains(&tampered.to_string())
            && table.only_rebuilt[0].contains("shipped")
    );
    let scratch: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'verify_%'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(scratch, 0, "the scratch schemas are dropped");

    // The command: exit 0 when equal, 1 with the difference printed when not.
    let settings = stack.settings.clone();
    let (users, orders) = tokio::task::spawn_blocking(move || {
        let run = |name: &str| {
            projector_command(&settings)
                .args(["verify", name])
                .output()
                .expect("run projector verify")
        };
        (run("users"), run("orders"))
    })
    .await
    .unwrap();
    assert_eq!(
        users.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&users.stdout)
    );
    assert_eq!(orders.status.code(), Some(1));
    let printed = String::from_utf8_lossy(&orders.stdout);
    assert!(
        printed.contains("DIFFERENT") && printed.contains(&tampered.to_string()),
        "{printed}"
    );
}

/// SIGTERM during load: the projector finishes the batch in hand and exits 0 promptly; a new
/// one carries on from what was committed, and nothing is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projector_stops_gracefully_on_sigterm() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let first = spawn_projector(&stack.settings, None);
    let pool = &stack.app.pool;
    // Once the projector is busy applying the load, SIGTERM it and wait (bounded) for it.
    let stop_when_busy = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_versions")
                .fetch_one(pool)
                .await
                .unwrap();
            if applied > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the projector applied nothing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::task::spawn_blocking(move || {
            let pid = first.id().to_string();
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("run kill");
            assert!(sent.success());
            let mut first = Killed(first);
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(status) = first.0.try_wait().expect("wait for the projector") {
                    return status;
                }
                assert!(Instant::now() < deadline, "the projector ignored SIGTERM");
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .expect("stopper thread")
    };
    let ((), status) = tokio::join!(commerce_load(&stack.app, 120), stop_when_busy);
    assert!(status.success(), "the projector exited with {status}");
    let second = Killed(spawn_projector(&stack.settings, None));
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    assert_read_models_match_the_events(pool).await;
    drop(second);
}
