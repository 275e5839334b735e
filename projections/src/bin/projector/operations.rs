//! `projector status` and `projector dead-letters list | discard`.

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
}

pub async fn status(settings: Settings, json: bool) -> anyhow::Result<ExitCode> {
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
