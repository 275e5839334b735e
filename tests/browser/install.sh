#!/usr/bin/env bash
# Installs what the admin console's browser test drives (tests/tests/e2e/admin_console.rs):
# Debian's Chromium and its WebDriver server, chromedriver. Does nothing when both are there.
# `make test` runs it before the test suite; it runs as root (no sudo) or as a user who may
# use apt-get.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
echo "[browser] installing chromium and chromium-driver with apt" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium chromium-driver
