//! What a replay's swap settles besides the tables: the live projection's dead letters of
//! events the new set applied go (retried, they would apply twice), and the events the new set
//! could not apply become its dead letters (else the live set would lack them in silence).
//! A replay of several models that fails at one says which it swapped in before. A rollback
//! refuses a set whose columns a migration has changed since. A swap waiting for a lock holds
//! no reader up meanwhile, nor the relay.

use std::time::Duration;

use serde_json::json;

use crate::support::app::unique_email;
use crate::support::database::insert_user_registered;
use crate::support::processes::{run_projector, service_command, Process};
use crate::support::projector::projected_commerce;
use crate::support::stack::wait_until_published;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_settles_the_dead_letters_of_what_it_applied_and_refused() {
    let (stack, _projector) = projected_commerce(1).await;
    let (pool, settings) = (&stack.app.pool, &stack.settings);
    // A dead letter of a capture the live analytics applied after all (as a transient failure
    // retried by a gap fill would not clear): retried, it would count the capture twice.
    let (captured, aggregate): (uuid::Uuid, String) = sqlx::query_as(
        "SELECT event_id, aggregate_id FROM events WHERE event_type = 'PaymentCaptured' LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO dead_letters (projection, topic, partition, \"offset\", event_id, aggregate_id, error)
         VALUES ('analytics', 'payments.events', 0, 1000000, $1, $2, 'a failure since mended')",
    )
    .bind(captured.to_string())
    .bind(&aggregate)
    .execute(pool)
    .await
    .unwrap();
    // An event no consumer can read (the relay parks it: its email is a number), which the
    // users projection never saw.
    let unreadable = uuid::Uuid::now_v7();
    let payload =
        json!({"type": "UserRegistered", "email": 5, "display_name": "Bad", "roles": ["customer"]});
    let metadata = json!({"event_id": unreadable.to_string(), "occurred_at": "2026-11-23T00:00:00Z",
        "actor": "test", "correlation_id": "c", "causation_id": "c",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"});
    insert_user_registered(pool, unreadable, payload, metadata).await;
    // The relay's checkpoint passes a parked event with the next one it publishes.
    stack.app.register(&unique_email()).await;
    wait_until_published(pool, Duration::from_secs(60)).await;

    let out = run_projector(settings, &["replay", "analytics", "users"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "an event was refused: {out:?}");
    assert!(stdout.contains(&unreadable.to_string()), "{stdout}");

    let letters: Vec<(String, String, String)> =
        sqlx::query_as("SELECT projection, topic, event_id FROM dead_letters ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        letters,
        [(
            "users".to_owned(),
            "event-store".to_owned(),
            unreadable.to_string()
        )],
        "the applied capture's dead letter is gone and the refused event is one"
    );
    let out = run_projector(settings, &["verify", "analytics"]);
    assert!(out.status.success(), "{out:?}");
}

/// `replay users orders users`, where the orders swap fails (an event trigger refuses moving
/// the live orders table out): users is replayed once, its line names a previous set that
/// exists, the error names orders as not swapped in, and the progress's last line says the
/// job failed. Before, users was replayed twice (the second swap dropped the set the first had
/// kept for `rollback`), nothing said users had been swapped in, and the progress read
/// finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_failing_midway_names_what_it_swapped_in_once() {
    let (stack, _projector) = projected_commerce(1).await;
    let (pool, settings) = (&stack.app.pool, &stack.settings);
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_orders_swap() RETURNS event_trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands()
                        WHERE object_identity LIKE 'previous\\_orders\\_%.rm\\_orders') THEN
                 RAISE EXCEPTION 'the orders swap is refused by this test';
             END IF;
         END $$;
         CREATE EVENT TRIGGER refuse_orders_swap ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
             EXECUTE FUNCTION refuse_orders_swap();",
    )
    .execute(pool)
    .await
    .unwrap();
    let out = run_projector(settings, &["replay", "users", "orders", "users"]);
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("users: rebuilt"))
        .collect();
    assert_eq!(lines.len(), 1, "{said}");
    let previous: String = sqlx::query_scalar(
        "SELECT schema_name FROM projection_previous_sets WHERE projection = 'users'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(lines[0].contains(&previous), "{said}");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(&previous)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(exists, "{previous} was dropped");
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(errors.contains("not swapped in: orders"), "{errors}");
    let last: serde_json::Value = errors
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|l| l["job"] == "replay")
        .expect("a progress line");
    assert_eq!(last["failed"], true, "{last}");
}

