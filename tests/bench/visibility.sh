#!/usr/bin/env bash
# Command-to-visible benchmark, one machine: the whole pipeline (command API with the relay,
# Apache Kafka, one projector process, query API) on a fresh database, with authentication on
# (every command and read carries a bearer token) and span export on in every service (every
# span sampled unless OTEL_TRACES_SAMPLER says otherwise, sent over OTLP/HTTP to `loadgen
# traces --discard`, a sink that counts and drops them, as a collector on another machine
# would take them). Then RUNS runs of `loadgen visibility` at RATE commands/s: for each
# command, the time from its 2xx until the query API returns its version. Prints each run
# with the cores each process used, writes the latency percentiles of every run as a plot
# (docs/plots/visibility-RATE-SAMPLER.png), and reads the resident memory of each service in
# the middle of the last run. Loopback only; every phase is bounded in time.
#
#   tests/bench/visibility.sh [rate=1000] [seconds=20] [runs=5]
#
# BENCH_SERVICES_DIR=DIR runs the command API, projector and query API found in DIR instead of
# this checkout's release build (to compare two builds on the same machine, one run after the
# other).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RATE="${1:-1000}"
SECONDS_PER_RUN="${2:-20}"
RUNS="${3:-5}"

# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
ensure_plot_font
bench_stack
build_pipeline
fresh_bench_db bench_visibility
pipeline_env 18280 "$KAFKA_BOOTSTRAP" "vis$(date +%s)."
OTLP_PORT=14328
# Every span sampled unless OTEL_TRACES_SAMPLER (and _ARG) say otherwise.
export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT"
export OTEL_TRACES_SAMPLER="${OTEL_TRACES_SAMPLER:-always_on}"
# The users are set up with a cheap password hash (the measured part hashes nothing) and many
# enough that none is renamed more than once every few seconds: at RATE commands/s on a few
# hundred users, commands on one user would race and the conflicts measure the load generator.
export APP__AUTH__ARGON2_MEMORY_KIB=1024 APP__AUTH__ARGON2_ITERATIONS=1 \
  APP__AUTH__ANONYMOUS_PER_MINUTE=100000000 APP__AUTH__HASHING_QUEUE=100000
USERS=$((RATE * 5))
SERVICES="${BENCH_SERVICES_DIR:-./target/release}"
OUT="$ROOT/.data/bench-visibility"
rm -rf "$OUT"
mkdir -p "$OUT" "$ROOT/docs/plots"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
# shellcheck source=infra/local/wait-for-port.sh
source "$ROOT/infra/local/wait-for-port.sh"
./target/release/loadgen traces --discard --listen "127.0.0.1:$OTLP_PORT" >"$OUT/otlp-sink.log" 2>&1 &
pids+=($!)
./target/release/schema-registry >"$OUT/registry.log" 2>&1 &
REGISTRY_PID=$!
pids+=($!)
wait_for_port $REGISTRY_PORT
"$SERVICES/command-api" >"$OUT/command-api.log" 2>&1 &
API_PID=$!
pids+=($!)
wait_for_port $API_PORT
"$SERVICES/projector" >"$OUT/projector.log" 2>&1 &
PROJECTOR_PID=$!
pids+=($!)
"$SERVICES/query-api" >"$OUT/query-api.log" 2>&1 &
QUERY_PID=$!
pids+=($!)
wait_for_port $QUERY_PORT

