#!/usr/bin/env bash
# Builds the libFuzzer targets (CMake preset `fuzz`, clang + ASan + UBSan) and
# runs each one for a bounded time on a scratch copy of its seed corpus
# (tests/fuzz/corpus/<target>/). Exits non-zero if any fuzzer reports a crash,
# a sanitizer error, a leak or a hang; the reproducer is kept under
# build-fuzz/findings/<target>/.
#
#   FUZZ_SECONDS   time per fuzzer (default 20)
#   FUZZ_TIMEOUT   seconds one input may take before it counts as a hang (default 10)
#   FUZZ_JOBS      build parallelism (default 2)
#   FUZZ_TARGETS   space-separated subset of targets (default: every target with a
#                  corpus directory; only those are built)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-20}
timeout=${FUZZ_TIMEOUT:-10}
jobs=${FUZZ_JOBS:-2}

if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  targets=()
  for dir in tests/fuzz/corpus/*/; do targets+=("$(basename "$dir")"); done
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz-smoke: no fuzz targets found" >&2
  exit 1
fi

cmake --preset fuzz >/dev/null
cmake --build build-fuzz -j"$jobs" --target "${targets[@]}"

work=$(mktemp -d "${TMPDIR:-/tmp}/aerie-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}

dict_args=()
[ -f tests/fuzz/policy.dict ] && dict_args=(-dict="$root/tests/fuzz/policy.dict")

failed=()
for t in "${targets[@]}"; do
  bin=build-fuzz/fuzz/$t
  if [ ! -x "$bin" ]; then
    echo "fuzz-smoke: $t: no executable $bin" >&2
    failed+=("$t")
    continue
  fi
  corpus=$work/corpus/$t
  artifacts=$work/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  [ -d "tests/fuzz/corpus/$t" ] && cp -R "tests/fuzz/corpus/$t/." "$corpus/"
  log=$work/$t.log
  echo "fuzz-smoke: $t for ${seconds}s"
  rc=0
  "$bin" -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048 \
    -print_final_stats=1 "${dict_args[@]}" -artifact_prefix="$artifacts/" \
    "$corpus" >"$log" 2>&1 || rc=$?
  if [ $rc -ne 0 ] || [ -n "$(ls -A "$artifacts")" ]; then
    echo "fuzz-smoke: $t FAILED (exit $rc); last lines of its log:" >&2
    tail -n 60 "$log" >&2
    keep=build-fuzz/findings/$t
    mkdir -p "$keep"
    cp "$log" "$keep/"
    [ -n "$(ls -A "$artifacts")" ] && cp "$artifacts"/* "$keep/"
    echo "fuzz-smoke: $t: log and reproducers in $keep (rerun: $bin $keep/<file>)" >&2
    failed+=("$t")
  else
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    echo "fuzz-smoke: $t ok (${runs:-?} runs, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) inputs)"
  fi
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz-smoke: findings in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz-smoke: all ${#targets[@]} fuzzers ran clean"
