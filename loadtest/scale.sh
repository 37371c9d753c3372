#!/usr/bin/env bash
# Scale test on one machine: SCALE_CONNS WebSocket connections held across SCALE_NODES gateway
# processes that share one client port (SO_REUSEPORT) and one redis-server, all subscribed to one
# channel; messages are published through ONE node's admin API and must reach every connection on
# every node through Redis.
#
# Measures: delivery ratio (must be exactly 1, else exit 1), publish-to-delivery latency
# (p50/p99/max) and time to last delivery, connections per node (from each node's /v1/stats),
# total RSS of the gateway processes and bytes per connection, kernel socket memory
# (/proc/net/sockstat TCP mem pages x page size, Slab from /proc/meminfo) before and while all
# connections are held, CPU of the gateways (while holding: per delivery; and over the whole run),
# the client (throng-load and its shards) and redis-server.
# Prints one Markdown table and writes it to target/scale/results.md (raw logs, samples and JSON
# next to it).
#
# Usage: loadtest/scale.sh                         (well under a minute once built)
#        SCALE_CONNS=10000 SCALE_NODES=2 loadtest/scale.sh
# Settings (environment):
#   SCALE_CONNS=150000        connections (all subscribers of one channel)
#   SCALE_NODES=10            gateway processes (--loops 1 each) sharing SCALE_PORT
#   SCALE_PROCS=ceil(CONNS/15000)   throng-load processes (--procs)
#   SCALE_RATE=1/s  SCALE_DURATION=10s  SCALE_DRAIN=60s   publishing, and the wait for the last deliveries
#   SCALE_PAD=0               extra bytes per message
#   SCALE_CHANNEL=scale
#   SCALE_SOURCES=127.0.0.2-127.0.0.40   client source addresses (~28k ports each per destination)
#   SCALE_PORT=19500          client port (all nodes); admin ports SCALE_ADMIN_PORT.. (+1 per node)
#   SCALE_ADMIN_PORT=19600    first admin port; SCALE_REDIS_PORT=16400 (first free port from there)
#   SCALE_WORKERS=1           worker threads per node
#   SCALE_PING_INTERVAL=0     gateway pings (0 = off: no ping round in the middle of the window)
#   SCALE_CONNECT_TIMEOUT=30s SCALE_CONCURRENCY=1000   per throng-load process
#   SCALE_SAMPLE=1            seconds between samples of the nodes' /v1/stats (the /proc readings:
#                             every 0.2 s)
#   SCALE_MAX_SECONDS=900     the script stops itself (and everything it started) after this long
#   SCALE_OUT=target/scale    output directory
#   SKIP_BUILD=1              use the binaries already in target/release
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CONNS=${SCALE_CONNS:-150000}
NODES=${SCALE_NODES:-10}
PROCS=${SCALE_PROCS:-$(((CONNS + 14999) / 15000))}
RATE=${SCALE_RATE:-1/s}
DURATION=${SCALE_DURATION:-10s}
DRAIN=${SCALE_DRAIN:-60s}
PAD=${SCALE_PAD:-0}
CHANNEL=${SCALE_CHANNEL:-scale}
SOURCES=${SCALE_SOURCES:-127.0.0.2-127.0.0.40}
PORT_BASE=${SCALE_PORT:-19500}
ADMIN_BASE=${SCALE_ADMIN_PORT:-19600}
REDIS_BASE=${SCALE_REDIS_PORT:-16400}
WORKERS=${SCALE_WORKERS:-1}
PING_INTERVAL=${SCALE_PING_INTERVAL:-0}
CONNECT_TIMEOUT=${SCALE_CONNECT_TIMEOUT:-30s}
CONCURRENCY=${SCALE_CONCURRENCY:-1000}
SAMPLE=${SCALE_SAMPLE:-1}
MAX_SECONDS=${SCALE_MAX_SECONDS:-900}
OUT=${SCALE_OUT:-target/scale}
GATEWAY=$ROOT/target/release/throng
LOAD=$ROOT/target/release/throng-load

log() { echo "== scale: $*" >&2; }
die() {
    echo "scale.sh: $*" >&2
    exit 1
}

