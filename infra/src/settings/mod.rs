//! Settings: built-in defaults, then an optional TOML file named by `APP_CONFIG_FILE`, then the
//! conventional `DATABASE_URL` and `RUST_LOG` variables (as `database.url` and `log.filter`),
//! then `APP__SECTION__KEY` environment variables (e.g. `APP__DATABASE__URL`). Every setting
//! has a default that works with the local stack, so `make run` needs no editing.

mod identity;
mod kafka;
mod query_api;

use std::collections::HashMap;

use secrecy::SecretString;
use serde::Deserialize;

pub use identity::{secret_list, secret_value, AuthSettings, WebhookSettings};
pub use kafka::{KafkaProperties, KafkaSettings};
pub use query_api::QueryApiSettings;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub command_api: ServerSettings,
    pub schema_registry: RegistrySettings,
    pub kafka: KafkaSettings,
    pub relay: RelaySettings,
    pub projector: ProjectorSettings,
    pub query_api: QueryApiSettings,
    pub log: LogSettings,
    pub event_store: EventStoreSettings,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub webhook: WebhookSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// Wrapped so that it never appears in logs or debug output.
    pub url: SecretString,
    pub max_connections: u32,
    pub min_connections: u32,
    /// How long a request waits for a pooled connection before it gets a 503. Half a second,
    /// so that a command answers within one even while the database is going away on a
    /// machine busy enough to delay the answer by a few hundred milliseconds more (750 ms
    /// left too little: a 503 took 1.1 s once with the whole test suite running).
    pub acquire_timeout_ms: u64,
    /// Apply pending migrations when a service starts.
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    /// 0 binds an ephemeral port (tests); the bound address is reported by the service.
    pub port: u16,
    pub body_limit_bytes: usize,
    /// Async runtime threads; 0 means one per CPU core.
    pub worker_threads: usize,
}

/// The schema registry service (`schema-registry` binary) and how clients reach a registry.
#[derive(Debug, Clone, Deserialize)]
pub struct RegistrySettings {
    pub host: String,
    pub port: u16,
    /// Compatibility level for subjects without their own (Confluent's names, e.g.
    /// `BACKWARD_TRANSITIVE`).
    pub default_compatibility: String,
    /// Where producers and consumers find a Confluent-compatible registry.
    pub url: String,
    /// HTTP Basic credentials: the registry service requires them on writes (and refuses
    /// every write while no password is set); the relay and projector send them.
    pub user: String,
    pub password: SecretString,
    /// A file holding the password instead (its first line), e.g. a mounted secret.
    pub password_file: String,
}

/// The event relay (events table -> Kafka).
#[derive(Debug, Clone, Deserialize)]
pub struct RelaySettings {
    /// Run the relay inside the command API process.
    pub enabled: bool,
    /// Most events read and published per batch.
    pub batch_size: i64,
    /// Most bytes (payload and metadata as stored, `jsonb`, compressed when large) read per
    /// batch; a batch always holds at least one event.
    pub batch_max_bytes: i64,
    /// Polling fallback when no notification arrives.
    pub poll_interval_ms: u64,
    /// The longest any one database wait of the publishing relay may take (reading a batch,
    /// storing the checkpoint, measuring the lag) before it gives up, reconnects and starts
    /// again from its checkpoint: a connection to a host that went away without closing it
    /// never answers.
    pub database_timeout_ms: u64,
    /// Checkpoint row name; relays sharing a name share progress and the lock.
    pub name: String,
}

/// What a projection does with an event it cannot apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterPolicy {
    /// Record it in `dead_letters` and go on with later events.
    Skip,
    /// Stop the projection (it retries from its stored offsets) until an operator acts.
    Halt,
}

