// The GPU backend of speculative decoding's verification (docs/contract.md, section 8), after
// the kept sets: sample_rows_kernel<kThreads, true> has reduced every target (and draft) row to
// its KeptSet and drawn the row's own token (the bonus at position K, or a tree node's draw with
// nothing taken out). Here one CTA per request makes the decisions of core/verify.hpp in order,
// reading each draft token's processed key from the workspace (rows with bias or penalties) or
// recomputing it from the logits; a rejection takes one pass over its row for the residual draw.
// Everything the host cannot check (offsets, draft ids, probabilities, parents) is checked on the
// device first and reported through the request's status.
#pragma once

#include "core/math.hpp"
#include "core/params.hpp"
#include "core/philox.hpp"
#include "core/verify.hpp"
#include "gpu/sample_kernel.cuh"
#include "gpu/temperature_kernel.cuh"

namespace lmsample::gpu {

constexpr int kDecideThreads = kWarpSize;  // the decision kernels: one warp per request

// The residual kernel's chunks: 2,048 tokens, 75 CTAs a row at V = 151,936, which fill an H200
// for one job. A thread takes groups of 8 consecutive tokens (one or two 16-byte loads each),
// group g of a chunk being its tokens g * 8 * threads + 8 * thread ...: 256 threads of one
// group where few requests may have jobs (the shortest latency), 128 of two from
// kResidualTwoGroupsFrom requests on (a thread's fixed work, its job's setup and the block
// sums, spread over 16 tokens: on an H200, B = 256, K = 4 with draft probabilities took 738
// instead of 806 us).
constexpr int kResidualPerThread = 8;  // tokens of a group
constexpr int64_t kResidualChunk = 2048;
template <int kThreads>
constexpr int kResidualGroups = static_cast<int>(kResidualChunk / (kResidualPerThread * kThreads));
constexpr int64_t kResidualTwoGroupsFrom = 32;
// Batches up to this many requests check the offsets in every CTA of verify_prepare_kernel (a
// launch fewer); larger ones in verify_check_kernel first.
constexpr int64_t kCheckInPrepare = 4096;

// A draw left to the residual kernels (a rejection, or a tree node with tokens taken out): the
// row, what the weights come from, the uniform, and where the token goes.
struct ResidualJob {
  int32_t kind;  // kJobNone, kJobChain (max(0, w Wq - v Wp)), kJobTree (w less the removed)
  int32_t x;     // chain: the rejected draft (deterministic drafts)
  int64_t row;   // the target row
  int64_t drow;  // chain: the draft row (logits or probabilities), -1 for deterministic drafts
  int64_t at;    // the output index of the token
  uint64_t u;    // the draw's uniform
  uint64_t wq;   // chain: the draft's total (1 for deterministic drafts)
  int32_t nrem;  // tree: the removed tokens (VerifyArgs::removed of the request)
  float inv_t, min_p;
};
constexpr int32_t kJobNone = 0, kJobChain = 1, kJobTree = 2;

// A verification call as the kernels see it (device pointers; rows: target rows, or tree nodes).
struct VerifyArgs {
  int64_t requests = 0, rows = 0, vocab = 0;
  bool tree = false;
  const int64_t* offsets = nullptr;  // row_offsets or node_offsets [requests + 1]
  const int32_t* drafts = nullptr;   // chain: [rows - requests]
  const int32_t* parents = nullptr;  // tree: [rows]
  const int32_t* node_tokens = nullptr;
  DraftKind kind = DraftKind::kDeterministic;
  Logits target, draft;
  int64_t tstride = 0, dstride = 0;
  const uint32_t* mask = nullptr;
  int64_t mask_words = 0;
  RowParams params;
  // the kept sets, and where processed keys were stored (null: recomputed from the logits)
  const KeptSet* t_sets = nullptr;
  const int32_t* t_token = nullptr;
  const int32_t* t_status = nullptr;
  const uint32_t* t_keys = nullptr;
  const KeptSet* d_sets = nullptr;
  const int32_t* d_token = nullptr;
  const int32_t* d_status = nullptr;
  const uint32_t* d_keys = nullptr;
  uint64_t* d_prob_total = nullptr;  // kProbs: each draft row's total
  uint32_t* d_prob_bad = nullptr;    // kProbs: nonzero where a row has a bad probability
  // workspace: the call's structural verdict, each request's, the rows' maps, the trees' paths
  uint32_t* flag = nullptr;
  int32_t* state = nullptr;
  VerifyRow* t_rows = nullptr;
  VerifyRow* d_rows = nullptr;
  int32_t* paths = nullptr;          // tree: [rows, kMaxDrafts]
  ResidualJob* jobs = nullptr;       // [requests]
  core::U128* chunk_sums = nullptr;  // [requests, chunks]
  uint32_t* job_done = nullptr;      // [requests]: the job's chunks summed
  int64_t chunks = 0;                // ceil(vocab / kResidualChunk)
  int32_t* removed = nullptr;        // tree: [requests, kMaxTreeNodes]
  // The rounds (verify_gpu.cu). window 0: every row's kept set is computed before the decisions,
  // in one launch. Else the kept sets come a round at a time, `window` rows per request (chain:
  // the next positions; tree: 1, the node reached): walk[b] is request b's next position or node
  // (-1: decided), t_map / d_map [requests, window] the target / draft rows of its next round's
  // slots (-1: none).
  int32_t window = 0;
  int32_t* walk = nullptr;
  int32_t* t_map = nullptr;
  int32_t* d_map = nullptr;
  // Drafts (chain) or depth (tree) a request may have at most (the caller's max_drafts /
  // max_depth, else kMaxDrafts): a request with more gets kRowBadDraft.
  int32_t max_drafts = kMaxDrafts;
  // Where the temperature kernel computed the target rows: their sub-chunk sums ([rows, nsub]),
  // from which the decision warp draws a deterministic draft's residual; null otherwise.
  const uint64_t* t_sub_sums = nullptr;
  int64_t nsub = 0;
  // outputs
  int32_t* accepted = nullptr;
  int32_t* tokens = nullptr;  // [rows]
  int32_t* status = nullptr;
  float* logprobs = nullptr;  // [rows] or null
  int32_t* path = nullptr;    // tree: [rows]
};

// ---- structure ------------------------------------------------------------------------------

// Whether the offsets make sense as a whole (0 first, `rows` last, each request 1 to max_rows
// rows), by one CTA (every thread gets the verdict).
template <int kThreads>
__device__ bool offsets_bad(const VerifyArgs& a, int max_rows) {
  __shared__ int bad;
  if (threadIdx.x == 0) bad = a.offsets[0] != 0 || a.offsets[a.requests] != a.rows;
  __syncthreads();
  for (int64_t b = threadIdx.x; b < a.requests; b += kThreads) {
    const int64_t m = a.offsets[b + 1] - a.offsets[b];
    if (m < 1 || m > max_rows) bad = 1;
  }
  __syncthreads();
  return bad != 0;
}

// Where the offsets are bad: every row skipped and every output row reset (rows first, first +
// step, ...).
__device__ inline void reset_every_row(const VerifyArgs& a, int64_t first, int64_t step) {
  for (int64_t r = first; r < a.rows; r += step) {
    a.t_rows[r].req = -1;
    a.tokens[r] = -1;
    if (a.path) a.path[r] = -1;
    if (a.logprobs) a.logprobs[r] = core::neg_inf();
  }
  if (a.d_rows)
    for (int64_t r = first; r < a.rows - a.requests; r += step) a.d_rows[r].req = -1;
}

// One CTA, for batches above kCheckInPrepare: the offsets' verdict into *flag.
template <int kThreads>
__global__ void __launch_bounds__(kThreads) verify_check_kernel(const VerifyArgs a, int max_rows) {
  const bool bad = offsets_bad<kThreads>(a, max_rows);
  if (threadIdx.x == 0) *a.flag = bad ? 1u : 0u;
  if (bad) reset_every_row(a, threadIdx.x, kThreads);
}

// Request b's slots of the next round emptied (it computes no more rows), by the calling threads.
__device__ inline void clear_slots(const VerifyArgs& a, int64_t b, int first, int step) {
  if (a.window == 0) return;
  for (int g = first; g < a.window; g += step) {
    a.t_map[b * a.window + g] = -1;
    if (a.d_map) a.d_map[b * a.window + g] = -1;
  }
  if (first == 0) a.walk[b] = -1;
}

// Status kRowBadDraft (or kRowBadTokenId) for request b: no row of it is computed, its outputs
// say so.
__device__ inline void fail_request(const VerifyArgs& a, int64_t b, int64_t r0, int64_t m,
                                    int32_t status) {
  clear_slots(a, b, 0, 1);
  a.state[b] = status;
  a.status[b] = status;
  a.accepted[b] = 0;
  for (int64_t i = 0; i < m; ++i) {
    a.t_rows[r0 + i].req = -1;
    a.tokens[r0 + i] = -1;
    if (a.path) a.path[r0 + i] = -1;
    if (a.logprobs) a.logprobs[r0 + i] = core::neg_inf();
    if (a.d_rows && i + 1 < m) a.d_rows[r0 - b + i].req = -1;
  }
}

// One thread per request: its drafts (chain) or tree checked, then its rows' maps written (a
// tree's node paths too, each below its parent's), and the slots of its first round; its
// residual job and kProbs totals cleared. kCheck: each CTA first checks the offsets itself
// (verify_check_kernel's verdict, without its launch), else it reads *flag.
template <int kThreads, bool kCheck>
__global__ void __launch_bounds__(kThreads)
    verify_prepare_kernel(const VerifyArgs a, int max_rows) {
  bool bad = false;
  if constexpr (kCheck) {
    bad = offsets_bad<kThreads>(a, max_rows);
    if (bad)
      reset_every_row(a, static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x,
                      static_cast<int64_t>(gridDim.x) * kThreads);
  }
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (b >= a.requests) return;
  a.jobs[b].kind = kJobNone;
  a.job_done[b] = 0;
  if (kCheck ? bad : *a.flag != 0) {
    clear_slots(a, b, 0, 1);
    a.state[b] = kRowBadDraft;
    a.status[b] = kRowBadDraft;
    a.accepted[b] = 0;
    return;
  }
  const int64_t r0 = a.offsets[b], m = a.offsets[b + 1] - r0, d0 = r0 - b;
  const int64_t v = a.vocab;
  if (a.d_prob_total)
    for (int64_t j = 0; j + 1 < m; ++j) {
      a.d_prob_total[d0 + j] = 0;
      a.d_prob_bad[d0 + j] = 0;
    }
  if (!a.tree) {
    if (m - 1 > a.max_drafts) return fail_request(a, b, r0, m, kRowBadDraft);
    for (int64_t j = 0; j + 1 < m; ++j) {
      const int32_t x = a.drafts[d0 + j];
      if (x < 0 || x >= v) return fail_request(a, b, r0, m, kRowBadTokenId);
    }
    for (int64_t j = 0; j < m; ++j) {
      const uint32_t sub = 2u * static_cast<uint32_t>(j);
      a.t_rows[r0 + j] = VerifyRow{static_cast<int32_t>(b), static_cast<int32_t>(r0 + j), sub,
                                   static_cast<int32_t>(j), d0};
      if (a.d_rows && j + 1 < m)
        a.d_rows[d0 + j] = VerifyRow{static_cast<int32_t>(b), static_cast<int32_t>(r0 + j), sub,
                                     static_cast<int32_t>(j), d0};
    }
  } else {
    if (a.parents[r0] != -1) return fail_request(a, b, r0, m, kRowBadDraft);
    a.t_rows[r0] =
        VerifyRow{static_cast<int32_t>(b), static_cast<int32_t>(r0), 0u, 0, r0 * kMaxDrafts};
    for (int64_t i = 1; i < m; ++i) {
      const int32_t p = a.parents[r0 + i], x = a.node_tokens[r0 + i];
      if (p < 0 || p >= i) return fail_request(a, b, r0, m, kRowBadDraft);
      if (x < 0 || x >= v) return fail_request(a, b, r0, m, kRowBadTokenId);
      const int32_t depth = a.t_rows[r0 + p].extra_n + 1;
      if (depth > a.max_drafts) return fail_request(a, b, r0, m, kRowBadDraft);
      int32_t* to = a.paths + (r0 + i) * kMaxDrafts;
      const int32_t* from = a.paths + (r0 + p) * kMaxDrafts;
      for (int32_t d = 0; d + 1 < depth; ++d) to[d] = from[d];
      to[depth - 1] = x;
      a.t_rows[r0 + i] = VerifyRow{static_cast<int32_t>(b), static_cast<int32_t>(r0 + i),
                                   2u * static_cast<uint32_t>(i), depth, (r0 + i) * kMaxDrafts};
    }
  }
  a.state[b] = kRowOk;
  if (a.window > 0) {  // the first round: positions 0 .. window - 1 (chain), the root (tree)
    a.walk[b] = 0;
    for (int g = 0; g < a.window; ++g) {
      a.t_map[b * a.window + g] = g < m ? static_cast<int32_t>(r0 + g) : -1;
      if (a.d_map) a.d_map[b * a.window + g] = g + 1 < m ? static_cast<int32_t>(d0 + g) : -1;
    }
  }
}

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// Float bits of tokens i0 .. i0 + 7 of a row (i0 a multiple of 8): one or two 16-byte loads where
// the row is 16-byte aligned and the eight lie inside V, else a load each (`fill` from V on).
__device__ __forceinline__ void load8(const void* row, DType dt, bool vec, int64_t i0, int64_t v,
                                      uint32_t fill, uint32_t (&b)[kResidualPerThread]) {
  static_assert(kResidualPerThread == 8, "a thread's tokens are one or two 16-byte vectors");
  if (vec && i0 + 8 <= v) {
    if (dt == DType::kFloat32) {
      const uint4* q = reinterpret_cast<const uint4*>(static_cast<const uint32_t*>(row) + i0);
      const uint4 x = q[0], y = q[1];
      b[0] = x.x, b[1] = x.y, b[2] = x.z, b[3] = x.w;
      b[4] = y.x, b[5] = y.y, b[6] = y.z, b[7] = y.w;
    } else {
      const uint4 x = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(row) + i0);
      const uint32_t w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
      for (int h = 0; h < 8; ++h) {
        const uint16_t e = static_cast<uint16_t>(w[h / 2] >> (16 * (h % 2)));
        b[h] = dt == DType::kBFloat16 ? static_cast<uint32_t>(e) << 16
                                      : core::float_bits(core::f16_to_float(e));
      }
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) b[j] = i0 + j < v ? load_bits(row, dt, i0 + j) : fill;
}

// Grid (draft rows, chunks), kProbs: each CTA adds its kResidualChunk probabilities' fixed-point
// masses to its row's total (d_prob_total, zeroed by verify_prepare_kernel: integer sums, so
// their order does not matter) and marks the row in d_prob_bad where one is outside [0, 1] or
// NaN.
template <int kThreads>
__global__ void __launch_bounds__(kThreads) draft_prob_total_kernel(const VerifyArgs a) {
  grid_dependency_wait();  // (for a dependent launch: verify_gpu.cu launches it as usual)
  __shared__ uint64_t part[kThreads / kWarpSize];
  __shared__ int bad;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  const int64_t d = blockIdx.x;
  const float* q = static_cast<const float*>(a.draft.data) + d * a.dstride;
  constexpr int kGroups = kResidualGroups<kThreads>;
  uint32_t x[kGroups][kResidualPerThread];
#pragma unroll
  for (int g = 0; g < kGroups; ++g)
    load8(q, DType::kFloat32, aligned16(q),
          static_cast<int64_t>(blockIdx.y) * kResidualChunk + g * kResidualPerThread * kThreads +
              static_cast<int64_t>(kResidualPerThread) * threadIdx.x,
          a.vocab, 0u, x[g]);  // (0 from V on)
  uint64_t sum = 0;
  bool ok = true;
#pragma unroll
  for (int g = 0; g < kGroups; ++g)
#pragma unroll
    for (int k = 0; k < kResidualPerThread; ++k) {
      const float p = core::bits_float(x[g][k]);
      ok = ok && core::prob_ok(p);
      sum += core::prob_weight(core::prob_ok(p) ? p : 0.0f);
    }
  if (!ok) bad = 1;
#pragma unroll
  for (int s = kWarpSize / 2; s > 0; s >>= 1) sum += shfl_xor(sum, s);
  if (lane_id() == 0) part[threadIdx.x / kWarpSize] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint64_t t = 0;
    for (int w = 0; w < kThreads / kWarpSize; ++w) t += part[w];
    atomicAdd(reinterpret_cast<unsigned long long*>(a.d_prob_total + d),
              static_cast<unsigned long long>(t));
    if (bad) atomicOr(a.d_prob_bad + d, 1u);
  }
}

