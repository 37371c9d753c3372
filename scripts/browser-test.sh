#!/usr/bin/env bash
# Drives the gateway's demo page in headless Chromium (Debian's package, through playwright-core
# from npm): connect, receive published messages on the page, subscribe by command; once over
# plain HTTP/ws and once over TLS (https/wss, a certificate made here). Saves screenshots as
# target/browser/demo-plain.png and demo-tls.png. Installs chromium, node and openssl with
# apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
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

# Starts throng with "$@" on free ports, runs the page checks against it (over $scheme), stops it.
# Sets status to 1 when anything failed.
status=0
run() {
    local name=$1 scheme=$2
    shift 2
    local log=target/browser/throng-$name.log
    ./target/debug/throng --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 "$@" 2>"$log" &
    pid=$!
    trap 'kill "$pid" 2>/dev/null || true' EXIT

    local admin="" listen=""
    for _ in $(seq 1 100); do
        admin=$(sed -n 's/.*throng started.* admin=\([0-9.:]*\).*/\1/p' "$log" | head -n1)
        listen=$(sed -n 's/.*throng started.* listen=\([0-9.:]*\).*/\1/p' "$log" | head -n1)
        [ -n "$admin" ] && [ -n "$listen" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "throng exited" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$admin" ] || { cat "$log"; echo "throng did not start" >&2; exit 1; }

    echo "--- $name: $scheme://$listen"
    # The page comes from the client listener, as `throng` with no arguments serves it.
    timeout 120 node gateway/tests/browser/demo.mjs "$scheme://$listen" "$scheme://$admin" \
        "target/browser/demo-$name.png" || status=1

    kill -TERM "$pid"
    wait "$pid" || { echo "throng ($name) exited non-zero after SIGTERM" >&2; status=1; }
    trap - EXIT
}

# No config: the development defaults (demo on, no auth).
run plain http

# The same over TLS on both listeners: the page over https, its socket over wss (the page picks
# the scheme from location.protocol), its publishes to the admin API over https. The certificate
# (scripts/lib/test-cert.sh: a throwaway CA and a leaf it signed) is made here for localhost and
# 127.0.0.1. Trust, rather than --ignore-certificate-errors: Node (the backend publishes from
# demo.mjs) trusts the CA through NODE_EXTRA_CA_CERTS, and Chromium through
# --ignore-certificate-errors-spki-list with the leaf key's SPKI hash, which lets exactly this
# certificate through (a mix-up with any other certificate still fails the run).
# shellcheck source=scripts/lib/test-cert.sh
. scripts/lib/test-cert.sh
tls=target/browser/tls
test_cert "$tls"
# cert.pem starts with the leaf: x509 reads the first certificate of the file.
TRUST_SPKI=$(openssl x509 -in "$tls/cert.pem" -pubkey -noout | openssl pkey -pubin -outform der |
    openssl dgst -sha256 -binary | base64)
export TRUST_SPKI NODE_EXTRA_CA_CERTS="$tls/ca.pem"
run tls https --tls-cert "$tls/cert.pem" --tls-key "$tls/key.pem" \
    --admin-tls-cert "$tls/cert.pem" --admin-tls-key "$tls/key.pem"

exit "$status"
