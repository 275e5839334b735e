//! `projector replay --from kafka`: the first pass reads the models' topics instead of the
//! events table, from their start to the high watermarks taken when it starts, decoding each
//! message as the runner does (Avro through the schema registry, the relay's headers).
//!
//! A topic may hold an event twice (the relay publishes again after a crash) or lack one (see
//! `crate::gap`): an event at or below its aggregate's folded sequence is skipped, and the
//! sequences missing before one are taken from the event store first, as the runner does. The
//! topics must hold the whole history (the event topics are kept forever, `docs/operations.md`).
//! What the topics did not have yet is left to the catch-up rounds, which read the event store
//! from the transaction of the oldest last message among the topics (the relay publishes in
//! transaction order, so everything of older transactions was in the topics) or of the relay's
//! checkpoint read before the watermarks, whichever is older (the watermarks are read one
//! partition after another), or from the present snapshot's xmin when the pass folded
//! everything before it, and skip what the pass folded.

use std::collections::HashMap;
use std::time::Duration;

use infra::settings::Settings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use schemas::wire::EventDecoder;
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::ReplayError;
use crate::envelope::{Envelope, Headers, Source};
use crate::rebuild::{Applied, Last, Pass, Target};

/// How long the brokers get to answer metadata and watermark requests.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages handed from the consuming thread at a time.
const HANDFUL: usize = 1000;
/// A poll that returns nothing this long, with partitions left to read, fails the replay.
const STALLED: Duration = Duration::from_secs(60);

/// A message off the topics, owned.
struct Raw {
    source: Source,
    headers: Headers,
    payload: Vec<u8>,
}

/// A message as the fold needs it: decoded into what a consumer sees, with its headers' key,
/// sequence and position.
struct Decoded {
    topic: String,
    key: (String, String),
    /// `Err` describes a message without a sequence (the replay fails on it, in order).
    sequence: Result<i64, String>,
    position: Option<i64>,
    event_id: uuid::Uuid,
    envelope: Result<Envelope, String>,
}

/// How long a replay waits for an unreachable schema registry before it fails.
const REGISTRY_PATIENCE: Duration = Duration::from_secs(120);

