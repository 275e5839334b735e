//! The concurrency limit over a real socket: readiness checks have their own few slots, shed
//! at once past them, and take none of the requests' slots.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::*;

/// A service whose `/readyz` holds every check until `release` is notified, counting those
/// inside it, and whose `/v1/work` answers at once; with two request slots.
async fn serve(inside: Arc<AtomicUsize>, release: Arc<Notify>) -> std::net::SocketAddr {
    let readyz = move || {
        let (inside, release) = (inside.clone(), release.clone());
        async move {
            inside.fetch_add(1, Ordering::SeqCst);
            release.notified().await;
            "ready"
        }
    };
    let router = Router::new()
        .route("/readyz", get(readyz))
        .route("/v1/work", get(|| async { "done" }));
    let http = HttpSettings {
        request_timeout_ms: 30_000,
        max_in_flight: 2,
        queue_timeout_ms: 100,
        shutdown_deadline_ms: 1_000,
        cors_allowed_origins: String::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = axum::serve(listener, apply(router, &http));
    tokio::spawn(async move { server.await.unwrap() });
    address
}

/// The status code of a GET of `path`.
async fn status(address: std::net::SocketAddr, path: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_checks_past_their_slots_are_shed_at_once_and_delay_no_request() {
    let (inside, release) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
    let address = serve(inside.clone(), release.clone()).await;
    let held: Vec<_> = (0..READINESS_SLOTS)
        .map(|_| tokio::spawn(status(address, "/readyz")))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while inside.load(Ordering::SeqCst) < READINESS_SLOTS {
        assert!(
            std::time::Instant::now() < deadline,
            "the checks never got in"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every readiness slot is held: one more check is shed without waiting for one.
    let shed = tokio::time::timeout(Duration::from_secs(5), status(address, "/readyz")).await;
    assert_eq!(shed.expect("a check past the slots waited"), 503);
    assert_eq!(inside.load(Ordering::SeqCst), READINESS_SLOTS);
    // The held checks take none of the two request slots.
    for _ in 0..3 {
        assert_eq!(status(address, "/v1/work").await, 200);
    }
    release.notify_waiters();
    for check in held {
        assert_eq!(check.await.unwrap(), 200);
    }
}
