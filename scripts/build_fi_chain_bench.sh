#!/usr/bin/env bash
# Builds bench/peers/fi_chain_bench.cu (FlashInfer chain speculative sampling peer benchmark)
# into .dev/fi_chain_bench, for sm_90a (H100 / H200).
#
# The FlashInfer headers are the header-only kernels shipped in the flashinfer-python 0.5.3 wheel:
#   pip download flashinfer-python==0.5.3 --no-deps -d /tmp/fi
#   unzip /tmp/fi/flashinfer_python-0.5.3-py3-none-any.whl -d /tmp/fi/w
# which gives /tmp/fi/w/flashinfer/data/include/flashinfer/sampling.cuh. This script does both
# steps itself when that file is missing. FI_DIR overrides /tmp/fi, NVCC the compiler.
#
# usage: scripts/build_fi_chain_bench.sh        then: .dev/fi_chain_bench [vocab=151936]
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
fi_dir=${FI_DIR:-/tmp/fi}
inc=$fi_dir/w/flashinfer/data/include
whl=$fi_dir/flashinfer_python-0.5.3-py3-none-any.whl

if [ ! -f "$inc/flashinfer/sampling.cuh" ]; then
  mkdir -p "$fi_dir"
  if [ ! -f "$whl" ]; then
    python3 -m pip download flashinfer-python==0.5.3 --no-deps -d "$fi_dir"
  fi
  if command -v unzip >/dev/null; then
    unzip -q -o "$whl" -d "$fi_dir/w"
  else
    python3 -m zipfile -e "$whl" "$fi_dir/w"
  fi
fi

nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
mkdir -p "$here/.dev"
set -x
"$nvcc" -O3 -std=c++17 -arch=sm_90a -lineinfo -I"$inc" \
  -Xcompiler -Wall,-Wextra -Xcompiler -Wno-unused-parameter \
  "$here/bench/peers/fi_chain_bench.cu" -o "$here/.dev/fi_chain_bench"
