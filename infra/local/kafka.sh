#!/usr/bin/env bash
# Apache Kafka clusters on loopback, in KRaft mode, for the local stack and the tests.
#
#   infra/local/kafka.sh jars                      fetch the pinned broker jars (once)
#   infra/local/kafka.sh up DIR PORTS CTL_PORTS    start one node per port (formatting DIR the
#                                                  first time) and wait until all are registered
#   infra/local/kafka.sh down DIR                  stop the nodes started in DIR, by their pids
#
# PORTS and CTL_PORTS are comma-separated lists of equal length: node i listens for clients
# on the i-th port and for its controller quorum on the i-th controller port. Every node is
# both broker and controller (all nodes vote). With three or more nodes, topics are replicated
# three times and a write needs two in-sync replicas; with fewer, every node holds every
# partition. Each node's config, data, pid and log (server.log) are under DIR/node-<id>.
#
# The jars come from Maven Central through infra/local/kafka/pom.xml (version pinned there)
# into .data/kafka-lib/<version>; Java and Maven are installed with apt when missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
POM="$ROOT/infra/local/kafka/pom.xml"
LOG4J="$ROOT/infra/local/kafka/log4j2.properties"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
LIB="$ROOT/.data/kafka-lib/$KAFKA_VERSION"
# Modest heaps: the local clusters hold little, and three nodes share two cores with the rest.
KAFKA_JVM_OPTS="${KAFKA_JVM_OPTS:--Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}"

log() { printf '[kafka] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_tools() {
  local missing=()
  command -v java >/dev/null || missing+=(default-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  if [ "${#missing[@]}" -eq 0 ]; then return; fi
  log "installing ${missing[*]} with apt"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}"
}

jars() {
  if [ -f "$LIB/.complete" ]; then return; fi
  install_tools
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIB"
  rm -rf "$LIB"
  mvn -B -q -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIB"
  touch "$LIB/.complete"
}

