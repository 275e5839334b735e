//! `projector replay | rollback | prune` and as-of sets (see `projections::replay`), with
//! progress on standard error.

use std::process::ExitCode;

use anyhow::Context;
use infra::settings::Settings;

use projections::lease::{self, Lease};
use projections::replay::as_of::{self, AsOfError, Bound};
use projections::replay::runs::{Run, StartError};
use projections::replay::Origin;

use crate::{connect, models};

/// The run, or `None` (said on standard error) when another run swaps the same read models.
fn refused_if_busy(started: Result<Run, StartError>) -> anyhow::Result<Option<Run>> {
    match started {
        Ok(run) => Ok(Some(run)),
        Err(busy @ StartError::Busy { .. }) => {
            infra::errln!("projector: {busy}");
            Ok(None)
        }
        Err(error) => Err(error).context("recording the run"),
    }
}

/// A lease for the work about to start, after clearing what work whose process died left
/// (see `projections::lease`). That clearing is a courtesy: when it fails, the work goes on
/// (what it could not clear stays for the next sweep, and is logged).
pub async fn take_lease(pool: &sqlx::PgPool) -> anyhow::Result<Lease> {
    if let Err(error) = lease::sweep(pool).await {
        tracing::warn!(error = %projections::error_chain(&error), "could not clear what unfinished runs left");
    }
    Lease::take(pool).await.context("taking a lease")
}

