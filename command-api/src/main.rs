//! The command API's command line:
//!
//! - `command-api` or `command-api serve`: the command API (with the event relay, unless
//!   `relay.enabled` is false) until Ctrl-C or SIGTERM;
//! - `command-api relay`: only the relay;
//! - `command-api migrate`: applies pending database migrations and exits (a deployment's
//!   separate migration step; the services then run with `database.migrate_on_start=false`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use infra::settings::Settings;

/// glibc's allocator contends on its arena locks under many small concurrent allocations
/// (JSON, headers); mimalloc is the usual remedy.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Settings come from `APP_CONFIG_FILE` and `APP__SECTION__KEY` variables (see the README).
#[derive(Parser)]
#[command(
    name = "command-api",
    version,
    about = "Command API and event relay of the commerce backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// Serve the command API (the default), with the relay unless `relay.enabled` is false.
    Serve,
    /// Run only the event relay.
    Relay,
    /// Apply pending database migrations, then exit.
    Migrate,
}

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    let settings = Settings::load().context("loading settings")?;
    let service = match command {
        Command::Serve => "command-api",
        Command::Relay => "relay",
        Command::Migrate => "migrate",
    };
    let threads = settings.command_api.worker_threads;
    infra::server::run_service(service, &settings.log, threads, async {
        let app = match command {
            Command::Migrate => return migrate(&settings).await,
            Command::Relay => command_api::build_relay_only(&settings).await,
            Command::Serve => command_api::build(&settings).await,
        }
        .context("starting the command API")?;
        app.run_until(infra::http::shutdown_signal())
            .await
            .context("serving the command API")
    })
    .context("starting the async runtime")?
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = infra::db::pool(&settings.database).context("configuring the database pool")?;
    infra::db::migrate(&pool)
        .await
        .context("applying the migrations")?;
    pool.close().await;
    tracing::info!("migrations applied");
    Ok(())
}
