//! `loadgen write`: command throughput and latency in three modes.

use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};
use reqwest::Client;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{self, Outcome, RunArgs};
use crate::stats::Report;

/// Customers registered during setup of `mixed` mode.
const MIXED_CUSTOMERS: usize = 50;

#[derive(Debug, Args)]
pub struct WriteArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// What every measured request does.
    #[arg(long, value_enum, default_value_t = Mode::Fresh)]
    pub mode: Mode,
    /// Users that `hot` mode writes to (few => many version conflicts).
    #[arg(long, default_value_t = 4)]
    pub hot_aggregates: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Each request registers a new user (fresh aggregate).
    Fresh,
    /// Each request renames one of a few users (racing writers).
    Hot,
    /// Each request places an order for one of 50 customers.
    Mixed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Fresh => "fresh",
            Mode::Hot => "hot",
            Mode::Mixed => "mixed",
        }
    }
}

/// Entry point of the `write` subcommand.
pub async fn run(args: WriteArgs) -> Result<()> {
    let base = args.run.validate()?;
    ensure!(
        args.hot_aggregates >= 1,
        "--hot-aggregates must be at least 1"
    );
    let client = common::build_client(args.run.concurrency)?;
    common::ensure_reachable(&client, &base).await?;

    let setup_users = match args.mode {
        Mode::Fresh => 0,
        Mode::Hot => args.hot_aggregates,
        Mode::Mixed => MIXED_CUSTOMERS,
    };
    let ids = Arc::new(
        register_users(&client, &base, setup_users)
            .await
            .context("setup failed; nothing was measured")?,
    );
    let target = Target { client, base, ids };
    let mode = args.mode;
    let result =
        common::run_closed_loop(&args.run, move |r| target.clone().request(mode, r)).await?;

    let report = Report::new(
        mode.name(),
        args.run.concurrency,
        result.measured,
        &result.stats,
    );
    report.print("write", args.run.json, &result.stats)?;
    if result.stats.ok == 0 {
        bail!(
            "no request succeeded ({} sent, {} conflicts, {} errors)",
            result.stats.requests,
            result.stats.conflicts,
            result.stats.errors
        );
    }
    Ok(())
}

#[derive(Deserialize)]
struct Created {
    id: Uuid,
}

/// Registers `n` users one after the other (setup, not measured).
pub async fn register_users(client: &Client, base: &str, n: usize) -> Result<Vec<Uuid>> {
    if n > 0 {
        eprintln!("setup: registering {n} users");
    }
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let resp = client
            .post(format!("{base}/v1/users"))
            .json(&new_user_body(&format!("lg-setup-{i}")))
            .send()
            .await
            .with_context(|| format!("POST /v1/users (setup user {i})"))?;
        let status = resp.status();
        let body = resp.bytes().await.context("reading the setup response")?;
        if !status.is_success() {
            bail!(
                "POST /v1/users (setup user {i}) returned {status}: {}",
                common::snippet(&body)
            );
        }
        let created: Created = serde_json::from_slice(&body)
            .with_context(|| format!("setup user {i}: response has no \"id\" uuid"))?;
        ids.push(created.id);
    }
    Ok(ids)
}

fn new_user_body(display_name: &str) -> Value {
    json!({
        "email": format!("lg-{}@load.example", Uuid::now_v7()),
        "display_name": display_name,
    })
}

/// Everything a worker needs to build a request; cheap to clone.
#[derive(Clone)]
struct Target {
    client: Client,
    base: String,
    ids: Arc<Vec<Uuid>>,
}

impl Target {
    /// One measured command; `r` is a per-request random number.
    async fn request(self, mode: Mode, r: u64) -> Outcome {
        let req = match mode {
            Mode::Fresh => self
                .client
                .post(format!("{}/v1/users", self.base))
                .json(&new_user_body(&format!("lg-{:08x}", r as u32))),
            Mode::Hot => self
                .client
                .post(format!("{}/v1/users/{}/profile", self.base, self.pick(r)))
                .json(&json!({ "display_name": format!("hot-{r:016x}") })),
            Mode::Mixed => self
                .client
                .post(format!("{}/v1/orders", self.base))
                .json(&order_body(self.pick(r), r)),
        };
        common::send_command(req).await
    }

    fn pick(&self, r: u64) -> Uuid {
        // Setup guarantees at least one id in hot and mixed modes.
        let len = self.ids.len().max(1) as u64;
        self.ids
            .get((r % len) as usize)
            .copied()
            .unwrap_or_default()
    }
}

/// An order with 1 to 3 lines with distinct SKUs, varied by the random number `r`.
fn order_body(customer_id: Uuid, r: u64) -> Value {
    let lines = 1 + (r >> 8) % 3;
    let first_sku = r % 20;
    let items: Vec<Value> = (0..lines)
        .map(|i| {
            let v = r >> (16 + 8 * i);
            json!({
                "sku": format!("SKU-{}", 1 + (first_sku + i) % 20),
                "quantity": 1 + (v >> 5) % 3,
                "unit_price_minor": 500 + (v % 40) * 125,
            })
        })
        .collect();
    json!({
        "customer_id": customer_id,
        "currency": "EUR",
        "items": items,
        "shipping_address": {
            "label": "home",
            "line1": "1 Main St",
            "city": "Berlin",
            "postal_code": "10115",
            "country": "DE",
        },
    })
}
