# shellcheck shell=bash
# Shared by scripts/ab.sh, backends.sh, deflate.sh, tls.sh and others (sourced, not run): echo
# servers measured in alternating rounds on the same machine, one table of rounds, medians and
# ratios. Runs vary by ±15 % here, so one run of each server proves nothing; compare medians of
# alternating rounds.
#
# Each shape is one `throng-load compare --rounds ROUNDS` over all the servers (compare starts
# each server for every single run on a free loopback port, pinned to SERVER_CPU, and runs the
# client, one thread, on CLIENT_CPU; it alternates the servers round by round and writes every
# round's figures to a JSON file, from which the cells below are taken).
# Each server is a NAME and a command with `{port}` in it (run as `sh -c "exec CMD"`, so it must
# be one program: its pid is the one measured), and `{admin}` where a gateway's admin port goes.
# A server may come with throng-load arguments of its own, added to each of its runs: with
# `--ca-file CA` among them the server speaks TLS, and its URLs are `wss://localhost:PORT/…`
# (the name the certificate of scripts/lib/tls-cert.sh is for, sent as SNI).
# Every run is bounded in time (each throng-load run, and the whole script by MAX_SECONDS).
#
# Measures (the SHAPES list, in that order):
#   fresh    server RSS in KiB right after it listens, no connection ever made
#   ring     of that, the KiB resident in io_uring's ring mappings (anon_inode:[io_uring] in
#            /proc/PID/smaps; 0 for a server without a ring)
#   memory   RSS growth per idle connection, B (MEM_CONNS connections held HOLD)
#   memory1  the same, each connection subscribed to one channel (`?channels=d1`: a gateway's
#            query; an echo server ignores it)
#   memory3  the same with three channels (`?channels=d1,d2,d3`)
#   32       server CPU µs per echoed message, 32 B × 100 conns, INFLIGHT_32 in flight
#   512      the same, 512 B × 1000 conns, INFLIGHT_512 in flight (sources 127.0.0.2-127.0.0.10)
#   64k      the same, 64 KiB binary × 10 conns, INFLIGHT_64K in flight
#   json200  the same, 200 B compressible JSON text (`--payload json`) × 100 conns, 4 in flight
#   json2k   the same with 2 KiB of JSON
#   wire200  bytes on the wire per message from the server in the json200 run's shape (frame
#            headers included: what compression saves)
#   wire2k   the same for json2k
#   storm    server CPU µs per connect–upgrade–close cycle, STORM_PARALLEL in parallel; the same
#            run also gives the rows storm_rate (cycles per second) and storm_resumed (the share
#            of TLS handshakes that were resumptions, from throng-load's counters; "–" without TLS)
#   churn    a gateway's server CPU µs per subscribe or unsubscribe command (throng-churn:
#            CHURN_CONNS connections, CHURN_ROUNDS rounds of one of each per connection)
#   fanout   a gateway's server CPU µs per delivery (throng-load fanout: FANOUT_SUBSCRIBERS
#            subscribers, FANOUT_DURATION of 2 messages a second, published on the admin API at
#            {admin}, the port the server's command gets for its admin listener)
# The echo and storm cells are "server/client": the client's CPU per operation in the same run.
# The client is the same binary in every run: when its figure moves with the server's, the
# difference is the kernel's loopback TCP path (it charges either side), not the server's code.
#
# Settings (environment; a script sets its own defaults for INFLIGHT_* and SHAPES first):
#   ROUNDS=3  MEM_CONNS=15000  HOLD=3s  DURATION=6s  WARMUP=1s  STORM_PARALLEL=16
#   INFLIGHT_32=16  INFLIGHT_512=1  INFLIGHT_64K=4  SHAPES="memory 32 512 64k"
#   SOURCES=127.0.0.2-127.0.0.40  PORT=19101 (churn only; compare picks free ports)
#   SERVER_CPU=0  CLIENT_CPU=1  MAX_SECONDS=1800
#   URL_PATH=""  (the path every run's URL has, e.g. "ws" for the gateway's endpoint)
#   CHURN=target/release/throng-churn  CHURN_CONNS=200  CHURN_ROUNDS=200
#   FANOUT_SUBSCRIBERS=15000  FANOUT_DURATION=5s  FANOUT_PAD=""  (`--pad N`: a publish of about
#   N + 40 bytes of JSON)
#   LOAD_ARGS=""  (added to every throng-load run, e.g. "--deflate")
#   PERF=""  (e.g. "record -e cpu-clock -g", or "stat -e EVENTS")  PERF_SECONDS=4  PERF_DIR=target/perf
#   (PERF profiles the server during each throng-load run; its own CPU then counts on the
#   client's side of the machine, so leave it out of runs whose figures are compared)
#
# API: bench_init SCRIPT LOAD; bench_server NAME CMD [ARGS] (repeat); bench_run;
# bench_table RATIOS, RATIOS being "A/B ..." pairs of names (the ratio of their medians gets a
# column); bench_median_of ROW NAME for a script's own checks of the figures.

