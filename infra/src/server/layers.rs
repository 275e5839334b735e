//! The middleware every service runs, outermost first:
//!
//! 1. request id: a sane incoming `x-request-id` is kept, anything else is replaced by a fresh
//!    UUID; the id is on the request (header and [`RequestId`] extension) and echoed on every
//!    response, including problems produced by the layers below;
//! 2. trace: one server span per request, named `<METHOD> <route>` with OpenTelemetry's HTTP
//!    attributes (and request and correlation ids), continuing the caller's `traceparent`
//!    while spans are exported; one `response` log line per request with status and latency;
//! 3. HTTP metrics (`http_requests_total`, `http_request_duration_seconds`);
//! 4. catch-panic: a panicking handler answers 500 with the same problem as
//!    [`Problem::internal`] and the panic is logged inside the request's span; the connection
//!    and the server keep serving;
//! 5. concurrency limit: at most `max_in_flight` requests are handled at once; the rest queue
//!    for up to `queue_timeout_ms` and are then shed with 503 `overloaded` and `Retry-After`.
//!    `/healthz` and `/metrics` take no slot (they read only the process's memory), so a busy
//!    service still answers its liveness probe and scrapes; `/readyz`, which asks the
//!    database, has [`READINESS_SLOTS`] of its own and is shed at once past them, so a flood
//!    of readiness checks (they need no token) holds few connections and delays nothing else;
//! 6. request timeout: a handler still running after `request_timeout_ms` is dropped and the
//!    caller gets 504 `request-timeout`.
//!
//! Around all of them: security headers on every response ([`SECURITY_HEADERS`], unless the
//! handler set its own) and, only when `http.cors_allowed_origins` names origins, CORS for
//! exactly those origins (closed by default: browsers on other sites cannot read answers).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::http::{record_http_metrics, Problem};
use crate::settings::HttpSettings;

/// The request id header, accepted from callers and echoed on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const CORRELATION_ID: &str = "x-correlation-id";
/// Longest incoming request id kept; longer ones are replaced, not truncated.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request's id, as a request extension for handlers that want to log or return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Wraps `router` (routes, ops routes and fallbacks already merged) in the skeleton's layers.
pub fn apply(router: Router, http: &HttpSettings) -> Router {
    let limit = Limits {
        slots: Arc::new(Semaphore::new(http.max_in_flight.max(1))),
        readiness_slots: Arc::new(Semaphore::new(READINESS_SLOTS)),
        queue_timeout: Duration::from_millis(http.queue_timeout_ms),
        request_timeout: Duration::from_millis(http.request_timeout_ms),
    };
    // `Router::layer` wraps what came before: the last layer added runs first.
    let router = router
        .layer(from_fn_with_state(limit.clone(), time_limit))
        .layer(from_fn_with_state(limit, concurrency_limit))
        .layer(CatchPanicLayer::custom(panic_problem))
        .layer(from_fn(undecodable_path))
        .layer(from_fn(record_http_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(http_span)
                .on_response(on_response),
        )
        .layer(from_fn(request_id))
        .layer(from_fn(security_headers));
    match cors(&http.cors_allowed_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Headers every answer carries: these are JSON APIs, never documents to render, frame or
/// sniff, and nothing they say is for a referrer.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
];

/// A path that is not UTF-8 once percent-decoded (`/v1/orders/%FF`) names nothing any route
/// serves: 404 `not-found` as a problem, like any other missing resource. Without this, the
/// path extractor answered such a request itself, 400 in plain text, before authentication.
async fn undecodable_path(request: Request, next: Next) -> Response {
    if percent_decoded(request.uri().path()).is_some_and(|bytes| String::from_utf8(bytes).is_ok()) {
        return next.run(request).await;
    }
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        "the path is not UTF-8 once percent-decoded, so it names nothing",
    )
    .into_response()
}

/// `path` with its `%XX` escapes decoded; `None` for a `%` not followed by two hex digits.
fn percent_decoded(path: &str) -> Option<Vec<u8>> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        if !headers.contains_key(name) {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
    }
    response
}

/// CORS for the listed origins (comma-separated); `None` when there are none.
fn cors(origins: &str) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, Method};
    let origins: Vec<HeaderValue> = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let request_headers = [
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        HeaderName::from_static("idempotency-key"),
        HeaderName::from_static("x-correlation-id"),
        HeaderName::from_static("x-causation-id"),
        HeaderName::from_static("traceparent"),
    ];
    let exposed = [
        header::ETAG,
        header::RETRY_AFTER,
        header::WWW_AUTHENTICATE,
        HeaderName::from_static("idempotent-replayed"),
        REQUEST_ID,
    ];
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers(request_headers)
            .expose_headers(exposed)
            .max_age(Duration::from_secs(600)),
    )
}

#[derive(Clone)]
struct Limits {
    slots: Arc<Semaphore>,
    /// Readiness checks' own ([`READINESS_SLOTS`]).
    readiness_slots: Arc<Semaphore>,
    queue_timeout: Duration,
    request_timeout: Duration,
}

