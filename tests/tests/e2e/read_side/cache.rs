//! Read-your-writes and the cache: `min_version` never returns an older version than asked
//! for, however the current one is cached, and conditional reads follow the version; a change
//! listener whose connection falls silent is replaced and the cache cleared.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::{accepted, unique_email};
use crate::support::query::spawn_read_stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_version_never_returns_an_older_version_even_when_cached() {
    let read_stack = spawn_read_stack(|s| s.query_api.max_wait_ms = 20_000).await;
    let (app, query) = (&read_stack.stack.app, &read_stack.query);
    let user = app.register(&unique_email()).await;
    let path = format!("/v1/users/{user}");
    let mut version = query.at_least(&path, 1).await["version"].as_i64().unwrap();
    for round in 0..15 {
        // The current version is cached (read twice: the second read is a hit)...
        for _ in 0..2 {
            let cached = query.get(&path).await;
            assert_eq!(cached.body["version"], version);
            assert_eq!(cached.headers["etag"], format!("\"{version}\""));
        }
        let not_modified = query
            .get_with(&path, &[("if-none-match", &format!("\"{version}\""))])
            .await;
        assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
        // ...then a command moves the user on, and the very next read asks for that version.
        version = accepted(
            &app.post(
                &format!("/v1/users/{user}/profile"),
                json!({"display_name": format!("Round {round}")}),
            )
            .await,
        );
        let fresh = query.get(&format!("{path}?min_version={version}")).await;
        assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
        assert_eq!(fresh.body["version"], version, "older than asked for");
        assert_eq!(fresh.body["display_name"], format!("Round {round}"));
        assert_eq!(fresh.headers["etag"], format!("\"{version}\""));
        let stale_tag = query
            .get_with(&path, &[("if-none-match", &format!("\"{}\"", version - 1))])
            .await;
        assert_eq!(stale_tag.status, StatusCode::OK);
        assert_eq!(stale_tag.body["version"], version);
    }
    let metrics = query.get("/metrics").await;
    let text = metrics.body.as_str().unwrap_or_default();
    assert!(text.contains("query_cache_requests_total{resource=\"user\",result=\"hit\"}"));
    assert!(text.contains("query_cache_requests_total{resource=\"user\",result=\"miss\"}"));
}

/// Sends SIGCONT to the process when dropped.
struct Stopped(i32);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// A change listener whose connection falls silent (a failover or a firewall that forgot the
/// connection; here its server process is stopped with SIGSTOP) is noticed by its missing
/// heartbeat: the cache is cleared and the listener connects anew, so a plain read shows a
/// change within about twenty seconds. Before, the listener waited on the silent connection
/// for ever and the cache served the entry until its TTL (ten minutes here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_change_listener_is_replaced_and_the_cache_cleared() {
    let read_stack = spawn_read_stack(|s| s.query_api.cache_ttl_secs = 600).await;
    let (app, query) = (&read_stack.stack.app, &read_stack.query);
    let user = app.register(&unique_email()).await;
    let path = format!("/v1/users/{user}");
    query.at_least(&path, 1).await;
    assert_eq!(query.get(&path).await.body["version"], 1, "cached");
    let pid: i32 = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%read_models%'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the query API's listener");
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(stop.success());
    let _continue = Stopped(pid);
    accepted(
        &app.post(
            &format!("{path}/profile"),
            json!({"display_name": "Renamed"}),
        )
        .await,
    );
    let started = std::time::Instant::now();
    loop {
        let read = query.get(&path).await;
        if read.body["display_name"] == "Renamed" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(40),
            "the cache still serves version {} after {:?}",
            read.body["version"],
            started.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    eprintln!("the change was visible after {:?}", started.elapsed());
}
