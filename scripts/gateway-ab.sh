#!/usr/bin/env bash
# Two builds of the `throng` gateway side by side, in alternating rounds on the same machine
# (scripts/lib/bench.sh): memory per idle connection with no channel, one and three channels,
# server CPU per subscribe/unsubscribe command, and server CPU per fan-out delivery. Each
# gateway runs one loop and one worker (`--loops 1 --workers 1`, no client message rate limit),
# pinned to SERVER_CPU, a fresh process for every measure. Loopback only; bounded in time.
#
# Usage: scripts/gateway-ab.sh BEFORE_THRONG AFTER_THRONG
#   e.g. git worktree add --detach /tmp/before COMMIT && (cd /tmp/before && cargo build --release
#        --bin throng) && cargo build --release --bin throng -p throng-loadtest &&
#        scripts/gateway-ab.sh /tmp/before/target/release/throng target/release/throng
# Settings (environment): BACKEND=epoll  SHAPES="memory memory1 memory3 churn fanout"  ROUNDS=3
#   and the rest of scripts/lib/bench.sh's (CHURN_*, FANOUT_*, MEM_CONNS, ...).
# Prints one Markdown table: each build's rounds and median, and after/before.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BACKEND=${BACKEND:-epoll}
SHAPES=${SHAPES:-"memory memory1 memory3 churn fanout"}
PORT=${PORT:-19601}
URL_PATH=ws
# shellcheck source=scripts/lib/bench.sh
source "$ROOT/scripts/lib/bench.sh"

[[ $# -eq 2 ]] || bench_die "usage: gateway-ab.sh BEFORE_THRONG AFTER_THRONG"
bench_init gateway-ab.sh "${LOAD:-$ROOT/target/release/throng-load}"
for bin in "$1" "$2"; do
    [[ -x $bin ]] || bench_die "$bin is not an executable"
done
[[ -x $CHURN ]] || bench_die "$CHURN is not an executable (cargo build --release -p throng-loadtest)"
args="--listen 127.0.0.1:{port} --admin-listen 127.0.0.1:{admin} --loops 1 --workers 1 --backend $BACKEND --log-level warn --client-message-rate 0"
bench_server before "$1 $args"
bench_server after "$2 $args"
bench_run
bench_table "after/before"