/// Whether a caller's request id is safe to log and echo: short, printable, no separators
/// that would let it forge log structure.
pub fn is_sane_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

async fn request_id(mut request: Request, next: Next) -> Response {
    let incoming = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sane_request_id(id))
        .map(str::to_owned);
    let id = incoming.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    // The id is checked (or generated) ASCII, so it is always a valid header value.
    let value = HeaderValue::from_str(&id).ok();
    if let Some(value) = &value {
        request.headers_mut().insert(REQUEST_ID, value.clone());
    }
    request.extensions_mut().insert(RequestId(id));
    let mut response = next.run(request).await;
    if let Some(value) = value {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The server span of a request, named and attributed after OpenTelemetry's HTTP semantic
/// conventions; while spans are exported, it continues the caller's `traceparent`.
fn http_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method();
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        request_id = %header(REQUEST_ID.as_str()),
        correlation_id = %header(CORRELATION_ID),
    );
    if crate::telemetry::exporting() {
        let parent = crate::telemetry::propagation::from_headers(request.headers());
        crate::telemetry::propagation::set_parent(&span, &parent);
    }
    span
}

/// Records the status on the request's span (5xx marks it as an error) and logs one line.
fn on_response<B>(response: &Response<B>, latency: Duration, span: &tracing::Span) {
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    tracing::info!(
        status,
        latency_ms = latency.as_secs_f64() * 1000.0,
        "response"
    );
}

fn panic_problem(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = crate::panic_message(panic.as_ref());
    tracing::error!(panic = %message, "handler panicked; answered 500");
    metrics::counter!("http_panics_total").increment(1);
    Problem::internal().into_response()
}

/// Routes that take no slot: they read only the process's memory, and a liveness probe or a
/// scrape shed with the requests of a busy service would tell the orchestrator it is dead (a
/// restart on top of the load) and lose the metrics that show why.
const UNLIMITED: [&str; 2] = ["/healthz", "/metrics"];

/// How many readiness checks run at once: far more than probes send, few enough that a flood
/// of them holds only this many database connections. Past them a check is shed at once.
pub const READINESS_SLOTS: usize = 4;

async fn concurrency_limit(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    match request.uri().path() {
        path if UNLIMITED.contains(&path) => return next.run(request).await,
        "/readyz" => {
            return match limits.readiness_slots.clone().try_acquire_owned() {
                Ok(_slot) => next.run(request).await,
                Err(_) => {
                    metrics::counter!("http_requests_shed_total").increment(1);
                    overloaded().into_response()
                }
            }
        }
        _ => {}
    }
    let slot = tokio::time::timeout(limits.queue_timeout, limits.slots.acquire_owned()).await;
    match slot {
        Ok(Ok(_permit)) => next.run(request).await,
        // Timed out in the queue, or the semaphore was closed (never, but not a panic).
        _ => {
            metrics::counter!("http_requests_shed_total").increment(1);
            tracing::warn!("request shed: every slot stayed busy for the queue timeout");
            overloaded().into_response()
        }
    }
}

async fn time_limit(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("http_request_timeouts_total").increment(1);
            tracing::warn!(
                timeout_ms = limits.request_timeout.as_millis() as u64,
                "request timed out; handler dropped"
            );
            request_timeout(limits.request_timeout).into_response()
        }
    }
}

/// 503 for a request shed because the service was at its concurrency limit.
pub fn overloaded() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "Service overloaded",
        "the service is handling as many requests as it allows; nothing was done, retry later",
    )
    .retry_after(1)
}

/// 504 for a handler that ran past the request timeout. A command may have been applied
/// before it was cut off, so the caller cannot know the outcome: retrying with the same
/// `Idempotency-Key` is the safe way to find out.
pub fn request_timeout(limit: Duration) -> Problem {
    Problem::new(
        StatusCode::GATEWAY_TIMEOUT,
        "request-timeout",
        "Request timed out",
        format!(
            "the request did not finish within {} ms; its outcome is unknown, retry it with \
             the same Idempotency-Key",
            limit.as_millis()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_plain_token_when_checked_then_it_is_kept() {
        assert!(is_sane_request_id("01J9Z-abc_def.1:2"));
    }

    #[test]
    fn given_an_empty_long_or_odd_id_when_checked_then_it_is_replaced() {
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id(&"a".repeat(MAX_REQUEST_ID_LEN + 1)));
        assert!(!is_sane_request_id("two words"));
        assert!(!is_sane_request_id("a\"b"));
    }

    #[test]
    fn given_a_timeout_when_rendered_then_it_is_a_504_with_a_stable_type() {
        let problem = request_timeout(Duration::from_millis(250));
        assert_eq!(problem.status, 504);
        assert_eq!(problem.kind, "/problems/request-timeout");
        assert!(problem.detail.contains("250 ms"));
    }

    #[test]
    fn given_overload_when_rendered_then_it_is_a_503_with_retry_after() {
        let problem = overloaded();
        assert_eq!(problem.status, 503);
        assert_eq!(problem.retry_after_secs, Some(1));
    }
}

#[cfg(test)]
#[path = "layers_limit_tests.rs"]
mod limit_tests;