/// A column added to a live table after a replay: the rollback to the set swapped out then is
/// refused, naming the column, and the live table keeps it. Before, the set's older tables
/// were swapped back in without it, undoing the migration for good (every later replay copies
/// the live shape), and every statement using the column failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollback_refuses_a_set_a_migration_has_changed_since() {
    let (stack, _projector) = projected_commerce(1).await;
    let (pool, settings) = (&stack.app.pool, &stack.settings);
    let out = run_projector(settings, &["replay", "orders"]);
    assert!(out.status.success(), "{out:?}");
    sqlx::query("ALTER TABLE rm_orders ADD COLUMN note text")
        .execute(pool)
        .await
        .unwrap();
    let out = run_projector(settings, &["rollback", "orders"]);
    assert!(!out.status.success(), "{out:?}");
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(errors.contains("note: absent / text"), "{errors}");
    let kept: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                        WHERE table_schema = 'public' AND table_name = 'rm_orders'
                          AND column_name = 'note')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(kept, "the rollback undid the migration");
}

/// A swap that cannot have the projection's versions at once (a session holds their partition,
/// as a vacuum of it does) keeps no lock on the live tables meanwhile: a reader of them is
/// answered at once while the swap waits, and the swap goes through once the partition is
/// free, whatever holds another projection's partition. The same for a table of the older
/// replaced set, which the swap drops. Before, the swap took the live tables first and held
/// them while it waited for the others, so every reader waited too (the query API ran out of
/// connections and failed unrelated reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_swap_waiting_for_a_lock_holds_no_reader_up() {
    let (stack, _projector) = projected_commerce(1).await;
    let (pool, settings) = (&stack.app.pool, &stack.settings);
    let mut other_vacuum = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE projection_versions_users IN SHARE UPDATE EXCLUSIVE MODE")
        .execute(&mut *other_vacuum)
        .await
        .unwrap();
    replay_orders_while_held(pool, settings, "projection_versions_orders").await;
    // Another projection's partition, still held, was none of that swap's business.
    other_vacuum.rollback().await.unwrap();
    let previous = previous_orders_set(pool).await.expect("a previous set");
    replay_orders_while_held(pool, settings, &format!("{previous}.rm_orders")).await;
}

/// `projector replay orders` while a session holds `table` as a vacuum does: once the swap
/// waits for a lock, a reader of the live orders is answered at once; the replay succeeds
/// once the table is free.
async fn replay_orders_while_held(
    pool: &sqlx::PgPool,
    settings: &infra::settings::Settings,
    table: &str,
) {
    let mut vacuum = pool.begin().await.unwrap();
    sqlx::query(&format!(
        "LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE"
    ))
    .execute(&mut *vacuum)
    .await
    .unwrap();
    // Until the swap waits for a lock (and, before the fix, holds the live tables).
    let mut replay = replay_orders_until_waiting(
        pool,
        settings,
        "(query LIKE 'LOCK TABLE%' OR query LIKE 'ALTER TABLE%' OR query LIKE 'DROP SCHEMA%')",
    )
    .await;
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '100ms'")
        .execute(&mut *reader)
        .await
        .unwrap();
    let read = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM rm_orders")
        .fetch_one(&mut *reader)
        .await;
    reader.rollback().await.unwrap();
    assert!(
        read.is_ok(),
        "a reader of the live orders waited ({table} held): {read:?}"
    );
    vacuum.rollback().await.unwrap();
    let status = tokio::task::block_in_place(|| {
        replay.wait_for_exit(Duration::from_secs(120), "the replay never ended")
    });
    assert!(status.success(), "{status:?}");
}

