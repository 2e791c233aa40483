#!/usr/bin/env bash
# Short fuzzing smoke run of every target in fuzz/ (developers, nightly jobs). Not part of the
# default test suite. Needs the nightly toolchain; installs cargo-fuzz if it is missing.
#
#   scripts/fuzz-smoke.sh                 # every target, 30 s each
#   FUZZ_SECONDS=10 scripts/fuzz-smoke.sh fs1_token path_normalize
#
# Each target runs from a copy of its committed corpus (fuzz/corpus/<target>), so the smoke
# run never grows the repository's corpus. Exits non-zero if any target crashes, times out,
# runs out of memory or fails to build; the failing input is kept in fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"

SECONDS_PER_TARGET="${FUZZ_SECONDS:-30}"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
NICE="${FUZZ_NICE:-19}"

if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing the $TOOLCHAIN toolchain" >&2
    rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "+$TOOLCHAIN" fuzz list)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fuzz-smoke: building ${#targets[@]} targets (several minutes the first time)"
for t in "${targets[@]}"; do
    if ! nice -n "$NICE" cargo "+$TOOLCHAIN" fuzz build "$t" >"$work/build.log" 2>&1; then
        tail -n 40 "$work/build.log" >&2
        echo "fuzz-smoke: build of $t failed" >&2
        exit 1
    fi
done

failed=()
for t in "${targets[@]}"; do
    corpus="$work/$t"
    mkdir -p "$corpus"
    if [ -d "corpus/$t" ]; then
        cp -r "corpus/$t/." "$corpus/"
    fi
    echo "fuzz-smoke: $t for ${SECONDS_PER_TARGET}s"
    log="$work/$t.log"
    if nice -n "$NICE" cargo "+$TOOLCHAIN" fuzz run "$t" "$corpus" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | tr '\n' ' '
        echo
    else
        echo "fuzz-smoke: $t FAILED" >&2
        grep -E 'ERROR|panicked|SUMMARY|Test unit written|Crash|timeout|out-of-memory' "$log" | head -n 20 >&2 || true
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz-smoke: failures in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} targets ran ${SECONDS_PER_TARGET}s each without a crash"
