#!/usr/bin/env bash
# What issue 12's replay targets leave to spend, next to what a replay spends, on the store and
# topics `make bench-replay` left (database bench_replay and its topics on the `make run`
# broker), in the same minutes:
#   1. a raw consumer reading the three topics start to end, twice: its wall time sets the
#      budget from Kafka (a replay at 0.8 of its rate may take wall / 0.8), and the machine's
#      CPU-seconds over it show how much of the two cores it leaves;
#   2. `rm_audit`'s rows alone, the model with a row per event: copied out once with psql, then
#      twice copied into an unindexed table of its shape (binary `COPY` through the client, as
#      a replay sends them) and given its key and position index;
#   3. `projector replay all --from kafka`, twice, and `projector replay all`, twice, each
#      after the bench's settling step.
# Each line gives the wall time and the machine's CPU-seconds over it (from /proc/stat: every
# process, PostgreSQL's and the broker's included). Two cores give twice the wall time; the
# budget lines say how many CPU-seconds each target allows. Loopback only; bounded by its
# steps (a deadline of ten minutes on each).
#
#   tests/bench/replay_budget.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
bench_stack
BENCH_URL="${DATABASE_ADMIN_URL%/*}/bench_replay"
export DATABASE_URL="$BENCH_URL" APP__DATABASE__URL="$BENCH_URL" APP__LOG__FILTER=warn
sql() { "$PG_BINDIR/psql" "$BENCH_URL" -tAc "$1"; }
psql_bench() { timeout 600 "$PG_BINDIR/psql" "$BENCH_URL" -qX -v ON_ERROR_STOP=1 "$@"; }
[ -x ./target/release/projector ] || { echo "run make bench-replay first" >&2; exit 2; }
total=$(sql "SELECT count(*) FROM events") || { echo "no bench_replay store: run make bench-replay first" >&2; exit 2; }
# The topics' prefix, as the bench's schema registry recorded their subjects.
prefix=$(sql "SELECT split_part(subject, '.', 1) FROM sr_subject_versions WHERE subject LIKE 'replay%' LIMIT 1")
[ -n "$prefix" ] || { echo "no topics of make bench-replay recorded in bench_replay" >&2; exit 2; }
pipeline_env 18380 "$KAFKA_BOOTSTRAP" "$prefix."
topics="${prefix}.users.events,${prefix}.orders.events,${prefix}.payments.events"

cpu() { awk '/^cpu /{print $2+$3+$4+$6+$7+$8}' /proc/stat; }
now() { date +%s.%N; }
# measured LABEL COMMAND...: runs COMMAND (its output to .data/bench-budget-LABEL.log), prints
# its wall time and the machine's CPU-seconds over it, and keeps them in LAST_WALL/LAST_CPU.
measured() {
  local label=$1 t0 c0 t1 c1
  shift
  t0=$(now)
  c0=$(cpu)
  "$@" >"$ROOT/.data/bench-budget-$label.log" 2>&1 ||
    { echo "$label failed:"; tail -20 "$ROOT/.data/bench-budget-$label.log"; exit 1; }
  t1=$(now)
  c1=$(cpu)
  read -r LAST_WALL LAST_CPU <<<"$(python3 -c "print(f'{$t1 - $t0:.2f} {($c1 - $c0) / 100:.1f}')")"
  echo "$label: $LAST_WALL s, $LAST_CPU CPU-seconds"
}

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
# shellcheck source=infra/local/wait-for-port.sh
source "$ROOT/infra/local/wait-for-port.sh"
./target/release/schema-registry >"$ROOT/.data/bench-budget-registry.log" 2>&1 &
pids+=($!)
wait_for_port "$REGISTRY_PORT"

echo "== $total events in bench_replay, topics $topics; $(nproc) cores"
echo "== 1. raw consumer"
fastest=
for run in 1 2; do
  measured "consumer-$run" timeout 600 ./target/release/loadgen consume --bootstrap "$KAFKA_BOOTSTRAP" --topics "$topics"
  # Its own time, from its assignment to its last message (what make bench-replay divides by).
  read -r own rate <<<"$(sed -n 's/.* in \([0-9.]*\) s, \([0-9]*\) messages\/s.*/\1 \2/p' "$ROOT/.data/bench-budget-consumer-$run.log")"
  echo "consumer-$run, its own count: $own s, $rate messages/s"
  fastest=$(python3 -c "print(min([$own, ${fastest:-$own}]))")
done
python3 -c "w = $fastest / 0.8; print(f'budget from Kafka: a replay at 0.8 of the faster raw consumer takes at most {w:.2f} s, {2 * w:.1f} CPU-seconds on two cores')"
python3 -c "print(f'budget from the store: 100,000 events/s is {$total / 100000:.2f} s, {2 * $total / 100000:.1f} CPU-seconds on two cores')"

echo "== 2. rm_audit's rows alone"
columns="aggregate_type, aggregate_id, sequence, event_id, event_type, event_version, occurred_at, actor, correlation_id, causation_id, traceparent, payload, global_position"
rows="$ROOT/.data/tmp/bench-budget-audit.bin"
mkdir -p "$ROOT/.data/tmp"
psql_bench -c "\\copy (SELECT $columns FROM rm_audit) TO '$rows' (FORMAT binary)"
echo "rm_audit: $(sql "SELECT count(*) FROM rm_audit") rows, $(du -h "$rows" | cut -f1) in COPY's binary format"
for run in 1 2; do
  psql_bench -c "DROP TABLE IF EXISTS budget_audit" \
    -c "CREATE TABLE budget_audit (LIKE rm_audit INCLUDING DEFAULTS) WITH (autovacuum_enabled = false)" \
    -c "CHECKPOINT"
  measured "audit-rows-$run" psql_bench \
    -c "\\copy budget_audit ($columns) FROM '$rows' (FORMAT binary)" \
    -c "ALTER TABLE budget_audit ADD PRIMARY KEY (aggregate_id, aggregate_type, sequence)" \
    -c "CREATE UNIQUE INDEX ON budget_audit (global_position)"
done
psql_bench -c "DROP TABLE budget_audit"
rm -f "$rows"

echo "== 3. replays"
for origin in kafka store; do
  for run in 1 2; do
    ./target/release/projector prune all >/dev/null
    settle_bench_db
    if [ "$origin" = kafka ]; then
      measured "replay-kafka-$run" timeout 600 ./target/release/projector replay all --from kafka
    else
      measured "replay-store-$run" timeout 600 ./target/release/projector replay all
    fi
  done
done
./target/release/projector prune all >/dev/null