// ---- decisions ------------------------------------------------------------------------------

// Whether a tempered kept set keeps a token: its key (bitmask applied) at least tau and not
// -inf, its likelihood e at least min-p.
__device__ __forceinline__ bool kept_by(uint32_t key, uint32_t tau, float e, float min_p) {
  return key >= tau && key > core::kKeyNegInf && e >= min_p;
}

// A token's weight in a kept set, from its processed key.
struct KeptWeight {
  KeptSet s;
  int32_t token;  // the row's own token (a greedy row's only one)
  float inv_t, min_p;
  __device__ __forceinline__ uint64_t operator()(uint32_t k, int64_t i) const {
    if (s.kind == kKeptGreedy) return i == token ? 1 : 0;
    if (s.kind == kKeptPosInf) return k == core::kKeyPosInf ? 1 : 0;
    const float e = core::rel_likelihood(value_of(k), s.m, inv_t);
    return kept_by(k, s.tau, e, min_p) ? core::mass_of(e) : 0;
  }
};

__device__ __forceinline__ core::U128 warp_sum128(core::U128 x) {
#pragma unroll
  for (int d = kWarpSize / 2; d > 0; d >>= 1) x = core::u128_add(x, shfl_xor(x, d));
  return x;
}

__device__ __forceinline__ int64_t elem_bytes(DType dt) { return dt == DType::kFloat32 ? 4 : 2; }

