// What the GPU benchmarks share (lmsample_bench_gpu, lmsample_bench_verify_gpu): the synthetic
// logits, the floor (one read of the logits), and the timing method (CUDA events, cold L2: a
// >= 2x L2 scratch buffer rewritten before every run, untimed; warm-ups; the median).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace lmsbench {

#define CK(expr)                                                                \
  do {                                                                          \
    const cudaError_t e_ = (expr);                                              \
    if (e_ != cudaSuccess) {                                                    \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, \
                   cudaGetErrorString(e_));                                     \
      std::exit(1);                                                             \
    }                                                                           \
  } while (0)

// ---- kernels --------------------------------------------------------------------------------
__device__ __forceinline__ uint64_t splitmix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

//! logits = N(0,1) * 4 (peaked) or all 0 (flat), as fp32 / bf16 / fp16.
__global__ void gen_logits(void* out, int64_t n, int dtype, int flat, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float x = 0.0f;
    if (!flat) {
      const uint64_t h = splitmix(seed ^ (static_cast<uint64_t>(i) * 0xd1342543de82ef95ull));
      const float u1 = (static_cast<float>(h >> 40) + 1.0f) * 0x1.0p-24f;
      const float u2 = static_cast<float>((h >> 16) & 0xffffffu) * 0x1.0p-24f;
      x = 4.0f * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
    }
    if (dtype == 0)
      static_cast<float*>(out)[i] = x;
    else if (dtype == 1)
      static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(x);
    else
      static_cast<__half*>(out)[i] = __float2half_rn(x);
  }
}

__device__ __forceinline__ unsigned order_key(float f) {
  const unsigned u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float max8_16(uint4 v, int dtype) {
  if (dtype == 0) {
    return fmaxf(fmaxf(__uint_as_float(v.x), __uint_as_float(v.y)),
                 fmaxf(__uint_as_float(v.z), __uint_as_float(v.w)));
  }
  const unsigned w[4] = {v.x, v.y, v.z, v.w};
  float m = -INFINITY;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    float lo, hi;
    if (dtype == 1) {
      lo = __uint_as_float(w[j] << 16);
      hi = __uint_as_float(w[j] & 0xffff0000u);
    } else {
      lo = __half2float(__ushort_as_half(static_cast<unsigned short>(w[j] & 0xffffu)));
      hi = __half2float(__ushort_as_half(static_cast<unsigned short>(w[j] >> 16)));
    }
    m = fmaxf(m, fmaxf(lo, hi));
  }
  return m;
}
__device__ __forceinline__ float load_scalar(const unsigned char* p, int64_t i, int dtype) {
  if (dtype == 0) return reinterpret_cast<const float*>(p)[i];
  const unsigned short h = reinterpret_cast<const unsigned short*>(p)[i];
  return dtype == 1 ? __uint_as_float(static_cast<unsigned>(h) << 16)
                    : __half2float(__ushort_as_half(h));
}

//! The floor: reads every logit once. grid = (chunks per row, B); 16-byte loads, 4 in flight per
//! thread; a block max-reduction and one atomicMax per block into out[row].
__global__ void __launch_bounds__(256) floor_read(const unsigned char* logits, int64_t vocab,
                                                  int64_t chunk, int dtype, unsigned* out) {
  const int64_t row = blockIdx.y;
  const int esz = dtype == 0 ? 4 : 2;
  const unsigned char* base = logits + row * vocab * esz;
  const int64_t begin = blockIdx.x * chunk;
  const int64_t end = min(vocab, begin + chunk);
  float m = -INFINITY;
  if (begin < end) {
    const int per_vec = 16 / esz;
    // aligned vector part: [vb, ve) in elements
    const uintptr_t addr = reinterpret_cast<uintptr_t>(base + begin * esz);
    const int64_t head = ((16 - static_cast<int64_t>(addr & 15)) & 15) / esz;
    const int64_t vb = min(end, begin + head);
    const int64_t nvec = (end - vb) / per_vec;
    const int64_t ve = vb + nvec * per_vec;
    const uint4* vp = reinterpret_cast<const uint4*>(base + vb * esz);
    int64_t k = threadIdx.x;
    for (; k + 3 * blockDim.x < nvec; k += 4 * blockDim.x) {
      const uint4 a = __ldg(vp + k), b = __ldg(vp + k + blockDim.x),
                  c = __ldg(vp + k + 2 * blockDim.x), d = __ldg(vp + k + 3 * blockDim.x);
      m = fmaxf(m, fmaxf(fmaxf(max8_16(a, dtype), max8_16(b, dtype)),
                         fmaxf(max8_16(c, dtype), max8_16(d, dtype))));
    }
    for (; k < nvec; k += blockDim.x) m = fmaxf(m, max8_16(__ldg(vp + k), dtype));
    for (int64_t i = begin + threadIdx.x; i < vb; i += blockDim.x)
      m = fmaxf(m, load_scalar(base, i, dtype));
    for (int64_t i = ve + threadIdx.x; i < end; i += blockDim.x)
      m = fmaxf(m, load_scalar(base, i, dtype));
  }
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  __shared__ float warp_max[8];
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) m = fmaxf(m, warp_max[w]);
    atomicMax(out + row, order_key(m));
  }
}

struct Timing {
  double median_us = 0, p10_us = 0, p90_us = 0;
};

//! Median (and p10/p90) of `iters` runs of `fn` after `warmup` runs; the L2 is flushed (untimed)
//! before each run by rewriting `flush` (>= 2x L2).
template <class Fn>
Timing time_runs(cudaStream_t st, void* flush, size_t flush_bytes, int warmup, int iters, Fn&& fn) {
  // LMS_BENCH_WARM_L2=1: no flush (a diagnostic: what the cold L2, instruction fetches
  // included, costs); the committed results always flush
  static const bool warm = std::getenv("LMS_BENCH_WARM_L2") != nullptr;
  if (warm) flush_bytes = 0;
  for (int i = 0; i < warmup; ++i) {
    CK(cudaMemsetAsync(flush, i & 0xff, flush_bytes, st));
    fn();
  }
  std::vector<cudaEvent_t> ev(2 * static_cast<size_t>(iters));
  for (cudaEvent_t& e : ev) CK(cudaEventCreate(&e));
  for (int i = 0; i < iters; ++i) {
    CK(cudaMemsetAsync(flush, (i + 1) & 0xff, flush_bytes, st));
    CK(cudaEventRecord(ev[2 * static_cast<size_t>(i)], st));
    fn();
    CK(cudaEventRecord(ev[2 * static_cast<size_t>(i) + 1], st));
  }
  CK(cudaStreamSynchronize(st));
  std::vector<double> us;
  for (int i = 0; i < iters; ++i) {
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, ev[2 * static_cast<size_t>(i)],
                            ev[2 * static_cast<size_t>(i) + 1]));
    us.push_back(static_cast<double>(ms) * 1000.0);
  }
  for (cudaEvent_t& e : ev) CK(cudaEventDestroy(e));
  std::sort(us.begin(), us.end());
  auto q = [&](double f) {
    return us[std::min(us.size() - 1,
                       static_cast<size_t>(f * static_cast<double>(us.size() - 1) + 0.5))];
  };
  Timing t;
  t.median_us =
      us.size() % 2 ? us[us.size() / 2] : 0.5 * (us[us.size() / 2 - 1] + us[us.size() / 2]);
  t.p10_us = q(0.1);
  t.p90_us = q(0.9);
  return t;
}

}  // namespace lmsbench
