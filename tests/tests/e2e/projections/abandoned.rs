//! A replay killed before its swap leaves its new set's schema and a run marked running. The
//! admin console shows the run abandoned at once (its lease went with its process), a sweep
//! while it still runs leaves it alone, and the next sweep (`projector prune`, or any replay,
//! as-of build or verify as it starts) drops the schema and records the run as abandoned; a
//! replay after that succeeds. While a replay lives, another of the same model is refused.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use crate::support::database::{insert_user_registered, TestDatabase};
use crate::support::processes::{run_projector, service_command, Process};
use crate::support::query::spawn_query_api;

async fn schema_exists(pool: &PgPool, schema: &str) -> bool {
    sqlx::query_scalar("SELECT to_regnamespace($1) IS NOT NULL")
        .bind(schema)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn run_state(pool: &PgPool) -> (String, Option<String>, bool) {
    sqlx::query_as(
        "SELECT state, error, projector_lease_held(lease) FROM replay_runs WHERE kind = 'replay'
         ORDER BY id LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn poll(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A database with three users' events, and a `projector replay users` caught between its
/// build and its swap: the swap waits for the projection's lock, which the returned connection
/// holds. Returns the replay's new schema too.
async fn replay_held_at_its_swap(
    db: &TestDatabase,
) -> (PgPool, PoolConnection<Postgres>, Process, String) {
    let settings = db.settings();
    let pool = infra::db::connect(&settings.database).await.unwrap();
    infra::db::migrate(&pool).await.unwrap();
    for n in 0..3 {
        let id = uuid::Uuid::now_v7();
        let payload = json!({"type": "UserRegistered", "email": format!("killed{n}@example.com"),
            "display_name": "Killed", "roles": ["customer"]});
        let metadata = json!({"occurred_at": "2026-12-02T06:00:00Z", "actor": "service:test",
            "correlation_id": "c", "causation_id": "d", "traceparent": ""});
        insert_user_registered(&pool, id, payload, metadata).await;
    }
    let mut holder = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext('projection:users'))")
        .execute(&mut *holder)
        .await
        .unwrap();
    let log = std::env::temp_dir().join(format!("{}-held-replay.log", db.name));
    let mut command = service_command("projector", &settings);
    command.args(["replay", "users"]);
    let replay = Process::spawn_logged(command, "projector replay", &log);
    // Other tests' databases on the same server wait for locks of the same name: only this
    // database's waiter counts.
    poll("the replay never reached its swap", async || {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1
                  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND ((classid::bigint << 32) | objid::bigint) = hashtext('projection:users'))",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    })
    .await;
    let schema: String = sqlx::query_scalar("SELECT schema_name FROM projector_work_schemas")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(schema.starts_with("replay_users_"), "{schema}");
    assert!(schema_exists(&pool, &schema).await);
    (pool, holder, replay, schema)
}

async fn release(mut holder: PoolConnection<Postgres>) {
    sqlx::query("SELECT pg_advisory_unlock(hashtext('projection:users'))")
        .execute(&mut *holder)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replay_is_shown_abandoned_and_what_it_left_is_cleared_by_the_next_sweep() {
    let db = TestDatabase::create().await;
    let settings = db.settings();
    let (pool, holder, mut replay, schema) = replay_held_at_its_swap(&db).await;

    // A sweep while the replay runs leaves its schema and its run alone.
    let out = run_projector(&settings, &["prune", "users"]);
    assert!(out.status.success(), "prune while a replay runs: {out:?}");
    assert!(
        schema_exists(&pool, &schema).await,
        "a live replay's set was dropped"
    );
    assert_eq!(run_state(&pool).await, ("running".to_owned(), None, true));
    // The record of a schema already gone, left by a process that died after dropping it, is
    // nothing left behind: status does not count it.
    sqlx::query(
        "INSERT INTO projector_work_schemas (schema_name, lease) VALUES ('verify_users_0000000d', 'gone')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let status = run_projector(&settings, &["status"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains("replay ") && shown.contains("(users)"),
        "{shown}"
    );
    assert!(shown.contains("running, "), "{shown}");
    assert_eq!(status.status.code(), Some(0), "{shown}");
    // Another replay or rollback of the model is refused while this one lives: its swap would
    // drop the set this one replaces, the one to roll back to.
    for args in [
        &["replay", "users"][..],
        &["rollback", "users"],
        &["replay", "orders", "users"],
    ] {
        let out = run_projector(&settings, args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(
            said.contains("is swapping users already"),
            "{args:?}: {said}"
        );
    }
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM replay_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 1, "a refused run was recorded");

    replay.kill();
    poll("the killed replay's lease was never released", async || {
        !run_state(&pool).await.2
    })
    .await;
    assert_eq!(run_state(&pool).await.0, "running", "nothing has swept yet");
    // `projector status` says so, with exit 1: it waits for a person (or the next sweep).
    let status = run_projector(&settings, &["status"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(shown.contains("abandoned: its process ended"), "{shown}");
    assert!(shown.contains(&schema), "{shown}");
    assert_eq!(status.status.code(), Some(1), "{shown}");

    // The console shows the run abandoned before any sweep.
    let query = spawn_query_api(&settings).await;
    let page = query.get("/admin/replays").await;
    let html = page.body.as_str().unwrap_or_default();
    assert!(
        html.contains("abandoned") && !html.contains(">running<"),
        "{}: {html}",
        page.status
    );

    // The next sweep drops the schema and records the run as abandoned.
    let out = run_projector(&settings, &["prune", "users"]);
    assert!(out.status.success(), "prune after the kill: {out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains(&format!("{schema}: dropped")), "{printed}");
    assert!(printed.contains("marked abandoned"), "{printed}");
    assert!(
        !schema_exists(&pool, &schema).await,
        "the abandoned set is still there"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM projector_work_schemas")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let (state, error, _) = run_state(&pool).await;
    assert_eq!(state, "abandoned");
    assert!(error.unwrap_or_default().contains("ended before"));
    let status = run_projector(&settings, &["status"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(shown.contains("replays: none running"), "{shown}");
    assert_eq!(status.status.code(), Some(0), "{shown}");

    // With the lock free, a replay runs to its end and leaves nothing behind.
    release(holder).await;
    let out = run_projector(&settings, &["replay", "users"]);
    assert!(out.status.success(), "replay after the sweep: {out:?}");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 3);
    let (recorded, work): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM projector_work_schemas),
                (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'replay\\_%')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((recorded, work), (0, 0));
}

/// The lease of a replay that still runs is taken again when its connection is lost (here
/// ended by the server), so a sweep leaves the replay's work alone and the replay ends well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_whose_lease_connection_is_lost_takes_its_lease_again_and_is_not_swept() {
    let db = TestDatabase::create().await;
    let settings = db.settings();
    let (pool, holder, mut replay, schema) = replay_held_at_its_swap(&db).await;
    let lease: String = sqlx::query_scalar("SELECT lease FROM replay_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    let holder_of_lease = async || -> Option<i32> {
        sqlx::query_scalar(
            "SELECT pid FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND objsubid = 1
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND ((classid::bigint << 32) | objid::bigint)
                   = hashtextextended('projector-lease:' || $1, 0)",
        )
        .bind(&lease)
        .fetch_optional(&pool)
        .await
        .unwrap()
    };
    let first = holder_of_lease().await.expect("the replay holds its lease");
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
        .bind(first)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ended, "the lease's session did not end");
    poll("the lease was never taken again", async || {
        holder_of_lease().await.is_some_and(|pid| pid != first)
    })
    .await;

    let out = run_projector(&settings, &["prune"]);
    assert!(out.status.success(), "prune: {out:?}");
    assert!(
        schema_exists(&pool, &schema).await,
        "a live replay's set was swept"
    );
    assert_eq!(run_state(&pool).await.0, "running");

    release(holder).await;
    let status = tokio::task::spawn_blocking(move || {
        replay.wait_for_exit(Duration::from_secs(120), "the replay did not end")
    })
    .await
    .unwrap();
    assert!(status.success(), "the replay failed: {status:?}");
    assert_eq!(run_state(&pool).await.0, "done");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 3);
}

/// What keeps a schema (a replay's swap, an as-of set's registration) and a sweep that would
/// drop it claim its record, and exactly one of them wins: a sweep waiting behind a claim
/// drops nothing once the claim commits, and a claim after a sweep finds nothing to keep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_schema_is_not_swept_and_a_swept_one_cannot_be_claimed() {
    let db = TestDatabase::create().await;
    let pool = infra::db::connect(&db.settings().database).await.unwrap();
    infra::db::migrate(&pool).await.unwrap();
    for schema in ["replay_users_0000000a", "replay_users_0000000b"] {
        sqlx::query("INSERT INTO projector_work_schemas (schema_name, lease) VALUES ($1, 'gone')")
            .bind(schema)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&pool)
            .await
            .unwrap();
    }

    // A claim in an open transaction: the sweep waits for it, then finds nothing to drop.
    let mut keeping = pool.begin().await.unwrap();
    let claimed = projections::lease::claim_schema(&mut keeping, "replay_users_0000000a").await;
    assert!(claimed.unwrap());
    let sweeping = tokio::spawn({
        let pool = pool.clone();
        async move { projections::lease::sweep(&pool).await.unwrap() }
    });
    poll("the sweep never waited for the claim", async || {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'
                AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database()))",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    })
    .await;
    keeping.commit().await.unwrap();
    let swept = sweeping.await.unwrap();
    assert!(
        swept.left.is_empty(),
        "the sweep gave up waiting: {:?}",
        swept.left
    );
    assert_eq!(swept.schemas, ["replay_users_0000000b"]);
    assert!(
        schema_exists(&pool, "replay_users_0000000a").await,
        "a claimed schema was dropped"
    );
    assert!(!schema_exists(&pool, "replay_users_0000000b").await);

    // The swept one can no longer be claimed.
    let mut late = pool.begin().await.unwrap();
    let claimed = projections::lease::claim_schema(&mut late, "replay_users_0000000b").await;
    assert!(!claimed.unwrap(), "a swept schema was claimed");
}
