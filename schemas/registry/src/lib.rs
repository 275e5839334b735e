//! A Confluent Schema Registry compatible REST API backed by PostgreSQL (Avro schemas), and the
//! `schema-registry` service that serves it.
//!
//! Implemented: register (`POST /subjects/{s}/versions`, idempotent), look up a schema under a
//! subject (`POST /subjects/{s}`), schema by id, subjects, versions, a version or `latest` (and
//! its raw schema), compatibility checks against a version or all live ones, global and
//! per-subject compatibility levels, and soft deletion of versions and subjects. Responses use
//! `application/vnd.schemaregistry.v1+json` and Confluent's error codes. Writes need HTTP Basic
//! credentials; reads are open ([`auth`]).
//!
//! The event contracts themselves (schema files, conversion, wire format) live in the `schemas`
//! crate, which depends on neither HTTP serving nor the database.
#![forbid(unsafe_code)]

pub mod auth;
mod compat;
mod error;
mod routes;
pub mod service;
mod store;

pub use compat::{reads_all, Level};
pub use error::{RegistryError, CONTENT_TYPE};
pub use routes::routes;
pub use store::Store;
