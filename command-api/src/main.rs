//! Reads settings, starts telemetry and runs the command API (with the event relay, unless
//! `relay.enabled` is false) until Ctrl-C or SIGTERM. `command-api relay` runs only the relay.

use anyhow::Context;
use infra::settings::Settings;

/// glibc's allocator contends on its arena locks under many small concurrent allocations
/// (JSON, headers); mimalloc is the usual remedy.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading settings")?;
    infra::telemetry::init_tracing(&settings.log);
    let relay_only = std::env::args().nth(1).as_deref() == Some("relay");
    infra::server::block_on(settings.command_api.worker_threads, async {
        let app = if relay_only {
            command_api::build_relay_only(&settings).await
        } else {
            command_api::build(&settings).await
        }
        .context("starting the command API")?;
        app.run_until(infra::http::shutdown_signal())
            .await
            .context("serving the command API")
    })
    .context("starting the async runtime")?
}
