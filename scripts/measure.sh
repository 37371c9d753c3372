#!/usr/bin/env bash
# The engine's measurements, reproducible by one command:
#   (a) memory per idle WebSocket connection (MEM_CONNS open and idle, server RSS/PSS from /proc);
#   (b) echo throughput and latency (32 B x 100 conns, 512 B x 1000 conns, 64 KiB x 10 conns) and
#       connect-upgrade-close cycles per second, with the server's CPU time per message/cycle;
#   (c) the gateway's fan-out: FANOUT_SUBSCRIBERS subscribers of one channel, messages published
#       through its admin API (the `throng` binary, default configuration, not pinned).
# Each runs against throng's echo example (one loop) and a tokio-tungstenite echo server
# (current_thread runtime), the server pinned to SERVER_CPU, the client (throng-load) to CLIENT_CPU.
# Loopback only. Results: target/measure/results.md (and the raw logs and JSON next to it).
#
# Usage: scripts/measure.sh        (about 3-4 minutes once built)
# Settings (environment):
#   SERVERS="throng tokio"   which servers to measure
#   MEM_CONNS=15000  HOLD=5s                        memory test
#   WARMUP=1s  ECHO_DURATION=10s                    each echo test
#   INFLIGHT_32=16  INFLIGHT_512=1  INFLIGHT_64K=4  messages in flight per connection
#   STORM_DURATION=10s  STORM_PARALLEL=16           handshake test
#   FANOUT_SUBSCRIBERS=15000 (0 skips (c))  FANOUT_RATE=1/s  FANOUT_DURATION=10s
#   SOURCES=127.0.0.2-127.0.0.40  PORT=19001  SERVER_CPU=0  CLIENT_CPU=1
#   MAX_SECONDS=900   the script stops itself after this long measuring (the build is not counted)
#   SKIP_BUILD=1      use the binaries already built
#   BACKEND=auto      the backend of throng's echo example and gateway: auto, epoll or io_uring
#   OUT=target/measure  where the results go
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SERVERS=${SERVERS:-"throng tokio"}
MEM_CONNS=${MEM_CONNS:-15000}
HOLD=${HOLD:-5s}
WARMUP=${WARMUP:-1s}
ECHO_DURATION=${ECHO_DURATION:-10s}
INFLIGHT_32=${INFLIGHT_32:-16}
INFLIGHT_512=${INFLIGHT_512:-1}
INFLIGHT_64K=${INFLIGHT_64K:-4}
STORM_DURATION=${STORM_DURATION:-10s}
STORM_PARALLEL=${STORM_PARALLEL:-16}
FANOUT_SUBSCRIBERS=${FANOUT_SUBSCRIBERS:-15000}
FANOUT_RATE=${FANOUT_RATE:-1/s}
FANOUT_DURATION=${FANOUT_DURATION:-10s}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.40}
PORT=${PORT:-19001}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
MAX_SECONDS=${MAX_SECONDS:-900}
OUT=${OUT:-target/measure}
BACKEND=${BACKEND:-auto}
LOAD=$ROOT/target/release/throng-load
ECHO_BIN=$ROOT/target/release/examples/echo
TOKIO_BIN=$ROOT/target/peers/release/tokio-echo
GATEWAY_BIN=$ROOT/target/release/throng

for tool in jq taskset timeout ss; do
    command -v "$tool" >/dev/null || { echo "measure.sh: needs $tool" >&2; exit 2; }
done

SERVER_PID=""
WATCHDOG_PID=""
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n $WATCHDOG_PID ]]; then
        pkill -P "$WATCHDOG_PID" 2>/dev/null || true # its sleep: the watchdog then ends quietly
        kill "$WATCHDOG_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'echo "measure.sh: interrupted" >&2; exit 130' INT TERM

log() { echo "== $*" >&2; }

