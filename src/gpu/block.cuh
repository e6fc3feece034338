// Block- and row-group-level primitives (reduce, scan, radix select), templated on the block
// size; the warp size is the compile-time constant kWarpSize (32 on NVIDIA and RDNA, 64 on CDNA).
// Every reduction here is over integers or exact selections, so the result does not depend on
// the order in which threads or CTAs combine.
#pragma once

#include "core/port.hpp"

namespace lmsample::gpu {

//! Shared memory every CTA of a row uses to exchange partial results with its siblings.
//! Exchange buffers are double-buffered: a buffer is written again only two exchanges later,
//! and every exchange has a group barrier, so no CTA overwrites what a sibling still reads.
struct alignas(16) Exchange {
  uint64_t hist[2][256];  // radix histograms
  uint64_t merged[256];   // the group's histogram (local copy)
  uint64_t slot[2][8];    // scalar partials (64 bytes)
  uint64_t scratch[64 * 4];  // block-reduce scratch: up to 64 warps x 32 bytes
  uint64_t bcast[4];      // block broadcast
  uint64_t top[64];       // top-n entries gathered in rank 0
  uint32_t top_count;
};

template <int kThreads>
struct Block {
  static constexpr int kWarps = kThreads / kWarpSize;
  static_assert(kThreads % kWarpSize == 0, "block size must be a multiple of the warp size");
  static_assert(kWarps <= 64, "too many warps");

  //! All-reduce of a trivially copyable value (sizeof <= 32) with an associative, commutative
  //! and exact `op`; every thread gets the result. Contains two block barriers.
  template <typename T, typename Op>
  static __device__ T allreduce(T v, Op op, Exchange& ex) {
    static_assert(sizeof(T) <= 32, "value too large");
#pragma unroll
    for (int m = kWarpSize / 2; m > 0; m >>= 1) v = op(v, shfl_xor(v, m));
    T* s = reinterpret_cast<T*>(ex.scratch);
    if (threadIdx.x % kWarpSize == 0) s[threadIdx.x / kWarpSize] = v;
    __syncthreads();
    T r = s[0];
    for (int w = 1; w < kWarps; ++w) r = op(r, s[w]);
    __syncthreads();
    return r;
  }

