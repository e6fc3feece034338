#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang, AddressSanitizer and UndefinedBehaviorSanitizer
# in build-fuzz/, and runs each for SECONDS (default 3600; CI runs 60) from its committed seed
# corpus (fuzz/corpus/<target>/, copied: the committed corpus is not changed). A crash, a
# sanitizer report or a difference from the reference fails the run and leaves the input in
# build-fuzz/findings/.
#   scripts/fuzz.sh [SECONDS]     (installs Debian's clang and libFuzzer runtime if missing)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs="${1:-3600}"
clangxx="$(command -v clang++ || true)"
runtime="$(ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null | head -1 || true)"
if [ -z "$clangxx" ] || [ -z "$runtime" ]; then
  echo "== setup: apt-get install clang libclang-rt-14-dev"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends clang \
    libclang-rt-14-dev >/dev/null
  clangxx="$(command -v clang++)"
fi
san="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$clangxx" \
  -DCMAKE_C_COMPILER="${clangxx%++}" -DLMSAMPLE_FUZZ=ON -DLMSAMPLE_TESTS=OFF -DLMSAMPLE_BENCH=OFF \
  -DLMSAMPLE_CUDA=OFF -DLMSAMPLE_INSTALL=OFF -DCMAKE_CXX_FLAGS="$san" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build build-fuzz -j --target fuzz_npy fuzz_sample
mkdir -p build-fuzz/findings
for t in fuzz_npy fuzz_sample; do
  work="build-fuzz/corpus-$t"
  rm -rf "$work"
  cp -r "fuzz/corpus/$t" "$work"
  echo "== $t for $secs s"
  status=0
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "build-fuzz/fuzz/$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="build-fuzz/findings/$t-" "$work" \
    >"build-fuzz/$t.log" 2>&1 || status=$?
  grep -E "^#[0-9]+ +DONE|^stat::number_of_executed_units|^stat::peak_rss" "build-fuzz/$t.log" || true
  if [ "$status" != 0 ]; then
    tail -n 40 "build-fuzz/$t.log" >&2
    echo "== FAILED: $t (exit $status); the input is in build-fuzz/findings/" >&2
    exit 1
  fi
done
echo "== fuzzers: no finding"
