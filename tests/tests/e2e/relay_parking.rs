//! One event the relay cannot encode is parked, counted and logged; it never stops the relay.
//! One newer than the relay knows is not parked: the relay waits for a relay that knows it.
//! One the brokers refuse for good (larger than its topic allows) is neither: the relay holds
//! there, says so on `relay_refused_by_brokers`, and publishes it once the topic takes it.
//! A database that stops answering does not hold the relay silently: it gives up, says so on
//! `relay_active`, and goes on once the database answers. A relay that lost its lock stores no
//! checkpoint over a reset made meanwhile.

use std::time::Duration;

use serde_json::json;

use crate::support::app::unique_email;
use crate::support::database::insert_user_registered;
use crate::support::kafka::shared_bootstrap;
use crate::support::processes::{free_port, metric_line, spawn_relay};
use crate::support::stack::{
    spawn_stack, stack_without_relay, unpublished, verify_log, wait_until_published,
    wait_until_unpublished_at_most, Stack,
};

/// Appends an event no consumer can read (a UserRegistered whose email is a number); its id.
async fn insert_unencodable(pool: &sqlx::PgPool) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    let payload =
        json!({"type": "UserRegistered", "email": 5, "display_name": "Bad", "roles": ["customer"]});
    let metadata = json!({"event_id": id.to_string(), "occurred_at": "2026-11-23T00:00:00Z", "actor": "test",
        "correlation_id": "c", "causation_id": "c", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"});
    insert_user_registered(pool, id, payload, metadata).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unencodable_event_is_parked_and_later_events_are_still_published() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    let id = insert_unencodable(pool).await;
    stack.app.register(&unique_email()).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    let parked: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT event_id, error FROM relay_parked_events")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].0, id);
    assert!(!parked[0].1.is_empty());
}

/// A parked event with nothing after it is settled like a published one: the checkpoint
/// moves past it, so it is parked once and its age does not keep the lag (and RelayBehind)
/// up. Before, the checkpoint stayed just before it, and every restart parked it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_event_last_in_the_log_is_passed_by_the_checkpoint() {
    let stack = stack_without_relay().await;
    let pool = &stack.app.pool;
    stack.app.register(&unique_email()).await;
    insert_unencodable(pool).await;
    let port = free_port();
    let mut relay = spawn_relay(&stack.settings, port);
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_for_metric(port, "relay_lag_events 0").await;
    relay.kill();
    // A restarted relay has nothing to park again.
    let port = free_port();
    let mut relay = spawn_relay(&stack.settings, port);
    wait_for_metric(port, "relay_active 1").await;
    wait_for_metric(port, "relay_lag_events 0").await;
    let page = crate::support::projector::metrics_page(port).await;
    let parked_again =
        crate::support::processes::metric_sum(&page, "relay_events_parked_total", &[]);
    assert_eq!(parked_again, 0.0, "parked again after a restart: {page}");
    relay.kill();
}