// The processed keys of target row r: stored, or recomputed from the logits and the bitmask.
__device__ __forceinline__ ChunkKeys target_keys(const VerifyArgs& a, int64_t r) {
  const void* row =
      static_cast<const char*>(a.target.data) + r * a.tstride * elem_bytes(a.target.dtype);
  return ChunkKeys{a.t_keys ? a.t_keys + r * a.vocab : nullptr, row, a.target.dtype, 0,
                   a.mask ? a.mask + r * a.mask_words : nullptr};
}
// Draft row d's (its position's target row r gives the bitmask).
__device__ __forceinline__ ChunkKeys draft_keys(const VerifyArgs& a, int64_t d, int64_t r) {
  const void* row =
      static_cast<const char*>(a.draft.data) + d * a.dstride * elem_bytes(a.draft.dtype);
  return ChunkKeys{a.d_keys ? a.d_keys + d * a.vocab : nullptr, row, a.draft.dtype, 0,
                   a.mask ? a.mask + r * a.mask_words : nullptr};
}

// Section 5's logprob of a token of key k in a row of kept set s.
__device__ __forceinline__ float emitted_logprob(const KeptSet& s, uint32_t k) {
  if (s.n_posinf > 0)
    return k == core::kKeyPosInf ? core::uniform_logprob(s.n_posinf) : core::neg_inf();
  return core::logprob_of(value_of(k), s.m, s.log_norm);
}

// Request b's output rows [r0, r0 + m) reset (token -1, logprob -inf, path -1), then a barrier.
__device__ __forceinline__ void reset_rows(const VerifyArgs& a, int64_t r0, int64_t m) {
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
    a.tokens[r0 + i] = -1;
    if (a.logprobs) a.logprobs[r0 + i] = core::neg_inf();
    if (a.path) a.path[r0 + i] = -1;
  }
  __syncthreads();
}

