#!/usr/bin/env bash
# Before/after comparison of two builds of the echo example, in alternating rounds on the same
# machine (runs vary by ±15 % here, so one run of each proves nothing; compare medians):
#   (a) RSS per idle connection (MEM_CONNS connections, the memory step of scripts/measure.sh);
#   (b) server CPU per echoed message on measure.sh's three echo shapes.
# The server runs pinned to SERVER_CPU with one loop, the client (throng-load) to CLIENT_CPU.
# Loopback only; every run is bounded in time.
#
# Usage: scripts/ab.sh BEFORE_ECHO AFTER_ECHO [THRONG_LOAD]
#   e.g. git worktree add /tmp/before <commit> && (cd /tmp/before && cargo build --release
#        -p throng --example echo) && scripts/ab.sh /tmp/before/target/release/examples/echo
#        target/release/examples/echo
# Settings (environment): ROUNDS=3  MEM_CONNS=15000  HOLD=3s  DURATION=6s  WARMUP=1s
#   SOURCES=127.0.0.2-127.0.0.40  PORT=19101  SERVER_CPU=0  CLIENT_CPU=1
#   SHAPES="memory 32 512 64k"  which measures, in this order
# Prints one Markdown table per measure: rounds and the median for each build.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BEFORE=${1:?usage: scripts/ab.sh BEFORE_ECHO AFTER_ECHO [THRONG_LOAD]}
AFTER=${2:?usage: scripts/ab.sh BEFORE_ECHO AFTER_ECHO [THRONG_LOAD]}
LOAD=${3:-$ROOT/target/release/throng-load}
ROUNDS=${ROUNDS:-3}
MEM_CONNS=${MEM_CONNS:-15000}
HOLD=${HOLD:-3s}
DURATION=${DURATION:-6s}
WARMUP=${WARMUP:-1s}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.40}
PORT=${PORT:-19101}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SHAPES=${SHAPES:-"memory 32 512 64k"}

for tool in jq taskset timeout; do
    command -v "$tool" >/dev/null || { echo "ab.sh: needs $tool" >&2; exit 2; }
done
for bin in "$BEFORE" "$AFTER" "$LOAD"; do
    [[ -x $bin ]] || { echo "ab.sh: $bin is not an executable" >&2; exit 2; }
done

SERVER_PID=""
cleanup() { [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

# start BIN: the echo server on a fresh port, pinned; sets SERVER_PID and URL.
start() {
    PORT=$((PORT + 1))
    taskset -c "$SERVER_CPU" "$1" "127.0.0.1:$PORT" --loops 1 >/dev/null 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && { URL="ws://127.0.0.1:$PORT/"; return; }
        sleep 0.05
    done
    echo "ab.sh: $1 did not start" >&2
    exit 1
}

stop() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""; }

# load ARGS...: one throng-load run against the running server; prints its JSON report.
load() {
    taskset -c "$CLIENT_CPU" timeout --kill-after=5 120 "$LOAD" "$@" --server-pid "$SERVER_PID" --json \
        2>/dev/null | tail -n 1
}

measure() { # measure WHAT BIN -> one number
    local what=$1 bin=$2
    start "$bin"
    case $what in
        memory) load connect "$URL" --conns "$MEM_CONNS" --sources "$SOURCES" --hold "$HOLD" |
            jq -r '.server.rss_bytes_per_conn | floor' ;;
        32) load echo "$URL" --conns 100 --size 32 --inflight 16 --warmup "$WARMUP" --duration "$DURATION" |
            jq -r '"\(.cpu.server.us_per_op)/\(.cpu.client.us_per_op)"' ;;
        512) load echo "$URL" --conns 1000 --size 512 --inflight 1 --sources 127.0.0.2-127.0.0.10 \
            --warmup "$WARMUP" --duration "$DURATION" | jq -r '"\(.cpu.server.us_per_op)/\(.cpu.client.us_per_op)"' ;;
        64k) load echo "$URL" --conns 10 --size 65536 --inflight 4 --binary --warmup "$WARMUP" \
            --duration "$DURATION" | jq -r '"\(.cpu.server.us_per_op)/\(.cpu.client.us_per_op)"' ;;
    esac
    stop
}

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

echo "# before/after: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, kernel $(uname -r)"
echo
echo "- before: $BEFORE"
echo "- after: $AFTER"
echo
echo "| measure | before, rounds | median | after, rounds | median |"
echo "| --- | --- | ---: | --- | ---: |"
# Cells: the server's figure, and for the echo shapes "/" the client's CPU per message in the same
# run. The client is the same binary in every run: when its figure moves with the server's, the
# difference is the kernel's loopback TCP path (it charges either side), not the server's code.
for what in $SHAPES; do
    b="" a=""
    for _ in $(seq "$ROUNDS"); do
        b="$b $(measure "$what" "$BEFORE")"
        a="$a $(measure "$what" "$AFTER")"
    done
    case $what in
        memory) name="RSS per idle connection ($MEM_CONNS conns), B" ;;
        32) name="server/client CPU µs per msg, 32 B × 100 conns, 16 in flight" ;;
        512) name="server/client CPU µs per msg, 512 B × 1000 conns, 1 in flight" ;;
        64k) name="server/client CPU µs per msg, 64 KiB × 10 conns, 4 in flight" ;;
    esac
    server() { tr ' ' '\n' | sed '/^$/d; s|/.*||' | median; }
    ratio() { tr ' ' '\n' | sed '/^$/d' | awk -F/ '{printf "%.3f\n", $1 / $2}' | median; }
    if [[ $what == memory ]]; then
        echo "| $name | ${b# } | $(echo "$b" | server) | ${a# } | $(echo "$a" | server) |"
    else
        echo "| $name | ${b# } | $(echo "$b" | server) (server/client $(echo "$b" | ratio)) | ${a# } | $(echo "$a" | server) (server/client $(echo "$a" | ratio)) |"
    fi
done
