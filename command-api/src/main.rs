//! Reads settings, starts telemetry and runs the command API until Ctrl-C or SIGTERM.

use anyhow::Context;
use infra::settings::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading settings")?;
    infra::telemetry::init_tracing(&settings.log);
    let app = command_api::build(&settings)
        .await
        .context("starting the command API")?;
    app.run_until(infra::http::shutdown_signal())
        .await
        .context("serving the command API")
}
