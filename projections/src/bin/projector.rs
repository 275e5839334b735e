//! The projector's command line (`projector --help`):
//!
//! - `projector` or `projector run`: serves `/healthz`, `/readyz`, `/metrics` on
//!   `projector.port` and runs every projection (and the process manager) until Ctrl-C or
//!   SIGTERM, committing the batch in hand before it exits;
//! - `projector verify <projection>... | all`: rebuilds each read model from the events table
//!   beside the live one and compares them (see `projections::verify`);
//! - `projector replay <projection>... | all [--from store | kafka]`, `rollback <projection>`,
//!   `prune [<projection>... | all]`: rebuilds beside the live set and swaps in with no
//!   downtime, swaps the replaced set back, drops it (see `projections::replay`); `prune`
//!   also drops what such work whose process died left behind (see `projections::lease`);
//! - `projector replay <projection>... | all --as-of <position | time> [--name N]`, `as-of
//!   list | drop <name>...`: read-only sets of what read models said at a point of the log,
//!   served by the query API with `?as_of=<name>` (see `projections::replay::as_of`);
//! - `projector status`: offsets, lag, dead letters, the process manager's outbox and the
//!   relay's checkpoint (see `projections::status`);
//! - `projector outbox list | retry`: the process manager's parked commands;
//! - `projector dead-letters list | discard | retry`: the events projections set aside, and
//!   applying them again (see `projections::dead_letters::retry`);
//! - `projector audit-export --format jsonl|csv --out FILE`: the audit log (every event with
//!   its metadata, in log order) to a file, filtered like `GET /v1/audit/export` and resumable
//!   by position (`--resume` appends after the file's last record), with progress on
//!   standard error.
//!
//! Exit codes: 0 done (and, for `verify`, equal; for `status`, nothing waiting for a person);
//! 1 a difference, dead letters or parked commands, unknown dead-letter ids or a dead letter a
//! retry did not apply; 2 bad usage
//! or an error (database unreachable, bad settings).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use infra::settings::Settings;
use projections::ReadModel;

#[path = "projector/audit_export.rs"]
mod audit_export;
#[path = "projector/operations.rs"]
mod operations;
#[path = "projector/replay.rs"]
mod replay;

use audit_export::AuditExport;
use operations::{DeadLetters, Outbox};

/// A replay folds a million events through small allocations (JSON values, strings): glibc's
/// allocator took a quarter of its CPU in a profile; mimalloc, as the APIs use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// 1 if any differs, or lacks events older than `--grace`.
    Verify {
        /// Read model names, or `all`.
        #[arg(required = true)]
        projections: Vec<String>,
        /// Events recorded at least this many seconds before the check that the live model has
        /// not applied (nor set aside as a dead letter) count as missing from it: at the
        /// default, a projector more than ten minutes behind also fails the check.
        #[arg(long, default_value_t = 600, value_name = "SECONDS")]
        grace: u64,
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
    /// The process manager's parked commands: list them, or send them again.
    #[command(subcommand)]
    Outbox(Outbox),
    /// Export the audit log (every event with its metadata, in log order) to a file.
    AuditExport(AuditExport),
    /// Rebuild read models from the event store beside the live ones and swap them in, with
    /// no downtime; the replaced set is kept for `rollback` until `prune`.
    Replay {
        /// Read model names, or `all`.
        #[arg(required = true)]
        projections: Vec<String>,
        /// Build a read-only set of what they said at this global position or RFC 3339 time
        /// instead (served with `?as_of=<name>`); the live set is not touched.
        #[arg(long, value_name = "POSITION|TIME")]
        as_of: Option<projections::replay::as_of::Bound>,
        /// The as-of set's name (default `pos-<position>` or `at-<time>`).
        #[arg(long, requires = "as_of")]
        name: Option<String>,
        /// Where the first pass reads the log: the event store, or the models' Kafka topics
        /// (the catch-up reads the event store either way).
        #[arg(long, value_enum, default_value_t = From::Store, conflicts_with = "as_of")]
        from: From,
    },
    /// The as-of sets `replay --as-of` built.
    #[command(subcommand)]
    AsOf(replay::AsOf),
    /// Swap the set a replay replaced back in (brought up to date first).
    Rollback { projection: String },
    /// Drop the set a replay replaced (no rollback after this); first, and with no read model
    /// named only, drop what replays, rollbacks, as-of builds and verifies whose process died
    /// left behind.
    Prune {
        /// Read model names, or `all`.
        projections: Vec<String>,
    },
}

