//! The event contracts: Avro schemas of every event type and version (`schemas/avro/`),
//! conversion between the events' JSON form and Avro ([`convert`]), and the Confluent wire format
//! through a schema registry ([`wire`]). The tests under `tests/` are the compatibility gate:
//! every newer version stays compatible with all older ones, and every old version has an
//! upcast fixture under `fixtures/`.
//!
//! This crate is a library for producers and consumers alike; it neither serves HTTP nor talks
//! to the database. The registry service is the `schema-registry` crate (`schemas/registry/`).
#![forbid(unsafe_code)]

pub mod catalogue;
pub mod convert;
mod error;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod wire;

pub use catalogue::{catalogue, latest, EventSchema, SchemaFile};
pub use error::SchemaError;
