#!/usr/bin/env bash
# Offline checks of the deployment files: the Prometheus alert rules are checked and their unit
# tests run with promtool (infra/deploy/prometheus/alerts.yml, alerts.test.yml).
#
# promtool comes from Debian's `prometheus` package. Installing that package would also start a
# Prometheus server, so the package is downloaded with apt and only unpacked under
# .data/promtool (no service, nothing outside .data/); a promtool already on PATH is used as is.
set -euo pipefail
cd "$(dirname "$0")/../.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

promtool_bin() {
  if command -v promtool >/dev/null 2>&1; then
    command -v promtool
    return
  fi
  local dir=.data/promtool
  if [[ ! -x $dir/usr/bin/promtool ]]; then
    echo "[deploy] fetching Debian's prometheus package for promtool (unpacked into $dir)" >&2
    local download
    download=$(mktemp -d)
    # `apt-get download` writes into the current directory; a fresh machine may need the
    # package lists first.
    if ! (cd "$download" && apt-get download -q prometheus >/dev/null 2>&1); then
      as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
      (cd "$download" && apt-get download -q prometheus >/dev/null)
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    dpkg-deb -x "$download"/prometheus_*.deb "$dir"
    rm -rf "$download"
  fi
  echo "$PWD/$dir/usr/bin/promtool"
}

promtool=$(promtool_bin)
"$promtool" --version | head -1
"$promtool" check rules infra/deploy/prometheus/alerts.yml
(cd infra/deploy/prometheus && "$promtool" test rules alerts.test.yml)
