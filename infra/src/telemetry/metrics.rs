//! The process-wide Prometheus recorder rendered on `/metrics`, with a description of every
//! series ([`SERIES`]), `build_info`, process metrics, database pool use, and the exporter's
//! upkeep (histogram samples are folded every few seconds instead of piling up between
//! scrapes).

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds, from 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often the upkeep thread folds histograms and samples process and pool gauges.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// What kind of series a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every series the services record, with its kind, unit and description. `/metrics` shows
/// the description as `# HELP`; `docs/operations.md` lists the same names (a test keeps the
/// sources, this table and the document in step).
pub const SERIES: &[(&str, Kind, Option<Unit>, &str)] = &[
    // every service
    ("build_info", Kind::Gauge, None, "Always 1; labels name the service and its version."),
    ("http_requests_total", Kind::Counter, None, "HTTP requests answered, by method, matched route and status."),
    ("http_request_duration_seconds", Kind::Histogram, Some(Unit::Seconds), "Time from a request's arrival to its response, by method, matched route and status."),
    ("http_requests_shed_total", Kind::Counter, None, "Requests refused with 503 because every concurrency slot stayed busy for the queue timeout."),
    ("http_request_timeouts_total", Kind::Counter, None, "Requests cut off with 504 after the request timeout."),
    ("http_panics_total", Kind::Counter, None, "Handlers that panicked (answered 500)."),
    ("db_pool_connections", Kind::Gauge, None, "Database pool connections, by state (idle, in_use)."),
    ("db_pool_max_connections", Kind::Gauge, None, "Most connections the database pool opens."),
    ("database_outages_total", Kind::Counter, None, "Times the command API found the database unreachable (the other services answer 503 for it too, without counting it here)."),
    // command API
    ("commands_total", Kind::Counter, None, "Commands handled, by command and outcome (accepted, replayed, or the error)."),
    ("command_duration_seconds", Kind::Histogram, Some(Unit::Seconds), "Time to handle a command, load and append included, by command."),
    ("events_appended_total", Kind::Counter, None, "Events appended to the event store, by aggregate type."),
    ("event_store_commit_batch_size", Kind::Histogram, None, "Commands written by one group-commit statement."),
    ("auth_logins_total", Kind::Counter, None, "Token requests with a password or client secret, by outcome (ok, failed, limited)."),
    ("auth_password_rehashes_total", Kind::Counter, None, "Password hashes of outdated argon2 parameters replaced at a login, by outcome (upgraded, changed, failed)."),
    ("auth_refreshes_total", Kind::Counter, None, "Refresh-token grants, by outcome (ok, reused, refused)."),
    ("password_hash_duration_seconds", Kind::Histogram, Some(Unit::Seconds), "Time to hash or verify one password, the wait for a hashing thread included."),
    ("webhook_signatures_refused_total", Kind::Counter, None, "Payment callbacks refused for a missing, stale or wrong signature."),
    // relay
    ("relay_active", Kind::Gauge, None, "1 while this process holds the relay lock and publishes (from the end of its setup: topics, schemas, checkpoint)."),
    ("relay_events_published_total", Kind::Counter, None, "Events acknowledged by the brokers."),
    ("relay_events_parked_total", Kind::Counter, None, "Events the relay could not encode and parked in relay_parked_events."),
    ("relay_errors_total", Kind::Counter, None, "Relay runs that ended in an error and restarted."),
    ("relay_broker_errors_total", Kind::Counter, None, "Batches the brokers did not acknowledge in time (resent)."),
    ("relay_refused_by_brokers", Kind::Gauge, None, "1 while the brokers refuse the next event this process's relay must publish with an error they give on every try (larger than the topic allows, no right to write it); 0 once one passes."),
    ("relay_lag_events", Kind::Gauge, None, "Events committed to the store and not yet acknowledged by the brokers (exact up to 100,000, estimated beyond)."),
    ("relay_lag_seconds", Kind::Gauge, Some(Unit::Seconds), "Age of the oldest committed event not yet acknowledged by the brokers."),
    // schema registry
    ("registry_writes_refused_total", Kind::Counter, None, "Schema registry writes refused for missing or wrong credentials."),
    // projector
    ("projection_messages_consumed_total", Kind::Counter, None, "Kafka messages consumed, by projection."),
    ("projection_events_applied_total", Kind::Counter, None, "Events applied to a read model, by projection."),
    ("projection_apply_seconds", Kind::Histogram, Some(Unit::Seconds), "Time to apply and commit one batch, by projection."),
    ("projection_event_age_seconds", Kind::Histogram, Some(Unit::Seconds), "Command-to-visible age: from an event's occurrence to the commit of its effect, by projection."),
    ("projection_consumer_lag", Kind::Gauge, None, "Messages on the brokers not yet consumed, by projection."),
    ("projection_dead_letters_total", Kind::Counter, None, "Events a projection could not apply and recorded in dead_letters, by projection."),
    ("projection_newer_events_waited_total", Kind::Counter, None, "Times a batch waited because a message was written by newer code than this projector (a rolling update under way)."),
    ("projection_dead_letter_retries_total", Kind::Counter, None, "Dead letters applied again on request (projector dead-letters retry, the admin console), by outcome (applied, refused, failed, error)."),
    ("projection_batches_isolated_total", Kind::Counter, None, "Batches retried one event at a time to find the one that fails, by projection."),
    ("projection_log_resets_total", Kind::Counter, None, "Times a projection's stored offset was past the end of its partition's log (the topic recreated or cut back) and was moved back to the log's start, by projection."),
    ("projection_restarts_total", Kind::Counter, None, "Projection runs that ended in an error and restarted, by projection."),
    ("projection_consumer_errors_total", Kind::Counter, None, "Errors the Kafka consumer reported and recovers from by itself (a broker down or not answering); the consumer is kept."),
    ("projection_gaps_total", Kind::Counter, None, "Gaps in an aggregate's sequence seen by a projection, by projection."),
    ("projection_gap_events_filled_total", Kind::Counter, None, "Events read from the event store to fill gaps, by projection."),
    ("read_model_overflows_total", Kind::Counter, None, "Events parked because a running total would overflow, by table."),
    ("process_manager_reactions_total", Kind::Counter, None, "Commands the process manager decided on, by kind."),
    ("process_manager_commands_total", Kind::Counter, None, "Process-manager command attempts, by outcome."),
    ("process_manager_parked_total", Kind::Counter, None, "Process-manager commands parked after their retry budget."),
    ("process_manager_outbox_parked", Kind::Gauge, None, "Process-manager commands parked now, waiting for a person."),
    ("process_manager_outbox_oldest_pending_seconds", Kind::Gauge, Some(Unit::Seconds), "How long the oldest process-manager command not yet sent has waited since it was decided."),
    // query API
    ("query_cache_requests_total", Kind::Counter, None, "Cache lookups, by resource and result (hit, miss)."),
    ("query_cache_entries", Kind::Gauge, None, "Representations held in the cache."),
    ("query_cache_bytes", Kind::Gauge, Some(Unit::Bytes), "Weighted size of the cached representations."),
    ("query_cache_listening", Kind::Gauge, None, "1 while the cache receives change notifications (else it is bypassed)."),
    ("query_cache_listener_lost_total", Kind::Counter, None, "Change-listener connections lost (closed, failed, or silent for 15 s); each loss clears the cache."),
    ("query_min_version_waiters", Kind::Gauge, None, "Reads waiting for a read model to reach their min_version."),
    ("query_min_version_wait_seconds", Kind::Histogram, Some(Unit::Seconds), "Time a min_version read waited for its read model."),
    ("query_min_version_timeouts_total", Kind::Counter, None, "min_version reads that timed out waiting."),
    ("query_api_exports_stalled_total", Kind::Counter, None, "Audit exports cut off because their client read nothing for query_api.export_stall_ms."),
    ("query_min_version_overloaded_total", Kind::Counter, None, "min_version reads refused because too many were waiting."),
    // process (sampled by the upkeep thread)
    ("process_cpu_seconds_total", Kind::Counter, Some(Unit::Seconds), "CPU time used by the process, user and system."),
    ("process_resident_memory_bytes", Kind::Gauge, Some(Unit::Bytes), "Resident memory of the process."),
    ("process_virtual_memory_bytes", Kind::Gauge, Some(Unit::Bytes), "Virtual memory of the process."),
    ("process_virtual_memory_max_bytes", Kind::Gauge, Some(Unit::Bytes), "Most virtual memory the process may use."),
    ("process_open_fds", Kind::Gauge, None, "Open file descriptors."),
    ("process_max_fds", Kind::Gauge, None, "Most file descriptors the process may open."),
    ("process_start_time_seconds", Kind::Gauge, Some(Unit::Seconds), "Start time of the process, seconds since the Unix epoch."),
    ("process_threads", Kind::Gauge, None, "Threads of the process."),
];