/// Decodes the handfuls on a task of its own (the Avro decode and the envelope are most of a
/// message's cost), so that the fold runs beside it; ends when either side closes, or fails
/// when the schema registry stays unreachable (see [`decode_one`]).
async fn decode(
    registry_url: String,
    mut raws: mpsc::Receiver<Vec<Raw>>,
    out: mpsc::Sender<Vec<Decoded>>,
) -> Result<(), String> {
    let decoder = EventDecoder::new(&registry_url);
    while let Some(handful) = raws.recv().await {
        let mut decoded = Vec::with_capacity(handful.len());
        for raw in handful {
            decoded.push(decode_one(&decoder, raw).await?);
        }
        if out.send(decoded).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Decodes one message. The registry being unreachable says nothing about the message: it
/// waits for it (as the projector does) rather than count the message undecodable and fold
/// the aggregate's later events over the hole, and fails the replay past
/// [`REGISTRY_PATIENCE`].
async fn decode_one(decoder: &EventDecoder, raw: Raw) -> Result<Decoded, String> {
    let started = std::time::Instant::now();
    let mut backoff = Duration::from_millis(200);
    let decoded = loop {
        match decoder.decode(&raw.payload).await {
            Err(schemas::SchemaError::RegistryUnreachable(error)) => {
                if started.elapsed() > REGISTRY_PATIENCE {
                    return Err(format!(
                        "the schema registry stayed unreachable for {REGISTRY_PATIENCE:?}: {error}"
                    ));
                }
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64,
                    "schema registry unreachable: the replay waits");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => break other,
        }
    };
    Ok(decoded_message(raw, decoded))
}

fn decoded_message(
    raw: Raw,
    decoded: Result<schemas::wire::Decoded, schemas::SchemaError>,
) -> Decoded {
    let header = |name: &str| raw.headers.get(name).unwrap_or_default();
    let sequence = header("sequence").parse::<i64>().map_err(|_| {
        format!(
            "{}/{}@{}: no sequence header",
            raw.source.topic, raw.source.partition, raw.source.offset
        )
    });
    let key = (
        header("aggregate_type").to_owned(),
        header("aggregate_id").to_owned(),
    );
    let position = header("global_position").parse().ok();
    let event_id = header("event_id").parse().unwrap_or_default();
    let topic = raw.source.topic.clone();
    let envelope = match decoded {
        Ok(decoded) => {
            Envelope::of_decoded(raw.source, raw.headers, decoded).map_err(|e| e.to_string())
        }
        Err(error) => Err(crate::error_chain(&error)),
    };
    Decoded {
        key,
        sequence,
        position,
        event_id,
        envelope,
        topic,
    }
}

/// What the first pass folded, and the transaction the catch-up starts from.
pub(super) struct FromTopics {
    pub applied: Applied,
    pub catch_up_from: String,
}

/// Reads every partition of `topics` from its start to its high watermark (taken first) on a
/// thread of its own, handing messages over in handfuls.
fn consume(
    settings: &Settings,
    topics: &[String],
    out: mpsc::Sender<Vec<Raw>>,
) -> Result<(), String> {
    let consumer: BaseConsumer = infra::kafka::base(&settings.kafka)
        .set("group.id", format!("replay-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| e.to_string())?;
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        for (partition, low, high) in infra::kafka::watermarks(&consumer, topic, BROKER_TIMEOUT)? {
            if high > low {
                ends.insert((topic.clone(), partition), high);
                assignment
                    .add_partition_offset(topic, partition, Offset::Offset(low))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    let mut handful = Vec::with_capacity(HANDFUL);
    let mut quiet = std::time::Instant::now();
    while !ends.is_empty() {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            if quiet.elapsed() > STALLED {
                return Err(format!("no message from the brokers for {STALLED:?}"));
            }
            continue;
        };
        quiet = std::time::Instant::now();
        let message = message.map_err(|e| e.to_string())?;
        let key = (message.topic().to_owned(), message.partition());
        let Some(&end) = ends.get(&key) else { continue };
        if message.offset() >= end {
            continue;
        }
        if message.offset() + 1 >= end {
            ends.remove(&key);
        }
        handful.push(Raw {
            source: Source {
                topic: key.0,
                partition: key.1,
                offset: message.offset(),
            },
            headers: Headers::of(&message),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        });
        if handful.len() == HANDFUL && out.blocking_send(std::mem::take(&mut handful)).is_err() {
            return Ok(());
        }
    }
    if !handful.is_empty() {
        let _ = out.blocking_send(handful);
    }
    Ok(())
}

/// The first pass from the topics (see the module documentation).
pub(super) async fn fold_topics(
    pool: &PgPool,
    settings: &Settings,
    targets: &mut [Target],
    progress: &mut dyn FnMut(u64),
) -> Result<FromTopics, ReplayError> {
    let topics: Vec<String> = crate::rebuild::aggregate_types(targets)
        .iter()
        .map(|t| infra::kafka::topic_for(&settings.kafka.topic_prefix, t))
        .collect();
    // Read before the watermarks are: every event the relay had acknowledged by then is on
    // the topics below them. The watermarks are taken one partition after another, so the
    // newest message of one partition can be of a later transaction than another partition
    // had when its watermark was read; the checkpoint bounds the catch-up whatever they say.
    let acknowledged: Option<String> =
        sqlx::query_scalar("SELECT tx_id::text FROM relay_checkpoints ORDER BY tx_id LIMIT 1")
            .fetch_optional(pool)
            .await?;
    let (sender, handfuls) = mpsc::channel(4);
    let consuming = tokio::task::spawn_blocking({
        let (settings, topics) = (settings.clone(), topics.clone());
        move || consume(&settings, &topics, sender)
    });
    let (decoded_out, mut decoded) = mpsc::channel(8);
    let decoding = tokio::spawn(decode(
        settings.schema_registry.url.clone(),
        handfuls,
        decoded_out,
    ));
    let mut pass = Pass::new(pool, targets).await?;
    // The newest global position seen per topic.
    let mut newest: HashMap<String, i64> = HashMap::new();
    while let Some(handful) = decoded.recv().await {
        for message in handful {
            let Decoded {
                topic,
                key,
                sequence,
                position,
                event_id,
                envelope,
            } = message;
            let sequence = sequence.map_err(ReplayError::Source)?;
            if let Some(position) = position {
                let top = newest.entry(topic).or_default();
                *top = (*top).max(position);
            }
            let folded = pass.applied.get(&key).copied().unwrap_or(0);
            if sequence <= folded {
                continue; // published twice
            }
            if sequence > folded + 1 {
                fill(pool, &mut pass, &key, folded, sequence, progress).await?;
                let now = pass.applied.get(&key).copied().unwrap_or(0);
                if now + 1 != sequence {
                    return Err(ReplayError::Source(format!(
                        "the event store lacks sequences {} to {} of {} {}, which the topic skipped",
                        now + 1,
                        sequence - 1,
                        key.0,
                        key.1
                    )));
                }
            }
            let envelope = envelope.as_ref().map_err(String::as_str);
            pass.add(key, sequence, event_id, envelope, progress)
                .await?;
        }
    }
    // The decoding task ends when the consumer does (or panics, which must not pass for the
    // end of the topics).
    decoding
        .await
        .map_err(|e| ReplayError::Source(format!("decoding the messages: {e}")))?
        .map_err(ReplayError::Source)?;
    consuming
        .await
        .map_err(|e| ReplayError::Source(e.to_string()))?
        .map_err(ReplayError::Source)?;
    let applied = pass.finish(Last::Keep, progress).await?;
    // Every topic's newest message was published; the oldest of their transactions bounds
    // what all the topics held.
    let mut catch_up_from = None::<String>;
    for topic in &topics {
        let tx: Option<String> = match newest.get(topic) {
            None => None,
            Some(position) => {
                sqlx::query_scalar("SELECT tx_id::text FROM events WHERE global_position = $1")
                    .bind(position)
                    .fetch_optional(pool)
                    .await?
            }
        };
        let tx = tx.unwrap_or_else(|| "0".to_owned());
        catch_up_from = Some(match catch_up_from {
            Some(current) if current.parse::<u64>().ok() <= tx.parse::<u64>().ok() => current,
            _ => tx,
        });
    }
    let types = crate::rebuild::aggregate_types(targets);
    let catch_up_from = match (catch_up_from, acknowledged) {
        (Some(newest), Some(acknowledged))
            if acknowledged.parse::<u64>().ok() < newest.parse::<u64>().ok() =>
        {
            acknowledged
        }
        (newest, _) => newest.unwrap_or_else(|| "0".to_owned()),
    };
    let catch_up_from = past_what_was_folded(pool, &applied, &types, catch_up_from).await?;
    Ok(FromTopics {
        applied,
        catch_up_from,
    })
}

/// Where the catch-up starts: `from`, the transaction that bounds what the topics held, or
/// the present snapshot's xmin when the pass folded every event of the transactions between
/// the two. A transaction may write many events (the replay bench's seed writes 50,000 in
/// each), and every set's catch-up read those of its types again only to skip them: about
/// 0.5 s per model.
async fn past_what_was_folded(
    pool: &PgPool,
    applied: &Applied,
    types: &[&str],
    from: String,
) -> Result<String, sqlx::Error> {
    use futures::TryStreamExt;
    let mut conn = pool.acquire().await?;
    // Every transaction before it has ended: the next statement sees all those committed.
    let to = super::xmin(&mut conn).await?;
    let mut keys = sqlx::query_as::<_, (String, String, i64)>(
        "SELECT e.aggregate_type, e.aggregate_id, e.sequence FROM events e
         WHERE e.tx_id >= $1::text::xid8 AND e.tx_id < $2::text::xid8
           AND e.aggregate_type = ANY($3)",
    )
    .bind(from.clone())
    .bind(to.clone())
    .bind(types)
    .fetch(&mut *conn);
    while let Some((aggregate_type, aggregate_id, sequence)) = keys.try_next().await? {
        let folded = applied.get(&(aggregate_type, aggregate_id)).copied();
        if folded.is_none_or(|folded| sequence > folded) {
            return Ok(from);
        }
    }
    Ok(to)
}

/// Folds the sequences `(folded, before)` of `key` from the event store (missing from the
/// topics).
async fn fill(
    pool: &PgPool,
    pass: &mut Pass<'_>,
    key: &(String, String),
    folded: i64,
    before: i64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {columns} FROM events e
         WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 AND e.sequence > $3 AND e.sequence < $4
         ORDER BY e.sequence",
        columns = crate::stored::COLUMNS
    ))
    .bind(&key.0)
    .bind(&key.1)
    .bind(folded)
    .bind(before)
    .fetch_all(pool)
    .await?;
    for row in rows {
        use sqlx::Row;
        let envelope = crate::stored::envelope(&row);
        let envelope = envelope.as_ref().map_err(String::as_str);
        pass.add(
            key.clone(),
            row.try_get("sequence")?,
            row.try_get("event_id")?,
            envelope,
            progress,
        )
        .await?;
    }
    Ok(())
}