rss_mib() { awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
# Established TCP connections to a local port: each one holds its buffers in the service.
connections() { ss -Htn state established "( sport = :$1 )" | wc -l; }
# CPU ticks (user + system) used so far by each service, by PostgreSQL's processes together
# and by the Java of every local broker together (the idle test cluster's included), then the
# benchmark database's transaction count, on one line, with the time it was read.
cpu_ticks() {
  local pid group line
  line="$(date +%s.%N)"
  for pid in "$API_PID" "$PROJECTOR_PID" "$QUERY_PID" "$REGISTRY_PID"; do
    line="$line $(awk '{print $14 + $15}' "/proc/$pid/stat")"
  done
  for group in postgres java; do
    # shellcheck disable=SC2046
    line="$line $(cat $(pgrep -x "$group" | sed 's|.*|/proc/&/stat|') 2>/dev/null | awk '{s += $14 + $15} END {print s + 0}')"
  done
  # Transactions committed or rolled back in the benchmark's database (every statement outside
  # an explicit transaction is one): what the pipeline asks of PostgreSQL per command.
  line="$line $("$PG_BINDIR/psql" "$BENCH_URL" -tAc "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")"
  echo "$line"
}
# In the measured part of a run (from two seconds after its user set-up and warm-up), the
# share of a core each process used over about ten seconds, and (last run) the resident memory
# of each service.
sample_run() {
  local run=$1 waited=0 before after
  # The load generator says when its measured part starts.
  until grep -q '^measuring' "$OUT/run-$run.err" 2>/dev/null; do
    sleep 0.2
    waited=$((waited + 1))
    if [ $waited -gt 900 ]; then return; fi
  done
  sleep 2
  before=$(cpu_ticks)
  sleep 10
  after=$(cpu_ticks)
  python3 - "$before" "$after" "$(getconf CLK_TCK)" "$RATE" >"$OUT/cpu-$run.txt" <<'EOF'
import sys
before, after = (list(map(float, line.split())) for line in sys.argv[1:3])
hz, seconds, rate = float(sys.argv[3]), after[0] - before[0], float(sys.argv[4])
names = ["command-api", "projector", "query-api", "schema-registry", "postgres", "kafka"]
used = [(a - b) / hz / seconds for a, b in zip(after[1:-1], before[1:-1])]
print("cores used mid-run: " + ", ".join(f"{n} {u:.2f}" for n, u in zip(names, used)) + f"; all of them {sum(used):.2f}")
xacts = (after[-1] - before[-1]) / seconds
print(f"database transactions mid-run: {xacts:.0f}/s, {xacts / rate:.2f} per command (with its read)")
EOF
  if [ "$run" -eq "$RUNS" ]; then
    echo "resident memory mid-run (MiB): command-api $(rss_mib "$API_PID"), projector $(rss_mib "$PROJECTOR_PID"), query-api $(rss_mib "$QUERY_PID"), schema-registry $(rss_mib "$REGISTRY_PID"); client connections open: command-api $(connections "$API_PORT"), query-api $(connections "$QUERY_PORT")" >"$OUT/rss.txt"
  fi
}

echo "== machine: $(nproc) cores; broker: Apache Kafka, $(tr , "\n" <<<"$KAFKA_BOOTSTRAP" | wc -l) broker(s) on $KAFKA_BOOTSTRAP"
echo "== visibility: $RUNS runs of $RATE commands/s for ${SECONDS_PER_RUN}s (each renames one of $USERS users), auth and span export on (sampler $OTEL_TRACES_SAMPLER ${OTEL_TRACES_SAMPLER_ARG:-})"
plots=()
samplers=()
for run in $(seq 1 "$RUNS"); do
  sample_run "$run" &
  samplers+=($!)
  ./target/release/loadgen visibility --command-url "http://127.0.0.1:$API_PORT" \
    --query-url "http://127.0.0.1:$QUERY_PORT" --rate "$RATE" --duration-secs "$SECONDS_PER_RUN" \
    --users "$USERS" --json --percentiles-out "$OUT/run-$run.csv" 2>"$OUT/run-$run.err" | tee "$OUT/run-$run.json"
  grep -v '^measuring' "$OUT/run-$run.err" >&2 || true
  plots+=("run $run=$OUT/run-$run.csv")
done
wait "${samplers[@]}"

echo "== result"
for run in $(seq 1 "$RUNS"); do
  python3 - "$OUT/run-$run.json" "$run" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"run {sys.argv[2]}: accepted {r['accepted']} ({r['accepted_per_sec']:.0f}/s), conflicts {r['conflicts']}, "
      f"behind {r['behind']}, errors {r['errors']}, dropped {r['dropped']}; command p50 {r['command_p50_ms']:.1f} "
      f"p99 {r['command_p99_ms']:.1f} ms; visible p50 {r['visible_p50_ms']:.1f} p95 {r['visible_p95_ms']:.1f} "
      f"p99 {r['visible_p99_ms']:.1f} max {r['visible_max_ms']:.1f} ms")
EOF
  cat "$OUT/cpu-$run.txt" 2>/dev/null || true
done
cat "$OUT/rss.txt" 2>/dev/null || echo "resident memory: not sampled"
echo "spans received by the OTLP sink: $(grep -o '[0-9]* export requests, [0-9]* bytes' "$OUT/otlp-sink.log" | tail -1)"
./target/release/loadgen plot percentiles --font "$PLOT_FONT" --out "docs/plots/visibility-$RATE-$OTEL_TRACES_SAMPLER.png" \
  --title "Command to visible at $RATE commands/s, $RUNS runs of ${SECONDS_PER_RUN} s (auth on, spans: $OTEL_TRACES_SAMPLER ${OTEL_TRACES_SAMPLER_ARG:-})" \
  "${plots[@]}"
echo "plot: docs/plots/visibility-$RATE-$OTEL_TRACES_SAMPLER.png"
