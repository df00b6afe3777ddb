#!/usr/bin/env bash
# bench/stateless_shards.sh: 2026-07-28 `tools/call` (echo) through mcp-proxy --shards 2, two
# builds side by side in one sitting, rounds interleaved (A, B, A, B...), medians printed.
#
# Every request carries the same client key (capabilities and clientInfo in `_meta`), so one
# bridge session serves them all; wrk's connections land on both shards (SO_REUSEPORT), so with a
# build that runs a client key's requests on one owner shard about half of them cross the mesh.
#
# Settings (environment): BIN_A, BIN_B (mcp-proxy binaries; B defaults to target/release),
# DURATION (5s) ROUNDS (5) CONNS (8) THREADS (1). The upstream is `mcp-loadgen upstream`
# (stateful, JSON answers). Needs wrk (apt-get install -y wrk) and bench/stateless_echo.lua.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_B="${BIN_B:-$ROOT/target/release/mcp-proxy}"
BIN_A="${BIN_A:?BIN_A: the baseline mcp-proxy binary}"
LOADGEN="${LOADGEN:-$ROOT/target/release/mcp-loadgen}"
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-5}"
CONNS="${CONNS:-8}"
THREADS="${THREADS:-1}"
OUT="$(mktemp -d -t mcp-stateless-shards-XXXXXX)"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_ready() {
  local file=$1 prefix=$2 pid=$3
  for _ in $(seq 1 400); do
    if line=$(grep -m1 "^$prefix" "$file" 2>/dev/null); then echo "${line#"$prefix"}"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "process $pid died" >&2; return 1; }
    sleep 0.05
  done
  echo "no ready line in $file" >&2; return 1
}

"$LOADGEN" upstream --listen 127.0.0.1:0 >"$OUT/upstream.out" 2>"$OUT/upstream.err" &
PIDS+=($!)
UP_URL=$(wait_ready "$OUT/upstream.out" "mcp-loadgen upstream ready: " "${PIDS[-1]}")
printf '[[servers]]\nname = "up"\nurl = "%s"\n' "$UP_URL" >"$OUT/proxy.toml"

declare -A URL
for side in A B; do
  bin_var="BIN_$side"
  RUST_LOG=warn "${!bin_var}" --config "$OUT/proxy.toml" --listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --shards 2 >"$OUT/proxy-$side.out" 2>"$OUT/proxy-$side.err" &
  PIDS+=($!)
  URL[$side]=$(wait_ready "$OUT/proxy-$side.out" "mcp-proxy ready: " "${PIDS[-1]}")
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg); $ROUNDS rounds x $DURATION, $CONNS connections; raw lines in $OUT"

for side in A B; do  # warm-up: opens the bridge session and its upstream session
  TOOL=up__echo wrk -t1 -c"$CONNS" -d1s -s "$ROOT/bench/stateless_echo.lua" "${URL[$side]}" >/dev/null
done
for r in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    TOOL=up__echo wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$ROOT/bench/stateless_echo.lua" \
      "${URL[$side]}" | grep '^ECHO_BENCH' | tee -a "$OUT/$side.txt" | sed "s/^/$side $r: /"
  done
done
python3 - "$OUT" <<'PY'
import re, statistics, sys
out = sys.argv[1]
for side in "AB":
    rows = [dict(re.findall(r"(\w+)=([\d.]+)", l)) for l in open(f"{out}/{side}.txt")]
    med = lambda k: statistics.median(float(r[k]) for r in rows)
    bad = sum(int(r["non200"]) + int(r["badbody"]) for r in rows)
    print(f"{side}: median {med('rps'):.0f} req/s, p50 {med('p50_us'):.0f} us, p99 {med('p99_us'):.0f} us, failed answers {bad}")
PY
