#!/usr/bin/env bash
# `make run`: start PostgreSQL and Apache Kafka (one broker; RUN_KAFKA_NODES=3 for three), build the services in release
# mode, run them (schema registry, command API with the event relay, projector with the process
# manager, query API) in the foreground with their logs, and stop everything on Ctrl-C.
# Effective settings go to .data/stack.env.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

./infra/local/stack.sh up
set -a
# shellcheck disable=SC1091
source .data/stack.env
set +a

echo "[run] building the services (release)" >&2
cargo build --release --locked -p command-api -p schema-registry -p projections -p query-api \
  --bin command-api --bin schema-registry --bin projector --bin query-api

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

# shellcheck source=infra/local/wait-for-port.sh
source "$ROOT/infra/local/wait-for-port.sh"

./target/release/schema-registry &
pids+=($!)
wait_for_port 8085
./target/release/command-api &
pids+=($!)
wait_for_port 8080
./target/release/projector &
pids+=($!)
wait_for_port 8082
./target/release/query-api &
pids+=($!)
wait_for_port 8081
cat >&2 <<MSG
[run] up: command API $COMMAND_API_URL (with the event relay), query API $QUERY_API_URL,
[run]     schema registry $SCHEMA_REGISTRY_URL, projector with the process manager (ops on
[run]     http://127.0.0.1:8082), Kafka $KAFKA_BOOTSTRAP, PostgreSQL $DATABASE_URL.
[run]     Ctrl-C stops everything.
MSG

# Wait until any service exits (or Ctrl-C); then the trap stops the rest.
wait -n "${pids[@]}"
