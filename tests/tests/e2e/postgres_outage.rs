//! PostgreSQL going away under load: every command is answered within a second (503 with
//! `Retry-After` while the database is down), the service recovers by itself when it returns,
//! and nothing that was acknowledged is lost.
//!
//! The test runs its own PostgreSQL cluster, so stopping it touches no other test.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app_on, unique_email, TestDatabase};
use crate::kafka::free_port;

/// A PostgreSQL cluster of the test's own under `.data/`, removed when dropped.
struct PrivateCluster {
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
    fn start() -> Self {
        let bin = PathBuf::from(
            std::env::var("PG_BINDIR").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        let short = &uuid::Uuid::new_v4().simple().to_string()[..8];
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
            &["-D", &path, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
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

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) {
        let path = self.dir.to_string_lossy().into_owned();
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        let mut all = vec!["-D", &path, "-l", &log];
        all.extend_from_slice(args);
        as_cluster_owner(self.bin.join("pg_ctl"), &all);
    }

    fn start_again(&self) {
        self.pg_ctl(&["-w", "-t", "60", "start"]);
    }

    fn stop_immediately(&self) {
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

/// One answer as a writer saw it.
struct Seen {
    status: StatusCode,
    elapsed: Duration,
    retry_after: bool,
    problem_type: String,
    version: Option<i64>,
}

/// Changes one user's profile until `stop`, at most `limit` times.
async fn write_until(url: String, user: String, stop: Arc<AtomicBool>, limit: usize) -> Vec<Seen> {
    let client = reqwest::Client::new();
    let mut seen = Vec::new();
    for i in 0..limit {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let started = Instant::now();
        let response = client
            .post(format!("{url}/v1/users/{user}/profile"))
            .json(&json!({ "display_name": format!("Name {i}") }))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the command API answers whatever the database does");
        let status = response.status();
        let retry_after = response.headers().contains_key("retry-after");
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        seen.push(Seen {
            status,
            elapsed: started.elapsed(),
            retry_after,
            problem_type: body["type"].as_str().unwrap_or_default().to_owned(),
            version: body["version"].as_i64(),
        });
        if !status.is_success() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_under_load_gives_fast_503s_and_loses_nothing() {
    let cluster = PrivateCluster::start();
    let placeholder = TestDatabase::create().await;
    let mut settings = placeholder.settings();
    settings.database.url = cluster.url().into();
    let app = spawn_app_on(placeholder, settings.clone()).await;
    let reads = crate::read_side::spawn_query_api(&settings).await;

    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(app.register(&unique_email()).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = users
        .iter()
        .map(|user| {
            let writer = write_until(app.url.clone(), user.clone(), stop.clone(), 5_000);
            tokio::spawn(writer)
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| cluster.stop_immediately());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Reads fail as fast and as clearly as writes.
    let started = Instant::now();
    let read = reads.get(&format!("/v1/users/{}", users[0])).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    read.assert_problem(503, "service-unavailable");
    assert!(read.headers.contains_key("retry-after"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    tokio::task::block_in_place(|| cluster.start_again());
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Release);

    let mut unavailable = 0;
    for (user, writer) in users.iter().zip(writers) {
        let seen = writer.await.expect("writer");
        for answer in seen.iter().filter(|a| !a.status.is_success()) {
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(answer.problem_type.ends_with("/service-unavailable"));
            assert!(answer.retry_after, "a 503 without Retry-After");
            assert!(
                answer.elapsed < Duration::from_secs(1),
                "a 503 took {:?}",
                answer.elapsed
            );
            unavailable += 1;
        }
        let last = seen.iter().rposition(|a| !a.status.is_success());
        let recovered = last.map_or(0, |i| seen.len() - i - 1);
        assert!(recovered > 0, "no command succeeded after the restart");
        // Every acknowledged version is in the store.
        let acknowledged: Vec<i64> = seen.iter().filter_map(|a| a.version).collect();
        let stored: Vec<i64> = sqlx::query_scalar(
            "SELECT sequence FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1",
        )
        .bind(user)
        .fetch_all(&app.pool)
        .await
        .expect("read the events back");
        for version in acknowledged {
            assert!(
                stored.contains(&version),
                "acknowledged version {version} lost"
            );
        }
    }
    assert!(unavailable > 0, "the outage was not seen");
}
