# Shared by the benchmark scripts (sourced, after `cd "$ROOT"`): the local stack and its
# settings, a fresh database per benchmark, and the settings of a whole pipeline on its own
# ports.

# Starts PostgreSQL and the `make run` Kafka cluster and exports .data/stack.env.
bench_stack() {
  ./infra/local/stack.sh up
  set -a
  # shellcheck disable=SC1091
  source .data/stack.env
  set +a
}

# fresh_bench_db NAME: an empty database NAME; sets BENCH_DB and BENCH_URL and points the
# services at it (APP__DATABASE__URL, with warn-level logs).
fresh_bench_db() {
  BENCH_DB="$1"
  BENCH_URL="${DATABASE_ADMIN_URL%/*}/$BENCH_DB"
  "$PG_BINDIR/psql" "$DATABASE_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)"
  "$PG_BINDIR/psql" "$DATABASE_ADMIN_URL" -qc "CREATE DATABASE $BENCH_DB"
  export APP__DATABASE__URL="$BENCH_URL" APP__LOG__FILTER=warn
}

# settle_bench_db: waits (at most 180 s) until autovacuum is done with what the step before
# left in BENCH_URL's database, then VACUUM ANALYZE and a checkpoint, so that each timed step
# starts on a settled database (a replay running beside autovacuum took up to half as long
# again; a swap that needs a table autovacuum is working on waits a second for it to give way).
settle_bench_db() {
  local i
  for i in $(seq 1 180); do
    [ "$("$PG_BINDIR/psql" "$BENCH_URL" -tAc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")" = 0 ] && break
    sleep 1
  done
  "$PG_BINDIR/psql" "$BENCH_URL" -tAc "VACUUM ANALYZE" >/dev/null
  "$PG_BINDIR/psql" "$BENCH_URL" -tAc "CHECKPOINT" >/dev/null
}

# pipeline_env BASE_PORT BROKER TOPIC_PREFIX: the settings of a command API (BASE_PORT), query
# API (+1), projector (+2) and schema registry (+5) that talk to each other and to BROKER;
# sets API_PORT, QUERY_PORT, PROJECTOR_PORT and REGISTRY_PORT.
pipeline_env() {
  API_PORT=$1
  QUERY_PORT=$(($1 + 1))
  PROJECTOR_PORT=$(($1 + 2))
  REGISTRY_PORT=$(($1 + 5))
  export APP__KAFKA__BOOTSTRAP_SERVERS="$2"
  export APP__KAFKA__TOPIC_PREFIX="$3"
  export APP__SCHEMA_REGISTRY__PORT=$REGISTRY_PORT
  export APP__SCHEMA_REGISTRY__URL="http://127.0.0.1:$REGISTRY_PORT"
  export APP__COMMAND_API__PORT=$API_PORT
  export APP__QUERY_API__PORT=$QUERY_PORT
  export APP__PROJECTOR__PORT=$PROJECTOR_PORT
  export APP__PROJECTOR__COMMAND_API_URL="http://127.0.0.1:$API_PORT"
  # The query API verifies tokens against this command API's keys.
  export APP__AUTH__JWKS_URL="http://127.0.0.1:$API_PORT/.well-known/jwks.json"
}

# The release build of every service and the load generator.
build_pipeline() {
  cargo build --release --locked -p command-api -p schema-registry -p projections -p query-api \
    -p tests --bin command-api --bin schema-registry --bin projector --bin query-api --bin loadgen
}

# The TrueType font `loadgen plot` draws text with (Debian's fonts-dejavu-core, installed with
# apt when missing); sets PLOT_FONT.
PLOT_FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
ensure_plot_font() {
  if [ -f "$PLOT_FONT" ]; then return; fi
  echo "[bench] installing fonts-dejavu-core with apt (the plots' text)" >&2
  local as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  # A fresh machine has no package lists yet.
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q fonts-dejavu-core
}

