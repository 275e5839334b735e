//! The projector's command line (`projector --help`):
//!
//! - `projector` or `projector run`: serves `/healthz`, `/readyz`, `/metrics` on
//!   `projector.port` and runs every projection (and the process manager) until Ctrl-C or
//!   SIGTERM, committing the batch in hand before it exits;
//! - `projector verify <projection>... | all`: rebuilds each read model from the events table
//!   beside the live one and compares them (see `projections::verify`);
//! - `projector status`: offsets, lag, dead letters, the process manager's outbox and the
//!   relay's checkpoint (see `projections::status`);
//! - `projector dead-letters list | discard`: the events projections set aside.
//!
//! Exit codes: 0 done (and, for `verify`, equal; for `status`, nothing waiting for a person);
//! 1 a difference, dead letters or parked commands, or unknown dead-letter ids; 2 bad usage
//! or an error (database unreachable, bad settings).

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use infra::settings::Settings;
use projections::ReadModel;

/// Settings come from `APP_CONFIG_FILE`, `DATABASE_URL`, `RUST_LOG` and `APP__SECTION__KEY`
/// variables (see the README).
#[derive(Parser)]
#[command(
    name = "projector",
    version,
    about = "Projections, process manager and their operations"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run every projection and the process manager (the default).
    Run,
    /// Rebuild read models from the event store beside the live ones and compare them; exits
    /// 1 if any differs.
    Verify {
        /// Read model names, or `all`.
        #[arg(required = true)]
        projections: Vec<String>,
    },
    /// Offsets, lag and dead letters of every projection, the process manager's outbox and
    /// the relay's checkpoint; exits 1 if dead letters or parked commands wait for a person.
    Status {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The events projections could not apply and set aside.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
}

#[derive(Subcommand)]
enum DeadLetters {
    /// The newest dead letters, newest first.
    List {
        /// Only this projection's.
        #[arg(long)]
        projection: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove dead letters that were dealt with; exits 1 if an id was not there.
    Discard {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command.unwrap_or(Command::Run)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("projector: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    let settings = Settings::load().context("loading settings")?;
    let log = settings.log.clone();
    let ran = match command {
        Command::Run => infra::server::run_service("projector", &log, 0, async {
            serve(settings).await.map(|()| ExitCode::SUCCESS)
        }),
        Command::Verify { projections } => {
            infra::server::run_command("verify", &log, verify(settings, &projections))
        }
        Command::Status { json } => {
            infra::server::run_command("status", &log, status(settings, json))
        }
        Command::DeadLetters(command) => {
            infra::server::run_command("dead-letters", &log, dead_letters(settings, command))
        }
    };
    ran.context("starting the async runtime")?
}

async fn connect(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    infra::db::connect(&settings.database)
        .await
        .context("connecting to the database")
}

async fn verify(settings: Settings, names: &[String]) -> anyhow::Result<ExitCode> {
    let models: Vec<&'static dyn ReadModel> = match names {
        [all] if all == "all" => projections::READ_MODELS.to_vec(),
        names => names
            .iter()
            .map(|n| projections::read_model(n).with_context(|| format!("no read model {n:?}")))
            .collect::<anyhow::Result<_>>()?,
    };
    let pool = connect(&settings).await?;
    let mut all_equal = true;
    for model in models {
        let verification = projections::verify::verify(&pool, model)
            .await
            .with_context(|| format!("verifying {}", model.name()))?;
        print!("{verification}");
        all_equal &= verification.matches();
    }
    pool.close().await;
    Ok(if all_equal {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn status(settings: Settings, json: bool) -> anyhow::Result<ExitCode> {
    let pool = connect(&settings).await?;
    let all = projections::projections(true);
    let status = projections::status::status(&pool, &settings, &all)
        .await
        .context("reading the status")?;
    pool.close().await;
    if json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        print!("{status}");
    }
    Ok(if status.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn dead_letters(settings: Settings, command: DeadLetters) -> anyhow::Result<ExitCode> {
    let pool = connect(&settings).await?;
    let code = match command {
        DeadLetters::List {
            projection,
            limit,
            json,
        } => {
            if let Some(name) = &projection {
                if !projections::projections(true)
                    .iter()
                    .any(|p| p.name() == name)
                {
                    bail!("no projection {name:?}");
                }
            }
            let letters = projections::dead_letters::list(&pool, projection.as_deref(), limit)
                .await
                .context("reading dead letters")?;
            for letter in &letters {
                if json {
                    println!("{}", serde_json::to_string(letter)?);
                } else {
                    println!("{letter}");
                }
            }
            ExitCode::SUCCESS
        }
        DeadLetters::Discard { ids } => {
            let removed = projections::dead_letters::discard(&pool, &ids)
                .await
                .context("discarding dead letters")?;
            let missing: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|id| !removed.contains(id))
                .collect();
            println!("discarded {removed:?}");
            if missing.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("projector: no dead letters {missing:?}");
                ExitCode::FAILURE
            }
        }
    };
    pool.close().await;
    Ok(code)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = projections::startup::build(&settings)
        .await
        .context("starting the projector")?;
    app.run_until(infra::http::shutdown_signal())
        .await
        .context("serving the projector's ops endpoints")
}
