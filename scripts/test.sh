#!/usr/bin/env bash
# README command 2 (and all of CI: .ci/run runs this): set up, build and run every test.
#   1. scripts/setup.sh --test: the Debian packages the build and tests need (only those
#      missing) and, in the checkout's .venv/, scikit-build-core, nanobind, numpy and pytest;
#   2. clang-format check of every C, C++ and CUDA source;
#   3. the C++ library, tool and tests in build/, and ctest (C++ unit, CLI and simulated-GPU
#      tests; the CMake-package consumer test; GPU tests where a GPU exists);
#   4. `pip install .` of the Python package into .venv/ (its CMake tree kept in
#      build/python-wheel, so only what changed is rebuilt), then pytest tests/python;
#   5. under CI=true (or LMSAMPLE_TEST_SANITIZERS=1): the C++ tests again, built with
#      AddressSanitizer + UndefinedBehaviorSanitizer in build-asan/ (the CPU backend, the tool and
#      its bad-input tests; any report fails);
#   6. under CI=true (or LMSAMPLE_TEST_FUZZ=1): each libFuzzer target (fuzz/) for 60 s from its
#      committed corpus (scripts/fuzz.sh; installs clang if missing);
#   7. under CI=true (or LMSAMPLE_TEST_GPU_BUILDS=1): the CUDA compile check where nvcc exists
#      but CMake did not pick it up, and the HIP build for gfx90a / gfx1030 (installs hipcc).
# A second run installs nothing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

bash scripts/setup.sh --test
echo "== clang-format check"
mapfile -t sources < <(git ls-files 'include/*' 'src/*' 'tools/*' 'tests/*' 'bench/*' 'python/*' 'fuzz/*' |
                       grep -E '\.(c|h|cpp|hpp|cu|cuh)$')
if ! clang-format --dry-run --Werror "${sources[@]}"; then
  echo "== FAILED: run clang-format -i on the files above" >&2
  exit 1
fi

echo "== C++: build and ctest"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j
ctest --test-dir build --output-on-failure -j2

echo "== Python: pip install . and pytest"
py="$root/.venv/bin/python"
"$py" -m pip install -q --disable-pip-version-check --no-build-isolation \
  --config-settings=build-dir=build/python-wheel .
# from tests/python, so that the installed package is imported (not the source folder)
(cd tests/python && "$py" -m pytest -q -p no:cacheprovider .)

if [ "${CI:-}" = true ] || [ "${LMSAMPLE_TEST_SANITIZERS:-0}" = 1 ]; then
  echo "== C++ under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan)"
  san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLMSAMPLE_BENCH=OFF \
    -DLMSAMPLE_CUDA=OFF -DCMAKE_C_FLAGS="$san" -DCMAKE_CXX_FLAGS="$san" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined"
  cmake --build build-asan -j
  # (the installed-package consumer is left out: it links the library without the sanitizers)
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j2 -LE package
fi

if [ "${CI:-}" = true ] || [ "${LMSAMPLE_TEST_FUZZ:-0}" = 1 ]; then
  echo "== fuzzers (60 s each)"
  bash scripts/fuzz.sh 60
fi

if [ "${CI:-}" = true ] || [ "${LMSAMPLE_TEST_GPU_BUILDS:-0}" = 1 ]; then
  nvcc="$(command -v nvcc || true)"
  if [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ]; then nvcc=/usr/local/cuda/bin/nvcc; fi
  if grep -q '^LMS_WITH_CUDA:.*=ON$\|^CMAKE_CUDA_COMPILER:[A-Z]*=/' build/CMakeCache.txt; then
    echo "== CUDA compile check: the main build compiled the CUDA backend"
  elif [ -n "$nvcc" ]; then
    echo "== CUDA compile check with $nvcc"
    cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DLMSAMPLE_CUDA=ON \
      -DCMAKE_CUDA_COMPILER="$nvcc" -DLMSAMPLE_TESTS=OFF -DLMSAMPLE_BENCH=OFF
    cmake --build build-cuda -j
  else
    echo "== CUDA compile check skipped: no nvcc"
  fi
  # HIP (AMD): the same GPU sources compiled by Debian's hipcc for gfx90a (CDNA, wave64) and
  # gfx1030 (RDNA, wave32), offline; then the HIP-linked tool must pass its self-check on the
  # CPU. (gfx1100 is not built: Debian's ROCm 5.2 device libraries stop at gfx1036.)
  if ! command -v hipcc >/dev/null 2>&1; then
    echo "== setup: apt-get install hipcc"
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends hipcc \
      >/dev/null
  fi
  echo "== HIP build (gfx90a, gfx1030)"
  cmake -S . -B build-hip -DCMAKE_BUILD_TYPE=Release -DLMSAMPLE_HIP=ON -DLMSAMPLE_TESTS=OFF \
    -DLMSAMPLE_BENCH=OFF
  cmake --build build-hip -j
  ./build-hip/lmsample verify --quick --backend cpu
fi
echo "== all tests passed"
