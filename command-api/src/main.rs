//! Reads settings, starts telemetry and runs the command API until Ctrl-C or SIGTERM.

use anyhow::Context;
use infra::settings::Settings;

/// glibc's allocator contends on its arena locks under many small concurrent allocations
/// (JSON, headers); mimalloc is the usual remedy.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading settings")?;
    infra::telemetry::init_tracing(&settings.log);
    infra::runtime(settings.command_api.worker_threads)
        .context("starting the async runtime")?
        .block_on(async {
            let app = command_api::build(&settings)
                .await
                .context("starting the command API")?;
            app.run_until(infra::http::shutdown_signal())
                .await
                .context("serving the command API")
        })
}
