#!/usr/bin/env bash
# Compare MCP `tools/call echo` sent directly to @modelcontextprotocol/server-everything
# with the same call sent through mcp-proxy in front of it. Same load client (wrk +
# bench/echo.lua), one run, interleaved rounds: direct, proxy, direct, proxy, ...
#
# Environment:
#   DURATION  length of one wrk round          (default 10s)
#   ROUNDS    rounds per target and series     (default 3)
#   CONNS     connections of the main series   (default 8); a second series with
#             1 connection (latency) always follows unless CONNS is already 1
#   WARMUP    unreported warm-up per target     (default 2s; 0 disables)
#   PROXY_BIN mcp-proxy binary                  (default target/release/mcp-proxy)
#
# Pinning (2-core machine): the upstream (node) and wrk share core 1
# (taskset -c 1); mcp-proxy runs with --shards 1 and glommio pins its executor to
# core 0. So in the proxy rounds the proxy has core 0 to itself, while upstream and
# load client share core 1 in both kinds of rounds. See bench/README.md.
set -euo pipefail

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-8}
WARMUP=${WARMUP:-2s}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
PROXY_BIN=${PROXY_BIN:-$REPO/target/release/mcp-proxy}
EVERYTHING_BIN=$REPO/tests/node_modules/.bin/mcp-server-everything
LUA=$BENCH_DIR/echo.lua

die() { echo "echo_compare: ERROR: $*" >&2; exit 1; }
log() { echo "echo_compare: $*" >&2; }

# ---------------------------------------------------------------- prerequisites
[[ -x $PROXY_BIN ]] || die "no mcp-proxy binary at $PROXY_BIN (build it with cargo build --release)"
[[ -x $EVERYTHING_BIN ]] || die "no $EVERYTHING_BIN (run npm install in tests/)"
command -v taskset >/dev/null || die "taskset missing (util-linux)"
command -v curl >/dev/null || die "curl missing"
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    if ! apt-get install -y wrk >/dev/null 2>&1; then
        apt-get update >/dev/null && apt-get install -y wrk >/dev/null || die "could not install wrk"
    fi
fi

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d /tmp/echo_compare.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 0.3
    for pid in "${PIDS[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if [[ $rc -eq 0 ]]; then
        rm -rf "$TMP"
    else
        echo "echo_compare: failed (exit $rc); logs kept in $TMP" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Start "$@" in its own process group (pid == pgid) and remember it.
