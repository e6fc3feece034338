// Greedy sampling of whole batches (docs/contract.md section 3: the lowest id among the maxima of
// the processed logits, kept = 1; no valid token: EMPTY). Launched instead of the general kernel
// where the host knows that every row is greedy (RowParams::defaults.temperature = 0 and no
// temperature array) and no step of the contract but the load and the canonicalisation applies:
// no bitmask, bias or penalties, no logprobs. Then a row is one read and an argmax: 16-byte loads,
// several in flight per thread, integer order keys (NaN -> -inf, -0 -> +0 as the contract's
// canonicalisation), one block and one row-group reduction. The result is the general kernel's,
// bit for bit (an argmax over exact keys has one answer).
#pragma once

#include "core/math.hpp"
#include "core/params.hpp"
#include "gpu/block.cuh"
#include "gpu/sample_kernel.cuh"

namespace lmsample::gpu {

// (key << 32) | (2^32 - 1 - index): the maximum of these is the largest key at its lowest index;
// 0 stands for "no valid token" (valid keys are above kKeyNegInf, so their packs are above 2^32).
__device__ __forceinline__ uint64_t greedy_pack(uint32_t key, int64_t index) {
  return key > core::kKeyNegInf
             ? (static_cast<uint64_t>(key) << 32) | (0xffffffffu - static_cast<uint32_t>(index))
             : 0;
}

struct GreedyMax {
  __device__ uint64_t operator()(uint64_t a, uint64_t b) const { return a > b ? a : b; }
};

// This thread's best pack over tokens [c0, c0 + n) of the row, reading 16 bytes at a time where
// the chunk is aligned, in increasing index order within each thread.
template <int kThreads>
__device__ uint64_t greedy_chunk(const void* row, DType dt, int64_t c0, int n) {
  uint64_t best = 0;
  const int esize = dt == DType::kFloat32 ? 4 : 2;
  const unsigned char* base = static_cast<const unsigned char*>(row) + c0 * esize;
  const int per_vec = 16 / esize;
  const bool aligned = (reinterpret_cast<uintptr_t>(base) & 15u) == 0;
  const int nvec = aligned ? n / per_vec : 0;
  const uint4* vec = reinterpret_cast<const uint4*>(base);
  const auto take = [&](uint32_t bits, int64_t i) {
    const uint64_t p = greedy_pack(core::canonical_key_of_bits(bits), c0 + i);
    best = p > best ? p : best;
  };
#pragma unroll 4
  for (int v = threadIdx.x; v < nvec; v += kThreads) {
    const uint4 w = vec[v];
    const uint32_t word[4] = {w.x, w.y, w.z, w.w};
    const int64_t i0 = static_cast<int64_t>(v) * per_vec;
    if (dt == DType::kFloat32) {
#pragma unroll
      for (int j = 0; j < 4; ++j) take(word[j], i0 + j);
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const uint16_t h = static_cast<uint16_t>(word[j / 2] >> (16 * (j % 2)));
        const uint32_t bits = dt == DType::kBFloat16 ? static_cast<uint32_t>(h) << 16
                                                     : core::float_bits(core::f16_to_float(h));
        take(bits, i0 + j);
      }
    }
  }
  for (int i = nvec * per_vec + static_cast<int>(threadIdx.x); i < n; i += kThreads)
    take(load_bits(row, dt, c0 + i), i);
  return best;
}

//! One row per group of CTAs (a cluster on Hopper), `chunk` tokens per CTA; outputs tokens,
//! statuses and (where asked) kept sizes.
template <int kThreads>
__global__ void __launch_bounds__(kThreads, 2) greedy_rows_kernel(const KernelArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  using B = Block<kThreads>;
  Exchange& ex = *reinterpret_cast<Exchange*>(smem);
  const RowGroup g;
  const int64_t row = blockIdx.x / g.size();
  const Request& req = a.req;
  const int64_t V = req.logits.vocab;
  const int64_t c0 = static_cast<int64_t>(g.rank()) * a.chunk;
  const int n = static_cast<int>(c0 >= V ? 0 : (V - c0 < a.chunk ? V - c0 : a.chunk));
  g.arrive();  // waited for before the first write into a sibling's shared memory
  const size_t esize = req.logits.dtype == DType::kFloat32 ? 4 : 2;
  const void* logits = static_cast<const unsigned char*>(req.logits.data) +
                       static_cast<size_t>(row) * static_cast<size_t>(a.stride) * esize;
  uint64_t best = greedy_chunk<kThreads>(logits, req.logits.dtype, c0, n);
  best = B::allreduce(best, GreedyMax{}, ex);
  g.wait();  // every sibling has started: its shared memory may be written
  int phase = 0;
  best = group_allreduce(g, ex, phase, best, GreedyMax{});
  if (g.rank() != 0 || threadIdx.x != 0) return;
  // the row's parameters still decide its status (a bad top_k array entry, say)
  int32_t status = core::validate_row_settings(core::load_row_settings(req.params, row));
  int32_t token = -1, kept = 0;
  if (status == kRowOk) {
    if (best == 0) {
      status = kRowEmpty;
    } else {
      token = static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(best));
      kept = 1;
    }
  }
  a.out.tokens[row] = token;
  a.out.status[row] = status;
  if (a.out.kept) a.out.kept[row] = kept;
}

}  // namespace lmsample::gpu
