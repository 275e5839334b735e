//! The read side end to end: the query API over projections fed through Kafka, the process
//! manager closing the order–payment loop, read-your-writes with `min_version`, the cache, and
//! the query API's contract (errors, pagination, conditional requests).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::helpers::{read, unique_email, Answer, TestApp};
use crate::kafka::{shared_bootstrap, spawn_stack, wait_until_published, Stack};
use crate::projections::{spawn_projector, Killed};

/// The write stack, a projector with the process manager (in this process) and the query API.
pub struct ReadStack {
    pub stack: Stack,
    pub query: QueryClient,
    stop: watch::Sender<bool>,
}

impl Drop for ReadStack {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub struct QueryClient {
    pub url: String,
    client: reqwest::Client,
}

impl QueryClient {
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.client.get(format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.expect("query request failed")).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.get_with(path, &[]).await
    }

    /// `GET path?min_version=N`, asserting 200 and that version N (or newer) came back.
    pub async fn at_least(&self, path: &str, version: i64) -> Value {
        let answer = self.get(&format!("{path}?min_version={version}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        assert!(
            answer.body["version"].as_i64().unwrap_or(-1) >= version,
            "{path} at min_version {version} returned {}",
            answer.body
        );
        answer.body
    }

    /// Polls `path` until `check` accepts the body (for lists, which have no `min_version`).
    pub async fn eventually(&self, path: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self.get(path).await;
            if answer.status == StatusCode::OK && check(&answer.body) {
                return answer.body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never matched; last answer {} {}",
                answer.status,
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Starts the query API in this process on the stack's database.
pub async fn spawn_query_api(settings: &infra::settings::Settings) -> QueryClient {
    let app = query_api::build(settings)
        .await
        .expect("build the query API");
    let url = format!("http://{}", app.address());
    tokio::spawn(app.run_until(std::future::pending()));
    let client = reqwest::Client::new();
    // Ready once its change listener is up (until then it serves, but caches nothing).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metric_line(&client, &url, "query_cache_listening 1").await {
        assert!(
            Instant::now() < deadline,
            "the query API's listener never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    QueryClient { url, client }
}

async fn metric_line(client: &reqwest::Client, url: &str, line: &str) -> bool {
    match client.get(format!("{url}/metrics")).send().await {
        Ok(response) => response
            .text()
            .await
            .is_ok_and(|text| text.lines().any(|l| l == line)),
        Err(_) => false,
    }
}

pub async fn spawn_read_stack(adjust: impl FnOnce(&mut infra::settings::Settings)) -> ReadStack {
    let stack = spawn_stack(&shared_bootstrap(), adjust).await;
    let commands = projections::process_manager::Commands::new(&stack.app.url).unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(projections::run_all(
        stack.app.pool.clone(),
        stack.settings.clone(),
        Some(commands),
        stopped,
    ));
    let query = spawn_query_api(&stack.settings).await;
    ReadStack { stack, query, stop }
}

#[track_caller]
fn accepted(answer: &Answer) -> i64 {
    assert!(answer.status.is_success(), "{}", answer.body);
    answer.version()
}

/// The id of the one event of `event_type` on `aggregate_id`.
async fn event_id(pool: &PgPool, aggregate_id: &str, event_type: &str) -> String {
    sqlx::query_scalar(
        "SELECT event_id::text FROM events WHERE aggregate_id = $1 AND event_type = $2",
    )
    .bind(aggregate_id)
    .bind(event_type)
    .fetch_one(pool)
    .await
    .expect("the event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_flows_end_to_end_and_every_step_is_visible() {
    let read_stack = spawn_read_stack(|s| s.query_api.max_wait_ms = 20_000).await;
    let (app, query) = (&read_stack.stack.app, &read_stack.query);

    let email = unique_email();
    let registered = app
        .post("/v1/users", json!({"email": email, "display_name": "Ada"}))
        .await;
    let user = registered.id();
    let v = accepted(&registered);
    let body = query.at_least(&format!("/v1/users/{user}"), v).await;
    assert_eq!(body["email"], email);
    assert_eq!(body["display_name"], "Ada");
    assert_eq!(body["status"], "active");
    let v = accepted(
        &app.post(
            &format!("/v1/users/{user}/addresses"),
            crate::helpers::address(),
        )
        .await,
    );
    let body = query.at_least(&format!("/v1/users/{user}"), v).await;
    assert_eq!(body["addresses"][0]["city"], "Berlin");
    let by_email = query
        .get(&format!("/v1/users?email={}", email.to_uppercase()))
        .await;
    assert_eq!(by_email.status, StatusCode::OK, "{}", by_email.body);
    assert_eq!(by_email.body["id"], user.as_str());

    // Place, pay: the process manager confirms the order once the payment is captured.
    let placed = app.place_order(&user).await;
    let order = placed.id();
    let total = placed.body["total_minor"].as_i64().unwrap();
    let body = query
        .at_least(&format!("/v1/orders/{order}"), accepted(&placed))
        .await;
    assert_eq!(body["status"], "created");
    assert_eq!(body["total_minor"], total);
    assert_eq!(body["paid_minor"], 0);
    let initiated = app
        .post(
            "/v1/payments",
            json!({"order_id": order, "amount_minor": total, "currency": "EUR", "method": "card"}),
        )
        .await;
    let payment = initiated.id();
    accepted(&initiated);
    accepted(
        &app.post(
            &format!("/v1/payments/{payment}/authorize"),
            json!({"amount_minor": total}),
        )
        .await,
    );
    let v = accepted(
        &app.post(
            &format!("/v1/payments/{payment}/capture"),
            json!({"amount_minor": total}),
        )
        .await,
    );
    let body = query.at_least(&format!("/v1/payments/{payment}"), v).await;
    assert_eq!(body["status"], "captured");
    assert_eq!(body["captured_minor"], total);
    let body = query.at_least(&format!("/v1/orders/{order}"), 2).await;
    assert_eq!(body["status"], "confirmed", "{body}");
    assert_eq!(body["paid_minor"], total);

    // Ship and deliver, each visible at its version.
    accepted(
        &app.post_empty(&format!("/v1/orders/{order}/start-processing"))
            .await,
    );
    let v = accepted(
        &app.post(
            &format!("/v1/orders/{order}/ship"),
            json!({"carrier": "DHL", "tracking_number": "JD0001"}),
        )
        .await,
    );
    let body = query.at_least(&format!("/v1/orders/{order}"), v).await;
    assert_eq!(body["status"], "shipped");
    assert_eq!(body["carrier"], "DHL");
    assert_eq!(body["tracking_number"], "JD0001");
    let v = accepted(&app.post_empty(&format!("/v1/orders/{order}/deliver")).await);
    assert_eq!(v, 5);
    let body = query.at_least(&format!("/v1/orders/{order}"), v).await;
    assert_eq!(body["status"], "delivered");

    // Lists, audit and analytics reflect it.
    let list = query.get(&format!("/v1/users/{user}/orders")).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(list.body["items"][0]["id"], order.as_str());
    assert_eq!(list.body["items"][0]["status"], "delivered");
    let payments = query.get(&format!("/v1/orders/{order}/payments")).await;
    assert_eq!(payments.body["items"][0]["id"], payment.as_str());
    let audit = query
        .eventually(&format!("/v1/audit/order/{order}"), |b| {
            b["items"].as_array().is_some_and(|i| i.len() == 5)
        })
        .await;
    let types: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "OrderPlaced",
            "OrderConfirmed",
            "OrderProcessingStarted",
            "OrderShipped",
            "OrderDelivered"
        ]
    );
    let confirmed = &audit["items"][1];
    let pool = &app.pool;
    assert_eq!(confirmed["actor"], "process-manager");
    assert_eq!(
        confirmed["causation_id"],
        event_id(pool, &payment, "PaymentCaptured").await,
        "the confirmation names the capture as its cause"
    );
    assert_eq!(audit["items"][0]["sequence"], 1);
    assert!(audit["items"][0]["payload"]["total_minor"] == total);
    let today = chrono::Utc::now().date_naive();
    let revenue = query
        .eventually(
            &format!("/v1/analytics/revenue?from={today}&to={today}&currency=EUR"),
            |b| b["items"][0]["captured_minor"] == total,
        )
        .await;
    let day = &revenue["items"][0];
    assert_eq!(day["day"], today.to_string());
    assert_eq!(day["refunded_minor"], 0);
    assert_eq!(day["net_minor"], total);
    assert_eq!(day["orders"], 1);
    let funnel = query
        .eventually("/v1/analytics/order-funnel", |b| {
            b["counts"]["delivered"] == 1
        })
        .await;
    assert_eq!(funnel["total"], 1);

    // A failed payment cancels its order, with reason `payment_failed`.
    let second = app.place_order(&user).await.id();
    let failing = app
        .post(
            "/v1/payments",
            json!({"order_id": second, "amount_minor": total, "currency": "EUR", "method": "card"}),
        )
        .await
        .id();
    accepted(
        &app.post(
            &format!("/v1/payments/{failing}/fail"),
            json!({"reason": "card_declined"}),
        )
        .await,
    );
    let body = query.at_least(&format!("/v1/orders/{second}"), 2).await;
    assert_eq!(body["status"], "cancelled");
    let history = query
        .eventually(&format!("/v1/audit/order/{second}"), |b| {
            b["items"].as_array().is_some_and(|i| i.len() == 2)
        })
        .await;
    assert_eq!(history["items"][1]["event_type"], "OrderCancelled");
    assert_eq!(history["items"][1]["payload"]["reason"], "payment_failed");
    assert_eq!(history["items"][1]["actor"], "process-manager");
}

/// Customers pay, then cancel. Each order is refunded exactly once by the process manager,
/// although its projector process is killed (SIGKILL) and restarted while this happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_after_capture_refunds_exactly_once_across_projector_kills() {
    let stack = spawn_stack(&shared_bootstrap(), |_| {}).await;
    let app = &stack.app;
    let (settings, url) = (stack.settings.clone(), app.url.clone());
    let killer = tokio::task::spawn_blocking(move || {
        let mut projector = Killed(spawn_projector(&settings, Some(&url)));
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(900));
            projector = Killed(spawn_projector(&settings, Some(&url))); // SIGKILLs the old one
        }
        projector
    });
    let payments = join_all((0..24).map(|_| pay_then_cancel(app))).await;
    let projector = killer.await.expect("killer thread");
    let pool = &app.pool;
    wait_until_published(pool, Duration::from_secs(60)).await;

    // Every payment is refunded, and once the process manager has seen everything (its own
    // refunds included), still exactly once.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let refunded = refunds(pool).await;
        let caught_up =
            crate::projections::unprojected(pool, "process_manager", &["order", "payment"]).await
                == 0;
        if refunded.len() == payments.len() && caught_up && unpublished_is_zero(pool).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} payments refunded",
            refunded.len(),
            payments.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refunded = refunds(pool).await;
    for payment in &payments {
        let (count, amount, actor) = refunded
            .iter()
            .find(|r| &r.0 == payment)
            .map(|r| (r.1, r.2, r.3.clone()))
            .unwrap_or_default();
        assert_eq!(count, 1, "payment {payment} refunded {count} times");
        assert_eq!(amount, 3000, "payment {payment}");
        assert_eq!(actor, "process-manager");
    }
    drop(projector);
}

