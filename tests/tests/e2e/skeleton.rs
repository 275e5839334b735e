//! The service skeleton (`infra::server`): the same fallbacks and request ids on all four
//! services, and, on a test router, catch-panic, request timeout, load shedding and the
//! shutdown deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use infra::server::Service;
use infra::settings::{HttpSettings, Settings};
use reqwest::{Method, StatusCode};
use tokio::sync::{oneshot, Notify};

use crate::support::app::{read, Answer};
use crate::support::database::{admin_url, TestDatabase};

/// A running service: its base URL, the trigger for its shutdown and its `run_until`.
struct Running {
    url: String,
    shutdown: oneshot::Sender<()>,
    stopped: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn run(service: Service) -> Running {
    let url = format!("http://{}", service.address());
    let (shutdown, on_shutdown) = oneshot::channel::<()>();
    let stopped = tokio::spawn(service.run_until(async {
        let _ = on_shutdown.await;
    }));
    Running {
        url,
        shutdown,
        stopped,
    }
}

impl Running {
    async fn call(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.expect("request failed")).await
    }

    /// Signals shutdown and waits (at most `within`) for `run_until` to return.
    async fn stop(self, within: Duration) {
        let _ = self.shutdown.send(());
        let finished = tokio::time::timeout(within, self.stopped).await;
        let result = finished.expect("the service did not exit by its shutdown deadline");
        result
            .expect("run_until panicked")
            .expect("run_until failed");
    }
}

fn http_settings() -> HttpSettings {
    Settings::load_from(None).expect("default settings").http
}

/// The skeleton around `routes`, on a pool that never connects unless asked to.
async fn skeleton(http: HttpSettings, routes: Router) -> Service {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy(&admin_url())
        .expect("a lazy pool");
    Service::bind("test", "127.0.0.1", 0, &http, pool, routes)
        .await
        .expect("bind the skeleton")
}

async fn each_service(settings: &Settings) -> Vec<(&'static str, Service)> {
    vec![
        (
            "command API",
            command_api::build(settings).await.expect("command API"),
        ),
        (
            "query API",
            query_api::build(settings).await.expect("query API"),
        ),
        (
            "schema registry",
            schema_registry::service::build(settings)
                .await
                .expect("registry"),
        ),
        (
            "projector",
            projections::startup::build(settings)
                .await
                .expect("projector"),
        ),
    ]
}

