//! The command API's command line:
//!
//! - `command-api` or `command-api serve`: the command API (with the event relay, unless
//!   `relay.enabled` is false) until Ctrl-C or SIGTERM;
//! - `command-api relay`: only the relay;
//! - `command-api migrate`: applies pending database migrations and exits (a deployment's
//!   separate migration step; the services then run with `database.migrate_on_start=false`);
//! - `command-api relay-checkpoint show | reset --to <position>`: what the relay has
//!   published; moving its checkpoint back so that it publishes again from an event on
//!   (refused while a relay runs, and never forward; see `relay::checkpoint`).
//!
//! Exit codes: 0 done; 1 a refused reset; 2 bad usage or an error.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use infra::settings::Settings;

/// glibc's allocator contends on its arena locks under many small concurrent allocations
/// (JSON, headers); mimalloc is the usual remedy.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Settings come from `APP_CONFIG_FILE`, `DATABASE_URL`, `RUST_LOG` and `APP__SECTION__KEY`
/// variables (see the README).
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

#[derive(Subcommand)]
enum Command {
    /// Serve the command API (the default), with the relay unless `relay.enabled` is false.
    Serve,
    /// Run only the event relay.
    Relay,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// The relay's checkpoint (`relay.name` picks the relay).
    #[command(subcommand)]
    RelayCheckpoint(Checkpoint),
}

#[derive(Subcommand)]
enum Checkpoint {
    /// Where the relay is, what it has still to publish, and whether one is running.
    Show {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Publish again from the event at a global position on (0: from the first event).
    /// Refused while a relay runs, and never forward.
    Reset {
        #[arg(long)]
        to: i64,
    },
}

fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    if matches!(command, Command::Serve | Command::Relay) {
        infra::memory::use_small_pages_or_warn("command-api");
    }
    match run(command) {
        Ok(code) => code,
        Err(error) => {
            infra::errln!("command-api: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    let settings = Settings::load().context("loading settings")?;
    let (service, relay_only) = match command {
        Command::Serve => ("command-api", false),
        Command::Relay => ("relay", true),
        Command::Migrate => {
            return infra::server::run_command("migrate", &settings.log, migrate(&settings))
                .context("starting the async runtime")?
                .map(|()| ExitCode::SUCCESS)
        }
        Command::RelayCheckpoint(command) => {
            return infra::server::run_command(
                "relay-checkpoint",
                &settings.log,
                checkpoint(&settings, command),
            )
            .context("starting the async runtime")?
        }
    };
    let threads = settings.command_api.worker_threads;
    infra::server::run_service(service, &settings.log, threads, async {
        let app = if relay_only {
            command_api::build_relay_only(&settings).await
        } else {
            command_api::build(&settings).await
        }
        .context("starting the command API")?;
        app.run_until(infra::http::shutdown_signal())
            .await
            .context("serving the command API")?;
        Ok(ExitCode::SUCCESS)
    })
    .context("starting the async runtime")?
}

async fn checkpoint(settings: &Settings, command: Checkpoint) -> anyhow::Result<ExitCode> {
    let pool = infra::db::connect(&settings.database)
        .await
        .context("connecting to the database")?;
    let name = &settings.relay.name;
    let code = match command {
        Checkpoint::Show { json } => {
            let report = relay::checkpoint::show(&pool, name)
                .await
                .context("reading the relay checkpoint")?;
            if json {
                infra::outln!("{}", serde_json::to_string(&report)?);
            } else {
                infra::out!("{report}");
            }
            ExitCode::SUCCESS
        }
        Checkpoint::Reset { to } => match relay::checkpoint::reset(&pool, name, to).await {
            Ok((before, after)) => {
                infra::outln!(
                    "relay {name}: checkpoint moved from position {} to {}; the events after it are \
                     published again when the relay starts",
                    before.global_position, after.global_position
                );
                ExitCode::SUCCESS
            }
            Err(relay::checkpoint::ResetError::Database(error)) => {
                return Err(error).context("resetting the relay checkpoint")
            }
            Err(refused) => {
                infra::errln!("command-api: {refused}");
                ExitCode::FAILURE
            }
        },
    };
    pool.close().await;
    Ok(code)
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
