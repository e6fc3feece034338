#!/usr/bin/env bash
# One results folder of results/gpu/ from one run on a GPU machine: the GPU suite (keys on chip and
# streamed), the benchmark with its floor kernel (default GpuKeys, then every call streamed), the
# PyTorch baselines, compute-sanitizer on small shapes (both modes) and the phase profile.
#
# usage: scripts/gpu_results.sh BUILD_DIR OUT_DIR
#   BUILD_DIR  a CUDA build with the targets lmsample_gpu_tests, lmsample_bench_gpu and
#              lmsample_profile_gpu (or a folder holding the three binaries)
#   OUT_DIR    where the files go (created)
# Exit code: 0 when the suite and the sanitizers passed in both modes, else 1.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: scripts/gpu_results.sh BUILD_DIR OUT_DIR}
out=${2:?usage: scripts/gpu_results.sh BUILD_DIR OUT_DIR}
find_bin() {
  for c in "$build/$1/$2" "$build/$2"; do
    if [ -x "$c" ]; then
      echo "$c"
      return
    fi
  done
  echo "gpu_results: no $2 under $build" >&2
  exit 1
}
tests=$(find_bin tests/gpu lmsample_gpu_tests)
bench=$(find_bin bench/gpu lmsample_bench_gpu)
profile=$(find_bin bench/gpu lmsample_profile_gpu)
mkdir -p "$out"
status=0

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv >"$out/card.txt"
for mode in auto stream; do
  log=$out/gpu_tests.log
  [ "$mode" = stream ] && log=$out/gpu_tests_stream.log
  LMSAMPLE_GPU_KEYS=$mode timeout 600 "$tests" --gtest_color=no >"$log" 2>&1 || status=1
  echo "GPU suite ($mode): $(tail -n 1 "$log")"
done
timeout 900 "$bench" --out "$out/bench_gpu.json" >"$out/bench_gpu.md" || status=1
LMSAMPLE_GPU_KEYS=stream timeout 900 "$bench" --out "$out/bench_gpu_stream.json" \
  >"$out/bench_gpu_stream.md" || status=1
timeout 900 python3 "$here/scripts/torch_baseline.py" --out "$out/torch.csv" >"$out/torch.md" ||
  status=1
for mode in auto stream; do
  log=$out/sanitizers.txt
  [ "$mode" = stream ] && log=$out/sanitizers_stream.txt
  OUT=$(mktemp -d) LMSAMPLE_GPU_KEYS=$mode LMS_SKIP_FULL=1 LMS_GPU_TESTS=$tests \
    "$here/scripts/gpu_check.sh" >"$log" 2>&1 || status=1
  tail -n 5 "$log"
done
{
  timeout 120 "$profile"
  echo "# LMS_PROFILE_TOPP=1 (top-p 0.9 alone)"
  LMS_PROFILE_TOPP=1 timeout 120 "$profile"
} >"$out/profile.txt" 2>&1
echo "gpu_results: files in $out (status $status)"
exit $status
