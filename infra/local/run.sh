#!/usr/bin/env bash
# `make run`: start PostgreSQL and Tansu, build the services in release mode, run them (schema
# registry, command API with the event relay, projector) in the foreground with their logs, and
# stop everything on Ctrl-C. Effective settings go to .data/stack.env.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

./infra/local/stack.sh up
set -a
# shellcheck disable=SC1091
source .data/stack.env
set +a

echo "[run] building the services (release)" >&2
cargo build --release --locked -p command-api -p schemas -p projections \
  --bin command-api --bin schema-registry --bin projector

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo "[run] stopping services" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  ./infra/local/stack.sh down
}
trap cleanup INT TERM EXIT

export APP__DATABASE__URL="$DATABASE_URL"
export APP__KAFKA__BOOTSTRAP_SERVERS="$KAFKA_BOOTSTRAP"
export APP__SCHEMA_REGISTRY__URL="$SCHEMA_REGISTRY_URL"
export APP__LOG__FORMAT="${APP__LOG__FORMAT:-json}"

wait_for_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "[run] nothing listens on port $1" >&2
  return 1
}

./target/release/schema-registry &
pids+=($!)
wait_for_port 8085
./target/release/command-api &
pids+=($!)
wait_for_port 8080
# Tansu 0.6 cannot fetch from inside a record batch, so a restarted projection re-reads from the
# beginning and skips what it has applied (see ProjectorSettings::resume_from).
APP__PROJECTOR__RESUME_FROM="${APP__PROJECTOR__RESUME_FROM:-beginning}" ./target/release/projector &
pids+=($!)
wait_for_port 8082
cat >&2 <<MSG
[run] up: command API $COMMAND_API_URL (with the event relay), schema registry $SCHEMA_REGISTRY_URL,
[run]     projector (read models in PostgreSQL; ops on http://127.0.0.1:8082),
[run]     Kafka (Tansu) $KAFKA_BOOTSTRAP, PostgreSQL $DATABASE_URL. Ctrl-C stops everything.
MSG

# Wait until any service exits (or Ctrl-C); then the trap stops the rest.
wait -n "${pids[@]}"
