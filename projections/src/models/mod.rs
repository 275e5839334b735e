//! The read models. Each `apply` folds one event into its tables inside the projector's
//! transaction; events carry what readers need, so no business rule is recomputed here.

pub mod analytics;
pub mod audit;
pub mod orders;
pub mod payments;
pub mod users;

use crate::envelope::Envelope;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("payload of {event_type} does not decode into a domain event")]
    Payload {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A side effect failed in a way that may succeed later (the process manager's command
    /// API unreachable, a version conflict): the batch is retried, never dead-lettered.
    #[error("transient failure: {0}")]
    Transient(String),
    /// A side effect was refused in a way retrying cannot change.
    #[error("rejected: {0}")]
    Rejected(String),
}

/// Decodes the payload into `E` (a domain event enum).
pub fn event<E: serde::de::DeserializeOwned>(envelope: &Envelope) -> Result<E, ApplyError> {
    serde_json::from_value(envelope.payload.clone()).map_err(|source| ApplyError::Payload {
        event_type: envelope.event_type.clone(),
        source,
    })
}

/// The aggregate id as a UUID (every aggregate id is one).
pub fn id(envelope: &Envelope) -> Result<uuid::Uuid, ApplyError> {
    envelope
        .aggregate_id
        .parse()
        .map_err(|_| ApplyError::Payload {
            event_type: envelope.event_type.clone(),
            source: serde::de::Error::custom("aggregate id is not a UUID"),
        })
}
