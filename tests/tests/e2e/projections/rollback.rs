//! A rollback cut short: its set's rows and versions agree (chunk by chunk), so the next
//! rollback applies nothing twice; and a set dropped under a running rollback fails it instead
//! of its catch-up writing into the live tables. Both run a rollback whose catch-up spans more
//! than one chunk of 2,000 events, held where the test needs it by a lock.

use std::time::Duration;

use sqlx::PgPool;

use crate::support::processes::{run_projector, service_command, Process};
use crate::support::projector::{projected_commerce, wait_until_projected};
use crate::support::stack::wait_until_published;

/// `count` orders written straight into the event store, each a copy of a stored
/// `OrderPlaced` under an id of its own: more events than the API could write in the time.
async fn copy_orders(pool: &PgPool, count: i32) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, event_id)
         SELECT e.aggregate_type, g.id::text, 1, e.event_type, e.event_version, e.payload,
                e.metadata || jsonb_build_object('event_id', g.id::text), g.id
         FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $1)) g,
              (SELECT * FROM events WHERE event_type = 'OrderPlaced' LIMIT 1) e",
    )
    .bind(count)
    .execute(pool)
    .await
    .expect("copying orders");
}

/// The orders the live analytics tables count.
async fn orders_counted(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(sum(orders), 0)::bigint FROM rm_revenue_daily")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Analytics replayed (its set before becomes the previous one), then 2,100 orders that only
/// the live set has: a rollback must catch the previous set up on them.
async fn previous_set_behind(pool: &PgPool, settings: &infra::settings::Settings) -> String {
    let out = run_projector(settings, &["replay", "analytics"]);
    assert!(out.status.success(), "{out:?}");
    copy_orders(pool, 2100).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    sqlx::query_scalar(
        "SELECT schema_name FROM projection_previous_sets WHERE projection = 'analytics'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits (up to 60 s) until `sql` (a count) is at least `at_least`.
async fn wait_for(pool: &PgPool, sql: &str, at_least: i64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        if n >= at_least {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The live analytics count `before` orders, and `projector verify` finds them equal to a
/// rebuild.
async fn counted_once(
    pool: &PgPool,
    settings: &infra::settings::Settings,
    before: i64,
    what: &str,
) {
    assert_eq!(orders_counted(pool).await, before, "{what}");
    let out = run_projector(settings, &["verify", "analytics"]);
    assert!(out.status.success(), "{out:?}");
}

fn spawn_rollback(settings: &infra::settings::Settings) -> Process {
    let mut command = service_command("projector", settings);
    command.args(["rollback", "analytics"]);
    Process::spawn(command, "a rollback")
}

/// A rollback of analytics killed once its catch-up is done: the projection's lock held, it
/// catches its set up, then waits to swap.
async fn rollback_killed_waiting_to_swap(pool: &PgPool, settings: &infra::settings::Settings) {
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('projection:analytics'))")
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut rollback = spawn_rollback(settings);
    wait_for(
        pool,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        1,
        "the rollback waiting to swap",
    )
    .await;
    rollback.kill();
    holder.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollback_cut_short_applies_nothing_twice_when_run_again() {
    let (stack, _projector) = projected_commerce(1).await;
    let (pool, settings) = (&stack.app.pool, &stack.settings);
    previous_set_behind(pool, settings).await;
    let before = orders_counted(pool).await;

    rollback_killed_waiting_to_swap(pool, settings).await;

    let out = run_projector(settings, &["rollback", "analytics"]);
    assert!(out.status.success(), "{out:?}");
    counted_once(
        pool,
        settings,
        before,
        "the second rollback counted again what the first had applied",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_set_pruned_under_its_rollback_leaves_the_live_tables_alone() {
    let (stack, _projector) = projected_commerce(1).await;
    let (pool, settings) = (&stack.app.pool, &stack.settings);
    let previous = previous_set_behind(pool, settings).await;
    let before = orders_counted(pool).await;

    // The set's revenue table locked: the rollback's first chunk waits for it, and the prune
    // queues behind them both. Released, the first chunk commits, the prune drops the set,
    // and the rest of the catch-up finds it gone.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query(&format!(
        "LOCK TABLE {previous}.rm_revenue_daily IN ACCESS EXCLUSIVE MODE"
    ))
    .execute(&mut *holder)
    .await
    .unwrap();
    let waiting_on_the_set = format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE NOT l.granted AND n.nspname = '{previous}'
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    );
    let mut rollback = spawn_rollback(settings);
    wait_for(
        pool,
        &waiting_on_the_set,
        1,
        "the rollback waiting for its set",
    )
    .await;
    let model = projections::read_model("analytics").unwrap();
    let pruning = tokio::spawn({
        let pool = pool.clone();
        async move { projections::replay::prune(&pool, model).await }
    });
    wait_for(
        pool,
        &waiting_on_the_set,
        2,
        "the prune waiting for the set",
    )
    .await;
    holder.commit().await.unwrap();
    let status = rollback.wait_for_exit(Duration::from_secs(120), "the rollback");
    assert!(
        pruning.await.unwrap().expect("the prune"),
        "the prune found no set"
    );
    assert!(!status.success(), "the rollback went on without its set");
    let left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(&previous)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(!left, "{previous} was not dropped");

    counted_once(
        pool,
        settings,
        before,
        "the rollback's catch-up wrote into the live tables",
    )
    .await;
}

/// Pays an order (3000 captured, in the one currency the commerce helpers use) and waits until
/// it is projected; returns the capture's event id.
async fn captured(stack: &crate::support::stack::Stack) -> String {
    let (_, payment) = crate::support::commerce::paid_order(&stack.app).await;
    let pool = &stack.app.pool;
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    sqlx::query_scalar(
        "SELECT event_id::text FROM events WHERE aggregate_id = $1 AND event_type = 'PaymentCaptured'",
    )
    .bind(&payment)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Brings every day's captured total in `schema` so near the largest a column holds that the
/// next capture of the day would pass it: analytics refuses such a capture (a dead letter).
async fn nearly_full(pool: &PgPool, schema: &str) {
    sqlx::query(&format!(
        "UPDATE {schema}.rm_revenue_daily SET captured_minor = 9223372036854775000"
    ))
    .execute(pool)
    .await
    .unwrap();
}

/// `analytics`' dead letters of event `event_id`.
async fn letters_of(pool: &PgPool, event_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE projection = 'analytics' AND event_id = $1",
    )
    .bind(event_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A capture the live set takes and the previous set refuses, then `rollback analytics`
/// (first killed once after its catch-up, when `cut_short`): it exits 1 naming the capture,
/// which has one dead letter.
async fn a_refused_capture_is_dead_lettered_by_the_rollback(cut_short: bool) {
    let (stack, _projector) = projected_commerce(1).await;
    let (pool, settings) = (&stack.app.pool, &stack.settings);
    captured(&stack).await;
    let out = run_projector(settings, &["replay", "analytics"]);
    assert!(out.status.success(), "{out:?}");
    let previous: String = sqlx::query_scalar(
        "SELECT schema_name FROM projection_previous_sets WHERE projection = 'analytics'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    nearly_full(pool, &previous).await;
    let capture = captured(&stack).await;
    assert_eq!(letters_of(pool, &capture).await, 0, "the live set took it");
    if cut_short {
        rollback_killed_waiting_to_swap(pool, settings).await;
    }

    let out = run_projector(settings, &["rollback", "analytics"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("could not apply event {capture}")),
        "{said}"
    );
    assert_eq!(
        letters_of(pool, &capture).await,
        1,
        "the refused capture's dead letter"
    );
}

/// An event the rollback's catch-up cannot apply to the set it brings back becomes a dead
/// letter, and the rollback says so and exits 1. Before, it was marked applied with no trace
/// and the rollback exited 0: the live model lacked the event and nothing could retry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_the_rollback_cannot_apply_becomes_a_dead_letter() {
    a_refused_capture_is_dead_lettered_by_the_rollback(false).await;
}

/// A rollback cut short after its catch-up (killed while it waited to swap) and run again
/// still gives the event its catch-up refused a dead letter, and says so. Before, the second
/// run found the event held by the set already (the first run's chunk had committed), and
/// the refusal, known only to the first run, was lost: the live model lacked the event with
/// no dead letter, and the rollback exited 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollback_cut_short_and_run_again_still_dead_letters_what_it_refused() {
    a_refused_capture_is_dead_lettered_by_the_rollback(true).await;
}

/// A dead letter a replay resolved (its new set applied the event) comes back when the
/// projection is rolled back to the set that refused it. Before, it was gone for good while
/// the set brought back still lacked the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollback_brings_back_the_dead_letters_its_set_had() {
    let (stack, _projector) = projected_commerce(1).await;
    let pool = &stack.app.pool;
    let settings = &stack.settings;
    captured(&stack).await;
    nearly_full(pool, "public").await;
    let capture = captured(&stack).await;
    assert_eq!(
        letters_of(pool, &capture).await,
        1,
        "the live set refused it"
    );

    let out = run_projector(settings, &["replay", "analytics"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        letters_of(pool, &capture).await,
        0,
        "the replayed set applied it"
    );

    let out = run_projector(settings, &["rollback", "analytics"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        letters_of(pool, &capture).await,
        1,
        "the set brought back lacks the capture: its dead letter is back"
    );
}

/// `users`' dead letters of event `event`.
async fn users_letters_of(pool: &PgPool, event: uuid::Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE projection = 'users' AND event_id = $1",
    )
    .bind(event.to_string())
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Retries `users`' dead letter of event `event` from the command line, with success.
async fn retry_users_letter(
    settings: &infra::settings::Settings,
    pool: &PgPool,
    event: uuid::Uuid,
) {
    let id: i64 = sqlx::query_scalar(
        "SELECT id FROM dead_letters WHERE projection = 'users' AND event_id = $1",
    )
    .bind(event.to_string())
    .fetch_one(pool)
    .await
    .unwrap();
    let out = run_projector(settings, &["dead-letters", "retry", &id.to_string()]);
    assert!(out.status.success(), "{out:?}");
}

/// An event both the live set and its replacement refused, retried with success once its
/// cause is mended while the replacement is live, then the projection rolled back: the set
/// brought back lacks the event too, so its dead letter comes back with it. Before, the retry
/// removed the letter for good, and the set rolled back to lacked the event with nothing to
/// retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_letter_retried_after_a_replay_comes_back_with_a_rollback() {
    let (stack, _projector) = projected_commerce(1).await;
    let (pool, settings) = (&stack.app.pool, &stack.settings);
    // A registration nobody can read (its email is a number): the relay parks it, and the
    // live users projection is made to have refused it (handled, with a dead letter).
    let event = uuid::Uuid::now_v7();
    let payload = serde_json::json!({"type": "UserRegistered", "email": 5,
        "display_name": "Bad", "roles": ["customer"]});
    let metadata = serde_json::json!({"event_id": event.to_string(),
        "occurred_at": "2026-11-23T00:00:00Z", "actor": "test", "correlation_id": "c",
        "causation_id": "c",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"});
    crate::support::database::insert_user_registered(pool, event, payload, metadata).await;
    sqlx::raw_sql(&format!(
        "INSERT INTO projection_versions (projection, aggregate_type, aggregate_id, version)
             VALUES ('users', 'user', '{event}', 1);
         INSERT INTO dead_letters (projection, topic, partition, \"offset\", event_id,
                                   aggregate_id, error)
             VALUES ('users', 'users.events', 0, 1000000, '{event}', '{event}', 'unreadable');"
    ))
    .execute(pool)
    .await
    .unwrap();
    let letters = || users_letters_of(pool, event);
    let out = run_projector(settings, &["replay", "users"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the new set refuses it too: {out:?}"
    );
    assert_eq!(letters().await, 1);

    // The cause mended, the letter retried on the replacement.
    sqlx::query(
        "UPDATE events SET payload = jsonb_set(payload, '{email}', to_jsonb($2::text))
         WHERE event_id = $1",
    )
    .bind(event)
    .bind(format!("mended-{event}@example.com"))
    .execute(pool)
    .await
    .unwrap();
    retry_users_letter(settings, pool, event).await;
    assert_eq!(letters().await, 0);

    let out = run_projector(settings, &["rollback", "users"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        letters().await,
        1,
        "the set rolled back to lacks the event: its letter is back"
    );
}

/// An event the live set applied and the replay's set refused: its dead letter, added by the
/// swap and retried with success once the cause is mended, does not come back with a rollback
/// to the set that applied it. (A first version of the fix above brought it back, to be
/// retried and applied a second time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_letter_the_replay_added_stays_gone_after_its_retry_and_a_rollback() {
    let (stack, _projector) = projected_commerce(1).await;
    let (pool, settings) = (&stack.app.pool, &stack.settings);
    // A user with one event, so that its retry is in order.
    let user = stack
        .app
        .register(&crate::support::app::unique_email())
        .await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    let event: uuid::Uuid =
        sqlx::query_scalar("SELECT event_id FROM events WHERE aggregate_id = $1")
            .bind(&user)
            .fetch_one(pool)
            .await
            .unwrap();
    let email: String =
        sqlx::query_scalar("SELECT payload->>'email' FROM events WHERE event_id = $1")
            .bind(event)
            .fetch_one(pool)
            .await
            .unwrap();
    let set_email = |value: serde_json::Value| async move {
        sqlx::query(
            "UPDATE events SET payload = jsonb_set(payload, '{email}', $2) WHERE event_id = $1",
        )
        .bind(event)
        .bind(value)
        .execute(pool)
        .await
        .unwrap();
    };
    let letters = || users_letters_of(pool, event);
    // The live set applied it; the replay reads it unreadable and refuses it.
    set_email(serde_json::json!(5)).await;
    let out = run_projector(settings, &["replay", "users"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(letters().await, 1);
    set_email(serde_json::json!(email)).await;
    retry_users_letter(settings, pool, event).await;

    let out = run_projector(settings, &["rollback", "users"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        letters().await,
        0,
        "the set rolled back to applied the event"
    );
}