/// Where `replay` reads the log.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum From {
    Store,
    Kafka,
}

fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(Command::Run);
    if matches!(command, Command::Run) {
        infra::memory::use_small_pages_or_warn("projector");
    }
    match run(command) {
        Ok(code) => code,
        Err(error) => {
            infra::errln!("projector: {error:#}");
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
        Command::Verify { projections, grace } => infra::server::run_command(
            "verify",
            &log,
            verify(settings, &projections, Duration::from_secs(grace)),
        ),
        Command::Status { json } => {
            infra::server::run_command("status", &log, operations::status(settings, json))
        }
        Command::DeadLetters(command) => infra::server::run_command(
            "dead-letters",
            &log,
            operations::dead_letters(settings, command),
        ),
        Command::Outbox(command) => {
            infra::server::run_command("outbox", &log, operations::outbox(settings, command))
        }
        Command::AuditExport(args) => infra::server::run_command(
            "audit-export",
            &log,
            audit_export::audit_export(settings, args),
        ),
        Command::Replay {
            projections,
            as_of: None,
            from,
            ..
        } => infra::server::run_command(
            "replay",
            &log,
            replay::replay(settings, &projections, from == From::Kafka),
        ),
        Command::Replay {
            projections,
            as_of: Some(bound),
            name,
            ..
        } => infra::server::run_command(
            "replay",
            &log,
            replay::as_of(settings, &projections, bound, name),
        ),
        Command::AsOf(command) => {
            infra::server::run_command("as-of", &log, replay::as_of_sets(settings, command))
        }
        Command::Rollback { projection } => {
            infra::server::run_command("rollback", &log, replay::rollback(settings, &projection))
        }
        Command::Prune { projections } => {
            infra::server::run_command("prune", &log, replay::prune(settings, &projections))
        }
    };
    ran.context("starting the async runtime")?
}

async fn connect(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    infra::db::connect(&settings.database)
        .await
        .context("connecting to the database")
}

/// The read models `names` name (`all`: every one), each once, in the order first named: a
/// model named twice was replayed twice, and the second swap dropped the set the first had
/// kept for `rollback`, while its name was still printed.
fn models(names: &[String]) -> anyhow::Result<Vec<&'static dyn ReadModel>> {
    match names {
        [all] if all == "all" => Ok(projections::READ_MODELS.to_vec()),
        names => {
            let mut models: Vec<&'static dyn ReadModel> = Vec::new();
            for name in names {
                let model = projections::read_model(name)
                    .with_context(|| format!("no read model {name:?}"))?;
                if !models.iter().any(|m| m.name() == model.name()) {
                    models.push(model);
                }
            }
            Ok(models)
        }
    }
}

async fn verify(settings: Settings, names: &[String], grace: Duration) -> anyhow::Result<ExitCode> {
    let models = models(names)?;
    let pool = connect(&settings).await?;
    let lease = replay::take_lease(&pool).await?;
    let mut all_equal = true;
    for model in models {
        let verification = projections::verify::verify(&pool, &lease, model, grace)
            .await
            .with_context(|| format!("verifying {}", model.name()))?;
        infra::out!("{verification}");
        all_equal &= verification.matches();
    }
    lease.release().await;
    pool.close().await;
    Ok(if all_equal {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = projections::startup::build(&settings)
        .await
        .context("starting the projector")?;
    app.run_until(infra::http::shutdown_signal())
        .await
        .context("serving the projector's ops endpoints")
}
