//! The projector as a process: killed (SIGKILL) again and again under load it still applies
//! every event exactly once, and on SIGTERM it stops gracefully.

use std::time::{Duration, Instant};

use infra::secrecy::ExposeSecret;

use crate::support::commerce::commerce_load;
use crate::support::fold::assert_read_models_match_the_events;
use crate::support::kafka::shared_bootstrap;
use crate::support::processes::{spawn_projector, spawn_projector_logged};
use crate::support::projector::wait_until_projected;
use crate::support::stack::{spawn_stack, wait_until_published, Stack};

/// Whether every read model has applied every event of its aggregates.
async fn caught_up(pool: &sqlx::PgPool) -> bool {
    for model in projections::READ_MODELS {
        let left = crate::support::projector::unprojected(pool, model.name(), model.aggregates());
        if left.await > 0 {
            return false;
        }
    }
    true
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
    // The probe has a connection of its own: the load's commands can hold every connection of
    // the app's pool longer than its acquire timeout on a busy machine (seen once in make test).
    let probe = probe(&stack).await;
    let killer = async {
        // Every event applied moves an aggregate's version (a count of rows would move only
        // with new aggregates).
        let applied = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT coalesce(sum(version), 0)::bigint FROM projection_versions",
            )
            .fetch_one(&probe)
            .await
            .unwrap()
        };
        let mut projector = Some(spawn_projector(&stack.settings, None));
        let (mut kills, mut seen, mut at_kills) = (0, 0, Vec::new());
        while kills < 4 || !loaded.load(Ordering::SeqCst) {
            // A new projector can take several seconds to join its group under a full test
            // run: killed on a short timer, none of them ever applied anything (seen in make
            // test once the kills were checked).
            let deadline = Instant::now() + Duration::from_secs(60);
            while applied().await <= seen {
                if loaded.load(Ordering::SeqCst) && caught_up(&probe).await {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the projector applied nothing for a minute"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if applied().await <= seen {
                break; // everything written is applied: nothing left to kill it in.
            }
            tokio::time::sleep(Duration::from_millis(50 + 50 * (kills % 4))).await;
            // Killed first, then its successor started, with what it had applied as the new
            // baseline: the next kill waits for the successor's own progress.
            let old = projector.take();
            // Killing and reaping block: off the async workers.
            tokio::task::spawn_blocking(move || drop(old))
                .await
                .expect("kill the projector");
            kills += 1;
            seen = applied().await;
            at_kills.push(seen);
            projector = Some(spawn_projector(&stack.settings, None));
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
    // Each kill came once the projector it killed had applied something of its own (the
    // loop waits for that), so at least two landed in the middle of work.
    assert!(kills >= 2, "killed only {kills} times");
    drop(projector);
}

/// SIGTERM during load: the projector finishes the batch in hand and exits 0 promptly; a new
/// one carries on from what was committed, and nothing is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projector_stops_gracefully_on_sigterm() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let log = std::env::temp_dir().join(format!("projector-{}.log", uuid::Uuid::new_v4()));
    let mut first = spawn_projector_logged(&stack.settings, None, &log);
    let pool = &stack.app.pool;
    // Once the projector is busy applying the load, SIGTERM it and wait (bounded) for it. The
    // bound is the one the other waits for projection have: under a full `make test` a new
    // projector once took longer than 30 s to apply its first event, with no warning or error
    // in its log. Its log is now kept down to `info` (its subscription and assignments), and
    // every failure below shows it.
    let output = || std::fs::read_to_string(&log).unwrap_or_default();
    // A connection of the probe's own, as in the test above: the load can hold the app's pool
    // past its acquire timeout (seen with the suite pinned to one core).
    let probe = probe(&stack).await;
    let stop_when_busy = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_versions")
                .fetch_one(&probe)
                .await
                .unwrap();
            if applied > 0 {
                break;
            }
            if let Some(status) = first.exited() {
                panic!("the projector exited early with {status}:\n{}", output());
            }
            assert!(
                Instant::now() < deadline,
                "the projector applied nothing in 60 s; its output:\n{}",
                output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first.signal("-TERM");
        // Waiting blocks: off the async workers.
        tokio::task::spawn_blocking(move || first.exit_within(Duration::from_secs(15)))
            .await
            .expect("stopper thread")
            .unwrap_or_else(|| {
                panic!(
                    "the projector ignored SIGTERM for 15 s; its output:\n{}",
                    output()
                )
            })
    };
    let ((), status) = tokio::join!(commerce_load(&stack.app, 120), stop_when_busy);
    assert!(
        status.success(),
        "the projector exited with {status}; its output:\n{}",
        output()
    );
    let second = spawn_projector(&stack.settings, None);
    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(60)).await;
    assert_read_models_match_the_events(pool).await;
    drop(second);
    std::fs::remove_file(&log).ok();
}

/// A pool of one connection, apart from the app's.
async fn probe(stack: &Stack) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(stack.settings.database.url.expose_secret())
        .await
        .expect("a probe connection")
}