// A deterministic draft's residual draw by one warp, from the temperature kernel's sub-chunk
// sums of row r: the row's weights with `removed` (chain: the rejected draft; tree: the rejected
// children's tokens) taken out, so R = W less theirs, t = floor(u R / 2^64), and the token is
// the lowest id whose running weight passes t, as residual_draw_kernel would find it: the
// sub-chunk that holds t (a warp of sums at a time), then its kSub tokens in order. Every lane
// returns the same. False (nothing found) where that kernel did not compute the row, the kept
// set is greedy (no sums), or nothing is left: the residual kernels take the job then.
template <typename Removed>
__device__ bool draw_less_removed(const VerifyArgs& a, int64_t r, const KeptWeight& wt,
                                  const ChunkKeys& tk, int nrem, Removed removed, uint64_t u,
                                  int32_t* token, uint32_t* key) {
  if (!a.t_sub_sums || wt.s.kind == kKeptGreedy) return false;
  constexpr int kSub = temperature::kSub, kPer = kSub / kWarpSize;
  const int lane = lane_id();
  const auto gone = [&](int64_t i) {
    bool g = false;
    for (int q = 0; q < nrem; ++q) g = g || removed(q) == i;
    return g;
  };
  const auto weight_of = [&](int64_t i) { return wt(tk(static_cast<int>(i)), i); };
  uint64_t wrem = 0;
  for (int q = 0; q < nrem; ++q) wrem += weight_of(removed(q));
  const uint64_t rest = wt.s.total - wrem;
  if (rest == 0) return false;
  const uint64_t t = core::scale_draw(u, rest);
  const uint64_t* ss = a.t_sub_sums + r * a.nsub;
  int64_t hit = -1;
  uint64_t base = 0;         // the weight before sub-chunk `hit`
  constexpr int kAhead = 4;  // warps of sums loaded at once (their latencies overlap)
  for (int64_t q0 = 0; q0 < a.nsub && hit < 0; q0 += kAhead * kWarpSize) {
    uint64_t sums[kAhead];
#pragma unroll
    for (int h = 0; h < kAhead; ++h) {
      const int64_t k = q0 + h * kWarpSize + lane;
      sums[h] = k < a.nsub ? ss[k] : 0;
    }
#pragma unroll
    for (int h = 0; h < kAhead; ++h) {
      if (hit >= 0) continue;  // (found in an earlier warp of sums)
      const int64_t k = q0 + h * kWarpSize + lane;
      uint64_t s = sums[h];
      for (int q = 0; q < nrem; ++q) {
        const int32_t x = removed(q);
        if (x / kSub == k) s -= weight_of(x);
      }
      const uint64_t incl = warp_inclusive_sum(s);
      const uint64_t found = ballot(base + incl > t);
      if (found) {
        const int first = __ffsll(static_cast<long long>(found)) - 1;
        hit = q0 + h * kWarpSize + first;
        base += shfl_idx64(incl - s, first);
      } else {
        base += shfl_idx64(incl, kWarpSize - 1);
      }
    }
  }
  if (hit < 0) return false;
  const int64_t t0 = hit * kSub + static_cast<int64_t>(kPer) * lane;
  uint32_t keys[kPer];
  uint64_t w[kPer], mine = 0;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int64_t i = t0 + j;
    keys[j] = i < a.vocab ? tk(static_cast<int>(i)) : core::kKeyNegInf;
    w[j] = i < a.vocab && !gone(i) ? wt(keys[j], i) : 0;
    mine += w[j];
  }
  uint64_t run = base + warp_inclusive_sum(mine) - mine;
  int32_t tok = -1;
  uint32_t kk = core::kKeyNegInf;
  if (mine > 0 && run <= t && t < run + mine) {
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      if (tok < 0 && w[j] > 0) {
        if (t < run + w[j]) {
          tok = static_cast<int32_t>(t0 + j);
          kk = keys[j];
        }
        run += w[j];
      }
    }
  }
  const uint64_t who = ballot(tok >= 0);
  if (!who) return false;
  const int src = __ffsll(static_cast<long long>(who)) - 1;
  *token = static_cast<int32_t>(shfl_idx(static_cast<uint32_t>(tok), src));
  *key = shfl_idx(kk, src);
  return true;
}

// Chain verification, one warp per request (the same steps as cpu::verify_request; every lane
// makes the same decisions): the accepted drafts and the bonus token are emitted here, and so is
// a deterministic draft's residual draw where the row's sub-chunk sums allow; other residual
// draws are left to residual_sums_kernel and residual_draw_kernel. In rounds (a.window > 0) a
// launch decides the positions of the round's rows and names the next round's rows.
template <int kThreads>
__global__ void __launch_bounds__(kThreads) verify_chain_kernel(const VerifyArgs a) {
  grid_dependency_wait();  // (where launched dependent on the kept sets' kernel)
  grid_dependency_trigger();
  const int64_t b = blockIdx.x;
  if (a.state[b] != kRowOk) return;  // (verify_prepare_kernel wrote its outputs)
  const int64_t j0 = a.window ? a.walk[b] : 0;
  if (j0 < 0) return;  // (decided in an earlier round)
  const int64_t r0 = a.offsets[b], k = a.offsets[b + 1] - r0 - 1, d0 = r0 - b;
  const int64_t j1 = a.window && j0 + a.window - 1 < k ? j0 + a.window - 1 : k;
  const core::RowSettings rs = core::load_row_settings(a.params, b);
  const float inv_t = rs.temperature > 0.0f ? core::div_rn(1.0f, rs.temperature) : 0.0f;
  int32_t accepted = 0, status = kRowOk;
  bool decided = false;
  if (j0 == 0) {
    reset_rows(a, r0, k + 1);
    if (a.kind == DraftKind::kProbs) {  // every probability checked before anything is emitted
      bool bad = false;
      for (int64_t j = 0; j < k; ++j) bad = bad || a.d_prob_bad[d0 + j] != 0;
      if (bad) {
        status = kRowBadDraft;
        decided = true;
      }
    }
  }
  const auto emit = [&](int64_t j, int32_t x, uint32_t key, const KeptSet& s) {
    if (threadIdx.x != 0) return;
    a.tokens[r0 + j] = x;
    if (a.logprobs) a.logprobs[r0 + j] = emitted_logprob(s, key);
  };
  for (int64_t j = j0; j <= j1 && !decided; ++j) {
    const int64_t r = r0 + j;
    decided = true;
    accepted = static_cast<int32_t>(j);
    const int32_t st = a.t_status[r];
    if (st != kRowOk) {
      status = st;
      break;
    }
    const KeptSet s = a.t_sets[r];
    const KeptWeight wt{s, a.t_token[r], inv_t, rs.min_p};
    const ChunkKeys tk = target_keys(a, r);
    if (j == k) {  // every draft accepted: the bonus token is the row's own draw
      const int32_t x = a.t_token[r];
      emit(j, x, tk(x), s);
      break;
    }
    const int32_t x = a.drafts[d0 + j];
    const uint32_t kx = tk(x);
    const uint64_t wx = wt(kx, x);
    // the draft's v(x) and total (deterministic: mass 1 on x, as for a draft row of no mass)
    const int64_t d = d0 + j;
    bool det = a.kind == DraftKind::kDeterministic;
    uint64_t vx = 1, wq = 1;
    KeptWeight dw{};
    ChunkKeys dk{};
    const float* probs = nullptr;
    if (a.kind == DraftKind::kLogits) {
      if (a.d_status[d] == kRowOk && a.d_sets[d].total > 0) {
        dw = KeptWeight{a.d_sets[d], a.d_token[d], inv_t, rs.min_p};
        dk = draft_keys(a, d, r);
        wq = dw.s.total;
        vx = dw(dk(x), x);
      } else {
        det = true;
      }
    } else if (a.kind == DraftKind::kProbs) {
      wq = a.d_prob_total[d];
      if (wq == 0) {
        det = true;
      } else {
        probs = static_cast<const float*>(a.draft.data) + d * a.dstride;
        vx = core::prob_weight(probs[x]);
      }
    }
    if (det) vx = wq = 1;
    const uint64_t ua =
        core::row_uniform64(rs.seed, rs.step, core::accept_substream(rs.substream, j));
    if (core::accept_draft(ua, wx, s.total, vx, wq)) {
      emit(j, x, kx, s);
      decided = false;
      continue;
    }
    // rejected: the token from the residual max(0, w Wq - v Wp); a deterministic draft's is the
    // row less x, drawn here where the row's sub-chunk sums allow, else by residual_draw_kernel
    const uint64_t ud =
        core::row_uniform64(rs.seed, rs.step, core::draw_substream(rs.substream, j));
    int32_t y = -1;
    uint32_t ky = 0;
    if (det && draw_less_removed(
                   a, r, wt, tk, 1, [x](int) { return x; }, ud, &y, &ky)) {
      emit(j, y, ky, s);
      break;
    }
    if (threadIdx.x == 0) {
      ResidualJob job{};
      job.kind = kJobChain;
      job.x = x;
      job.row = r;
      job.drow = det ? -1 : d;
      job.at = r;
      job.u = ud;
      job.wq = wq;
      job.inv_t = inv_t;
      job.min_p = rs.min_p;
      a.jobs[b] = job;
    }
  }
  if (!decided) {  // every draft of the round accepted: its next positions
    for (int g = lane_id(); g < a.window; g += kWarpSize) {
      const int64_t j = j1 + 1 + g;
      a.t_map[b * a.window + g] = j <= k ? static_cast<int32_t>(r0 + j) : -1;
      if (a.d_map) a.d_map[b * a.window + g] = j < k ? static_cast<int32_t>(d0 + j) : -1;
    }
    if (threadIdx.x == 0) a.walk[b] = static_cast<int32_t>(j1 + 1);
    return;
  }
  clear_slots(a, b, lane_id(), kWarpSize);
  sync_warp();
  if (threadIdx.x == 0) {
    if (a.window) a.walk[b] = -1;
    a.accepted[b] = accepted;
    a.status[b] = status;
  }
}

