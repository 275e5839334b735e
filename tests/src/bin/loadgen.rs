//! `loadgen`: HTTP load generator for the command and query APIs.
//!
//! `loadgen relay` measures the event relay, `loadgen visibility` the time from a command's
//! 2xx until the query API shows its version, `loadgen reads` cached reads next to a trivial
//! handler (`loadgen trivial-server`); see those modules. The rest of this comment is about
//! `loadgen write`.
//!
//! # What it measures
//!
//! `loadgen write` measures the write path of the command API: how many
//! commands per second the service accepts and how long each command takes
//! end to end (request sent until the full response body is read), under a
//! fixed number of concurrent clients. Each of `--concurrency` workers sends
//! requests back to back (closed loop) over one shared, pooled HTTP client.
//! After an unrecorded warm-up, every request started inside the measurement
//! window is recorded in an HDR histogram (microseconds, 3 significant
//! figures). Optimistic-concurrency conflicts (409 with a problem `type`
//! ending in `version-conflict`) are counted as `conflicts`, separately from
//! errors, because they are the expected outcome of racing writers.
//!
//! Modes:
//! - `fresh`: every request registers a new user (`POST /v1/users`, unique
//!   email): the fresh-aggregate write path.
//! - `hot`: setup registers `--hot-aggregates` users (not measured); every
//!   request then renames one of them at random
//!   (`POST /v1/users/{id}/profile`), so writers race on a few aggregates.
//! - `mixed`: setup registers 50 customers; every request places an order
//!   (`POST /v1/orders`) for one of them at random.
//!
//! # Safety
//!
//! Runs are bounded: they stop by themselves at the deadline
//! (`--warmup-secs` + `--duration-secs`) or after `--max-requests` measured
//! requests, and every request has a client timeout. The target must be a
//! loopback address (127.0.0.0/8, `localhost`, `::1`); anything else is
//! refused. Redirects and proxies are disabled so requests cannot leave the
//! host.
//!
//! # Running
//!
//! ```text
//! cargo build --release -p tests --bin loadgen
//! target/release/loadgen write --mode fresh --concurrency 16 --duration-secs 20
//! target/release/loadgen write --mode hot --hot-aggregates 4 --json
//! target/release/loadgen write --mode mixed --url http://127.0.0.1:8080
//! ```
//!
//! The process exits 0 when the run completed (even if some requests
//! failed), and non-zero when the target is refused, setup fails, or no
//! request succeeded.

// The crate root resolves modules next to itself, hence the explicit paths.
#[path = "loadgen/common.rs"]
mod common;
#[path = "loadgen/consume.rs"]
mod consume;
#[path = "loadgen/plot.rs"]
mod plot;
#[path = "loadgen/read.rs"]
mod read;
#[path = "loadgen/relay.rs"]
mod relay;
#[path = "loadgen/seed.rs"]
mod seed;
#[path = "loadgen/stats.rs"]
mod stats;
#[path = "loadgen/traces.rs"]
mod traces;
#[path = "loadgen/visibility.rs"]
mod visibility;
#[path = "loadgen/write.rs"]
mod write;

use std::process::ExitCode;

/// The load generator shares the machine with the system under test; a faster allocator keeps
/// its own CPU use (and so its influence on the figures) down.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// Load generator for the command API (loopback targets only).
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure command (write) throughput and latency.
    Write(write::WriteArgs),
    /// Measure relay throughput (commit to broker acknowledgement) next to a raw producer.
    Relay(relay::RelayArgs),
    /// Measure command-to-visible latency at a steady command rate.
    Visibility(visibility::VisibilityArgs),
    /// Measure cached reads from the query API next to a trivial handler.
    Reads(read::ReadsArgs),
    /// Serve the trivial baseline handler that `reads` compares with.
    TrivialServer(read::TrivialArgs),
    /// Receive OTLP/HTTP traces and print each as a tree (for a local look at tracing).
    Traces(traces::TracesArgs),
    /// Write a commerce history straight into an event store (for the replay benchmark).
    Seed(seed::SeedArgs),
    /// Read topics from start to end with a raw consumer (the baseline of replay from Kafka).
    Consume(consume::ConsumeArgs),
    /// Draw a benchmark's figures (latency percentiles, or values over time) as a PNG.
    Plot(plot::PlotArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Write(args) => write::run(args).await,
        Command::Relay(args) => relay::run(args).await,
        Command::Visibility(args) => visibility::run(args).await,
        Command::Plot(args) => plot::run(&args),
        Command::Reads(args) => read::reads(args).await,
        Command::TrivialServer(args) => read::trivial_server(args).await,
        Command::Traces(args) => traces::run(args).await,
        Command::Seed(args) => seed::run(args).await,
        Command::Consume(args) => consume::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the context chain on one line, without a backtrace.
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
