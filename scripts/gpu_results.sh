#!/usr/bin/env bash
# One results folder of results/gpu/ from one run on a GPU machine: the GPU suite (keys on chip and
# streamed), the benchmark with its floor kernel (default GpuKeys, then every call streamed), the
# PyTorch baselines, compute-sanitizer on small shapes (both modes), the phase profile (warm and
# with a cold L2), the benchmark at B <= 32 without the L2 flush (what the cold L2 costs) and, where
# Nsight Compute is installed, the instruction counts and issue rates of a few configurations.
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
timeout 900 "$bench" --flat-ops topk_topp,topp --out "$out/bench_gpu.json" \
  >"$out/bench_gpu.md" || status=1
LMSAMPLE_GPU_KEYS=stream timeout 900 "$bench" --flat-ops topk_topp,topp \
  --out "$out/bench_gpu_stream.json" >"$out/bench_gpu_stream.md" || status=1
timeout 900 python3 "$here/scripts/torch_baseline.py" --out "$out/torch.csv" >"$out/torch.md" ||
  status=1
for mode in auto stream; do
  log=$out/sanitizers.txt
  [ "$mode" = stream ] && log=$out/sanitizers_stream.txt
  OUT=$(mktemp -d) LMSAMPLE_GPU_KEYS=$mode LMS_SKIP_FULL=1 LMS_GPU_TESTS=$tests \
    "$here/scripts/gpu_check.sh" >"$log" 2>&1 || status=1
  tail -n 5 "$log"
done
for cold in "" 1; do
  file=$out/profile.txt
  [ -n "$cold" ] && file=$out/profile_cold_l2.txt
  {
    echo "# top-k 50 + top-p 0.9"
    env ${cold:+LMS_PROFILE_COLD=1} timeout 120 "$profile"
    echo "# LMS_PROFILE_TOPP=1 (top-p 0.9 alone)"
    env ${cold:+LMS_PROFILE_COLD=1} LMS_PROFILE_TOPP=1 timeout 120 "$profile"
    echo "# LMS_PROFILE_TOPP=2 (temperature alone)"
    env ${cold:+LMS_PROFILE_COLD=1} LMS_PROFILE_TOPP=2 timeout 120 "$profile"
  } >"$file" 2>&1
done
LMS_BENCH_WARM_L2=1 timeout 300 "$bench" --batch 1,8,32 --vocab 151936 --dtype f32 \
  --ops greedy,temp,topp,topk_topp,topk_topp_lp >"$out/bench_gpu_warm_l2.md" || status=1
ncu=$(command -v ncu || true)
if [ -n "$ncu" ]; then
  for cfg in "topp 512" "temp 512" "topk_topp 512" "topk_topp 1" "topp 1"; do
    set -- $cfg
    echo "## $1, B = $2, V = 151936, fp32 (one launch)"
    timeout 120 "$ncu" -k regex:sample_rows --launch-skip 3 --launch-count 1 \
      --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section InstructionStats \
      "$bench" --ops "$1" --batch "$2" --vocab 151936 --dtype f32 --dist peaked --iters 3 \
      --warmup 1 --no-verify 2>&1 |
      grep -E "Duration|Executed Instructions  |Issued Ipc|Issue Slots Busy|Eligible Warps|Active Warps|No Eligible|Warp Cycles Per Issued"
  done >"$out/ncu.txt" 2>&1
fi
echo "gpu_results: files in $out (status $status)"
exit $status