/// A `prune` run while a replay's swap waits for its tables (a reader holds the live orders)
/// drops the previous set between two of the swap's attempts, and the swap succeeds once the
/// reader is done, keeping the set it swapped out. Before, the prune dropped the replaced set
/// the swap had listed, and the swap's next attempt failed on a missing table after the whole
/// rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prune_during_a_swap_leaves_it_whole() {
    let (stack, _projector) = projected_commerce(1).await;
    let (pool, settings) = (&stack.app.pool, &stack.settings);
    let out = run_projector(settings, &["replay", "orders"]);
    assert!(out.status.success(), "{out:?}");
    let previous = previous_orders_set(pool).await.expect("a previous set");
    let reader = reading_live_orders(pool).await;
    let mut replay =
        replay_orders_until_waiting(pool, settings, "query LIKE 'LOCK TABLE public.rm_orders%'")
            .await;
    let pruned = tokio::task::spawn_blocking({
        let settings = settings.clone();
        move || run_projector(&settings, &["prune", "orders"])
    })
    .await
    .unwrap();
    assert!(pruned.status.success(), "the prune failed: {pruned:?}");
    assert_eq!(previous_orders_set(pool).await, None, "nothing was pruned");
    assert!(
        replay.exited().is_none(),
        "the replay ended while a reader held its table: the prune was not tested beside its swap"
    );
    reader.rollback().await.unwrap();
    let status = tokio::task::block_in_place(|| {
        replay.wait_for_exit(Duration::from_secs(120), "the replay never ended")
    });
    assert!(
        status.success(),
        "the swap failed beside a prune: {status:?}"
    );
    let kept = previous_orders_set(pool)
        .await
        .expect("the swapped-out set is kept");
    assert_ne!(kept, previous);
}

/// The orders' previous set, if any.
async fn previous_orders_set(pool: &sqlx::PgPool) -> Option<String> {
    sqlx::query_scalar(
        "SELECT schema_name FROM projection_previous_sets WHERE projection = 'orders'",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// While a swap waits for the live tables (a reader holds the live orders), the relay goes on
/// publishing what commits meanwhile, and each attempt of the swap is a transaction of its
/// own. Before, the swap had written (its last catch-up, its claim on the set) when it began
/// to wait, and its locks take an id too, so its transaction id held back the oldest open one,
/// below which alone the relay publishes: nothing committed after it reached a consumer until
/// the swap committed or gave up, ten minutes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_swap_waiting_for_its_tables_holds_no_publication_up() {
    let (stack, _projector) = projected_commerce(1).await;
    let (pool, settings) = (&stack.app.pool, &stack.settings);
    let reader = reading_live_orders(pool).await;
    let mut replay =
        replay_orders_until_waiting(pool, settings, "query LIKE 'LOCK TABLE public.rm_orders%'")
            .await;
    stack.app.register(&unique_email()).await;
    wait_until_published(pool, Duration::from_secs(30)).await;
    // Each wait for the live table in a transaction of its own, so that its transaction id
    // (which its lock takes) goes with the attempt. Before, one transaction made eight.
    let mut waits = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while waits.len() < 3 {
        let seen: Vec<(i32, String, String)> = sqlx::query_as(
            "SELECT pid, xact_start::text, query_start::text FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE 'LOCK TABLE public.rm_orders%'",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        waits.extend(seen);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the swap waited fewer than three times: {waits:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let transactions: std::collections::BTreeSet<_> =
        waits.iter().map(|(pid, xact, _)| (pid, xact)).collect();
    assert_eq!(
        transactions.len(),
        waits.len(),
        "a transaction of the swap waited more than once: {waits:?}"
    );
    assert!(
        replay.exited().is_none(),
        "the replay ended while a reader held its table: the publication was not tested beside its swap"
    );
    reader.rollback().await.unwrap();
    let status = tokio::task::block_in_place(|| {
        replay.wait_for_exit(Duration::from_secs(120), "the replay never ended")
    });
    assert!(status.success(), "{status:?}");
}

/// A `projector replay orders` process, once a session of it waits for a lock while running a
/// statement that satisfies `condition` (two minutes at most, else the test fails).
async fn replay_orders_until_waiting(
    pool: &sqlx::PgPool,
    settings: &infra::settings::Settings,
    condition: &str,
) -> Process {
    let mut command = service_command("projector", settings);
    command.args(["replay", "orders"]);
    let replay = Process::spawn(command, "a replay of orders");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !waiting_on_a_lock(pool, condition).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the swap never waited on a lock ({condition})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    replay
}

/// A transaction that has read the live orders, and so holds them until it ends.
async fn reading_live_orders(pool: &sqlx::PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM rm_orders")
        .execute(&mut *reader)
        .await
        .unwrap();
    reader
}

/// Whether a session of this database waits for a lock while running a statement that
/// satisfies `condition` (on `pg_stat_activity`).
async fn waiting_on_a_lock(pool: &sqlx::PgPool, condition: &str) -> bool {
    sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock' AND ({condition}))"
    ))
    .fetch_one(pool)
    .await
    .unwrap()
}
