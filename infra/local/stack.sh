#!/usr/bin/env bash
# Local stack: a private PostgreSQL cluster and Apache Kafka (KRaft on loopback) under .data/.
#
#   infra/local/stack.sh up          install what is missing, start PostgreSQL and the Kafka
#                                    cluster of `make run`: RUN_KAFKA_NODES brokers (default 1;
#                                    3 gives the replicated cluster of the tests) from port 9092,
#                                    data in .data/kafka-run-<N>n
#   infra/local/stack.sh up-test     the same, but the Kafka cluster of `make test`: always three
#                                    brokers (ports 19092-19094, data in .data/kafka-test),
#                                    stopped and started empty each time
#   infra/local/stack.sh kafka-test  only the test Kafka cluster (PostgreSQL already runs)
#   infra/local/stack.sh down        stop what these started (by the pids under .data/)
#   infra/local/stack.sh env         print the effective settings (also written to .data/stack.env)
#
# PostgreSQL comes from apt; Kafka's jars from Maven Central, run with Java (infra/local/kafka.sh;
# Java and Maven come from apt when missing; the jars take a few seconds the first time, then
# stay in .data/kafka-lib). Each cluster's controllers listen 100 ports above its brokers.
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user; an
# ordinary user runs it as themselves. Nothing outside .data/ is touched except the installs.
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
# One broker for `make run`: three replicated brokers cost about a core of this two-core
# machine at 500 events/s, which the services then lack (docs/adr/0008-apache-kafka-for-local-and-ci.md).
RUN_KAFKA_NODES="${RUN_KAFKA_NODES:-1}"
REGISTRY_PORT="${REGISTRY_PORT:-8085}"

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
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q postgresql postgresql-contrib
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
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$PGDATA" "$PGSOCK"
    # As root the server runs as `postgres`, which must reach .data/ through the clone's
    # directories (a umask of 077 makes .data/ its owner's alone).
    chmod a+x "$DATA"
    if ! runuser -u postgres -- test -x "$PGDATA"; then
      log "the postgres user cannot reach $PGDATA: clone the repository where every user" \
        "may enter its directories (not under a home directory of mode 700 such as /root)"
      exit 1
    fi
  fi
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

kafka() { "$ROOT/infra/local/kafka.sh" "$@"; }

# ports BASE [N=3]: N consecutive ports from BASE, comma-separated.
ports() { seq -s, "$1" "$(($1 + ${2:-3} - 1))"; }

# bootstrap BASE [N=3]: the addresses of N brokers from BASE, comma-separated.
bootstrap() { local p; for p in $(ports "$1" "${2:-3}" | tr , ' '); do printf '127.0.0.1:%s\n' "$p"; done | paste -sd,; }

# kafka_running DIR: some node started in DIR still runs.
kafka_running() {
  local pidfile
  for pidfile in "$1"/node-*/pid; do
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then return 0; fi
  done
  return 1
}

# The test cluster is stopped and started empty each time: each test stack makes three topics
# of its own, and a cluster kept up across runs held over 4,000 partitions per broker after a
# few, until every broker died of an OutOfMemoryError in the middle of a run (its server.log
# says so) and most tests waited for topics that were never created.
kafka_test_up() {
  if [ -d "$DATA/kafka-test" ]; then kafka down "$DATA/kafka-test"; fi
  rm -rf "$DATA/kafka-test"
  kafka up "$DATA/kafka-test" "$(ports "$TEST_KAFKA_PORT")" "$(ports "$((TEST_KAFKA_PORT + 100))")"
}

kafka_run_dir() { echo "$DATA/kafka-run-${RUN_KAFKA_NODES}n"; }

kafka_run_up() {
  kafka up "$(kafka_run_dir)" "$(ports "$KAFKA_PORT" "$RUN_KAFKA_NODES")" \
    "$(ports "$((KAFKA_PORT + 100))" "$RUN_KAFKA_NODES")"
}

# Random secrets, made once per fresh .data/ (the admin's password, the webhook secret, the
# registry's write credentials, the process manager's client secret) and kept in
# .data/secrets.env, readable by its owner only.
# $1 hex characters from the kernel's random source (coreutils only: a fresh machine may have
# no python3 before `make test` installs it).
random_secret() {
  local hex
  hex=$(head -c "$(($1 / 2))" /dev/urandom | od -An -vtx1 | tr -d ' \n')
  [ "${#hex}" -eq "$1" ] || { log "could not read $1 random hex characters"; exit 1; }
  printf '%s' "$hex"
}

