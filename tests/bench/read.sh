#!/usr/bin/env bash
# Read-side benchmark, one run on one machine: the whole pipeline (command API with the relay,
# Apache Kafka, projector, query API) on a fresh database, then
#   1. command-to-visible latency at a steady command rate (default 500/s): from each command's
#      2xx until the query API returns that version;
#   2. cached single-resource reads from the query API, then the same requests against a
#      trivial axum handler, same concurrency and duration.
# Loopback only; every phase is bounded in time.
#
#   tests/bench/read.sh [rate=500] [seconds=20] [concurrency=16]
#
# BENCH_BROKER=run (default) uses the Kafka cluster of `make run` (one broker unless
# RUN_KAFKA_NODES says otherwise); BENCH_BROKER=test the three replicated brokers of `make test`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RATE="${1:-500}"
SECONDS_PER_PHASE="${2:-20}"
CLIENTS="${3:-16}"

# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
bench_stack
build_pipeline
fresh_bench_db bench_read
case "${BENCH_BROKER:-run}" in
  run) BROKER="$KAFKA_BOOTSTRAP" ;;
  test) ./infra/local/stack.sh up-test; BROKER="$TEST_KAFKA_BOOTSTRAP" ;;
  *) echo "BENCH_BROKER must be run or test" >&2; exit 2 ;;
esac
pipeline_env 18180 "$BROKER" "bench$(date +%s)."
TRIVIAL_PORT=18190

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
# shellcheck source=infra/local/wait-for-port.sh
source "$ROOT/infra/local/wait-for-port.sh"
./target/release/schema-registry >"$ROOT/.data/bench-read-registry.log" 2>&1 &
pids+=($!)
wait_for_port $REGISTRY_PORT
./target/release/command-api >"$ROOT/.data/bench-read-command-api.log" 2>&1 &
pids+=($!)
wait_for_port $API_PORT
./target/release/projector >"$ROOT/.data/bench-read-projector.log" 2>&1 &
pids+=($!)
./target/release/query-api >"$ROOT/.data/bench-read-query-api.log" 2>&1 &
pids+=($!)
wait_for_port $QUERY_PORT
./target/release/loadgen trivial-server --port $TRIVIAL_PORT --max-secs 900 &
pids+=($!)
wait_for_port $TRIVIAL_PORT

echo "== machine: $(nproc) cores; broker: Apache Kafka, $(tr , "\n" <<<"$BROKER" | wc -l) broker(s) (${BENCH_BROKER:-run} cluster) on $BROKER"
echo "== visibility: $RATE commands/s for ${SECONDS_PER_PHASE}s (rename one of 500 users each)"
./target/release/loadgen visibility --command-url "http://127.0.0.1:$API_PORT" \
  --query-url "http://127.0.0.1:$QUERY_PORT" --rate "$RATE" --duration-secs "$SECONDS_PER_PHASE"
echo "== cached reads: $CLIENTS clients, ${SECONDS_PER_PHASE}s each, query API then trivial handler"
./target/release/loadgen reads --url "http://127.0.0.1:$QUERY_PORT" \
  --command-url "http://127.0.0.1:$API_PORT" --baseline-url "http://127.0.0.1:$TRIVIAL_PORT" \
  --concurrency "$CLIENTS" --duration-secs "$SECONDS_PER_PHASE" --warmup-secs 2 --max-requests 5000000
