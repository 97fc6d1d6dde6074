#!/bin/sh
# Runs each libFuzzer target for SECONDS on its corpus (tests/fuzz/corpus/<target minus fuzz_>).
# New inputs go to a scratch folder, so the committed corpus changes only when you choose.
# Exits non-zero on the first crash and says where the input is.
set -e
BUILD=$1; SECONDS_EACH=$2; shift 2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${FUZZ_OUT:-$ROOT/$BUILD/fuzz-out}
mkdir -p "$OUT"
for t in "$@"; do
  corpus="$ROOT/tests/fuzz/corpus/${t#fuzz_}"
  scratch="$OUT/${t}-corpus"
  mkdir -p "$scratch"
  echo "fuzz: $t for ${SECONDS_EACH}s"
  if ! ASAN_OPTIONS=detect_leaks=1 "$ROOT/$BUILD/$t" -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout=10 \
      -rss_limit_mb=2048 -artifact_prefix="$OUT/$t-" -print_final_stats=1 "$scratch" "$corpus" \
      >"$OUT/$t.log" 2>&1; then
    tail -40 "$OUT/$t.log"
    echo "fuzz: $t FAILED; reproducer in $OUT/$t-crash-*"
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::new_units_added" "$OUT/$t.log" | sed "s/^/  /"
done
