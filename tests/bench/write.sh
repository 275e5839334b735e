#!/usr/bin/env bash
# Write-path benchmark, one run on one machine: pgbench's ceiling for the command path's SQL
# shape (tests/bench/append.pgbench: load a stream, insert one event), then the HTTP load
# generator against the command API, every command authenticated: registrations (with the
# production argon2id cost, reported apart), registrations with the cheapest hashing (the
# fresh-aggregate path), a few hot aggregates, and place-order (load the customer, new order:
# the pgbench shape), all at the same concurrency. Loopback only; every
# phase is bounded in time. Prints the figures and the place-order/pgbench ratio.
#
#   tests/bench/write.sh [concurrency=16] [seconds=20]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CLIENTS="${1:-16}"
SECONDS_PER_PHASE="${2:-20}"

# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
bench_stack
PORT=18080

cargo build --release --locked -p command-api -p tests --bin command-api --bin loadgen

fresh_bench_db bench_write

# Every command is authenticated (each client acts as its own customer, with its own token)
# and passes the per-principal rate limiter; the limit itself is raised here, since a
# benchmark that drives 4 or 50 customers at thousands of commands per second measures the
# write path, not the limiter's refusals.
APP__AUTH__COMMANDS_PER_SECOND=1000000 APP__AUTH__COMMANDS_BURST=1000000 \
  APP__AUTH__ANONYMOUS_PER_MINUTE=100000000 \
  APP__COMMAND_API__PORT=$PORT ./target/release/command-api >"$ROOT/.data/bench-command-api.log" 2>&1 &
API_PID=$!
trap 'kill $API_PID 2>/dev/null || true; wait $API_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then break; fi
  sleep 0.1
done

echo "== machine: $(nproc) cores, $(uname -sr); PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}')"
echo "== pgbench: load stream + insert one event, $CLIENTS clients, ${SECONDS_PER_PHASE}s"
PGB_OUT=$("$PG_BINDIR/pgbench" "$BENCH_URL" -n -M prepared -c "$CLIENTS" -j 2 \
  -T "$SECONDS_PER_PHASE" -f tests/bench/append.pgbench 2>&1)
echo "$PGB_OUT" | grep -E 'latency average|tps'
PGB_TPS=$(echo "$PGB_OUT" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')

run_loadgen() {
  ./target/release/loadgen write --url "http://127.0.0.1:$PORT" --concurrency "$CLIENTS" \
    --duration-secs "$SECONDS_PER_PHASE" --warmup-secs 2 "$@"
}
rate_of() { sed -n 's/^throughput: \([0-9.]*\) commands.*/\1/p'; }
echo "== loadgen: registrations (argon2id m=${APP__AUTH__ARGON2_MEMORY_KIB:-19456} KiB, t=${APP__AUTH__ARGON2_ITERATIONS:-2}, p=1), $CLIENTS clients"
FRESH=$(run_loadgen --mode fresh)
echo "$FRESH"
FRESH_RATE=$(echo "$FRESH" | rate_of)
restart_api() { # extra environment for the command API, as NAME=VALUE words
  kill "$API_PID" 2>/dev/null || true
  wait "$API_PID" 2>/dev/null || true
  env "$@" APP__AUTH__COMMANDS_PER_SECOND=1000000 APP__AUTH__COMMANDS_BURST=1000000 \
    APP__AUTH__ANONYMOUS_PER_MINUTE=100000000 \
    APP__COMMAND_API__PORT=$PORT ./target/release/command-api >>"$ROOT/.data/bench-command-api.log" 2>&1 &
  API_PID=$!
  for _ in $(seq 1 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then break; fi
    sleep 0.1
  done
}
# Registration is the one command that creates an aggregate from nothing, and it hashes a
# password: with the hashing at the cheapest setting the service accepts, what is left is the
# fresh-aggregate write path (the address's uniqueness claim and the first event), the shape
# pgbench measures.
restart_api APP__AUTH__ARGON2_MEMORY_KIB=1024 APP__AUTH__ARGON2_ITERATIONS=1 APP__AUTH__HASHING_QUEUE=100000
echo "== loadgen: registrations with the cheapest hashing (argon2id m=1024 KiB, t=1), $CLIENTS clients"
CHEAP=$(run_loadgen --mode fresh)
echo "$CHEAP"
CHEAP_RATE=$(echo "$CHEAP" | rate_of)
restart_api
echo "== loadgen: HTTP commands on 4 hot aggregates (change profile), $CLIENTS clients"
run_loadgen --mode hot --hot-aggregates 4
echo "== loadgen: HTTP place-order commands (loads the customer, new order), $CLIENTS clients"
MIXED=$(run_loadgen --mode mixed)
echo "$MIXED"
MIXED_RATE=$(echo "$MIXED" | rate_of)

# The same place-order load with span export on, between two runs without: the command API
# restarted each time, with (or without) an OTLP/HTTP endpoint, a sink that counts export
# requests and bytes without decoding them (`loadgen traces --discard`: a collector would run
# on another machine), and every span sampled. Comparing the traced run with the mean of the
# runs before and after it cancels the drift of a database that grows with every run.
OTLP_PORT=14318
./target/release/loadgen traces --discard --listen "127.0.0.1:$OTLP_PORT" \
  >"$ROOT/.data/bench-otlp-sink.log" 2>&1 &
SINK_PID=$!
trap 'kill $API_PID $SINK_PID 2>/dev/null || true; wait $API_PID $SINK_PID 2>/dev/null || true' EXIT
restart_api OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT" OTEL_TRACES_SAMPLER=always_on
echo "== loadgen: HTTP place-order commands with span export on (every span sampled), $CLIENTS clients"
TRACED=$(run_loadgen --mode mixed)
echo "$TRACED"
TRACED_RATE=$(echo "$TRACED" | rate_of)
sleep 6
echo "received by the OTLP sink: $(grep -o '[0-9]* export requests, [0-9]* bytes' "$ROOT/.data/bench-otlp-sink.log" | tail -1)"
restart_api OTEL_SDK_DISABLED=true
echo "== loadgen: HTTP place-order commands without span export again, $CLIENTS clients"
AFTER=$(run_loadgen --mode mixed)
echo "$AFTER"
AFTER_RATE=$(echo "$AFTER" | rate_of)

echo "== result"
echo "pgbench ceiling:          $PGB_TPS tx/s"
echo "HTTP registrations:       $FRESH_RATE commands/s (password hashing included)"
echo "HTTP fresh aggregates:    $CHEAP_RATE commands/s (registrations, cheapest hashing)"
echo "HTTP place order:         $MIXED_RATE commands/s"
echo "HTTP place order, traced: $TRACED_RATE commands/s (untraced after it: $AFTER_RATE)"
awk -v a="$CHEAP_RATE" -v b="$PGB_TPS" 'BEGIN { printf "ratio fresh aggregates / pgbench: %.2f\n", a / b }'
awk -v a="$MIXED_RATE" -v b="$PGB_TPS" 'BEGIN { printf "ratio place order / pgbench: %.2f\n", a / b }'
awk -v t="$TRACED_RATE" -v a="$MIXED_RATE" -v b="$AFTER_RATE" \
  'BEGIN { printf "ratio traced / untraced place order (mean of the runs before and after): %.2f\n", t / ((a + b) / 2) }'