# running PID: the process exists and has not exited (a zombie, exited but not reaped yet,
# still answers `kill -0`).
running() {
  local state
  state=$(sed -n 's/^.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null) && [ -n "$state" ] && [ "$state" != Z ]
}

# just_started PIDFILE: the pid in PIDFILE runs and started within 2 s of the file being
# written: the node `up` started, maybe not its broker yet (see `up`), and not a pid another
# process took since (after a reboot, say).
just_started() {
  local pid start btime ticks written
  [ -f "$1" ] && pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && running "$pid" || return 1
  start=$(sed -n 's/^.*) //p' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f20)
  btime=$(sed -n 's/^btime //p' /proc/stat)
  ticks=$(getconf CLK_TCK)
  written=$(stat -c %Y "$1" 2>/dev/null) || return 1
  [ -n "$start" ] && [ -n "$btime" ] || return 1
  start=$((btime + start / ticks))
  [ $((start - written)) -le 2 ] && [ $((written - start)) -le 2 ]
}

# alive PIDFILE: the pid in PIDFILE is this node's running broker, not a reused pid: its
# command line names the node's own server.properties (PIDFILE's directory), so a pid since
# taken by another cluster's broker does not count either.
alive() {
  local pid node
  [ -f "$1" ] && pid=$(cat "$1") && running "$pid" &&
    node="$(cd "$(dirname "$1")" && pwd)" &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $node/server.properties"
}

# write_config DIR ID PORT CTL_PORT VOTERS NODES
write_config() {
  local node="$1/node-$2" rf=3 isr=2
  if [ "$6" -lt 3 ]; then rf="$6" isr=1; fi
  mkdir -p "$node"
  cat >"$node/server.properties" <<CONF
process.roles=broker,controller
node.id=$2
controller.quorum.voters=$5
listeners=PLAINTEXT://127.0.0.1:$3,CONTROLLER://127.0.0.1:$4
advertised.listeners=PLAINTEXT://127.0.0.1:$3
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$node/data
# The relay creates the event topics (unlimited retention); nothing else creates topics.
auto.create.topics.enable=false
num.partitions=3
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
CONF
}

# start_node DIR ID: starts the node unless it runs; formats its storage the first time.
start_node() {
  local node="$1/node-$2" cluster_id
  if alive "$node/pid"; then
    log "node $2 of $1 already running (pid $(cat "$node/pid"))"
    return
  fi
  cluster_id="$(cat "$1/cluster-id")"
  if [ ! -f "$node/data/meta.properties" ]; then
    java -cp "$LIB/*" -Dlog4j2.configurationFile="$LOG4J" kafka.tools.StorageTool format \
      --cluster-id="$cluster_id" --config="$node/server.properties" --ignore-formatted >"$node/format.log" 2>&1 ||
      { log "formatting $node failed: see $node/format.log"; return 1; }
  fi
  : >"$node/server.log"
  # Its own session: a Ctrl-C meant for the foreground (`make run`) does not reach the brokers;
  # `down` stops them in order.
  # shellcheck disable=SC2086
  setsid nohup java $KAFKA_JVM_OPTS -Dlog4j2.configurationFile="$LOG4J" -cp "$LIB/*" \
    kafka.Kafka "$node/server.properties" >"$node/server.log" 2>&1 &
  echo $! >"$node/pid"
}

up() {
  local dir="$1" ports=() ctl=() voters="" i nodes deadline
  IFS=, read -r -a ports <<<"$2"
  IFS=, read -r -a ctl <<<"$3"
  nodes="${#ports[@]}"
  if [ "$nodes" -eq 0 ] || [ "$nodes" -ne "${#ctl[@]}" ]; then
    log "up needs as many controller ports as ports"; exit 2
  fi
  jars
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if [ ! -f "$dir/cluster-id" ]; then
    # A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.
    head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' >"$dir/cluster-id"
  fi
  for i in $(seq 1 "$nodes"); do
    voters="${voters:+$voters,}$i@127.0.0.1:${ctl[$((i - 1))]}"
  done
  for i in $(seq 1 "$nodes"); do
    write_config "$dir" "$i" "${ports[$((i - 1))]}" "${ctl[$((i - 1))]}" "$voters" "$nodes"
  done
  log "starting $nodes node(s) on 127.0.0.1:$2 (data in $dir)"
  # Formatting starts a JVM per node: do it for all nodes at once.
  local starting=()
  for i in $(seq 1 "$nodes"); do
    start_node "$dir" "$i" &
    starting+=($!)
  done
  for i in "${starting[@]}"; do wait "$i" || exit 1; done
  # A node logs this line once it has joined the quorum, caught up with the cluster metadata
  # and been unfenced as a broker: after it on every node, all of them take requests.
  deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-120}))
  # Whether the pid (just started, or found running) still runs is all that tells a node that
  # exited here: the shell forked to start it runs setsid, and until then its command line does
  # not name the node's config, which `alive` looks for. A loaded machine can hold it there
  # long enough for a node still starting to look exited.
  for i in $(seq 1 "$nodes"); do
    until grep -q 'Kafka Server started' "$dir/node-$i/server.log" 2>/dev/null; do
      if ! running "$(cat "$dir/node-$i/pid" 2>/dev/null || echo none)"; then
        log "node $i exited; the end of $dir/node-$i/server.log:"
        tail -n 20 "$dir/node-$i/server.log" >&2
        exit 1
      fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        log "node $i not ready in time; see $dir/node-$i/server.log"; exit 1
      fi
      sleep 0.2
    done
  done
  log "ready: $nodes node(s) on 127.0.0.1:$2"
}

down() {
  local dir="$1" pidfile pid stopping=()
  for pidfile in "$dir"/node-*/pid; do
    [ -e "$pidfile" ] || continue
    # A node still starting may not be its broker yet (see `up`), and is stopped all the
    # same: left running, it would have no pid file to be stopped by.
    if alive "$pidfile" || just_started "$pidfile"; then
      pid=$(cat "$pidfile" 2>/dev/null || true)
      if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        stopping+=("$pid")
      fi
    fi
    rm -f "$pidfile"
  done
  [ "${#stopping[@]}" -gt 0 ] || return 0
  # A controlled shutdown hands leadership over; once the quorum is gone that cannot finish,
  # so the last nodes get a bounded wait and then SIGKILL (their logs are flushed either way).
  for _ in $(seq 1 150); do
    for pid in "${stopping[@]}"; do
      if running "$pid"; then sleep 0.2; continue 2; fi
    done
    log "stopped ${#stopping[@]} node(s) of $dir"
    return 0
  done
  for pid in "${stopping[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  log "killed ${#stopping[@]} node(s) of $dir after 30 s"
}

case "${1:-}" in
  jars) jars ;;
  up)
    [ "$#" -eq 4 ] || { echo "usage: $0 up DIR PORTS CTL_PORTS" >&2; exit 2; }
    up "$2" "$3" "$4"
    ;;
  down)
    [ "$#" -eq 2 ] || { echo "usage: $0 down DIR" >&2; exit 2; }
    down "$2"
    ;;
  *)
    echo "usage: $0 jars | up DIR PORTS CTL_PORTS | down DIR" >&2
    exit 2
    ;;
esac
