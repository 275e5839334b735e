#!/usr/bin/env bash
# Growth benchmark, one machine: the same three measurements on an empty store and on one
# holding EVENTS events (default 10,000,000), with the whole pipeline running (command API
# with the relay, one projector, query API, schema registry; authentication on):
#   - appends: place-order commands, 16 clients, 20 s (`loadgen write --mode mixed`): rate, p99;
#   - relay tailing: 50,000 events committed at once, time until the broker acknowledged them
#     all (`loadgen relay`, which also runs a raw producer beside it);
#   - `min_version` reads: 300 commands/s for 20 s, each read back at its version
#     (`loadgen visibility`): p50, p99.
# The large store is seeded straight into the events table (`loadgen seed`), its read models
# rebuilt by `projector replay all`, and the relay's checkpoint set past it (those events are
# history; only new ones are published). Query plans of the statements that touch the events
# table on every command and every relay round are printed for both stores, with the store's
# size on disk. Each store is checkpointed before it is measured, so that neither pays for
# the other's (or the seeding's) dirty pages. The large store (16 GB at 10 million events) is
# dropped at the end unless GROWTH_KEEP_STORE=1, which also reuses the store an earlier such
# run kept when it holds at least EVENTS events (seeding and rebuilding take ten minutes).
# Loopback only; bounded by EVENTS and by each tool's time limit.
#
#   tests/bench/growth.sh [events=10000000]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
EVENTS="${1:-10000000}"

# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
bench_stack
build_pipeline
OUT="$ROOT/.data/bench-growth"
rm -rf "$OUT"
mkdir -p "$OUT"
now() { date +%s.%N; }
export APP__AUTH__COMMANDS_PER_SECOND=1000000 APP__AUTH__COMMANDS_BURST=1000000 \
  APP__AUTH__ANONYMOUS_PER_MINUTE=100000000 APP__AUTH__HASHING_QUEUE=100000 \
  APP__AUTH__ARGON2_MEMORY_KIB=1024 APP__AUTH__ARGON2_ITERATIONS=1 OTEL_SDK_DISABLED=true
# shellcheck source=infra/local/wait-for-port.sh
source "$ROOT/infra/local/wait-for-port.sh"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
stop_services() {
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
}

# plans LABEL: EXPLAIN ANALYZE of an aggregate's load, an append's next-sequence lookup and
# one relay round, on the current bench database.
plans() {
  local sql="$PG_BINDIR/psql $BENCH_URL -qX"
  local id
  id=$($sql -tAc "SELECT aggregate_id FROM events WHERE aggregate_type = 'user' ORDER BY global_position DESC LIMIT 1")
  {
    echo "-- $1: load one user's events"
    $sql -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT * FROM events WHERE aggregate_type = 'user' AND aggregate_id = '$id' ORDER BY sequence"
    echo "-- $1: next sequence of an aggregate (append)"
    $sql -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT COALESCE(MAX(sequence), 0) FROM events WHERE aggregate_type = 'user' AND aggregate_id = '$id'"
    echo "-- $1: one relay round from the checkpoint"
    $sql -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT * FROM events WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot()) AND (tx_id, global_position) > ((SELECT tx_id FROM relay_checkpoints WHERE name = 'default'), (SELECT global_position FROM relay_checkpoints WHERE name = 'default')) ORDER BY tx_id, global_position LIMIT 5000"
  } >"$OUT/plans-$1.txt" 2>&1
  grep -E '^-- |Index|Seq Scan|Execution Time' "$OUT/plans-$1.txt" | sed 's/^/  /'
}