async fn unpublished_is_zero(pool: &PgPool) -> bool {
    crate::kafka::unpublished(pool).await == 0
}

/// Registers, orders and pays 3000 (captured); returns the order and payment ids.
async fn paid_order(app: &TestApp) -> (String, String) {
    let (_, order) = app.user_and_order().await;
    let payment = app
        .post(
            "/v1/payments",
            json!({"order_id": order, "amount_minor": 3000, "currency": "EUR", "method": "card"}),
        )
        .await
        .id();
    for step in ["authorize", "capture"] {
        accepted(
            &app.post(
                &format!("/v1/payments/{payment}/{step}"),
                json!({"amount_minor": 3000}),
            )
            .await,
        );
    }
    (order, payment)
}

/// Cancels the order; the process manager may confirm it at the same moment, so a version
/// conflict is retried.
async fn cancel(app: &TestApp, order: &str) {
    for _ in 0..20 {
        let answer = app
            .post(
                &format!("/v1/orders/{order}/cancel"),
                json!({"reason": "changed_mind"}),
            )
            .await;
        if answer.status.is_success() {
            return;
        }
        answer.assert_problem(409, "version-conflict");
    }
    panic!("order {order} could not be cancelled");
}

/// Registers, orders, pays (captured) and cancels; returns the payment id.
async fn pay_then_cancel(app: &TestApp) -> String {
    let (order, payment) = paid_order(app).await;
    cancel(app, &order).await;
    payment
}