# wait_until_relayed URL MINUTES: waits until the relay's checkpoint in the database at URL has
# passed the newest event; fails after MINUTES.
wait_until_relayed() {
  local deadline=$(($(date +%s) + 60 * $2))
  until [[ $("$PG_BINDIR/psql" "$1" -tAc "SELECT coalesce((SELECT (c.tx_id, c.global_position) >= (e.tx_id, e.global_position)
      FROM relay_checkpoints c, (SELECT tx_id, global_position FROM events
        ORDER BY tx_id DESC, global_position DESC LIMIT 1) AS e WHERE c.name = 'default'), false)") == t ]]; do
    if (($(date +%s) > deadline)); then
      echo "the relay did not publish everything within $2 minutes" >&2
      return 1
    fi
    sleep 1
  done
}

# sample_pipeline CSV API_PORT PROJECTOR_PORT: every second until killed, appends
# `seconds,events,published,applied_users,applied_audit` to CSV: the events in the store at
# $BENCH_URL, what the relay has published and what the projections `users` and `audit` have
# applied (counters from the services' metrics, which start at zero with each process).
sample_pipeline() {
  local out=$1 api=$2 projector=$3 t0 events published users audit metrics
  t0=$(date +%s.%N)
  echo "seconds,events,published,applied_users,applied_audit" >"$out"
  while sleep 1; do
    events=$("$PG_BINDIR/psql" "$BENCH_URL" -tAc "SELECT count(*) FROM events" 2>/dev/null) || events=""
    published=$(curl -fs "http://127.0.0.1:$api/metrics" 2>/dev/null |
      awk '/^relay_events_published_total/ {print $2}') || published=""
    metrics=$(curl -fs "http://127.0.0.1:$projector/metrics" 2>/dev/null) || metrics=""
    users=$(awk '/^projection_events_applied_total/ && /projection="users"/ {print $2}' <<<"$metrics")
    audit=$(awk '/^projection_events_applied_total/ && /projection="audit"/ {print $2}' <<<"$metrics")
    echo "$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')"),${events:-},${published:-0},${users:-0},${audit:-0}" >>"$out"
  done
}

# plot_pipeline CSV NAME TITLE: from what sample_pipeline wrote, the lag (events in the store
# not yet published, or not yet applied) and the throughput (events per second written,
# published and applied) over time, drawn as docs/plots/NAME-lag.png and NAME-throughput.png.
plot_pipeline() {
  local csv=$1 name=$2 title=$3 dir
  dir=$(dirname "$csv")/$name-series
  mkdir -p "$dir"
  # Rows whose store count could not be read (the database busy past psql's patience) are
  # left out rather than drawn as zero.
  awk -F, 'NR > 1 && $2 != "" {l = $2 - $3; print $1 "," (l < 0 ? 0 : l)}' "$csv" >"$dir/lag-relay.csv"
  awk -F, 'NR > 1 && $2 != "" {l = $2 - $4; print $1 "," (l < 0 ? 0 : l)}' "$csv" >"$dir/lag-users.csv"
  awk -F, 'NR > 1 && $2 != "" {l = $2 - $5; print $1 "," (l < 0 ? 0 : l)}' "$csv" >"$dir/lag-audit.csv"
  for column in 2 3 4 5; do
    awk -F, -v c=$column 'NR > 1 && $2 != "" {
        if (seen && $1 > t) print $1 "," ($c - v) / ($1 - t); t = $1; v = $c; seen = 1 }' \
      "$csv" >"$dir/rate-$column.csv"
  done
  ./target/release/loadgen plot series --font "$PLOT_FONT" --out "docs/plots/$name-lag.png" \
    --title "$title: events behind" --y-label "events" \
    "relay=$dir/lag-relay.csv" "users=$dir/lag-users.csv" "audit=$dir/lag-audit.csv"
  ./target/release/loadgen plot series --font "$PLOT_FONT" --out "docs/plots/$name-throughput.png" \
    --title "$title: throughput" --y-label "events/s" \
    "written=$dir/rate-2.csv" "relay=$dir/rate-3.csv" "users=$dir/rate-4.csv" "audit=$dir/rate-5.csv"
  echo "plots: docs/plots/$name-lag.png, docs/plots/$name-throughput.png"
}
