//! A private Apache Kafka cluster of N nodes for one fault test (started with
//! `infra/local/kafka.sh` in a temporary directory, on free loopback ports), whose nodes the
//! test can stall, kill and restart by their pids. Never the shared cluster.
//!
//! One private cluster runs at a time: three JVMs per cluster on two cores next to the shared
//! brokers, and free ports picked for several clusters at once could collide, so fault tests
//! take turns ([`Cluster::start_in_turn`]) instead of failing each other.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::processes::free_port;

pub struct Cluster {
    ports: Vec<u16>,
    controller_ports: Vec<u16>,
    dir: PathBuf,
    /// Held while this cluster exists; dropped after the nodes are down (fields drop last).
    _turn: Option<OwnedMutexGuard<()>>,
}

/// The turn every private cluster waits for.
fn turn() -> Arc<Mutex<()>> {
    static TURN: OnceLock<Arc<Mutex<()>>> = OnceLock::new();
    TURN.get_or_init(|| Arc::new(Mutex::new(()))).clone()
}

impl Cluster {
    /// Waits until no other private cluster runs, then starts `nodes` nodes.
    pub async fn start_in_turn(nodes: usize) -> Self {
        let turn = turn().lock_owned().await;
        let mut cluster = tokio::task::spawn_blocking(move || Self::start(nodes))
            .await
            .expect("start the cluster");
        cluster._turn = Some(turn);
        cluster
    }

    /// Starts `nodes` nodes; returns once every one takes requests.
    pub fn start(nodes: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("kafka-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let cluster = Self {
            ports: (0..nodes).map(|_| free_port()).collect(),
            controller_ports: (0..nodes).map(|_| free_port()).collect(),
            dir,
            _turn: None,
        };
        cluster.up();
        cluster
    }

    pub fn bootstrap(&self) -> String {
        let all: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        all.join(",")
    }

    /// Starts every node that is not running (same ports, same data) and waits for all.
    pub fn up(&self) {
        let list = |ports: &[u16]| {
            let all: Vec<String> = ports.iter().map(u16::to_string).collect();
            all.join(",")
        };
        let status = script()
            .arg("up")
            .arg(&self.dir)
            .arg(list(&self.ports))
            .arg(list(&self.controller_ports))
            .stdout(Stdio::null())
            .status()
            .expect("run infra/local/kafka.sh");
        assert!(status.success(), "the test's Kafka cluster did not start");
    }

    /// The pid of node `node` (1-based), as the script recorded it.
    pub fn pid(&self, node: usize) -> String {
        let file = self.dir.join(format!("node-{node}/pid"));
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .to_owned()
    }

    pub fn nodes(&self) -> usize {
        self.ports.len()
    }

    /// Sends `signal` (e.g. "STOP", "CONT", "KILL", "TERM") to node `node`, which must be
    /// running.
    pub fn signal(&self, node: usize, signal: &str) {
        let pid = self.running_pid(node);
        let pid = pid.unwrap_or_else(|| panic!("kill -{signal}: node {node} is not running"));
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid)
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} node {node}");
    }

    /// The pid of node `node` if that process is still this node's broker: a pid file outlives
    /// its process, and with the kernel's 32,768 pids its number soon belongs to another
    /// process (another cluster's broker, say), which a signal must not reach.
    fn running_pid(&self, node: usize) -> Option<String> {
        let pid = std::fs::read_to_string(self.dir.join(format!("node-{node}/pid"))).ok()?;
        let pid = pid.trim().to_owned();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let config = self.dir.join(format!("node-{node}/server.properties"));
        let ours = String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|arg| arg == config.to_string_lossy());
        ours.then_some(pid)
    }

    /// Sends `signal` to every node.
    pub fn signal_all(&self, signal: &str) {
        for node in 1..=self.nodes() {
            self.signal(node, signal);
        }
    }

    /// Waits until node `node`'s process has exited (after TERM or KILL).
    pub fn wait_exited(&self, node: usize, timeout: Duration) {
        let proc = PathBuf::from(format!("/proc/{}", self.pid(node)));
        let deadline = Instant::now() + timeout;
        while proc.exists() && !is_zombie(&proc) {
            assert!(Instant::now() < deadline, "node {node} did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn is_zombie(proc: &std::path::Path) -> bool {
    std::fs::read_to_string(proc.join("stat"))
        .map(|stat| stat.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

fn script() -> Command {
    Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/local/kafka.sh"
    ))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A stalled node would sit out the script's SIGTERM: wake every node first.
        for node in 1..=self.nodes() {
            if let Some(pid) = self.running_pid(node) {
                let _ = Command::new("kill").arg("-CONT").arg(pid).status();
            }
        }
        let _ = script()
            .arg("down")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
