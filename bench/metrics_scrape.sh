#!/usr/bin/env bash
# Does scraping /metrics disturb request latency? MCP `tools/call echo` through mcp-proxy
# under load (wrk + bench/echo.lua), in interleaved rounds: quiet, scraped, quiet, scraped...
# In a "scraped" round a loop fetches the admin endpoint's /metrics as fast as it can for the
# whole round (one curl, keep-alive, one request after another with no pause, at nice 19).
#
# Environment:
#   DURATION  length of one wrk round          (default 10s)
#   ROUNDS    rounds per condition             (default 3)
#   CONNS     wrk connections                  (default 8)
#   SCRAPER_CPU core of the scrape loop        (default 1, with wrk and the upstream; 0 puts it
#             beside the proxy, so it cannot slow the upstream, the bottleneck here)
#   PROXY_BIN mcp-proxy binary                  (default target/release/mcp-proxy)
#
# Pinning (2-core machine), as in echo_compare.sh: upstream (node) and wrk on core 1, the
# scrape loop on SCRAPER_CPU; mcp-proxy --shards 1 on core 0, so shard 0 serves both the calls
# and /metrics.
set -euo pipefail

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-8}
SCRAPER_CPU=${SCRAPER_CPU:-1}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
PROXY_BIN=${PROXY_BIN:-$REPO/target/release/mcp-proxy}
EVERYTHING_BIN=$REPO/tests/node_modules/.bin/mcp-server-everything
LUA=$BENCH_DIR/echo.lua

die() { echo "metrics_scrape: ERROR: $*" >&2; exit 1; }
log() { echo "metrics_scrape: $*" >&2; }

[[ -x $PROXY_BIN ]] || die "no mcp-proxy binary at $PROXY_BIN (build it with cargo build --release)"
[[ -x $EVERYTHING_BIN ]] || die "no $EVERYTHING_BIN (run npm install in tests/)"
for tool in taskset curl wrk python3; do
    command -v $tool >/dev/null || die "$tool missing (wrk: apt-get install wrk)"
done

TMP=$(mktemp -d /tmp/metrics_scrape.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    if [[ $rc -eq 0 ]]; then rm -rf "$TMP"; else echo "metrics_scrape: failed; logs in $TMP" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

spawn() { local out=$1; shift; : >"$out"; setsid "$@" >"$out" 2>&1 </dev/null & PIDS+=($!); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_tcp() { local i; for ((i = 0; i < $2 * 10; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

UP_PORT=$(free_port)
PORT=$UP_PORT spawn "$TMP/everything.log" taskset -c 1 "$EVERYTHING_BIN" streamableHttp
wait_tcp "$UP_PORT" 30 || die "server-everything did not listen on $UP_PORT"

cat >"$TMP/proxy.toml" <<TOML
[proxy]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shards = 1

[[servers]]
name = "everything"
url = "http://127.0.0.1:$UP_PORT/mcp"
TOML
spawn "$TMP/proxy.log" "$PROXY_BIN" --config "$TMP/proxy.toml" --shards 1
PROXY_URL= ADMIN_URL=
for ((i = 0; i < 300; i++)); do
    PROXY_URL=$(sed -n 's#^mcp-proxy ready: \(http://[^ ]*\)$#\1#p' "$TMP/proxy.log" | head -n1)
    ADMIN_URL=$(sed -n 's#^mcp-proxy admin: \(http://[^ ]*\)$#\1#p' "$TMP/proxy.log" | head -n1)
    [[ -n $PROXY_URL && -n $ADMIN_URL ]] && break
    sleep 0.1
done
[[ -n $ADMIN_URL ]] || { cat "$TMP/proxy.log" >&2; die "mcp-proxy not ready"; }
log "proxy $PROXY_URL, admin $ADMIN_URL"

HDRS=(-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream')
SID=$(curl -sS -D - -o /dev/null -X POST "$PROXY_URL" "${HDRS[@]}" \
    -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}' |
    tr -d '\r' | awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}')
[[ -n $SID ]] || die "no session"
curl -sS -o /dev/null -X POST "$PROXY_URL" "${HDRS[@]}" -H "Mcp-Session-Id: $SID" \
    -H 'MCP-Protocol-Version: 2025-06-18' -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'

run_wrk() { # duration -> ECHO_BENCH line
    SESSION_ID=$SID TOOL=everything__echo taskset -c 1 wrk -t1 -c"$CONNS" -d"$1" --timeout 5s \
        -s "$LUA" "$PROXY_URL" >"$TMP/wrk.log" 2>&1 || { cat "$TMP/wrk.log" >&2; die "wrk failed"; }
    grep '^ECHO_BENCH ' "$TMP/wrk.log"
}

# One curl process fetching /metrics back to back on one keep-alive connection, for `secs`.
scrape_loop() { # secs -> prints the number of scrapes
    # URL globbing ([1-N]) makes curl fetch one URL after another on one connection. Niced, so
    # the scraper takes the CPU the upstream and wrk leave idle on core 1 instead of slowing
    # them down: what remains is the cost of serving /metrics on the proxy's core.
    timeout "$1" nice -n 19 taskset -c "$SCRAPER_CPU" curl -s -o /dev/null -w '%{http_code}\n' \
        "$ADMIN_URL/metrics?n=[1-100000000]" 2>/dev/null | grep -c '^200$' || true
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
median() { sort -g | awk '{v[NR]=$1} END{if(NR%2){print v[(NR+1)/2]} else {printf "%.1f\n",(v[NR/2]+v[NR/2+1])/2}}'; }

log "warm-up"
run_wrk 2s >/dev/null
SECS=${DURATION%s}
declare -A RES
echo "# DURATION=$DURATION ROUNDS=$ROUNDS CONNS=$CONNS; wrk and upstream on core 1, scraper on core $SCRAPER_CPU, mcp-proxy --shards 1 on core 0"
printf '%-8s %5s %9s %8s %8s %8s %8s %9s\n' mode round rps p50_us p90_us p99_us max_us scrapes
for ((r = 1; r <= ROUNDS; r++)); do
    for mode in quiet scraped; do
        scrapes=0
        if [[ $mode == scraped ]]; then
            scrape_loop "$((SECS + 1))" >"$TMP/scrapes" &
            SCRAPER=$!
            sleep 0.5
        fi
        line=$(run_wrk "$DURATION")
        if [[ $mode == scraped ]]; then
            wait "$SCRAPER" || true
            scrapes=$(cat "$TMP/scrapes")
        fi
        printf '%-8s %5s %9s %8s %8s %8s %8s %9s\n' "$mode" "$r" "$(field rps "$line")" \
            "$(field p50_us "$line")" "$(field p90_us "$line")" "$(field p99_us "$line")" \
            "$(field max_us "$line")" "$scrapes"
        for m in rps p50_us p99_us; do RES[$mode,$m]+="$(field $m "$line")"$'\n'; done
        RES[$mode,scrapes]+="$scrapes"$'\n'
    done
done
med() { printf '%s' "${RES[$1,$2]}" | median; }
echo
echo "| mode | rps (median) | p50 us | p99 us | scrapes per round |"
echo "|---|---:|---:|---:|---:|"
for mode in quiet scraped; do
    echo "| $mode | $(med $mode rps) | $(med $mode p50_us) | $(med $mode p99_us) | $(med $mode scrapes) |"
done
echo
echo "/metrics size: $(curl -s "$ADMIN_URL/metrics" | wc -c) bytes"