/// The projector workers.
#[derive(Debug, Clone, Deserialize)]
pub struct ProjectorSettings {
    /// Most messages applied in one transaction.
    pub batch_size: usize,
    pub dead_letter_policy: DeadLetterPolicy,
    /// Consumer group prefix: the group of a process's projections is `<prefix><topic
    /// prefix><their names, sorted, joined by +>`, shared by the processes that run the same set.
    pub group_prefix: String,
    /// `/healthz`, `/readyz` and `/metrics` of the projector.
    pub host: String,
    pub port: u16,
    /// The read models this projector runs: `all`, or names separated by commas (a model
    /// left out is neither consumed nor kept current here; `projector replay` still rebuilds
    /// it).
    pub read_models: String,
    /// Run the order–payment process manager alongside the projections.
    pub process_manager: bool,
    /// Where the process manager sends its commands.
    pub command_api_url: String,
    /// Attempts at one process-manager command before it is parked for a person (130 with the
    /// default backoff: about an hour, so an outage of the command API shorter than that parks
    /// nothing; `process_manager_outbox_oldest_pending_seconds` shows the wait meanwhile).
    pub outbox_max_attempts: u32,
    /// Wait after a failed attempt, doubling per attempt up to `outbox_backoff_max_ms`.
    pub outbox_backoff_initial_ms: u64,
    pub outbox_backoff_max_ms: u64,
    /// How often the dispatcher looks for due commands without a notification.
    pub outbox_poll_ms: u64,
    /// The process manager's client credentials (`auth.clients` on the command API).
    pub client_id: String,
    pub client_secret: SecretString,
    /// A file holding the secret instead (its first line).
    pub client_secret_file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    /// An `EnvFilter` directive, e.g. `info,sqlx=warn`.
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventStoreSettings {
    /// Write a snapshot of an aggregate every this many events (0 disables snapshots).
    pub snapshot_every: usize,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl_hours: u32,
    /// Group-commit workers; 0 writes every command with its own statement.
    pub commit_workers: usize,
    /// Most commands one group-commit statement carries.
    pub commit_max_batch: usize,
}

/// The HTTP skeleton every service shares (`infra::server`): the same limits for all four.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    /// A handler running longer than this is cut off with a 504 `request-timeout` problem.
    pub request_timeout_ms: u64,
    /// Requests handled at once per service; further ones wait for a slot.
    pub max_in_flight: usize,
    /// How long a request waits for a slot before it is shed with a 503 `overloaded` problem.
    pub queue_timeout_ms: u64,
    /// After a shutdown signal: the longest the service drains in-flight requests and runs
    /// its shutdown hooks before it exits regardless.
    pub shutdown_deadline_ms: u64,
    /// Origins allowed to call the service from a browser, comma-separated; empty allows none.
    pub cors_allowed_origins: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid settings")]
pub struct SettingsError(#[source] config::ConfigError);

impl Settings {
    /// Defaults, then `APP_CONFIG_FILE` (if set), then `DATABASE_URL` and `RUST_LOG`, then
    /// `APP__...` environment variables.
    pub fn load() -> Result<Self, SettingsError> {
        let file = std::env::var("APP_CONFIG_FILE").ok();
        let conventional = [
            ("DATABASE_URL", "database__url"),
            ("RUST_LOG", "log__filter"),
        ]
        .into_iter()
        .filter_map(|(variable, key)| {
            let value = std::env::var(variable).ok()?;
            (!value.trim().is_empty()).then(|| (key.to_owned(), value))
        })
        .collect();
        Self::load_with(file.as_deref(), conventional, None)
    }

    /// Defaults, then `file`, then `APP__...` environment variables.
    pub fn load_from(file: Option<&str>) -> Result<Self, SettingsError> {
        Self::load_with(file, HashMap::new(), None)
    }

    /// As [`Self::load_from`], with `conventional` (keys like `database__url`) between the
    /// file and the `APP__...` variables (`app`: those instead of the process's).
    fn load_with(
        file: Option<&str>,
        conventional: HashMap<String, String>,
        app: Option<HashMap<String, String>>,
    ) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder();
        for (key, value) in DEFAULTS {
            builder = builder.set_default(*key, *value).map_err(SettingsError)?;
        }
        if let Some(path) = file {
            builder = builder.add_source(config::File::with_name(path).required(true));
        }
        builder
            .add_source(
                config::Environment::default()
                    .separator("__")
                    .source(Some(conventional)),
            )
            // Values stay text until a setting's type asks for a number or a flag: parsing
            // them up front turned a secret such as `0123456789` into the number 123456789,
            // and so into the text `123456789`, a SASL password refused by the brokers.
            .add_source(
                config::Environment::with_prefix("APP")
                    .prefix_separator("__")
                    .separator("__")
                    .source(app),
            )
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(SettingsError)
    }
}

/// Local defaults; they match `infra/local/stack.sh`.
const DEFAULTS: &[(&str, &str)] = &[
    (
        "database.url",
        "postgres://postgres@127.0.0.1:55432/commerce",
    ),
    ("database.max_connections", "32"),
    ("database.min_connections", "0"),
    ("database.acquire_timeout_ms", "500"),
    ("database.migrate_on_start", "true"),
    ("command_api.host", "127.0.0.1"),
    ("command_api.port", "8080"),
    ("command_api.body_limit_bytes", "65536"),
    ("command_api.worker_threads", "0"),
    ("schema_registry.host", "127.0.0.1"),
    ("schema_registry.port", "8085"),
    (
        "schema_registry.default_compatibility",
        "BACKWARD_TRANSITIVE",
    ),
    ("schema_registry.url", "http://127.0.0.1:8085"),
    ("schema_registry.user", "registry"),
    ("schema_registry.password", ""),
    ("schema_registry.password_file", ""),
    (
        "kafka.bootstrap_servers",
        "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094",
    ),
    ("kafka.topic_prefix", ""),
    ("kafka.partitions", "3"),
    ("kafka.replication_factor", "-1"),
    ("kafka.delivery_timeout_ms", "30000"),
    ("kafka.fetch_wait_max_ms", "500"),
    ("kafka.create_topics", "true"),
    ("relay.enabled", "true"),
    ("relay.batch_size", "5000"),
    ("relay.batch_max_bytes", "8388608"),
    ("relay.poll_interval_ms", "500"),
    ("relay.database_timeout_ms", "30000"),
    ("relay.name", "default"),
    ("projector.batch_size", "500"),
    ("projector.dead_letter_policy", "skip"),
    ("projector.group_prefix", "projection-"),
    ("projector.host", "127.0.0.1"),
    ("projector.port", "8082"),
    ("projector.read_models", "all"),
    ("projector.process_manager", "true"),
    ("projector.command_api_url", "http://127.0.0.1:8080"),
    ("projector.outbox_max_attempts", "130"),
    ("projector.outbox_backoff_initial_ms", "200"),
    ("projector.outbox_backoff_max_ms", "30000"),
    ("projector.outbox_poll_ms", "500"),
    ("projector.client_id", "process-manager"),
    ("projector.client_secret", ""),
    ("projector.client_secret_file", ""),
    ("query_api.host", "127.0.0.1"),
    ("query_api.port", "8081"),
    ("query_api.worker_threads", "0"),
    ("query_api.max_wait_ms", "5000"),
    ("query_api.cache_max_bytes", "268435456"),
    ("query_api.max_version_waiters", "1000"),
    ("query_api.max_version_waiters_per_customer", "16"),
    ("query_api.max_exports", "4"),
    ("query_api.export_stall_ms", "60000"),
    ("query_api.cache_ttl_secs", "60"),
    ("query_api.command_api_url", "http://127.0.0.1:8080"),
    ("query_api.admin_secure_cookie", "false"),
    ("log.filter", "info,sqlx=warn"),
    ("log.format", "json"),
    ("event_store.snapshot_every", "50"),
    ("event_store.idempotency_ttl_hours", "24"),
    ("event_store.commit_workers", "1"),
    ("event_store.commit_max_batch", "128"),
    ("http.request_timeout_ms", "30000"),
    ("http.max_in_flight", "1024"),
    ("http.queue_timeout_ms", "5000"),
    ("http.shutdown_deadline_ms", "10000"),
    ("http.cors_allowed_origins", ""),
    ("auth.issuer", "commerce"),
    ("auth.audience", "commerce-api"),
    ("auth.access_ttl_secs", "900"),
    ("auth.refresh_ttl_secs", "2592000"),
    ("auth.keys_dir", ".data/keys"),
    ("auth.signing_kid", ""),
    ("auth.generate_key", "true"),
    (
        "auth.jwks_url",
        "http://127.0.0.1:8080/.well-known/jwks.json",
    ),
    ("auth.clients", ""),
    ("auth.clients_file", ""),
    ("auth.bootstrap_admin_email", ""),
    ("auth.bootstrap_admin_password", ""),
    // OWASP's first argon2id recommendation: 19 MiB, two passes, one lane.
    ("auth.argon2_memory_kib", "19456"),
    ("auth.argon2_iterations", "2"),
    ("auth.argon2_parallelism", "1"),
    ("auth.hashing_threads", "2"),
    ("auth.hashing_queue", "64"),
    ("auth.login_failures_per_account", "5"),
    ("auth.login_failures_per_address", "50"),
    ("auth.login_window_secs", "300"),
    ("auth.commands_per_second", "50"),
    ("auth.commands_burst", "100"),
    ("auth.service_commands_per_second", "5000"),
    ("auth.anonymous_per_minute", "600"),
    ("auth.trusted_proxies", ""),
    ("auth.reset_token_ttl_secs", "1800"),
    ("webhook.secrets", ""),
    ("webhook.secrets_file", ""),
    ("webhook.tolerance_secs", "300"),
];

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
