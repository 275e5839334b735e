//! The query API: every read route of the HTTP contract (`docs/api.md`) over the read models
//! the projector maintains, with a change-notified cache ([`cache`]), `min_version` waits for
//! read-your-writes, `ETag`/`If-None-Match`, and keyset pagination; every read route needs a
//! bearer access token, and `policy` decides what its principal may read. `/admin` is the
//! operators' console: HTML pages over the same database ([`admin`]).
#![forbid(unsafe_code)]

mod admin;
pub mod as_of;
pub mod cache;
mod error;
mod openapi;
mod params;
mod policy;
mod routes;
mod startup;

pub use error::QueryError;
pub use infra::http::StartupError;
pub use routes::orders::customer_page_sql;
pub use startup::{build, router, App};
