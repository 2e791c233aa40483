#!/bin/sh
# Instructions per iteration of the field engine, stable on a noisy machine (callgrind).
# Usage: benches/callgrind/measure.sh [CASE...]
#   cases: small_seal small_value small_apply serde_small open_small large_seal serde_large
# Builds this harness against the checkout it sits in, runs each case at N and 2N iterations,
# and prints (Ir(2N) - Ir(N)) / N: the fixed start-up cost cancels out. Compare two commits by
# running it in a worktree of each.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cases=${*:-"small_seal small_value small_apply serde_small open_small large_seal serde_large"}
# The dependency versions of the checkout measured.
[ -f "$here/Cargo.lock" ] || cp "$here/../../Cargo.lock" "$here/Cargo.lock"
(cd "$here" && cargo build --release --quiet)
bin=$here/target/release/fieldseal-callgrind
out=$(mktemp -d)
ir() {
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" "$bin" "$1" "$2" 2>/dev/null
  callgrind_annotate "$out/cg.out" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}
for c in $cases; do
  case $c in *large*) n=5 ;; *) n=2000 ;; esac
  a=$(ir "$c" "$n"); b=$(ir "$c" $((2 * n)))
  echo "$c $(( (b - a) / n )) instructions per iteration"
done
rm -rf "$out"