ROUNDS=${ROUNDS:-3}
MEM_CONNS=${MEM_CONNS:-15000}
HOLD=${HOLD:-3s}
DURATION=${DURATION:-6s}
WARMUP=${WARMUP:-1s}
STORM_PARALLEL=${STORM_PARALLEL:-16}
INFLIGHT_32=${INFLIGHT_32:-16}
INFLIGHT_512=${INFLIGHT_512:-1}
INFLIGHT_64K=${INFLIGHT_64K:-4}
SHAPES=${SHAPES:-"memory 32 512 64k"}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.40}
PORT=${PORT:-19101}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
MAX_SECONDS=${MAX_SECONDS:-1800}
PERF=${PERF:-}
PERF_SECONDS=${PERF_SECONDS:-4}
PERF_DIR=${PERF_DIR:-${ROOT:-.}/target/perf}
URL_PATH=${URL_PATH:-}
CHURN=${CHURN:-${ROOT:-.}/target/release/throng-churn}
CHURN_CONNS=${CHURN_CONNS:-200}
CHURN_ROUNDS=${CHURN_ROUNDS:-200}
FANOUT_SUBSCRIBERS=${FANOUT_SUBSCRIBERS:-15000}
FANOUT_DURATION=${FANOUT_DURATION:-5s}

BENCH_NAMES=()
BENCH_CMDS=()
BENCH_ARGS=()   # each server's own throng-load arguments ("" for none)
BENCH_SERVER_ARGS="" # those of the server being measured
declare -A BENCH_CELLS=() # "SHAPE NAME" -> the rounds' cells, space-separated
SERVER_PID=""
BENCH_COMPARE_PID=""
WATCHDOG_PID=""

bench_die() { echo "$BENCH_SCRIPT: $*" >&2; exit 2; }

# bench_init SCRIPT LOAD: checks the tools, arms the cleanup and the watchdog.
bench_init() {
    BENCH_SCRIPT=$1
    LOAD=$2
    local tool
    for tool in jq taskset timeout ss awk; do
        command -v "$tool" >/dev/null || bench_die "needs $tool"
    done
    if [[ -n $PERF ]]; then
        command -v perf >/dev/null || bench_die "PERF is set: needs perf"
    fi
    [[ -x $LOAD ]] || bench_die "$LOAD is not an executable (cargo build --release -p throng-loadtest)"
    BENCH_LOG=$(mktemp "${TMPDIR:-/tmp}/bench-server.XXXXXX")
    BENCH_JSON=$(mktemp "${TMPDIR:-/tmp}/bench-compare.XXXXXX")
    trap bench_cleanup EXIT
    trap 'echo "$BENCH_SCRIPT: interrupted" >&2; exit 130' INT TERM
    # Ends the whole script (and through the EXIT trap, the server) if it runs too long.
    (
        sleep "$MAX_SECONDS" &
        s=$!
        trap 'kill $s 2>/dev/null; exit 0' TERM
        wait $s
        echo "$BENCH_SCRIPT: over ${MAX_SECONDS}s, stopping" >&2
        kill -TERM $$
    ) &
    WATCHDOG_PID=$!
}

bench_cleanup() {
    bench_stop
    if [[ -n $BENCH_COMPARE_PID ]]; then
        kill "$BENCH_COMPARE_PID" 2>/dev/null || true
        wait "$BENCH_COMPARE_PID" 2>/dev/null || true
    fi
    if [[ -n $WATCHDOG_PID ]]; then
        kill "$WATCHDOG_PID" 2>/dev/null || true
        wait "$WATCHDOG_PID" 2>/dev/null || true
    fi
    rm -f "$BENCH_LOG" "$BENCH_JSON"
}