/// An event newer than the relay knows (a version above its newest schema, written by newer
/// code during a rolling update) is neither parked nor published with an older schema: the
/// relay holds until a relay that knows it publishes it. Before, it was encoded with the
/// relay's older schema, dropping what that schema lacks, and published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_newer_than_the_relay_waits_for_a_relay_that_knows_it() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    stack.app.register(&unique_email()).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    let id = uuid::Uuid::now_v7();
    let payload = json!({"type": "UserRegistered", "email": "next@example.com",
        "display_name": "Next", "roles": ["customer"], "referrer": "a field v3 added"});
    let metadata = json!({"event_id": id.to_string(), "occurred_at": "2026-11-23T00:00:00Z", "actor": "test",
        "correlation_id": "c", "causation_id": "c", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"});
    // Written and made newer in one transaction (the relay never sees it as v2), after an
    // event the relay knows: that one is published and settled before the relay stops.
    let mut tx = pool.begin().await.unwrap();
    let known = uuid::Uuid::now_v7();
    let known_payload = json!({"type": "UserRegistered", "email": "known@example.com",
        "display_name": "Known", "roles": ["customer"]});
    let mut known_metadata = metadata.clone();
    known_metadata["event_id"] = json!(known.to_string());
    insert_user_registered(&mut *tx, known, known_payload, known_metadata).await;
    insert_user_registered(&mut *tx, id, payload, metadata).await;
    sqlx::query("UPDATE events SET event_version = '3' WHERE event_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("make the event newer than the relay");
    tx.commit().await.unwrap();
    stack.app.register(&unique_email()).await;
    // The one before it is published; then, a few relay rounds later, the two are still held.
    wait_until_unpublished_at_most(pool, 2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        unpublished(pool).await,
        2,
        "the newer event and the one after it are held, the one before it published"
    );
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM relay_parked_events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(parked, 0, "a newer event is not parked");
    // A relay that knows the version: here, the event as this relay's schemas describe it.
    sqlx::query(
        "UPDATE events SET event_version = '2', payload = payload - 'referrer' WHERE event_id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
    wait_until_published(pool, Duration::from_secs(60)).await;
}

/// Sets the topic's `max.message.bytes` (and its unlimited retention, which a non-incremental
/// change would otherwise reset).
async fn limit_topic(stack: &Stack, topic: &str, max_message_bytes: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .create()
        .expect("an admin client");
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic))
        .set("max.message.bytes", max_message_bytes)
        .set("retention.ms", "-1");
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    for result in admin.alter_configs([&change], &options).await.unwrap() {
        result.unwrap_or_else(|(_, code)| panic!("altering {topic}: {code:?}"));
    }
}

/// Waits (up to 60 s) until the relay on `port` shows `line` on its `/metrics`.
async fn wait_for_metric(port: u16, line: &str) {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while metric_line(&client, &url, line).await != Some(true) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never showed `{line}`"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_brokers_refuse_holds_the_relay_visibly_until_its_topic_takes_it() {
    let stack = stack_without_relay().await;
    let pool = &stack.app.pool;
    let port = free_port();
    let mut relay = spawn_relay(&stack.settings, port);
    stack.app.register(&unique_email()).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_for_metric(port, "relay_refused_by_brokers 0").await;

    // Smaller than any event's record batch: the brokers answer MESSAGE_TOO_LARGE every time.
    let topic = infra::kafka::topic_for(&stack.prefix, "user");
    limit_topic(&stack, &topic, "100").await;
    stack.app.register(&unique_email()).await;
    wait_for_metric(port, "relay_refused_by_brokers 1").await;
    // The relay's checkpoint does not pass it, whatever comes after (events of other topics
    // may reach Kafka meanwhile, and again at each retry: the checkpoint is what holds).
    stack.app.user_and_order().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        unpublished(pool).await >= 3,
        "the checkpoint passed the refused event"
    );

    // The topic takes it again: the relay publishes everything by itself, in order.
    limit_topic(&stack, &topic, "1048588").await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_for_metric(port, "relay_refused_by_brokers 0").await;
    let events = stack.app.event_count().await as usize;
    verify_log(&stack, events).await;
    relay.kill();
}

/// A relay that cannot start publishing (no broker answers while it creates its topics) still
/// measures the lag, which RelayBehind pages on. Before, the lag was measured only once it
/// published, so it stayed unmeasured and the alert could not fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_cannot_start_still_measures_its_lag() {
    let stack = stack_without_relay().await;
    stack.app.register(&unique_email()).await;
    let mut settings = stack.settings.clone();
    settings.kafka.bootstrap_servers = format!("127.0.0.1:{}", free_port());
    let port = free_port();
    let mut relay = spawn_relay(&settings, port);
    wait_for_metric(port, "relay_lag_events 1").await;
    relay.kill();
}

