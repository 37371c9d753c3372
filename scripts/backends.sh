#!/usr/bin/env bash
# throng's two I/O backends side by side, and any other echo server the user names: the echo
# example with `--backend epoll` and with `--backend io_uring` (one loop each), in alternating
# rounds on the same machine, the server pinned to SERVER_CPU and throng-load to CLIENT_CPU:
#   - RSS of a fresh server and of its io_uring ring mappings (no connection);
#   - RSS per idle connection at MEM_CONNS connections;
#   - server CPU per echoed message: 32 B × 100 conns × 1 in flight, 512 B × 1000 conns × 4 in
#     flight, 64 KiB × 10 conns × 4 in flight; and per connect–upgrade–close cycle.
# Loopback only; every run is bounded in time. The rounds, cells and table: scripts/lib/bench.sh.
#
# Usage: scripts/backends.sh [NAME=CMD ...]
#   Each NAME=CMD is one more server (any WebSocket echo server on ws://127.0.0.1:{port}/, one
#   program, {port} where its port goes), also given as EXTRA='NAME=CMD'; e.g.
#     cargo build --release -p throng --example echo && cargo build --release -p throng-loadtest
#     EXTRA='other=/path/to/other-echo {port}' ROUNDS=3 scripts/backends.sh
# Settings (environment): ECHO=target/release/examples/echo  LOAD=target/release/throng-load
#   ROUNDS=3  MEM_CONNS=15000  HOLD=3s  DURATION=6s  WARMUP=1s  STORM_PARALLEL=16
#   INFLIGHT_32=1  INFLIGHT_512=4  INFLIGHT_64K=4  SHAPES="fresh ring memory 32 512 64k storm"
#   SOURCES=127.0.0.2-127.0.0.40  PORT=19301  SERVER_CPU=0  CLIENT_CPU=1  MAX_SECONDS=1800
#   PERF="record -e cpu-clock -g" (or "stat -e EVENTS")  PERF_SECONDS=4  PERF_DIR=target/perf:
#   a perf of the server during each throng-load run, one file per server, shape and round
# Prints one Markdown table: each server's rounds and median, io_uring/epoll and epoll/NAME.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ECHO=${ECHO:-$ROOT/target/release/examples/echo}
INFLIGHT_32=${INFLIGHT_32:-1}
INFLIGHT_512=${INFLIGHT_512:-4}
SHAPES=${SHAPES:-"fresh ring memory 32 512 64k storm"}
PORT=${PORT:-19301}
# shellcheck source=scripts/lib/bench.sh
source "$ROOT/scripts/lib/bench.sh"

bench_init backends.sh "${LOAD:-$ROOT/target/release/throng-load}"
[[ -x $ECHO ]] || bench_die "$ECHO is not an executable (cargo build --release -p throng --example echo)"
bench_server epoll "$ECHO 127.0.0.1:{port} --loops 1 --backend epoll"
bench_server io_uring "$ECHO 127.0.0.1:{port} --loops 1 --backend io_uring"
ratios="io_uring/epoll"
extras=("$@")
[[ -n ${EXTRA:-} ]] && extras+=("$EXTRA")
for extra in "${extras[@]}"; do
    [[ $extra == ?*=?* ]] || bench_die "expected NAME=CMD, got: $extra"
    name=${extra%%=*}
    [[ $name =~ ^[A-Za-z0-9_.-]+$ && $name != epoll && $name != io_uring ]] ||
        bench_die "a server's name is letters, digits, _ . - and not epoll or io_uring: $name"
    bench_server "$name" "${extra#*=}"
    ratios+=" epoll/$name"
done
bench_run
bench_table "$ratios"
