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
