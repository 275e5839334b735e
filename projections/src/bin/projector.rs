//! The projector's command line (`projector --help`):
//!
//! - `projector` or `projector run`: serves `/healthz`, `/readyz`, `/metrics` on
//!   `projector.port` and runs every projection (and the process manager) until Ctrl-C or
//!   SIGTERM, committing the batch in hand before it exits;
//! - `projector verify <projection>... | all`: rebuilds each read model from the events table
//!   beside the live one and compares them (see `projections::verify`);
//! - `projector replay <projection>... | all`, `rollback <projection>`, `prune <projection>...
//!   | all`: rebuilds beside the live set and swaps in with no downtime, swaps the replaced set
//!   back, drops it (see `projections::replay`);
//! - `projector status`: offsets, lag, dead letters, the process manager's outbox and the
//!   relay's checkpoint (see `projections::status`);
//! - `projector dead-letters list | discard`: the events projections set aside;
//! - `projector audit-export --format jsonl|csv --out FILE`: the audit log (every event with
//!   its metadata, in log order) to a file, filtered like `GET /v1/audit/export` and resumable
//!   by position (`--resume` appends after the file's last record), with progress on
//!   standard error.
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
    /// Export the audit log (every event with its metadata, in log order) to a file.
    AuditExport(AuditExport),
    /// Rebuild read models from the event store beside the live ones and swap them in, with
    /// no downtime; the replaced set is kept for `rollback` until `prune`.
    Replay {
        /// Read model names, or `all`.
        #[arg(required = true)]
        projections: Vec<String>,
    },
    /// Swap the set a replay replaced back in (brought up to date first).
    Rollback { projection: String },
    /// Drop the set a replay replaced (no rollback after this).
    Prune {
        /// Read model names, or `all`.
        #[arg(required = true)]
        projections: Vec<String>,
    },
}

#[derive(clap::Args)]
struct AuditExport {
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// The file to write (created, or with `--resume` appended to).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Only `user`, `order` or `payment` events.
    #[arg(long)]
    aggregate_type: Option<String>,
    /// Events that occurred at or after this instant (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    from: Option<chrono::DateTime<chrono::Utc>>,
    /// Events that occurred before this instant (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    to: Option<chrono::DateTime<chrono::Utc>>,
    /// Start after this global position.
    #[arg(long, conflicts_with = "resume")]
    after_position: Option<i64>,
    /// Append to an existing export after its last record.
    #[arg(long)]
    resume: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180 CSV with a header; the payload column is JSON.
    Csv,
}

fn rfc3339(raw: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|at| at.with_timezone(&chrono::Utc))
        .map_err(|e| format!("not an RFC 3339 date-time: {e}"))
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
        Command::AuditExport(args) => {
            infra::server::run_command("audit-export", &log, audit_export(settings, args))
        }
        Command::Replay { projections } => {
            infra::server::run_command("replay", &log, replay(settings, &projections))
        }
        Command::Rollback { projection } => {
            infra::server::run_command("rollback", &log, rollback(settings, &projection))
        }
        Command::Prune { projections } => {
            infra::server::run_command("prune", &log, prune(settings, &projections))
        }
    };
    ran.context("starting the async runtime")?
}

async fn connect(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    infra::db::connect(&settings.database)
        .await
        .context("connecting to the database")
}

/// The read models `names` name (`all`: every one).
fn models(names: &[String]) -> anyhow::Result<Vec<&'static dyn ReadModel>> {
    match names {
        [all] if all == "all" => Ok(projections::READ_MODELS.to_vec()),
        names => names
            .iter()
            .map(|n| projections::read_model(n).with_context(|| format!("no read model {n:?}")))
            .collect(),
    }
}

