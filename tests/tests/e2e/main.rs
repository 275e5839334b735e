//! End-to-end tests: the real services (command API, relay, schema registry, projector, query
//! API) against a real PostgreSQL and Apache Kafka. One binary (this file's modules) to keep
//! link time down.
//!
//! Every test makes its own database and topics. The harness is in [`support`]; each test file
//! imports from there only, never from another test file. Tests that stop PostgreSQL or a
//! broker run private instances of their own (`support::database::PrivateCluster`,
//! `support::kafka::Broker`).

mod support;

mod admin_console;
mod as_of;
mod audit_export;
mod bad_input;
mod bounded;
mod cli;
mod command_api_killed;
mod concurrency;
mod customer_value;
mod event_store;
mod faults;
mod gaps;
mod hostile_input;
mod idempotency;
mod identity;
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
mod replay;
mod restart;
mod scale_out;
mod skeleton;
mod tracing;
mod users;
mod version_waits;