/// The process-wide Prometheus handle, installing the recorder (with descriptions and the
/// upkeep thread) on first use.
pub fn metrics_handle() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    // Another recorder is installed (only possible in odd test set-ups): keep a
                    // detached one so /metrics still renders.
                    tracing::warn!(%error, "could not install the Prometheus recorder");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            describe();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

fn describe() {
    for (name, kind, unit, help) in SERIES {
        match (kind, unit) {
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(*name, *unit, *help),
            (Kind::Counter, None) => metrics::describe_counter!(*name, *help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(*name, *unit, *help),
            (Kind::Gauge, None) => metrics::describe_gauge!(*name, *help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(*name, *unit, *help),
            (Kind::Histogram, None) => metrics::describe_histogram!(*name, *help),
        }
    }
}

/// Records `build_info{service, version}` = 1 for this process (installing the recorder
/// first: a series recorded before there is one is lost).
pub fn record_build_info(service: &'static str) {
    metrics_handle();
    metrics::gauge!("build_info", "service" => service, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
}

/// Pools whose use the upkeep thread reports.
static POOLS: Mutex<Vec<PgPool>> = Mutex::new(Vec::new());

/// Reports this pool's use in `db_pool_connections` and `db_pool_max_connections` (summed
/// over the pools of the process, one in a deployed service).
pub fn watch_pool(pool: &PgPool) {
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    pools.retain(|p| !p.is_closed());
    pools.push(pool.clone());
}

fn sample_pools() {
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    pools.retain(|p| !p.is_closed());
    let (mut open, mut idle, mut max) = (0u64, 0u64, 0u64);
    for pool in pools.iter() {
        open += u64::from(pool.size());
        idle += pool.num_idle() as u64;
        max += u64::from(pool.options().get_max_connections());
    }
    metrics::gauge!("db_pool_connections", "state" => "idle").set(idle as f64);
    metrics::gauge!("db_pool_connections", "state" => "in_use")
        .set(open.saturating_sub(idle) as f64);
    metrics::gauge!("db_pool_max_connections").set(max as f64);
}

/// A plain thread (no async runtime needed): folds histogram samples, samples the process
/// and the pools.
fn spawn_upkeep(handle: PrometheusHandle) {
    let process = metrics_process::Collector::default();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            process.collect();
            sample_pools();
            handle.run_upkeep();
            std::thread::sleep(UPKEEP_EVERY);
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "could not start the metrics upkeep thread");
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
