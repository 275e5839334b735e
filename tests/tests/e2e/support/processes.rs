//! The real binaries as child processes of a test: free ports, one way to find a binary and
//! start it with a stack's settings in its environment ([`service_command`]), the relay, the
//! projector and the command API as processes, and [`Process`], which signals a child by its
//! pid (pause, continue, terminate) and kills it (SIGKILL) when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use infra::secrecy::ExposeSecret;
use infra::settings::Settings;

/// First port [`free_port`] hands out, and the end of its range: below the kernel's ephemeral
/// range (32768 and up by default), so no outgoing connection holds one of them, and clear of
/// the shared stack's fixed ports (19092-19094, 19192-19194, 55432).
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port nothing listens on, never the same one twice in this test process.
///
/// Asking the kernel for port 0 and releasing it is not enough: a test that starts a service
/// seconds later can find the port handed to another test in the meantime. A Kafka node that
/// then dials its peer's port and reaches an HTTP server reads "HTTP" as a 1.2 GB frame size
/// and dies of a full heap (the failure that made this a counter).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(PORTS.end - PORTS.start);
    // Another test process (a second checkout's run) starts elsewhere in the range.
    let offset = std::process::id() % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(
            n < span,
            "free_port: every port of {PORTS:?} was handed out"
        );
        let port = PORTS.start + u16::try_from((offset + n) % span).expect("inside the range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The path of the workspace binary `name`, built next to this test binary.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join(name);
    assert!(
        binary.exists(),
        "{} missing: run `cargo build --bins` (make test does)",
        binary.display()
    );
    binary
}

/// The binary `name` with the database (and its acquire timeout), brokers, topic prefix and
/// registry of `settings` in its environment, logging warnings only.
pub fn service_command(name: &str, settings: &Settings) -> Command {
    let mut command = Command::new(binary(name));
    command
        .env("APP__DATABASE__URL", settings.database.url.expose_secret())
        .env(
            "APP__DATABASE__ACQUIRE_TIMEOUT_MS",
            settings.database.acquire_timeout_ms.to_string(),
        )
        .env(
            "APP__KAFKA__BOOTSTRAP_SERVERS",
            &settings.kafka.bootstrap_servers,
        )
        .env("APP__KAFKA__TOPIC_PREFIX", &settings.kafka.topic_prefix)
        .env("APP__SCHEMA_REGISTRY__URL", &settings.schema_registry.url)
        .env("APP__LOG__FILTER", "warn")
        .envs(crate::support::auth::env(settings));
    command
}

/// How long a one-off command of ours (`projector replay`, `verify`, `audit-export`...) may
/// run before the test gives up on it: far beyond any of a test's few thousand events, short
/// of CI's limit for the whole suite.
const ONE_OFF_LIMIT: Duration = Duration::from_secs(300);

/// Runs `projector <args>` on `settings` to its end (see [`service_command`] and
/// [`output_within_limit`]).
pub fn run_projector(settings: &Settings, args: &[&str]) -> std::process::Output {
    let mut command = service_command("projector", settings);
    command.args(args);
    output_within_limit(command, "projector")
}

/// Runs `command` to its end and collects its output, as `Command::output` does; one that has
/// not ended after [`ONE_OFF_LIMIT`] (a command waiting for a lock it should refuse, say) is
/// killed and the test fails with what it printed, instead of hanging the suite.
pub fn output_within_limit(mut command: Command, what: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("one-off-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("a directory for the command's output");
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let file = |path: &std::path::Path| {
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"))
    };
    let mut child = command
        .stdout(Stdio::from(file(&out)))
        .stderr(Stdio::from(file(&err)))
        .spawn()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    let deadline = Instant::now() + ONE_OFF_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |path: &std::path::Path| std::fs::read(path).unwrap_or_default();
    let (stdout, stderr) = (read(&out), read(&err));
    std::fs::remove_dir_all(&dir).ok();
    let Some(status) = status else {
        panic!(
            "{what} did not end within {ONE_OFF_LIMIT:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

/// A child process of the test, killed (SIGKILL) and reaped when dropped, so a failing test
/// leaves no process behind.
pub struct Process(Child);

impl Process {
    /// Starts `command` with its standard output and error written to `log`.
    pub fn spawn_logged(mut command: Command, what: &str, log: &std::path::Path) -> Self {
        let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("create {log:?}: {e}"));
        let errors = file.try_clone().expect("clone the log file");
        let child = command
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(errors))
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        Self(child)
    }

    /// Starts `command` with its output discarded.
    pub fn spawn(mut command: Command, what: &str) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        Self(child)
    }

    /// The process id (for `/proc/<pid>`).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends `signal` (as `kill` takes it, e.g. `-STOP`) to the process by its pid.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} failed");
    }

    /// The exit status if the process has ended (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().expect("poll the process")
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits (blocking, at most `timeout`) for the process to exit by itself; `what` is the
    /// panic message if it does not.
    pub fn wait_for_exit(&mut self, timeout: Duration, what: &str) -> ExitStatus {
        self.exit_within(timeout)
            .unwrap_or_else(|| panic!("{what}"))
    }

    /// The exit status if the process exits by itself within `timeout` (blocking).
    pub fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait().expect("wait for the process") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) process too.
        self.kill();
    }
}

