#!/usr/bin/env bash
# Bounded fuzzing of the sans-IO protocol core: every cargo-fuzz target in fuzz/ for a fixed time.
#
#   bash scripts/fuzz.sh [SECONDS]     seconds per target (default: $FUZZ_SECONDS, else 30)
#   FUZZ_TARGETS="utf8 mask" bash scripts/fuzz.sh 60    only these targets
#
# Installs cargo-fuzz if missing and builds all targets once. Each target starts from its seeds in
# fuzz/corpus/TARGET (read only: new inputs go to a scratch directory, so the repository's seeds
# stay as they are). Prints one line per target with the executions run; exits non-zero if any
# target crashed, with the input saved under fuzz/artifacts/TARGET/ (see docs/fuzzing.md).
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 unlocks the nightly flags cargo-fuzz passes
# (-Zsanitizer=address).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-${FUZZ_SECONDS:-30}}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "usage: $0 [SECONDS]  (a positive whole number; got '$secs')" >&2
    exit 2
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked </dev/null || cargo install cargo-fuzz </dev/null
fi
cargo fuzz --version

echo "==> building fuzz targets"
cargo fuzz build </dev/null

if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo fuzz list </dev/null)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "no fuzz targets found" >&2
    exit 1
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/throng-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

echo "==> fuzzing ${#targets[@]} targets for ${secs}s each"
failed=()
for target in "${targets[@]}"; do
    work="$scratch/$target"
    mkdir -p "$work"
    corpora=("$work")
    if [ -d "fuzz/corpus/$target" ]; then
        corpora+=("fuzz/corpus/$target")
    fi
    log="$scratch/$target.log"
    status=0
    RUST_LIB_BACKTRACE=0 cargo fuzz run "$target" "${corpora[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
        </dev/null >"$log" 2>&1 || status=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    found="$(find "$work" -type f | wc -l | tr -d ' ')"
    if [ "$status" -eq 0 ]; then
        printf '%-18s ok    %12s execs (%s/s), %s new inputs\n' "$target" "${execs:-?}" "${rate:-?}" "$found"
    else
        printf '%-18s FAILED (exit %s) after %s execs\n' "$target" "$status" "${execs:-?}"
        echo "---- $target: what failed ----"
        if grep -qE 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$log"; then
            grep -m 1 -A 8 -E 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$log" | cut -c1-400
            grep -m 1 '^SUMMARY:' "$log" || true
        else
            tail -n 40 "$log" | cut -c1-400
        fi
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
        if [ -n "$artifact" ] && [ -f "$artifact" ]; then
            echo "crashing input: $artifact ($(wc -c <"$artifact") bytes), base64:"
            head -c 4096 "$artifact" | base64 -w 0
            echo
            echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $target $artifact"
        fi
        echo "----"
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzzing failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing passed: ${#targets[@]} targets, ${secs}s each"
