//! Why the relay stopped publishing; each is retried after a backoff (see `Relay::run`).

use std::time::Duration;

use crate::publish::PublishError;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("Kafka client error")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("publishing failed")]
    Publish(#[from] PublishError),
    #[error("lost the relay lock")]
    LostLock,
    /// A database wait passed `relay.database_timeout_ms`: a connection whose peer went away
    /// without closing it (a host lost in a failover, a network partition) never answers,
    /// and a statement waiting on a lock may wait for ever; either held the relay with
    /// `relay_active` at 1 and its lag gauges frozen, so no alert fired.
    #[error("the database did not answer within {limit:?} ({what})")]
    Unanswered { what: &'static str, limit: Duration },
    #[error("the task reading the next batch ended abnormally")]
    Reader(#[source] tokio::task::JoinError),
    #[error("the schema registry client cannot be set up")]
    RegistryClient(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("registering the schema of {event_type} failed")]
    Registry {
        event_type: String,
        #[source]
        source: schemas::SchemaError,
    },
    /// A bug: the active phase panicked. It ends like any failure (the lock's connection is
    /// closed with it, so a standby may take over) and is retried after the backoff; left to
    /// unwind, it ended the relay's thread for good while the command API went on serving
    /// and `relay_active` stayed 1.
    #[error("the relay panicked: {0}")]
    Panicked(String),
    /// The stored checkpoint names a transaction id this cluster has not handed out: it was
    /// taken on another cluster (the store copied by a dump and restore, or by logical
    /// replication). Events appended here sort before it and would never be published; the
    /// relay publishes nothing until an operator sets the checkpoint
    /// (`command-api relay-checkpoint reset --to <position>`).
    #[error(
        "the relay checkpoint's transaction id {checkpoint} is not this cluster's (it has \
         handed out ids below {next} only): the store was copied from another cluster"
    )]
    CheckpointOfAnotherCluster { checkpoint: u64, next: u64 },
}

impl RelayError {
    /// The event the brokers refuse for good, and their error ([`PublishError::refusal`]).
    pub(crate) fn refusal(&self) -> Option<(uuid::Uuid, rdkafka::error::RDKafkaErrorCode)> {
        match self {
            RelayError::Publish(error) => error.refusal(),
            _ => None,
        }
    }
}
