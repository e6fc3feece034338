#!/usr/bin/env bash
# GPU checks of lmsample: the full GPU test suite, then compute-sanitizer on reduced sets of tests
# with small shapes (LMS_GPU_TEST_SMALL=1): memcheck and initcheck on several tests, racecheck and
# synccheck (much slower: about 10 s per launch of V = 32000) on a few small shapes only.
#
# usage: scripts/gpu_check.sh [BUILD_DIR | TEST_BINARY]   (default build-gpu; or set LMS_GPU_TESTS=/path/to/binary)
# env:   OUT                    folder for the logs (default: a new temporary folder, printed)
#        LMS_SANITIZER_TOOLS    default "memcheck racecheck initcheck synccheck"; "" = none
#        LMS_SANITIZER_FILTER   gtest filter of the memcheck / initcheck runs
#        LMS_RACECHECK_FILTER   gtest filter of the racecheck / synccheck runs
#        LMS_STEP_TIMEOUT_S     wall-clock limit of each step (default 900 s)
#        LMS_SKIP_FULL=1        skip the full (unsanitized) run
# Exit code: 0 when every step passed, else 1 (the summary at the end says which step failed).
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build-gpu}
bin=${LMS_GPU_TESTS:-}
if [ -z "$bin" ]; then
  if [ -f "$build" ]; then bin=$build; else
    for c in "$build/tests/gpu/lmsample_gpu_tests" "$build/lmsample_gpu_tests"; do
      if [ -x "$c" ]; then bin=$c; break; fi
    done
  fi
fi
bin=${bin:-$build/tests/gpu/lmsample_gpu_tests}
if [ ! -x "$bin" ]; then
  echo "gpu_check: no test binary at $bin (build the target lmsample_gpu_tests, or set LMS_GPU_TESTS)" >&2
  exit 1
fi
logs=${OUT:-}
if [ -z "$logs" ]; then logs=$(mktemp -d /tmp/lms_gpu_check.XXXXXX); fi
mkdir -p "$logs"
san=$(command -v compute-sanitizer || true)
[ -z "$san" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && san=/usr/local/cuda/bin/compute-sanitizer
tools=${LMS_SANITIZER_TOOLS-memcheck racecheck initcheck synccheck}
filter=${LMS_SANITIZER_FILTER:-GpuVsCpu.SanitizerShapes:GpuErrors.*:GpuGraph.*:GpuInvariance.*:GpuWatchdog.WideBatch}
race_filter=${LMS_RACECHECK_FILTER:-GpuVsCpu.RacecheckShapes:GpuErrors.*}
step_timeout=${LMS_STEP_TIMEOUT_S:-900}

echo "gpu_check: binary $bin; logs in $logs"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/gpu_check: GPU /'

declare -a summary
status=0
step() {  # step NAME LOGFILE CMD...
  local name=$1 log=$2
  shift 2
  echo
  echo "=== $name: $*"
  local t0=$SECONDS
  timeout -k 10 "$step_timeout" "$@" >"$log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "TIMEOUT: step '$name' killed after $step_timeout s" | tee -a "$log"
  # Show the summary lines and failures, keep the whole log in $logs.
  grep -E '^\[ summary|^\[  (PASSED|FAILED) |^\[==========\]|TIMEOUT|ERROR SUMMARY|RACECHECK SUMMARY|Failure' "$log" | head -80
  local skipped
  skipped=$(grep -c '^\[  SKIPPED \] .*(' "$log")
  [ "$skipped" -gt 0 ] && echo "($skipped tests skipped: $(grep -m1 -o 'no CUDA device.*' "$log" || echo see log))"
  local line="$name: rc=$rc in $((SECONDS - t0)) s (log $log)"
  if [ $rc -ne 0 ]; then
    status=1
    line="$line  <-- FAILED"
    tail -40 "$log"
  fi
  summary+=("$line")
}

if [ "${LMS_SKIP_FULL:-0}" != "1" ]; then
  step "full GPU suite" "$logs/gpu_tests.log" "$bin" --gtest_color=no
fi

if [ -z "$san" ] && [ -n "$tools" ]; then
  echo "gpu_check: compute-sanitizer not found: sanitizer steps skipped" >&2
  summary+=("compute-sanitizer: not found, skipped  <-- FAILED")
  status=1
else
  for tool in $tools; do
    extra=()
    f=$filter
    case $tool in
      memcheck) extra=(--leak-check full) ;;
      racecheck) extra=(--racecheck-report all); f=$race_filter ;;
      synccheck) f=$race_filter ;;
    esac
    step "compute-sanitizer --tool $tool" "$logs/sanitizer_$tool.log" \
      env LMS_GPU_TEST_SMALL=1 LMS_GPU_TIMEOUT_S=900 LMS_GPU_WATCHDOG_S=900 \
      "$san" --tool "$tool" "${extra[@]}" --error-exitcode 86 --print-limit 200 \
      "$bin" --gtest_color=no "--gtest_filter=$f"
  done
fi

echo
echo "=== gpu_check summary"
for l in "${summary[@]}"; do echo "  $l"; done
exit $status
