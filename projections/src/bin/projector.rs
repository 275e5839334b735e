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
    let log = settings.log.clone();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => infra::server::run_service("projector", &log, 0, serve(settings))
            .context("starting the async runtime")?
            .map(|()| ExitCode::SUCCESS),
        Some("verify") => {
            { infra::server::run_service("projector", &log, 0, verify(settings, &args[1..])) }
                .context("starting the async runtime")?
        }
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
    let app = projections::startup::build(&settings)
        .await
        .context("starting the projector")?;
    app.run_until(infra::http::shutdown_signal())
        .await
        .context("serving the projector's ops endpoints")
}