// Tree verification, one warp per request (the same steps as cpu::verify_tree_request); a draw
// from a node whose children took tokens out is made here where the row's sub-chunk sums allow,
// else left to the residual kernels. In rounds (a.window = 1) a launch decides the node reached
// and names the accepted child's row as the next round's.
template <int kThreads>
__global__ void __launch_bounds__(kThreads) verify_tree_kernel(const VerifyArgs a) {
  grid_dependency_wait();  // (where launched dependent on the kept sets' kernel)
  grid_dependency_trigger();
  const int64_t b = blockIdx.x;
  int32_t* removed = a.removed + b * kMaxTreeNodes;  // the rejected siblings' tokens at the node
  if (a.state[b] != kRowOk) return;
  int64_t node = a.window ? a.walk[b] : 0;
  if (node < 0) return;  // (decided in an earlier round)
  const int64_t n0 = a.offsets[b], m = a.offsets[b + 1] - n0;
  const core::RowSettings rs = core::load_row_settings(a.params, b);
  const float inv_t = rs.temperature > 0.0f ? core::div_rn(1.0f, rs.temperature) : 0.0f;
  if (node == 0) reset_rows(a, n0, m);
  const auto emit = [&](int64_t at, int32_t x, uint32_t key, const KeptSet& s) {
    if (threadIdx.x != 0) return;
    a.tokens[n0 + at] = x;
    if (a.logprobs) a.logprobs[n0 + at] = emitted_logprob(s, key);
  };
  int32_t status = kRowOk;
  int64_t depth = a.t_rows[n0 + node].extra_n;  // (the node's depth)
  for (;;) {
    const int64_t r = n0 + node;
    const int32_t st = a.t_status[r];
    if (st != kRowOk) {
      status = st;
      break;
    }
    const KeptSet s = a.t_sets[r];
    const KeptWeight wt{s, a.t_token[r], inv_t, rs.min_p};
    const ChunkKeys tk = target_keys(a, r);
    uint64_t rest = s.total;
    int nrem = 0;
    const auto taken = [&](int32_t x) {
      bool t = false;
      for (int i = 0; i < nrem; ++i) t = t || removed[i] == x;
      return t;
    };
    int64_t next = -1;
    for (int64_t c = node + 1; c < m; ++c) {
      if (a.parents[n0 + c] != node) continue;
      const int32_t x = a.node_tokens[n0 + c];
      const uint64_t wx = taken(x) ? 0 : wt(tk(x), x);
      const uint64_t u =
          core::row_uniform64(rs.seed, rs.step, core::accept_substream(rs.substream, c - 1));
      if (wx > 0 && core::scale_draw(u, rest) < wx) {
        next = c;
        break;
      }
      if (wx > 0) {
        rest -= wx;
        sync_warp();  // (every lane has read removed[])
        if (threadIdx.x == 0) removed[nrem] = x;
        ++nrem;
        __threadfence_block();
        sync_warp();
      }
    }
    if (next >= 0) {
      const int32_t x = a.node_tokens[n0 + next];
      if (threadIdx.x == 0) a.path[n0 + depth] = static_cast<int32_t>(next);
      emit(depth, x, tk(x), s);
      ++depth;
      node = next;
      if (a.window) {  // the child's row is the next round's
        if (threadIdx.x == 0) {
          a.walk[b] = static_cast<int32_t>(node);
          a.t_map[b] = static_cast<int32_t>(n0 + node);
        }
        return;
      }
      continue;
    }
    // no child accepted: the token from what is left (the row's own draw where nothing was
    // taken out)
    if (nrem == 0) {
      const int32_t x = a.t_token[r];
      emit(depth, x, tk(x), s);
      break;
    }
    const uint64_t ud =
        core::row_uniform64(rs.seed, rs.step, core::draw_substream(rs.substream, node));
    int32_t y = -1;
    uint32_t ky = 0;
    if (draw_less_removed(
            a, r, wt, tk, nrem, [removed](int i) { return removed[i]; }, ud, &y, &ky)) {
      emit(depth, y, ky, s);
      break;
    }
    if (threadIdx.x == 0) {
      ResidualJob job{};
      job.kind = kJobTree;
      job.row = r;
      job.drow = -1;
      job.at = n0 + depth;
      job.u = ud;
      job.wq = 1;
      job.nrem = nrem;
      job.inv_t = inv_t;
      job.min_p = rs.min_p;
      a.jobs[b] = job;
    }
    break;
  }
  clear_slots(a, b, lane_id(), kWarpSize);
  if (threadIdx.x == 0) {
    a.accepted[b] = static_cast<int32_t>(depth);
    a.status[b] = status;
  }
}