# bench_server NAME CMD [ARGS]: one more server to measure; CMD has {port} where its port goes;
# ARGS, throng-load arguments for this server's runs only (`--ca-file CA` makes them wss://).
bench_server() {
    [[ $2 == *"{port}"* ]] || bench_die "the command of $1 has no {port}: $2"
    BENCH_NAMES+=("$1")
    BENCH_CMDS+=("$2")
    BENCH_ARGS+=("${3:-}")
}

# bench_start CMD: the server on a fresh port (and, for {admin}, an admin port 1000 above it),
# pinned; waits until it listens (without connecting to it, so "fresh" is a server that never
# saw a connection); sets SERVER_PID, URL and ADMIN_PORT.
bench_start() {
    PORT=$((PORT + 1))
    ADMIN_PORT=$((PORT + 1000))
    local cmd=${1//\{port\}/$PORT}
    cmd=${cmd//\{admin\}/$ADMIN_PORT}
    : >"$BENCH_LOG"
    taskset -c "$SERVER_CPU" sh -c "exec $cmd" >>"$BENCH_LOG" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 200); do
        if [[ -n $(ss -Hltn "sport = :$PORT") ]]; then
            if [[ " $BENCH_SERVER_ARGS " == *" --ca-file "* ]]; then
                URL="wss://localhost:$PORT/$URL_PATH"
            else
                URL="ws://127.0.0.1:$PORT/$URL_PATH"
            fi
            sleep 0.3 # let it settle before the "before" readings
            return
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "$BENCH_SCRIPT: '$cmd' did not listen on port $PORT; its output:" >&2
    sed 's/^/   /' "$BENCH_LOG" >&2
    bench_stop
    exit 1
}

bench_stop() {
    [[ -n $SERVER_PID ]] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# bench_seconds 1s|500ms|2m -> whole seconds (rounded up), for sleep arithmetic.
bench_seconds() {
    case $1 in
        *ms) echo $((((${1%ms}) + 999) / 1000)) ;;
        *m) echo $((${1%m} * 60)) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}

# bench_measure churn CMD [ARGS] -> one cell: "server/client" CPU µs per command, "?" when the
# run gave no figure. Churn is a binary of its own (throng-churn), which compare does not run: it
# keeps this loop of its own.
bench_measure() {
    local json
    BENCH_SERVER_ARGS=${3:-}
    bench_start "$2"
    json=$(taskset -c "$CLIENT_CPU" timeout --kill-after=5 120 "$CHURN" "$URL" --server-pid "$SERVER_PID" \
        --conns "$CHURN_CONNS" --rounds "$CHURN_ROUNDS" 2>/dev/null | tail -n 1 || true)
    bench_stop
    jq -r '"\(.server_us_per_command)/\(.client_us_per_command)"' <<<"$json" 2>/dev/null || echo "?"
}

# bench_mode SHAPE -> the words of the compare run's MODE ARGS, one a line (`{url}` is the
# server's ws:// or wss:// URL, `{admin}` its admin port: compare fills them in).
bench_mode() {
    local url="{url}$URL_PATH"
    case $1 in
        # Any cheap run: compare reads the fresh RSS and the ring before it connects.
        fresh | ring) printf '%s\n' connect "$url" --conns 1 --hold 0s ;;
        memory) printf '%s\n' connect "$url" --conns "$MEM_CONNS" --sources "$SOURCES" --hold "$HOLD" ;;
        memory1) printf '%s\n' connect "$url?channels=d1" --conns "$MEM_CONNS" --sources "$SOURCES" --hold "$HOLD" ;;
        memory3) printf '%s\n' connect "$url?channels=d1,d2,d3" --conns "$MEM_CONNS" --sources "$SOURCES" \
            --hold "$HOLD" ;;
        32) printf '%s\n' echo "$url" --conns 100 --size 32 --inflight "$INFLIGHT_32" --warmup "$WARMUP" \
            --duration "$DURATION" ;;
        512) printf '%s\n' echo "$url" --conns 1000 --size 512 --inflight "$INFLIGHT_512" \
            --sources 127.0.0.2-127.0.0.10 --warmup "$WARMUP" --duration "$DURATION" ;;
        64k) printf '%s\n' echo "$url" --conns 10 --size 65536 --inflight "$INFLIGHT_64K" --binary \
            --warmup "$WARMUP" --duration "$DURATION" ;;
        json200 | wire200) printf '%s\n' echo "$url" --conns 100 --size 200 --payload json --inflight 4 \
            --warmup "$WARMUP" --duration "$DURATION" ;;
        json2k | wire2k) printf '%s\n' echo "$url" --conns 100 --size 2048 --payload json --inflight 4 \
            --warmup "$WARMUP" --duration "$DURATION" ;;
        storm) printf '%s\n' storm "$url" --parallel "$STORM_PARALLEL" --duration "$DURATION" --sources "$SOURCES" ;;
        fanout) printf '%s\n' fanout "$url" --subscribers "$FANOUT_SUBSCRIBERS" --channel bench \
            --publish "http://127.0.0.1:{admin}/v1/publish" --rate 2/s --duration "$FANOUT_DURATION" \
            --sources "$SOURCES" ${FANOUT_PAD:+--pad "$FANOUT_PAD"} ;;
        *) bench_die "unknown shape $1" ;;
    esac
}

