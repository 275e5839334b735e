//! Restart cost is independent of topic length: a restarted projector resumes from the offsets
//! it stored, so it takes only what was published after it stopped off the broker; and a
//! projection that keeps failing makes the others re-read nothing.

use std::time::Duration;

use serde_json::json;

use crate::support::app::unique_email;
use crate::support::fold::assert_read_models_match_the_events;
use crate::support::kafka::shared_bootstrap;
use crate::support::processes::{free_port, service_command, Process};
use crate::support::projector::{
    metrics_page, projection_counter, spawn_projector_on, unprojected, wait_until_projected,
};
use crate::support::stack::{spawn_stack, wait_until_published, Stack};

/// Registers `users` users, each with one profile change: two events on users.events each.
async fn write_users(stack: &Stack, users: usize) {
    for i in 0..users {
        let user = stack.app.register(&unique_email()).await;
        let path = format!("/v1/users/{user}/profile");
        let answer = stack
            .app
            .post(&path, json!({"display_name": format!("User {i}")}))
            .await;
        assert!(answer.status.is_success(), "{}", answer.body);
    }
}

/// Writes `after` more users with no projector running, starts one and waits until it has
/// projected everything; its metrics port.
async fn write_then_project(stack: &Stack, after: usize) -> (Process, String) {
    let pool = &stack.app.pool;
    write_users(stack, after).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    let port = free_port();
    let projector = spawn_projector_on(&stack.settings, port);
    wait_until_projected(pool, Duration::from_secs(60)).await;
    assert_read_models_match_the_events(pool).await;
    (projector, metrics_page(port).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_projector_consumes_only_what_came_after_its_stored_offsets() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    let (before, after) = (100, 10);
    write_users(&stack, before).await;
    let first = spawn_projector_on(&stack.settings, free_port());
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    // kill -9: only what was committed (offsets with rows) survives.
    drop(first);

    let (second, page) = write_then_project(&stack, after).await;
    let consumed = projection_counter(&page, "projection_messages_consumed_total", "users");
    let applied = projection_counter(&page, "projection_events_applied_total", "users");
    eprintln!(
        "users.events holds {} events; the restarted projector consumed {consumed} and applied {applied}",
        2 * (before + after)
    );
    assert_eq!(applied, (2 * after) as f64, "only the new events applied");
    assert_eq!(
        consumed,
        (2 * after) as f64,
        "the restarted projector re-read messages it had committed"
    );
    drop(second);
}

/// A partition whose log ends before the projections' stored offsets (the topic recreated, or
/// cut back by an unclean election; here the offsets are moved past the log's end, as a
/// recreated topic leaves them) is read again from its start, by every projection reading it
/// (one lagging in the old log too): what is published next is applied, what was applied is
/// skipped by version. Before, every message of the new log sat
/// below the stored offsets and was skipped as applied, silently, with the lag reading 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_shorter_than_the_stored_offsets_is_read_again_from_its_start() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    write_users(&stack, 5).await;
    let first = spawn_projector_on(&stack.settings, free_port());
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    drop(first);

    // Another projection of the same topic, lagging in the old log: its offset lies inside
    // the new one, whose messages below it it never applied (here: its rows taken away).
    sqlx::raw_sql(
        "DELETE FROM rm_audit WHERE aggregate_type = 'user';
         DELETE FROM projection_versions WHERE projection = 'audit' AND aggregate_type = 'user';",
    )
    .execute(pool)
    .await
    .unwrap();
    let moved = sqlx::query(
        "UPDATE projection_offsets SET next_offset = next_offset + 1000
         WHERE topic = $1 AND projection = 'users'",
    )
    .bind(format!("{}users.events", stack.settings.kafka.topic_prefix))
    .execute(pool)
    .await
    .unwrap()
    .rows_affected();
    assert!(moved > 0, "no stored offsets for users.events");
    let (second, page) = write_then_project(&stack, 3).await;
    let resets = projection_counter(&page, "projection_log_resets_total", "users");
    assert!(resets >= 1.0, "no reset counted: {page}");
    let applied = projection_counter(&page, "projection_events_applied_total", "users");
    assert_eq!(applied, 6.0, "only the new events applied");
    drop(second);
}