if [[ -z ${SKIP_BUILD:-} ]]; then
    log "building (release): echo example, throng-load, tokio-echo peer"
    cargo build --release --quiet -p throng --example echo
    cargo build --release --quiet -p throng-loadtest
    (cd loadtest/peers/tokio-echo && cargo build --release --quiet --target-dir "$ROOT/target/peers")
    if [[ $FANOUT_SUBSCRIBERS -gt 0 ]]; then
        cargo build --release --quiet -p throng-gateway --bin throng
    fi
fi
# The clock starts after the build: a cold release build on a loaded box can take minutes on its
# own, and cargo ends by itself; MAX_SECONDS bounds the measuring.
(
    sleep "$MAX_SECONDS" &
    s=$!
    trap 'kill $s 2>/dev/null; exit 0' TERM
    wait $s
    echo "measure.sh: over ${MAX_SECONDS}s of measuring, stopping" >&2
    kill -TERM $$
) &
WATCHDOG_PID=$!
rm -rf "$OUT"
mkdir -p "$OUT"

# Starts server $1 on port $2, pinned; sets SERVER_PID; waits until it listens.
start_server() {
    local name=$1 port=$2
    local -a cmd
    case $name in
        throng) cmd=("$ECHO_BIN" "127.0.0.1:$port" --loops 1 --backend "$BACKEND") ;;
        tokio) cmd=("$TOKIO_BIN" "127.0.0.1:$port" --threads 1) ;;
        # The gateway with its default configuration (one loop per core), on all cores.
        gateway) cmd=(taskset -c "0-$(($(nproc) - 1))" "$GATEWAY_BIN" --listen "127.0.0.1:$port"
            --admin-listen "127.0.0.1:$((port + 1000))" --log-level warn --backend "$BACKEND") ;;
        *) echo "measure.sh: unknown server $name" >&2; exit 2 ;;
    esac
    taskset -c "$SERVER_CPU" "${cmd[@]}" >>"$OUT/$name.server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if [[ -n $(ss -Hltn "sport = :$port") ]]; then
            sleep 0.2 # let it settle before "before" readings
            return
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "measure.sh: $name did not start on port $port (see $OUT/$name.server.log)" >&2
    exit 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# run_load NAME TEST ARGS...: one throng-load run on the client core; its JSON goes to NAME.TEST.json.
run_load() {
    local name=$1 test=$2
    shift 2
    local log="$OUT/$name.$test.log"
    log "$name: $test"
    if ! taskset -c "$CLIENT_CPU" timeout --kill-after=5 300 "$LOAD" "$@" --server-pid "$SERVER_PID" --json \
        >"$log" 2>&1; then
        echo "   (throng-load reported failed checks or an error: see $log)" >&2
    fi
    sed '$!d' "$log" | jq -c . >"$OUT/$name.$test.json" 2>/dev/null || echo '{}' >"$OUT/$name.$test.json"
    grep -v '^{' "$log" | sed 's/^/   /' >&2 || true
}

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
port=$PORT
for name in $SERVERS; do
    url="ws://127.0.0.1:$port/"
    start_server "$name" "$port"
    run_load "$name" memory connect "$url" --conns "$MEM_CONNS" --sources "$SOURCES" --hold "$HOLD"
    cp "/proc/$SERVER_PID/smaps" "$OUT/$name.memory.smaps" 2>/dev/null || true
    stop_server

    start_server "$name" "$port"
    run_load "$name" echo32 echo "$url" --conns 100 --size 32 --inflight "$INFLIGHT_32" \
        --warmup "$WARMUP" --duration "$ECHO_DURATION"
    run_load "$name" echo512 echo "$url" --conns 1000 --size 512 --inflight "$INFLIGHT_512" \
        --warmup "$WARMUP" --duration "$ECHO_DURATION"
    run_load "$name" echo64k echo "$url" --conns 10 --size 65536 --inflight "$INFLIGHT_64K" --binary \
        --warmup "$WARMUP" --duration "$ECHO_DURATION"
    run_load "$name" storm storm "$url" --parallel "$STORM_PARALLEL" --duration "$STORM_DURATION" \
        --sources "$SOURCES"
    stop_server
    port=$((port + 1)) # a fresh port: no TIME_WAIT left over from the previous server
