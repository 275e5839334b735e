//! HTTP pieces every service shares: RFC 9457 problem responses, `/healthz`, `/readyz`,
//! `/metrics`, a request-metrics middleware, the graceful-shutdown signal, and which address a
//! request came from behind trusted proxies.

mod client_address;
pub mod openapi;
mod ops;
mod problem;

pub use client_address::{TrustedProxies, TrustedProxiesError};
pub use ops::{
    bind, method_not_allowed, ops_routes, record_http_metrics, route_not_found, shutdown_signal,
    OpsState, StartupError,
};
pub use problem::{problem_code, FieldProblem, Problem, PROBLEM_PREFIX};