/// An event the producer refuses at once (larger than it sends) ends the batch before it: the
/// events before it are published once and the checkpoint rests just before it. Before, the
/// refusal dropped the batch unsettled, so the checkpoint stayed behind the events already
/// published and every retry (every few seconds) published them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_producer_refuses_leaves_what_came_before_published_once() {
    let stack = stack_without_relay().await;
    let pool = &stack.app.pool;
    let before = stack.app.register(&unique_email()).await;
    let id = uuid::Uuid::now_v7();
    // Over the producer's `message.max.bytes` (1,000,000): refused when handed over.
    let payload = json!({"type": "UserRegistered", "email": "large@example.com",
        "display_name": "x".repeat(1_500_000), "roles": ["customer"]});
    let metadata = json!({"event_id": id.to_string(), "occurred_at": "2026-11-23T00:00:00Z", "actor": "test",
        "correlation_id": "c", "causation_id": "c", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"});
    insert_user_registered(pool, id, payload, metadata).await;
    stack.app.register(&unique_email()).await;

    let port = free_port();
    let mut relay = spawn_relay(&stack.settings, port);
    wait_for_metric(port, "relay_refused_by_brokers 1").await;
    wait_until_unpublished_at_most(pool, 2, Duration::from_secs(30)).await;
    // Several retries (backing off up to 5 s) go by.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        unpublished(pool).await,
        2,
        "the checkpoint rests just before the refused event (it and the one after it wait)"
    );
    let topic = infra::kafka::topic_for(&stack.prefix, "user");
    let messages = crate::support::kafka::consume(
        &stack.bootstrap,
        std::slice::from_ref(&topic),
        stack.settings.kafka.partitions,
        usize::MAX,
        Duration::from_secs(5),
    )
    .await;
    let copies = messages.iter().filter(|m| m.key == before).count();
    assert_eq!(
        copies, 1,
        "the event before the refused one was published {copies} times"
    );
    relay.kill();
}

/// A checkpoint this PostgreSQL cluster cannot have taken (the store was copied from another
/// cluster: transaction ids belong to one) holds the relay visibly: it publishes nothing, says
/// why, and its lag counts the events after the checkpoint's position, so RelayBehind fires.
/// Setting the checkpoint with `relay-checkpoint reset` lets it publish. Before, every new
/// event sorted before the checkpoint and was never read, and the lag read 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_from_another_cluster_holds_the_relay_visibly() {
    let stack = stack_without_relay().await;
    let pool = &stack.app.pool;
    stack.app.register(&unique_email()).await;
    stack.app.register(&unique_email()).await;
    sqlx::query(
        "INSERT INTO relay_checkpoints (name, tx_id, global_position)
         VALUES ('default', (pg_snapshot_xmax(pg_current_snapshot())::text::numeric
                             + 1000000)::text::xid8, 0)",
    )
    .execute(pool)
    .await
    .unwrap();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(events >= 2);
    let port = free_port();
    let mut relay = spawn_relay(&stack.settings, port);
    wait_for_metric(port, &format!("relay_lag_events {events}")).await;
    let page = crate::support::projector::metrics_page(port).await;
    let published =
        crate::support::processes::metric_sum(&page, "relay_events_published_total", &[]);
    assert_eq!(published, 0.0, "nothing is published: {page}");
    relay.kill();

    let mut command = crate::support::processes::service_command("command-api", &stack.settings);
    command.args(["relay-checkpoint", "reset", "--to", "0"]);
    let out = crate::support::processes::output_within_limit(command, "relay-checkpoint reset");
    assert!(out.status.success(), "{out:?}");
    let mut relay = spawn_relay(&stack.settings, free_port());
    wait_until_published(pool, Duration::from_secs(60)).await;
    relay.kill();
}

