#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang (ASan + UBSan, with
# coverage instrumentation of the libraries too) in a build folder of their
# own and runs each for SECONDS. Exit status: 0 when no fuzzer found a crash,
# 1 when one did (the crashing input is kept under BUILD/fuzz-artifacts/),
# 2 on a usage or build error. Without clang it says so and exits 0.
#
#   tests/fuzz/run-fuzzers.sh SECONDS [BUILD_DIR]
#
# The seeds in tests/fuzz/corpus/<target>/ are copied into a scratch corpus, so
# the checked-in seeds only change by hand.
set -uo pipefail

seconds=${1:-}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: $0 SECONDS [BUILD_DIR]" >&2
  exit 2
fi
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${2:-$src/build-fuzz}

if ! command -v clang >/dev/null; then
  echo "run-fuzzers: clang not found, fuzzers not run"
  exit 0
fi

if [ ! -f "$build/build.ninja" ]; then
  CC=clang meson setup "$build" "$src" -Dfuzzing=true -Dwerror=false \
    -Db_sanitize=address,undefined -Db_lundef=false \
    -Dc_args=-fsanitize=fuzzer-no-link >"$build.setup.log" 2>&1 \
    || { tail -30 "$build.setup.log"; exit 2; }
fi

targets=()
for f in "$src"/tests/fuzz/fuzz-*.c; do
  name=$(basename "$f" .c)
  [ "$name" = fuzz-replay ] && continue
  targets+=("$name")
done
ninja -C "$build" "${targets[@]/#/tests/fuzz/}" >"$build/fuzz-build.log" 2>&1 \
  || { tail -40 "$build/fuzz-build.log"; exit 2; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p "$build/fuzz-artifacts"
status=0
for name in "${targets[@]}"; do
  seeds=$src/tests/fuzz/corpus/${name#fuzz-}
  work=$build/fuzz-corpus/$name
  mkdir -p "$work"
  [ -d "$seeds" ] && cp -n "$seeds"/* "$work"/ 2>/dev/null
  echo "== $name: ${seconds}s"
  "$build/tests/fuzz/$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$build/fuzz-artifacts/$name-" "$work" >"$build/$name.log" 2>&1
  rc=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)' "$build/$name.log"
  if [ $rc -ne 0 ]; then
    echo "!! $name failed (exit $rc); log: $build/$name.log"
    grep -E 'ERROR|SUMMARY|Test unit written' "$build/$name.log" | head -5
    status=1
  fi
done
exit $status
