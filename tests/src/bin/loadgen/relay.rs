//! `loadgen relay`: relay throughput next to a raw producer, in one run, on one broker.
//!
//! 1. Commits `--events` events in one transaction straight into the events table of a database
//!    whose command API is running the relay, and times how long the relay takes to have all of
//!    them acknowledged by the broker (its checkpoint reaching the last one): commit to ack.
//!    They are valid events (profile changes of 1,000 users, with RFC 3339 times), so that a
//!    projector running beside it applies them instead of dead-lettering every one.
//! 2. Sends as many messages of the same size (the relay's average Avro payload plus the same
//!    twelve headers) with a raw rdkafka producer configured like the relay's (idempotent,
//!    acks=all), enqueuing all and awaiting every acknowledgement.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sqlx::{Connection, PgConnection};

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Database of the command API whose relay is measured (loopback only).
    #[arg(long)]
    database_url: String,
    /// Kafka bootstrap servers (loopback only).
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Events to commit and messages to send.
    #[arg(long, default_value_t = 50_000)]
    events: i64,
    /// Give up waiting for the relay after this long.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn loopback(what: &str, value: &str) -> anyhow::Result<()> {
    let ok = ["127.", "localhost", "[::1]", "@127.", "@localhost"]
        .iter()
        .any(|needle| value.contains(needle));
    if !ok {
        bail!("{what} must point at this machine (loopback), got {value}");
    }
    Ok(())
}

pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    loopback("--database-url", &args.database_url)?;
    loopback("--bootstrap", &args.bootstrap)?;
    let mut db = PgConnection::connect(&args.database_url)
        .await
        .context("connecting to the database")?;
    let (relay_secs, payload_bytes) = relay_run(&mut db, &args).await?;
    let raw_secs = raw_producer_run(&args, payload_bytes).await?;
    let relay_rate = args.events as f64 / relay_secs;
    let raw_rate = args.events as f64 / raw_secs;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"events": args.events, "payload_bytes": payload_bytes,
                "relay_secs": relay_secs, "relay_events_per_sec": relay_rate,
                "raw_secs": raw_secs, "raw_messages_per_sec": raw_rate, "ratio": relay_rate / raw_rate})
        );
    } else {
        println!(
            "loadgen relay events={} avg_payload={payload_bytes} bytes",
            args.events
        );
        println!("relay (commit -> broker ack): {relay_rate:.0} events/s ({relay_secs:.2} s)");
        println!("raw producer (send -> ack):   {raw_rate:.0} messages/s ({raw_secs:.2} s)");
        println!("ratio relay / raw producer:   {:.2}", relay_rate / raw_rate);
    }
    Ok(())
}

const INSERT_SQL: &str = r#"
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                    metadata, event_id)
SELECT 'user', md5($1 || '-' || (i % 1000))::uuid::text, i / 1000 + 1, 'UserProfileChanged', '1',
       jsonb_build_object('type', 'UserProfileChanged', 'display_name', 'Bench user ' || i,
                          'preferences', NULL),
       jsonb_build_object('event_id', gen_random_uuid()::text,
                          'occurred_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                          'actor', 'loadgen', 'correlation_id', gen_random_uuid()::text,
                          'causation_id', gen_random_uuid()::text,
                          'traceparent', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'),
       gen_random_uuid()
FROM generate_series(0, $2 - 1) AS i
RETURNING global_position
"#;

/// Commits the events and waits for the relay's checkpoint to pass the last of them.
async fn relay_run(db: &mut PgConnection, args: &RelayArgs) -> anyhow::Result<(f64, usize)> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let positions: Vec<i64> = sqlx::query_scalar(INSERT_SQL)
        .bind(&run)
        .bind(args.events)
        .fetch_all(&mut *db)
        .await
        .context("inserting the benchmark events")?;
    let committed = Instant::now();
    let last = positions.into_iter().max().context("no events inserted")?;
    let deadline = committed + Duration::from_secs(args.timeout_secs);
    loop {
        let done: Option<bool> = sqlx::query_scalar(
            "SELECT (c.tx_id, c.global_position) >= (e.tx_id, e.global_position)
             FROM relay_checkpoints c, events e WHERE c.name = 'default' AND e.global_position = $1",
        )
        .bind(last)
        .fetch_optional(&mut *db)
        .await?;
        if done == Some(true) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the relay did not publish {} events within {} s (is it running?)",
                args.events,
                args.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = committed.elapsed().as_secs_f64();
    // Avro size of one such event: union tag, string length, the name, union tag (null).
    let payload_bytes = 1 + 1 + "Bench user 25000".len() + 1;
    Ok((secs, payload_bytes))
}

async fn raw_producer_run(args: &RelayArgs, payload_bytes: usize) -> anyhow::Result<f64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "2")
        .create()
        .context("creating the raw producer")?;
    let topic = format!("loadgen-raw-{}", uuid::Uuid::now_v7().simple());
    create_topic(&args.bootstrap, &topic).await?;
    // Confluent framing (5 bytes) plus the Avro body, like the relay's messages.
    let payload = vec![0u8; 5 + payload_bytes];
    let value = "0190a000-0000-7000-8000-000000000001";
    let headers = [
        "event_id",
        "event_type",
        "event_version",
        "aggregate_type",
        "aggregate_id",
        "sequence",
        "global_position",
        "correlation_id",
        "causation_id",
        "traceparent",
    ]
    .iter()
    .fold(OwnedHeaders::new_with_capacity(12), |h, key| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    });
    let started = Instant::now();
    let mut pending = Vec::with_capacity(args.events as usize);
    for i in 0..args.events {
        let key = format!("relay-bench-{}", i % 1000);
        loop {
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&payload)
                .headers(headers.clone());
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    for delivery in pending {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => bail!("raw producer delivery failed: {error}"),
            Err(_) => bail!("raw producer delivery cancelled"),
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Creates the raw producer's topic like the relay's (3 partitions, the cluster's replication
/// factor; the local clusters do not create topics on first use).
async fn create_topic(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating the admin client")?;
    let new = NewTopic::new(topic, 3, TopicReplication::Fixed(-1));
    for result in admin.create_topics([&new], &AdminOptions::new()).await? {
        if let Err((name, code)) = result {
            bail!("creating topic {name} failed: {code:?}");
        }
    }
    Ok(())
}