// The weight of token i in a residual job: its key and 128-bit weight.
struct JobWeight {
  ResidualJob job;
  KeptSet s;
  KeptWeight wt, dw;
  ChunkKeys tk, dk;
  const float* probs = nullptr;
  const int32_t* removed = nullptr;
  __device__ JobWeight(const VerifyArgs& a, int64_t b, const ResidualJob& j) : job(j) {
    s = a.t_sets[j.row];
    wt = KeptWeight{s, a.t_token[j.row], j.inv_t, j.min_p};
    tk = target_keys(a, j.row);
    if (j.kind == kJobChain && j.drow >= 0) {
      const int64_t r = j.row;
      if (a.kind == DraftKind::kLogits) {
        dw = KeptWeight{a.d_sets[j.drow], a.d_token[j.drow], j.inv_t, j.min_p};
        dk = draft_keys(a, j.drow, r);
      } else {
        probs = static_cast<const float*>(a.draft.data) + j.drow * a.dstride;
      }
    }
    if (j.kind == kJobTree) removed = a.removed + b * kMaxTreeNodes;
  }
  __device__ __forceinline__ core::U128 operator()(uint32_t key, int64_t i) const {
    const uint64_t w = wt(key, i);
    if (w == 0) return core::U128{0, 0};
    if (job.kind == kJobTree) {
      for (int q = 0; q < job.nrem; ++q)
        if (removed[q] == i) return core::U128{0, 0};
      return core::U128{0, w};
    }
    const uint64_t v = job.drow < 0 ? (i == job.x ? 1 : 0)
                       : probs      ? core::prob_weight(probs[i])
                                    : dw(dk(static_cast<int>(i)), i);
    return core::residual_weight(w, s.total, v, job.wq);
  }
};

template <int kThreads>
__device__ core::U128 block_sum128(core::U128 x, core::U128* part) {
  x = warp_sum128(x);
  if (lane_id() == 0) part[threadIdx.x / kWarpSize] = x;
  __syncthreads();
  core::U128 t{0, 0};
  for (int w = 0; w < kThreads / kWarpSize; ++w) t = core::u128_add(t, part[w]);
  __syncthreads();
  return t;
}

// The block's exclusive scan of x (*total: the sum of all).
template <int kThreads>
__device__ core::U128 block_exclusive_scan128(core::U128 x, core::U128* part, core::U128* total) {
  const int lane = lane_id(), warp = static_cast<int>(threadIdx.x) / kWarpSize;
  core::U128 incl = x;
#pragma unroll
  for (int d = 1; d < kWarpSize; d <<= 1) {
    const core::U128 y = shfl_up(incl, d);
    if (lane >= d) incl = core::u128_add(incl, y);
  }
  if (lane == kWarpSize - 1) part[warp] = incl;
  __syncthreads();
  core::U128 run{0, 0}, all{0, 0};
  for (int w = 0; w < kThreads / kWarpSize; ++w) {
    if (w < warp) run = core::u128_add(run, part[w]);
    all = core::u128_add(all, part[w]);
  }
  __syncthreads();
  *total = all;
  return core::u128_add(run, core::u128_sub(incl, x));
}

__device__ __forceinline__ bool u128_nonzero(const core::U128& x) { return (x.hi | x.lo) != 0; }
// run <= t < run + x
__device__ __forceinline__ bool u128_brackets(const core::U128& run, const core::U128& x,
                                              const core::U128& t) {
  return u128_nonzero(x) && !core::u128_less(t, run) && core::u128_less(t, core::u128_add(run, x));
}

// A weight w < 2^40 as the fast path holds it: w = h 2^20 + l, and f = w as a float (exact).
struct WeightParts {
  uint32_t h, l;
  float f;
  __device__ __forceinline__ uint64_t value() const { return (static_cast<uint64_t>(h) << 20) + l; }
};

// A tempered kept set's weights from the logits' float bits (no stored key): with a finite 1/T a
// token's weight is weight_bits' of z = (y - m) / T (KeptWeight's, bit for bit: the likelihood
// is core::rel_likelihood_finite's), kept where the bitmask allows it and, where the row has a
// bound (kBounds), where its key is at least tau and its likelihood at least min-p.
struct FastKept {
  float m = 0.0f, inv_t = 1.0f, min_p = 0.0f;
  uint32_t tau = 0;
  bool bounds = false;
  template <bool kBounds>
  __device__ __forceinline__ WeightParts weight(uint32_t bits, bool allowed) const {
    const float z = core::mul_rn(core::sub_rn(core::bits_float(bits), m), inv_t);
    uint32_t h, l;
    const float e = temperature::weight_bits_and_e(z, h, l);
    bool keep = allowed;
    if constexpr (kBounds) keep = keep && kept_by(core::canonical_key_of_bits(bits), tau, e, min_p);
    const float hf = core::sub_rn(core::bits_float(h), 8388608.0f);
    const float lf = core::sub_rn(core::bits_float(l), 8388608.0f);
    return WeightParts{keep ? h - temperature::kBias : 0u, keep ? l - temperature::kBias : 0u,
                       keep ? core::fma_rn(hf, 1048576.0f, lf) : 0.0f};
  }
};

// A draft probability's weight core::prob_weight(q) = floor(q 2^39), with floor_plus_2p23 (no
// float -> integer conversion).
__device__ __forceinline__ WeightParts prob_weight_parts(uint32_t bits) {
  const float scaled = core::mul_rn(core::bits_float(bits), 549755813888.0f);  // q 2^39, exact
  const float t = floor_plus_2p23(core::mul_rn(scaled, 1.0f / 1048576.0f));    // 2^23 + hi
  const float hf = core::sub_rn(t, 8388608.0f);
  const float l = floor_plus_2p23(core::fma_rn(-hf, 1048576.0f, scaled));  // 2^23 + lo
  return WeightParts{core::float_bits(t) - temperature::kBias,
                     core::float_bits(l) - temperature::kBias,
                     core::fma_rn(hf, 1048576.0f, core::sub_rn(l, 8388608.0f))};
}

// A residual job on the fast path: its target row (and draft row) read from the logits (or
// probabilities) 8 tokens a thread in 16-byte vectors, the weights from the float bits, and each
// token's r(x) > 0 from core::residual_sign_fp32 (and the 128-bit products where it cannot
// tell, as core::residual_positive), so that a chunk's sum of r(x) is
// Wq S_w - Wp S_v over the tokens of positive r (S_w, S_v the sums of their w and v, 64-bit).
// It takes jobs whose kept sets are tempered with a finite 1/T (and a draft row's too) and
// whose keys are not stored; others (bias or penalties, a greedy or +inf kept set, a tiny T)
// take JobWeight a token at a time.
constexpr int32_t kFastNone = 0, kFastProbs = 1, kFastLogits = 2;
struct FastResidual {
  bool ok = false;
  const void* trow = nullptr;
  DType tdt = DType::kFloat32;
  bool tvec = false;
  const uint32_t* mask = nullptr;  // the target row's bitmask
  FastKept t, d;
  int32_t draft = kFastNone;  // none: a deterministic draft or a tree (the removed tokens)
  const void* drow = nullptr;
  DType ddt = DType::kFloat32;
  bool dvec = false;
  uint64_t wq = 1, wp = 0;
  float wq_f = 1.0f, wp_f = 0.0f;
};

