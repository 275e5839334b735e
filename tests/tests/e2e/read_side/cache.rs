//! Read-your-writes and the cache: `min_version` never returns an older version than asked
//! for, however the current one is cached, and conditional reads follow the version; a change
//! listener whose connection falls silent is replaced and the cache cleared.

use std::time::Duration;

use infra::secrecy::ExposeSecret;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::app::{accepted, unique_email};
use crate::support::kafka::shared_bootstrap;
use crate::support::processes::metric_sum;
use crate::support::projector::InProcessProjector;
use crate::support::proxy::Proxy;
use crate::support::query::{spawn_query_api, spawn_read_stack};
use crate::support::stack::spawn_stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_version_never_returns_an_older_version_even_when_cached() {
    let read_stack = spawn_read_stack(|s| s.query_api.max_wait_ms = 20_000).await;
    let (app, query) = (&read_stack.stack.app, &read_stack.query);
    let user = app.register(&unique_email()).await;
    let path = format!("/v1/users/{user}");
    let mut version = query.at_least(&path, 1).await["version"].as_i64().unwrap();
    let before = query.get("/metrics").await;
    let before = before.body.as_str().unwrap_or_default().to_owned();
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
    // Each round read the cached version twice and then missed the version it asked for (the
    // recorder is shared with other tests in this binary: at least these were counted).
    let metrics = query.get("/metrics").await;
    let after = metrics.body.as_str().unwrap_or_default();
    let grew = |result: &str| {
        let labels = [r#"resource="user""#, result];
        metric_sum(after, "query_cache_requests_total", &labels)
            - metric_sum(&before, "query_cache_requests_total", &labels)
    };
    assert!(grew(r#"result="hit""#) >= 15.0, "{after}");
    assert!(grew(r#"result="miss""#) >= 1.0, "{after}");
}

/// A change listener whose connection falls silent (a failover, or a firewall that forgot the
/// connection: here a proxy stops passing its bytes, the connection left open) is noticed by
/// its missing heartbeat: the cache is cleared and the listener connects anew, so a plain
/// read shows a change within about twenty seconds. Before, the listener waited on the silent
/// connection for ever and the cache served the entry until its TTL (ten minutes here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_change_listener_is_replaced_and_the_cache_cleared() {
    let stack = spawn_stack(&shared_bootstrap(), |s| s.query_api.cache_ttl_secs = 600).await;
    let _projector = InProcessProjector::start(&stack, Some(&stack.app.url));
    let database = stack.settings.database.url.expose_secret().to_owned();
    let address = crate::support::proxy::address_of(&database);
    let proxy = Proxy::start(&address).await;
    let mut settings = stack.settings.clone();
    settings.database.url = database
        .replacen(&address, &format!("127.0.0.1:{}", proxy.port), 1)
        .into();
    let query = spawn_query_api(&settings).await;
    let app = &stack.app;
    let user = app.register(&unique_email()).await;
    let path = format!("/v1/users/{user}");
    query.at_least(&path, 1).await;
    assert_eq!(query.get(&path).await.body["version"], 1, "cached");
    assert_eq!(
        proxy.silence_listeners(),
        1,
        "one change listener, silenced"
    );
    accepted(
        &app.post(
            &format!("{path}/profile"),
            json!({"display_name": "Renamed"}),
        )
        .await,
    );
    // The notification is held with the connection: the cache still serves what it had.
    assert_eq!(query.get(&path).await.body["version"], 1, "still cached");
    let started = std::time::Instant::now();
    loop {
        let read = query.get(&path).await;
        if read.body["display_name"] == "Renamed" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the cache still serves version {} after {:?}",
            read.body["version"],
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("the change was visible after {:?}", started.elapsed());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while proxy.live_listeners() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no listener connected anew"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(proxy.live_listeners(), 1, "one listener connected anew");
}
