//! `loadgen seed`: writes a commerce history straight into an event store's events table, for
//! the replay benchmark (a million events through the command API would take minutes). Every
//! payload is checked by decoding it into its domain event and stored as that event
//! serialises, with the version the domain declares, so the history is one the command API
//! could have written: customers register (some add an address or rename themselves), order,
//! pay; a third of the orders are cancelled and refunded, the rest shipped and half of those
//! delivered. Days spread over a year and three currencies, for the analytics model.

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Duration, Utc};
use clap::Args;
use domain::{NamedEvent, OrderEvent, PaymentEvent, UserEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// The event store's database.
    #[arg(long)]
    pub database_url: String,
    /// Events to write (at least; the last customer's history is written whole).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
}

/// Events per COPY (each its own transaction).
const BATCH: usize = 50_000;

struct Writer {
    rows: String,
    written: u64,
}

impl Writer {
    /// Checks `payload` against the domain event `E` and adds its row.
    fn push<E: DeserializeOwned + Serialize + NamedEvent>(
        &mut self,
        aggregate: (&str, Uuid, i64),
        payload: Value,
        at: DateTime<Utc>,
        actor: Uuid,
    ) -> Result<()> {
        let event: E = serde_json::from_value(payload.clone())
            .with_context(|| format!("payload {payload} is no domain event"))?;
        let stored = serde_json::to_value(&event)?;
        let event_type = stored["type"].as_str().unwrap_or_default().to_owned();
        let version = E::catalogue()
            .iter()
            .find(|(t, _)| *t == event_type)
            .map(|(_, v)| *v)
            .with_context(|| format!("{event_type} is not in its catalogue"))?;
        let event_id = Uuid::now_v7();
        let metadata = json!({
            "event_id": event_id.to_string(),
            "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "actor": actor.to_string(),
            "correlation_id": Uuid::new_v4().to_string(),
            "causation_id": Uuid::new_v4().to_string(),
            "traceparent": "",
        });
        let (aggregate_type, id, sequence) = aggregate;
        for field in [
            aggregate_type.to_owned(),
            id.to_string(),
            sequence.to_string(),
            event_type,
            version.to_owned(),
            stored.to_string(),
            metadata.to_string(),
        ] {
            // JSON text has no raw tabs or newlines; backslashes are COPY's escape character.
            self.rows.push_str(&field.replace('\\', "\\\\"));
            self.rows.push('\t');
        }
        self.rows.push_str(&event_id.to_string());
        self.rows.push('\n');
        self.written += 1;
        Ok(())
    }
}

/// One customer's history (10 to 13 events).
fn customer(w: &mut Writer, n: u64, at: DateTime<Utc>) -> Result<()> {
    let (user, order, payment) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let currency = ["EUR", "USD", "GBP"][(n % 3) as usize];
    let minute = |m: i64| at + Duration::minutes(m);
    let address = json!({"label": "home", "line1": format!("{n} Main St"), "line2": null,
        "city": "Berlin", "postal_code": "10115", "country": "DE"});
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    w.push::<UserEvent>(
        ("user", user, next()),
        json!({"type": "UserRegistered",
        "email": format!("seed-{n}@example.com"), "display_name": format!("Customer {n}"),
        "roles": ["customer"]}),
        minute(0),
        user,
    )?;
    if n % 3 == 1 {
        w.push::<UserEvent>(
            ("user", user, next()),
            json!({"type": "UserAddressAdded",
            "address_id": Uuid::new_v4(), "address": address.clone()}),
            minute(1),
            user,
        )?;
    }
    if n.is_multiple_of(2) {
        w.push::<UserEvent>(
            ("user", user, next()),
            json!({"type": "UserProfileChanged",
            "display_name": format!("Customer {n} (renamed)"), "preferences": null}),
            minute(2),
            user,
        )?;
    }
    let (quantity, price) = (1 + n % 3, 500 + (n % 40) as i64 * 125);
    let total = quantity as i64 * price;
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    w.push::<OrderEvent>(
        ("order", order, next()),
        json!({"type": "OrderPlaced",
        "customer_id": user, "currency": currency, "total_minor": total,
        "items": [{"sku": format!("SKU-{}", 1 + n % 20), "quantity": quantity,
            "unit_price_minor": price, "line_total_minor": total}],
        "shipping_address": address}),
        minute(3),
        user,
    )?;
    let mut pay_seq = 0;
    let mut pay_next = || {
        pay_seq += 1;
        pay_seq
    };
    let pay = |w: &mut Writer, seq: i64, body: Value, m: i64| {
        w.push::<PaymentEvent>(("payment", payment, seq), body, minute(m), user)
    };
    pay(
        w,
        pay_next(),
        json!({"type": "PaymentInitiated", "order_id": order,
        "amount_minor": total, "currency": currency, "method": "card"}),
        4,
    )?;
    pay(
        w,
        pay_next(),
        json!({"type": "PaymentAuthorized", "order_id": order,
        "amount_minor": total, "currency": currency}),
        5,
    )?;
    pay(
        w,
        pay_next(),
        json!({"type": "PaymentCaptured", "order_id": order,
        "amount_minor": total, "currency": currency, "captured_total_minor": total}),
        6,
    )?;
    w.push::<OrderEvent>(
        ("order", order, next()),
        json!({"type": "OrderConfirmed"}),
        minute(7),
        user,
    )?;
    if n.is_multiple_of(3) {
        w.push::<OrderEvent>(
            ("order", order, next()),
            json!({"type": "OrderCancelled",
            "reason": "changed mind", "cancelled_from": "confirmed"}),
            minute(8),
            user,
        )?;
        pay(
            w,
            pay_next(),
            json!({"type": "PaymentRefunded", "order_id": order,
            "amount_minor": total, "currency": currency, "reason": "order cancelled",
            "refunded_total_minor": total, "fully_refunded": true}),
            9,
        )?;
    } else {
        w.push::<OrderEvent>(
            ("order", order, next()),
            json!({"type": "OrderProcessingStarted"}),
            minute(60),
            user,
        )?;
        w.push::<OrderEvent>(
            ("order", order, next()),
            json!({"type": "OrderShipped",
            "carrier": "DHL", "tracking_number": format!("T{n:08}")}),
            minute(600),
            user,
        )?;
        if n % 2 == 1 {
            w.push::<OrderEvent>(
                ("order", order, next()),
                json!({"type": "OrderDelivered"}),
                minute(3000),
                user,
            )?;
        }
    }
    Ok(())
}

pub async fn run(args: SeedArgs) -> Result<()> {
    ensure!(args.events > 0, "--events must be positive");
    let mut conn = PgConnection::connect(&args.database_url)
        .await
        .context("connecting to the event store")?;
    let start = Utc::now() - Duration::days(365);
    let mut w = Writer {
        rows: String::new(),
        written: 0,
    };
    let mut n = 0u64;
    let mut pending = 0;
    while w.written < args.events {
        let before = w.written;
        customer(
            &mut w,
            n,
            start + Duration::seconds((n * 97 % 31_536_000) as i64),
        )?;
        pending += (w.written - before) as usize;
        n += 1;
        if pending >= BATCH || w.written >= args.events {
            let mut copy = conn
                .copy_in_raw(
                    "COPY events (aggregate_type, aggregate_id, sequence, event_type, \
                     event_version, payload, metadata, event_id) FROM STDIN",
                )
                .await?;
            copy.send(w.rows.as_bytes()).await?;
            copy.finish().await?;
            w.rows.clear();
            pending = 0;
        }
    }
    println!("seeded {} events ({n} customers)", w.written);
    Ok(())
}
