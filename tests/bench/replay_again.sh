#!/usr/bin/env bash
# `projector replay all` RUNS times (default 3) on the store `make bench-replay` seeded
# (database bench_replay, kept after that bench), each run after the same settling step as the
# bench's: the previous sets pruned, autovacuum done, VACUUM ANALYZE, a checkpoint. Prints
# each run's wall time, events/s, the machine's CPU-seconds over it, and how long a fixed
# Python loop takes right after (the machine's speed varies by up to two times within an
# hour: compare runs made in the same minutes). Loopback only; bounded by RUNS.
#
#   tests/bench/replay_again.sh [runs=3]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RUNS="${1:-3}"

# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh
bench_stack
BENCH_URL="${DATABASE_ADMIN_URL%/*}/bench_replay"
export DATABASE_URL="$BENCH_URL" APP__DATABASE__URL="$BENCH_URL" APP__LOG__FILTER=warn
sql() { "$PG_BINDIR/psql" "$BENCH_URL" -tAc "$1"; }
[ -x ./target/release/projector ] || { echo "run make bench-replay first" >&2; exit 2; }
total=$(sql "SELECT count(*) FROM events") || { echo "no bench_replay store: run make bench-replay first" >&2; exit 2; }
cpu() { awk '/^cpu /{print $2+$3+$4+$6+$7+$8}' /proc/stat; }
echo "== $total events in bench_replay; $(nproc) cores"
for run in $(seq 1 "$RUNS"); do
  ./target/release/projector prune all >/dev/null
  settle_bench_db
  t0=$(date +%s.%N)
  c0=$(cpu)
  ./target/release/projector replay all >/dev/null 2>"$ROOT/.data/bench-replay-again-$run.err"
  t1=$(date +%s.%N)
  c1=$(cpu)
  loop=$(python3 -c 'import time; t = time.time(); sum(i * i for i in range(10**7)); print(round(time.time() - t, 2))')
  python3 - "$t0" "$t1" "$c0" "$c1" "$total" "$run" "$loop" <<'PY'
import sys
t0, t1, c0, c1, total = map(float, sys.argv[1:6])
run, loop = sys.argv[6], sys.argv[7]
hz = 100  # /proc/stat counts in USER_HZ
print(f"run {run}: replay all {t1 - t0:.2f} s, {total / (t1 - t0):,.0f} events/s, "
      f"{(c1 - c0) / hz:.1f} CPU-seconds; Python loop after it {loop} s")
PY
done
