//! The command API: axum write endpoints over the `User`, `Order` and `Payment` aggregates.
//!
//! A request is parsed into a checked command ([`http`]), run on the [`bus::CommandBus`]
//! (load, decide, append atomically) and answered with `{id, version, position}`. All errors go
//! through [`error::ApiError`] into `application/problem+json`.
#![forbid(unsafe_code)]

pub mod bus;
pub mod error;
pub mod http;
pub mod openapi;
pub mod routes;
pub mod startup;
pub mod state;

pub use infra::http::StartupError;
pub use startup::{build, build_relay_only, App};
