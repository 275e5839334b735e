//! Apache Kafka for tests: the shared three-broker cluster ([`shared_bootstrap`]), a one-node
//! cluster of the test's own that it may stop ([`Broker`]), and [`consume`], which reads topics
//! from the beginning.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use uuid::Uuid;

use crate::support::processes::free_port;

/// The three-broker cluster `make test` starts, shared by tests that do not stop it.
pub fn shared_bootstrap() -> String {
    std::env::var("TEST_KAFKA_BOOTSTRAP")
        .unwrap_or_else(|_| "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094".to_owned())
}

/// A one-node Apache Kafka cluster of the test's own (started with `infra/local/kafka.sh`), for
/// tests that stop the broker; its data survives a restart.
pub struct Broker {
    port: u16,
    controller_port: u16,
    dir: PathBuf,
}

impl Broker {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("kafka-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("broker dir");
        let mut broker = Self {
            port: free_port(),
            controller_port: free_port(),
            dir,
        };
        broker.restart();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same ports and storage; returns once the broker takes requests.
    pub fn restart(&mut self) {
        let status = Self::script()
            .arg("up")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .arg(self.controller_port.to_string())
            .stdout(Stdio::null())
            .status()
            .expect("run infra/local/kafka.sh");
        assert!(status.success(), "the test's Kafka broker did not start");
    }

    pub fn stop(&mut self) {
        let _ = Self::script()
            .arg("down")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn script() -> Command {
        Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../infra/local/kafka.sh"
        ))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug, Clone)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub key: String,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
}

/// Reads every partition of `topics` from the beginning until messages with `count` distinct
/// event ids arrived (duplicates are kept) or `timeout` passed.
pub async fn consume(
    bootstrap: &str,
    topics: &[String],
    partitions: i32,
    count: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .expect("assignment");
        }
    }
    consumer.assign(&assignment).expect("assign");
    let mut out: Vec<Consumed> = Vec::new();
    let mut distinct = HashSet::new();
    let deadline = Instant::now() + timeout;
    while distinct.len() < count && Instant::now() < deadline {
        let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        else {
            continue;
        };
        let headers: HashMap<String, String> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|header| {
                        let value = header.value.map(|v| String::from_utf8_lossy(v).to_string());
                        (header.key.to_owned(), value.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        distinct.insert(headers.get("event_id").cloned().unwrap_or_default());
        out.push(Consumed {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).to_string())
                .unwrap_or_default(),
            headers,
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        });
    }
    out
}

/// A directory with a `bin/setsid` that stands in for a loaded machine: `kafka.sh` starts a
/// node in a forked shell that runs `setsid`, and until it does, the pid's command line does
/// not name the node. This `setsid` holds the pid under another command line for a second,
/// then runs the real one. Returns the directory and a `PATH` that finds it first.
fn slow_setsid() -> (PathBuf, String) {
    let real = Command::new("sh")
        .args(["-c", "command -v setsid"])
        .output()
        .expect("find setsid");
    let real = String::from_utf8(real.stdout).unwrap().trim().to_owned();
    assert!(!real.is_empty(), "setsid is not installed");
    let dir = std::env::temp_dir().join(format!("kafka-slow-{}", Uuid::new_v4().simple()));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("setsid");
    std::fs::write(
        &fake,
        format!(
            "#!/usr/bin/env bash\nprintf '%s\\0' \"$@\" >\"$0.args\"\n\
             exec -a slow-setsid bash -c 'sleep 1; mapfile -d \"\" -t args <\"$1\"; exec {real} \"${{args[@]}}\"' _ \"$0.args\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    (dir, path)
}

/// Whether `pid` runs (exists and is not a zombie).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// On a loaded machine, `up` reported a node that was still starting as exited (its log
/// still empty) and failed a test: it must wait for it.
#[test]
fn a_broker_slow_to_become_the_jvm_is_waited_for() {
    let (dir, path) = slow_setsid();
    let data = dir.join("cluster");
    let up = Broker::script()
        .env("PATH", &path)
        .args(["up", data.to_str().unwrap()])
        .args([free_port().to_string(), free_port().to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("run infra/local/kafka.sh");
    let down = Broker::script()
        .args(["down", data.to_str().unwrap()])
        .stdout(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(up.success(), "a broker still starting was reported exited");
    assert!(down.expect("run infra/local/kafka.sh down").success());
}

/// `down` while a node is still starting stops it: it used to drop the pid file of a pid that
/// was not the broker yet, and the broker went on running with nothing to stop it by.
#[test]
fn a_broker_stopped_while_it_is_still_starting_is_stopped() {
    let (dir, path) = slow_setsid();
    let data = dir.join("cluster");
    let mut up = Broker::script()
        .env("PATH", &path)
        .args(["up", data.to_str().unwrap()])
        .args([free_port().to_string(), free_port().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run infra/local/kafka.sh");
    let pidfile = data.join("node-1/pid");
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = loop {
        // Read once written: the file exists, empty, a moment before its pid is in it.
        match std::fs::read_to_string(&pidfile) {
            Ok(pid) if !pid.trim().is_empty() => break pid.trim().to_owned(),
            _ => {}
        }
        assert!(Instant::now() < deadline, "the node was never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let down = Broker::script()
        .args(["down", data.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run infra/local/kafka.sh down");
    let _ = up.wait();
    // Past the stand-in's delay: a node left behind has become its broker by now.
    std::thread::sleep(Duration::from_millis(1500));
    let left = running(&pid);
    if left {
        // Only if it is still this test's node (its command line names the test's directory).
        let ours = pid.parse().is_ok_and(|pid| {
            crate::support::processes::kill_if_naming(pid, &data.to_string_lossy())
        });
        assert!(ours || !running(&pid), "pid {pid} is another process now");
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(down.success());
    assert!(!left, "the node outlived `down` (pid {pid})");
}
