//! The read side under load:
//! - `loadgen visibility`: an open-loop stream of commands at a steady rate; for each accepted
//!   command, the time from its 2xx until the query API returns that version (a read with
//!   `min_version`, which the query API answers as soon as its read model has it).
//! - `loadgen reads`: closed-loop cached single-resource reads from the query API, then the
//!   same requests against a trivial axum handler (`loadgen trivial-server`) in the same run.
//! - `loadgen trivial-server`: that baseline handler: a fixed JSON body of the size of a user.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use reqwest::{Client, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use crate::common::{self, loopback_base_url, RunArgs};
use crate::stats::Report;
use crate::write::Account;

#[derive(Debug, Args)]
pub struct VisibilityArgs {
    /// The command API (loopback).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub command_url: String,
    /// The query API (loopback).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub query_url: String,
    /// Commands per second, steady.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// Unrecorded seconds before.
    #[arg(long, default_value_t = 3)]
    pub warmup_secs: u64,
    /// Users the commands rename in turn (each is written `rate / users` times a second).
    #[arg(long, default_value_t = 500)]
    pub users: usize,
    /// Most commands (with their visibility reads) in flight; beyond it ticks are dropped
    /// and counted.
    #[arg(long, default_value_t = 2000)]
    pub max_in_flight: usize,
    #[arg(long)]
    pub json: bool,
}

/// How one tick of the visibility run ended.
enum Sample {
    Visible {
        command: Duration,
        visible: Duration,
    },
    Conflict,
    Behind,
    Error(String),
}

#[derive(Debug, Serialize)]
struct VisibilityReport {
    target_rate: u32,
    duration_secs: f64,
    accepted: u64,
    accepted_per_sec: f64,
    conflicts: u64,
    behind: u64,
    errors: u64,
    dropped: u64,
    command_p50_ms: f64,
    command_p99_ms: f64,
    visible_p50_ms: f64,
    visible_p95_ms: f64,
    visible_p99_ms: f64,
    visible_max_ms: f64,
}

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).context("creating a histogram")
}

fn ms(h: &Histogram<u64>, quantile: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(quantile) as f64 / 1000.0
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Registers and logs in `n` users through the command API.
async fn register_users(client: &Client, command: &str, n: usize) -> Result<Vec<Account>> {
    crate::write::register_users(client, command, n).await
}

/// Waits (up to a minute: the projector may still be starting) until the query API has every
/// user at version 1 or later.
async fn await_visible(client: &Client, query: &str, accounts: &[Account]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for account in accounts {
        loop {
            let response = client
                .get(format!("{query}/v1/users/{}?min_version=1", account.id))
                .bearer_auth(&account.token)
                .send()
                .await
                .context("reading a user")?;
            let status = response.status();
            let _ = response.bytes().await;
            if status == StatusCode::OK {
                break;
            }
            ensure!(
                status == StatusCode::GATEWAY_TIMEOUT && Instant::now() < deadline,
                "the query API did not show a registered user: {status}"
            );
        }
    }
    Ok(())
}

async fn one_tick(client: Client, command: String, query: String, user: Account, n: u64) -> Sample {
    let started = Instant::now();
    let sent = client
        .post(format!("{command}/v1/users/{}/profile", user.id))
        .bearer_auth(&user.token)
        .json(&json!({"display_name": format!("Reader {n}")}))
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => return Sample::Error(format!("command: {error}")),
    };
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == StatusCode::CONFLICT {
        return Sample::Conflict;
    }
    if !status.is_success() {
        return Sample::Error(format!("command {status}: {body}"));
    }
    let accepted = Instant::now();
    let command_latency = accepted - started;
    let version = body["version"].as_i64().unwrap_or(0);
    let read = client
        .get(format!(
            "{query}/v1/users/{}?min_version={version}",
            user.id
        ))
        .bearer_auth(&user.token)
        .send()
        .await;
    match read {
        Ok(response) if response.status() == StatusCode::OK => {
            let visible = accepted.elapsed();
            let _ = response.bytes().await;
            Sample::Visible {
                command: command_latency,
                visible,
            }
        }
        Ok(response) if response.status() == StatusCode::GATEWAY_TIMEOUT => Sample::Behind,
        Ok(response) => Sample::Error(format!("query {}", response.status())),
        Err(error) => Sample::Error(format!("query: {error}")),
    }
}

