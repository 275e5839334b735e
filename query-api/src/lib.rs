//! The query API: every read route of the HTTP contract (`docs/api.md`) over the read models
//! the projector maintains, with a change-notified cache ([`cache`]), `min_version` waits for
//! read-your-writes, `ETag`/`If-None-Match`, and keyset pagination.
#![forbid(unsafe_code)]

pub mod cache;
mod error;
mod openapi;
mod params;
mod routes;
mod startup;

pub use error::QueryError;
pub use infra::http::StartupError;
pub use startup::{build, router, App};
