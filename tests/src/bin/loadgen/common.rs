//! Pieces shared by all subcommands: run options, loopback guard, HTTP client,
//! response classification and the closed-loop runner.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use reqwest::{Client, RequestBuilder, StatusCode, Url};

use crate::stats::Stats;

/// Per-request timeout; keeps every run bounded even if the server hangs.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Options every closed-loop subcommand shares (`#[command(flatten)]`).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Base URL of the API under test (must be loopback).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Number of concurrent closed-loop workers.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// Unrecorded warm-up before the measured window, in seconds.
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Safety cap on the number of measured requests.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests: u64,
    /// Print one JSON object instead of the human report.
    #[arg(long)]
    pub json: bool,
    /// Most requests per second over all workers, paced from the start (none: each worker
    /// sends its next request as soon as the last is answered).
    #[arg(long)]
    pub rate: Option<f64>,
}

impl RunArgs {
    /// Checks the bounds and the target; returns the base URL without a
    /// trailing slash.
    pub fn validate(&self) -> Result<String> {
        ensure!(self.concurrency >= 1, "--concurrency must be at least 1");
        ensure!(
            self.duration_secs >= 1,
            "--duration-secs must be at least 1"
        );
        ensure!(self.max_requests >= 1, "--max-requests must be at least 1");
        ensure!(
            self.rate.is_none_or(|r| r.is_finite() && r > 0.0),
            "--rate must be a positive number"
        );
        ensure!(
            self.warmup_secs <= 600 && self.duration_secs <= 3600,
            "--warmup-secs is capped at 600 and --duration-secs at 3600"
        );
        loopback_base_url(&self.url)
    }
}

/// Parses `raw` and refuses anything that is not http(s) on a loopback host.
pub fn loopback_base_url(raw: &str) -> Result<String> {
    let url = Url::parse(raw).with_context(|| format!("invalid --url {raw:?}"))?;
    ensure!(
        matches!(url.scheme(), "http" | "https"),
        "--url {raw:?} must use http or https"
    );
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost."),
    };
    if !loopback {
        bail!(
            "refusing to run: --url {raw:?} is not a loopback address \
             (allowed: 127.0.0.0/8, localhost, ::1). Load runs are loopback only."
        );
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// One pooled client for all workers: keep-alive pool at least as large as
/// the concurrency, Nagle off, no redirects, no proxies, bounded timeouts.
pub fn build_client(concurrency: usize) -> Result<Client> {
    Client::builder()
        .pool_max_idle_per_host(concurrency.max(1))
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .context("building the HTTP client")
}

/// Fails fast with a clear message when nothing listens at `base`.
/// Any HTTP status counts as reachable.
pub async fn ensure_reachable(client: &Client, base: &str) -> Result<()> {
    let url = format!("{base}/healthz");
    let resp =
        client.get(&url).send().await.with_context(|| {
            format!("cannot reach the API at {base} (GET {url}); is it running?")
        })?;
    // Drain the body so the connection goes back to the pool.
    let _ = resp.bytes().await;
    Ok(())
}

/// How one measured request ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 2xx.
    Ok,
    /// 409 whose problem `type` ends in `version-conflict`: expected when
    /// writers race on one aggregate.
    Conflict,
    /// Anything else; `key` is the status code or `transport`, `detail` is a
    /// short human description (kept for the first error of each key).
    Error { key: String, detail: String },
}

/// Sends a command, reads the whole body and classifies the response.
pub async fn send_command(req: RequestBuilder) -> Outcome {
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) => return transport_error(&e),
    };
    let status = resp.status();
    let body = match resp.bytes().await {
        Ok(body) => body,
        Err(e) => return transport_error(&e),
    };
    if status.is_success() {
        Outcome::Ok
    } else if status == StatusCode::CONFLICT && is_version_conflict(&body) {
        Outcome::Conflict
    } else {
        Outcome::Error {
            key: status.as_u16().to_string(),
            detail: snippet(&body),
        }
    }
}

/// A response body shortened to one line of at most 300 characters.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: Vec<&str> = text.split_whitespace().collect();
    one_line.join(" ").chars().take(300).collect()
}

fn transport_error(e: &reqwest::Error) -> Outcome {
    let kind = if e.is_timeout() { "timeout" } else { "error" };
    Outcome::Error {
        key: "transport".to_owned(),
        detail: format!("{kind}: {e:#}"),
    }
}

fn is_version_conflict(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("type")?
                .as_str()
                .map(|t| t.ends_with("version-conflict"))
        })
        .unwrap_or(false)
}

/// Result of a closed-loop run.
pub struct RunResult {
    pub stats: Stats,
    /// Wall time from the end of warm-up until the last worker stopped.
    pub measured: Duration,
}

/// Runs `args.concurrency` closed-loop workers calling `op` back to back:
/// first `warmup_secs` unrecorded, then `duration_secs` recorded, stopping
/// early after `max_requests` measured requests. `op` receives a fresh
/// random `u64` per call for its own choices (which aggregate, which name).
pub async fn run_closed_loop<F, Fut>(args: &RunArgs, op: F) -> Result<RunResult>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let op = Arc::new(op);
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let window = Window {
        start,
        measure_from: start + Duration::from_secs(args.warmup_secs),
        deadline: start + Duration::from_secs(args.warmup_secs + args.duration_secs),
        max_requests: args.max_requests,
        rate: args.rate,
    };
    let tickets = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let stats = Stats::new()?;
        let (op, issued, tickets) = (Arc::clone(&op), Arc::clone(&issued), Arc::clone(&tickets));
        handles.push(tokio::spawn(worker(op, window, issued, tickets, stats)));
    }
    let mut total = Stats::new()?;
    for handle in handles {
        let stats = handle.await.context("a load worker panicked")?;
        total.merge(&stats)?;
    }
    let measured = Instant::now().saturating_duration_since(window.measure_from);
    Ok(RunResult {
        stats: total,
        measured,
    })
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    deadline: Instant,
    max_requests: u64,
    /// Requests per second over all workers: request `n` (counted from the start) is not sent
    /// before `start + n / rate`.
    rate: Option<f64>,
}

async fn worker<F, Fut>(
    op: Arc<F>,
    window: Window,
    issued: Arc<AtomicU64>,
    tickets: Arc<AtomicU64>,
    mut stats: Stats,
) -> Stats
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut rng = XorShift::seeded();
    loop {
        if let Some(rate) = window.rate {
            let n = tickets.fetch_add(1, Ordering::Relaxed);
            let due = window.start + Duration::from_secs_f64(n as f64 / rate);
            if due >= window.deadline {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        let started = Instant::now();
        if started >= window.deadline {
            break;
        }
        let measured = started >= window.measure_from;
        if measured && issued.fetch_add(1, Ordering::Relaxed) >= window.max_requests {
            break;
        }
        let outcome = op(rng.next_u64()).await;
        if measured {
            stats.record(&outcome, started.elapsed());
        }
    }
    stats
}

/// Tiny per-worker PRNG (xorshift64*): no shared state, no extra crate.
pub struct XorShift(u64);

impl XorShift {
    pub fn seeded() -> Self {
        // A v4 UUID is 122 random bits; fold it into a non-zero seed.
        let bits = uuid::Uuid::new_v4().as_u128();
        Self(((bits >> 64) as u64 ^ bits as u64) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