pub async fn visibility(args: VisibilityArgs) -> Result<()> {
    let command = loopback_base_url(&args.command_url)?;
    let query = loopback_base_url(&args.query_url)?;
    ensure!(
        (1..=20_000).contains(&args.rate),
        "--rate must be 1 to 20000"
    );
    ensure!(
        args.duration_secs <= 3600 && args.warmup_secs <= 600,
        "--duration-secs is capped at 3600 and --warmup-secs at 600"
    );
    ensure!(args.users >= 1, "--users must be at least 1");
    let client = common::build_client(args.max_in_flight.min(512))?;
    common::ensure_reachable(&client, &command).await?;
    common::ensure_reachable(&client, &query).await?;
    let users = register_users(&client, &command, args.users).await?;
    await_visible(&client, &query, &users).await?;

    let (tx, mut rx) = mpsc::unbounded_channel::<(bool, Sample)>();
    let slots = Arc::new(Semaphore::new(args.max_in_flight));
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let start = tokio::time::Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup_secs);
    let deadline = measure_from + Duration::from_secs(args.duration_secs);
    let mut ticks = tokio::time::interval_at(start, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut dropped = 0u64;
    let mut n = 0u64;
    loop {
        let now = ticks.tick().await;
        if now >= deadline {
            break;
        }
        let measured = now >= measure_from;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            dropped += u64::from(measured);
            continue;
        };
        let user = users[(n as usize) % users.len()].clone();
        let (client, command, query, tx) =
            (client.clone(), command.clone(), query.clone(), tx.clone());
        tokio::spawn(async move {
            let sample = one_tick(client, command, query, user, n).await;
            let _ = tx.send((measured, sample));
            drop(slot);
        });
        n += 1;
    }
    drop(tx);
    let mut command_h = histogram()?;
    let mut visible_h = histogram()?;
    let (mut conflicts, mut behind, mut errors) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    // Every task ends: each request has a client timeout.
    while let Some((measured, sample)) = rx.recv().await {
        if !measured {
            continue;
        }
        match sample {
            Sample::Visible { command, visible } => {
                command_h.saturating_record(micros(command));
                visible_h.saturating_record(micros(visible));
            }
            Sample::Conflict => conflicts += 1,
            Sample::Behind => behind += 1,
            Sample::Error(detail) => {
                errors += 1;
                first_error.get_or_insert(detail);
            }
        }
    }
    let secs = args.duration_secs as f64;
    let report = VisibilityReport {
        target_rate: args.rate,
        duration_secs: secs,
        accepted: visible_h.len(),
        accepted_per_sec: visible_h.len() as f64 / secs,
        conflicts,
        behind,
        errors,
        dropped,
        command_p50_ms: ms(&command_h, 0.5),
        command_p99_ms: ms(&command_h, 0.99),
        visible_p50_ms: ms(&visible_h, 0.5),
        visible_p95_ms: ms(&visible_h, 0.95),
        visible_p99_ms: ms(&visible_h, 0.99),
        visible_max_ms: if visible_h.is_empty() {
            0.0
        } else {
            visible_h.max() as f64 / 1000.0
        },
    };
    if let Some(detail) = first_error {
        eprintln!("first error: {detail}");
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "loadgen visibility rate={}/s duration={:.0}s\n\
             accepted={} ({:.1}/s) conflicts={} behind(504)={} errors={} dropped={}\n\
             command latency ms: p50={:.1} p99={:.1}\n\
             visible after 2xx ms: p50={:.1} p95={:.1} p99={:.1} max={:.1}",
            report.target_rate,
            report.duration_secs,
            report.accepted,
            report.accepted_per_sec,
            report.conflicts,
            report.behind,
            report.errors,
            report.dropped,
            report.command_p50_ms,
            report.command_p99_ms,
            report.visible_p50_ms,
            report.visible_p95_ms,
            report.visible_p99_ms,
            report.visible_max_ms,
        );
    }
    ensure!(report.accepted > 0, "no command became visible");
    Ok(())
}

#[derive(Debug, Args)]
pub struct ReadsArgs {
    /// `--url` is the query API.
    #[command(flatten)]
    pub run: RunArgs,
    /// The command API, to create the users that are read.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub command_url: String,
    /// A trivial axum handler (`loadgen trivial-server`) measured the same way after.
    #[arg(long)]
    pub baseline_url: Option<String>,
    /// Distinct users read (all fit in the cache).
    #[arg(long, default_value_t = 100)]
    pub resources: usize,
}

