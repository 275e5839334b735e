//! The end-to-end harness, shared by every test file. Test files import from here only, never
//! from each other.
//!
//! - [`browser`]: a headless Chromium over WebDriver, for the admin console.
//! - [`database`]: a fresh database per test, and a private PostgreSQL cluster for tests that
//!   stop the server.
//! - [`auth`]: the test identity configuration (keys, admin, clients, secrets) and login.
//! - [`app`]: the command API in this process, HTTP answers as admin or anyone, request bodies.
//! - [`commerce`]: multi-step customer flows (a paid order, a mixed commerce load).
//! - [`registry`]: the schema registry service in this process.
//! - [`kafka`]: the shared brokers, a private broker, reading topics from the beginning.
//! - [`cluster`]: a private three-node Kafka cluster for fault tests, stalled, killed and
//!   restarted by pid.
//! - [`stack`]: the write stack with its relay and checks of the published log.
//! - [`processes`]: free ports and the real binaries (command API, relay, projector) as child
//!   processes, signalled and killed by pid.
//! - [`projector`]: the projector in this process or as a process with a known ops port,
//!   waiting until it has caught up, and reading its metrics.
//! - [`fold`]: read models compared with an independent fold of the events table.
//! - [`query`]: the query API in this process, its client, and the whole read stack.
//! - [`proxy`]: a TCP proxy to PostgreSQL whose connections can fall silent.

pub mod app;
pub mod auth;
pub mod browser;
pub mod cluster;
pub mod commerce;
pub mod database;
pub mod fold;
pub mod kafka;
pub mod processes;
pub mod projector;
pub mod proxy;
pub mod query;
pub mod registry;
pub mod stack;