# bench_compare SHAPE: one compare run of every server, ROUNDS rounds; its JSON goes to
# BENCH_JSON, its own and the servers' output to BENCH_LOG. A server that does not start ends
# the script; a run that failed its checks gets its cells marked.
bench_compare() {
    local what=$1 i load_mode=() cmp_args=()
    mapfile -t load_mode < <(bench_mode "$what")
    # shellcheck disable=SC2206 # LOAD_ARGS is a list of arguments
    load_mode+=(${LOAD_ARGS:-})
    cmp_args=(compare --rounds "$ROUNDS" --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" --json "$BENCH_JSON")
    for ((i = 0; i < ${#BENCH_NAMES[@]}; i++)); do
        cmp_args+=(--server "${BENCH_NAMES[i]}=exec ${BENCH_CMDS[i]}")
        [[ -z ${BENCH_ARGS[i]} ]] || cmp_args+=(--server-args "${BENCH_NAMES[i]}=${BENCH_ARGS[i]}")
    done
    if [[ -n ${PERF:-} ]]; then
        local ext=data
        [[ $PERF == stat* ]] && ext=txt
        mkdir -p "$PERF_DIR"
        # From one second after the warm-up: a profile (or event counts) of the very run measured,
        # in PERF_DIR/NAME.SHAPE.ROUND.data (.txt for stat).
        cmp_args+=(--during "sleep $(($(bench_seconds "$WARMUP") + 1)) && exec timeout 60 perf $PERF \
-o '$PERF_DIR'/\$NAME.$what.\$ROUND.$ext -p \$SERVER_PIDS -- sleep $PERF_SECONDS >/dev/null 2>&1")
    fi
    echo "== $what: ${BENCH_NAMES[*]}, $ROUNDS round(s)" >&2
    rm -f "$BENCH_JSON"
    # In the background, waited for: an interrupt or the watchdog reaches the trap at once (bash
    # runs no trap while a foreground command runs), and the cleanup stops compare, which stops
    # its run and its server.
    timeout --kill-after=5 $((ROUNDS * ${#BENCH_NAMES[@]} * 180)) "$LOAD" "${cmp_args[@]}" -- "${load_mode[@]}" \
        >/dev/null 2>"$BENCH_LOG" &
    BENCH_COMPARE_PID=$!
    wait "$BENCH_COMPARE_PID" || true
    BENCH_COMPARE_PID=""
    if ! jq -e '[.servers[].runs[] | select(.report == null and (.error // "" | test("listen|starting")))]
        | length == 0' "$BENCH_JSON" >/dev/null 2>&1; then
        echo "$BENCH_SCRIPT: a server did not start for $what; the output:" >&2
        sed 's/^/   /' "$BENCH_LOG" >&2
        exit 1
    fi
}

# bench_cells SHAPE: from BENCH_JSON, one line per server and round: "ROW NAME CELL" (a number,
# "server/client" for the CPU shapes, "?" when the run gave no figure, "!" appended when the
# run failed a check), storm's extra rows storm_rate and storm_resumed included.
bench_cells() {
    local figure
    case $1 in
        fresh) figure='.fresh_rss_kib | floor' ;;
        ring) figure='.ring_kib | floor' ;;
        memory | memory1 | memory3) figure='.server_rss_bytes_per_conn | floor' ;;
        wire200 | wire2k) figure='.wire_bytes_per_msg' ;;
        *) figure='if .server_cpu_us_per_op == null then null
            else "\(.server_cpu_us_per_op)/\(.client_cpu_us_per_op)" end' ;;
    esac
    jq -r --arg row "$1" '.servers[] | .name as $name | .runs[] |
        (if .ok then "" else "!" end) as $flag |
        ('"$figure"') as $v |
        "\($row) \($name) \(if $v == null then "?" else "\($v)\($flag)" end)",
        (if $row == "storm" then
            "storm_rate \($name) \(.rate // "?" | if type == "number" then floor else . end)",
            "storm_resumed \($name) \(.tls_resumed_share // "–")"
        else empty end)' "$BENCH_JSON"
}

# bench_rows SHAPE: the table's rows a shape's runs give (itself, and storm's extra rows).
bench_rows() {
    case $1 in
        storm) echo "storm storm_rate storm_resumed" ;;
        *) echo "$1" ;;
    esac
}

