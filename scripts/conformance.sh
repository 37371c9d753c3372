#!/usr/bin/env bash
# Autobahn conformance of the server engine: runs wstest's fuzzingclient (cases 1–7, 9, 10)
# against the echo example with 1 loop and with 2 loops, on each backend, and fails unless every
# case is OK or INFORMATIONAL (NON-STRICT counts as a failure). Then the client: wstest's
# fuzzingserver (cases 1–7, 9, 10, 12, 13) against throng::client. Tables go to
# target/autobahn/summary-*.md; docs/conformance.md holds a committed copy.
#   CONFORMANCE_BACKENDS="epoll io_uring"  the backends to run the server on
#   CONFORMANCE_CLIENT=0  skip the client cases
#   CONFORMANCE_CLIENT_CASES="1.*,…,13.*"  the client cases to run
#   CONFORMANCE_WRITE_DOC=1  also rewrite docs/conformance.md from this run
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/autobahn.sh install
cargo build --release --example echo

out=target/autobahn
mkdir -p "$out"
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT

# Waits up to TRIES × 0.1 s for something to accept on 127.0.0.1:PORT, then carries on either way:
# a server that never came up shows in the run that follows.
wait_for_port() { # PORT TRIES
    for _ in $(seq 1 "$2"); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
}

status=0
backends=${CONFORMANCE_BACKENDS:-epoll io_uring}
port=9100
for backend in $backends; do
for loops in 1 2; do
    port=$((port + 1))
    run="$backend-$loops"
    ./target/release/examples/echo "127.0.0.1:$port" --loops "$loops" --backend "$backend" \
        >"$out/echo-$run.log" 2>&1 &
    server_pid=$!
    wait_for_port "$port" 50
    echo "==> Autobahn against the echo example on $backend, $loops loop(s)"
    if ! AUTOBAHN_SKIP_INSTALL=1 bash scripts/autobahn.sh server --url "ws://127.0.0.1:$port" \
        --agent "throng-$backend-$loops-loop" --out "$out/$run" --markdown "$out/summary-$run.md" \
        >"$out/wstest-$run.log" 2>&1; then
        status=1
    fi
    tail -n 20 "$out/wstest-$run.log"
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
done
done

# Client conformance: wstest's fuzzingserver (cases 1–7, 9, 10, and 12, 13: permessage-deflate)
# against examples/autobahn_client.rs (throng::client). The client offers permessage-deflate on
# every case; the fuzzingserver accepts it in 12.* and 13.* only, so the others run uncompressed.
# 12.* and 13.* send 1000 messages of up to 128 KiB per case through the Python fuzzingserver:
# about 17 and 12 minutes on a busy 2-core machine (the other sections take seconds), hence the
# longer cap. CONFORMANCE_CLIENT_CASES="1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*" leaves them out.
if [ "${CONFORMANCE_CLIENT:-1}" != "0" ]; then
    cargo build --release --example autobahn_client
    client_port=9110
    client_out="$out/client"
    client_cases=${CONFORMANCE_CLIENT_CASES:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*,12.*,13.*}
    rm -rf "$client_out/reports"
    AUTOBAHN_TIMEOUT=${AUTOBAHN_TIMEOUT:-7200} AUTOBAHN_SKIP_INSTALL=1 bash scripts/autobahn.sh client \
        --port "$client_port" --out "$client_out" --cases "$client_cases" \
        >"$out/fuzzingserver.log" 2>&1 &
    server_pid=$!
    wait_for_port "$client_port" 150
    echo "==> Autobahn client cases ($client_cases): throng::client against the fuzzingserver"
    if ! ./target/release/examples/autobahn_client --url "ws://127.0.0.1:$client_port" \
        --agent throng-client --deflate >"$out/autobahn-client.log" 2>&1; then
        echo "autobahn_client failed:"
        tail -n 20 "$out/autobahn-client.log"
        status=1
    fi
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    if ! python3 scripts/autobahn_check.py "$client_out/reports/index.json" --agent throng-client \
        --markdown "$out/summary-client.md"; then
        status=1
    fi
fi

if [ "${CONFORMANCE_WRITE_DOC:-0}" = "1" ]; then
    {
        echo "# Conformance"
        echo
        echo "Autobahn|Testsuite 0.8.2 fuzzingclient, cases 1.* to 7.*, 9.*, 10.*, \`failByDrop: false\`,"
        echo "against \`examples/echo.rs\` on each backend. Reproduce with \`bash scripts/conformance.sh\`"
        echo "(it installs python2.7 and wstest); CI runs it on every change and fails on anything"
        echo "but OK or INFORMATIONAL. NON-STRICT counts as a failure."
        echo
        echo "Run on $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -sr)."
        for backend in $backends; do
            for loops in 1 2; do
                echo
                echo "## $backend backend, $loops loop(s)"
                echo
                sed -n '/^|/p' "$out/summary-$backend-$loops.md"
            done
        done
        if [ -f "$out/summary-client.md" ]; then
            echo
            echo "## Client (\`throng::client\`, \`examples/autobahn_client.rs --deflate\`) against the fuzzingserver"
            echo
            echo "Cases 1.* to 7.*, 9.*, 10.*, and 12.*, 13.* (permessage-deflate, which the client offers"
            echo "on every case and the fuzzingserver accepts in 12.* and 13.* only)."
            echo
            sed -n '/^|/p' "$out/summary-client.md"
        fi
        echo
        echo "The INFORMATIONAL cases are 7.1.6 (a large message, then a close, then a ping: the"
        echo "suite notes what the server did), 7.13.1 and 7.13.2 (close codes 5000 and 65535,"
        echo "that the suite only reports). 12.* and 13.* (permessage-deflate) are run against the"
        echo "client only."
    } > docs/conformance.md
fi
exit "$status"
