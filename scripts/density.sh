#!/usr/bin/env bash
# The gateway's memory per idle connection next to the bare engine's: the `throng` gateway (one
# loop, one worker, embedded defaults, no auth) with connections that join no channel, one
# channel and three (the query `?channels=`, all connections the same channels), and the echo
# example (the bare engine) for reference, each a fresh process per measure, in alternating
# rounds (scripts/lib/bench.sh). Loopback only; bounded in time.
#
# Usage: scripts/density.sh
#   cargo build --release -p throng-gateway --bin throng -p throng --example echo -p throng-loadtest
# Settings (environment): BACKEND=epoll (or io_uring)  THRONG=target/release/throng
#   ECHO=target/release/examples/echo  LOAD=target/release/throng-load  ROUNDS=3  MEM_CONNS=15000
#   HOLD=3s  SHAPES="memory memory1 memory3"  and the rest of scripts/lib/bench.sh's.
# Prints one Markdown table: each server's rounds and median, and gateway/engine.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
THRONG=${THRONG:-$ROOT/target/release/throng}
ECHO=${ECHO:-$ROOT/target/release/examples/echo}
BACKEND=${BACKEND:-epoll}
SHAPES=${SHAPES:-"memory memory1 memory3"}
PORT=${PORT:-19501}
URL_PATH=ws
# shellcheck source=scripts/lib/bench.sh
source "$ROOT/scripts/lib/bench.sh"

bench_init density.sh "${LOAD:-$ROOT/target/release/throng-load}"
[[ -x $THRONG ]] || bench_die "$THRONG is not an executable (cargo build --release -p throng-gateway --bin throng)"
[[ -x $ECHO ]] || bench_die "$ECHO is not an executable (cargo build --release -p throng --example echo)"
bench_server gateway "$THRONG --listen 127.0.0.1:{port} --admin-listen 127.0.0.1:{admin} --loops 1 --workers 1 --backend $BACKEND --log-level warn"
bench_server engine "$ECHO 127.0.0.1:{port} --loops 1 --backend $BACKEND"
bench_run
bench_table "gateway/engine"
