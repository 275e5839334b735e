//! The projector.
//!
//! - `projector`: reads settings, starts telemetry, serves `/healthz`, `/readyz`, `/metrics` on
//!   `projector.port` and runs every projection (and the process manager) until Ctrl-C or
//!   SIGTERM, committing the batch in hand before it exits.
//! - `projector verify <projection>...` (or `all`): rebuilds each read model from the events
//!   table beside the live one and compares them (see `projections::verify`); exits 1 if any
//!   differs.

use std::process::ExitCode;

use anyhow::{bail, Context};
use infra::http::{ops_routes, record_http_metrics, OpsState};
use infra::settings::Settings;
use projections::ReadModel;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("projector: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let settings = Settings::load().context("loading settings")?;
    infra::telemetry::init_tracing(&settings.log);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = infra::runtime(0).context("starting the async runtime")?;
    match args.first().map(String::as_str) {
        None => runtime
            .block_on(serve(settings))
            .map(|()| ExitCode::SUCCESS),
        Some("verify") => runtime.block_on(verify(settings, &args[1..])),
        Some(other) => bail!(
            "unknown command {other:?}; usage: projector [verify <projection>... | verify all]"
        ),
    }
}

async fn verify(settings: Settings, names: &[String]) -> anyhow::Result<ExitCode> {
    let models: Vec<&'static dyn ReadModel> = match names {
        [] => bail!("usage: projector verify <projection>... | all"),
        [all] if all == "all" => projections::READ_MODELS.to_vec(),
        names => names
            .iter()
            .map(|n| projections::read_model(n).with_context(|| format!("no read model {n:?}")))
            .collect::<anyhow::Result<_>>()?,
    };
    let pool = infra::db::connect(&settings.database)
        .await
        .context("connecting to the database")?;
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

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let pool = infra::db::connect(&settings.database)
        .await
        .context("connecting to the database")?;
    let (listener, address) = infra::http::bind(&settings.projector.host, settings.projector.port)
        .await
        .context("binding the projector's ops port")?;
    let ops = ops_routes(OpsState::new(pool.clone()))
        .layer(axum::middleware::from_fn(record_http_metrics));
    let commands = projections::process_manager_commands(&settings)
        .context("building the process manager's HTTP client")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let projections = tokio::spawn(projections::run_all(
        pool.clone(),
        settings.clone(),
        commands,
        stopped,
    ));
    tracing::info!(%address, "projector running");
    axum::serve(listener, ops)
        .with_graceful_shutdown(infra::http::shutdown_signal())
        .await
        .context("serving the ops endpoints")?;
    let _ = stop.send(true);
    let _ = projections.await;
    pool.close().await;
    Ok(())
}
