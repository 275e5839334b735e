//! The one error type of the event contracts: a schema that does not parse, a value that does
//! not fit its schema, or a registry call that failed (unreachable is told apart, as it may
//! succeed later).

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema of {event_type} v{version} is invalid")]
    Invalid {
        event_type: String,
        version: u32,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("schema of {event_type} is not a record")]
    NotARecord { event_type: String },
    #[error("no schema for event type {0}")]
    UnknownEvent(String),
    #[error("value at {path} does not fit the schema (expected {expected})")]
    Mismatch { path: String, expected: String },
    #[error("Avro encoding failed")]
    Avro(#[source] Box<apache_avro::Error>),
    #[error("schema registry call failed: {0}")]
    Registry(String),
    /// The registry could not be reached; the same call may succeed later.
    #[error("schema registry unreachable: {0}")]
    RegistryUnreachable(String),
}
