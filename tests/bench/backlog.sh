#!/usr/bin/env bash
# Backlog benchmark, one run on one machine: how the pipeline recovers from a long outage of
# everything behind the event store.
#   1. With the relay off, `EVENTS` commands (register user: one event each, default 1,000,000)
#      are written through the release command API: the backlog.
#   2. The command API restarts with its relay, and a projector starts: both catch up at once,
#      as after a real outage. Printed: when the relay has published everything, and when each
#      read model reading the users topic has applied everything (events/s for each).
#   3. The projector is killed and restarted with the full topic behind it, a few commands are
#      written, and the time until they are projected is printed (restart cost must not grow
#      with the topic).
#   4. Command-to-visible latency at 100 commands/s for 10 s, to show latency back to normal.
# Phase 2 is sampled every second and drawn: events behind and events per second for the relay
# and the two projections (docs/plots/backlog-lag.png, docs/plots/backlog-throughput.png).
# Loopback only; every phase is bounded in time. Uses the Kafka cluster of `make run`.
#
#   tests/bench/backlog.sh [events=1000000]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
EVENTS="${1:-1000000}"

# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
bench_stack
build_pipeline
ensure_plot_font
fresh_bench_db bench_backlog
sql() { "$PG_BINDIR/psql" "$BENCH_URL" -tAc "$1"; }
pipeline_env 18280 "$KAFKA_BOOTSTRAP" "backlog$(date +%s)."

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
# shellcheck source=infra/local/wait-for-port.sh
source "$ROOT/infra/local/wait-for-port.sh"
log() { echo "$ROOT/.data/bench-backlog-$1.log"; }
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$(now) - $1:.1f}')"; }
# Events a projection has applied since the projector started (its own metrics: no load on
# the database while it catches up).
applied() {
  curl -fs "http://127.0.0.1:$PROJECTOR_PORT/metrics" 2>/dev/null |
    awk -v p="projection=\"$1\"" '$0 ~ "^projection_events_applied_total" && index($0, p) {print $2}' |
    sed 's/\..*//' | grep . || echo 0
}

./target/release/schema-registry >"$(log registry)" 2>&1 &
pids+=($!)
wait_for_port $REGISTRY_PORT

# The backlog is a million registrations: at the production argon2id cost (about 25 ms of CPU
# each) writing it would take hours, and what is measured here is the relay's and the
# projector's catch-up, not password hashing (`make bench-write` reports registration at the
# real cost). Registration's per-address limit is lifted for the same reason.
export APP__AUTH__ARGON2_MEMORY_KIB=1024 APP__AUTH__ARGON2_ITERATIONS=1 \
  APP__AUTH__ANONYMOUS_PER_MINUTE=100000000 APP__AUTH__HASHING_QUEUE=100000

echo "== machine: $(nproc) cores; broker: Apache Kafka, $(tr , "\n" <<<"$KAFKA_BOOTSTRAP" | wc -l) broker(s) on $KAFKA_BOOTSTRAP"
echo "== 1. backlog: $EVENTS register-user commands with the relay off"
APP__RELAY__ENABLED=false ./target/release/command-api >"$(log command-api-off)" 2>&1 &
api=$!
pids+=($api)
wait_for_port $API_PORT
./target/release/loadgen write --url "http://127.0.0.1:$API_PORT" --mode fresh --concurrency 16 \
  --warmup-secs 0 --duration-secs 1800 --max-requests "$EVENTS" | grep -E 'requests=|throughput'
kill "$api"
wait "$api" 2>/dev/null || true
total=$(sql "SELECT count(*) FROM events")
echo "events in the store: $total"

echo "== 2. catch-up: command API with its relay, and a projector, started together"
started=$(now)
./target/release/command-api >"$(log command-api)" 2>&1 &
pids+=($!)
./target/release/projector >"$(log projector)" 2>&1 &
projector=$!
pids+=($projector)
wait_for_port $API_PORT
sample_pipeline "$ROOT/.data/bench-backlog-samples.csv" "$API_PORT" "$PROJECTOR_PORT" &
sampler=$!
pids+=($sampler)
relay_done="" users_done="" audit_done=""
deadline=$(( $(date +%s) + 3600 ))
while [[ -z $relay_done || -z $users_done || -z $audit_done ]]; do
  if (( $(date +%s) > deadline )); then
    echo "not caught up within an hour" >&2
    exit 1
  fi
  sleep 1
  if [[ -z $relay_done ]] && [[ $(sql "SELECT (c.tx_id, c.global_position) >= (e.tx_id, e.global_position)
        FROM relay_checkpoints c, (SELECT tx_id, global_position FROM events
          ORDER BY tx_id DESC, global_position DESC LIMIT 1) AS e WHERE c.name = 'default'") == t ]]; then
    relay_done=$(elapsed "$started")
    echo "relay: all $total published after ${relay_done} s ($(python3 -c "print(round($total / $relay_done))") events/s)"
  fi
  for model in users audit; do
    var="${model}_done"
    if [[ -z ${!var} ]] && [[ $(applied "$model") -ge $total ]]; then
      printf -v "$var" '%s' "$(elapsed "$started")"
      echo "projection $model: all $total applied after ${!var} s ($(python3 -c "print(round($total / ${!var}))") events/s)"
    fi
  done
done

sleep 2
kill "$sampler"
plot_pipeline "$ROOT/.data/bench-backlog-samples.csv" backlog "Catch-up of $total events"

for model in users audit; do
  echo "projection $model: $(sql "SELECT count(*) FROM projection_versions WHERE projection = '$model'") aggregates recorded as applied"
done

echo "== 3. projector restart with $total events in the users topic"
kill "$projector"
wait "$projector" 2>/dev/null || true
before=$(sql "SELECT count(*) FROM projection_versions WHERE projection = 'users'")
restarted=$(now)
./target/release/projector >"$(log projector-restarted)" 2>&1 &
pids+=($!)
./target/release/loadgen write --url "http://127.0.0.1:$API_PORT" --mode fresh --concurrency 4 \
  --warmup-secs 0 --duration-secs 60 --max-requests 100 | grep -E 'requests='
want=$(( before + 100 ))
until [[ $(sql "SELECT count(*) FROM projection_versions WHERE projection = 'users'") -ge $want ]]; do
  if (( $(date +%s) > deadline )); then
    echo "the restarted projector did not catch up" >&2
    exit 1
  fi
  sleep 0.2
done
echo "restarted projector: 100 new commands projected $(elapsed "$restarted") s after its start"
consumed=$(curl -fs "http://127.0.0.1:$PROJECTOR_PORT/metrics" |
  awk '/^projection_messages_consumed_total\{projection="users"\}/ {print $2}')
echo "messages the restarted projector consumed for users: ${consumed:-0}"

echo "== 4. latency after the catch-up: 100 commands/s for 10 s"
./target/release/query-api >"$(log query-api)" 2>&1 &
pids+=($!)
wait_for_port $QUERY_PORT
./target/release/loadgen visibility --command-url "http://127.0.0.1:$API_PORT" \
  --query-url "http://127.0.0.1:$QUERY_PORT" --rate 100 --duration-secs 10 --users 100
