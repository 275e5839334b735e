//! End-to-end tests of the command API over HTTP, against a real PostgreSQL.
//! One binary (this file's modules) to keep link time down.

mod bad_input;
mod bounded;
mod concurrency;
mod event_store;
mod helpers;
mod hostile_input;
mod idempotency;
mod kafka;
mod ops;
mod orders;
mod payments;
mod postgres_outage;
mod process_manager;
mod process_manager_paused;
mod projections;
mod read_side;
mod registry;
mod relay;
mod relay_parking;
mod skeleton;
mod users;
mod version_waits;
