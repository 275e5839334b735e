//! `loadgen visibility`: an open-loop stream of commands at a steady rate; for each accepted
//! command, the time from its 2xx until the query API returns that version (a read with
//! `min_version`, which the query API answers as soon as its read model has it). With
//! `--percentiles-out` it also writes the latency distribution (`loadgen plot` draws it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use reqwest::{Client, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use crate::common::{self, loopback_base_url};
use crate::read::{await_visible, histogram, micros, ms, register_users};
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
    /// Also write the distribution of the visible-after-2xx latency here, as CSV lines
    /// `percentile,milliseconds`.
    #[arg(long)]
    pub percentiles_out: Option<std::path::PathBuf>,
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

pub async fn run(args: VisibilityArgs) -> Result<()> {
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
    let mut announced = false;
    loop {
        let now = ticks.tick().await;
        if now >= deadline {
            break;
        }
        let measured = now >= measure_from;
        if measured && n > 0 && !announced {
            // For scripts that sample the services during the measured part only.
            eprintln!("measuring for {}s", args.duration_secs);
            announced = true;
        }
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
    if let Some(path) = &args.percentiles_out {
        write_percentiles(&visible_h, path)?;
    }
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

/// The distribution as `percentile,milliseconds` lines from the median to the maximum, evenly
/// spaced in "nines" (-log10 of the share above), eight steps per nine: 50 %, ... 90 %, ...
/// 99 %, ... 99.99 %, then the maximum.
fn write_percentiles(h: &Histogram<u64>, path: &std::path::Path) -> Result<()> {
    let mut csv = String::from("percentile,ms\n");
    if !h.is_empty() {
        let median_nines = 2f64.log10();
        for step in 0..=30 {
            let quantile = 1.0 - 10f64.powf(-(median_nines + f64::from(step) / 8.0));
            csv.push_str(&format!("{:.5},{:.3}\n", quantile * 100.0, ms(h, quantile)));
        }
        csv.push_str(&format!("100,{:.3}\n", h.max() as f64 / 1000.0));
    }
    std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))
}
