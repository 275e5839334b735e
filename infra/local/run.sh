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
# The ports stack.sh wrote the URLs with (COMMAND_API_PORT and the others override them).
export APP__SCHEMA_REGISTRY__PORT="${SCHEMA_REGISTRY_URL##*:}"
export APP__COMMAND_API__PORT="${COMMAND_API_URL##*:}"
export APP__QUERY_API__PORT="${QUERY_API_URL##*:}"
export APP__PROJECTOR__PORT="${PROJECTOR_PORT:-8082}"

# shellcheck source=infra/local/wait-for-port.sh
source "$ROOT/infra/local/wait-for-port.sh"

# Starts a service and waits (up to a minute: the command API's first start runs the
# migrations) until it listens on its port. A port something else already holds is refused
# first: the wait would find that listener and call the service up.
start() {
  local name=$1 port=$2
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "[run] port $port ($name) is already in use; stop what holds it or set its port" >&2
    exit 1
  fi
  "./target/release/$name" &
  pids+=($!)
  WAIT_FOR_PORT_SECS=60 wait_for_port "$port" "${pids[-1]}"
}
start schema-registry "$APP__SCHEMA_REGISTRY__PORT"
start command-api "$APP__COMMAND_API__PORT"
start projector "$APP__PROJECTOR__PORT"
start query-api "$APP__QUERY_API__PORT"
cat >&2 <<MSG
[run] up: command API $COMMAND_API_URL (with the event relay), query API $QUERY_API_URL,
[run]     schema registry $SCHEMA_REGISTRY_URL, projector with the process manager (ops on
[run]     http://127.0.0.1:$APP__PROJECTOR__PORT), Kafka $KAFKA_BOOTSTRAP, PostgreSQL $DATABASE_URL.
[run]     Ctrl-C stops everything.
MSG

# Wait until any service exits (or Ctrl-C); then the trap stops the rest.
wait -n "${pids[@]}"
