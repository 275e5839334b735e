#!/usr/bin/env bash
# Projector scale-out benchmark, one machine: how fast one projector process, then two sharing
# the partitions (one consumer group), work through a backlog on the topics.
#   1. `EVENTS` events (default 300,000) of customers' histories are written straight into a
#      fresh event store (`loadgen seed`) and the relay publishes them to the `make run` broker.
#   2. One projector process (every read model, no process manager) starts with the whole
#      topic behind it; the time until every projection has handled every message.
#   3. The read models are emptied and two projector processes do the same.
# Each run samples the messages handled by all projections every second; the rates over time
# are plotted (docs/plots/scale-out.png). Loopback only; bounded by EVENTS and deadlines.
#
#   tests/bench/scale_out.sh [events=300000]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
EVENTS="${1:-300000}"

# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
ensure_plot_font
bench_stack
build_pipeline
fresh_bench_db bench_scale_out
sql() { "$PG_BINDIR/psql" "$BENCH_URL" -tAc "$1"; }
export DATABASE_URL="$BENCH_URL"
now() { date +%s.%N; }
OUT="$ROOT/.data/bench-scale-out"
rm -rf "$OUT"
mkdir -p "$OUT" "$ROOT/docs/plots"

./target/release/command-api migrate >/dev/null
echo "== machine: $(nproc) cores; broker: Apache Kafka on $KAFKA_BOOTSTRAP"
echo "== 1. seeding $EVENTS events and publishing them"
./target/release/loadgen seed --database-url "$BENCH_URL" --events "$EVENTS" >"$OUT/seed.log"
sql "VACUUM ANALYZE events" >/dev/null
total=$(sql "SELECT count(*) FROM events")
pipeline_env 18480 "$KAFKA_BOOTSTRAP" "scale$(date +%s)."
export APP__PROJECTOR__PROCESS_MANAGER=false
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
# shellcheck source=infra/local/wait-for-port.sh
source "$ROOT/infra/local/wait-for-port.sh"
./target/release/schema-registry >"$OUT/registry.log" 2>&1 &
pids+=($!)
wait_for_port "$REGISTRY_PORT"
./target/release/command-api >"$OUT/command-api.log" 2>&1 &
api=$!
pids+=($api)
wait_until_relayed "$BENCH_URL" 10
kill "$api"
wait "$api" 2>/dev/null || true
echo "events in the store and on the topics: $total"

# Messages every projection has to handle: one per event of each aggregate type it reads.
expected=$(sql "SELECT sum(n) FROM (SELECT count(*) * CASE aggregate_type
    WHEN 'user' THEN 2 WHEN 'order' THEN 4 WHEN 'payment' THEN 4 END AS n
  FROM events GROUP BY aggregate_type) c")
# users: user; orders: order; payments: payment; analytics, customer_value: order, payment;
# audit: all three (each model's `aggregates`).
handled() { sql "SELECT coalesce(sum(next_offset), 0) FROM projection_offsets"; }

reset_read_models() {
  local tables
  tables=$(sql "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables
    WHERE schemaname = 'public' AND tablename LIKE 'rm\_%'")
  sql "TRUNCATE $tables, projection_offsets, projection_versions, dead_letters" >/dev/null
}

run_with() {
  local processes=$1 started ended projector_pids=() n
  reset_read_models
  started=$(now)
  for n in $(seq 1 "$processes"); do
    APP__PROJECTOR__PORT=$((PROJECTOR_PORT + 10 * n)) ./target/release/projector \
      >"$OUT/projector-$processes-$n.log" 2>&1 &
    projector_pids+=($!)
    pids+=($!)
  done
  local csv="$OUT/handled-$processes.csv" deadline=$(($(date +%s) + 900)) done_count=0
  echo "seconds,handled" >"$csv"
  while true; do
    done_count=$(handled)
    python3 -c "print(f'{$(now) - $started:.2f},$done_count')" >>"$csv"
    if ((done_count >= expected)); then break; fi
    if (($(date +%s) > deadline)); then
      echo "$processes process(es) did not finish within 15 minutes ($done_count of $expected)" >&2
      exit 1
    fi
    sleep 1
  done
  ended=$(now)
  kill "${projector_pids[@]}"
  wait "${projector_pids[@]}" 2>/dev/null || true
  python3 - "$csv" "$OUT/rate-$processes.csv" <<'EOF'
import sys
rows = [tuple(map(float, line.split(","))) for line in open(sys.argv[1]).read().split("\n")[1:] if line]
with open(sys.argv[2], "w") as out:
    out.write("seconds,messages_per_second\n")
    for (t0, h0), (t1, h1) in zip(rows, rows[1:]):
        out.write(f"{t1:.2f},{(h1 - h0) / (t1 - t0):.0f}\n")
EOF
  python3 -c "s = $ended - $started; print(f'$processes process(es): {s:.1f} s; {$total / s:,.0f} events/s, {$expected / s:,.0f} messages/s over 6 projections')" |
    tee "$OUT/result-$processes.txt"
}

echo "== 2. one projector process ($expected messages to handle over 6 projections)"
run_with 1
echo "== 3. two projector processes sharing the partitions"
run_with 2
./target/release/projector verify all >/dev/null && echo "verify all: equal"
./target/release/loadgen plot series --font "$PLOT_FONT" --out docs/plots/scale-out.png \
  --title "Projector catch-up, $total events on the topics: messages handled per second" \
  --y-label "messages/s (all projections)" \
  "one process=$OUT/rate-1.csv" "two processes=$OUT/rate-2.csv"
echo "plot: docs/plots/scale-out.png"
