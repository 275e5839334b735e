//! The query API's command line: `query-api` or `query-api serve` reads settings, starts
//! telemetry and serves the query API until Ctrl-C or SIGTERM.

use anyhow::Context;
use infra::settings::Settings;

/// Many small allocations per request (JSON, headers) from every worker: see the command API.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    infra::server::serve_only_command_line("query-api", "Read endpoints of the commerce backend");
    infra::memory::use_small_pages_or_warn("query-api");
    let settings = Settings::load().context("loading settings")?;
    let threads = settings.query_api.worker_threads;
    infra::server::run_service("query-api", &settings.log, threads, async {
        let app = query_api::build(&settings)
            .await
            .context("starting the query API")?;
        app.run_until(infra::http::shutdown_signal())
            .await
            .context("serving the query API")
    })
    .context("starting the async runtime")?
}