# bench_run: every SHAPE, ROUNDS rounds, every server once a round (compare turns the order of
# the servers by one each round, so none always runs first or last).
bench_run() {
    local what round i k out row name cell n=${#BENCH_NAMES[@]}
    for what in $SHAPES; do
        [[ -n $(bench_label "$what") ]] || bench_die "unknown shape $what (SHAPES=\"$SHAPES\")"
    done
    for what in $SHAPES; do
        if [[ $what == churn ]]; then
            # throng-churn is not a mode of throng-load: the alternating loop is this script's.
            for round in $(seq "$ROUNDS"); do
                for ((k = 0; k < n; k++)); do
                    i=$(((k + round - 1) % n))
                    echo "== $what, round $round: ${BENCH_NAMES[i]}" >&2
                    # A measure runs in a subshell (it prints its cell): its failure must end the script.
                    out=$(bench_measure "$what" "${BENCH_CMDS[i]}" "${BENCH_ARGS[i]}") || exit 1
                    BENCH_CELLS["$what ${BENCH_NAMES[i]}"]+=" $out"
                done
            done
            continue
        fi
        bench_compare "$what"
        while read -r row name cell; do
            BENCH_CELLS["$row $name"]+=" $cell"
        done < <(bench_cells "$what")
    done
}

# The median of the numbers on stdin (one or more per line, separated by spaces).
bench_median() {
    tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "?"; else print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}

# bench_median_of SHAPE NAME: the median of the server's figure over the rounds (failed cells,
# "?", left out; flagged ones counted).
bench_median_of() {
    echo "${BENCH_CELLS["$1 $2"]:-}" | tr ' ' '\n' | sed -n 's|!$||; s|/.*||; /^[0-9.]\{1,\}$/p' | bench_median
}

# bench_sc_of SHAPE NAME: the median over the rounds of the server/client ratio.
bench_sc_of() {
    echo "${BENCH_CELLS["$1 $2"]:-}" | tr ' ' '\n' | sed 's|!$||' | awk -F/ '$2 > 0 {printf "%.3f\n", $1 / $2}' |
        bench_median
}

# bench_paired_of SHAPE A B: the median over the rounds of A's figure over B's in the same
# round ("?" without a pair): the rounds alternate servers, so a drift of the machine during
# the run (every server slower in round 3) cancels out of each round's ratio.
bench_paired_of() {
    local a b
    a=$(echo "${BENCH_CELLS["$1 $2"]:-}" | tr ' ' '\n' | sed '/^$/d; s|!$||; s|/.*||')
    b=$(echo "${BENCH_CELLS["$1 $3"]:-}" | tr ' ' '\n' | sed '/^$/d; s|!$||; s|/.*||')
    paste -d' ' <(echo "$a") <(echo "$b") |
        awk '$1 ~ /^[0-9.]+$/ && $2 ~ /^[0-9.]+$/ && $2 > 0 {printf "%.3f\n", $1 / $2}' | bench_median
}

bench_label() {
    case $1 in
        fresh) echo "RSS of a fresh server (no connection yet), KiB" ;;
        ring) echo "of which io_uring ring mappings, KiB" ;;
        memory) echo "RSS per idle connection ($MEM_CONNS conns), B" ;;
        memory1) echo "RSS per idle connection with one channel ($MEM_CONNS conns), B" ;;
        memory3) echo "RSS per idle connection with three channels ($MEM_CONNS conns), B" ;;
        32) echo "server/client CPU µs per msg, 32 B × 100 conns, $INFLIGHT_32 in flight" ;;
        512) echo "server/client CPU µs per msg, 512 B × 1000 conns, $INFLIGHT_512 in flight" ;;
        64k) echo "server/client CPU µs per msg, 64 KiB × 10 conns, $INFLIGHT_64K in flight" ;;
        json200) echo "server/client CPU µs per msg, 200 B JSON × 100 conns, 4 in flight" ;;
        json2k) echo "server/client CPU µs per msg, 2 KiB JSON × 100 conns, 4 in flight" ;;
        wire200) echo "bytes on the wire per 200 B JSON message from the server" ;;
        wire2k) echo "bytes on the wire per 2 KiB JSON message from the server" ;;
        storm) echo "server/client CPU µs per connect–upgrade–close cycle, $STORM_PARALLEL in parallel" ;;
        storm_rate) echo "cycles per second (same runs)" ;;
        storm_resumed) echo "share of TLS handshakes resumed (same runs)" ;;
        churn) echo "server/client CPU µs per subscribe or unsubscribe, $CHURN_CONNS conns" ;;
        fanout) echo "server/client CPU µs per delivery, $FANOUT_SUBSCRIBERS subscribers, 2 msg/s for $FANOUT_DURATION${FANOUT_PAD:+, --pad $FANOUT_PAD}" ;;
    esac
}

