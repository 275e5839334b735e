#!/usr/bin/env bash
# `make run`: start PostgreSQL, build the services in release mode, run them in the foreground
# with their logs, and stop everything on Ctrl-C. Effective settings go to .data/stack.env.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

./infra/local/stack.sh up
set -a
# shellcheck disable=SC1091
source .data/stack.env
set +a

echo "[run] building the services (release)" >&2
cargo build --release --locked -p command-api

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
export APP__LOG__FORMAT="${APP__LOG__FORMAT:-json}"
./target/release/command-api &
pids+=($!)

for _ in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then break; fi
  sleep 0.1
done
echo "[run] command API on $COMMAND_API_URL (readiness: $COMMAND_API_URL/readyz). Ctrl-C stops everything." >&2

# Wait until any service exits (or Ctrl-C); then the trap stops the rest.
wait -n "${pids[@]}"
