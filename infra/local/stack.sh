#!/usr/bin/env bash
# Local stack: a private PostgreSQL cluster and a Tansu broker (Kafka protocol) under .data/.
#
#   infra/local/stack.sh up        install what is missing, start PostgreSQL and Tansu (SQLite
#                                  storage under .data/tansu, port 9092) for `make run`
#   infra/local/stack.sh up-test   the same, but Tansu with in-memory storage on port 19092, a
#                                  clean and fast broker for `make test`
#   infra/local/stack.sh down      stop them
#   infra/local/stack.sh env     print the effective settings (also written to .data/stack.env)
#
# PostgreSQL comes from apt; Tansu from crates.io (`cargo install`, pinned, about 10 minutes the
# first time, then cached in ~/.cargo/bin). PostgreSQL refuses to run as root, so as root the
# server runs as the `postgres` user; an ordinary user runs it as themselves. Nothing outside
# .data/ is touched except the two installs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATA="$ROOT/.data"
PGDATA="$DATA/pg"
PGSOCK="$DATA/pg-socket"
PGPORT="${PGPORT:-55432}"
PGDATABASE="${PGDATABASE:-commerce}"
COMMAND_API_PORT="${COMMAND_API_PORT:-8080}"
QUERY_API_PORT="${QUERY_API_PORT:-8081}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
TEST_KAFKA_PORT="${TEST_KAFKA_PORT:-19092}"
REGISTRY_PORT="${REGISTRY_PORT:-8085}"
TANSU_VERSION="0.6.0"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

log() { printf '[stack] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

pg_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pgbench" ]; then
      echo "$dir"
    fi
  done | sort -V | tail -n 1
}

install_postgres() {
  if [ -n "$(pg_bindir)" ]; then return; fi
  log "installing PostgreSQL with apt"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql postgresql-contrib
  # Debian's package starts its own cluster on 5432; this stack uses a private one instead.
  if command -v pg_ctlcluster >/dev/null; then
    as_root bash -c 'for c in /etc/postgresql/*/main; do v=$(basename "$(dirname "$c")"); pg_ctlcluster "$v" main stop 2>/dev/null || true; done'
  fi
  if [ -z "$(pg_bindir)" ]; then
    log "PostgreSQL installation did not provide initdb"; exit 1
  fi
}

# Runs a PostgreSQL server-side command as the user that owns the cluster.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

init_cluster() {
  local bin="$1"
  mkdir -p "$DATA"
  if [ -f "$PGDATA/PG_VERSION" ]; then return; fi
  log "initialising a cluster in $PGDATA"
  mkdir -p "$PGDATA" "$PGSOCK"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$PGDATA" "$PGSOCK"; fi
  chmod 700 "$PGDATA"
  as_pg "$bin/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  cat >>"$PGDATA/postgresql.conf" <<CONF
# local stack settings
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PGSOCK'
max_connections = 400
shared_buffers = 256MB
logging_collector = off
CONF
}

start_cluster() {
  local bin="$1"
  mkdir -p "$PGSOCK"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$PGSOCK"; fi
  if as_pg "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    log "PostgreSQL already running on port $PGPORT"
    return
  fi
  log "starting PostgreSQL on 127.0.0.1:$PGPORT"
  touch "$DATA/pg.log"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$DATA/pg.log"; fi
  as_pg "$bin/pg_ctl" -D "$PGDATA" -l "$DATA/pg.log" -w -t 60 start >/dev/null
}

create_database() {
  local bin="$1"
  local exists
  exists=$("$bin/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$PGDATABASE'")
  if [ "$exists" != "1" ]; then
    log "creating database $PGDATABASE"
    "$bin/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -qc "CREATE DATABASE $PGDATABASE"
  fi
}

tansu_bin() {
  if [ -x "$CARGO_BIN/tansu" ]; then echo "$CARGO_BIN/tansu"; else command -v tansu || true; fi
}

install_tansu() {
  local bin
  bin="$(tansu_bin)"
  if [ -n "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then return; fi
  log "installing Tansu $TANSU_VERSION from crates.io (about 10 minutes the first time)"
  cargo install tansu --locked --version "$TANSU_VERSION" --features libsql,dynostore
}

# start_tansu DIR PORT STORAGE: one broker, its pid and log in DIR.
start_tansu() {
  local dir="$1" port="$2" storage="$3" bin pid
  bin="$(tansu_bin)"
  mkdir -p "$dir"
  if [ -f "$dir/pid" ] && pid=$(cat "$dir/pid") && kill -0 "$pid" 2>/dev/null; then
    log "Tansu already running on port $port"
    return
  fi
  log "starting Tansu on 127.0.0.1:$port (storage $storage)"
  (
    cd "$dir"
    nohup "$bin" broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$storage" >"$dir/tansu.log" 2>&1 &
    echo $! >"$dir/pid"
  )
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
    sleep 0.1
  done
  log "Tansu did not start; see $dir/tansu.log"; exit 1
}

stop_tansu() {
  local dir="$1" pid
  if [ -f "$dir/pid" ] && pid=$(cat "$dir/pid") && kill "$pid" 2>/dev/null; then
    log "Tansu ($dir) stopped"
  fi
  rm -f "$dir/pid"
}

write_env() {
  mkdir -p "$DATA"
  cat >"$DATA/stack.env" <<ENV
DATABASE_URL=postgres://postgres@127.0.0.1:$PGPORT/$PGDATABASE
DATABASE_ADMIN_URL=postgres://postgres@127.0.0.1:$PGPORT/postgres
COMMAND_API_URL=http://127.0.0.1:$COMMAND_API_PORT
QUERY_API_URL=http://127.0.0.1:$QUERY_API_PORT
KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
TEST_KAFKA_BOOTSTRAP=127.0.0.1:$TEST_KAFKA_PORT
SCHEMA_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
PG_BINDIR=$(pg_bindir)
ENV
}

postgres_up() {
  install_postgres
  bin="$(pg_bindir)"
  init_cluster "$bin"
  start_cluster "$bin"
  create_database "$bin"
}

case "${1:-up}" in
  up)
    postgres_up
    install_tansu
    start_tansu "$DATA/tansu" "$KAFKA_PORT" "sqlite://tansu.db"
    write_env
    ;;
  up-test)
    postgres_up
    install_tansu
    start_tansu "$DATA/tansu-test" "$TEST_KAFKA_PORT" "memory://tansu/"
    write_env
    ;;
  down)
    stop_tansu "$DATA/tansu"
    stop_tansu "$DATA/tansu-test"
    bin="$(pg_bindir)"
    if [ -n "$bin" ] && [ -f "$PGDATA/PG_VERSION" ]; then
      as_pg "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
      log "PostgreSQL stopped"
    fi
    ;;
  env)
    write_env
    cat "$DATA/stack.env"
    ;;
  *)
    echo "usage: $0 up|up-test|down|env" >&2
    exit 2
    ;;
esac
