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

constexpr int kResidualThreads = 256;
constexpr int kResidualPerThread = 32;
constexpr int64_t kResidualChunk = kResidualThreads * kResidualPerThread;  // tokens per CTA
constexpr int kDrawThreads = 1024;  // residual_draw_kernel's block: 8 tokens a thread

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

// One CTA: whether the offsets make sense as a whole (0 first, `rows` last, each request 1 to
// max_rows rows). Where they do not, every row is skipped and every output row reset.
template <int kThreads>
__global__ void __launch_bounds__(kThreads) verify_check_kernel(const VerifyArgs a, int max_rows) {
  __shared__ int bad;
  if (threadIdx.x == 0) bad = a.offsets[0] != 0 || a.offsets[a.requests] != a.rows;
  __syncthreads();
  for (int64_t b = threadIdx.x; b < a.requests; b += kThreads) {
    const int64_t m = a.offsets[b + 1] - a.offsets[b];
    if (m < 1 || m > max_rows) bad = 1;
  }
  __syncthreads();
  if (threadIdx.x == 0) *a.flag = static_cast<uint32_t>(bad);
  if (!bad) return;
  for (int64_t r = threadIdx.x; r < a.rows; r += kThreads) {
    a.t_rows[r].req = -1;
    a.tokens[r] = -1;
    if (a.path) a.path[r] = -1;
    if (a.logprobs) a.logprobs[r] = core::neg_inf();
  }
  if (a.d_rows)
    for (int64_t r = threadIdx.x; r < a.rows - a.requests; r += kThreads) a.d_rows[r].req = -1;
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
// tree's node paths too, each below its parent's), and the slots of its first round.
__global__ void verify_prepare_kernel(const VerifyArgs a) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= a.requests) return;
  a.jobs[b].kind = kJobNone;
  if (*a.flag) {
    clear_slots(a, b, 0, 1);
    a.state[b] = kRowBadDraft;
    a.status[b] = kRowBadDraft;
    a.accepted[b] = 0;
    return;
  }
  const int64_t r0 = a.offsets[b], m = a.offsets[b + 1] - r0, d0 = r0 - b;
  const int64_t v = a.vocab;
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