async fn replay(settings: Settings, names: &[String]) -> anyhow::Result<ExitCode> {
    let models = models(names)?;
    let pool = connect(&settings).await?;
    let mut clean = true;
    for model in models {
        let total: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = ANY($1)")
                .bind(model.aggregates())
                .fetch_one(&pool)
                .await?;
        let mut progress = infra::progress::Progress::new("replay", total as u64);
        let report = projections::replay::replay(&pool, model, &mut |n| progress.advance(n))
            .await
            .with_context(|| format!("replaying {}", model.name()))?;
        progress.finish();
        println!(
            "{}: rebuilt from {} events and swapped in; the replaced tables are in {} \
             (projector rollback {} | prune {})",
            model.name(),
            report.events,
            report.previous_schema,
            model.name(),
            model.name()
        );
        for (event, error) in &report.failed {
            println!("  could not apply event {event}: {error}");
        }
        clean &= report.failed.is_empty();
    }
    pool.close().await;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn rollback(settings: Settings, name: &str) -> anyhow::Result<ExitCode> {
    let model = projections::read_model(name).with_context(|| format!("no read model {name:?}"))?;
    let pool = connect(&settings).await?;
    let mut progress = infra::progress::Progress::new("rollback", 0);
    let result = projections::replay::rollback(&pool, model, &mut |n| progress.advance(n)).await;
    progress.finish();
    pool.close().await;
    match result {
        Ok(report) => {
            println!(
                "{name}: the previous tables are live again ({} events caught up); the replaced \
                 ones are in {}",
                report.events, report.previous_schema
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(projections::replay::ReplayError::NoPrevious(_)) => {
            eprintln!("projector: {name} has no previous table set");
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error).context("rolling back"),
    }
}

async fn prune(settings: Settings, names: &[String]) -> anyhow::Result<ExitCode> {
    let models = models(names)?;
    let pool = connect(&settings).await?;
    for model in models {
        let dropped = projections::replay::prune(&pool, model)
            .await
            .with_context(|| format!("pruning {}", model.name()))?;
        println!(
            "{}: {}",
            model.name(),
            if dropped {
                "previous tables dropped"
            } else {
                "no previous tables"
            }
        );
    }
    pool.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn verify(settings: Settings, names: &[String]) -> anyhow::Result<ExitCode> {
    let models = models(names)?;
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

async fn audit_export(settings: Settings, args: AuditExport) -> anyhow::Result<ExitCode> {
    use infra::audit_export::{self as export, Filter};
    use std::io::Write;
    if let Some(kind) = &args.aggregate_type {
        if !export::AGGREGATE_TYPES.contains(&kind.as_str()) {
            bail!("--aggregate-type must be user, order or payment");
        }
    }
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from >= to {
            bail!("--from must be before --to");
        }
    }
    let existing = if args.resume {
        std::fs::read_to_string(&args.out).unwrap_or_default()
    } else {
        String::new()
    };
    let mut after = match (args.resume, args.after_position) {
        (true, _) => export::last_position(&existing).unwrap_or(0),
        (false, Some(n)) if n >= 0 => n,
        (false, Some(_)) => bail!("--after-position must be 0 or more"),
        (false, None) => 0,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(args.resume)
        .truncate(!args.resume)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    let mut out = std::io::BufWriter::new(file);
    if args.format == Format::Csv && existing.trim().is_empty() {
        write!(out, "{}\r\n", export::CSV_HEADER)?;
    }
    let pool = connect(&settings).await?;
    let filter = Filter {
        aggregate_type: args.aggregate_type,
        from: args.from,
        to: args.to,
    };
    let total = export::count(&pool, &filter, after).await?;
    let mut progress = infra::progress::Progress::new("audit-export", total as u64);
    loop {
        let page = export::page(&pool, &filter, after, export::PAGE)
            .await
            .context("reading the audit log")?;
        let Some(last) = page.last() else { break };
        after = last.global_position;
        for entry in &page {
            let line = match args.format {
                Format::Jsonl => entry.json_line(),
                Format::Csv => entry.csv_line(),
            };
            out.write_all(line.as_bytes())?;
        }
        progress.advance(page.len() as u64);
    }
    out.flush()?;
    pool.close().await;
    let written = progress.finish();
    println!(
        "wrote {written} entries to {}; the last is at position {after}",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = projections::startup::build(&settings)
        .await
        .context("starting the projector")?;
    app.run_until(infra::http::shutdown_signal())
        .await
        .context("serving the projector's ops endpoints")
}
