//! The one service skeleton the command API, query API, schema registry and projector share.
//!
//! A service's `build(settings)` connects, assembles its routes and calls [`Service::bind`];
//! `main` and the tests then call [`Service::run_until`]. What every service gets:
//!
//! - a listener on `host:port` (port 0 picks a free port; [`Service::address`] reports it),
//!   with `TCP_NODELAY` on every connection;
//! - `/healthz`, `/readyz`, `/metrics`, and 404/405 problem fallbacks;
//! - the layers of [`layers`]: request id, trace span, HTTP metrics, catch-panic, concurrency
//!   limit, request timeout;
//! - background tasks registered with [`Service::background`] or [`Service::task`], started
//!   when serving starts and stopped, in registration order, after the server has drained;
//! - shutdown with a deadline: once `shutdown` resolves the listener stops accepting and
//!   in-flight requests drain; the deadline (`http.shutdown_deadline_ms`) bounds the drain,
//!   the background tasks' stop hooks and the pool's close together. Whatever is still
//!   running when it passes is abandoned and logged, so a stuck dependency can never keep the
//!   process from exiting.

pub mod layers;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::serve::ListenerExt;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::http::{method_not_allowed, ops_routes, route_not_found, OpsState, StartupError};
use crate::settings::HttpSettings;

pub use layers::{RequestId, REQUEST_ID};

/// What a started background task leaves behind: the future that stops it.
pub type StopHook = Pin<Box<dyn Future<Output = ()> + Send>>;
type Start = Box<dyn FnOnce() -> StopHook + Send>;

/// A bound, not yet serving service.
pub struct Service {
    name: &'static str,
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    pool: PgPool,
    shutdown_deadline: Duration,
    background: Vec<(&'static str, Start)>,
}

impl Service {
    /// Binds `host:port` and wraps `routes` (state applied) with the ops routes, the
    /// fallbacks and the skeleton's layers. `name` appears in the service's logs.
    pub async fn bind(
        name: &'static str,
        host: &str,
        port: u16,
        http: &HttpSettings,
        pool: PgPool,
        routes: Router,
    ) -> Result<Self, StartupError> {
        let (listener, address) = crate::http::bind(host, port).await?;
        let router = routes
            .merge(ops_routes(OpsState::new(pool.clone())))
            .fallback(route_not_found)
            .method_not_allowed_fallback(method_not_allowed);
        Ok(Self {
            name,
            listener,
            address,
            router: layers::apply(router, http),
            pool,
            shutdown_deadline: Duration::from_millis(http.shutdown_deadline_ms),
            background: Vec::new(),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Registers a background task: `start` runs when serving starts and returns the hook
    /// that stops it at shutdown (within the shutdown deadline).
    pub fn background<F, S>(mut self, name: &'static str, start: F) -> Self
    where
        F: FnOnce() -> S + Send + 'static,
        S: Future<Output = ()> + Send + 'static,
    {
        self.background
            .push((name, Box::new(move || Box::pin(start()) as StopHook)));
        self
    }

    /// Registers a future to spawn when serving starts and to abort at shutdown: for work
    /// with nothing to finish (periodic clean-ups, listeners that resume by themselves).
    pub fn task<F>(self, name: &'static str, task: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.background(name, move || {
            let handle = tokio::spawn(task);
            async move { handle.abort() }
        })
    }

    /// Serves until `shutdown` resolves, then drains, stops the background tasks and closes
    /// the pool, all within the shutdown deadline.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let name = self.name;
        let grace = self.shutdown_deadline;
        let stops: Vec<_> = self
            .background
            .into_iter()
            .map(|(task, start)| (task, start()))
            .collect();
        tracing::info!(service = name, address = %self.address, "listening");
        // Responses are small and written whole; Nagle's algorithm would only delay them.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let (signalled, on_signal) = tokio::sync::oneshot::channel::<Instant>();
        // The peer address reaches handlers as `ConnectInfo` (per-address login limits).
        let app = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!(service = name, "shutting down; draining in-flight requests");
                let _ = signalled.send(Instant::now() + grace);
            })
            .into_future();
        let (result, deadline) = drain(name, serve, on_signal).await;
        stop_all(name, stops, self.pool, deadline).await;
        tracing::info!(service = name, "stopped");
        result
    }
}

