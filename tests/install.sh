#!/usr/bin/env bash
# Installs the Debian packages the test suite uses beyond the Rust toolchain, before anything
# needs them (`make test` runs it right after lint): python3 with venv (the deployment checks'
# and the fuzzer's virtualenvs, small helpers in the scripts), curl (the fuzzer's token
# requests), procps (ps and kill in the process-handling tests), and Debian's Chromium with
# its WebDriver server for the admin console's browser test. Installs only what is missing;
# on a machine that has everything it runs no apt-get at all. Runs as root, or as a user who
# may use sudo.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# `python3 -m venv` needs ensurepip, which Debian ships apart from python3 itself.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then missing+=(python3-venv); fi
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ps >/dev/null 2>&1 || missing+=(procps)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)

if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "[install] installing ${missing[*]} with apt" >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
