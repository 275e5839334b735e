//! The command API: axum write endpoints over the `User`, `Order` and `Payment` aggregates.
//!
//! A request is parsed into a checked command and [`core::RequestMetadata`] ([`http`]), run on
//! the [`core::CommandBus`] (load, decide, append atomically; no HTTP types below the routes)
//! and its [`core::Outcome`] rendered as `{id, version, position}` ([`routes`]). All errors go
//! through [`error::ApiError`] into `application/problem+json`.
#![forbid(unsafe_code)]

pub mod core;
pub mod error;
pub mod http;
pub mod identity;
pub mod openapi;
pub mod routes;
pub mod startup;
pub mod state;
pub mod webhook;

pub use infra::http::StartupError;
pub use startup::{build, build_relay_only, App};