spawn() {
    local out=$1; shift
    setsid "$@" >"$out" 2>&1 </dev/null &
    PIDS+=($!)
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_tcp() { # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- upstream
UP_PORT=$(free_port)
PORT=$UP_PORT spawn "$TMP/everything.log" taskset -c 1 "$EVERYTHING_BIN" streamableHttp
wait_tcp "$UP_PORT" 30 || { cat "$TMP/everything.log" >&2; die "server-everything did not listen on $UP_PORT"; }
DIRECT_URL=http://127.0.0.1:$UP_PORT/mcp
log "upstream server-everything: $DIRECT_URL (core 1)"

# ---------------------------------------------------------------- proxy
cat >"$TMP/proxy.toml" <<EOF
[proxy]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shards = 1

[[servers]]
name = "everything"
url = "$DIRECT_URL"
EOF
spawn "$TMP/proxy.log" "$PROXY_BIN" --config "$TMP/proxy.toml" --shards 1
PROXY_PID=${PIDS[-1]}
PROXY_URL=
for ((i = 0; i < 300; i++)); do
    PROXY_URL=$(sed -n 's#^mcp-proxy ready: \(http://[^ ]*\)$#\1#p' "$TMP/proxy.log" | head -n1)
    [[ -n $PROXY_URL ]] && break
    kill -0 "$PROXY_PID" 2>/dev/null || { cat "$TMP/proxy.log" >&2; die "mcp-proxy exited"; }
    sleep 0.1
done
[[ -n $PROXY_URL ]] || { cat "$TMP/proxy.log" >&2; die "mcp-proxy not ready after 30 s"; }
PROXY_CPUS=$(for t in /proc/"$PROXY_PID"/task/*; do
    echo "$(cat "$t/comm" 2>/dev/null)=$(awk '/^Cpus_allowed_list/{print $2}' "$t/status" 2>/dev/null)"
done | sort -u | tr '\n' ' ')
log "mcp-proxy: $PROXY_URL (threads: $PROXY_CPUS)"

# ---------------------------------------------------------------- sessions
HDRS=(-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream')

new_session() { # url -> prints session id
    local url=$1 sid code
    sid=$(curl -sS -D - -o "$TMP/init.body" -X POST "$url" "${HDRS[@]}" \
        -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}' |
        tr -d '\r' | awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}')
    [[ -n $sid ]] || { cat "$TMP/init.body" >&2; die "initialize at $url returned no Mcp-Session-Id"; }
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$url" "${HDRS[@]}" \
        -H "Mcp-Session-Id: $sid" -H 'MCP-Protocol-Version: 2025-06-18' \
        -d '{"jsonrpc":"2.0","method":"notifications/initialized"}')
    [[ $code == 202 ]] || die "notifications/initialized at $url answered $code, expected 202"
    echo "$sid"
}

check_echo() { # url session tool
    local out
    out=$(curl -sS -X POST "$1" "${HDRS[@]}" -H "Mcp-Session-Id: $2" -H 'MCP-Protocol-Version: 2025-06-18' \
        -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"$3\",\"arguments\":{\"message\":\"hi\"}}}")
    grep -q 'Echo: hi' <<<"$out" || { echo "$out" >&2; die "tools/call $3 at $1 did not answer \"Echo: hi\""; }
}

DIRECT_SID=$(new_session "$DIRECT_URL")
check_echo "$DIRECT_URL" "$DIRECT_SID" echo
PROXY_SID=$(new_session "$PROXY_URL")
check_echo "$PROXY_URL" "$PROXY_SID" everything__echo
log "sessions ok (direct $DIRECT_SID, proxy $PROXY_SID); curl tools/call answered \"Echo: hi\" on both"

declare -A URL=([direct]=$DIRECT_URL [proxy]=$PROXY_URL)
declare -A SID=([direct]=$DIRECT_SID [proxy]=$PROXY_SID)
declare -A TOOL=([direct]=echo [proxy]=everything__echo)

# ---------------------------------------------------------------- load
run_wrk() { # target conns duration -> prints the ECHO_BENCH line
    local t=$1 c=$2 d=$3 out="$TMP/wrk.$1.c$2.$RANDOM.log"
    SESSION_ID=${SID[$t]} TOOL=${TOOL[$t]} \
        taskset -c 1 wrk -t1 -c"$c" -d"$d" --timeout 5s -s "$LUA" "${URL[$t]}" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk failed against $t"; }
    grep '^ECHO_BENCH ' "$out" || { cat "$out" >&2; die "no ECHO_BENCH line from wrk against $t"; }
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

median() { sort -g | awk '{v[NR]=$1} END{if(NR==0){print "nan"} else if(NR%2){print v[(NR+1)/2]} else {printf "%.1f\n",(v[NR/2]+v[NR/2+1])/2}}'; }

SERIES=("$CONNS")
[[ $CONNS != 1 ]] && SERIES+=(1)
declare -A RES   # RES[target,conns,metric] = newline-separated per-round values
PROBLEMS=0

if [[ $WARMUP != 0 ]]; then
    for t in direct proxy; do
        log "warm-up $t ($WARMUP, ${SERIES[0]} conns, not reported)"
        run_wrk "$t" "${SERIES[0]}" "$WARMUP" >/dev/null
    done
fi

echo
echo "# rounds: DURATION=$DURATION ROUNDS=$ROUNDS, wrk -t1 on core 1, upstream on core 1, mcp-proxy --shards 1 (core 0)"
printf '%-6s %5s %5s %10s %8s %8s %8s %9s %7s %7s %s\n' target conns round rps p50_us p90_us p99_us requests non200 badbody errors
for c in "${SERIES[@]}"; do
    for ((r = 1; r <= ROUNDS; r++)); do
        for t in direct proxy; do
            line=$(run_wrk "$t" "$c" "$DURATION")
            errs=0
            for k in err_connect err_read err_write err_timeout err_status; do
                errs=$((errs + $(field "$k" "$line")))
            done
            n200=$(field non200 "$line"); bad=$(field badbody "$line")
            PROBLEMS=$((PROBLEMS + errs + n200 + bad))
            printf '%-6s %5s %5s %10s %8s %8s %8s %9s %7s %7s %s\n' "$t" "$c" "$r" \
                "$(field rps "$line")" "$(field p50_us "$line")" "$(field p90_us "$line")" \
                "$(field p99_us "$line")" "$(field requests "$line")" "$n200" "$bad" "$errs"
            for m in rps p50_us p99_us; do
                RES[$t,$c,$m]+="$(field "$m" "$line")"$'\n'
            done
        done
    done
done

# ---------------------------------------------------------------- summary
med() { printf '%s' "${RES[$1,$2,$3]}" | median; }
echo
echo "## echo via Streamable HTTP: direct vs. mcp-proxy (medians of $ROUNDS x $DURATION)"
echo
echo "| target | conns | rps (median) | p50 us | p99 us |"
echo "|---|---:|---:|---:|---:|"
for c in "${SERIES[@]}"; do
    for t in direct proxy; do
        echo "| $t | $c | $(med $t $c rps) | $(med $t $c p50_us) | $(med $t $c p99_us) |"
    done
done
echo
for c in "${SERIES[@]}"; do
    awk -v c="$c" -v dr="$(med direct "$c" rps)" -v pr="$(med proxy "$c" rps)" \
        -v d50="$(med direct "$c" p50_us)" -v p50="$(med proxy "$c" p50_us)" \
        -v d99="$(med direct "$c" p99_us)" -v p99="$(med proxy "$c" p99_us)" 'BEGIN{
        printf "- conns=%s: rps proxy/direct = %.3f; added latency p50 = %+d us, p99 = %+d us\n",
            c, (dr > 0 ? pr / dr : 0), p50 - d50, p99 - d99 }'
done

if ((PROBLEMS > 0)); then
    echo
    die "$PROBLEMS failed requests (non-200, answers without \"Echo: hi\", or socket errors) — see the rounds above"
fi
