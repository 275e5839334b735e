//! The read side under load (`loadgen visibility` is in `visibility.rs`):
//! - `loadgen reads`: closed-loop cached single-resource reads from the query API, then the
//!   same requests against a trivial axum handler (`loadgen trivial-server`) in the same run.
//! - `loadgen trivial-server`: that baseline handler: a fixed JSON body of the size of a user.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::common::{self, loopback_base_url, RunArgs};
use crate::stats::Report;
use crate::write::Account;

pub(crate) fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).context("creating a histogram")
}

pub(crate) fn ms(h: &Histogram<u64>, quantile: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(quantile) as f64 / 1000.0
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Registers and logs in `n` users through the command API.
pub(crate) async fn register_users(
    client: &Client,
    command: &str,
    n: usize,
) -> Result<Vec<Account>> {
    crate::write::register_users(client, command, n).await
}

/// Waits (up to a minute: the projector may still be starting) until the query API has every
/// user at version 1 or later.
pub(crate) async fn await_visible(
    client: &Client,
    query: &str,
    accounts: &[Account],
) -> Result<()> {
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
