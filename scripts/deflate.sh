#!/usr/bin/env bash
# permessage-deflate, measured: compression off, `shared` and `dedicated` side by side in
# alternating rounds (scripts/lib/bench.sh), with throng-load offering the extension
# (`--deflate`, no context takeover on its side). Loopback only; bounded in time.
#   1. the echo example (one loop): RSS per idle connection, server CPU per echoed message and
#      bytes on the wire per message for compressible JSON of 200 B and 2 KiB;
#   2. the `throng` gateway (one loop, one worker): server CPU per delivery of a publish to
#      FANOUT_SUBSCRIBERS subscribers, with publishes of about 200 B and 2 KiB (`--pad`);
#   3. context takeover (`--deflate-context`: the client lets the server keep its window):
#      CTX_CONNS connections echoing 2 KiB JSON, the server's RSS growth per connection while
#      they run (what `dedicated` windows cost), server CPU per message and the compression
#      ratio of what the server sent, for `shared` (which declines the context) and `dedicated`.
#
# Usage: scripts/deflate.sh
#   cargo build --release -p throng --example echo && cargo build --release -p throng-gateway \
#     --bin throng && cargo build --release -p throng-loadtest
# Settings (environment): BACKEND=epoll (or io_uring)  ROUNDS=3  MEM_CONNS=15000
#   FANOUT_SUBSCRIBERS=15000  CTX_CONNS=2000  PARTS="echo fanout context"  and the rest of scripts/lib/bench.sh's.
# Prints one Markdown table per part.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
THRONG=${THRONG:-$ROOT/target/release/throng}
ECHO=${ECHO:-$ROOT/target/release/examples/echo}
BACKEND=${BACKEND:-epoll}
PARTS=${PARTS:-"echo fanout context"}
export LOAD_ARGS="--deflate"
# shellcheck source=scripts/lib/bench.sh
source "$ROOT/scripts/lib/bench.sh"

for part in $PARTS; do
    case $part in
        echo)
            [[ -x $ECHO ]] || bench_die "$ECHO is not an executable (cargo build --release -p throng --example echo)"
            (
                SHAPES=${ECHO_SHAPES:-"memory json200 json2k wire200 wire2k"}
                bench_init deflate.sh "${LOAD:-$ROOT/target/release/throng-load}"
                for mode in off shared dedicated; do
                    bench_server "$mode" "$ECHO 127.0.0.1:{port} --loops 1 --backend $BACKEND --compression $mode"
                done
                bench_run
                bench_table "shared/off dedicated/off"
            ) ;;
        fanout)
            [[ -x $THRONG ]] || bench_die "$THRONG is not an executable (cargo build --release -p throng-gateway --bin throng)"
            for pad in 160 2000; do
                (
                    SHAPES=fanout FANOUT_PAD=$pad URL_PATH=ws PORT=$((${PORT:-19101} + 500))
                    bench_init deflate.sh "${LOAD:-$ROOT/target/release/throng-load}"
                    for mode in off shared dedicated; do
                        bench_server "gateway-$mode" "$THRONG --listen 127.0.0.1:{port} --admin-listen 127.0.0.1:{admin} \
--loops 1 --workers 1 --backend $BACKEND --log-level warn --compression $mode"
                    done
                    bench_run
                    bench_table "gateway-shared/gateway-off gateway-dedicated/gateway-off"
                )
            done ;;
        context)
            (
                bench_init deflate.sh "${LOAD:-$ROOT/target/release/throng-load}"
                conns=${CTX_CONNS:-2000}
                declare -A rows
                for round in $(seq "$ROUNDS"); do
                    for mode in shared dedicated; do
                        echo "== context, round $round: $mode" >&2
                        port=$((PORT + 700 + round))
                        taskset -c "$SERVER_CPU" "$ECHO" "127.0.0.1:$port" --loops 1 --backend "$BACKEND" \
                            --compression "$mode" >/dev/null 2>&1 &
                        pid=$!
                        for _ in $(seq 50); do ss -ltn | grep -q ":$port " && break; sleep 0.1; done
                        before=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
                        out=$(mktemp)
                        taskset -c "$CLIENT_CPU" timeout --kill-after=5 120 "$LOAD" echo "ws://127.0.0.1:$port" \
                            --deflate-context --conns "$conns" --size 2048 --payload json --inflight 1 \
                            --sources "$SOURCES" --warmup 1s --duration 4s --server-pid "$pid" --json \
                            >"$out" 2>/dev/null &
                        load=$!
                        # Mid-run: every connection has sent and received by now.
                        sleep 4
                        during=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
                        wait "$load" || true
                        kill "$pid" 2>/dev/null || true
                        wait "$pid" 2>/dev/null || true
                        json=$(tail -n 1 "$out")
                        rm -f "$out"
                        rows[$mode]+=" $(((during - before) * 1024 / conns))/$(jq -r '"\(.cpu.server.us_per_op)/\(.traffic.ratio_received)"' <<<"$json")"
                    done
                done
                echo "# deflate.sh context: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, kernel $(uname -r), ROUNDS=$ROUNDS, $conns connections echoing 2 KiB JSON, --deflate-context"
                echo
                echo "| echo --compression | rounds: RSS growth per connection B / server CPU µs per msg / server's compression ratio | median RSS B per connection |"
                echo "| --- | --- | ---: |"
                for mode in shared dedicated; do
                    echo "| $mode |${rows[$mode]} | $(tr ' ' '\n' <<<"${rows[$mode]}" | sed -n 's|/.*||p' | bench_median) |"
                done
            ) ;;
        *) bench_die "unknown part $part (PARTS=\"echo fanout context\")" ;;
    esac
done