/// A projection whose batches keep failing makes no other projection read anything twice: it
/// catches up on a consumer of its own. Before, the shared consumer was moved back to the
/// failing projection's offset at each of its retries (every 5 s once its backoff had grown),
/// so the others re-read everything since; with more behind it than five seconds of reading,
/// they stopped for as long as it kept failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_projection_makes_the_others_read_nothing_twice() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    let users = 20;
    write_users(&stack, users).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    // Every write of the users projection fails as a serialization failure does: transient,
    // so it retries (and never dead-letters) until the trigger goes.
    sqlx::raw_sql(
        "CREATE FUNCTION hold_users() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'held by the test' USING ERRCODE = 'serialization_failure'; END $$;
         CREATE TRIGGER hold_users BEFORE INSERT OR UPDATE ON rm_users
         FOR EACH ROW EXECUTE FUNCTION hold_users();",
    )
    .execute(pool)
    .await
    .expect("hold the users projection");
    let port = free_port();
    let projector = spawn_projector_on(&stack.settings, port);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while unprojected(pool, "audit", &["user"]).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "audit never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Long enough for the users projection's backoff to reach its 5 s ceiling and retry again.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let page = metrics_page(port).await;
    let retries = projection_counter(&page, "projection_restarts_total", "users");
    let audit = projection_counter(&page, "projection_messages_consumed_total", "audit");
    eprintln!("users retried {retries} times; audit consumed {audit} messages");
    assert!(
        retries >= 3.0,
        "the users projection retried only {retries} times"
    );
    assert_eq!(
        unprojected(pool, "users", &["user"]).await,
        (2 * users) as i64
    );
    assert_eq!(
        audit,
        (2 * users) as f64,
        "audit was handed messages again for the failing projection"
    );

    sqlx::raw_sql("DROP TRIGGER hold_users ON rm_users")
        .execute(pool)
        .await
        .expect("release the users projection");
    wait_until_projected(pool, Duration::from_secs(60)).await;
    assert_read_models_match_the_events(pool).await;
    let page = metrics_page(port).await;
    let applied = projection_counter(&page, "projection_events_applied_total", "users");
    assert_eq!(applied, (2 * users) as f64, "users applied each event once");
    drop(projector);
}

/// A projector started on a database that lacks a migration it embeds (a rolling update whose
/// migrations run as a separate job, not finished yet) consumes nothing until the migration is
/// there: an event applied to a table or column that does not exist yet fails for good and
/// would be dead-lettered. Before, it consumed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_waits_for_its_migrations_before_consuming() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    let newest_applied = |success: bool| {
        sqlx::query(
            "UPDATE _sqlx_migrations SET success = $1
             WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
        )
        .bind(success)
        .execute(pool)
    };
    newest_applied(false).await.unwrap();
    write_users(&stack, 3).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    let port = free_port();
    // As deployed where a job runs the migrations: the projector does not migrate at start.
    let mut command = service_command("projector", &stack.settings);
    command
        .env("APP__PROJECTOR__PROCESS_MANAGER", "false")
        .env("APP__PROJECTOR__PORT", port.to_string())
        .env("APP__DATABASE__MIGRATE_ON_START", "false");
    let projector = Process::spawn(command, "a projector process");
    // It serves its ops port (alive) while it waits, and has begun checking the migrations
    // (else "nothing consumed" below would hold for a projector not started yet); a few of
    // its checks go by.
    metrics_page(port).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let checking: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND query LIKE 'SELECT COALESCE(max(version), 0) FROM _sqlx_migrations%')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if checking {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the projector never checked the migrations"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let consumed: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_offsets")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(consumed, 0, "the projector consumed before its migrations");
    assert_eq!(unprojected(pool, "users", &["user"]).await, 6);

    newest_applied(true).await.unwrap();
    wait_until_projected(pool, Duration::from_secs(60)).await;
    assert_read_models_match_the_events(pool).await;
    drop(projector);
}