/// Per payment: refund events, total refunded, and the last refund's actor.
async fn refunds(pool: &PgPool) -> Vec<(String, i64, i64, String)> {
    sqlx::query_as(
        "SELECT aggregate_id, count(*), sum((payload->>'amount_minor')::bigint)::bigint,
             max(metadata->>'actor')
         FROM events WHERE event_type = 'PaymentRefunded' GROUP BY aggregate_id",
    )
    .fetch_all(pool)
    .await
    .expect("refunds")
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_query_api_answers_as_specified() {
    let read_stack = spawn_read_stack(|s| s.query_api.max_wait_ms = 400).await;
    let (app, query) = (&read_stack.stack.app, &read_stack.query);
    let (user, order) = app.user_and_order().await;
    query
        .eventually(&format!("/v1/orders/{order}"), |b| b["version"] == 1)
        .await;

    // min_version beyond what exists: a bounded wait, then a distinct status and type.
    let behind = query
        .get(&format!("/v1/orders/{order}?min_version=9"))
        .await;
    behind.assert_problem(504, "read-model-behind");
    assert_eq!(behind.body["current_version"], 1);
    assert_eq!(behind.body["min_version"], 9);
    assert!(behind.headers.contains_key("retry-after"));
    // No such aggregate in the event store at all: waiting cannot help, 404 at once (one that
    // exists but is not projected yet waits; see `version_waits.rs`).
    let unknown = uuid::Uuid::now_v7();
    query
        .get(&format!("/v1/users/{unknown}?min_version=1"))
        .await
        .assert_problem(404, "not-found");

    for path in [
        format!("/v1/users/{unknown}"),
        format!("/v1/orders/{unknown}"),
        format!("/v1/payments/{unknown}"),
        format!("/v1/orders/{unknown}/payments"),
        format!("/v1/users/{unknown}/orders"),
        format!("/v1/audit/order/{unknown}"),
        format!("/v1/audit/invoice/{order}"),
        "/v1/users/not-a-uuid".to_owned(),
        "/v1/users?email=nobody@example.com".to_owned(),
    ] {
        query.get(&path).await.assert_problem(404, "not-found");
    }
    query
        .get("/v1/nothing")
        .await
        .assert_problem(404, "route-not-found");
    for (path, field) in [
        (format!("/v1/users/{user}/orders?limit=0"), "limit"),
        (format!("/v1/users/{user}/orders?limit=101"), "limit"),
        (format!("/v1/users/{user}/orders?limit=ten"), "limit"),
        (format!("/v1/users/{user}/orders?status=lost"), "status"),
        (format!("/v1/users/{user}/orders?cursor=garbage"), "cursor"),
        (format!("/v1/users/{user}/orders?colour=red"), "colour"),
        (format!("/v1/orders/{order}?min_version=-1"), "min_version"),
        (format!("/v1/orders/{order}?min_version=x"), "min_version"),
        ("/v1/users".to_owned(), "email"),
        ("/v1/users?email=not-an-email".to_owned(), "email"),
        ("/v1/analytics/revenue?from=2026-02-30".to_owned(), "from"),
        (
            "/v1/analytics/revenue?from=2026-03-02&to=2026-03-01".to_owned(),
            "from",
        ),
        ("/v1/analytics/revenue?currency=EURO".to_owned(), "currency"),
        ("/v1/analytics/order-funnel?to=yesterday".to_owned(), "to"),
        (format!("/v1/audit/order/{order}?cursor=-4"), "cursor"),
        ("/v1/analytics/revenue?from=-5000-01-01".to_owned(), "from"),
        (
            "/v1/analytics/order-funnel?to=+20000-01-01".to_owned(),
            "to",
        ),
        (format!("/v1/users/{user}/orders?limit=1&limit=2"), "limit"),
    ] {
        let answer = query.get(&path).await;
        answer.assert_problem(422, "validation-failed");
        assert_eq!(answer.error_fields(), [field], "{path}: {}", answer.body);
    }

    // Conditional reads.
    let first = query.get(&format!("/v1/orders/{order}")).await;
    let etag = first.headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, "\"1\"");
    for tag in [etag.as_str(), "W/\"1\"", "\"0\", \"1\"", "*"] {
        let answer = query
            .get_with(&format!("/v1/orders/{order}"), &[("if-none-match", tag)])
            .await;
        assert_eq!(answer.status, StatusCode::NOT_MODIFIED, "{tag}");
        assert_eq!(answer.headers["etag"], etag.as_str());
    }

    // Pagination: newest first, stable while orders are being placed.
    let mut placed = vec![order.clone()];
    for _ in 0..11 {
        placed.push(app.place_order(&user).await.id());
    }
    let list_path = format!("/v1/users/{user}/orders");
    query
        .eventually(&list_path, |b| {
            b["items"].as_array().is_some_and(|i| i.len() == 12)
        })
        .await;
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_path = match &cursor {
            Some(c) => format!("{list_path}?limit=5&cursor={c}"),
            None => format!("{list_path}?limit=5"),
        };
        let page = query.get(&page_path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        // Meanwhile more orders arrive; they sort before the first page.
        app.place_order(&user).await;
        seen.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a page repeated an order");
    placed.reverse();
    let original: Vec<&String> = seen.iter().filter(|id| placed.contains(id)).collect();
    assert_eq!(
        original,
        placed.iter().collect::<Vec<_>>(),
        "newest first, none skipped"
    );
    let created = query
        .get(&format!("{list_path}?status=created&limit=100"))
        .await;
    assert!(created.body["items"].as_array().unwrap().len() >= 12);
    let none = query.get(&format!("{list_path}?status=shipped")).await;
    assert_eq!(none.body["items"], json!([]));

    // Ops and the published contract.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(query.get(path).await.status, StatusCode::OK, "{path}");
    }
    let spec = query.get("/openapi.json").await.body;
    for path in [
        "/v1/users/{id}",
        "/v1/users",
        "/v1/orders/{id}",
        "/v1/users/{id}/orders",
        "/v1/payments/{id}",
        "/v1/orders/{id}/payments",
        "/v1/analytics/revenue",
        "/v1/analytics/order-funnel",
        "/v1/audit/{aggregate_type}/{id}",
    ] {
        assert!(
            spec["paths"][path]["get"].is_object(),
            "{path} missing from the spec"
        );
    }
}

