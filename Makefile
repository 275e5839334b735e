# The two commands that matter:
#   make run    bring up PostgreSQL, Kafka (one broker) and the services; logs in the
#               foreground; Ctrl-C stops all
#   make test   lint first (format check, clippy with warnings as errors) and the offline
#               checks of the deployment files, then bring up
#               PostgreSQL and a test Kafka cluster, and run the whole test suite (what CI
#               runs); the Debian tools the suite uses (Chromium for the admin console's
#               browser test, python3, curl, procps) are installed first when missing
SHELL := /bin/bash
CARGO ?= cargo
# One step at a time even under `make -j`: `make test` lints first, and its install steps
# would otherwise run apt at once.
.NOTPARALLEL:

.PHONY: run test test-tools fuzz deploy-check stack stop bench-write bench-relay bench-read bench-visibility bench-scale-out bench-growth bench-backlog bench-stall bench-replay bench-replay-budget fmt lint

run:
	./infra/local/run.sh

test: lint test-tools deploy-check
	./infra/local/stack.sh up-test
	$(CARGO) build --workspace --bins --locked
	mkdir -p .data/tmp
	set -a && source .data/stack.env && set +a && set -o pipefail && \
	  TMPDIR=$(CURDIR)/.data/tmp $(CARGO) test --workspace --locked --no-fail-fast -- --test-threads=$${TEST_THREADS:-4} \
	    2>&1 | tee .data/test-output.log || { ./tests/failures.sh .data/test-output.log; exit 1; }
	$(MAKE) fuzz

# The Debian packages the tests use beyond the Rust toolchain (tests/install.sh lists them).
test-tools:
	./tests/install.sh

# Both APIs fuzzed against their OpenAPI documents (Schemathesis, bounded examples); needs the
# test stack's PostgreSQL and the debug binaries (`make test` builds both first).
fuzz:
	$(CARGO) build --workspace --bins --locked
	set -a && source .data/stack.env && set +a && ./tests/fuzz/run.sh

# Offline checks of the deployment files (infra/deploy/): promtool on the Prometheus config and
# alert rules, kustomize renders validated against the Kubernetes schemas, compose.yaml against
# the Compose Specification, dashboards, collector config, Dockerfile. The tools are installed
# into .data/ on the first run (tests/deploy/check.sh lists them).
deploy-check:
	./tests/deploy/check.sh

stack:
	./infra/local/stack.sh up

stop:
	./infra/local/stack.sh down

# Write-path benchmark: HTTP load generator and pgbench, same machine, one run.
bench-write: stack
	./tests/bench/write.sh

# Relay benchmark: relay (commit -> broker ack) next to a raw producer, one run.
bench-relay: stack
	./tests/bench/relay.sh

# Read-side benchmark: command-to-visible latency at a steady rate, cached reads next to a
# trivial axum handler, one run.
bench-read: stack
	./tests/bench/read.sh

# Command-to-visible benchmark: five runs at 1,000 commands/s with authentication and span
# export on, each run's latency percentiles plotted (docs/plots/), services' memory.
bench-visibility: stack
	./tests/bench/visibility.sh

# Projector scale-out: one projector process, then two sharing the partitions, through a
# backlog of 300,000 events on the topics; rates over time plotted (docs/plots/).
bench-scale-out: stack
	./tests/bench/scale_out.sh

# Growth: appends, relay tailing and min_version reads on an empty store and on one of
# 10,000,000 events, with their query plans and the store's size.
bench-growth: stack
	./tests/bench/growth.sh

# Backlog benchmark: 1,000,000 events written with the relay off, then relay and projector
# catch-up rates, a projector restart with the whole topic behind it, and latency after.
bench-backlog: stack
	./tests/bench/backlog.sh

# Stall benchmark: the broker stopped for 45 s under a steady load; lag and throughput over
# time, drawn (docs/plots/stall-*.png).
bench-stall: stack
	./tests/bench/stall.sh

# Replay benchmark: 1,000,000 events seeded into a fresh event store, then `projector replay
# all`, `replay audit` alone and `verify all`, timed (events/s over the store).
bench-replay: stack
	./tests/bench/replay.sh

# Replay's budget: on the store and topics bench-replay left, the CPU-seconds each of issue
# 12's speed targets allows (from a raw consumer's time and the events) next to what a
# replay and rm_audit's rows alone take, in the same minutes.
bench-replay-budget: stack
	./tests/bench/replay_budget.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