done
if [[ $FANOUT_SUBSCRIBERS -gt 0 ]]; then
    start_server gateway "$port"
    run_load gateway fanout fanout "ws://127.0.0.1:$port/ws" --subscribers "$FANOUT_SUBSCRIBERS" \
        --channel measure --publish "http://127.0.0.1:$((port + 1000))/v1/publish" --rate "$FANOUT_RATE" \
        --duration "$FANOUT_DURATION" --sources "$SOURCES"
    stop_server
fi
LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)

label() { case $1 in throng) echo "throng (echo example, 1 loop)" ;; tokio) echo "tokio-tungstenite 0.30 (current_thread)" ;; esac; }
ok() { jq -r 'if .ok == true then "ok" elif .ok == false then "FAILED" else "no result" end' "$1"; }

RESULTS=$OUT/results.md
{
    echo "# throng measurements"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), kernel $(uname -r)"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "- load average at start / end: $LOADAVG_START / $LOADAVG_END (other processes compete for the 2 cores: see 'other cores')"
    echo "- server pinned to core $SERVER_CPU, client (throng-load, one thread) to core $CLIENT_CPU; loopback"
    echo "- throng backend: $BACKEND (\`BACKEND=\`); the echo example's start line says which ran: $(grep -ho 'on [a-z_]*$' "$OUT/throng.server.log" 2>/dev/null | tail -1)"
    echo
    echo "## (a) Memory: $MEM_CONNS idle connections (held $HOLD)"
    echo
    echo "| server | established | server RSS before → after | RSS / conn | PSS / conn | kernel TCP mem / conn | kernel slab / conn | pings answered | clean closes | checks |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for name in $SERVERS; do
        f=$OUT/$name.memory.json
        jq -r --arg lbl "$(label "$name")" --arg ok "$(ok "$f")" '
            def kib: if . == null then "?" else "\(. / 1024 * 10 | round / 10) MiB" end;
            def b: if . == null then "?" else "\(. | round | if . == 0 then 0 else . end) B" end;
            "| \($lbl) | \(.dial.established // "?")/\(.conns // "?") | \(.server.before.rss_kib | kib) → \(.server.after.rss_kib | kib) | \(.server.rss_bytes_per_conn | b) | \(.server.pss_bytes_per_conn | b) | \(.kernel_tcp_bytes_per_conn | b) | \(.kernel_slab_bytes_per_conn | b) | \(.pongs_received // "?")/\(.pings_sent // "?") | \(.close.clean // "?") | \($ok) |"
        ' "$f"
    done
    echo
    echo "Largest resident growth by mapping (from /proc/PID/smaps):"
    echo
    for name in $SERVERS; do
        jq -r --arg name "$name" '(.server.top_growth // [])[:3][] | "- \($name): \(.mapping) +\(.growth_kib) KiB (\(.rss_before_kib) → \(.rss_after_kib) KiB of \(.size_kib) KiB mapped)"' "$OUT/$name.memory.json"
    done
    echo
    echo "## (b) Echo: server one core, client one core ($ECHO_DURATION measured after $WARMUP warm-up)"
    echo
    echo "| server | workload | msg/s | MiB/s | RTT p50 | p90 | p99 | p99.9 | max | server CPU / msg | server cores | client cores | other cores | checks |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for test in echo32 echo512 echo64k; do
        for name in $SERVERS; do
            f=$OUT/$name.$test.json
            jq -r --arg lbl "$(label "$name")" --arg ok "$(ok "$f")" '
                def us: if . == null then "?" elif . < 1000 then "\(. | round) µs" else "\(. / 100 | round / 10) ms" end;
                def r1: if . == null then "?" else "\(. * 10 | round / 10)" end;
                def r2: if . == null then "?" else "\(. * 100 | round / 100)" end;
                "| \($lbl) | \(.size // "?") B × \(.conns // "?") conns, \(.inflight // "?") in flight, \(if .binary then "binary" else "text" end) | \(.msgs_per_s | if . == null then "?" else round end) | \(.mib_per_s | r1) | \(.rtt.p50_us | us) | \(.rtt.p90_us | us) | \(.rtt.p99_us | us) | \(.rtt.p999_us | us) | \(.rtt.max_us | us) | \(.cpu.server.us_per_op | r2) µs | \(.cpu.server.utilisation | r2) | \(.cpu.client.utilisation | r2) | \(.cpu.other_cores | r2) | \($ok) |"
            ' "$f"
        done
    done
    echo
    echo "## (b) Handshakes: connect – upgrade – close cycles, $STORM_PARALLEL in parallel for $STORM_DURATION"
    echo
    echo "| server | cycles/s | handshake p50 | p99 | cycle p99 | server CPU / cycle | server cores | client cores | other cores | failures | checks |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for name in $SERVERS; do
        f=$OUT/$name.storm.json
        jq -r --arg lbl "$(label "$name")" --arg ok "$(ok "$f")" '
            def us: if . == null then "?" elif . < 1000 then "\(. | round) µs" else "\(. / 100 | round / 10) ms" end;
            def r2: if . == null then "?" else "\(. * 100 | round / 100)" end;
            "| \($lbl) | \(.cycles_per_s | if . == null then "?" else round end) | \(.handshake.p50_us | us) | \(.handshake.p99_us | us) | \(.cycle.p99_us | us) | \(.cpu.server.us_per_op | r2) µs | \(.cpu.server.utilisation | r2) | \(.cpu.client.utilisation | r2) | \(.cpu.other_cores | r2) | \(.failed // {} | tojson) | \($ok) |"
        ' "$f"
    done
    if [[ $FANOUT_SUBSCRIBERS -gt 0 ]]; then
        echo
        echo "## (c) Gateway fan-out: $FANOUT_SUBSCRIBERS subscribers, $FANOUT_RATE for $FANOUT_DURATION through the admin API"
        echo
        echo "| subscribed | published | delivery ratio | worst client | latency p50 | p99 | max | to last delivery p50 | max | server CPU / delivery | client CPU / delivery | other cores | checks |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        f=$OUT/gateway.fanout.json
        jq -r --arg ok "$(ok "$f")" '
            def us: if . == null then "?" elif . < 1000 then "\(. | round) µs" else "\(. / 100 | round / 10) ms" end;
            def r2: if . == null then "?" else "\(. * 100 | round / 100)" end;
            "| \(.dial.established // "?")/\(.subscribers // "?") | \(.published // "?") | \(.delivery_ratio // "?") | \(.min_client_ratio // "?") | \(.latency.p50_us | us) | \(.latency.p99_us | us) | \(.latency.max_us | us) | \(.time_to_last_delivery.p50_us | us) | \(.time_to_last_delivery.max_us | us) | \(.cpu.server.us_per_op | r2) µs | \(.cpu.client.us_per_op | r2) µs | \(.cpu.other_cores | r2) | \($ok) |"
        ' "$f"
    fi
    echo
    echo "Notes: RSS/PSS per connection = (after − before) / connections open, server process only."
    echo "Kernel TCP mem (/proc/net/sockstat \`TCP mem\`, socket buffers) and kernel slab (/proc/meminfo"
    echo "\`Slab\`: socket, file, epoll structures) are system-wide: they cover both ends of every loopback"
    echo "connection, and other processes add noise. CPU per message = server utime+stime over the window /"
    echo "echoes received in it. 'other cores' = machine busy time not used by client or server: when it"
    echo "is high, rates and tail latencies are pessimistic; CPU per message is the steadier figure."
    echo "Raw output: $OUT/*.log, $OUT/*.json."
} >"$RESULTS"

cat "$RESULTS"
