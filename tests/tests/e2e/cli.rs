//! The binaries' command lines: help and version, bad usage (exit 2), `projector status` and
//! `dead-letters` (exit 1 while something waits for a person; `retry` applies one again, or
//! says why not), `command-api relay-checkpoint`
//! (refused while a relay runs or forward; a reset republishes), and `DATABASE_URL` in place
//! of `APP__DATABASE__URL`; the long-running services run without transparent huge pages.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::support::app::unique_email;
use crate::support::kafka::shared_bootstrap;
use crate::support::processes::{
    free_port, service_command, spawn_projector, CommandApiProcess, Process,
};
use crate::support::stack::{spawn_stack, stack_without_relay, wait_until_published};

fn run(mut command: Command) -> Output {
    command.output().expect("run the binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn every_binary_has_help_version_and_refuses_bad_usage() {
    let settings = infra::settings::Settings::load_from(None).unwrap();
    for (binary, subcommands) in [
        (
            "command-api",
            &["serve", "relay", "migrate", "relay-checkpoint"][..],
        ),
        (
            "projector",
            &["run", "verify", "status", "dead-letters"][..],
        ),
        ("query-api", &["serve"][..]),
        ("schema-registry", &["serve"][..]),
    ] {
        let mut help = service_command(binary, &settings);
        help.arg("--help");
        let out = run(help);
        assert!(out.status.success(), "{binary} --help: {out:?}");
        let shown = text(&out.stdout);
        for subcommand in subcommands {
            assert!(
                shown.contains(subcommand),
                "{binary} --help lacks {subcommand}: {shown}"
            );
        }
        let mut version = service_command(binary, &settings);
        version.arg("--version");
        let out = run(version);
        assert!(out.status.success());
        assert!(
            text(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
            "{out:?}"
        );
        let mut wrong = service_command(binary, &settings);
        wrong.arg("no-such-command");
        assert_eq!(
            run(wrong).status.code(),
            Some(2),
            "{binary} no-such-command"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_dead_letters_report_and_discard() {
    let stack = spawn_stack(&crate::support::kafka::shared_bootstrap(), |_| {}).await;
    stack.app.register(&unique_email()).await;
    wait_until_published(&stack.app.pool, Duration::from_secs(30)).await;

    let status = |json: bool| {
        let mut command = service_command("projector", &stack.settings);
        command.arg("status");
        if json {
            command.arg("--json");
        }
        run(command)
    };
    let out = status(true);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    let names: Vec<&str> = report["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "users",
        "orders",
        "payments",
        "analytics",
        "audit",
        "process_manager",
    ] {
        assert!(names.contains(&name), "{name} missing from {report}");
    }
    assert!(report["newest_position"].as_i64().unwrap() >= 1, "{report}");
    assert!(
        report["relay_checkpoints"]["default"].as_i64().unwrap() >= 1,
        "the relay's progress is reported: {report}"
    );
    // Nothing consumed yet (no projector runs here): the brokers hold the registration.
    let users = &report["projections"][0];
    assert_eq!(users["name"], "users");
    assert!(users["lag"].as_i64().unwrap() >= 1, "{report}");

    // A dead letter waits for a person: status says so with exit code 1.
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dead_letters (projection, topic, partition, \"offset\", event_id, error)
         VALUES ('orders', 'orders.events', 0, 42, 'e-1', 'refused: test') RETURNING id",
    )
    .fetch_one(&stack.app.pool)
    .await
    .unwrap();
    let out = status(false);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stdout).contains("refused: test"),
        "{}",
        text(&out.stdout)
    );

    let mut list = service_command("projector", &stack.settings);
    list.args(["dead-letters", "list", "--projection", "orders", "--json"]);
    let out = run(list);
    assert!(out.status.success(), "{out:?}");
    let letter: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(letter["id"], id);
    assert_eq!(letter["offset"], 42);

    let mut unknown = service_command("projector", &stack.settings);
    unknown.args(["dead-letters", "list", "--projection", "nope"]);
    assert_eq!(run(unknown).status.code(), Some(2));

    let discard = |ids: &[i64]| {
        let mut command = service_command("projector", &stack.settings);
        command.args(["dead-letters", "discard"]);
        command.args(ids.iter().map(i64::to_string));
        run(command)
    };
    assert_eq!(discard(&[id]).status.code(), Some(0));
    let out = discard(&[id]);
    assert_eq!(out.status.code(), Some(1), "an id no longer there: {out:?}");
    assert_eq!(status(true).status.code(), Some(0), "healthy again");

    // DATABASE_URL stands in for APP__DATABASE__URL.
    let mut conventional = service_command("projector", &stack.settings);
    conventional
        .env_remove("APP__DATABASE__URL")
        .env("DATABASE_URL", stack.database_url())
        .args(["dead-letters", "list"]);
    let out = run(conventional);
    assert!(out.status.success(), "{out:?}");
    let mut broken = service_command("projector", &stack.settings);
    broken
        .env_remove("APP__DATABASE__URL")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("APP__DATABASE__ACQUIRE_TIMEOUT_MS", "300")
        .args(["dead-letters", "list"]);
    assert_eq!(run(broken).status.code(), Some(2), "it used DATABASE_URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_checkpoint_is_shown_and_moved_back_only_while_no_relay_runs() {
    // A relay runs in this process: a reset must be refused.
    let running = spawn_stack(&crate::support::kafka::shared_bootstrap(), |_| {}).await;
    running.app.register(&unique_email()).await;
    wait_until_published(&running.app.pool, Duration::from_secs(30)).await;
    let checkpoint = |settings: &infra::settings::Settings, args: &[&str]| {
        let mut command = service_command("command-api", settings);
        command.arg("relay-checkpoint").args(args);
        run(command)
    };
    let out = checkpoint(&running.settings, &["show", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["relay_running"], true, "{shown}");
    let out = checkpoint(&running.settings, &["reset", "--to", "1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("is running"),
        "{}",
        text(&out.stderr)
    );
    drop(running);

    // No relay: the checkpoint moves back, and only back.
    let stack = stack_without_relay().await;
    let pool = &stack.app.pool;
    for _ in 0..3 {
        stack.app.register(&unique_email()).await;
    }
    let newest: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    let tx_id: String =
        sqlx::query_scalar("SELECT tx_id::text FROM events WHERE global_position = $1")
            .bind(newest)
            .fetch_one(pool)
            .await
            .unwrap();
    sqlx::query(
        "INSERT INTO relay_checkpoints (name, tx_id, global_position) VALUES ('default', $1::text::xid8, $2)",
    )
    .bind(&tx_id)
    .bind(newest)
    .execute(pool)
    .await
    .unwrap();
    let out = checkpoint(&stack.settings, &["show", "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["relay_running"], false);
    assert_eq!(shown["global_position"], newest);
    assert_eq!(shown["pending"], 0);

    let out = checkpoint(
        &stack.settings,
        &["reset", "--to", &(newest + 1000).to_string()],
    );
    assert_eq!(out.status.code(), Some(1), "no such event: {out:?}");
    let first: i64 = sqlx::query_scalar("SELECT min(global_position) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    let out = checkpoint(&stack.settings, &["reset", "--to", &first.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let shown: Value =
        serde_json::from_slice(&checkpoint(&stack.settings, &["show", "--json"]).stdout).unwrap();
    assert_eq!(shown["global_position"], first - 1);
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        shown["pending"], all,
        "every event is to be published again"
    );
    // Forward again is refused: it would leave events unpublished.
    let out = checkpoint(&stack.settings, &["reset", "--to", &newest.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("only moves it back"),
        "{}",
        text(&out.stderr)
    );
}

/// `projector status` counts the events a relay has still to publish in the order it
/// publishes them, by transaction: a checkpoint in a transaction that took a high position
/// while later transactions, committed after it, took lower ones leaves those to publish.
/// Before, the status subtracted positions and said 0 behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_what_the_relay_has_to_publish_in_commit_order() {
    let stack = stack_without_relay().await;
    let pool = &stack.app.pool;
    for _ in 0..3 {
        stack.app.register(&unique_email()).await;
    }
    let (first_tx, newest): (String, i64) =
        sqlx::query_as("SELECT min(tx_id::text::numeric)::text, max(global_position) FROM events")
            .fetch_one(pool)
            .await
            .unwrap();
    sqlx::query(
        "INSERT INTO relay_checkpoints (name, tx_id, global_position)
         VALUES ('default', $1::text::xid8, $2)",
    )
    .bind(&first_tx)
    .bind(newest)
    .execute(pool)
    .await
    .unwrap();
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE tx_id > $1::text::xid8")
            .bind(&first_tx)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(waiting >= 2, "the later registrations' events");
    let mut command = service_command("projector", &stack.settings);
    command.args(["status", "--json"]);
    let out = run(command);
    let report: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(report["relay_pending"]["default"], waiting, "{report}");
    let mut command = service_command("projector", &stack.settings);
    command.arg("status");
    let said = text(&run(command).stdout);
    assert!(
        said.contains(&format!("{waiting} events to publish")),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_retried_from_the_command_line() {
    // No projector runs: the users read model is empty until a retry applies the event.
    let stack = stack_without_relay().await;
    let pool = &stack.app.pool;
    let user = stack.app.register(&unique_email()).await;
    let letter = |projection: &'static str, offset: i64| {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO dead_letters (projection, topic, partition, \"offset\", event_id, aggregate_id, error)
             SELECT $1, 'users.events', 0, $2, event_id::text, aggregate_id, 'transient: test'
             FROM events WHERE aggregate_type = 'user' AND aggregate_id = $3 AND sequence = 1
             RETURNING id",
        )
        .bind(projection)
        .bind(offset)
        .bind(&user)
        .fetch_one(pool)
    };
    let retry = |ids: &[i64]| {
        let mut command = service_command("projector", &stack.settings);
        command.args(["dead-letters", "retry"]);
        command.args(ids.iter().map(i64::to_string));
        run(command)
    };
    let first = letter("users", 1).await.unwrap();
    let out = retry(&[first]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_users WHERE id = $1::uuid")
        .bind(&user)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "the retried event is applied");
    let version: i64 = sqlx::query_scalar(
        "SELECT version FROM projection_versions WHERE projection = 'users' AND aggregate_id = $1",
    )
    .bind(&user)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(version, 1);
    assert_eq!(retry(&[first]).status.code(), Some(1), "no longer there");

    // A later event of the aggregate was applied: the old one is refused, and stays.
    sqlx::query("UPDATE projection_versions SET version = 3 WHERE projection = 'users' AND aggregate_id = $1")
        .bind(&user)
        .execute(pool)
        .await
        .unwrap();
    let late = letter("users", 2).await.unwrap();
    let out = retry(&[late]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("replay the projection instead"),
        "{}",
        text(&out.stderr)
    );
    // The audit model keeps one row per event: order does not matter there.
    sqlx::query("INSERT INTO projection_versions VALUES ('audit', 'user', $1, 3)")
        .bind(&user)
        .execute(pool)
        .await
        .unwrap();
    let audit = letter("audit", 3).await.unwrap();
    let manager = letter("process_manager", 4).await.unwrap();
    let out = retry(&[audit, manager]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("process manager"),
        "{}",
        text(&out.stderr)
    );
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM dead_letters ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(left, vec![late, manager], "applied: only the audit one");
}

/// What the kernel says of `process`'s transparent huge pages (`THP_enabled` in
/// /proc/<pid>/status, 0 once the process has turned them off), polled for up to ten seconds
/// while it starts; panics if the process exits or the field never reads 0.
async fn wait_for_small_pages(process: &mut Process, what: &str) {
    let status = format!("/proc/{}/status", process.pid());
    let mut seen = String::new();
    for _ in 0..100 {
        assert!(process.exited().is_none(), "{what} exited while starting");
        let text = std::fs::read_to_string(&status).unwrap_or_default();
        seen = text
            .lines()
            .find_map(|line| line.strip_prefix("THP_enabled:"))
            .map(|value| value.trim().to_owned())
            .unwrap_or_else(|| "no THP_enabled line".to_owned());
        if seen == "0" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} kept transparent huge pages on (THP_enabled: {seen})");
}

/// The allocator's arena on 2 MiB pages held twice the resident memory the services need
/// (docs/performance.md, "Resident memory with small pages"), so `command-api serve` and
/// `projector run` and `query-api` turn transparent huge pages off for themselves at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_long_running_services_turn_transparent_huge_pages_off() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let mut api = CommandApiProcess::start(&stack.settings);
    api.wait_ready().await;
    wait_for_small_pages(&mut api.process, "command-api serve").await;
    let mut projector = spawn_projector(&stack.settings, None);
    wait_for_small_pages(&mut projector, "projector run").await;
    let mut query = service_command("query-api", &stack.settings);
    query
        .env("APP__QUERY_API__PORT", free_port().to_string())
        .env("APP__QUERY_API__COMMAND_API_URL", &api.url);
    let mut query = Process::spawn(query, "a query-api process");
    wait_for_small_pages(&mut query, "query-api").await;
}

/// A command whose output is piped into something that stops reading (`| head -1`) does all
/// its work and ends with its own exit code: it used to panic at its first line, stopping half
/// way with exit 101.
#[tokio::test]
async fn a_command_whose_reader_has_gone_does_its_work_and_exits_with_its_own_code() {
    let db = crate::support::database::TestDatabase::create().await;
    let settings = db.settings();
    let pool = infra::db::connect(&settings.database).await.unwrap();
    infra::db::migrate(&pool).await.unwrap();
    // Something for `prune` to clear after its first line: a set left by a dead replay.
    sqlx::query("CREATE SCHEMA replay_users_0000000c")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO projector_work_schemas (schema_name, lease) VALUES ('replay_users_0000000c', 'gone')",
    )
    .execute(&pool)
    .await
    .unwrap();
    for args in [&["prune", "all"][..], &["status"][..]] {
        let mut command = service_command("projector", &settings);
        command
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("start the projector");
        // The reader goes before the first line is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait for the projector");
        let errors = text(&out.stderr);
        assert!(!errors.contains("panicked"), "projector {args:?}: {errors}");
        assert!(out.status.success(), "projector {args:?}: {out:?}");
    }
    let left: bool =
        sqlx::query_scalar("SELECT to_regnamespace('replay_users_0000000c') IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!left, "prune stopped before its work was done");
}