/// A relay process on `settings` that gives a database wait up after a second, once it has
/// published an event of `stack`'s; and its metrics port.
async fn quick_to_give_up(
    stack: &Stack,
    mut settings: infra::settings::Settings,
) -> (crate::support::processes::Process, u16) {
    settings.relay.database_timeout_ms = 1000;
    let port = free_port();
    let relay = spawn_relay(&settings, port);
    stack.app.register(&unique_email()).await;
    wait_until_published(&stack.app.pool, Duration::from_secs(60)).await;
    wait_for_metric(port, "relay_active 1").await;
    (relay, port)
}

/// A database wait that never ends (here storing the checkpoint, behind a lock; a connection
/// to a host lost in a failover is the same to the relay) is given up after
/// `relay.database_timeout_ms`: the relay counts an error, reads `relay_active 0` until it is
/// publishing again (RelayInactive), and publishes once the database answers. Before, it
/// waited for ever with `relay_active 1` and its lag gauges frozen, and no alert fired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_whose_database_stops_answering_gives_up_and_says_so() {
    let stack = stack_without_relay().await;
    let pool = &stack.app.pool;
    let settings = stack.settings.clone();
    let (mut relay, port) = quick_to_give_up(&stack, settings).await;

    // A lock that holds the checkpoint's update and nothing else: one that takes a
    // transaction id (an exclusive lock does) would hold back what the relay may read.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE relay_checkpoints IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    stack.app.register(&unique_email()).await;
    wait_for_metric(port, "relay_active 0").await;
    let page = crate::support::projector::metrics_page(port).await;
    let errors = crate::support::processes::metric_sum(&page, "relay_errors_total", &[]);
    assert!(errors >= 1.0, "no relay error counted: {page}");
    // The server ends what the relay gave up on as well: a statement left waiting there would
    // keep the relay's lock (it is stored on the lock's connection), and every relay out.
    let watched_until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < watched_until {
        let stale: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
                 AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO relay_checkpoints%'
                 AND now() - query_start > interval '3 seconds')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert!(
            !stale,
            "a checkpoint the relay gave up on still waits on the server, holding its lock"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    blocker.rollback().await.unwrap();
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_for_metric(port, "relay_active 1").await;
    relay.kill();
}

/// The relay's database connections falling silent (the host lost without closing them; here
/// a proxy stops passing their bytes and passes new connections' on): each wait is given up
/// after `relay.database_timeout_ms`, and the relay goes on with new connections. Before, a
/// connection given up on went back to the relay's pool, whose check before reuse waited on
/// it, and the relay got no connection for as long as TCP kept the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_whose_connections_fall_silent_goes_on_with_new_ones() {
    use infra::secrecy::ExposeSecret;
    let stack = stack_without_relay().await;
    let pool = &stack.app.pool;
    let database = stack.settings.database.url.expose_secret().to_owned();
    let address = crate::support::proxy::address_of(&database);
    let proxy = crate::support::proxy::Proxy::start(&address).await;
    let mut settings = stack.settings.clone();
    settings.database.url = database
        .replacen(&address, &format!("127.0.0.1:{}", proxy.port), 1)
        .into();
    let (mut relay, _) = quick_to_give_up(&stack, settings).await;

    assert!(
        proxy.silence_all_but_lock_holders() > 0,
        "no connection to silence"
    );
    stack.app.register(&unique_email()).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    relay.kill();
}

