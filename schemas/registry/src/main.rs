//! The schema registry's command line: `schema-registry` or `schema-registry serve` reads
//! settings, starts telemetry and serves the Confluent-compatible API on
//! `schema_registry.port` (8085) until Ctrl-C or SIGTERM.

use anyhow::Context;
use infra::settings::Settings;

fn main() -> anyhow::Result<()> {
    infra::server::serve_only_command_line(
        "schema-registry",
        "Confluent-compatible schema registry",
    );
    let settings = Settings::load().context("loading settings")?;
    let threads = 0;
    infra::server::run_service("schema-registry", &settings.log, threads, async {
        let app = schema_registry::service::build(&settings)
            .await
            .context("starting the schema registry")?;
        app.run_until(infra::http::shutdown_signal())
            .await
            .context("serving the schema registry")
    })
    .context("starting the async runtime")?
}
