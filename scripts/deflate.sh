#!/usr/bin/env bash
# permessage-deflate, measured: compression off, `shared` and `dedicated` side by side in
# alternating rounds (scripts/lib/bench.sh), with throng-load offering the extension
# (`--deflate`, no context takeover on its side). Loopback only; bounded in time.
#   1. the echo example (one loop): RSS per idle connection, server CPU per echoed message and
#      bytes on the wire per message for compressible JSON of 200 B and 2 KiB;
#   2. the `throng` gateway (one loop, one worker): server CPU per delivery of a publish to
#      FANOUT_SUBSCRIBERS subscribers, with publishes of about 200 B and 2 KiB (`--pad`).
#
# Usage: scripts/deflate.sh
#   cargo build --release -p throng --example echo && cargo build --release -p throng-gateway \
#     --bin throng && cargo build --release -p throng-loadtest
# Settings (environment): BACKEND=epoll (or io_uring)  ROUNDS=3  MEM_CONNS=15000
#   FANOUT_SUBSCRIBERS=15000  PARTS="echo fanout"  and the rest of scripts/lib/bench.sh's.
# Prints one Markdown table per part.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
THRONG=${THRONG:-$ROOT/target/release/throng}
ECHO=${ECHO:-$ROOT/target/release/examples/echo}
BACKEND=${BACKEND:-epoll}
PARTS=${PARTS:-"echo fanout"}
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
        *) bench_die "unknown part $part (PARTS=\"echo fanout\")" ;;
    esac
done
