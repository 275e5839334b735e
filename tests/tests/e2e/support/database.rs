//! Databases: every test gets a fresh PostgreSQL database on the shared server
//! ([`TestDatabase`], dropped with it), and a test that stops PostgreSQL runs a cluster of its
//! own ([`PrivateCluster`]).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use infra::secrecy::SecretString;
use infra::settings::Settings;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::support::processes::free_port;

pub fn admin_url() -> String {
    std::env::var("DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432/postgres".to_owned())
}

pub fn database_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin);
    format!("{base}/{name}")
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var("TEST_LOG").is_ok() {
            let mut settings = Settings::load_from(None).expect("default settings");
            settings.log.filter = std::env::var("TEST_LOG").unwrap_or_default();
            // No span export here (no runtime yet, and no endpoint): logs only.
            let _logs_only = infra::telemetry::init("tests", &settings.log);
        }
    });
}

/// A fresh database, dropped when this is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        init_logs();
        let name = format!("test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("PostgreSQL must be running: run `make stack` (make test does it)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = database_url(&name);
        Self { name, url }
    }

    /// Default settings pointing at this database, with ephemeral ports.
    pub fn settings(&self) -> Settings {
        let mut settings = Settings::load_from(None).expect("default settings");
        settings.database.url = SecretString::from(self.url.clone());
        settings.database.max_connections = 10;
        // Many tests share two cores with their own load generators: a connection may take
        // longer than the production default to free up, and that is not what they test.
        settings.database.acquire_timeout_ms = 5_000;
        settings.command_api.port = 0;
        settings.schema_registry.port = 0;
        settings.query_api.port = 0;
        settings.projector.port = 0;
        // Tests that need the relay turn it on (see `stack.rs`).
        settings.relay.enabled = false;
        crate::support::auth::configure(&mut settings);
        settings
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Async work cannot run in Drop; a scoped thread with its own runtime can.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async {
                        if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                            let _ = sqlx::query(&sql).execute(&mut admin).await;
                        }
                    });
                }
            });
        });
    }
}

/// A PostgreSQL cluster of the test's own under `.data/`, removed when dropped.
pub struct PrivateCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL server program as the user that may own a cluster (not root).
fn as_cluster_owner(program: PathBuf, args: &[&str]) {
    let status = if running_as_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&program)
            .args(args)
            .status()
    } else {
        Command::new(&program).args(args).status()
    };
    let status = status.unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    assert!(status.success(), "{} {args:?}: {status}", program.display());
}

impl PrivateCluster {
    pub fn start() -> Self {
        let bin = PathBuf::from(
            std::env::var("PG_BINDIR").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        let short = &Uuid::new_v4().simple().to_string()[..8];
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../.data")
            .join(format!("test-pg-{short}"));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        if running_as_root() {
            let owned = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(owned.success());
        }
        let path = dir.to_string_lossy().into_owned();
        as_cluster_owner(
            bin.join("initdb"),
            &[
                "-D",
                &path,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        );
        let port = free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{path}'\n\
             fsync = off\nmax_connections = 50\n"
        );
        let file = dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&file).expect("postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&file, text).expect("write postgresql.conf");
        let cluster = Self { dir, bin, port };
        cluster.start_again();
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) {
        let path = self.dir.to_string_lossy().into_owned();
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        let mut all = vec!["-D", &path, "-l", &log];
        all.extend_from_slice(args);
        as_cluster_owner(self.bin.join("pg_ctl"), &all);
    }

    pub fn start_again(&self) {
        self.pg_ctl(&["-w", "-t", "60", "start"]);
    }

    pub fn stop_immediately(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let path = self.dir.to_string_lossy().into_owned();
        let pg_ctl = self.bin.join("pg_ctl");
        let _ = if running_as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_ctl)
                .args(["-D", &path, "-m", "immediate", "stop"])
                .output()
        } else {
            Command::new(pg_ctl)
                .args(["-D", &path, "-m", "immediate", "stop"])
                .output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes a user's `UserRegistered` (version 2) straight into the events table, past the
/// command path: for tests of what the relay and the projector do with rows no command would
/// write. `id` is the event's id and the user's.
/// A valid registration of a new user (`email`) written straight into the event store through
/// `executor` (a transaction the caller may hold open); returns its event id.
pub async fn insert_registration<'e>(executor: impl sqlx::PgExecutor<'e>, email: &str) -> Uuid {
    let id = Uuid::now_v7();
    let metadata = serde_json::json!({"event_id": id.to_string(), "occurred_at": "2026-11-23T00:00:00Z",
        "actor": "test", "correlation_id": "c", "causation_id": "c",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"});
    let payload = serde_json::json!({"type": "UserRegistered", "email": email,
        "display_name": "Held", "roles": ["customer"]});
    insert_user_registered(executor, id, payload, metadata).await;
    id
}

pub async fn insert_user_registered<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: Uuid,
    payload: serde_json::Value,
    metadata: serde_json::Value,
) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, event_id)
         VALUES ('user', $1, 1, 'UserRegistered', '2', $2, $3, $4)",
    )
    .bind(id.to_string())
    .bind(payload)
    .bind(metadata)
    .bind(id)
    .execute(executor)
    .await
    .expect("insert a raw event");
}