# bench_table RATIOS: the header lines and one Markdown table row per shape: each server's rounds
# and median (with the server/client ratio's median for the CPU shapes), then one column per
# "A/B" pair of RATIOS: median of A / median of B.
bench_table() {
    local ratios=$1 what name pair a b ma mb row med cells i
    echo "# $BENCH_SCRIPT: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, kernel $(uname -r), ROUNDS=$ROUNDS DURATION=$DURATION"
    echo
    for ((i = 0; i < ${#BENCH_NAMES[@]}; i++)); do
        echo "- ${BENCH_NAMES[i]}: \`${BENCH_CMDS[i]}\`${BENCH_ARGS[i]:+, throng-load \`${BENCH_ARGS[i]}\`}"
    done
    echo "- server on CPU $SERVER_CPU, throng-load on CPU $CLIENT_CPU; load average now $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    row="| measure |"
    for name in "${BENCH_NAMES[@]}"; do row+=" $name, rounds | median |"; done
    for pair in $ratios; do row+=" $pair |"; done
    echo "$row"
    row="| --- |"
    for _ in "${BENCH_NAMES[@]}"; do row+=" --- | ---: |"; done
    for _ in $ratios; do row+=" ---: |"; done
    echo "$row"
    local rows="" shape
    for shape in $SHAPES; do rows+=" $(bench_rows "$shape")"; done
    for what in $rows; do
        # A row of a run's extra figures that no server has (storm_resumed without TLS): left out.
        if [[ " $SHAPES " != *" $what "* ]]; then
            med="?"
            for name in "${BENCH_NAMES[@]}"; do
                [[ $med == "?" ]] && med=$(bench_median_of "$what" "$name")
            done
            [[ $med != "?" ]] || continue
        fi
        row="| $(bench_label "$what") |"
        for name in "${BENCH_NAMES[@]}"; do
            med=$(bench_median_of "$what" "$name")
            case $what in
                32 | 512 | 64k | json200 | json2k | storm | churn | fanout) med+=" (server/client $(bench_sc_of "$what" "$name"))" ;;
            esac
            cells=${BENCH_CELLS["$what $name"]:-}
            row+=" ${cells# } | $med |"
        done
        for pair in $ratios; do
            a=${pair%%/*} b=${pair#*/}
            ma=$(bench_median_of "$what" "$a") mb=$(bench_median_of "$what" "$b")
            row+=" $(awk -v a="$ma" -v b="$mb" -v p="$(bench_paired_of "$what" "$a" "$b")" 'BEGIN {
                if (a ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f", a / b; else printf "–"
                if (p ~ /^[0-9.]+$/) printf " (%.2f)", p }') |"
        done
        echo "$row"
    done
    echo
    echo "A ratio is of the two medians; in brackets, the median of the rounds' own ratios (each round runs"
    echo "every server in turn, so a drift of the machine during the run cancels out of it)."
    echo "Cells marked ! come from a run in which throng-load reported a failed check; ? a run with no figure."
}