pub async fn replay(
    settings: Settings,
    names: &[String],
    from_kafka: bool,
) -> anyhow::Result<ExitCode> {
    let models = models(names)?;
    let pool = connect(&settings).await?;
    let lease = take_lease(&pool).await?;
    let types: Vec<&str> = models
        .iter()
        .flat_map(|m| m.aggregates().iter().copied())
        .collect();
    let total = projections::replay::estimated_events(&pool, &types).await?;
    let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
    let started = Run::start(
        &pool,
        &lease,
        &names.join(" "),
        "replay",
        None,
        Some(total as i64),
    )
    .await;
    let Some(run) = refused_if_busy(started)? else {
        return Ok(ExitCode::FAILURE);
    };
    let mut progress = infra::progress::Progress::new("replay", total);
    let origin = if from_kafka {
        Origin::Kafka(&settings)
    } else {
        Origin::Store
    };
    let replayed = projections::replay::replay(&pool, &lease, &models, origin, &mut |n| {
        progress.advance(n);
        run.advance(n);
    })
    .await;
    progress.end(&replayed);
    run.finish(&replayed).await;
    lease.release().await;
    let (reports, failure) = match replayed {
        Ok(reports) => (reports, None),
        Err(interrupted) => (interrupted.swapped, Some(interrupted.error)),
    };
    let mut clean = true;
    for (model, report) in models.iter().zip(&reports) {
        infra::outln!(
            "{}: rebuilt from {} events and swapped in; the replaced tables are in {} \
             (projector rollback {} | prune {})",
            model.name(),
            report.events,
            report.previous_schema,
            model.name(),
            model.name()
        );
        for (event, error) in &report.failed {
            infra::outln!("  could not apply event {event}: {error}");
        }
        clean &= report.failed.is_empty();
    }
    pool.close().await;
    if let Some(error) = failure {
        let left: Vec<&str> = models[reports.len()..].iter().map(|m| m.name()).collect();
        return Err(error).with_context(|| {
            format!(
                "replaying (not swapped in: {}; their live sets are untouched)",
                left.join(", ")
            )
        });
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn rollback(settings: Settings, name: &str) -> anyhow::Result<ExitCode> {
    let model = projections::read_model(name).with_context(|| format!("no read model {name:?}"))?;
    let pool = connect(&settings).await?;
    let lease = take_lease(&pool).await?;
    let started = Run::start(&pool, &lease, name, "rollback", None, None).await;
    let Some(run) = refused_if_busy(started)? else {
        return Ok(ExitCode::FAILURE);
    };
    let mut progress = infra::progress::Progress::new("rollback", 0);
    let result = projections::replay::rollback(&pool, model, &mut |n| {
        progress.advance(n);
        run.advance(n);
    })
    .await;
    progress.end(&result);
    run.finish(&result).await;
    lease.release().await;
    pool.close().await;
    match result {
        Ok(report) => {
            infra::outln!(
                "{name}: the previous tables are live again ({} events caught up); the replaced \
                 ones are in {}",
                report.events,
                report.previous_schema
            );
            // Dead letters now, as the live projection would have made them.
            for (event, error) in &report.failed {
                infra::outln!("  could not apply event {event}: {error}");
            }
            Ok(if report.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(projections::replay::ReplayError::NoPrevious(_)) => {
            infra::errln!("projector: {name} has no previous table set");
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error).context("rolling back"),
    }
}

pub async fn prune(settings: Settings, names: &[String]) -> anyhow::Result<ExitCode> {
    let models = models(names)?;
    let pool = connect(&settings).await?;
    let swept = lease::sweep(&pool)
        .await
        .context("clearing what unfinished runs left")?;
    for schema in &swept.schemas {
        infra::outln!("{schema}: dropped (left by a run that ended without finishing)");
    }
    for run in &swept.runs {
        infra::outln!("run {run}: marked abandoned (its process ended before it finished)");
    }
    for (schema, error) in &swept.left {
        infra::outln!("{schema}: left by a run that ended without finishing, not dropped: {error}");
    }
    if models.is_empty() && swept.schemas.is_empty() && swept.runs.is_empty() {
        infra::outln!("nothing was left behind by unfinished runs");
    }
    for model in models {
        let dropped = projections::replay::prune(&pool, model)
            .await
            .with_context(|| format!("pruning {}", model.name()))?;
        infra::outln!(
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

#[derive(clap::Subcommand)]
pub enum AsOf {
    /// Every as-of set: name, position, what was asked for, read models, when built.
    List,
    /// Drop as-of sets (their tables and their record).
    Drop {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub async fn as_of(
    settings: Settings,
    names: &[String],
    bound: Bound,
    name: Option<String>,
) -> anyhow::Result<ExitCode> {
    let models = models(names)?;
    let pool = connect(&settings).await?;
    let name = name.unwrap_or_else(|| bound.default_name());
    let lease = take_lease(&pool).await?;
    let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
    let started = Run::start(&pool, &lease, &names.join(" "), "as_of", Some(&name), None).await;
    let run = started.context("recording the run")?;
    let mut progress = infra::progress::Progress::new("as-of", 0);
    let built = as_of::build(&pool, &lease, &models, &bound, &name, &mut |n| {
        progress.advance(n);
        run.advance(n);
    })
    .await;
    progress.end(&built);
    run.finish(&built).await;
    lease.release().await;
    pool.close().await;
    let report = match built {
        Ok(report) => report,
        Err(error @ (AsOfError::BadName(_) | AsOfError::Exists(_) | AsOfError::Future(_))) => {
            infra::errln!("projector: {error}");
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => return Err(error).context("building the as-of set"),
    };
    infra::outln!(
        "as-of set {} built: read models {} at global position {} (asked for {}); read it with \
         ?as_of={}",
        report.set.name,
        report.set.projections.join(", "),
        report.set.position,
        report.set.requested,
        report.set.name
    );
    let mut clean = true;
    for model in &report.models {
        infra::outln!("  {}: {} events", model.name, model.events);
        for (event, error) in &model.failed {
            infra::outln!("    could not apply event {event}: {error}");
        }
        clean &= model.failed.is_empty();
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn as_of_sets(settings: Settings, command: AsOf) -> anyhow::Result<ExitCode> {
    let pool = connect(&settings).await?;
    let code = match command {
        AsOf::List => {
            for set in as_of::list(&pool).await? {
                infra::outln!(
                    "{:<24} position {:<10} asked {:<26} {} built {}",
                    set.name,
                    set.position,
                    set.requested,
                    set.projections.join(","),
                    set.created_at.format("%Y-%m-%dT%H:%M:%SZ")
                );
            }
            ExitCode::SUCCESS
        }
        AsOf::Drop { names } => {
            let mut all = true;
            for name in &names {
                let dropped = as_of::drop_set(&pool, name).await?;
                infra::outln!(
                    "{name}: {}",
                    if dropped { "dropped" } else { "no such set" }
                );
                all &= dropped;
            }
            if all {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    };
    pool.close().await;
    Ok(code)
}
