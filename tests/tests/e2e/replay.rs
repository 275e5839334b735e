//! `projector replay | rollback | prune` on a running system: every read model rebuilt beside
//! the live one and swapped in while commands and reads keep flowing (no read fails, none
//! goes back behind a `min_version` it was promised), the rebuilt tables served at once (a
//! row corrupted in the live tables is right again), then `projector verify all` passes.
//! Rolling back brings the replaced set back, caught up; pruning drops it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::app::unique_email;
use crate::support::commerce::commerce_load;
use crate::support::fold::assert_read_models_match_the_events;
use crate::support::processes::run_projector;
use crate::support::projector::wait_until_projected;
use crate::support::query::spawn_read_stack;
use crate::support::stack::wait_until_published;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_read_model_is_rebuilt_and_swapped_in_under_load_then_rolled_back_and_pruned() {
    let read = spawn_read_stack(|_| {}).await;
    let (app, query) = (&read.stack.app, &read.query);
    let pool = &app.pool;
    commerce_load(app, 20).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;

    // A row of the live users model goes wrong, and the query API serves it.
    let victim = app.register("replay-victim@example.com").await;
    wait_until_published(pool, Duration::from_secs(30)).await;
    wait_until_projected(pool, Duration::from_secs(30)).await;
    sqlx::query("UPDATE rm_users SET display_name = 'corrupted' WHERE id = $1::uuid")
        .bind(&victim)
        .execute(pool)
        .await
        .unwrap();
    let shown = query.get(&format!("/v1/users/{victim}")).await;
    assert_eq!(shown.body["display_name"], "corrupted");

    // Commands and min_version reads flow through the whole replay, and plain reads beside
    // them. The commands are orders, which hash no password: with registrations (argon2) only
    // two went through a whole replay in a CI run on a loaded machine, under the bar of three.
    let customer = app.register(&unique_email()).await;
    let stop = AtomicBool::new(false);
    let (flowed, reads, failures) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let replay = async {
        let settings = read.stack.settings.clone();
        let out = tokio::task::spawn_blocking(move || run_projector(&settings, &["replay", "all"]))
            .await
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        out
    };
    let commands = async {
        while !stop.load(Ordering::Relaxed) {
            let answer = app.place_order(&customer).await;
            if answer.status.as_u16() != 201 {
                eprintln!("a command failed during the replay: {answer:?}");
                failures.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let id = answer.id();
            let read = query.get(&format!("/v1/orders/{id}?min_version=1")).await;
            flowed.fetch_add(1, Ordering::Relaxed);
            if read.status.as_u16() != 200 || read.body["version"].as_i64() < Some(1) {
                eprintln!("a min_version read failed during the replay: {read:?}");
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let plain_reads = async {
        while !stop.load(Ordering::Relaxed) {
            let read = query.get(&format!("/v1/users/{victim}")).await;
            reads.fetch_add(1, Ordering::Relaxed);
            if read.status.as_u16() != 200 || read.body["id"] != victim.as_str() {
                eprintln!("a read failed during the replay: {read:?}");
                failures.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (out, (), ()) = tokio::join!(replay, commands, plain_reads);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "replay all: {out:?}");
    assert!(
        stderr.contains("\"job\":\"replay\""),
        "progress as JSON lines: {stderr}"
    );
    let (flowed, reads) = (
        flowed.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed),
    );
    eprintln!("{flowed} orders with min_version reads and {reads} plain reads during the replay");
    assert!(
        flowed >= 1 && reads >= 3,
        "commands and reads ran during the replay ({flowed} orders, {reads} reads)"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no command or read failed"
    );

    // The rebuilt tables are served, with no restart.
    let shown = query
        .eventually(&format!("/v1/users/{victim}"), |user| {
            user["display_name"] != "corrupted"
        })
        .await;
    assert_eq!(shown["email"], "replay-victim@example.com");
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    assert_read_models_match_the_events(pool).await;
    let out = run_projector(&read.stack.settings, &["verify", "all"]);
    assert!(out.status.success(), "verify all after the replay: {out:?}");
    // The new tables were built with autovacuum off; live, it is on again (and no other
    // table is left with it off).
    let off: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND 'autovacuum_enabled=false' = ANY(c.reloptions)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(off.is_empty(), "tables with autovacuum off: {off:?}");
    // The run is on record for operators, finished, with what it folded.
    let (projection, state, events): (String, String, i64) = sqlx::query_as(
        "SELECT projection, state, events FROM replay_runs WHERE kind = 'replay' ORDER BY id LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let all: Vec<&str> = projections::READ_MODELS.iter().map(|m| m.name()).collect();
    assert_eq!(projection, all.join(" "));
    assert_eq!(state, "done");
    assert!(events > 100, "events folded: {events}");

    // The replaced users set is given the versions table a set swapped out before the
    // migration `20261202000001_identifier_keys` has (its key led by the projection, its ids
    // in the database's collation): a partition may not differ in collation, so rollback must
    // reshape it before attaching it.
    let previous = previous_set(pool, "users").await;
    give_the_old_shape(pool, &previous, "applied", OLD_VERSIONS_KEY).await;

    // Rollback brings the replaced users set back, caught up with what happened since.
    app.register(&unique_email()).await;
    let out = run_projector(&read.stack.settings, &["rollback", "users"]);
    assert!(out.status.success(), "rollback: {out:?}");
    query
        .eventually(&format!("/v1/users/{victim}"), |user| {
            user["display_name"] == "corrupted"
        })
        .await;
    let late = app.register(&unique_email()).await;
    query.at_least(&format!("/v1/users/{late}"), 1).await;
    let out = run_projector(&read.stack.settings, &["verify", "users"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the corrupted row is back: {out:?}"
    );

    // The replaced audit set gets the old shape in both its tables; rolled back, it comes in
    // with the live shape (the migration's key is not undone by a rollback).
    let previous = previous_set(pool, "audit").await;
    give_the_old_shape(pool, &previous, "applied", OLD_VERSIONS_KEY).await;
    give_the_old_shape(
        pool,
        &previous,
        "rm_audit",
        "(aggregate_type, aggregate_id, sequence)",
    )
    .await;
    let out = run_projector(&read.stack.settings, &["rollback", "audit"]);
    assert!(out.status.success(), "rollback audit: {out:?}");
    let (key, collation): (String, Option<String>) = sqlx::query_as(
        "SELECT pg_get_constraintdef(k.oid), c.collation_name::text
         FROM pg_constraint k, information_schema.columns c
         WHERE k.conrelid = 'public.rm_audit'::regclass AND k.contype = 'p'
           AND c.table_schema = 'public' AND c.table_name = 'rm_audit'
           AND c.column_name = 'aggregate_id'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(key, "PRIMARY KEY (aggregate_id, aggregate_type, sequence)");
    assert_eq!(collation.as_deref(), Some("C"));
    let out = run_projector(&read.stack.settings, &["verify", "audit"]);
    assert!(
        out.status.success(),
        "verify audit after its rollback: {out:?}"
    );

    // Replay once more, prune, and nothing is left to roll back to.
    assert!(run_projector(&read.stack.settings, &["replay", "users"])
        .status
        .success());
    let out = run_projector(&read.stack.settings, &["prune", "all"]);
    assert!(out.status.success(), "{out:?}");
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata
         WHERE schema_name LIKE 'previous\\_%' OR schema_name LIKE 'replay\\_%'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "no table set is left behind");
    let out = run_projector(&read.stack.settings, &["rollback", "users"]);
    assert_eq!(out.status.code(), Some(1), "nothing to roll back to");
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    assert!(run_projector(&read.stack.settings, &["verify", "all"])
        .status
        .success());
}

/// The key `projection_versions` (and every set's `applied`) had before the migration
/// `20261202000001_identifier_keys`.
const OLD_VERSIONS_KEY: &str = "(projection, aggregate_type, aggregate_id)";

/// The schema of `projection`'s replaced set.
async fn previous_set(pool: &sqlx::PgPool, projection: &str) -> String {
    sqlx::query_scalar("SELECT schema_name FROM projection_previous_sets WHERE projection = $1")
        .bind(projection)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Gives `<schema>.<table>` the shape tables had before the migration
/// `20261202000001_identifier_keys`: its ids in the database's collation, under `key`.
async fn give_the_old_shape(pool: &sqlx::PgPool, schema: &str, table: &str, key: &str) {
    let constraint: String = sqlx::query_scalar(&format!(
        "SELECT conname::text FROM pg_constraint
         WHERE conrelid = '{schema}.{table}'::regclass AND contype = 'p'"
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    for statement in [
        format!("ALTER TABLE {schema}.{table} DROP CONSTRAINT {constraint}"),
        format!(
            "ALTER TABLE {schema}.{table} ALTER COLUMN aggregate_type TYPE text COLLATE \"default\",
                 ALTER COLUMN aggregate_id TYPE text COLLATE \"default\""
        ),
        format!("ALTER TABLE {schema}.{table} ADD CONSTRAINT {constraint} PRIMARY KEY {key}"),
    ] {
        sqlx::query(&statement).execute(pool).await.unwrap();
    }
}

/// `--from kafka`: the first pass reads the topics (Avro through the registry), the catch-up
/// the event store; what comes out equals a fold of the events, and commands written while it
/// runs are in it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_read_model_is_rebuilt_from_the_topics() {
    let read = spawn_read_stack(|_| {}).await;
    let app = &read.stack.app;
    let pool = &app.pool;
    commerce_load(app, 12).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_audit")
        .fetch_one(pool)
        .await
        .unwrap();

    let stop = AtomicBool::new(false);
    let replay = async {
        let settings = read.stack.settings.clone();
        let out = tokio::task::spawn_blocking(move || {
            run_projector(&settings, &["replay", "all", "--from", "kafka"])
        })
        .await
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        out
    };
    let load = async {
        while !stop.load(Ordering::Relaxed) {
            app.register(&unique_email()).await;
        }
    };
    let (out, ()) = tokio::join!(replay, load);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "replay --from kafka: {out:?}");
    let audit_events: u64 = printed
        .lines()
        .find(|l| l.starts_with("audit: rebuilt from "))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("audit's line: {printed}"));
    assert!(audit_events >= before as u64, "{printed}");

    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    assert_read_models_match_the_events(pool).await;
    let out = run_projector(&read.stack.settings, &["verify", "all"]);
    assert!(out.status.success(), "verify all after the replay: {out:?}");
    // As-of sets are built from the event store only: with `--from kafka`, bad usage.
    let out = run_projector(
        &read.stack.settings,
        &["replay", "users", "--from", "kafka", "--as-of", "1"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "--from kafka with --as-of is bad usage: {out:?}"
    );
}

/// A replay from the topics while the schema registry cannot answer for a moment (503 until
/// the replay has asked it) waits for it, as the projector does. Before, every message whose schema it had not fetched yet
/// counted as undecodable: the aggregates' later events were folded over the holes and the
/// events became dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_from_the_topics_waits_out_an_unreachable_registry() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    let read = spawn_read_stack(|_| {}).await;
    let (app, pool) = (&read.stack.app, &read.stack.app.pool);
    app.user_and_order().await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    let port = crate::support::processes::free_port();
    let mut settings = read.stack.settings.clone();
    settings.schema_registry.url = format!("http://127.0.0.1:{port}");
    let replay = tokio::task::spawn_blocking(move || {
        run_projector(&settings, &["replay", "orders", "--from", "kafka"])
    });
    // The registry answers 503 there until the replay has asked it at least once; then it
    // answers, through a forwarder.
    let registry = read
        .stack
        .registry_url
        .trim_start_matches("http://")
        .to_owned();
    let refused = Arc::new(AtomicUsize::new(0));
    let up = Arc::new(AtomicBool::new(false));
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let forwarding = tokio::spawn({
        let (refused, up) = (refused.clone(), up.clone());
        async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let registry = registry.clone();
                let (refused, up) = (refused.clone(), up.clone());
                tokio::spawn(async move {
                    if !up.load(Ordering::SeqCst) {
                        let mut request = [0u8; 4096];
                        let _ = inbound.read(&mut request).await;
                        let _ = inbound
                            .write_all(
                                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\
                                  connection: close\r\n\r\n",
                            )
                            .await;
                        refused.fetch_add(1, Ordering::SeqCst);
                    } else if let Ok(mut outbound) = TcpStream::connect(&registry).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while refused.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replay never asked the registry"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    up.store(true, Ordering::SeqCst);
    let out = replay.await.unwrap();
    forwarding.abort();
    assert!(out.status.success(), "replay --from kafka: {out:?}");
    let letters: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(letters, 0);
    let out = run_projector(&read.stack.settings, &["verify", "orders"]);
    assert!(out.status.success(), "{out:?}");
}