/// A relay of its own process (`command-api relay`), its ops routes on `ops_port`.
pub fn spawn_relay(settings: &Settings, ops_port: u16) -> Process {
    let mut command = service_command("command-api", settings);
    command
        .arg("relay")
        .env("APP__COMMAND_API__PORT", ops_port.to_string())
        .env(
            "APP__KAFKA__DELIVERY_TIMEOUT_MS",
            settings.kafka.delivery_timeout_ms.to_string(),
        )
        .env("APP__RELAY__POLL_INTERVAL_MS", "200")
        .env("APP__RELAY__BATCH_SIZE", "50")
        .env(
            "APP__RELAY__DATABASE_TIMEOUT_MS",
            settings.relay.database_timeout_ms.to_string(),
        );
    Process::spawn(command, "a relay process")
}

/// A projector process; with `command_api`, its process manager sends commands there.
pub fn spawn_projector(settings: &Settings, command_api: Option<&str>) -> Process {
    Process::spawn(
        projector_command(settings, command_api),
        "a projector process",
    )
}

/// As [`spawn_projector`], its output down to `info` (its subscription, each assignment)
/// written to `log`, for a test to show where the projector stood when it failed.
pub fn spawn_projector_logged(
    settings: &Settings,
    command_api: Option<&str>,
    log: &std::path::Path,
) -> Process {
    let mut command = projector_command(settings, command_api);
    command.env("APP__LOG__FILTER", "info");
    Process::spawn_logged(command, "a projector process", log)
}

fn projector_command(settings: &Settings, command_api: Option<&str>) -> Command {
    let mut command = service_command("projector", settings);
    match command_api {
        Some(url) => command.env("APP__PROJECTOR__COMMAND_API_URL", url),
        None => command.env("APP__PROJECTOR__PROCESS_MANAGER", "false"),
    };
    command
        .env("APP__PROJECTOR__PORT", free_port().to_string())
        .env("APP__PROJECTOR__BATCH_SIZE", "50");
    command
}

/// A `command-api` process (relay off, no migrations) and its base URL.
pub struct CommandApiProcess {
    pub process: Process,
    pub url: String,
}

impl CommandApiProcess {
    pub fn start(settings: &Settings) -> Self {
        let (command, url) = Self::command(settings);
        Self {
            process: Process::spawn(command, "a command-api process"),
            url,
        }
    }

    /// As [`Self::start`], logging everything down to `filter` into `log`.
    pub fn start_logged(settings: &Settings, filter: &str, log: &std::path::Path) -> Self {
        let (mut command, url) = Self::command(settings);
        command.env("APP__LOG__FILTER", filter);
        Self {
            process: Process::spawn_logged(command, "a command-api process", log),
            url,
        }
    }

    fn command(settings: &Settings) -> (Command, String) {
        let port = free_port();
        let mut command = service_command("command-api", settings);
        command
            .env("APP__DATABASE__MIGRATE_ON_START", "false")
            .env("APP__RELAY__ENABLED", "false")
            .env("APP__COMMAND_API__PORT", port.to_string());
        (command, format!("http://127.0.0.1:{port}"))
    }

    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client.get(format!("{}/readyz", self.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the command API process never got ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether the service at `base_url` shows `line` on its `/metrics`; `None` if it does not answer.
pub async fn metric_line(client: &reqwest::Client, base_url: &str, line: &str) -> Option<bool> {
    let text = client
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(text.lines().any(|l| l.trim() == line))
}

/// Tests start services on ports picked seconds earlier; one port handed to two of them made a
/// Kafka node of one test dial another test's HTTP server.
#[test]
fn free_ports_are_never_handed_out_twice_nor_from_the_ephemeral_range() {
    let ports: Vec<u16> = (0..2_000).map(|_| free_port()).collect();
    let distinct: std::collections::HashSet<&u16> = ports.iter().collect();
    assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
    assert!(ports.iter().all(|p| PORTS.contains(p)), "{ports:?}");
}

/// The sum of the samples in a Prometheus text page whose series name is `name` and whose
/// labels include every one of `labels` (`key="value"` each); 0 when none. The metrics
/// recorder is process-wide in this test binary, so a test compares this before and after
/// what it does rather than looking for a series other tests also produce.
pub fn metric_sum(page: &str, name: &str, labels: &[&str]) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            (series_name == name && labels.iter().all(|l| rest.contains(l)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// The live processes whose command line has an argument containing `needle` (a path only one
/// test uses: a fresh profile or data directory), read from `/proc`.
pub fn pids_naming(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                String::from_utf8_lossy(&cmdline)
                    .split('\0')
                    .any(|arg| arg.contains(needle))
            })
        })
        .collect()
}

/// Sends SIGKILL to `pid`, if it is still a process whose command line names `needle` (so a
/// pid reused since it was read is left alone); whether one was signalled.
pub fn kill_if_naming(pid: u32, needle: &str) -> bool {
    if !pids_naming(needle).contains(&pid) {
        return false;
    }
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .is_ok_and(|status| status.success())
}