ensure_secrets() {
  mkdir -p "$DATA"
  local file="$DATA/secrets.env"
  [ -f "$file" ] && return 0
  # Each secret is made before the file is written: a failure inside the here-document would
  # not stop the script, and an empty secret would be kept for good.
  local admin webhook registry process_manager
  admin=$(random_secret 24)
  webhook=$(random_secret 40)
  registry=$(random_secret 24)
  process_manager=$(random_secret 40)
  (
    umask 077
    cat >"$file.tmp" <<SECRETS
ADMIN_EMAIL=admin@example.com
ADMIN_PASSWORD=$admin
WEBHOOK_SECRET=$webhook
REGISTRY_USER=registry
REGISTRY_PASSWORD=$registry
PROCESS_MANAGER_SECRET=$process_manager
SECRETS
    mv "$file.tmp" "$file"
  )
  log "secrets written to $file"
}

write_env() {
  ensure_secrets
  # shellcheck disable=SC1091
  source "$DATA/secrets.env"
  # It holds the secrets too: readable by its owner only, also when it existed before.
  touch "$DATA/stack.env"
  chmod 600 "$DATA/stack.env"
  cat >"$DATA/stack.env" <<ENV
DATABASE_URL=postgres://postgres@127.0.0.1:$PGPORT/$PGDATABASE
DATABASE_ADMIN_URL=postgres://postgres@127.0.0.1:$PGPORT/postgres
COMMAND_API_URL=http://127.0.0.1:$COMMAND_API_PORT
QUERY_API_URL=http://127.0.0.1:$QUERY_API_PORT
KAFKA_BOOTSTRAP=$(bootstrap "$KAFKA_PORT" "$RUN_KAFKA_NODES")
TEST_KAFKA_BOOTSTRAP=$(bootstrap "$TEST_KAFKA_PORT")
SCHEMA_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
PG_BINDIR=$(pg_bindir)
ADMIN_EMAIL=$ADMIN_EMAIL
ADMIN_PASSWORD=$ADMIN_PASSWORD
WEBHOOK_SECRET=$WEBHOOK_SECRET
REGISTRY_USER=$REGISTRY_USER
REGISTRY_PASSWORD=$REGISTRY_PASSWORD
APP__AUTH__KEYS_DIR=$DATA/keys
APP__AUTH__BOOTSTRAP_ADMIN_EMAIL=$ADMIN_EMAIL
APP__AUTH__BOOTSTRAP_ADMIN_PASSWORD=$ADMIN_PASSWORD
APP__AUTH__CLIENTS=process-manager=$PROCESS_MANAGER_SECRET
APP__AUTH__JWKS_URL=http://127.0.0.1:$COMMAND_API_PORT/.well-known/jwks.json
APP__PROJECTOR__CLIENT_SECRET=$PROCESS_MANAGER_SECRET
APP__QUERY_API__COMMAND_API_URL=http://127.0.0.1:$COMMAND_API_PORT
APP__WEBHOOK__SECRETS=$WEBHOOK_SECRET
APP__SCHEMA_REGISTRY__USER=$REGISTRY_USER
APP__SCHEMA_REGISTRY__PASSWORD=$REGISTRY_PASSWORD
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
    kafka_run_up
    write_env
    ;;
  up-test)
    postgres_up
    kafka_test_up
    write_env
    ;;
  down)
    for dir in "$DATA"/kafka-run-*n "$DATA/kafka-test"; do
      [ -d "$dir" ] && kafka down "$dir"
    done
    bin="$(pg_bindir)"
    if [ -n "$bin" ] && [ -f "$PGDATA/PG_VERSION" ]; then
      as_pg "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
      log "PostgreSQL stopped"
    fi
    ;;
  kafka-test)
    kafka_test_up
    write_env
    ;;
  env)
    write_env
    cat "$DATA/stack.env"
    ;;
  *)
    echo "usage: $0 up|up-test|kafka-test|down|env" >&2
    exit 2
    ;;
esac
