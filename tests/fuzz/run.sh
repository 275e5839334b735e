#!/usr/bin/env bash
# Property-based fuzzing of both HTTP APIs against their own OpenAPI documents (Schemathesis):
# requests the documents allow are sent, every status answered must be documented with a
# conforming body, and nothing may answer 5xx. (Whether every allowed request is accepted is
# not checked yet: the documents do not carry all of the servers' constraints.) Starts a command API and a query API from this
# tree's debug binaries on free ports against a database of their own (relay off), runs a
# bounded number of examples per operation, and exits non-zero on any finding.
#
# Needs DATABASE_ADMIN_URL and PG_BINDIR (from .data/stack.env, as `make test` sets them).
# Schemathesis is installed into .data/fuzz-venv on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=3.39.16
# Newer Hypothesis releases break this Schemathesis release.
HYPOTHESIS_VERSION=6.122.0
EXAMPLES=${FUZZ_EXAMPLES:-25}
# `positive` (requests the documents allow) by default; `all` adds requests they forbid.
# Only `positive` is part of `make test`.
TARGET=${CARGO_TARGET_DIR:-target}
VENV=.data/fuzz-venv

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if [[ ! -x $VENV/bin/schemathesis ]]; then
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    echo "[fuzz] installing python3-venv with apt" >&2
    rm -rf "$VENV"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv curl
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" "hypothesis==$HYPOTHESIS_VERSION"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

db="fuzz_$(python3 -c 'import uuid; print(uuid.uuid4().hex)')"
db_url="${DATABASE_ADMIN_URL%/*}/$db"
"$PG_BINDIR/psql" -q "$DATABASE_ADMIN_URL" -c "CREATE DATABASE $db"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$PG_BINDIR/psql" -q "$DATABASE_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
}
trap cleanup EXIT

command_port=$(free_port)
query_port=$(free_port)
export APP__DATABASE__URL=$db_url APP__RELAY__ENABLED=false APP__LOG__FILTER=warn
APP__COMMAND_API__PORT=$command_port "$TARGET/debug/command-api" > .data/fuzz-command-api.log 2>&1 &
pids+=($!)
wait_ready() {
  for _ in $(seq 1 100); do
    curl -fs "$1/openapi.json" > /dev/null && return 0
    sleep 0.2
  done
  echo "$1 did not start" >&2
  exit 1
}
wait_ready "http://127.0.0.1:$command_port"
APP__QUERY_API__PORT=$query_port "$TARGET/debug/query-api" > .data/fuzz-query-api.log 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$query_port"

status=0
for port in "$command_port" "$query_port"; do
  base="http://127.0.0.1:$port"
  "$VENV/bin/schemathesis" run "$base/openapi.json" --base-url "$base" \
    --checks all --data-generation-method "${FUZZ_DATA:-positive}" --hypothesis-max-examples "$EXAMPLES" --hypothesis-deadline 5000 \
    --hypothesis-suppress-health-check all --request-timeout 10000 \
    --hypothesis-derandomize --no-color --experimental=openapi-3.1 || status=1
done
exit $status
