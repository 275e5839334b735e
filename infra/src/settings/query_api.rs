//! The query API's settings (`query_api.*`).

use serde::Deserialize;

/// The query API and its cache.
#[derive(Debug, Clone, Deserialize)]
pub struct QueryApiSettings {
    pub host: String,
    pub port: u16,
    /// Async runtime threads; 0 means one per CPU core.
    pub worker_threads: usize,
    /// The longest a read with `min_version` waits for the read model to catch up.
    pub max_wait_ms: u64,
    /// Most bytes of single-resource representations (bodies and tags) kept in the cache.
    pub cache_max_bytes: u64,
    /// Most reads waiting for `min_version` at once; past it a read is answered 503 with
    /// `Retry-After` instead of waiting.
    pub max_version_waiters: usize,
    /// Most of those one customer may hold at once (staff and services are held only to the
    /// overall cap): one customer's flood of hopeless waits cannot refuse everyone else's.
    pub max_version_waiters_per_customer: usize,
    /// Most audit exports (`GET /v1/audit/export`) streaming at once; past it an export is
    /// answered 503 `overloaded`. An export streams after its handler has returned, beyond
    /// the request limits, and each page is a query: without a cap a few operators' exports
    /// could hold every database connection the reads need.
    pub max_exports: usize,
    /// The longest an export waits for its client to read more of it; past it the
    /// stream breaks off (resumable with `after_position`) and its place is free again, so
    /// clients that stop reading without closing their connections cannot hold every place.
    pub export_stall_ms: u64,
    /// A cached entry is dropped after this long even without a change notification: a
    /// second line of defence should notifications ever be lost unnoticed.
    pub cache_ttl_secs: u64,
    /// Where the admin console (`/admin`) sends its logins: the command API's base URL, whose
    /// `POST /v1/auth/token` it calls server-side.
    pub command_api_url: String,
    /// Mark the admin console's session cookie `Secure` even when the request did not say it
    /// came over HTTPS (`X-Forwarded-Proto`); set it wherever TLS ends in front of the service.
    pub admin_secure_cookie: bool,
}
