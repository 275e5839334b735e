#!/usr/bin/env bash
# Relay benchmark, one run on one broker: commit N events, time until the relay has them all
# acknowledged by the broker, then send N same-sized messages with a raw idempotent producer.
# Loopback only; bounded by loadgen's timeout.
#
#   tests/bench/relay.sh [events=50000]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
EVENTS="${1:-50000}"

# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
bench_stack
cargo build --release --locked -p command-api -p schema-registry -p tests \
  --bin command-api --bin schema-registry --bin loadgen
fresh_bench_db bench_relay
# Command API (with the relay) on 18081, schema registry on 18086.
pipeline_env 18081 "$KAFKA_BOOTSTRAP" "bench$(date +%s)."
./target/release/schema-registry >"$ROOT/.data/bench-registry.log" 2>&1 &
REGISTRY_PID=$!
sleep 1
./target/release/command-api >"$ROOT/.data/bench-relay.log" 2>&1 &
API_PID=$!
trap 'kill $API_PID $REGISTRY_PID 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/$API_PORT) 2>/dev/null; then break; fi
  sleep 0.1
done
sleep 2 # the relay creates its topics and registers its schemas

echo "== machine: $(nproc) cores; broker: Apache Kafka, $(tr , "\n" <<<"$KAFKA_BOOTSTRAP" | wc -l) broker(s) on $KAFKA_BOOTSTRAP"
./target/release/loadgen relay --database-url "$BENCH_URL" --bootstrap "$KAFKA_BOOTSTRAP" --events "$EVENTS"