#[tokio::test]
async fn every_service_answers_unknown_routes_and_methods_with_problems_and_echoes_request_ids() {
    let db = TestDatabase::create().await;
    let mut settings = db.settings();
    // The projector must not reach any broker a colleague's test may be using.
    settings.kafka.bootstrap_servers = "127.0.0.1:1".to_owned();
    settings.projector.process_manager = false;
    settings.http.shutdown_deadline_ms = 2_000;
    for (name, service) in each_service(&settings).await {
        let running = run(service);
        let missing = running.call(Method::GET, "/no/such/route", &[]).await;
        missing.assert_problem(404, "route-not-found");
        let wrong = running.call(Method::POST, "/healthz", &[]).await;
        wrong.assert_problem(405, "method-not-allowed");
        // A path that is not UTF-8 once decoded names nothing: a problem, not the path
        // extractor's plain-text 400 (which came before authentication, too).
        for path in ["/v1/orders/%FF/confirm", "/v1/users/%C3%28"] {
            let undecodable = running.call(Method::POST, path, &[]).await;
            undecodable.assert_problem(404, "not-found");
        }

        let echoed = running
            .call(Method::GET, "/healthz", &[("x-request-id", "req-42.a:b_c")])
            .await;
        assert_eq!(echoed.status, StatusCode::OK, "{name}");
        assert_eq!(echoed.headers["x-request-id"], "req-42.a:b_c", "{name}");
        let generated = running.call(Method::GET, "/no/such/route", &[]).await;
        let replaced = running
            .call(Method::GET, "/healthz", &[("x-request-id", "two words")])
            .await;
        for answer in [generated, replaced] {
            let id = answer.headers["x-request-id"].to_str().unwrap_or_default();
            assert_eq!(id.len(), 36, "{name}: a fresh UUID, got {id:?}");
        }
        running.stop(Duration::from_secs(10)).await;
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_the_internal_problem_and_the_server_keeps_serving() {
    let routes = Router::new()
        .route("/panic", get(panics))
        .route("/ok", get(|| async { "ok" }));
    let running = run(skeleton(http_settings(), routes).await);
    for _ in 0..2 {
        let answer = running
            .call(Method::GET, "/panic", &[("x-request-id", "panicky")])
            .await;
        answer.assert_problem(500, "internal-error");
        let expected = serde_json::to_value(infra::http::Problem::internal()).expect("json");
        assert_eq!(answer.body, expected);
        assert_eq!(answer.headers["x-request-id"], "panicky");
        let ok = running.call(Method::GET, "/ok", &[]).await;
        assert_eq!(ok.status, StatusCode::OK);
    }
    running.stop(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_handler_slower_than_the_request_timeout_gets_the_timeout_problem() {
    let mut http = http_settings();
    http.request_timeout_ms = 200;
    let routes = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "too late"
        }),
    );
    let running = run(skeleton(http, routes).await);
    let answer = running.call(Method::GET, "/slow", &[]).await;
    answer.assert_problem(504, "request-timeout");
    running.stop(Duration::from_secs(10)).await;
}

/// A route that signals `entered` and then waits for `release` (or forever).
fn blocking_routes(entered: Arc<Notify>, release: Arc<Notify>) -> Router {
    Router::new().route(
        "/block",
        get(move || async move {
            entered.notify_one();
            release.notified().await;
            "released"
        }),
    )
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_shed_with_retry_after() {
    let mut http = http_settings();
    http.max_in_flight = 1;
    http.queue_timeout_ms = 100;
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let running = Arc::new(run(skeleton(
        http,
        blocking_routes(entered.clone(), release.clone()),
    )
    .await));
    let first = tokio::spawn({
        let running = running.clone();
        async move { running.call(Method::GET, "/block", &[]).await }
    });
    entered.notified().await;
    let shed = running.call(Method::GET, "/block", &[]).await;
    shed.assert_problem(503, "overloaded");
    assert_eq!(shed.headers["retry-after"], "1");
    // Health, readiness and scrapes take none of the requests' slots: a saturated service is
    // slow, not dead, and its probes and metrics must say so. Before, they queued behind the
    // requests and were shed too (liveness restarts, readiness emptied, scrapes lost).
    for path in ["/healthz", "/metrics"] {
        let answer = running.call(Method::GET, path, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{path} while saturated");
    }
    release.notify_one();
    let first = first.await.expect("first request");
    assert_eq!(first.status, StatusCode::OK);
}

#[tokio::test]
async fn a_stuck_request_does_not_keep_the_service_from_exiting() {
    let mut http = http_settings();
    http.shutdown_deadline_ms = 300;
    let (entered, never) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let hook_ran = Arc::new(AtomicBool::new(false));
    let service = skeleton(http, blocking_routes(entered.clone(), never))
        .await
        .background("stuck", std::future::pending::<()>)
        .background("flag", {
            let hook_ran = hook_ran.clone();
            move || stop_hook(hook_ran)
        });
    let running = run(service);
    let url = format!("{}/block", running.url);
    let stuck = tokio::spawn(async move { reqwest::get(url).await });
    entered.notified().await;
    running.stop(Duration::from_secs(5)).await;
    assert!(
        hook_ran.load(Ordering::SeqCst),
        "the stop hooks are run even after the deadline passed"
    );
    stuck.abort();
}

async fn stop_hook(ran: Arc<AtomicBool>) {
    ran.store(true, Ordering::SeqCst)
}

async fn panics() -> &'static str {
    panic!("deliberate test panic")
}

#[tokio::test]
async fn every_answer_carries_security_headers_and_cors_is_closed_unless_configured() {
    let routes = Router::new().route("/hello", get(|| async { "hello" }));
    let closed = run(skeleton(http_settings(), routes.clone()).await);
    for path in ["/hello", "/no-such-route"] {
        let answer = closed.call(Method::GET, path, &[]).await;
        for (name, value) in infra::server::layers::SECURITY_HEADERS {
            assert_eq!(answer.headers[name], value, "{name} on {path}");
        }
    }
    let preflight = [
        ("Origin", "https://shop.example"),
        ("Access-Control-Request-Method", "POST"),
        (
            "Access-Control-Request-Headers",
            "authorization,content-type",
        ),
    ];
    let answer = closed.call(Method::OPTIONS, "/hello", &preflight).await;
    assert!(!answer.headers.contains_key("access-control-allow-origin"));
    let answer = closed.call(Method::GET, "/hello", &preflight[..1]).await;
    assert!(!answer.headers.contains_key("access-control-allow-origin"));
    closed.stop(Duration::from_secs(5)).await;

    let mut http = http_settings();
    http.cors_allowed_origins = "https://shop.example, https://admin.example".into();
    let open = run(skeleton(http, routes).await);
    let answer = open.call(Method::OPTIONS, "/hello", &preflight).await;
    assert_eq!(
        answer.headers["access-control-allow-origin"],
        "https://shop.example"
    );
    let allowed = answer.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let other = open
        .call(
            Method::OPTIONS,
            "/hello",
            &[
                ("Origin", "https://evil.example"),
                preflight[1],
                preflight[2],
            ],
        )
        .await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));
    let simple = open.call(Method::GET, "/hello", &preflight[..1]).await;
    assert_eq!(
        simple.headers["access-control-allow-origin"],
        "https://shop.example"
    );
    open.stop(Duration::from_secs(5)).await;
}
