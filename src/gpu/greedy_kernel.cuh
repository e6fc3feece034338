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
// the chunk is aligned. A thread visits its tokens in increasing index order, so a strict > keeps
// the lowest index of its maximum; within a vector only the vector's maximum key is compared with
// the best so far, and the index of its first occurrence is looked up only when it is larger (a
// few times per row), so a token costs its exact key and a 32-bit max.
template <int kThreads>
__device__ uint64_t greedy_chunk(const void* row, DType dt, int64_t c0, int n) {
  uint32_t best_key = core::kKeyNegInf;
  int best_i = -1;
  const int esize = dt == DType::kFloat32 ? 4 : 2;
  const unsigned char* base = static_cast<const unsigned char*>(row) + c0 * esize;
  const int per_vec = 16 / esize;
  const bool aligned = (reinterpret_cast<uintptr_t>(base) & 15u) == 0;
  const int nvec = aligned ? n / per_vec : 0;
  const uint4* vec = reinterpret_cast<const uint4*>(base);
  const auto bits16 = [dt](uint32_t word, int half) {
    const uint16_t h = static_cast<uint16_t>(word >> (16 * half));
    return dt == DType::kBFloat16 ? static_cast<uint32_t>(h) << 16
                                  : core::float_bits(core::f16_to_float(h));
  };
  // The 8 exact keys of 16-bit vector v (its words), and the best key and index updated.
  const auto exact8 = [&](const uint32_t(&word)[4], int v) {
    uint32_t k[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) k[j] = core::canonical_key_of_bits(bits16(word[j / 2], j % 2));
    uint32_t mx = k[0];
#pragma unroll
    for (int j = 1; j < 8; ++j) mx = k[j] > mx ? k[j] : mx;
    if (mx > best_key) {
      best_key = mx;
      int first = 7;
#pragma unroll
      for (int j = 6; j >= 0; --j) first = k[j] == mx ? j : first;
      best_i = v * 8 + first;
    }
  };
  if (dt == DType::kFloat32) {
#pragma unroll 4
    for (int v = threadIdx.x; v < nvec; v += kThreads) {
      const uint4 w = vec[v];
      const uint32_t k0 = core::canonical_key_of_bits(w.x), k1 = core::canonical_key_of_bits(w.y),
                     k2 = core::canonical_key_of_bits(w.z), k3 = core::canonical_key_of_bits(w.w);
      const uint32_t m01 = k0 > k1 ? k0 : k1, m23 = k2 > k3 ? k2 : k3;
      const uint32_t mx = m01 > m23 ? m01 : m23;
      if (mx > best_key) {
        best_key = mx;
        best_i = v * 4 + (k0 == mx ? 0 : k1 == mx ? 1 : k2 == mx ? 2 : 3);
      }
    }
  } else if (dt == DType::kBFloat16) {
    // bf16: a 16-bit order key per token, two tokens per 32-bit operation (x ^ 0xffff for a
    // negative half, x | 0x8000 for the others). These quick keys equal the exact keys of the
    // contract's canonical values except for -0 (one below +0's key) and NaN (a positive NaN
    // above +inf, a negative one below -inf), so "the vector's quick maximum is above the best
    // key so far" misses no vector whose exact maximum is (an exact key above the best is either
    // a quick key above it, or +0 from a -0 while the best is below +0, whose quick key 0x7fff is
    // above it too); such vectors, a few per row, are redone exactly.
#pragma unroll 2
    for (int v = threadIdx.x; v < nvec; v += kThreads) {
      const uint4 w = vec[v];
      const uint32_t word[4] = {w.x, w.y, w.z, w.w};
      uint32_t m = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t x = word[j];
        const uint32_t sign = (x >> 15) & 0x00010001u;
        m = max_u16x2(m, x ^ ((sign * 0x7fffu) | 0x80008000u));
      }
      const uint32_t quick = (m >> 16) > (m & 0xffffu) ? m >> 16 : m & 0xffffu;
      if (quick <= (best_key >> 16)) continue;
      exact8(word, v);
    }
  } else {
#pragma unroll 2
    for (int v = threadIdx.x; v < nvec; v += kThreads) {
      const uint4 w = vec[v];
      const uint32_t word[4] = {w.x, w.y, w.z, w.w};
      exact8(word, v);
    }
  }
  for (int i = nvec * per_vec + static_cast<int>(threadIdx.x); i < n; i += kThreads) {
    const uint32_t key = core::canonical_key_of_bits(load_bits(row, dt, c0 + i));
    if (key > best_key) {
      best_key = key;
      best_i = i;
    }
  }
  return best_i < 0 ? 0 : greedy_pack(best_key, c0 + best_i);
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
