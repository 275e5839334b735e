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
    let accounts = Arc::new(
        register_users(&client, &base, setup_users)
            .await
            .context("setup failed; nothing was measured")?,
    );
    let target = Target {
        client,
        base,
        accounts,
    };
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

#[derive(Deserialize)]
struct Tokens {
    access_token: String,
}

/// A registered, logged-in user: every command and read of the load acts as one, with its own
/// token, as customers do.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: Uuid,
    pub token: String,
}

/// The password of every user the load generator registers.
pub const PASSWORD: &str = "loadgen-password-1";

/// Registers `n` users one after the other and logs each in (setup, not measured).
pub async fn register_users(client: &Client, base: &str, n: usize) -> Result<Vec<Account>> {
    if n > 0 {
        eprintln!("setup: registering and logging in {n} users");
    }
    // Sixteen at a time: thousands of users one by one would take minutes of round trips.
    let mut accounts = Vec::with_capacity(n);
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..n {
        if pending.len() >= 16 {
            if let Some(done) = pending.join_next().await {
                accounts.push(done.context("a registration task")??);
            }
        }
        let (client, base) = (client.clone(), base.to_owned());
        pending.spawn(async move { register_one(&client, &base, i).await });
    }
    while let Some(done) = pending.join_next().await {
        accounts.push(done.context("a registration task")??);
    }
    Ok(accounts)
}

/// Registers setup user `i` and logs it in.
async fn register_one(client: &Client, base: &str, i: usize) -> Result<Account> {
    let email = format!("lg-{}@load.example", Uuid::now_v7());
    let created: Created = post_json(
        client,
        &format!("{base}/v1/users"),
        &json!({"email": email, "display_name": format!("lg-setup-{i}"), "password": PASSWORD}),
    )
    .await
    .with_context(|| format!("registering setup user {i}"))?;
    let tokens: Tokens = post_json(
        client,
        &format!("{base}/v1/auth/token"),
        &json!({"grant_type": "password", "email": email, "password": PASSWORD}),
    )
    .await
    .with_context(|| format!("logging in setup user {i}"))?;
    Ok(Account {
        id: created.id,
        token: tokens.access_token,
    })
}

async fn post_json<T: serde::de::DeserializeOwned>(
    client: &Client,
    url: &str,
    body: &Value,
) -> Result<T> {
    let resp = client
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let bytes = resp.bytes().await.context("reading the response")?;
    if !status.is_success() {
        bail!("POST {url} returned {status}: {}", common::snippet(&bytes));
    }
    serde_json::from_slice(&bytes).with_context(|| format!("POST {url}: unexpected response"))
}

fn new_user_body(display_name: &str) -> Value {
    json!({
        "email": format!("lg-{}@load.example", Uuid::now_v7()),
        "display_name": display_name,
        "password": PASSWORD,
    })
}

/// Everything a worker needs to build a request; cheap to clone.
#[derive(Clone)]
struct Target {
    client: Client,
    base: String,
    accounts: Arc<Vec<Account>>,
}

impl Target {
    /// One measured command; `r` is a per-request random number.
    async fn request(self, mode: Mode, r: u64) -> Outcome {
        let req = match mode {
            Mode::Fresh => self
                .client
                .post(format!("{}/v1/users", self.base))
                .json(&new_user_body(&format!("lg-{:08x}", r as u32))),
            Mode::Hot => {
                let user = self.pick(r);
                self.client
                    .post(format!("{}/v1/users/{}/profile", self.base, user.id))
                    .bearer_auth(&user.token)
                    .json(&json!({ "display_name": format!("hot-{r:016x}") }))
            }
            Mode::Mixed => {
                let user = self.pick(r);
                self.client
                    .post(format!("{}/v1/orders", self.base))
                    .bearer_auth(&user.token)
                    .json(&order_body(user.id, r))
            }
        };
        common::send_command(req).await
    }

    fn pick(&self, r: u64) -> Account {
        // Setup guarantees at least one account in hot and mixed modes.
        let len = self.accounts.len().max(1) as u64;
        self.accounts
            .get((r % len) as usize)
            .cloned()
            .unwrap_or(Account {
                id: Uuid::nil(),
                token: String::new(),
            })
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