pub async fn reads(args: ReadsArgs) -> Result<()> {
    let query = args.run.validate()?;
    let command = loopback_base_url(&args.command_url)?;
    let baseline = args
        .baseline_url
        .as_deref()
        .map(loopback_base_url)
        .transpose()?;
    ensure!(args.resources >= 1, "--resources must be at least 1");
    let client = common::build_client(args.run.concurrency)?;
    common::ensure_reachable(&client, &command).await?;
    common::ensure_reachable(&client, &query).await?;
    let ids = Arc::new(register_users(&client, &command, args.resources).await?);
    // Read each once: from here on they are cache hits.
    await_visible(&client, &query, &ids).await?;

    let measure = |base: String| {
        let (client, ids) = (client.clone(), ids.clone());
        let run = args.run.clone();
        async move {
            common::run_closed_loop(&run, move |r| {
                let account = &ids[(r as usize) % ids.len()];
                common::send_command(
                    client
                        .get(format!("{base}/v1/users/{}", account.id))
                        .bearer_auth(&account.token),
                )
            })
            .await
        }
    };
    let before = cache_counts(&client, &query).await?;
    let cached = measure(query.clone()).await?;
    let after = cache_counts(&client, &query).await?;
    let cached_report = Report::new(
        "cached-read",
        args.run.concurrency,
        cached.measured,
        &cached.stats,
    );
    print_reads(
        "query API, cached user reads",
        &cached_report,
        args.run.json,
    );
    let (hits, misses) = (after.0 - before.0, after.1 - before.1);
    let ratio = hits as f64 / (hits + misses).max(1) as f64;
    if args.run.json {
        println!("{}", json!({ "cache_hits": hits, "cache_misses": misses }));
    } else {
        println!("cache during the run (from the query API's /metrics): {hits} hits, {misses} misses, hit ratio {ratio:.4}");
    }
    if let Some(base) = baseline {
        common::ensure_reachable(&client, &base).await?;
        let trivial = measure(base).await?;
        let trivial_report = Report::new(
            "trivial",
            args.run.concurrency,
            trivial.measured,
            &trivial.stats,
        );
        print_reads("trivial axum handler", &trivial_report, args.run.json);
        let ratio = cached_report.commands_per_sec / trivial_report.commands_per_sec.max(1.0);
        if args.run.json {
            println!("{}", json!({ "ratio": ratio }));
        } else {
            println!("ratio cached / trivial: {ratio:.2}");
        }
    }
    ensure!(cached_report.ok > 0, "no read succeeded");
    Ok(())
}

/// The query API's user cache hits and misses so far, from its `/metrics`.
async fn cache_counts(client: &Client, query: &str) -> Result<(u64, u64)> {
    let text = client
        .get(format!("{query}/metrics"))
        .send()
        .await
        .context("reading the query API's metrics")?
        .text()
        .await?;
    let count = |result: &str| {
        let series =
            format!("query_cache_requests_total{{resource=\"user\",result=\"{result}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    Ok((count("hit"), count("miss")))
}

fn print_reads(title: &str, report: &Report, json: bool) {
    if json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
        return;
    }
    println!(
        "{title}: concurrency={} duration={:.1}s\n\
         requests={} ok={} errors={}\n\
         throughput: {:.1} requests/s\n\
         latency ms: p50={:.2} p95={:.2} p99={:.2} max={:.1}",
        report.concurrency,
        report.duration_secs,
        report.requests,
        report.ok,
        report.errors,
        report.commands_per_sec,
        report.p50_ms,
        report.p95_ms,
        report.p99_ms,
        report.max_ms,
    );
}

#[derive(Debug, Args)]
pub struct TrivialArgs {
    #[arg(long, default_value_t = 18090)]
    pub port: u16,
    /// Exits by itself after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub max_secs: u64,
}

/// `GET /v1/users/{id}` answering a fixed JSON body of a user's size, with an `ETag`: what a
/// handler costs when it does no work at all.
pub async fn trivial_server(args: TrivialArgs) -> Result<()> {
    use axum::http::header;
    use axum::routing::get;
    let body = bytes::Bytes::from(
        serde_json::to_vec(&json!({
            "id": "019a0000-0000-7000-8000-000000000000", "email": "reader@example.com",
            "display_name": "Reader 1", "preferences": {}, "addresses": [], "roles": ["customer"],
            "status": "active", "version": 1, "created_at": "2026-11-23T10:00:00.000000Z",
            "updated_at": "2026-11-23T10:00:00.000000Z"
        }))
        .context("serializing the body")?,
    );
    let app = axum::Router::new()
        .route(
            "/v1/users/{id}",
            get(move || {
                let body = body.clone();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, "application/json"),
                            (header::ETAG, "\"1\""),
                        ],
                        body,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
    let stop = tokio::time::sleep(Duration::from_secs(args.max_secs));
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .context("serving")
}
