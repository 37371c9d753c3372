#!/usr/bin/env bash
# Client CPU per echoed message with throng-load on each of its backends (--backend epoll and
# io_uring), against the same echo server: the example `echo` on one loop, on epoll, pinned to
# core 0; the client pinned to core 1. Rounds alternate the backends (epoll, io_uring, epoll, …)
# so that drift on a shared machine falls on both; the table gives each backend's medians.
#
# Usage: loadtest/backends.sh                     (about 40 s once built)
# Settings (environment):
#   BACKENDS_ROUNDS=3         rounds (each runs every backend once)
#   BACKENDS_CONNS=100  BACKENDS_SIZE=32  BACKENDS_INFLIGHT=1
#   BACKENDS_WARMUP=1s  BACKENDS_DURATION=5s
#   BACKENDS_PORT=19340       the echo server's port
#   BACKENDS_SERVER_CORE=0  BACKENDS_CLIENT_CORE=1
# Prints one Markdown table (and each round's figures to stderr).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${BACKENDS_ROUNDS:-3}
conns=${BACKENDS_CONNS:-100}
size=${BACKENDS_SIZE:-32}
inflight=${BACKENDS_INFLIGHT:-1}
warmup=${BACKENDS_WARMUP:-1s}
duration=${BACKENDS_DURATION:-5s}
port=${BACKENDS_PORT:-19340}
server_core=${BACKENDS_SERVER_CORE:-0}
client_core=${BACKENDS_CLIENT_CORE:-1}
backends=(epoll io_uring)

cargo build --release --example echo -p throng >&2
cargo build --release -p throng-loadtest >&2

taskset -c "$server_core" target/release/examples/echo "127.0.0.1:$port" --loops 1 --backend epoll >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

out=$(mktemp -d)
for round in $(seq "$rounds"); do
    for backend in "${backends[@]}"; do
        taskset -c "$client_core" target/release/throng-load echo "ws://127.0.0.1:$port/" \
            --conns "$conns" --size "$size" --inflight "$inflight" --warmup "$warmup" --duration "$duration" \
            --backend "$backend" --server-pid "$server" --json 2>/dev/null | tail -1 >"$out/$backend.$round.json"
        jq -r --arg round "$round" \
            '"round \($round) \(.backend): \(.msgs_per_s | floor) msg/s, client \(.cpu.client.us_per_op) µs/msg (\(.cpu.client.utilisation) cores), server \(.cpu.server.us_per_op) µs/msg, rtt p50 \(.rtt.p50_us) µs, p99 \(.rtt.p99_us) µs"' \
            "$out/$backend.$round.json" >&2
    done
done

# The median of the numbers on stdin (one per line).
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "| backend | client µs/msg | client cores | msg/s | server µs/msg | rtt p50 µs | rtt p99 µs |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for backend in "${backends[@]}"; do
    col() { for f in "$out/$backend".*.json; do jq -r "$1" "$f"; done | median; }
    printf '| %s | %.2f | %.2f | %.0f | %.2f | %.0f | %.0f |\n' "$backend" \
        "$(col .cpu.client.us_per_op)" "$(col .cpu.client.utilisation)" "$(col .msgs_per_s)" \
        "$(col .cpu.server.us_per_op)" "$(col .rtt.p50_us)" "$(col .rtt.p99_us)"
done
rm -r "$out"
