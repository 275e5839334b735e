#!/usr/bin/env bash
# Prints, from the output of `cargo test` given as $1, each failed test's name and its panic
# message (at most 40 lines; what the test printed before it and the backtrace are left out).
# `make test` prints this last when a test failed: a log cut to its head and tail, as CI keeps
# it, would otherwise show which test failed but not why.
set -euo pipefail
log="${1:?usage: failures.sh <cargo test output>}"
awk '
  /^---- .* stdout ----$/ { name = $2; lines = 0; state = "before"; print ""; print "FAILED " name; next }
  /^failures:$/ || /^test result:/ { name = "" }
  name == "" { next }
  /^thread .* panicked at / { state = "message" }
  /^stack backtrace:$/ || /^note: / { state = "after" }
  state == "message" && lines < 40 { print "  " $0; lines++ }
' "$log"
