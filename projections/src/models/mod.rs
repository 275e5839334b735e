//! The read models, one file each, and [`READ_MODELS`], the one list the runner, `projector
//! verify` and replay iterate. Each folds one event into its tables inside the projector's
//! transaction; events carry what readers need, so no business rule is recomputed here.
//!
//! Adding a read model: a file here implementing `ReadModel` (and its `mod` line), a migration
//! creating its tables, and its entry in [`READ_MODELS`]; the runner, verify and replay need
//! nothing else.

pub mod analytics;
pub mod audit;
pub mod customer_value;
pub mod orders;
pub mod payments;
pub mod users;

use crate::envelope::Envelope;
pub use crate::projection::ApplyError;
use crate::projection::ReadModel;

/// Every read model, in the order they are started and verified.
pub static READ_MODELS: &[&dyn ReadModel] = &[
    &users::Users,
    &orders::Orders,
    &payments::Payments,
    &analytics::Analytics,
    &audit::Audit,
    &customer_value::CustomerValue,
];

/// Decodes the payload into `E` (a domain event enum).
pub fn event<E: serde::de::DeserializeOwned>(envelope: &Envelope) -> Result<E, ApplyError> {
    E::deserialize(&envelope.payload).map_err(|source| ApplyError::Payload {
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
