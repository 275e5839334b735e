//! `projector replay | rollback | prune` (see `projections::replay`), with progress on
//! standard error.

use std::process::ExitCode;

use anyhow::Context;
use infra::settings::Settings;

use crate::{connect, models};

pub async fn replay(settings: Settings, names: &[String]) -> anyhow::Result<ExitCode> {
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

pub async fn rollback(settings: Settings, name: &str) -> anyhow::Result<ExitCode> {
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

pub async fn prune(settings: Settings, names: &[String]) -> anyhow::Result<ExitCode> {
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
