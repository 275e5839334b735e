//! Operational endpoints and middleware: `/healthz` (the process is up), `/readyz` (its
//! dependencies answer), `/metrics` (Prometheus text), request metrics and shutdown.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use super::Problem;

#[derive(Clone)]
pub struct OpsState {
    pub pool: PgPool,
    pub metrics: PrometheusHandle,
}

impl OpsState {
    /// Readiness checks `pool`; metrics come from the process-wide recorder, which also
    /// reports the pool's use.
    pub fn new(pool: PgPool) -> Self {
        let metrics = crate::telemetry::metrics_handle();
        crate::telemetry::metrics::watch_pool(&pool);
        Self { pool, metrics }
    }
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database set-up failed")]
    Database(#[from] crate::db::DbError),
    #[error("cannot bind {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    /// Settings that cannot work (keys, secrets, clients), found before serving.
    #[error("{what}")]
    Config {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StartupError {
    pub fn config(
        what: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Config {
            what,
            source: Box::new(source),
        }
    }
}

/// Binds `host:port` (port 0: any free port) and reports the address actually bound.
pub async fn bind(
    host: &str,
    port: u16,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), StartupError> {
    let bound = async {
        let listener = tokio::net::TcpListener::bind((host, port)).await?;
        let address = listener.local_addr()?;
        Ok((listener, address))
    };
    bound.await.map_err(|source| StartupError::Bind {
        address: format!("{host}:{port}"),
        source,
    })
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn ops_routes(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the database answers and holds every migration this build embeds: during a
/// rolling update whose migrations run apart (a Kubernetes Job), a new pod that needs a table
/// or column not there yet would answer errors; it waits, unready, until they are.
async fn readyz(State(state): State<OpsState>) -> Response {
    let needed = crate::db::needed_migration();
    let check = crate::db::applied_migration(&state.pool);
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(applied)) if applied >= needed => {
            Json(serde_json::json!({ "status": "ready", "database": "ok" })).into_response()
        }
        Ok(Ok(applied)) => {
            tracing::warn!(
                applied,
                needed,
                "readiness: the database lacks migrations this version needs"
            );
            Problem::unavailable(
                "the database, which lacks migrations this version needs,",
                5,
            )
            .into_response()
        }
        Ok(Err(error)) => {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "readiness: database check failed"
            );
            Problem::unavailable("the database", 2).into_response()
        }
        Err(_) => {
            tracing::warn!("readiness: database check timed out");
            Problem::unavailable("the database", 2).into_response()
        }
    }
}

async fn render_metrics(State(state): State<OpsState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Records `http_requests_total` and `http_request_duration_seconds` by method, matched route
/// and status. Unmatched paths are recorded as `unmatched` and methods outside the standard
/// set as `other`, so that no client can create label values (series) of its own.
pub async fn record_http_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method()).to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The metric label of a request method: one of the standard methods, or `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "other",
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

/// The fallback for paths no route matches: a problem, like every other error.
pub async fn route_not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "route-not-found",
        "Not found",
        "no such route",
    )
}

/// The fallback for a known path with a method it does not serve.
pub async fn method_not_allowed(method: Method) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not allowed on this route"),
    )
}

#[cfg(test)]
mod tests {
    use super::method_label;
    use axum::http::Method;

    #[test]
    fn method_labels_are_a_fixed_set() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        for raw in ["FOO", "get", "X-ANYTHING-0123456789"] {
            let method = Method::from_bytes(raw.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{raw}");
        }
    }
}
