//! Projections: read models equal an independent fold of the events table, and redelivered
//! events change nothing.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::support::app::unique_email;
use crate::support::commerce::commerce_load;
use crate::support::fold::assert_read_models_match_the_events;
use crate::support::kafka::{consume, shared_bootstrap};
use crate::support::processes::{service_command, spawn_projector};
use crate::support::projector::{projected_commerce, wait_until_projected, InProcessProjector};
use crate::support::stack::{spawn_stack, wait_until_published, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_models_equal_a_fold_of_the_events_and_ignore_redelivery() {
    let (stack, projector) = projected_commerce(60).await;
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
    ] {
        let sql = format!("SELECT t::text FROM {table} t ORDER BY 1");
        let texts: Vec<String> = sqlx::query_scalar(&sql).fetch_all(pool).await.unwrap();
        rows.extend(texts.into_iter().map(|t| format!("{table}: {t}")));
    }
    rows
}

/// Reads every message of the stack's topics and produces it again, unchanged.
async fn republish_everything(stack: &Stack) -> usize {
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
        let mut projector = spawn_projector(&stack.settings, None);
        let (mut kills, mut seen, mut at_kills) = (0, 0, Vec::new());
        while kills < 4 || !loaded.load(Ordering::SeqCst) {
            let deadline = Instant::now() + Duration::from_secs(3);
            while applied().await <= seen && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen = applied().await;
            at_kills.push(seen);
            tokio::time::sleep(Duration::from_millis(50 + 50 * (kills % 4))).await;
            let old = std::mem::replace(&mut projector, spawn_projector(&stack.settings, None));
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

/// SIGTERM during load: the projector finishes the batch in hand and exits 0 promptly; a new
/// one carries on from what was committed, and nothing is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projector_stops_gracefully_on_sigterm() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let mut first = spawn_projector(&stack.settings, None);
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
            first.signal("-TERM");
            first.wait_for_exit(Duration::from_secs(15), "the projector ignored SIGTERM")
        })
        .await
        .expect("stopper thread")
    };
    let ((), status) = tokio::join!(commerce_load(&stack.app, 120), stop_when_busy);
    assert!(status.success(), "the projector exited with {status}");
    let second = spawn_projector(&stack.settings, None);
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    assert_read_models_match_the_events(pool).await;
    drop(second);
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_proves_each_read_model_equals_a_rebuild_and_shows_a_difference() {
    use projections::verify::verify;
    let (stack, projector) = projected_commerce(30).await;
    let pool = &stack.app.pool;
    projector.stop().await;

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
            service_command("projector", &settings)
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
