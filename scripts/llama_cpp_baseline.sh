#!/usr/bin/env bash
# Issue 11's CPU comparison: lmsample's CPU backend (one core) beside llama.cpp's sampler chain
# and the std::sort reference, on the same logits, V = 151,936 by default.
#
# llama.cpp is not part of this repository: this script fetches it from PyPI (the sdist of
# llama-cpp-python, whose vendor/llama.cpp is a copy of llama.cpp), builds only its `llama`
# library (CPU, static, no OpenMP) in build-llama/, builds this repository's library without
# CUDA in build-llama/lmsample, compiles bench/llama_cpp/bench_llama_sampler.cpp against both and
# runs it. Writes results/cpu/<date>-<cpu>-llama-cpp.md unless NO_WRITE=1.
#
# usage: bash scripts/llama_cpp_baseline.sh [VOCAB] [REPEATS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
vocab="${1:-151936}"
reps="${2:-15}"
ver="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
w="$root/build-llama"
mkdir -p "$w"
bash scripts/setup.sh --test  # .venv's pip fetches the sdist
if [ ! -d "$w/src/vendor/llama.cpp" ]; then
  "$root/.venv/bin/pip" download -q --no-deps --no-binary=:all: --no-build-isolation \
    "llama-cpp-python==$ver" -d "$w"
  rm -rf "$w/src" && mkdir -p "$w/src"
  tar xzf "$w/llama_cpp_python-$ver.tar.gz" -C "$w/src" --strip-components=1
fi
L="$w/src/vendor/llama.cpp"
cmake -S "$L" -B "$w/llama" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_COMMON=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DGGML_OPENMP=OFF >/dev/null
cmake --build "$w/llama" -j --target llama >/dev/null
cmake -S . -B "$w/lmsample" -DCMAKE_BUILD_TYPE=Release -DLMSAMPLE_CUDA=OFF -DLMSAMPLE_TESTS=OFF \
  -DLMSAMPLE_BENCH=OFF -DLMSAMPLE_INSTALL=OFF >/dev/null
cmake --build "$w/lmsample" -j --target lmsample lmsample_check >/dev/null
g++ -O3 -std=c++17 -ffp-contract=off -Wall -Wextra -I"$root/include" -I"$root/src" \
  -I"$L/include" -I"$L/ggml/include" "$root/bench/llama_cpp/bench_llama_sampler.cpp" \
  -o "$w/bench_llama_sampler" "$w/lmsample/liblmsample.a" "$w/lmsample/liblmsample_check.a" \
  "$w/llama/src/libllama.a" "$w/llama/ggml/src/libggml.a" "$w/llama/ggml/src/libggml-cpu.a" \
  "$w/llama/ggml/src/libggml-base.a" -fopenmp -lpthread -ldl

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
table="$("$w/bench_llama_sampler" "$vocab" "$reps")"
echo "$table"
if [ "${NO_WRITE:-0}" != 1 ]; then
  tag="$(echo "$cpu" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | cut -c1-24 | sed 's/-$//')"
  out="results/cpu/$(date -u +%F)-${tag}-$(nproc)c-llama-cpp.md"
  {
    echo "# CPU: lmsample beside llama.cpp's sampler chain and the std::sort reference"
    echo
    echo "* date (UTC): $(date -u +%FT%TZ); lmsample commit $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty); llama.cpp from llama-cpp-python $ver (vendor/llama.cpp)"
    echo "* CPU: $cpu, $(nproc) logical CPUs; every column on one core; compiler: $(g++ --version | head -1)"
    echo "* logits N(0,1)·4, 8 rows of V = $vocab; µs per row, median of $reps repetitions (the reference: of fewer)"
    echo "* lmsample: lmsample::sample, Backend::kCpu, cpu_threads = 1; llama.cpp: a llama_token_data array filled from the row (as llama_sampler_sample does) and a chain applied (greedy; temp + dist; top_k / top_p / min_p + temp + dist); reference: check::reference_sample_batch (a full std::sort per row). Only the speeds compare: llama.cpp draws with its own generator."
    echo "* issue 11's CPU target: every op <= 150 µs per row"
    echo
    echo "$table"
  } >"$out"
  echo "wrote $out"
fi