__device__ __forceinline__ FastKept fast_kept(const KeptSet& s, const ResidualJob& j) {
  FastKept k;
  k.m = s.m;
  k.inv_t = j.inv_t;
  k.min_p = j.min_p;
  k.tau = s.tau;
  k.bounds = s.tau > core::kKeyNegInf + 1 || j.min_p > 0.0f;
  return k;
}

__device__ inline FastResidual fast_residual(const VerifyArgs& a, const JobWeight& jw) {
  FastResidual f;
  const ResidualJob& j = jw.job;
  if (a.t_keys || jw.s.kind != kKeptTempered || !(j.inv_t > 0.0f) || !core::is_finite(j.inv_t))
    return f;
  f.trow = jw.tk.row;
  f.tdt = a.target.dtype;
  f.tvec = aligned16(f.trow);
  f.mask = jw.tk.mask;
  f.t = fast_kept(jw.s, j);
  f.wp = jw.s.total;
  f.wq = j.wq;
  if (j.kind == kJobChain && j.drow >= 0) {
    if (jw.probs) {
      f.draft = kFastProbs;
      f.drow = jw.probs;
      f.ddt = DType::kFloat32;
    } else {
      if (a.d_keys || jw.dw.s.kind != kKeptTempered) return f;
      f.draft = kFastLogits;
      f.drow = jw.dk.row;
      f.ddt = a.draft.dtype;
      f.d = fast_kept(jw.dw.s, j);
    }
    f.dvec = aligned16(f.drow);
  }
  f.wq_f = static_cast<float>(f.wq);
  f.wp_f = static_cast<float>(f.wp);
  f.ok = true;
  return f;
}

// The fast path's tokens i0 .. i0 + 7 (i0 < V), for a job of draft kind kDraft (the kind and
// whether a kept set has a bound known at compile time): w and v of each, and the bits of those
// whose residual is positive. The tokens are decided without a branch by
// core::residual_sign_fp32; the few it leaves (products within 2^-20) by the 128-bit products
// after them.
template <int32_t kDraft, bool kBounds>
__device__ __forceinline__ uint32_t fast_tokens(const FastResidual& f, const JobWeight& jw,
                                                int64_t v, int64_t i0, WeightParts (&w)[8],
                                                WeightParts (&q)[8]) {
  uint32_t tb[8], db[8];
  load8(f.trow, f.tdt, f.tvec, i0, v, 0xff800000u, tb);
  if constexpr (kDraft != kFastNone)
    load8(f.drow, f.ddt, f.dvec, i0, v, kDraft == kFastProbs ? 0u : 0xff800000u, db);
  const uint32_t allowed = f.mask ? (f.mask[i0 >> 5] >> (i0 & 31)) & 0xffu : 0xffu;
  uint32_t pos = 0, close = 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    w[k] = f.t.weight<kBounds>(tb[k], (allowed >> k) & 1u);
    if constexpr (kDraft == kFastNone) {
      q[k] = WeightParts{0u, 0u, 0.0f};
      pos |= w[k].f > 0.0f ? 1u << k : 0u;  // (the removed tokens are taken out below)
    } else {
      if constexpr (kDraft == kFastProbs)
        q[k] = prob_weight_parts(db[k]);
      else
        q[k] = f.d.weight<kBounds>(db[k], (allowed >> k) & 1u);
      const int sign = core::residual_sign_fp32(w[k].f, q[k].f, f.wq_f, f.wp_f);
      pos |= sign > 0 ? 1u << k : 0u;
      close |= sign == 0 ? 1u << k : 0u;
    }
  }
  // (rare; unrolled so that w and q stay in registers; core::residual_positive's 128-bit step,
  // written out: calling it here repeats the fp32 test and spills the 128-thread kernels)
  if (close != 0) {
#pragma unroll
    for (int k = 0; k < 8; ++k)
      if (((close >> k) & 1u) &&
          core::u128_less(core::mul_u64(q[k].value(), f.wp), core::mul_u64(w[k].value(), f.wq)))
        pos |= 1u << k;
  }
  if constexpr (kDraft == kFastNone) {
    // r(x) = w(x) less the rejected draft's token (r = 0 there) or the tree's removed tokens
    const ResidualJob& j = jw.job;
    if (j.kind == kJobChain && j.x >= i0 && j.x < i0 + 8) pos &= ~(1u << (j.x - i0));
    if (j.kind == kJobTree)
      for (int r = 0; r < j.nrem; ++r) {
        const int32_t x = jw.removed[r];
        if (x >= i0 && x < i0 + 8) pos &= ~(1u << (x - i0));
      }
  }
  return pos;
}

// The sum of r(x) over this thread's tokens i0 .. i0 + 7: the fast path (kFast: Wq S_w - Wp S_v,
// the sums of the positive tokens' w and v in 32-bit parts) or JobWeight's.
template <bool kFast, int32_t kDraft, bool kBounds>
__device__ __forceinline__ core::U128 thread_residual(const VerifyArgs& a, const JobWeight& jw,
                                                      const FastResidual& f, int64_t i0) {
  const int64_t v = a.vocab;
  if (i0 >= v) return core::U128{0, 0};
  if constexpr (kFast) {
    WeightParts w[8], q[8];
    const uint32_t pos = fast_tokens<kDraft, kBounds>(f, jw, v, i0, w, q);
    uint32_t wh = 0, wl = 0, qh = 0, ql = 0;  // (8 parts of at most 2^20 each)
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const bool p = (pos >> k) & 1u;
      wh += p ? w[k].h : 0u;
      wl += p ? w[k].l : 0u;
      qh += p ? q[k].h : 0u;
      ql += p ? q[k].l : 0u;
    }
    const uint64_t sw = (static_cast<uint64_t>(wh) << 20) + wl;
    if constexpr (kDraft == kFastNone) return core::U128{0, sw};  // (Wq = 1, no draft weight)
    const uint64_t sq = (static_cast<uint64_t>(qh) << 20) + ql;
    return core::u128_sub(core::mul_u64(sw, f.wq), core::mul_u64(sq, f.wp));
  } else {
    core::U128 s{0, 0};
    for (int k = 0; k < 8; ++k)
      if (i0 + k < v) s = core::u128_add(s, jw(jw.tk(static_cast<int>(i0 + k)), i0 + k));
    return s;
  }
}

