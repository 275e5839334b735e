#!/usr/bin/env bash
# Stall benchmark, one run on one machine: what a broker that stops answering does to the
# pipeline, drawn over time.
#   1. The release command API (with its relay), a projector and a schema registry on the
#      `make run` broker; registrations at a steady RATE per second for the whole run.
#   2. After 20 s the broker is stopped (SIGSTOP: it neither answers nor closes connections)
#      for STALL seconds, then resumed (SIGCONT).
#   3. The run goes on until the relay and the projections `users` and `audit` have caught up
#      (at most five minutes after the stall).
# Printed: commands answered and refused during the run, the relay's backlog when the broker
# resumed, how long the relay and each projection took to catch up. Drawn: lag and throughput
# over time (docs/plots/stall-lag.png, docs/plots/stall-throughput.png). Loopback only;
# bounded in time; the broker is resumed on any exit.
#
#   tests/bench/stall.sh [rate=300] [stall-seconds=45]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RATE="${1:-300}"
STALL="${2:-45}"

# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
bench_stack
build_pipeline
ensure_plot_font
fresh_bench_db bench_stall
pipeline_env 18380 "$KAFKA_BOOTSTRAP" "stall$(date +%s)."
OUT="$ROOT/.data/bench-stall"
mkdir -p "$OUT"
broker_pidfile="$ROOT/.data/kafka-run-1n/node-1/pid"
broker=$(cat "$broker_pidfile")
tr '\0' ' ' <"/proc/$broker/cmdline" | grep -q 'kafka\.Kafka' || {
  echo "no broker of make run at pid $broker" >&2
  exit 1
}

pids=()
cleanup() {
  kill -CONT "$broker" 2>/dev/null || true
  kill "${pids[@]}" 2>/dev/null || true
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
# shellcheck source=infra/local/wait-for-port.sh
source "$ROOT/infra/local/wait-for-port.sh"

# Registrations are the load (one event each): hashing at the cheapest setting, so that the
# load stays steady and the CPU goes to the pipeline (bench-write reports hashing apart).
export APP__AUTH__ARGON2_MEMORY_KIB=1024 APP__AUTH__ARGON2_ITERATIONS=1 \
  APP__AUTH__ANONYMOUS_PER_MINUTE=100000000 APP__AUTH__HASHING_QUEUE=100000
./target/release/schema-registry >"$OUT/registry.log" 2>&1 &
pids+=($!)
wait_for_port $REGISTRY_PORT
./target/release/command-api >"$OUT/command-api.log" 2>&1 &
pids+=($!)
./target/release/projector >"$OUT/projector.log" 2>&1 &
pids+=($!)
wait_for_port $API_PORT
wait_for_port $PROJECTOR_PORT

echo "== machine: $(nproc) cores; broker: Apache Kafka, 1 broker on $KAFKA_BOOTSTRAP (pid $broker)"
echo "== registrations at $RATE/s; the broker stopped 20 s in, for $STALL s"
sample_pipeline "$OUT/samples.csv" "$API_PORT" "$PROJECTOR_PORT" &
sampler=$!
pids+=($sampler)
load_secs=$((20 + STALL + 40))
./target/release/loadgen write --url "http://127.0.0.1:$API_PORT" --mode fresh --concurrency 16 \
  --rate "$RATE" --warmup-secs 0 --duration-secs "$load_secs" >"$OUT/loadgen.txt" 2>&1 &
load=$!
pids+=($load)
sleep 20
kill -STOP "$broker"
stopped_at=$(date +%s.%N)
sleep "$STALL"
backlog=$("$PG_BINDIR/psql" "$BENCH_URL" -tAc "SELECT count(*) FROM events")
published=$(curl -fs "http://127.0.0.1:$API_PORT/metrics" | awk '/^relay_events_published_total/ {print $2}')
kill -CONT "$broker"
resumed=$(date +%s.%N)
published=${published:-0}
echo "broker stopped for $(python3 -c "print(f'{$resumed - $stopped_at:.1f}')") s; relay backlog when it resumed: $((backlog - ${published%.*})) events"

# Caught up: every event in the store published and applied by both projections.
since() { python3 -c "print(f'{$(date +%s.%N) - $1:.1f}')"; }
relay_done="" users_done="" audit_done=""
deadline=$(($(date +%s) + 300))
while [[ -z $relay_done || -z $users_done || -z $audit_done ]] || kill -0 "$load" 2>/dev/null; do
  if (($(date +%s) > deadline)); then
    echo "not caught up within five minutes of the stall" >&2
    exit 1
  fi
  sleep 0.5
  last=$(tail -1 "$OUT/samples.csv")
  IFS=, read -r _ events published users audit <<<"$last"
  [[ -n $events ]] || continue
  if [[ -z $relay_done ]] && ((${published%.*} >= events)); then
    relay_done=$(since "$resumed")
    echo "relay: caught up ${relay_done} s after the broker resumed"
  fi
  if [[ -z $users_done ]] && ((${users%.*} >= events)); then
    users_done=$(since "$resumed")
    echo "projection users: caught up ${users_done} s after the broker resumed"
  fi
  if [[ -z $audit_done ]] && ((${audit%.*} >= events)); then
    audit_done=$(since "$resumed")
    echo "projection audit: caught up ${audit_done} s after the broker resumed"
  fi
done
sleep 2
kill "$sampler"
grep -E 'requests=|throughput|latency' "$OUT/loadgen.txt"
plot_pipeline "$OUT/samples.csv" stall "Broker stopped for $STALL s at $RATE registrations/s"