/// A refund the process manager has not seen yet: it refunds what is left, not the whole
/// capture, so the customer gets the captured amount back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancellation_refunds_what_is_left_after_a_partial_refund() {
    let read_stack = spawn_read_stack(|s| s.query_api.max_wait_ms = 20_000).await;
    let (app, query) = (&read_stack.stack.app, &read_stack.query);
    let (order, payment) = paid_order(app).await;
    // A goodwill refund, then the cancellation right behind it.
    accepted(
        &app.post(
            &format!("/v1/payments/{payment}/refund"),
            json!({"amount_minor": 1000, "reason": "goodwill"}),
        )
        .await,
    );
    cancel(app, &order).await;
    let body = query.at_least(&format!("/v1/payments/{payment}"), 5).await;
    assert_eq!(body["status"], "refunded", "{body}");
    assert_eq!(body["refunded_minor"], 3000);
    let refunds: Vec<(i64, String)> = sqlx::query_as(
        "SELECT (payload->>'amount_minor')::bigint, metadata->>'actor' FROM events
         WHERE aggregate_id = $1 AND event_type = 'PaymentRefunded' ORDER BY sequence",
    )
    .bind(&payment)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        refunds,
        [
            (1000, "anonymous".to_owned()),
            (2000, "process-manager".to_owned())
        ]
    );
}
