#!/usr/bin/env bash
# Before/after comparison of two builds of the echo example, in alternating rounds on the same
# machine (runs vary by ±15 % here, so one run of each proves nothing; compare medians):
#   (a) RSS per idle connection (MEM_CONNS connections, the memory step of scripts/measure.sh);
#   (b) server CPU per echoed message on measure.sh's three echo shapes.
# The server runs pinned to SERVER_CPU with one loop, the client (throng-load) to CLIENT_CPU.
# Loopback only; every run is bounded in time. The rounds, cells and table: scripts/lib/bench.sh.
#
# Usage: scripts/ab.sh BEFORE_ECHO AFTER_ECHO [THRONG_LOAD]
#   e.g. git worktree add /tmp/before <commit> && (cd /tmp/before && cargo build --release
#        -p throng --example echo) && scripts/ab.sh /tmp/before/target/release/examples/echo
#        target/release/examples/echo
# Settings (environment): ROUNDS=3  MEM_CONNS=15000  HOLD=3s  DURATION=6s  WARMUP=1s
#   INFLIGHT_32=16  INFLIGHT_512=1  INFLIGHT_64K=4  ARGS="--loops 1" (given to both builds)
#   SOURCES=127.0.0.2-127.0.0.40  PORT=19101  SERVER_CPU=0  CLIENT_CPU=1  MAX_SECONDS=1800
#   SHAPES="memory 32 512 64k"  which measures, in this order (also: fresh ring storm)
# Prints one Markdown table: each build's rounds and median, and after/before.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BEFORE=${1:?usage: scripts/ab.sh BEFORE_ECHO AFTER_ECHO [THRONG_LOAD]}
AFTER=${2:?usage: scripts/ab.sh BEFORE_ECHO AFTER_ECHO [THRONG_LOAD]}
ARGS=${ARGS:-"--loops 1"}
# shellcheck source=scripts/lib/bench.sh
source "$ROOT/scripts/lib/bench.sh"

bench_init ab.sh "${3:-$ROOT/target/release/throng-load}"
for bin in "$BEFORE" "$AFTER"; do
    [[ -x $bin ]] || bench_die "$bin is not an executable"
done
bench_server before "$BEFORE 127.0.0.1:{port} $ARGS"
bench_server after "$AFTER 127.0.0.1:{port} $ARGS"
bench_run
bench_table after/before
