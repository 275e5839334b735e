#!/usr/bin/env bash
# Replay benchmark, one run on one machine: how fast `projector replay` rebuilds read models
# from the event store.
#   1. `EVENTS` events (default 1,000,000) of customers' histories are written straight into a
#      fresh event store (`loadgen seed`: registrations, orders, payments, cancellations and
#      refunds, over a year and three currencies).
#   2. `projector replay all` rebuilds every read model beside the live (empty) ones and swaps
#      them in: its wall time, and events/s over the events in the store.
#   3. `projector replay audit` alone (the model with one row per event).
#   4. `projector verify all` (the same fold, plus copies and checksums of the live tables).
#   5. From Kafka: the relay publishes the store to the `make run` broker (timed), then a raw
#      consumer reads the three topics start to end (`loadgen consume`), and `projector replay
#      all --from kafka` rebuilds every read model from them; its rate next to the raw one.
# Loopback only; bounded by EVENTS and by a deadline on the relay.
#
#   tests/bench/replay.sh [events=1000000]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
EVENTS="${1:-1000000}"

# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
bench_stack
build_pipeline
fresh_bench_db bench_replay
sql() { "$PG_BINDIR/psql" "$BENCH_URL" -tAc "$1"; }
export DATABASE_URL="$BENCH_URL"
now() { date +%s.%N; }

./target/release/command-api migrate >/dev/null
echo "== machine: $(nproc) cores; PostgreSQL $(sql 'SHOW server_version')"
echo "== 1. seeding $EVENTS events"
./target/release/loadgen seed --database-url "$BENCH_URL" --events "$EVENTS"
sql "VACUUM ANALYZE events" >/dev/null
total=$(sql "SELECT count(*) FROM events")
echo "events in the store: $total; events table with indexes: $(sql "SELECT pg_size_pretty(pg_total_relation_size('events'))")"

# Each timed step starts on a settled database (`settle_bench_db`, tests/bench/common.sh).

# first_pass LABEL: the rate of the step's first pass (the scan or the topics, folded and the
# rows copied), from its progress lines (about one a second): the rate on the last line
# before every event was counted, and the events counted then.
first_pass() {
  python3 - "$ROOT/.data/bench-replay-$1.err" "$total" <<'PY'
import json, sys
last = None
for line in open(sys.argv[1]):
    try:
        p = json.loads(line)
    except ValueError:
        continue
    if p.get("job") == "replay" and p.get("done", 0) < int(sys.argv[2]):
        last = p
print(f"{round(last['rate_per_second'])} {last['done']}" if last else "0 0")
PY
}

timed() {
  local label=$1
  shift
  local started ended
  settle_bench_db
  started=$(now)
  "$@" >"$ROOT/.data/bench-replay-$label.log" 2>"$ROOT/.data/bench-replay-$label.err" ||
    { echo "$label failed:"; tail -20 "$ROOT/.data/bench-replay-$label.err"; exit 1; }
  ended=$(now)
  last_seconds=$(python3 -c "print($ended - $started)")
  python3 -c "s = $ended - $started; print(f'$label: {s:.2f} s, {$total / s:,.0f} events/s over the store\'s $total events')"
}

echo "== 2. projector replay all (users, orders, payments, analytics, audit; one scan)"
timed replay-all ./target/release/projector replay all
read -r rate counted <<<"$(first_pass replay-all)"
echo "replay-all first pass (the scan, folded and copied): $rate events/s at $counted events"
grep -E 'rebuilt from' "$ROOT/.data/bench-replay-replay-all.log" | sed 's/ and swapped in.*//'
echo "read model rows: $(sql "SELECT string_agg(t || ' ' || n, ', ') FROM (SELECT 'rm_users' t, count(*) n FROM rm_users UNION ALL SELECT 'rm_orders', count(*) FROM rm_orders UNION ALL SELECT 'rm_payments', count(*) FROM rm_payments UNION ALL SELECT 'rm_funnel', count(*) FROM rm_funnel UNION ALL SELECT 'rm_revenue_daily', count(*) FROM rm_revenue_daily UNION ALL SELECT 'rm_audit', count(*) FROM rm_audit) c")"
./target/release/projector prune all >/dev/null

echo "== 3. projector replay audit (alone)"
timed replay-audit ./target/release/projector replay audit
./target/release/projector prune all >/dev/null

echo "== 4. projector verify all"
timed verify-all ./target/release/projector verify all

echo "== 5. from Kafka"
pipeline_env 18380 "$KAFKA_BOOTSTRAP" "replay$(date +%s)."
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
# shellcheck source=infra/local/wait-for-port.sh
source "$ROOT/infra/local/wait-for-port.sh"
./target/release/schema-registry >"$ROOT/.data/bench-replay-registry.log" 2>&1 &
pids+=($!)
wait_for_port "$REGISTRY_PORT"
started=$(now)
./target/release/command-api >"$ROOT/.data/bench-replay-command-api.log" 2>&1 &
api=$!
pids+=($api)
wait_until_relayed "$BENCH_URL" 15
python3 -c "s = $(now) - $started; print(f'relay: {$total} events published in {s:.1f} s (start-up included), {$total / s:,.0f} events/s')"
kill "$api"
wait "$api" 2>/dev/null || true
topics="${APP__KAFKA__TOPIC_PREFIX}users.events,${APP__KAFKA__TOPIC_PREFIX}orders.events,${APP__KAFKA__TOPIC_PREFIX}payments.events"
./target/release/loadgen consume --bootstrap "$KAFKA_BOOTSTRAP" --topics "$topics" |
  tee "$ROOT/.data/bench-replay-consume.log"
./target/release/projector prune all >/dev/null
timed replay-kafka ./target/release/projector replay all --from kafka
raw=$(grep -o '[0-9]* messages/s' "$ROOT/.data/bench-replay-consume.log" | cut -d' ' -f1)
read -r pass counted <<<"$(first_pass replay-kafka)"
python3 -c "print(f'replay-kafka first pass (the topics, decoded, folded and copied): {$pass:,} events/s at $counted events, {$pass / $raw:.2f} of the raw consumer; the whole replay: {$total / $last_seconds / $raw:.2f}')"
grep -E 'rebuilt from' "$ROOT/.data/bench-replay-replay-kafka.log" | sed 's/ and swapped in.*//'
./target/release/projector prune all >/dev/null
./target/release/projector verify all >/dev/null && echo "verify all: equal"