/// Runs the server until it has drained or the shutdown deadline (sent once the signal
/// came) has passed; returns the server's result and the deadline.
async fn drain(
    name: &'static str,
    serve: impl Future<Output = std::io::Result<()>>,
    mut on_signal: tokio::sync::oneshot::Receiver<Instant>,
) -> (std::io::Result<()>, Instant) {
    tokio::pin!(serve);
    let deadline = tokio::select! {
        result = &mut serve => {
            // Drained in time; the deadline still bounds the stop hooks and the pool.
            let deadline = on_signal.try_recv().unwrap_or_else(|_| Instant::now());
            return (result, deadline);
        }
        sent = &mut on_signal => match sent {
            Ok(deadline) => deadline,
            // The server's shutdown future was dropped unsent: nothing left to bound.
            Err(_) => return (serve.await, Instant::now()),
        },
    };
    tokio::select! {
        result = &mut serve => (result, deadline),
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!(service = name, "in-flight requests did not finish by the shutdown deadline; abandoned");
            (Ok(()), deadline)
        }
    }
}

/// Runs every stop hook in order, then closes the pool, each bounded by `deadline`. A hook is
/// polled at least once even when the deadline has passed, so every task is told to stop.
async fn stop_all(
    name: &'static str,
    stops: Vec<(&'static str, StopHook)>,
    pool: PgPool,
    deadline: Instant,
) {
    for (task, stop) in stops {
        if tokio::time::timeout_at(deadline, stop).await.is_err() {
            tracing::warn!(
                service = name,
                task,
                "background task did not stop by the shutdown deadline; abandoned"
            );
        }
    }
    if tokio::time::timeout_at(deadline, pool.close())
        .await
        .is_err()
    {
        tracing::warn!(
            service = name,
            "database pool did not close by the shutdown deadline"
        );
    }
}

/// Builds a multi-threaded runtime (`worker_threads`, 0: one per core), runs `main` on it and
/// shuts it down without waiting on blocking work left behind by abandoned tasks: the
/// shutdown deadline has already been spent by then.
pub fn block_on<T>(worker_threads: usize, main: impl Future<Output = T>) -> std::io::Result<T> {
    let runtime = crate::runtime(worker_threads)?;
    let out = runtime.block_on(main);
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(out)
}

/// [`block_on`] for a service's `main`: starts telemetry (logs, span export when configured,
/// `build_info`) inside the runtime, runs `main`, then flushes buffered spans.
pub fn run_service<T>(
    service: &'static str,
    log: &crate::settings::LogSettings,
    worker_threads: usize,
    main: impl Future<Output = T>,
) -> std::io::Result<T> {
    block_on(worker_threads, async {
        let telemetry = crate::telemetry::init(service, log);
        crate::telemetry::metrics::record_build_info(service);
        let out = main.await;
        telemetry.shutdown().await;
        out
    })
}

/// [`block_on`] for a command-line operation (migrate, status, ...): telemetry as for a
/// service, but logs on standard error and no `build_info`.
pub fn run_command<T>(
    name: &'static str,
    log: &crate::settings::LogSettings,
    main: impl Future<Output = T>,
) -> std::io::Result<T> {
    block_on(0, async {
        let telemetry = crate::telemetry::init_for_command(name, log);
        let out = main.await;
        telemetry.shutdown().await;
        out
    })
}

/// The command line of a binary whose only command is `serve` (also the default): parses the
/// arguments, so that `--help`, `--version` and bad usage (exit code 2) behave as in the other
/// binaries.
pub fn serve_only_command_line(name: &'static str, about: &'static str) {
    clap::Command::new(name)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .after_help(
            "Settings come from APP_CONFIG_FILE, DATABASE_URL, RUST_LOG and APP__SECTION__KEY \
             variables (see the README).",
        )
        .subcommand(clap::Command::new("serve").about("Serve (the default)"))
        .get_matches();
}
