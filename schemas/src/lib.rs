//! Avro schemas of every event type and version (`schemas/avro/`), conversion between the
//! events' JSON form and Avro ([`convert`]), and the Confluent wire format through the schema
//! registry ([`wire`]). The `schema-registry` binary is a Confluent-compatible registry backed
//! by PostgreSQL.
#![forbid(unsafe_code)]

pub mod catalogue;
pub mod convert;
pub mod registry;
pub mod service;
pub mod wire;

pub use catalogue::{catalogue, latest, EventSchema, SchemaFile};

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