  //! Inclusive prefix sum over the block in thread order; *total gets the block's sum.
  static __device__ uint64_t inclusive_scan(uint64_t v, uint64_t* total, Exchange& ex) {
    const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
#pragma unroll
    for (int d = 1; d < kWarpSize; d <<= 1) {
      const uint64_t t = shfl_up(v, d);
      if (lane >= d) v += t;
    }
    if (lane == kWarpSize - 1) ex.scratch[warp] = v;
    __syncthreads();
    uint64_t before = 0, all = 0;
    for (int w = 0; w < kWarps; ++w) {
      const uint64_t s = ex.scratch[w];
      before += w < warp ? s : 0;
      all += s;
    }
    __syncthreads();
    *total = all;
    return v + before;
  }
};

//! Sums over the row group of each CTA's block-uniform pair `mine`; *before gets the sums over
//! the CTAs of lower rank (earlier tokens). One group barrier.
struct Sum2 {
  uint64_t a, b;
};
__device__ inline Sum2 group_sum2(const RowGroup& g, Exchange& ex, int& phase, Sum2 mine,
                                  Sum2* before) {
  uint64_t* slot = ex.slot[phase];
  phase ^= 1;
  if (threadIdx.x == 0) {
    slot[0] = mine.a;
    slot[1] = mine.b;
  }
  g.sync();
  Sum2 all{0, 0}, b{0, 0};
  const unsigned rank = g.rank(), n = g.size();
  for (unsigned q = 0; q < n; ++q) {
    const uint64_t* r = g.map(slot, q);
    const uint64_t va = r[0], vb = r[1];
    all.a += va;
    all.b += vb;
    b.a += q < rank ? va : 0;
    b.b += q < rank ? vb : 0;
  }
  if (before) *before = b;
  return all;
}

//! Sum over the row group of each CTA's block-uniform `mine`; *before gets the sum over the
//! CTAs of lower rank. One group barrier.
__device__ inline uint64_t group_sum(const RowGroup& g, Exchange& ex, int& phase, uint64_t mine,
                                     uint64_t* before) {
  Sum2 b{0, 0};
  const Sum2 all = group_sum2(g, ex, phase, Sum2{mine, 0}, &b);
  if (before) *before = b.a;
  return all.a;
}

//! Group all-reduce of a block-uniform value (sizeof <= 64). One group barrier.
template <typename T, typename Op>
__device__ T group_allreduce(const RowGroup& g, Exchange& ex, int& phase, T mine, Op op) {
  static_assert(sizeof(T) <= sizeof(ex.slot[0]), "value too large");
  T* slot = reinterpret_cast<T*>(ex.slot[phase]);
  phase ^= 1;
  if (threadIdx.x == 0) *slot = mine;
  g.sync();
  T r = *g.map(slot, 0);
  for (unsigned q = 1; q < g.size(); ++q) r = op(r, *g.map(slot, q));
  return r;
}

//! Largest key t such that the total weight of the group's entries with key >= t reaches
//! `target` (1 <= target <= total weight). Four rounds of 8-bit digits; each round is a pass over
//! this CTA's n entries, a shared-memory histogram (integer atomics: order-free), a group-wide
//! merge through distributed shared memory and a warp scan from the top bucket down.
//! key_at(i) gives entry i's key, weight_of(key, i) its weight (0 = not an entry; with
//! kUnitWeights every entry weighs 1, and lanes of a warp aggregate their histogram updates).
template <int kThreads, bool kUnitWeights, typename KeyAt, typename WeightOf>
__device__ uint32_t group_select(const RowGroup& g, Exchange& ex, int& hphase, int n,
                                 KeyAt key_at, WeightOf weight_of, uint64_t target) {
  uint32_t prefix = 0, pmask = 0;
  uint64_t above = 0;
  for (int round = 0; round < 4; ++round) {
    const int shift = 24 - 8 * round;
    uint64_t* h = ex.hist[hphase];
    hphase ^= 1;
    for (int b = threadIdx.x; b < 256; b += kThreads) h[b] = 0;
    __syncthreads();
    // Every lane of the warp runs the same number of iterations (match_any needs them all);
    // lanes that hit the same bucket with unit weights add once, through their leader.
    const int n_pad = (n + kThreads - 1) / kThreads * kThreads;
    for (int i = threadIdx.x; i < n_pad; i += kThreads) {
      uint64_t w = 0;
      uint32_t bucket = 256;  // no bucket
      if (i < n) {
        const uint32_t k = key_at(i);
        if ((k & pmask) == prefix) {
          w = weight_of(k, i);
          if (w) bucket = (k >> shift) & 255u;
        }
      }
      if (kUnitWeights) {
        const uint64_t peers = match_any(bucket);
        const bool leader = (peers & ((uint64_t{1} << lane_id()) - 1)) == 0;
        if (bucket < 256 && leader) atomic_add_u64(&h[bucket], static_cast<uint64_t>(__popcll(static_cast<long long>(peers))));
      } else if (bucket < 256) {
        atomic_add_u64(&h[bucket], w);
      }
    }
    g.sync();
    for (int b = threadIdx.x; b < 256; b += kThreads) {
      uint64_t s = 0;
      for (unsigned q = 0; q < g.size(); ++q) s += g.map(h, q)[b];
      ex.merged[b] = s;
    }
    __syncthreads();
    if (threadIdx.x < kWarpSize) {
      constexpr int kPer = 256 / kWarpSize;  // buckets per lane, lane 0 owns the top ones
      const int lane = threadIdx.x;
      uint64_t part = 0;
#pragma unroll
      for (int j = 0; j < kPer; ++j) part += ex.merged[255 - lane * kPer - j];
      uint64_t incl = part;
#pragma unroll
      for (int d = 1; d < kWarpSize; d <<= 1) {
        const uint64_t t = shfl_up(incl, d);
        if (lane >= d) incl += t;
      }
      const uint64_t need = target - above;
      const uint64_t hit = ballot(incl >= need);
      const int first = hit ? __ffsll(static_cast<long long>(hit)) - 1 : kWarpSize - 1;
      if (lane == first) {
        uint64_t cum = incl - part;
        int bucket = 255 - lane * kPer - (kPer - 1);
        for (int j = 0; j < kPer; ++j) {
          const int b = 255 - lane * kPer - j;
          if (cum + ex.merged[b] >= need) {
            bucket = b;
            break;
          }
          cum += ex.merged[b];
        }
        ex.bcast[0] = static_cast<uint64_t>(bucket);
        ex.bcast[1] = above + cum;
      }
    }
    __syncthreads();
    prefix |= static_cast<uint32_t>(ex.bcast[0]) << shift;
    pmask |= 255u << shift;
    above = ex.bcast[1];
    __syncthreads();
  }
  return prefix;
}

}  // namespace lmsample::gpu
