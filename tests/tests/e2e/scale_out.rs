//! Projector scale-out: processes running the same projections share the topics' partitions
//! through one consumer group (cooperative rebalancing), and the exactly-once effect holds across
//! rebalances, including one forced by a process killed with SIGKILL mid-load.

use std::time::{Duration, Instant};

use crate::support::commerce::commerce_load;
use crate::support::fold::assert_read_models_match_the_events;
use crate::support::kafka::shared_bootstrap;
use crate::support::processes::free_port;
use crate::support::projector::{
    metrics_page, projection_counter, spawn_projector_on, wait_until_projected,
};
use crate::support::stack::{spawn_stack, wait_until_published};

/// How many messages of `audit`'s topics (all three) the projector on `port` has taken.
async fn audit_consumed(port: u16) -> f64 {
    projection_counter(
        &metrics_page(port).await,
        "projection_messages_consumed_total",
        "audit",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_projector_processes_share_the_partitions_and_survive_one_killed_mid_load() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let pool = &stack.app.pool;
    let (first_port, second_port) = (free_port(), free_port());
    let mut first = spawn_projector_on(&stack.settings, first_port);
    let _second = spawn_projector_on(&stack.settings, second_port);

    // Both processes take part: each is given some of the partitions and consumes from them.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        commerce_load(&stack.app, 10).await;
        let (a, b) = (
            audit_consumed(first_port).await,
            audit_consumed(second_port).await,
        );
        if a > 0.0 && b > 0.0 {
            eprintln!("before the kill: {a} and {b} messages consumed");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the two projectors never shared the partitions: {a} and {b} messages consumed"
        );
    }

    // SIGKILL in the middle of the load: batches in flight die with it; its partitions go to
    // the other process once its session times out, and come back when it restarts.
    let load = async {
        for _ in 0..6 {
            commerce_load(&stack.app, 15).await;
        }
    };
    let kill = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        first.kill();
        tokio::time::sleep(Duration::from_secs(12)).await;
        spawn_projector_on(&stack.settings, free_port())
    };
    let ((), _restarted) = tokio::join!(load, kill);

    wait_until_published(pool, Duration::from_secs(60)).await;
    wait_until_projected(pool, Duration::from_secs(120)).await;
    let dead_letters: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(pool)
        .await
        .expect("count dead letters");
    assert_eq!(dead_letters, 0, "nothing was dead-lettered");
    assert_read_models_match_the_events(pool).await;
}
