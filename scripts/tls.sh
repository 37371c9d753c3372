#!/usr/bin/env bash
# TLS, measured: plain ws:// against wss:// (the engine's own rustls termination) on the echo
# example (one loop), side by side in alternating rounds (scripts/lib/bench.sh). Loopback only;
# bounded in time. The certificate is made at run time (scripts/lib/tls-cert.sh: a CA and an
# ECDSA P-256 leaf for localhost signed by it) under target/tls-bench/, never committed.
#   1. handshakes: `throng-load storm` for DURATION: server CPU per connect–upgrade–close cycle
#      and cycles per second, for plain, TLS with every handshake full (`--tls-resume off`) and
#      TLS resuming the sessions the server hands out (`--tls-resume on`; the share of
#      handshakes actually resumed, from throng-load's counters, is a row of the table, and the
#      script fails when it is under MIN_RESUMED);
#   2. echo and idle memory, plain against TLS: RSS growth per idle connection (MEM_CONNS
#      connections, every handshake full: distinct clients) and server CPU per echoed message,
#      32 B × 100 connections and 64 KiB binary × 10 connections (closed loop).
#
# Usage: scripts/tls.sh   (about 5 minutes with the defaults once built)
#   cargo build --release -p throng --example echo && cargo build --release -p throng-loadtest
# Settings (environment): BACKEND=epoll (or io_uring)  ROUNDS=3  MEM_CONNS=15000  DURATION=6s
#   STORM_PARALLEL=8  PARTS="storm echo"  ECHO_SHAPES="memory 32 64k"  MIN_RESUMED=0.9  and the rest of
#   scripts/lib/bench.sh's. MEM_CONNS is bounded by the open files of each process (the server
#   and throng-load each hold one socket per connection).
# Prints one Markdown table per part.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ECHO=${ECHO:-$ROOT/target/release/examples/echo}
BACKEND=${BACKEND:-epoll}
PARTS=${PARTS:-"storm echo"}
MIN_RESUMED=${MIN_RESUMED:-0.9}
TLS_DIR=${TLS_DIR:-$ROOT/target/tls-bench}
# 8, not bench.sh's 16: rustls' client keeps at most 8 TLS 1.3 tickets per server name (the
# server sends 2 a handshake, each good for one resumption), so with more connections set up at
# once some find none left and make a full handshake (about 1 in 6 at 16 here).
STORM_PARALLEL=${STORM_PARALLEL:-8}
# shellcheck source=scripts/lib/bench.sh
source "$ROOT/scripts/lib/bench.sh"
# shellcheck source=scripts/lib/tls-cert.sh
source "$ROOT/scripts/lib/tls-cert.sh"

[[ -x $ECHO ]] || bench_die "$ECHO is not an executable (cargo build --release -p throng --example echo)"
tls_cert "$TLS_DIR" || exit 1
PLAIN="$ECHO 127.0.0.1:{port} --loops 1 --backend $BACKEND"
TLS="$PLAIN --tls-cert $TLS_DIR/cert.pem --tls-key $TLS_DIR/key.pem"
CA="--ca-file $TLS_DIR/ca.pem"

status=0
for part in $PARTS; do
    case $part in
        storm)
            (
                SHAPES=storm
                bench_init tls.sh "${LOAD:-$ROOT/target/release/throng-load}"
                bench_server plain "$PLAIN"
                bench_server tls-full "$TLS" "$CA --tls-resume off"
                bench_server tls-resumed "$TLS" "$CA --tls-resume on"
                bench_run
                bench_table "tls-full/plain tls-resumed/plain tls-resumed/tls-full"
                resumed=$(bench_median_of storm_resumed tls-resumed)
                full=$(bench_median_of storm_resumed tls-full)
                echo
                echo "Resumed: $resumed of the tls-resumed runs' handshakes, $full of the tls-full runs'."
                awk -v r="$resumed" -v f="$full" -v min="$MIN_RESUMED" \
                    'BEGIN {exit !(r ~ /^[0-9.]+$/ && r >= min && f == 0)}' || {
                    echo "tls.sh: tls-resumed resumed $resumed of its handshakes (MIN_RESUMED=$MIN_RESUMED)," \
                        "tls-full $full (0 expected): its row is not the cost of a resumption" >&2
                    exit 1
                }
            ) || status=1 ;;
        echo)
            (
                SHAPES=${ECHO_SHAPES:-"memory 32 64k"}
                bench_init tls.sh "${LOAD:-$ROOT/target/release/throng-load}"
                bench_server plain "$PLAIN"
                bench_server tls "$TLS" "$CA --tls-resume off"
                bench_run
                bench_table "tls/plain"
            ) || status=1 ;;
        *) bench_die "unknown part $part (PARTS=\"storm echo\")" ;;
    esac
done
exit "$status"