for tool in jq curl ss timeout setsid awk getconf; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
[[ $NODES -ge 1 && $CONNS -ge 1 && $PROCS -ge 1 ]] || die "SCALE_NODES, SCALE_CONNS, SCALE_PROCS must be >= 1"

# Seconds in a duration written like throng-load's: 500ms, 30s, 2m, bare number = seconds.
secs() {
    case $1 in
        *ms) echo $(((${1%ms} + 999) / 1000)) ;;
        *s) echo "${1%s}" ;;
        *m) echo $((${1%m} * 60)) ;;
        *h) echo $((${1%h} * 3600)) ;;
        *) echo "$1" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Everything started is recorded by PID and stopped by PID on exit, whatever the reason.
GATEWAY_PIDS=()
REDIS_PID=""
LOAD_PID=""
SAMPLER_PID=""
STATS_SAMPLER_PID=""
WATCHDOG_PID=""
BUILD_PID=""

stop_pid() { # stop_pid PID [GRACE_SECONDS]: TERM, then KILL after the grace period
    local pid=$1 grace=${2:-5} i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop_group() { # stop_group PGID: the build runs in its own process group (cargo leaves rustc behind otherwise)
    [[ -n $1 ]] || return 0
    kill -TERM -- "-$1" 2>/dev/null || true
    stop_pid "$1" 5
    kill -KILL -- "-$1" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$SAMPLER_PID" 2
    stop_pid "$STATS_SAMPLER_PID" 4
    stop_pid "$LOAD_PID" 10 # `timeout` passes the TERM on; throng-load's shards stop when its pipes close
    stop_group "$BUILD_PID"
    local pid
    for pid in "${GATEWAY_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${GATEWAY_PIDS[@]}"; do stop_pid "$pid" 5; done
    stop_pid "$REDIS_PID" 5
    stop_pid "$WATCHDOG_PID" 1
    exit "$rc"
}
trap cleanup EXIT
exec 3>&2 # the original stderr, for messages from traps while stderr is redirected
trap 'echo "scale.sh: interrupted" >&3; exit 130' INT TERM

# The watchdog: TERM to this script after MAX_SECONDS. Long steps run in the background and are
# waited for (`wait` returns at a signal), so the trap runs at once and stops everything.
(
    sleep "$MAX_SECONDS" &
    sleeper=$!
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    wait "$sleeper"
    echo "scale.sh: over ${MAX_SECONDS}s, stopping" >&3
    kill -TERM $$
) &
WATCHDOG_PID=$!

# run_bg VAR CMD...: runs CMD in the background, its PID in VAR, and waits for it; returns its status.
run_bg() {
    local var=$1
    shift
    "$@" &
    printf -v "$var" '%s' $!
    local rc=0
    wait "${!var}" || rc=$?
    printf -v "$var" '%s' ""
    return "$rc"
}

# ---------------------------------------------------------------------------------------------
# Limits: each connection is a file descriptor in one gateway process; SO_REUSEPORT hashes
# connections over the listeners, so a node gets about CONNS/NODES, a few percent more or less.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
SHARE=$(((CONNS + NODES - 1) / NODES))
if [[ $NOFILE != unlimited ]] && ((SHARE + SHARE / 10 + 200 > NOFILE)); then
    die "$CONNS connections over $NODES nodes is ~$SHARE per node, too close to the open-files limit" \
        "($NOFILE per process); raise SCALE_NODES to at least $(((CONNS * 11 / 10 + NOFILE - 201) / (NOFILE - 200)))"
fi

if ! command -v redis-server >/dev/null; then
    log "installing redis-server (apt-get)"
    SUDO=()
    [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get install -y -q redis-server >/dev/null 2>&1 ||
        { "${SUDO[@]}" apt-get update -q >/dev/null && "${SUDO[@]}" apt-get install -y -q redis-server >/dev/null; }
    command -v redis-server >/dev/null || die "could not install redis-server"
fi

if [[ -z ${SKIP_BUILD:-} ]]; then
    log "building (release): throng, throng-load"
    run_bg BUILD_PID setsid cargo build --release --quiet --bin throng -p throng
    run_bg BUILD_PID setsid cargo build --release --quiet -p throng-loadtest
fi
[[ -x $GATEWAY && -x $LOAD ]] || die "missing $GATEWAY or $LOAD (build them, or unset SKIP_BUILD)"

rm -rf "$OUT"
mkdir -p "$OUT"

listening() { [[ -n $(ss -Hltn "sport = :$1") ]]; }
free_port() { # first port from $1 nobody listens on
    local p=$1
    while listening "$p"; do p=$((p + 1)); done
    echo "$p"
}
wait_listening() { # wait_listening PORT PID WHAT
    local i
    for ((i = 0; i < 200; i++)); do
        listening "$1" && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    die "$3 did not listen on port $1 (see $OUT)"
}

PORT=$(free_port "$PORT_BASE")
ADMIN_PORTS=()
next=$ADMIN_BASE
for ((i = 0; i < NODES; i++)); do
    p=$(free_port "$next")
    [[ $p -ne $PORT ]] || p=$(free_port $((p + 1)))
    ADMIN_PORTS+=("$p")
    next=$((p + 1))
done
REDIS_PORT=$(free_port "$REDIS_BASE")

# ---------------------------------------------------------------------------------------------
log "redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --protected-mode yes --loglevel warning >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
wait_listening "$REDIS_PORT" "$REDIS_PID" redis-server

log "$NODES gateway processes on 127.0.0.1:$PORT (SO_REUSEPORT), admin ${ADMIN_PORTS[0]}..${ADMIN_PORTS[-1]}"
for ((i = 0; i < NODES; i++)); do
    "$GATEWAY" --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:${ADMIN_PORTS[i]}" \
        --loops 1 --workers "$WORKERS" --broker "redis://127.0.0.1:$REDIS_PORT" \
        --max-connections 1000000 --max-connections-per-ip 0 --handshake-timeout 60s \
        --ping-interval "$PING_INTERVAL" --drain-timeout 2s --demo false --log-level warn \
        >"$OUT/node$i.log" 2>&1 &
    GATEWAY_PIDS+=($!)
done
for ((i = 0; i < NODES; i++)); do
    wait_listening "${ADMIN_PORTS[i]}" "${GATEWAY_PIDS[i]}" "node $i"
done
# Ready = /readyz 200, which needs the node's broker connected.
for ((i = 0; i < NODES; i++)); do
    for ((t = 0; ; t++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:${ADMIN_PORTS[i]}/readyz" || true)
        [[ $code == 200 ]] && break
        kill -0 "${GATEWAY_PIDS[i]}" 2>/dev/null || die "node $i exited (see $OUT/node$i.log)"
        ((t < 300)) || die "node $i not ready after 30 s (/readyz $code)"
        sleep 0.1
    done
done
PIDS_CSV=$(
    IFS=,
    echo "${GATEWAY_PIDS[*]}"
)
log "all $NODES nodes ready (pids $PIDS_CSV)"

# ---------------------------------------------------------------------------------------------
# Readings from /proc, without forking (the samplers run every 0.2 s beside the load): each
# reader sets R_* variables.
PAGE=$(getconf PAGESIZE)
TICKS=$(getconf CLK_TCK)
read_rss() { # R_RSS: sum of the resident set sizes (kB) of the given PIDs (/proc/PID/statm)
    R_RSS=0
    local pid size resident _
    for pid in "$@"; do
        read -r size resident _ 2>/dev/null <"/proc/$pid/statm" || continue
        R_RSS=$((R_RSS + resident * PAGE / 1024))
    done
}
read_cpu() { # R_USER, R_SYS: sums of utime and stime (clock ticks) of the given PIDs
    R_USER=0 R_SYS=0
    local pid line f
    for pid in "$@"; do
        read -r line 2>/dev/null <"/proc/$pid/stat" || continue
        line=${line##*) } # the fields after the command name, from field 3 (state)
        read -r -a f <<<"$line"
        R_USER=$((R_USER + f[11]))
        R_SYS=$((R_SYS + f[12]))
    done
}
read_kernel() { # R_INUSE, R_TCPMEM (pages): /proc/net/sockstat; R_SLAB (kB): /proc/meminfo
    local -a a
    local i key val _
    R_INUSE=0 R_TCPMEM=0 R_SLAB=0
    while read -r -a a; do
        [[ ${a[0]} == TCP: ]] || continue
        for ((i = 1; i + 1 < ${#a[@]}; i += 2)); do
            case ${a[i]} in
                inuse) R_INUSE=${a[i + 1]} ;;
                mem) R_TCPMEM=${a[i + 1]} ;;
            esac
        done
    done </proc/net/sockstat
    while read -r key val _; do
        if [[ $key == Slab: ]]; then
            R_SLAB=$val
            break
        fi
    done </proc/meminfo
}
CLIENT_PIDS=()
find_client() { # CLIENT_PIDS: throng-load (under `timeout`) and its shards
    local -a stack=("$1") kids
    local pid f
    CLIENT_PIDS=()
    while ((${#stack[@]})); do
        pid=${stack[-1]}
        unset 'stack[-1]'
        CLIENT_PIDS+=("$pid")
        for f in /proc/"$pid"/task/*/children; do
            kids=()
            read -r -a kids 2>/dev/null <"$f" || true
            if ((${#kids[@]})); then stack+=("${kids[@]}"); fi
        done
    done
    return 0
}
now_s() { R_NOW=${EPOCHREALTIME/,/.}; }

# Sampler stops on TERM, with its sleep.
sampler_trap() { trap 'kill "$SLEEPER" 2>/dev/null; exit 0' TERM; }
nap() {
    sleep "$1" &
    SLEEPER=$!
    wait "$SLEEPER" || true
}

# Fast sampler (every 0.2 s, /proc only): when the connections are all open (the kernel's count of
# TCP sockets), and the memory and gateway CPU at each instant.
fast_sampler() {
    local top=""
    sampler_trap
    echo -e "t\ttcp_inuse\ttcp_mem_pages\tslab_kb\tgateway_rss_kb\tgateway_user_ticks\tgateway_sys_ticks\tredis_rss_kb\tclient_rss_kb"
    while :; do
        now_s
        read_kernel
        read_rss "${GATEWAY_PIDS[@]}"
        local gw_rss=$R_RSS
        read_cpu "${GATEWAY_PIDS[@]}"
        read_rss "$REDIS_PID"
        local redis_rss=$R_RSS client_rss=0
        [[ -n $top || ! -s $OUT/load.pid ]] || read -r top <"$OUT/load.pid"
        if [[ -n $top ]]; then
            ((${#CLIENT_PIDS[@]} >= PROCS + 2)) || find_client "$top"
            read_rss "${CLIENT_PIDS[@]}"
            client_rss=$R_RSS
        fi
        echo -e "$R_NOW\t$R_INUSE\t$R_TCPMEM\t$R_SLAB\t$gw_rss\t$R_USER\t$R_SYS\t$redis_rss\t$client_rss"
        nap 0.2
    done
}

# Stats sampler (every SAMPLE s): each node's /v1/stats, all at once.
stats_sampler() {
    local i body open total out
    local -a per
    sampler_trap
    echo -e "t\topen_total\tmessages_out_total\topen_per_node"
    mkdir -p "$OUT/stats"
    while :; do
        now_s
        local t=$R_NOW
        for ((i = 0; i < NODES; i++)); do
            curl -s -m 3 -o "$OUT/stats/$i.json" "http://127.0.0.1:${ADMIN_PORTS[i]}/v1/stats" 2>/dev/null &
        done
        wait
        total=0 out=0 per=()
        for ((i = 0; i < NODES; i++)); do
            body=$(<"$OUT/stats/$i.json") || body=""
            open=0
            [[ $body =~ \"connections_open\":([0-9]+) ]] && open=${BASH_REMATCH[1]}
            [[ $body =~ \"messages_out\":([0-9]+) ]] && out=$((out + BASH_REMATCH[1]))
            per+=("$open")
            total=$((total + open))
            : >"$OUT/stats/$i.json"
        done
        echo -e "$t\t$total\t$out\t$(
            IFS=,
            echo "${per[*]}"
        )"
        nap "$SAMPLE"
    done
}

# "Before": nodes ready, nothing connected.
sleep 0.5
read_rss "${GATEWAY_PIDS[@]}"
RSS0=$R_RSS
read_rss "$REDIS_PID"
REDIS_RSS0=$R_RSS
read_kernel
TCPMEM0=$R_TCPMEM TCPINUSE0=$R_INUSE SLAB0=$R_SLAB
read_cpu "${GATEWAY_PIDS[@]}"
GW_U0=$R_USER GW_S0=$R_SYS
read_cpu "$REDIS_PID"
R_T0=$((R_USER + R_SYS))
LOADAVG0=$(cut -d' ' -f1 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
URL="ws://127.0.0.1:$PORT/ws"
PUBLISH="http://127.0.0.1:${ADMIN_PORTS[0]}/v1/publish"
LOAD_TIMEOUT=$(($(secs "$DURATION") + $(secs "$DRAIN") + $(secs "$CONNECT_TIMEOUT") + 180))
LOAD_ARGS=(fanout "$URL" --subscribers "$CONNS" --procs "$PROCS" --sources "$SOURCES"
    --channel "$CHANNEL" --publish "$PUBLISH" --rate "$RATE" --duration "$DURATION" --pad "$PAD"
    --drain-timeout "$DRAIN" --connect-timeout "$CONNECT_TIMEOUT" --concurrency "$CONCURRENCY"
    --timeout "${LOAD_TIMEOUT}s" --server-pid "$PIDS_CSV" --json)
COMMAND="SCALE_CONNS=$CONNS SCALE_NODES=$NODES SCALE_RATE=$RATE SCALE_DURATION=$DURATION loadtest/scale.sh"
LOAD_COMMAND="throng-load ${LOAD_ARGS[*]}"
echo "$LOAD_COMMAND" >"$OUT/command.txt"
log "$LOAD_COMMAND"

fast_sampler >"$OUT/samples.tsv" 2>"$OUT/samples.err" &
SAMPLER_PID=$!
stats_sampler >"$OUT/node-samples.tsv" 2>"$OUT/node-samples.err" &
STATS_SAMPLER_PID=$!

# throng-load under `timeout` (a second bound); its CPU, with its waited-for shards, from bash's `time`.
LOAD_RC=0
now_s
START=$R_NOW
{
    TIMEFORMAT='%U %S %R'
    time {
        timeout --kill-after=10 $((LOAD_TIMEOUT + 30)) "$LOAD" "${LOAD_ARGS[@]}" >"$OUT/load.out" 2>"$OUT/load.err" &
        LOAD_PID=$!
        # The samplers are subshells started earlier: they read the PID from this file.
        echo "$LOAD_PID" >"$OUT/load.pid"
        wait "$LOAD_PID" || LOAD_RC=$?
        LOAD_PID=""
    }
} 2>"$OUT/load.time"
now_s
END=$R_NOW
read_cpu "${GATEWAY_PIDS[@]}"
GW_U1=$R_USER GW_S1=$R_SYS
read_cpu "$REDIS_PID"
R_T1=$((R_USER + R_SYS))
LOADAVG1=$(cut -d' ' -f1 /proc/loadavg)
sleep 0.5
stop_pid "$SAMPLER_PID" 2
SAMPLER_PID=""
stop_pid "$STATS_SAMPLER_PID" 4
STATS_SAMPLER_PID=""
log "throng-load exited with status $LOAD_RC"
grep -v '^\[' "$OUT/load.err" | sed 's/^/   /' >&2 || true
grep -v '^{' "$OUT/load.out" | sed 's/^/   /' >&2 || true

JSON=$OUT/load.json
tail -n 1 "$OUT/load.out" | jq -c . >"$JSON" 2>/dev/null || echo '{}' >"$JSON"
[[ $(jq -r '.mode // empty' "$JSON") == fanout ]] || die "throng-load gave no report (status $LOAD_RC; see $OUT/load.err)"
for ((i = 0; i < NODES; i++)); do
    curl -s -m 5 "http://127.0.0.1:${ADMIN_PORTS[i]}/v1/stats" >"$OUT/node$i.stats.json" || echo '{}' >"$OUT/node$i.stats.json"
done

# ---------------------------------------------------------------------------------------------
# Figures.
j() { jq -r "$1" "$JSON"; }
ms() { awk -v us="$1" 'BEGIN { if (us == "" || us == "null") print "-"; else if (us >= 1e6) printf "%.2f s", us / 1e6; else printf "%.1f ms", us / 1000 }'; }
mib() { awk -v kb="$1" 'BEGIN { printf "%.1f MiB", kb / 1024 }'; }
fmt() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
cores() { awk -v t="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.2f", t / s; else print "-" }'; }

ESTABLISHED=$(j '.dial.established')
PUBLISHED=$(j '.published')
DELIVERIES=$(j '.deliveries')
EXPECTED=$(j '.expected')
RATIO=$(j '.delivery_ratio')
OK=$(j '.ok')

# "Holding": the fast samples in which the kernel counted (nearly) all 2 × CONNS sockets of the
# test (both ends; at most 0.1 % missing, other processes' sockets make up the rest): from the last
# connection set up to the first one closed. Publishing and delivery happen inside it (throng-load
# publishes once every subscriber is in, and closes once every delivery is in).
TOL=$((CONNS / 1000 + 1))
THRESH=$((2 * CONNS - 2 * TOL))
# One line: first_t last_t samples max_rss max_slab max_tcpmem max_inuse max_redis_rss max_client_rss
#           user_ticks sys_ticks (gateways, first to last holding sample), run_max_tcpmem
read -r H_T0 H_T1 H_N MAX_RSS MAX_SLAB MAX_TCPMEM PEAK_INUSE MAX_REDIS_RSS MAX_CLIENT_RSS H_U H_S RUN_MAX_TCPMEM < <(
    awk -F'\t' -v th="$THRESH" '
        NR > 1 && $3 > runmax { runmax = $3 }
        NR > 1 && $2 >= th {
            if (!n) { t0 = $1; u0 = $6; s0 = $7 }
            n++; t1 = $1; u1 = $6; s1 = $7
            if ($5 > rss) rss = $5; if ($4 > slab) slab = $4; if ($3 > mem) mem = $3
            if ($2 > inuse) inuse = $2; if ($8 > redis) redis = $8; if ($9 > client) client = $9
        }
        END { printf "%s %s %d %d %d %d %d %d %d %d %d %d\n", (n ? t0 : 0), (n ? t1 : 0), n, rss, slab, mem, inuse, redis, client, u1 - u0, s1 - s0, runmax }
    ' "$OUT/samples.tsv"
)
HOLD_S=$(awk -v a="$H_T0" -v b="$H_T1" 'BEGIN { printf "%.1f", b - a }')
if ((H_N == 0)); then
    echo "scale.sh: no sample saw all $CONNS connections open (threshold $THRESH TCP sockets); memory figures are the run's maxima" >&2
    read -r MAX_RSS MAX_SLAB MAX_TCPMEM PEAK_INUSE MAX_REDIS_RSS MAX_CLIENT_RSS < <(awk -F'\t' '
        NR > 1 { if ($5 > a) a = $5; if ($4 > b) b = $4; if ($3 > c) c = $3; if ($2 > d) d = $2; if ($8 > e) e = $8; if ($9 > f) f = $9 }
        END { printf "%d %d %d %d %d %d\n", a, b, c, d, e, f }' "$OUT/samples.tsv")
fi
PER_CONN_RSS=$(awk -v a="$MAX_RSS" -v b="$RSS0" -v n="$CONNS" 'BEGIN { printf "%d", (a - b) * 1024 / n }')
PER_CONN_SLAB=$(awk -v a="$MAX_SLAB" -v b="$SLAB0" -v n="$CONNS" 'BEGIN { printf "%d", (a - b) * 1024 / n }')
# Gateway CPU while holding: publishing and delivery only (no handshakes, no closes).
H_CPU=$(awk -v u="$H_U" -v s="$H_S" -v t="$TICKS" 'BEGIN { printf "%.2f", (u + s) / t }')
H_US=$(awk -v c="$H_CPU" -v d="$DELIVERIES" 'BEGIN { if (d > 0) printf "%.1f", c * 1e6 / d; else print "-" }')
H_SYS_PCT=$(awk -v u="$H_U" -v s="$H_S" 'BEGIN { if (u + s > 0) printf "%.0f", 100 * s / (u + s); else print 0 }')

# Distribution: connections each node accepted (handshakes_ok: exact), and each node's own count of
# open connections in the last stats sample taken while holding.
HS=()
HS_SUM=0
B_RECEIVED=()
for ((i = 0; i < NODES; i++)); do
    h=$(jq -r '.handshakes_ok // 0' "$OUT/node$i.stats.json")
    HS+=("$h")
    HS_SUM=$((HS_SUM + h))
    B_RECEIVED+=("$(jq -r '.broker_stats.received // 0' "$OUT/node$i.stats.json")")
done
HS_MIN=$(printf '%s\n' "${HS[@]}" | sort -n | head -1)
HS_MAX=$(printf '%s\n' "${HS[@]}" | sort -n | tail -1)
read -r HELD_SUM HELD_PER_NODE < <(awk -F'\t' -v a="$H_T0" -v b="$H_T1" '
    NR > 1 && $1 >= a && $1 <= b { l = $2 " " $4 } NR > 1 && $2 > m { m = $2; best = $2 " " $4 }
    END { print (l != "" ? l : best " (max)") }' "$OUT/node-samples.tsv")
B_SENT0=$(jq -r '.broker_stats.sent // 0' "$OUT/node0.stats.json")
B_RECV_OTHERS=$(printf '%s\n' "${B_RECEIVED[@]:1}" | sort -n | uniq | paste -sd/)
SLOW=0 ACCEPT_ERRORS=0
for ((i = 0; i < NODES; i++)); do
    ACCEPT_ERRORS=$((ACCEPT_ERRORS + $(jq -r '(.accept_errors // 0) + (.rejected_over_limit // 0) + (.handshakes_failed // 0)' "$OUT/node$i.stats.json")))
    SLOW=$((SLOW + $(jq -r '(.slow_consumer_closes // 0) + (.slow_consumer_drops // 0) + (.broker_stats.dropped_queue_full // 0) + (.broker_stats.dropped_send_failed // 0)' "$OUT/node$i.stats.json")))
done

WALL=$(awk -v a="$START" -v b="$END" 'BEGIN { printf "%.1f", b - a }')
read -r CLIENT_U CLIENT_S _ <"$OUT/load.time" || true
CLIENT_CPU_ALL=$(awk -v u="${CLIENT_U:-0}" -v s="${CLIENT_S:-0}" 'BEGIN { printf "%.1f", u + s }')
CLIENT_SYS_PCT=$(awk -v u="${CLIENT_U:-0}" -v s="${CLIENT_S:-0}" 'BEGIN { if (u + s > 0) printf "%.0f", 100 * s / (u + s); else print 0 }')
GW_CPU_ALL=$(awk -v u="$((GW_U1 - GW_U0))" -v s="$((GW_S1 - GW_S0))" -v t="$TICKS" 'BEGIN { printf "%.1f", (u + s) / t }')
GW_SYS_PCT=$(awk -v u="$((GW_U1 - GW_U0))" -v s="$((GW_S1 - GW_S0))" 'BEGIN { if (u + s > 0) printf "%.0f", 100 * s / (u + s); else print 0 }')
REDIS_CPU_ALL=$(awk -v t="$((R_T1 - R_T0))" -v k="$TICKS" 'BEGIN { printf "%.2f", t / k }')

CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM_GIB=$(awk '/^MemTotal:/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
MACHINE="$(nproc) × ${CPU_MODEL:-unknown CPU}, Linux $(uname -r), ${MEM_GIB} GiB RAM, open files $NOFILE per process"
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
REDIS_VERSION=$(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')

if [[ $OK == true && $RATIO == 1 && $ESTABLISHED == "$CONNS" && $DELIVERIES == "$EXPECTED" && $PUBLISHED -gt 0 ]]; then
    VERDICT="PASS"
else
    VERDICT="FAIL"
fi

{
    echo "| scale test | $VERDICT |"
    echo "|---|---|"
    echo "| date | $DATE |"
    echo "| machine | $MACHINE; 1-min load average $LOADAVG0 before, $LOADAVG1 after |"
    echo "| command | \`$COMMAND\` |"
    echo "| setup | $NODES × \`throng --loops 1 --workers $WORKERS\` on 127.0.0.1:$PORT (SO_REUSEPORT), redis-server $REDIS_VERSION, throng-load \`--procs $PROCS\` from $SOURCES |"
    echo "| connections | $(fmt "$ESTABLISHED") / $(fmt "$CONNS") established ($(fmt "$(j '.dial.handshakes_per_s | floor')")/s, handshake p99 $(ms "$(j '.dial.handshake_latency.p99_us')")); all held at once for ${HOLD_S} s ($(fmt "${PEAK_INUSE:-0}") TCP sockets in use, both ends) |"
    echo "| per node | accepted (handshakes_ok) min $(fmt "$HS_MIN"), max $(fmt "$HS_MAX"), sum $(fmt "$HS_SUM"): ${HS[*]}; open while holding, by the nodes' /v1/stats: ${HELD_PER_NODE//,/ } (sum $(fmt "${HELD_SUM:-0}")); accept errors (EMFILE…), refusals and failed handshakes: $ACCEPT_ERRORS |"
    echo "| messages | $PUBLISHED published at $RATE through node 0's admin API; broker: node 0 sent $B_SENT0, each other node received $B_RECV_OTHERS; slow-consumer closes/drops and broker drops: $SLOW |"
    echo "| **delivery** | **$(fmt "$DELIVERIES") / $(fmt "$EXPECTED") (ratio $RATIO)**, worst subscriber $(j '.min_client_received')/$PUBLISHED, $(fmt "$(j '.clients_complete')") complete, $(j '.out_of_order') out of order |"
    echo "| publish → delivery latency | p50 **$(ms "$(j '.latency.p50_us')")**, p99 **$(ms "$(j '.latency.p99_us')")**, max $(ms "$(j '.latency.max_us')") |"
    echo "| time to last delivery (per message) | p50 $(ms "$(j '.time_to_last_delivery.p50_us')"), max **$(ms "$(j '.time_to_last_delivery.max_us')")** |"
    echo "| gateway RSS (sum of $NODES) | $(mib "$RSS0") → $(mib "$MAX_RSS") holding = **$(fmt "$PER_CONN_RSS") B per connection** |"
    echo "| client RSS (throng-load, $PROCS processes) / redis RSS | $(mib "$MAX_CLIENT_RSS") / $(mib "$REDIS_RSS0") → $(mib "$MAX_REDIS_RSS") |"
    echo "| kernel Slab (/proc/meminfo) | $(mib "$SLAB0") → $(mib "$MAX_SLAB") holding = **$(fmt "$PER_CONN_SLAB") B per connection** (both ends, system-wide) |"
    echo "| kernel TCP buffer memory (sockstat mem × $PAGE B) | $TCPMEM0 → $MAX_TCPMEM pages holding ($(mib $((TCPMEM0 * PAGE / 1024))) → $(mib $((MAX_TCPMEM * PAGE / 1024)))), at most $RUN_MAX_TCPMEM pages ($(mib $((RUN_MAX_TCPMEM * PAGE / 1024)))) during the run |"
    echo "| CPU while holding (${HOLD_S} s: publish + delivery) | gateways **${H_CPU} s = ${H_US} µs per delivery** ($(cores "$H_CPU" "$HOLD_S") cores, ${H_SYS_PCT} % in the kernel); client $(j '.cpu.client.cpu_s') s = $(j '.cpu.client.us_per_op * 10 | round / 10') µs per delivery ($(j '.cpu.client.utilisation * 100 | round / 100') cores); machine $(j '.cpu.machine_cores * 100 | round / 100') cores busy |"
    echo "| CPU, whole run (${WALL} s: connect, publish, drain, close) | gateways ${GW_CPU_ALL} s ($(cores "$GW_CPU_ALL" "$WALL") cores, ${GW_SYS_PCT} % in the kernel), client ${CLIENT_CPU_ALL} s ($(cores "$CLIENT_CPU_ALL" "$WALL") cores, ${CLIENT_SYS_PCT} % in the kernel), redis ${REDIS_CPU_ALL} s |"
} >"$OUT/results.md"

echo
cat "$OUT/results.md"
echo
echo "(raw: $OUT/load.json, $OUT/samples.tsv, $OUT/node-samples.tsv, $OUT/node*.stats.json, logs in $OUT)"

if [[ $VERDICT != PASS ]]; then
    echo "scale.sh: FAILED: established $ESTABLISHED/$CONNS, delivered $DELIVERIES/$EXPECTED (ratio $RATIO), ok=$OK, throng-load status $LOAD_RC" >&2
    exit 1
fi
