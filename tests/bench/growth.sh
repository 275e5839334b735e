#!/usr/bin/env bash
# Growth benchmark, one machine: the same three measurements on an empty store and on one
# holding EVENTS events (default 10,000,000), with the whole pipeline running (command API
# with the relay, one projector, query API, schema registry; authentication on):
#   - appends: place-order commands, 16 clients, 20 s (`loadgen write --mode mixed`): rate, p99;
#   - relay tailing: 50,000 events committed at once, time until the broker acknowledged them
#     all (`loadgen relay`, which also runs a raw producer beside it);
#   - `min_version` reads: 300 commands/s for GROWTH_READ_SECS seconds (default 60), each read
#     back at its version (`loadgen visibility`): p50, p99.
# The two stores are measured in turn, GROWTH_ROUNDS times (default 3: empty, large, empty,
# large, ...), so that both see the machine in the same state, and the summary gives each
# figure's median over the rounds with the large store's change against the empty one. The
# empty store is created afresh for each round (a round writes about 100,000 events).
# The large store is seeded straight into the events table (`loadgen seed`), its read models
# rebuilt by `projector replay all`, and the relay's checkpoint set past it (those events are
# history; only new ones are published). Query plans of the statements that touch the events
# table on every command and every relay round are printed for both stores, with the store's
# size on disk. Each store is checkpointed before it is measured, so that neither pays for
# the other's (or the seeding's) dirty pages. The large store (16 GB at 10 million events) is
# dropped at the end unless GROWTH_KEEP_STORE=1, which also reuses the store an earlier such
# run kept when it holds at least EVENTS events (seeding and rebuilding take ten minutes).
# Loopback only; bounded by EVENTS, the rounds and each tool's time limit.
#
#   [GROWTH_ROUNDS=3] [GROWTH_READ_SECS=60] [GROWTH_KEEP_STORE=1] tests/bench/growth.sh [events=10000000]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
EVENTS="${1:-10000000}"
ROUNDS="${GROWTH_ROUNDS:-3}"
READ_SECS="${GROWTH_READ_SECS:-60}"

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

# measure LABEL URL BASE_PORT: the three measurements against the database at URL, with the
# services on ports from BASE_PORT; each tool's JSON report is kept as $OUT/LABEL-*.json.
measure() {
  local label=$1 base=$3
  BENCH_URL=$2
  export APP__DATABASE__URL="$BENCH_URL" APP__LOG__FILTER=warn
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
  ./target/release/loadgen write --url "http://127.0.0.1:$API_PORT" --concurrency 16 \
    --duration-secs 20 --warmup-secs 2 --mode mixed --json \
    >"$OUT/$label-write.json" 2>>"$OUT/loadgen-$label.err"
  ./target/release/loadgen relay --database-url "$BENCH_URL" --bootstrap "$KAFKA_BOOTSTRAP" \
    --events 50000 --json >"$OUT/$label-relay.json"
  ./target/release/loadgen visibility --command-url "http://127.0.0.1:$API_PORT" \
    --query-url "http://127.0.0.1:$QUERY_PORT" --rate 300 --duration-secs "$READ_SECS" \
    --users 1500 --json >"$OUT/$label-visibility.json" 2>>"$OUT/loadgen-$label.err"
  stop_services
  python3 - "$OUT" "$label" <<'PY'
import json, sys
out, label = sys.argv[1:]
w = json.load(open(f"{out}/{label}-write.json"))
r = json.load(open(f"{out}/{label}-relay.json"))
v = json.load(open(f"{out}/{label}-visibility.json"))
print(f"  {label}: place order {w['commands_per_sec']:,.0f}/s p99 {w['p99_ms']:.1f} ms; "
      f"relay {r['relay_events_per_sec']:,.0f} events/s (raw producer {r['raw_messages_per_sec']:,.0f}/s); "
      f"min_version reads {v['accepted']:,} p50 {v['visible_p50_ms']:.1f} ms p99 {v['visible_p99_ms']:.1f} ms "
      f"(errors {v['errors']}, behind {v['behind']})")
PY
}

# plans_and_size LABEL URL
plans_and_size() {
  BENCH_URL=$2
  echo "-- $1: query plans"
  plans "$1"
  echo "-- $1: events table with its indexes: $("$PG_BINDIR/psql" "$BENCH_URL" -tAc "SELECT pg_size_pretty(pg_total_relation_size('events'))"), database: $("$PG_BINDIR/psql" "$BENCH_URL" -tAc "SELECT pg_size_pretty(pg_database_size(current_database()))")"
}

echo "== machine: $(nproc) cores; Apache Kafka on $KAFKA_BOOTSTRAP"
echo "== 1. a store of $EVENTS events"
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
FULL_URL=$BENCH_URL

echo "== 2. $ROUNDS rounds, each on a fresh empty store and then on the large one"
for round in $(seq 1 "$ROUNDS"); do
  fresh_bench_db bench_growth_empty
  ./target/release/command-api migrate >/dev/null
  EMPTY_URL=$BENCH_URL
  measure "empty-$round" "$EMPTY_URL" 18680
  measure "full-$round" "$FULL_URL" 18780
done
plans_and_size empty "$EMPTY_URL"
plans_and_size full "$FULL_URL"

echo "== 3. medians over the $ROUNDS rounds"
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
figures = [
    ("place order, 16 clients: rate (/s)", "write", "commands_per_sec"),
    ("place order: p99 (ms)", "write", "p99_ms"),
    ("relay, 50,000 events commit to ack (/s)", "relay", "relay_events_per_sec"),
    ("raw producer beside it (/s)", "relay", "raw_messages_per_sec"),
    ("min_version read, 300 commands/s: p50 (ms)", "visibility", "visible_p50_ms"),
    ("min_version read: p99 (ms)", "visibility", "visible_p99_ms"),
]
def values(store, tool, key):
    return [json.load(open(f"{out}/{store}-{r}-{tool}.json"))[key] for r in range(1, rounds + 1)]
for name, tool, key in figures:
    empty, full = values("empty", tool, key), values("full", tool, key)
    e, f = statistics.median(empty), statistics.median(full)
    fmt = lambda xs: ", ".join(f"{x:,.1f}" for x in xs)
    print(f"  {name}: empty {fmt(empty)} (median {e:,.1f}); large {fmt(full)} (median {f:,.1f}); "
          f"change {100 * (f - e) / e:+.0f} %")
PY
if [ "${GROWTH_KEEP_STORE:-0}" != 1 ]; then
  "$PG_BINDIR/psql" "$DATABASE_ADMIN_URL" -qc "DROP DATABASE bench_growth_full WITH (FORCE)"
fi