// Grid (draft rows, chunks), kProbs: each CTA adds its kResidualChunk probabilities' fixed-point
// masses to its row's total (d_prob_total, zeroed before: integer sums, so their order does not
// matter) and marks the row in d_prob_bad where one is outside [0, 1] or NaN. (One CTA a row,
// as before, left each row's loads latency-bound on few multiprocessors at small batches.)
template <int kThreads>
__global__ void __launch_bounds__(kThreads) draft_prob_total_kernel(const VerifyArgs a) {
  __shared__ uint64_t part[kThreads / kWarpSize];
  __shared__ int bad;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  const int64_t d = blockIdx.x, c0 = static_cast<int64_t>(blockIdx.y) * kResidualChunk;
  const float* q = static_cast<const float*>(a.draft.data) + d * a.dstride;
  float x[kResidualPerThread];
#pragma unroll
  for (int k = 0; k < kResidualPerThread; ++k) {
    const int64_t i = c0 + k * kThreads + threadIdx.x;
    x[k] = i < a.vocab ? q[i] : 0.0f;
  }
  uint64_t sum = 0;
  bool ok = true;
#pragma unroll
  for (int k = 0; k < kResidualPerThread; ++k) {
    ok = ok && core::prob_ok(x[k]);
    sum += core::prob_weight(core::prob_ok(x[k]) ? x[k] : 0.0f);
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

// A token's weight in a kept set, from its processed key.
struct KeptWeight {
  KeptSet s;
  int32_t token;  // the row's own token (a greedy row's only one)
  float inv_t, min_p;
  __device__ __forceinline__ uint64_t operator()(uint32_t k, int64_t i) const {
    if (s.kind == kKeptGreedy) return i == token ? 1 : 0;
    if (s.kind == kKeptPosInf) return k == core::kKeyPosInf ? 1 : 0;
    const float e = core::rel_likelihood(value_of(k), s.m, inv_t);
    return k >= s.tau && k > core::kKeyNegInf && e >= min_p ? core::mass_of(e) : 0;
  }
};

__device__ __forceinline__ core::U128 shfl_idx128(const core::U128& x, int src_lane) {
  return core::U128{shfl_idx64(x.hi, src_lane), shfl_idx64(x.lo, src_lane)};
}
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

// Grid (requests, chunks): each CTA sums the job's weights over its kResidualChunk tokens
// (coalesced, kResidualPerThread loads in flight per thread).
template <int kThreads>
__global__ void __launch_bounds__(kThreads) residual_sums_kernel(const VerifyArgs a) {
  const int64_t b = blockIdx.x, c = blockIdx.y;
  const ResidualJob job = a.jobs[b];
  if (job.kind == kJobNone) return;
  __shared__ core::U128 part[kThreads / kWarpSize];
  const JobWeight jw(a, b, job);
  const int64_t c0 = c * kResidualChunk;
  const int64_t v = a.vocab;
  core::U128 sum{0, 0};
  uint32_t keys[kResidualPerThread];
#pragma unroll
  for (int q = 0; q < kResidualPerThread; ++q) {
    const int64_t i = c0 + q * kThreads + threadIdx.x;
    keys[q] = i < v ? jw.tk(static_cast<int>(i)) : core::kKeyNegInf;
  }
#pragma unroll
  for (int q = 0; q < kResidualPerThread; ++q) {
    const int64_t i = c0 + q * kThreads + threadIdx.x;
    if (i < v) sum = core::u128_add(sum, jw(keys[q], i));
  }
  sum = block_sum128<kThreads>(sum, part);
  if (threadIdx.x == 0) a.chunk_sums[b * a.chunks + c] = sum;
}

// One CTA per job: t = floor(u R / 2^64) over the chunks' sums; the chunk that brackets it is
// walked again, each thread summing a contiguous run of kPer tokens (its keys loaded at once), a
// scan of the runs, and the thread whose run brackets t finds the token in it. The token and its
// logprob are written. (The walk is instruction-bound, about 300 a token with a draft's weights:
// with 256 threads of 32 tokens it took ~96 us, hence more threads of fewer tokens.)
template <int kThreads>
__global__ void __launch_bounds__(kThreads) residual_draw_kernel(const VerifyArgs a) {
  constexpr int kPer = static_cast<int>(kResidualChunk / kThreads);
  static_assert(kPer * kThreads == kResidualChunk, "a chunk is the threads' runs");
  const int64_t b = blockIdx.x;
  const ResidualJob job = a.jobs[b];
  if (job.kind == kJobNone) return;
  __shared__ core::U128 part[kThreads / kWarpSize];
  __shared__ core::U128 sums[kThreads];
  __shared__ core::U128 off;
  __shared__ int64_t chunk;
  __shared__ int32_t token;
  __shared__ uint32_t token_key;
  const JobWeight jw(a, b, job);
  // the chunk that holds t, kThreads chunk sums at a time
  const core::U128* cs = a.chunk_sums + b * a.chunks;
  if (threadIdx.x == 0) {
    chunk = -1;
    token = -1;
    token_key = core::kKeyNegInf;
  }
  core::U128 total{0, 0};
  for (int64_t c = threadIdx.x; c < a.chunks; c += kThreads) total = core::u128_add(total, cs[c]);
  total = block_sum128<kThreads>(total, part);
  const core::U128 t = core::u128_scale(job.u, total);
  core::U128 before{0, 0};
  for (int64_t c0 = 0; c0 < a.chunks; c0 += kThreads) {
    const int64_t n = a.chunks - c0 < kThreads ? a.chunks - c0 : kThreads;
    if (threadIdx.x < n) sums[threadIdx.x] = cs[c0 + threadIdx.x];
    __syncthreads();
    if (threadIdx.x == 0 && chunk < 0) {
      for (int64_t c = 0; c < n; ++c) {
        const core::U128 next = core::u128_add(before, sums[c]);
        if (core::u128_less(t, next)) {
          chunk = c0 + c;
          off = core::u128_sub(t, before);  // t's offset within the chunk
          break;
        }
        before = next;
      }
    }
    __syncthreads();
  }
  if (chunk >= 0) {
    const int64_t v = a.vocab;
    const int64_t i0 = chunk * kResidualChunk + threadIdx.x * kPer;
    uint32_t keys[kPer];
#pragma unroll
    for (int q = 0; q < kPer; ++q)
      keys[q] = i0 + q < v ? jw.tk(static_cast<int>(i0 + q)) : core::kKeyNegInf;
    core::U128 mine{0, 0};
#pragma unroll
    for (int q = 0; q < kPer; ++q)
      if (i0 + q < v) mine = core::u128_add(mine, jw(keys[q], i0 + q));
    // exclusive scan of the threads' sums: warp scans, then the warps' totals
    core::U128 incl = mine;
    const int lane = lane_id(), warp = static_cast<int>(threadIdx.x) / kWarpSize;
#pragma unroll
    for (int d = 1; d < kWarpSize; d <<= 1) {
      const core::U128 x = shfl_up(incl, d);
      if (lane >= d) incl = core::u128_add(incl, x);
    }
    if (lane == kWarpSize - 1) part[warp] = incl;
    __syncthreads();
    core::U128 run{0, 0};
    for (int w = 0; w < warp; ++w) run = core::u128_add(run, part[w]);
    run = core::u128_add(run, core::u128_sub(incl, mine));
    const core::U128 tt = off;
    // this thread's run brackets t: run <= t < run + mine
    if (!core::u128_less(tt, run) && core::u128_less(tt, core::u128_add(run, mine))) {
      bool found = false;
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        if (found || i0 + q >= v) continue;
        run = core::u128_add(run, jw(keys[q], i0 + q));
        if (core::u128_less(tt, run)) {
          found = true;
          token = static_cast<int32_t>(i0 + q);
          token_key = keys[q];
        }
      }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    a.tokens[job.at] = token;
    if (a.logprobs)
      a.logprobs[job.at] = token >= 0 ? emitted_logprob(jw.s, token_key) : core::neg_inf();
  }
}

}  // namespace lmsample::gpu
