#!/usr/bin/env bash
# Property-based fuzzing of both HTTP APIs against their own OpenAPI documents (Schemathesis):
# requests the documents allow are sent, every status answered must be documented with a
# conforming body, nothing may answer 5xx, and every allowed request must be accepted
# (`positive_data_acceptance`): only the statuses allowed below, which a valid request can
# get for domain reasons, may answer it; a 400 or 422 is a constraint the server enforces and
# the document does not state; and every request the documents forbid must be refused with a
# 4xx (`negative_data_rejection`). The few rules JSON Schema cannot state are in the documents'
# descriptions and tests/fuzz/hooks.py keeps the generated requests to them. Starts a command
# API and a query API from this tree's debug binaries on free ports against a database of
# their own (relay off), runs a bounded number of examples per operation, and exits non-zero
# on any finding.
#
# Needs DATABASE_ADMIN_URL and PG_BINDIR (from .data/stack.env, as `make test` sets them).
# Schemathesis is installed into .data/fuzz-venv on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=3.39.16
# Newer Hypothesis releases break this Schemathesis release.
HYPOTHESIS_VERSION=6.122.0
EXAMPLES=${FUZZ_EXAMPLES:-25}
# `all` by default: requests the documents allow, and requests they forbid, which must be
# refused with a 4xx (`negative_data_rejection`); `positive` sends only the first kind.
# (`negative` alone cannot be generated for operations whose only parameter is a free string.)
TARGET=${CARGO_TARGET_DIR:-target}
VENV=.data/fuzz-venv

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if [[ ! -x $VENV/bin/schemathesis ]]; then
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    echo "[fuzz] installing python3-venv with apt" >&2
    rm -rf "$VENV"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q python3-venv curl
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
# Its own signing key and admin (the fuzzer acts as that admin, so that no answer is a 403),
# and limits high enough that the fuzzer's volume of commands and failed logins is not
# refused with 429 (those limits have their own tests).
admin_password="fuzz-admin-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
export APP__AUTH__KEYS_DIR="$PWD/.data/fuzz-keys" APP__AUTH__GENERATE_KEY=true \
  APP__AUTH__BOOTSTRAP_ADMIN_EMAIL=fuzz-admin@example.com \
  APP__AUTH__BOOTSTRAP_ADMIN_PASSWORD="$admin_password" \
  APP__AUTH__COMMANDS_PER_SECOND=1000000 APP__AUTH__COMMANDS_BURST=1000000 \
  APP__AUTH__ANONYMOUS_PER_MINUTE=100000000 APP__AUTH__LOGIN_FAILURES_PER_ACCOUNT=1000000 \
  APP__AUTH__LOGIN_FAILURES_PER_ADDRESS=1000000 APP__AUTH__HASHING_QUEUE=100000 \
  APP__AUTH__JWKS_URL="http://127.0.0.1:$command_port/.well-known/jwks.json"
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

# What a request the document allows may legitimately be answered, per API. Commands: 2xx;
# 404 for an id naming nothing (the fuzzer's ids are random); 409 for a rule of the aggregate
# or a value already taken (an email, a payment of the hooks' order). Reads: 2xx, 304
# (`If-None-Match`) and 404. Never 400 or 422 (the document would be missing a constraint),
# nor 503/504: they are documented for overload and a lagging read model, which a quiet run
# with random ids never meets, so here they would be a fault.
# The identity routes are fuzzed apart: a well-formed login, refresh, reset confirmation or
# callback with made-up credentials, tokens or signatures is rightly 400 or 401.
IDENTITY='^/(v1/auth/|v1/webhooks/|\.well-known/)'
export SCHEMATHESIS_HOOKS=tests.fuzz.hooks

token=$(curl -fsS -H 'content-type: application/json' \
  -d "{\"grant_type\": \"password\", \"email\": \"fuzz-admin@example.com\", \"password\": \"$admin_password\"}" \
  "http://127.0.0.1:$command_port/v1/auth/token" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
export FUZZ_TOKEN=$token

fuzz() { # port allowed-statuses path-filter...
  local base="http://127.0.0.1:$1" allowed=$2
  shift 2
  "$VENV/bin/schemathesis" run "$base/openapi.json" --base-url "$base" "$@" \
    -H "Authorization: Bearer $token" \
    --checks all --data-generation-method "${FUZZ_DATA:-all}" --hypothesis-max-examples "$EXAMPLES" --hypothesis-deadline 5000 \
    --hypothesis-suppress-health-check all --request-timeout 10000 \
    --experimental=positive_data_acceptance \
    --experimental-positive-data-acceptance-allowed-statuses "$allowed" \
    --hypothesis-derandomize --no-color --experimental=openapi-3.1
}

status=0
fuzz "$command_port" "2xx,404,409" --exclude-path-regex "$IDENTITY" || status=1
fuzz "$command_port" "2xx,400,401" --include-path-regex "$IDENTITY" || status=1
fuzz "$query_port" "2xx,304,404" || status=1
exit $status
