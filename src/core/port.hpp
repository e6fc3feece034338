// The one portability header: host C++, CUDA and HIP see the contract's arithmetic, and the GPU
// code sees every vendor-specific spelling (warp size, shuffles, ballots, clusters, runtime API),
// through it. No other file spells CUDA- or HIP-only names.
//
// Everything the contract computes goes through the functions below so that no compiler may fuse,
// reorder or approximate it: on the device they are the round-to-nearest intrinsics (which nvcc
// and hipcc never contract into FMAs); on the host they are plain IEEE operations, and the build
// passes -ffp-contract=off and never fast-math.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LMS_HD __host__ __device__ __forceinline__
#define LMS_GPU_COMPILER 1
#else
#define LMS_HD inline
#define LMS_GPU_COMPILER 0
#endif

#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
#define LMS_DEVICE_PASS 1
#else
#define LMS_DEVICE_PASS 0
#endif

#if defined(__HIPCC__)
#include <hip/hip_runtime.h>
#elif defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

namespace lmsample::core {

// ---- exact IEEE-754 single-precision operations (round to nearest even) ----
LMS_HD float add_rn(float a, float b) {
#if LMS_DEVICE_PASS
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
LMS_HD float sub_rn(float a, float b) {
#if LMS_DEVICE_PASS
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
LMS_HD float mul_rn(float a, float b) {
#if LMS_DEVICE_PASS
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
LMS_HD float div_rn(float a, float b) {
#if LMS_DEVICE_PASS
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

//! a * b + c with one rounding (IEEE fusedMultiplyAdd). Written out where the contract says so
//! (core::exp_nonpos); nothing else is fused (no implicit contraction on any backend). On the
//! host it is the compiler's fmaf: one instruction where the ISA level has FMA (the CPU backend's
//! avx2 level is built with -mfma), libm's exact software fmaf elsewhere.
LMS_HD float fma_rn(float a, float b, float c) {
#if LMS_DEVICE_PASS
  return __fmaf_rn(a, b, c);
#else
  return __builtin_fmaf(a, b, c);
#endif
}

// ---- exact double-precision operations (only used for logprobs) ----
LMS_HD double dadd_rn(double a, double b) {
#if LMS_DEVICE_PASS
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
LMS_HD double dmul_rn(double a, double b) {
#if LMS_DEVICE_PASS
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
LMS_HD double ddiv_rn(double a, double b) {
#if LMS_DEVICE_PASS
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}

// ---- bit casts ----
LMS_HD uint32_t float_bits(float f) {
#if LMS_DEVICE_PASS
  return static_cast<uint32_t>(__float_as_uint(f));
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}
LMS_HD float bits_float(uint32_t u) {
#if LMS_DEVICE_PASS
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}
LMS_HD uint64_t double_bits(double d) {
#if LMS_DEVICE_PASS
  return static_cast<uint64_t>(__double_as_longlong(d));
#else
  uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
#endif
}
LMS_HD double bits_double(uint64_t u) {
#if LMS_DEVICE_PASS
  return __longlong_as_double(static_cast<long long>(u));
#else
  double d;
  std::memcpy(&d, &u, sizeof d);
  return d;
#endif
}

// ---- 64 x 64 -> 128-bit unsigned multiply ----
struct U128 {
  uint64_t hi;
  uint64_t lo;
};
LMS_HD U128 mul_u64(uint64_t a, uint64_t b) {
#if LMS_DEVICE_PASS
  return U128{__umul64hi(a, b), a * b};
#else
  __extension__ typedef unsigned __int128 u128;
  const u128 p = static_cast<u128>(a) * b;
  return U128{static_cast<uint64_t>(p >> 64), static_cast<uint64_t>(p)};
#endif
}

// ---- special values without <cmath> (device-safe) ----
LMS_HD float pos_inf() { return bits_float(0x7f800000u); }
LMS_HD float neg_inf() { return bits_float(0xff800000u); }
LMS_HD bool is_nan(float f) { return (float_bits(f) & 0x7fffffffu) > 0x7f800000u; }
LMS_HD bool is_finite(float f) { return (float_bits(f) & 0x7f800000u) != 0x7f800000u; }

// ---- element conversions (exact) ----
LMS_HD float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }
LMS_HD float f16_to_float(uint16_t h) {
  // Exact IEEE binary16 -> binary32 (subnormals, infinities and NaN included), branch-free.
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  const uint32_t normal = ((exp + 112u) << 23) | (mant << 13);
  const uint32_t special = 0x7f800000u | (mant << 13);
  // a subnormal half is mant * 2^-24: exact in float
  const uint32_t sub = float_bits(mul_rn(static_cast<float>(mant), 5.9604644775390625e-08f));
  const uint32_t mag = exp == 0 ? sub : (exp == 0x1fu ? special : normal);
  return bits_float(sign | mag);
}

}  // namespace lmsample::core

// ===================== GPU spelling (CUDA and HIP), device code only =====================
// (LMS_SIMT_EMULATION: the host emulation of one thread block that the tests of src/gpu/'s
// block-level code run on, for both warp sizes; see core/simt_host.hpp.)
#if LMS_GPU_COMPILER || defined(LMS_SIMT_EMULATION)
#if defined(LMS_SIMT_EMULATION)
#include "core/simt_host.hpp"
#define LMS_WARP_SIZE LMS_SIMT_WARP
#define LMS_HAS_CLUSTERS 0
#elif defined(__HIPCC__)
// Wave size is a compile-time constant of the device pass: 64 on CDNA, 32 on RDNA.
#if defined(__AMDGCN_WAVEFRONT_SIZE)
#define LMS_WARP_SIZE __AMDGCN_WAVEFRONT_SIZE
#else
#define LMS_WARP_SIZE 64  // host pass: never used for device code
#endif
#define LMS_HAS_CLUSTERS 0
#define gpuStream_t hipStream_t
#define gpuError_t hipError_t
#define gpuSuccess hipSuccess
#define gpuGetErrorString hipGetErrorString
#define gpuGetLastError hipGetLastError
#define gpuGetDevice hipGetDevice
#define gpuGetDeviceCount hipGetDeviceCount
#define gpuMemsetAsync hipMemsetAsync
#define gpuDeviceGetAttribute hipDeviceGetAttribute
#define gpuDevAttrMultiProcessorCount hipDeviceAttributeMultiprocessorCount
#define gpuDevAttrMaxSharedMemoryPerBlockOptin hipDeviceAttributeSharedMemPerBlockOptin
#define gpuDevAttrComputeCapabilityMajor hipDeviceAttributeComputeCapabilityMajor
#define gpuFuncSetAttribute hipFuncSetAttribute
#define gpuFuncAttributeMaxDynamicSharedMemorySize hipFuncAttributeMaxDynamicSharedMemorySize
#else
#include <cooperative_groups.h>
#define LMS_WARP_SIZE 32
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define LMS_HAS_CLUSTERS 1
#else
#define LMS_HAS_CLUSTERS 0
#endif
#define gpuStream_t cudaStream_t
#define gpuError_t cudaError_t
#define gpuSuccess cudaSuccess
#define gpuGetErrorString cudaGetErrorString
#define gpuGetLastError cudaGetLastError
#define gpuGetDevice cudaGetDevice
#define gpuGetDeviceCount cudaGetDeviceCount
#define gpuMemsetAsync cudaMemsetAsync
#define gpuDeviceGetAttribute cudaDeviceGetAttribute
#define gpuDevAttrMultiProcessorCount cudaDevAttrMultiProcessorCount
#define gpuDevAttrMaxSharedMemoryPerBlockOptin cudaDevAttrMaxSharedMemoryPerBlockOptin
#define gpuDevAttrComputeCapabilityMajor cudaDevAttrComputeCapabilityMajor
#define gpuFuncSetAttribute cudaFuncSetAttribute
#define gpuFuncAttributeMaxDynamicSharedMemorySize cudaFuncAttributeMaxDynamicSharedMemorySize
#endif

namespace lmsample::gpu {

constexpr int kWarpSize = LMS_WARP_SIZE;

// Warp shuffles of any trivially copyable value, as 32-bit words.
template <typename T, typename WordShuffle>
__device__ __forceinline__ T shuffle_words(T v, WordShuffle shuffle) {
  constexpr int kWords = (sizeof(T) + 3) / 4;
  uint32_t w[kWords] = {};
  memcpy(w, &v, sizeof(T));
#pragma unroll
  for (int i = 0; i < kWords; ++i) w[i] = shuffle(w[i]);
  memcpy(&v, w, sizeof(T));
  return v;
}
template <typename T>
__device__ __forceinline__ T shfl_xor(T v, int mask) {
  return shuffle_words(v, [mask](uint32_t x) {
#if defined(LMS_SIMT_EMULATION)
    return lms_simt::shfl_word(x, lms_simt::lane() ^ mask);
#elif defined(__HIPCC__)
    return static_cast<uint32_t>(__shfl_xor(static_cast<int>(x), mask));
#else
    return __shfl_xor_sync(0xffffffffu, x, mask);
#endif
  });
}
template <typename T>
__device__ __forceinline__ T shfl_up(T v, int delta) {
  return shuffle_words(v, [delta](uint32_t x) {
#if defined(LMS_SIMT_EMULATION)
    const int lane = lms_simt::lane();
    return lms_simt::shfl_word(x, lane >= delta ? lane - delta : lane);
#elif defined(__HIPCC__)
    return static_cast<uint32_t>(__shfl_up(static_cast<int>(x), delta));
#else
    return __shfl_up_sync(0xffffffffu, x, delta);
#endif
  });
}
//! Bit l set when lane l's predicate holds (bits above the warp size are 0).
__device__ __forceinline__ uint64_t ballot(bool pred) {
#if defined(LMS_SIMT_EMULATION)
  return lms_simt::ballot(pred);
#elif defined(__HIPCC__)
  return static_cast<uint64_t>(__ballot(pred));
#else
  return static_cast<uint64_t>(__ballot_sync(0xffffffffu, pred));
#endif
}
__device__ __forceinline__ uint32_t shfl_idx(uint32_t v, int src_lane) {
#if defined(LMS_SIMT_EMULATION)
  return lms_simt::shfl_word(v, src_lane);
#elif defined(__HIPCC__)
  return static_cast<uint32_t>(__shfl(static_cast<int>(v), src_lane));
#else
  return __shfl_sync(0xffffffffu, v, src_lane);
#endif
}

__device__ __forceinline__ uint64_t shfl_idx64(uint64_t v, int src_lane) {
  const uint32_t lo = shfl_idx(static_cast<uint32_t>(v), src_lane);
  const uint32_t hi = shfl_idx(static_cast<uint32_t>(v >> 32), src_lane);
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

//! Warp-wide max / min / sum of 32-bit values: one instruction on NVIDIA sm_80+, a butterfly of
//! shuffles elsewhere. Every lane of the warp must call it; every lane gets the result.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(__HIPCC__)
__device__ __forceinline__ uint32_t warp_max_u32(uint32_t v) {
  return __reduce_max_sync(0xffffffffu, v);
}
__device__ __forceinline__ uint32_t warp_min_u32(uint32_t v) {
  return __reduce_min_sync(0xffffffffu, v);
}
__device__ __forceinline__ uint32_t warp_sum_u32(uint32_t v) {
  return __reduce_add_sync(0xffffffffu, v);
}
#else
template <typename Op>
__device__ __forceinline__ uint32_t warp_reduce_u32(uint32_t v, Op op) {
#pragma unroll
  for (int m = kWarpSize / 2; m > 0; m >>= 1) v = op(v, shfl_xor(v, m));
  return v;
}
__device__ __forceinline__ uint32_t warp_max_u32(uint32_t v) {
  return warp_reduce_u32(v, [](uint32_t a, uint32_t b) { return a > b ? a : b; });
}
__device__ __forceinline__ uint32_t warp_min_u32(uint32_t v) {
  return warp_reduce_u32(v, [](uint32_t a, uint32_t b) { return a < b ? a : b; });
}
__device__ __forceinline__ uint32_t warp_sum_u32(uint32_t v) {
  return warp_reduce_u32(v, [](uint32_t a, uint32_t b) { return a + b; });
}
#endif
__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x % kWarpSize); }
__device__ __forceinline__ void sync_warp() {
#if defined(LMS_SIMT_EMULATION)
  lms_simt::sync_warp();
#elif !defined(__HIPCC__)
  __syncwarp();
#endif
}
//! 16-byte copies from global to shared memory that bypass the registers (cp.async, sm_80+):
//! a thread issues any number, then async_copy_wait() makes its own copies visible to it.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(__HIPCC__)
#define LMS_HAS_ASYNC_COPY 1
__device__ __forceinline__ void async_copy16(void* smem, const void* gmem) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(gmem) : "memory");
}
__device__ __forceinline__ void async_copy_wait() {
  asm volatile("cp.async.commit_group;\n\tcp.async.wait_group 0;" ::: "memory");
}
#else
#define LMS_HAS_ASYNC_COPY 0
#endif
//! 2^23 + floor(x) for x in [0, 2^23), exactly (the GPU code's float floor without a
//! conversion, temperature_kernel.cuh): on CUDA x + 2^23 rounded toward zero (a full-rate add;
//! the sum lies in [2^23, 2^24), whose ulp is 1), on HIP truncf(x) + 2^23 (exact).
#if !defined(LMS_SIMT_EMULATION)
__device__ __forceinline__ float floor_plus_2p23(float x) {
#if defined(__HIPCC__)
  return __fadd_rn(truncf(x), 8388608.0f);
#else
  return __fadd_rz(x, 8388608.0f);
#endif
}
#endif
#if !defined(LMS_SIMT_EMULATION)
//! Orders this thread's earlier writes before its later ones for every thread of the device
//! (the release half of a flag: write data, fence, then raise the flag; the reader spins on the
//! flag with volatile loads, then fences before it reads the data).
__device__ __forceinline__ void device_fence() { __threadfence(); }
//! Programmatic dependent launch (CUDA, sm_90 on): a kernel launched with it (verify_gpu.cu's
//! launch_dependent) may start while the kernel before it in the stream still runs, and must call
//! grid_dependency_wait() before it touches memory that kernel reads or writes: the wait returns
//! once that kernel has finished and its writes are visible. grid_dependency_trigger() lets the
//! next such kernel start before this one ends. Both are no-ops for a launch without it, before
//! sm_90 and on HIP.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(__HIPCC__)
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dependency_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(__HIPCC__)
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}
//! Pauses a spinning thread for about `ns` nanoseconds.
__device__ __forceinline__ void spin_pause(unsigned ns) {
#if defined(__HIPCC__)
  (void)ns;
  __builtin_amdgcn_s_sleep(1);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  __nanosleep(ns);
#else
  (void)ns;
#endif
}
#endif
//! The larger of each 16-bit half of a and b, unsigned (two lanes of one word).
__device__ __forceinline__ uint32_t max_u16x2(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__) && !defined(__HIPCC__) && !defined(LMS_SIMT_EMULATION)
  return __vmaxu2(a, b);
#else
  const uint32_t hi = (a >> 16) > (b >> 16) ? a >> 16 : b >> 16;
  const uint32_t lo = (a & 0xffffu) > (b & 0xffffu) ? a & 0xffffu : b & 0xffffu;
  return (hi << 16) | lo;
#endif
}
//! p += v (mod 2^64) on shared memory, as two native 32-bit atomics on the halves with the low
//! half's carry added to the high half (a 64-bit shared-memory atomic add is a compare-and-swap
//! loop on NVIDIA, which contention turns into thousands of retries). Exact and order-free: once
//! every add has landed, the word holds the sum.
__device__ __forceinline__ void atomic_add_u64(uint64_t* p, uint64_t v) {
  unsigned* half = reinterpret_cast<unsigned*>(p);  // little endian: [0] low, [1] high
  const unsigned lo = static_cast<unsigned>(v);
  const unsigned old = lo ? atomicAdd(half, lo) : 0u;
  const unsigned carry = old + lo < old ? 1u : 0u;
  const unsigned hi = static_cast<unsigned>(v >> 32) + carry;
  if (hi) atomicAdd(half + 1, hi);
}

//! A row group of one CTA.
struct SingleBlock {
  __device__ unsigned rank() const { return 0; }
  __device__ unsigned size() const { return 1; }
  __device__ void sync() const { __syncthreads(); }
  __device__ void arrive() const {}
  __device__ void wait() const {}
  template <typename T>
  __device__ T* map(T* p, unsigned) const {
    return p;
  }
};

//! The CTAs that share one row: a thread-block cluster on Hopper (distributed shared memory,
//! hardware barrier, co-scheduled by construction so no wait can hang), else one CTA.
#if LMS_HAS_CLUSTERS
struct RowGroup {
  __device__ unsigned rank() const { return cooperative_groups::this_cluster().block_rank(); }
  __device__ unsigned size() const { return cooperative_groups::this_cluster().num_blocks(); }
  __device__ void sync() const { cooperative_groups::this_cluster().sync(); }
  // A split barrier (every thread of every CTA of the group, convergent): after wait(), every
  // CTA of the group has arrived, so its shared memory may be written. No memory ordering.
  __device__ void arrive() const {
    asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
  }
  __device__ void wait() const { asm volatile("barrier.cluster.wait.aligned;" ::: "memory"); }
  template <typename T>
  __device__ T* map(T* p, unsigned r) const {
    return cooperative_groups::this_cluster().map_shared_rank(p, r);
  }
};
#else
using RowGroup = SingleBlock;
#endif

}  // namespace lmsample::gpu
#endif  // LMS_GPU_COMPILER
