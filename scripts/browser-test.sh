#!/usr/bin/env bash
# Drives the gateway's demo page in headless Chromium (Debian's package, through playwright-core
# from npm): connect, receive published messages on the page, subscribe by command. Saves a
# screenshot as target/browser/demo.png. Installs chromium and node with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -d gateway/tests/browser/node_modules/playwright-core ]; then
    (cd gateway/tests/browser && npm install --no-audit --no-fund --loglevel=error)
fi

cargo build --quiet --bin throng
mkdir -p target/browser
log=target/browser/throng.log
# No config: the development defaults (demo on, no auth), on free ports.
./target/debug/throng --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT

admin=""
listen=""
for _ in $(seq 1 100); do
    admin=$(sed -n 's/.*throng started.* admin=\([0-9.:]*\).*/\1/p' "$log" | head -n1)
    listen=$(sed -n 's/.*throng started.* listen=\([0-9.:]*\).*/\1/p' "$log" | head -n1)
    [ -n "$admin" ] && [ -n "$listen" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "throng exited" >&2; exit 1; }
    sleep 0.1
done
[ -n "$admin" ] || { cat "$log"; echo "throng did not start" >&2; exit 1; }

status=0
# The page comes from the client listener, as `throng` with no arguments serves it.
timeout 120 node gateway/tests/browser/demo.mjs "http://$listen" "http://$admin" target/browser/demo.png || status=$?

kill -TERM "$pid"
wait "$pid" || { echo "throng exited non-zero after SIGTERM" >&2; status=1; }
trap - EXIT
exit "$status"