/// A relay whose lock connection ended (its backend terminated, as an operator does to a relay
/// they take for stuck) while it stored a checkpoint: a `relay-checkpoint reset` made meanwhile
/// holds, and the events after it are published again. Before, the relay stored its checkpoint
/// on another connection, which went on: its store, landing after the reset, moved the
/// checkpoint forward again, and the reset's events were never published again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_lost_its_lock_cannot_undo_a_checkpoint_reset() {
    let stack = stack_without_relay().await;
    let pool = &stack.app.pool;
    let mut settings = stack.settings.clone();
    settings.relay.database_timeout_ms = 60_000;
    let port = free_port();
    let mut relay = spawn_relay(&settings, port);
    stack.app.register(&unique_email()).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    let reset_to: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    let page = crate::support::projector::metrics_page(port).await;
    let published =
        crate::support::processes::metric_sum(&page, "relay_events_published_total", &[]);

    // A checkpoint stored forward waits while the test holds advisory lock 424242; one stored
    // back (the reset) does not. The wait comes before the row is locked (a BEFORE INSERT
    // trigger), so the reset is not held behind it.
    sqlx::query(
        "CREATE FUNCTION hold_forward_checkpoints() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF EXISTS (SELECT 1 FROM relay_checkpoints c WHERE c.name = NEW.name
                        AND (c.tx_id, c.global_position) < (NEW.tx_id, NEW.global_position)) THEN
                 PERFORM pg_advisory_xact_lock_shared(424242);
             END IF;
             RETURN NEW;
         END $$",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER hold_forward_checkpoints BEFORE INSERT ON relay_checkpoints
         FOR EACH ROW EXECUTE FUNCTION hold_forward_checkpoints()",
    )
    .execute(pool)
    .await
    .unwrap();
    let mut hold = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(424242)")
        .execute(&mut *hold)
        .await
        .unwrap();
    let holder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *hold)
        .await
        .unwrap();
    stack.app.register(&unique_email()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
                 AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO relay_checkpoints%')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never stored its checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The relay's lock connection ends; once its lock is gone, the reset goes through. The
    // relay is stopped meanwhile, so that it does not take its lock again first.
    relay.signal("-STOP");
    let relay_locks = "FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> $1
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
         AND NOT (classid = 0 AND objid = 424242)";
    let ended: Vec<bool> =
        sqlx::query_scalar(&format!("SELECT pg_terminate_backend(pid) {relay_locks}"))
            .bind(holder)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(ended, [true], "not one relay lock to end");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left: bool = sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 {relay_locks})"))
            .bind(holder)
            .fetch_one(pool)
            .await
            .unwrap();
        if !left {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay's lock outlived its connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut command = crate::support::processes::service_command("command-api", &stack.settings);
    command.args(["relay-checkpoint", "reset", "--to", &reset_to.to_string()]);
    let out = crate::support::processes::output_within_limit(command, "relay-checkpoint reset");
    assert!(out.status.success(), "{out:?}");
    hold.rollback().await.unwrap();
    relay.signal("-CONT");

    // Everything from the reset on is published again: the first registration's events once
    // more, and the second's (whose checkpoint was never stored).
    let again: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE global_position >= $1")
        .bind(reset_to)
        .fetch_one(pool)
        .await
        .unwrap();
    wait_for_metric(
        port,
        &format!("relay_events_published_total {}", published as i64 + again),
    )
    .await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    relay.kill();
}

/// An event parked, then met again after an interruption before the checkpoint passed it (here
/// its store waits behind a lock until the relay gives it up, and tries again), is counted as
/// parked once. Before, `relay_events_parked_total` went up at every meeting, with one row in
/// `relay_parked_events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_parked_again_after_an_interruption_is_counted_once() {
    let stack = stack_without_relay().await;
    let pool = &stack.app.pool;
    let (mut relay, port) = quick_to_give_up(&stack, stack.settings.clone()).await;
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE relay_checkpoints IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    insert_unencodable(pool).await;
    // Until the relay has met it twice: each meeting ends in a checkpoint given up on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = crate::support::projector::metrics_page(port).await;
        let errors = crate::support::processes::metric_sum(&page, "relay_errors_total", &[]);
        if errors >= 2.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay gave its checkpoint up fewer than twice: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    blocker.rollback().await.unwrap();
    wait_until_published(pool, Duration::from_secs(60)).await;
    let page = crate::support::projector::metrics_page(port).await;
    let parked = crate::support::processes::metric_sum(&page, "relay_events_parked_total", &[]);
    assert_eq!(parked, 1.0, "{page}");
    relay.kill();
}
