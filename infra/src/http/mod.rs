//! HTTP pieces every service shares: RFC 9457 problem responses, `/healthz`, `/readyz`,
//! `/metrics`, a request-metrics middleware and the graceful-shutdown signal.

mod ops;
mod problem;

pub use ops::{bind, ops_routes, record_http_metrics, shutdown_signal, OpsState};
pub use problem::{FieldProblem, Problem};
