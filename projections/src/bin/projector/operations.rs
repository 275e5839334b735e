//! `projector status` and `projector dead-letters list | discard | retry`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use infra::settings::Settings;

use crate::connect;

#[derive(Subcommand)]
pub enum DeadLetters {
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
    /// Apply dead letters again once their cause is gone, and remove those applied; exits 1
    /// if one stays (refused, failed again) or was not there.
    Retry {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}

/// `projector outbox`: the process manager's commands that wait for a person.
#[derive(Subcommand)]
pub enum Outbox {
    /// The parked commands (past their retry budget, or called malformed), oldest first, with
    /// the last error each got.
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make parked commands pending again with a fresh retry budget, once what made them fail
    /// is mended; they are sent under their first idempotency keys, so none applies twice.
    /// Exits 1 if an id was not parked.
    Retry {
        /// Parked command ids (from `list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Every parked command.
        #[arg(long)]
        all: bool,
    },
}

pub async fn outbox(settings: Settings, command: Outbox) -> anyhow::Result<ExitCode> {
    use projections::process_manager::outbox;
    let pool = connect(&settings).await?;
    let code = match command {
        Outbox::List { limit, json } => {
            let parked = outbox::list_parked(&pool, limit)
                .await
                .context("reading the parked commands")?;
            for row in &parked {
                match json {
                    true => infra::outln!("{}", serde_json::to_string(row)?),
                    false => infra::outln!("{row}"),
                }
            }
            ExitCode::SUCCESS
        }
        Outbox::Retry { ids, all } => {
            tracing::info!(actor = %actor(), ?ids, all, "retrying parked commands");
            let mut missing = Vec::new();
            let mut reset = 0;
            let targets: Vec<Option<i64>> = match all {
                true => vec![None],
                false => ids.iter().copied().map(Some).collect(),
            };
            for id in targets {
                let n = outbox::retry_parked(&pool, id)
                    .await
                    .context("making parked commands pending")?;
                reset += n;
                if n == 0 {
                    missing.extend(id);
                }
            }
            infra::outln!("made {reset} parked commands pending again");
            match missing.is_empty() {
                true => ExitCode::SUCCESS,
                false => {
                    infra::errln!("projector: no parked commands {missing:?}");
                    ExitCode::FAILURE
                }
            }
        }
    };
    pool.close().await;
    Ok(code)
}

/// Who runs the command, for the log: the operating-system user.
fn actor() -> String {
    std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned())
}

pub async fn status(settings: Settings, json: bool) -> anyhow::Result<ExitCode> {
    let pool = connect(&settings).await?;
    let all = projections::projections(true);
    let status = projections::status::status(&pool, &settings, &all)
        .await
        .context("reading the status")?;
    pool.close().await;
    if json {
        infra::outln!("{}", serde_json::to_string(&status)?);
    } else {
        infra::out!("{status}");
    }
    Ok(if status.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn dead_letters(settings: Settings, command: DeadLetters) -> anyhow::Result<ExitCode> {
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
                    infra::outln!("{}", serde_json::to_string(letter)?);
                } else {
                    infra::outln!("{letter}");
                }
            }
            ExitCode::SUCCESS
        }
        DeadLetters::Discard { ids } => {
            tracing::info!(actor = %actor(), ?ids, "discarding dead letters");
            let removed = projections::dead_letters::discard(&pool, &ids)
                .await
                .context("discarding dead letters")?;
            let missing: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|id| !removed.contains(id))
                .collect();
            infra::outln!("discarded {removed:?}");
            if missing.is_empty() {
                ExitCode::SUCCESS
            } else {
                infra::errln!("projector: no dead letters {missing:?}");
                ExitCode::FAILURE
            }
        }
        DeadLetters::Retry { ids } => retry(&pool, &ids).await?,
    };
    pool.close().await;
    Ok(code)
}

/// Retries each of `ids` in turn; a database error stops at once (exit 2).
async fn retry(pool: &sqlx::PgPool, ids: &[i64]) -> anyhow::Result<ExitCode> {
    use projections::dead_letters::RetryError;
    tracing::info!(actor = %actor(), ?ids, "retrying dead letters");
    let mut all = true;
    for id in ids {
        match projections::dead_letters::retry(pool, *id).await {
            Ok(done) => infra::outln!(
                "retried {id}: {} applied event {} ({} {} sequence {})",
                done.projection,
                done.event_id,
                done.aggregate_type,
                done.aggregate_id,
                done.sequence
            ),
            Err(RetryError::Database(error)) => {
                return Err(error).context("retrying dead letters");
            }
            Err(refused) => {
                infra::errln!("projector: {refused}");
                all = false;
            }
        }
    }
    Ok(if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
