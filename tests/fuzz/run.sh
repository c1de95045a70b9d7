#!/usr/bin/env bash
# tests/fuzz/run.sh: run every libFuzzer harness for a bounded time; fail on a finding.
#   tests/fuzz/run.sh BUILDDIR/tests/fuzz [HARNESS...]
# BUILDDIR is a -Dfuzz=true (clang) build; the harnesses are its fuzz-NAME programs.
# Each runs ESPALIER_FUZZ_SECONDS (60) on a copy of its seed corpus (corpus/NAME, so the
# tree is not modified) with its dictionary (NAME.dict) when there is one, at most
# ESPALIER_FUZZ_JOBS (2) at a time. A crash, leak, timeout or out-of-memory input is
# kept in ESPALIER_FUZZ_ARTIFACTS (BUILDDIR/tests/fuzz/artifacts) and fails the run:
# fix the parser, then copy the input to corpus/NAME/crash-... and add a unit test.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bindir="${1:?usage: run.sh BUILDDIR/tests/fuzz [HARNESS...]}"
shift
seconds="${ESPALIER_FUZZ_SECONDS:-60}"
jobs="${ESPALIER_FUZZ_JOBS:-2}"
artifacts="${ESPALIER_FUZZ_ARTIFACTS:-$bindir/artifacts}"
harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
  harnesses=(idx idx-gz csv model safetensors project onnx spec checkpoint)
fi

mkdir -p "$artifacts"
work="$(mktemp -d "${TMPDIR:-/tmp}/espalier-fuzz-run.XXXXXX")"
trap 'rm -rf "$work"' EXIT

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LANGUAGE=C LC_ALL=C.UTF-8 GSETTINGS_BACKEND=memory
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && command -v llvm-symbolizer >/dev/null; then
  export ASAN_SYMBOLIZER_PATH="$(command -v llvm-symbolizer)"
fi

# One harness: copy its corpus, run it, say how it went. Exit status: the fuzzer's.
run_one() {
  local name="$1" exe="$bindir/fuzz-$1" corpus="$work/$1" log="$artifacts/$1.log"
  local args=()

  if [ ! -x "$exe" ]; then
    echo "fuzz $name: $exe is missing (build with -Dfuzz=true)" >&2
    return 2
  fi
  mkdir -p "$corpus"
  if [ -d "$here/corpus/$name" ]; then
    cp -r "$here/corpus/$name/." "$corpus/"
  fi
  [ -f "$here/$name.dict" ] && args+=("-dict=$here/$name.dict")
  # A share of the machine for each: nice, and 2 GB of memory at most.
  nice -n 10 "$exe" "${args[@]}" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/$name-" \
    "$corpus" >"$log" 2>&1
  local rc=$?
  local runs
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  if [ $rc -eq 0 ]; then
    echo "fuzz $name: ${runs:-?} executions in ${seconds} s, no finding"
  else
    echo "fuzz $name: FOUND A PROBLEM after ${runs:-?} executions (exit $rc); log $log" >&2
    grep -m1 -E "^==[0-9]+==ERROR|runtime error|ERROR: libFuzzer|GLib.*(CRITICAL|ERROR)|\*\*" \
      "$log" >&2 || tail -20 "$log" >&2
    ls "$artifacts/$name-"* 2>/dev/null | sed 's/^/  input: /' >&2
  fi
  return $rc
}

failed=0
running=0
for name in "${harnesses[@]}"; do
  run_one "$name" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done

if [ $failed -ne 0 ]; then
  echo "fuzzing found problems: see $artifacts" >&2
  exit 1
fi
echo "fuzzing: ${#harnesses[@]} harnesses, ${seconds} s each, no finding"
