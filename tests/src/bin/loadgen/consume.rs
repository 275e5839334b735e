//! `loadgen consume`: a raw consumer, the baseline of `projector replay --from kafka`: reads
//! every partition of the given topics from its start to its high watermark (taken first),
//! touching each message's payload and headers and nothing more, and prints messages/s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Kafka bootstrap servers (loopback only).
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topics to read, comma-separated.
    #[arg(long)]
    topics: String,
}

pub async fn run(args: ConsumeArgs) -> Result<()> {
    if !args
        .bootstrap
        .split(',')
        .all(|b| b.starts_with("127.") || b.starts_with("localhost"))
    {
        bail!("--bootstrap must be loopback");
    }
    tokio::task::spawn_blocking(move || consume(&args))
        .await
        .context("the consuming thread")?
}

fn consume(args: &ConsumeArgs) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", format!("raw-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("socket.nagle.disable", "true")
        .create()?;
    let timeout = Duration::from_secs(10);
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for topic in args.topics.split(',') {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        for partition in 0..partitions as i32 {
            let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
            if high > low {
                ends.insert((topic.to_owned(), partition), high);
                assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
            }
        }
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let (mut messages, mut bytes) = (0u64, 0u64);
    while !ends.is_empty() {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("gave up after 600 s with {messages} messages read");
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        let key = (message.topic().to_owned(), message.partition());
        let Some(&end) = ends.get(&key) else { continue };
        if message.offset() + 1 >= end {
            ends.remove(&key);
        }
        messages += 1;
        bytes += message.payload().map_or(0, <[u8]>::len) as u64;
        bytes += message.headers().map_or(0, |h| {
            h.iter()
                .map(|h| h.value.map_or(0, <[u8]>::len))
                .sum::<usize>()
        }) as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "raw consumer: {messages} messages ({:.1} MB) in {secs:.2} s, {:.0} messages/s",
        bytes as f64 / 1e6,
        messages as f64 / secs
    );
    Ok(())
}
