//! Infrastructure shared by the services: settings, telemetry, the PostgreSQL pool and its
//! migrations, the event store, and the HTTP pieces every service exposes (problem responses,
//! health, readiness, metrics, graceful shutdown).
#![forbid(unsafe_code)]

pub mod db;
pub mod event_store;
pub mod http;
pub mod settings;
pub mod telemetry;

pub use secrecy;
