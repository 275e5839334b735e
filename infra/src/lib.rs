//! Infrastructure shared by the services: settings, telemetry, the PostgreSQL pool and its
//! migrations, the event store, and the HTTP pieces every service exposes (problem responses,
//! health, readiness, metrics) and the service skeleton all four binaries run on ([`server`]).
#![forbid(unsafe_code)]

pub mod audit_export;
pub mod auth;
pub mod db;
pub mod event_store;
pub mod http;
pub mod kafka;
pub mod memory;
pub mod out;
pub mod progress;
pub mod server;
pub mod settings;
pub mod telemetry;

pub use secrecy;

/// A multi-threaded Tokio runtime with `worker_threads` threads (0: one per CPU core).
pub fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if worker_threads > 0 {
        builder.worker_threads(worker_threads);
    }
    builder.enable_all().build()
}

/// The full `source()` chain of an error on one line, for logs and stored diagnostics.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The message a panic was raised with (`panic!("...")`, `unwrap` and the like carry text;
/// another payload is named as such).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".to_owned())
}

/// `work`'s output, or the message of the panic it raised: for a task that must outlive a bug
/// in the code it runs (left to unwind, a panic ends the task for good). The task's state is
/// not inspected after a panic, only dropped or started again.
pub async fn unless_panics<F: std::future::Future>(work: F) -> Result<F::Output, String> {
    futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(work))
        .await
        .map_err(|panic| panic_message(panic.as_ref()))
}