# measure LABEL: the three measurements against the current bench database.
measure() {
  local label=$1 base=$2
  "$PG_BINDIR/psql" "$BENCH_URL" -qc "CHECKPOINT"
  pipeline_env "$base" "$KAFKA_BOOTSTRAP" "growth$label$(date +%s)."
  ./target/release/schema-registry >"$OUT/registry-$label.log" 2>&1 &
  pids+=($!)
  wait_for_port "$REGISTRY_PORT"
  ./target/release/command-api >"$OUT/command-api-$label.log" 2>&1 &
  pids+=($!)
  wait_for_port "$API_PORT"
  ./target/release/projector >"$OUT/projector-$label.log" 2>&1 &
  pids+=($!)
  ./target/release/query-api >"$OUT/query-api-$label.log" 2>&1 &
  pids+=($!)
  wait_for_port "$QUERY_PORT"
  echo "-- $label: appends (place order, 16 clients, 20 s)"
  ./target/release/loadgen write --url "http://127.0.0.1:$API_PORT" --concurrency 16 \
    --duration-secs 20 --warmup-secs 2 --mode mixed 2>>"$OUT/loadgen-$label.err" |
    grep -E '^(requests|throughput|latency)' | sed 's/^/  /'
  echo "-- $label: relay tailing (50,000 events committed at once)"
  ./target/release/loadgen relay --database-url "$BENCH_URL" --bootstrap "$KAFKA_BOOTSTRAP" \
    --events 50000 | sed 's/^/  /'
  echo "-- $label: min_version reads (300 commands/s, 20 s)"
  ./target/release/loadgen visibility --command-url "http://127.0.0.1:$API_PORT" \
    --query-url "http://127.0.0.1:$QUERY_PORT" --rate 300 --duration-secs 20 --users 1500 \
    2>>"$OUT/loadgen-$label.err" | sed 's/^/  /'
  stop_services
  echo "-- $label: query plans"
  plans "$label"
  echo "-- $label: events table with its indexes: $("$PG_BINDIR/psql" "$BENCH_URL" -tAc "SELECT pg_size_pretty(pg_total_relation_size('events'))"), database: $("$PG_BINDIR/psql" "$BENCH_URL" -tAc "SELECT pg_size_pretty(pg_database_size(current_database()))")"
}

echo "== machine: $(nproc) cores; Apache Kafka on $KAFKA_BOOTSTRAP"
echo "== 1. empty store"
fresh_bench_db bench_growth_empty
./target/release/command-api migrate >/dev/null
measure empty 18680

echo "== 2. a store of $EVENTS events"
kept=0
if [ "${GROWTH_KEEP_STORE:-0}" = 1 ]; then
  kept=$("$PG_BINDIR/psql" "$DATABASE_ADMIN_URL" -tAc "SELECT count(*) FROM pg_database WHERE datname = 'bench_growth_full'")
  if [ "$kept" = 1 ]; then
    BENCH_URL="${DATABASE_ADMIN_URL%/*}/bench_growth_full"
    export APP__DATABASE__URL="$BENCH_URL" APP__LOG__FILTER=warn
    kept=$("$PG_BINDIR/psql" "$BENCH_URL" -tAc "SELECT (count(*) >= $EVENTS)::int FROM events")
  fi
fi
if [ "$kept" = 1 ]; then
  echo "  reusing the store of an earlier run ($("$PG_BINDIR/psql" "$BENCH_URL" -tAc "SELECT count(*) FROM events") events)"
else
  fresh_bench_db bench_growth_full
  ./target/release/command-api migrate >/dev/null
  started=$(now)
  DATABASE_URL="$BENCH_URL" ./target/release/loadgen seed --database-url "$BENCH_URL" --events "$EVENTS" |
    sed 's/^/  /'
  "$PG_BINDIR/psql" "$BENCH_URL" -qc "VACUUM ANALYZE events"
  python3 -c "print(f'  seeded and analysed in {$(now) - $started:.0f} s')"
  # The seeded events are history: the relay starts after the last of them.
  "$PG_BINDIR/psql" "$BENCH_URL" -qc "INSERT INTO relay_checkpoints (name, tx_id, global_position)
    SELECT 'default', tx_id, global_position FROM events ORDER BY tx_id DESC, global_position DESC LIMIT 1"
  started=$(now)
  DATABASE_URL="$BENCH_URL" ./target/release/projector replay all >"$OUT/replay.log" 2>"$OUT/replay.err"
  DATABASE_URL="$BENCH_URL" ./target/release/projector prune all >/dev/null
  "$PG_BINDIR/psql" "$BENCH_URL" -qc "VACUUM ANALYZE"
  python3 -c "print(f'  read models rebuilt by projector replay all in {$(now) - $started:.0f} s')"
fi
measure full 18780
if [ "${GROWTH_KEEP_STORE:-0}" != 1 ]; then
  "$PG_BINDIR/psql" "$DATABASE_ADMIN_URL" -qc "DROP DATABASE bench_growth_full WITH (FORCE)"
fi