// The token of i0 .. i0 + 7 at which the running residual, `run` before i0, passes t (this
// thread's tokens bracket t).
template <bool kFast, int32_t kDraft, bool kBounds>
__device__ int32_t thread_find(const VerifyArgs& a, const JobWeight& jw, const FastResidual& f,
                               int64_t i0, core::U128 run, const core::U128& t) {
  const int64_t v = a.vocab;
  WeightParts w[8], q[8];
  uint32_t pos = 0;
  if constexpr (kFast) pos = fast_tokens<kDraft, kBounds>(f, jw, v, i0, w, q);
  for (int k = 0; k < 8 && i0 + k < v; ++k) {
    const int64_t i = i0 + k;
    core::U128 r{0, 0};
    if constexpr (kFast) {
      if ((pos >> k) & 1u)
        r = core::u128_sub(core::mul_u64(w[k].value(), f.wq), core::mul_u64(q[k].value(), f.wp));
    } else {
      r = jw(jw.tk(static_cast<int>(i)), i);
    }
    run = core::u128_add(run, r);
    if (core::u128_less(t, run)) return static_cast<int32_t>(i);
  }
  return -1;
}

template <int kThreads>
struct ResidualShared {
  core::U128 part[kThreads / kWarpSize];
  core::U128 off;
  int64_t chunk;
  int32_t token;
  int last;
};

// One CTA's work on chunk c of job b (see residual_kernel), for one kind of job.
template <int kThreads, bool kFast, int32_t kDraft, bool kBounds>
__device__ void residual_chunk(const VerifyArgs& a, int64_t b, int64_t c, const JobWeight& jw,
                               const FastResidual& f, ResidualShared<kThreads>& sh) {
  constexpr int kGroups = kResidualGroups<kThreads>;
  constexpr int64_t kGroup = static_cast<int64_t>(kResidualPerThread) * kThreads;
  const ResidualJob& job = jw.job;
  const int64_t mine_at = static_cast<int64_t>(kResidualPerThread) * threadIdx.x;
  core::U128 mine{0, 0};
#pragma unroll
  for (int g = 0; g < kGroups; ++g)
    mine = core::u128_add(mine, thread_residual<kFast, kDraft, kBounds>(
                                    a, jw, f, c * kResidualChunk + g * kGroup + mine_at));
  const core::U128 sum = block_sum128<kThreads>(mine, sh.part);
  if (threadIdx.x == 0) {
    a.chunk_sums[b * a.chunks + c] = sum;
    device_fence();
    sh.last = atomicAdd(a.job_done + b, 1u) + 1 == static_cast<uint32_t>(a.chunks);
    sh.chunk = -1;
    sh.token = -1;
  }
  __syncthreads();
  if (!sh.last) return;
  device_fence();
  const volatile uint64_t* cs = reinterpret_cast<const volatile uint64_t*>(a.chunk_sums) +
                                2 * b * a.chunks;  // (U128: hi, lo)
  const auto sum_of = [cs](int64_t k) { return core::U128{cs[2 * k], cs[2 * k + 1]}; };
  core::U128 total{0, 0};
  for (int64_t k = threadIdx.x; k < a.chunks; k += kThreads)
    total = core::u128_add(total, sum_of(k));
  total = block_sum128<kThreads>(total, sh.part);
  const core::U128 t = core::u128_scale(job.u, total);
  core::U128 before{0, 0};
  for (int64_t c0 = 0; c0 < a.chunks; c0 += kThreads) {
    const int64_t k = c0 + threadIdx.x;
    const core::U128 s = k < a.chunks ? sum_of(k) : core::U128{0, 0};
    core::U128 batch;
    const core::U128 excl =
        core::u128_add(before, block_exclusive_scan128<kThreads>(s, sh.part, &batch));
    if (u128_brackets(excl, s, t)) {
      sh.chunk = k;
      sh.off = core::u128_sub(t, excl);  // t's offset within the chunk
    }
    before = core::u128_add(before, batch);
    __syncthreads();
    if (sh.chunk >= 0) break;
  }
  if (sh.chunk >= 0) {  // its groups in token order, each a scan over the threads
    core::U128 base{0, 0};
    const core::U128 o = sh.off;
    for (int g = 0; g < kGroups; ++g) {
      const int64_t i0 = sh.chunk * kResidualChunk + g * kGroup + mine_at;
      const core::U128 m = thread_residual<kFast, kDraft, kBounds>(a, jw, f, i0);
      core::U128 all;
      const core::U128 excl =
          core::u128_add(base, block_exclusive_scan128<kThreads>(m, sh.part, &all));
      if (u128_brackets(excl, m, o))
        sh.token = thread_find<kFast, kDraft, kBounds>(a, jw, f, i0, excl, o);
      base = core::u128_add(base, all);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int32_t token = sh.token;
    a.tokens[job.at] = token;
    if (a.logprobs)
      a.logprobs[job.at] = token >= 0 ? emitted_logprob(jw.s, jw.tk(token)) : core::neg_inf();
  }
}

// Grid (requests, chunks), a CTA a kResidualChunk of a job's row: the chunk's sum of r(x) into
// chunk_sums; the last of the job's CTAs to finish (job_done counts them: release fence, then
// the count; acquire fence, then the sums) makes the draw. t = floor(u R / 2^64) over the chunks'
// sums, whose scan finds the chunk that holds t; that chunk's tokens are weighed again, a group
// at a time in token order, and the thread whose eight bracket t walks them. The token and its
// logprob are written.
// kKind: the call's draft kind as a fast-path kind (its jobs, and deterministic ones).
template <int kThreads, int32_t kKind>
__global__ void __launch_bounds__(kThreads) residual_kernel(const VerifyArgs a) {
  static_assert(kResidualGroups<kThreads> * kResidualPerThread * kThreads == kResidualChunk,
                "a chunk is the threads' groups");
  grid_dependency_wait();  // (where launched dependent on the decisions)
  const int64_t b = blockIdx.x, c = blockIdx.y;
  const ResidualJob job = a.jobs[b];
  if (job.kind == kJobNone) return;
  __shared__ ResidualShared<kThreads> sh;
  const JobWeight jw(a, b, job);
  const FastResidual f = fast_residual(a, jw);
  const bool bounds = f.t.bounds || (f.draft == kFastLogits && f.d.bounds);
  if (!f.ok) {
    residual_chunk<kThreads, false, kFastNone, false>(a, b, c, jw, f, sh);
  } else if (kKind == kFastNone || f.draft == kFastNone) {
    if (bounds)
      residual_chunk<kThreads, true, kFastNone, true>(a, b, c, jw, f, sh);
    else
      residual_chunk<kThreads, true, kFastNone, false>(a, b, c, jw, f, sh);
  } else if constexpr (kKind != kFastNone) {
    if (bounds)
      residual_chunk<kThreads, true, kKind, true>(a, b, c, jw, f, sh);
    else
      residual_chunk<kThreads, true, kKind, false>(a, b, c, jw, f, sh);
  }
}

}  // namespace lmsample::gpu
