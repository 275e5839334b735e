//! Running the projections: one consumer per process hands each projection the messages of
//! its topics ([`Fanout`]); each applies its batch and stores its offsets in the same
//! transaction.
//!
//! Exactly-once effect: offsets commit with the rows, so a crash replays only uncommitted
//! work; an event already applied (same aggregate sequence or lower, e.g. republished by the
//! relay after a crash) is skipped by `projection_versions`. No gap is applied over or
//! skipped: an event later than its aggregate's next sequence is held back until the missing
//! ones are applied from the event store in the same transaction ([`crate::gap`]). An event
//! that cannot be applied is rolled back to a savepoint and, by policy, dead-lettered (and the
//! aggregate's later events go on) or halts the projection.

mod apply;
mod batch;
mod catch_up;
mod fanout;
mod letters;
mod log_reset;
mod positions;

pub use fanout::Fanout;

use infra::settings::Settings;
use rdkafka::message::{BorrowedMessage, Message as _};
use sqlx::PgPool;

use crate::envelope::{Envelope, Headers, Source};
use crate::projection::Projection;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("Kafka error")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {0} has no partitions yet")]
    NoPartitions(String),
    #[error("applying a rebalance to the consumer failed: {0}")]
    Rebalance(String),
    #[error("projection {projection} must retry its batch: {error}")]
    Transient {
        projection: &'static str,
        error: String,
    },
    #[error("projection {projection}: the event store lacks sequences {missing:?} of {aggregate_type} {aggregate_id}, which the log skipped")]
    Unfillable {
        projection: &'static str,
        aggregate_type: String,
        aggregate_id: String,
        missing: Vec<i64>,
    },
    /// A gap's stored event was written by newer code than this projector's (a rolling update
    /// under way): applied, it would be read through an older schema or set aside for good.
    /// The batch fails and is tried again, until a newer projector takes the partition over.
    #[error("projection {projection}: the event store's {event} before {aggregate_type} {aggregate_id} is newer than this projector knows (finish the rollout)")]
    NewerThanKnown {
        projection: &'static str,
        event: String,
        aggregate_type: String,
        aggregate_id: String,
    },
    #[error("projection {projection} halted on {at:?}: {error}")]
    Halted {
        projection: &'static str,
        at: Source,
        error: String,
    },
}

/// A message taken off the consumer, owned.
struct Raw {
    source: Source,
    headers: Headers,
    payload: Vec<u8>,
}

fn own(message: &BorrowedMessage<'_>) -> Raw {
    Raw {
        source: Source {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
        },
        headers: Headers::of(message),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// A message and what decoding it gave: its envelope, or why no one can apply it.
struct Message {
    raw: Raw,
    decoded: Result<Envelope, String>,
}

/// One projection of a [`Fanout`]: applies the batches handed to it.
pub struct Runner {
    pub projection: &'static dyn Projection,
    pub pool: PgPool,
    pub settings: Settings,
}

/// What an undecodable message's headers say it is a copy of.
struct Copy<'a> {
    aggregate_type: &'a str,
    aggregate_id: &'a str,
    sequence: i64,
}

impl<'a> Copy<'a> {
    fn of(raw: &'a Raw) -> Option<Self> {
        let headers = &raw.headers;
        Some(Self {
            aggregate_type: headers.get("aggregate_type")?,
            aggregate_id: headers.get("aggregate_id")?,
            sequence: headers.get("sequence")?.parse().ok()?,
        })
    }
}
