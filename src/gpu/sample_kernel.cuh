// The sampling kernel: one row per group of G CTAs (a thread-block cluster on Hopper, one CTA
// elsewhere). Each CTA owns a contiguous chunk of the row's tokens and keeps it as order keys in
// shared memory (or, for vocabularies too large for it, in the caller's workspace), so the logits
// are read from memory once; every later pass runs on chip. With streamed keys (GpuKeys::kStream,
// or kAuto for requests with a top_k or min_p array or where the keys would go to the workspace;
// never with bias or penalties; the host's choice, sample_gpu.cu) a CTA stores no keys: the load
// keeps only statistics in registers, and later passes recompute keys from the logits (from L2
// when recent). Same decisions as the CPU backend, made with the contract's exact
// arithmetic (docs/contract.md).
#pragma once

#include "core/likelihood_bounds.hpp"
#include "core/math.hpp"
#include "core/params.hpp"
#include "core/philox.hpp"
#include "gpu/block.cuh"

namespace lmsample::gpu {

#if defined(LMS_PROFILE_PHASES)
// Development aid (bench/gpu/profile_phases.cu): global-timer stamps of the phases of rank 0 of
// row 0. Compiled out of the library.
__device__ unsigned long long g_phase_ns[16][32];  // [rank][stamp]
__device__ unsigned long long g_phase_value[16][8];
__device__ unsigned long long g_topp_fallbacks;  // rows whose top-p took the radix select
__device__ __forceinline__ void stamp(int i, unsigned rank, int64_t row) {
  if (row == 0 && threadIdx.x == 0) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    g_phase_ns[rank][i] = t;
  }
}
#define LMS_STAMP(i) stamp(i, g.rank(), row)
#define LMS_STAMP_ROW(i, r) stamp(i, 0, r)
#define LMS_PROFILE_VALUE(i, v) \
  ((row == 0 && threadIdx.x == 0) ? (void)(g_phase_value[g.rank()][i] = (v)) : (void)0)
#define LMS_COUNT_TOPP_FALLBACK() \
  ((g.rank() == 0 && threadIdx.x == 0) ? (void)atomicAdd(&g_topp_fallbacks, 1ull) : (void)0)
#else
#define LMS_STAMP(i) ((void)0)
#define LMS_STAMP_ROW(i, r) ((void)(r))
#define LMS_PROFILE_VALUE(i, v) ((void)0)
#define LMS_COUNT_TOPP_FALLBACK() ((void)0)
#endif

// Verification (verify_gpu.cu): kernel row r is a position (chain) or node (tree) of request
// `req`, whose parameters, bias and prompt it takes, with the bitmask of row `mask_row`, the
// request's substream plus `substream`, and as output history the request's followed by
// extra[extra_off, extra_off + extra_n) (the drafts, or the path, before it). req < 0: skip.
struct VerifyRow {
  int32_t req;
  int32_t mask_row;
  uint32_t substream;
  int32_t extra_n;
  int64_t extra_off;
};
// A verified row's kept set (docs/contract.md, section 8), enough to give any token's weight from
// its processed key: kind 0 a tempered row (weight mass_of(e) where key >= tau and e >= min_p,
// e = rel_likelihood(y, m, 1/T)), 1 greedy (1 on the row's token), 2 +inf (1 on each +inf key);
// total = the kept weight; n_posinf and log_norm for logprobs.
struct KeptSet {
  uint64_t total;
  double log_norm;
  uint32_t tau;
  float m;
  int32_t kind;
  uint32_t n_posinf;
};
constexpr int32_t kKeptTempered = 0, kKeptGreedy = 1, kKeptPosInf = 2;

struct KernelArgs {
  Request req;
  Outputs out;
  int64_t stride;      // logits row stride (elements)
  int64_t mask_words;  // bitmask row length (words)
  int chunk;           // tokens per CTA (multiple of 64)
  uint32_t* ws_keys;   // [B, V] keys when not in shared memory, else null
  uint32_t* ws_tags;   // [B, V] penalty tags when not in shared memory, else null
  bool stream;         // keys recomputed from the logits (requests without bias or penalties)
  // null, or the rows to compute: those with a nonzero word (the others were finished by the
  // temperature kernel launched before, temperature_kernel.cuh)
  const uint32_t* pending;
  // Verification (sample_rows_kernel<kThreads, true>, verify_gpu.cu): each row's VerifyRow, the
  // history tokens they point into, and where each row's kept set goes.
  const VerifyRow* vrows;
  const int32_t* extra;
  KeptSet* kept_sets;
  // Verification's rounds: null, or the row each slot of the launch computes (-1: none). The
  // launch's batch is the slots; the logits, vrows, kept sets, outputs and workspace keys are
  // the rows'. (Never with top-p rows in the temperature kernel, whose top-p lists are slots'.)
  const int32_t* row_map;
};

__device__ __forceinline__ float value_of(uint32_t key) { return core::key_to_float(key); }
__device__ __forceinline__ uint32_t key_of(float y) { return core::order_key(core::canonical(y)); }

// The float bits of element i of a row (16-bit formats widened exactly).
__device__ __forceinline__ uint32_t load_bits(const void* row, DType dt, int64_t i) {
  switch (dt) {
    case DType::kFloat32:
      return static_cast<const uint32_t*>(row)[i];
    case DType::kBFloat16:
      return static_cast<uint32_t>(static_cast<const uint16_t*>(row)[i]) << 16;
    default:
      return core::float_bits(core::f16_to_float(static_cast<const uint16_t*>(row)[i]));
  }
}

// A CTA's keys: stored (shared memory or the workspace), or, with `keys` null, recomputed from
// the logits on each read by the load's exact conversion (bitmask applied).
struct ChunkKeys {
  const uint32_t* keys;
  const void* row;
  DType dt;
  int64_t c0;
  const uint32_t* mask;
  __device__ __forceinline__ uint32_t operator()(int i) const {
    if (keys) return keys[i];
    const int64_t tok = c0 + i;
    const uint32_t k = core::canonical_key_of_bits(load_bits(row, dt, tok));
    return !mask || ((mask[tok >> 5] >> (tok & 31)) & 1u) ? k : core::kKeyNegInf;
  }
};

struct Stats {
  uint32_t max_key;
  uint32_t n_valid;
  int64_t argmax;     // lowest index holding max_key
  uint32_t n_posinf;  // set after the group exchange, only in rows whose maximum is +inf
  uint32_t lower;     // a lower bound of the row's k-th largest key (small top-k), min-combined
};
struct StatsOp {
  __device__ Stats operator()(const Stats& a, const Stats& b) const {
    Stats r;
    r.max_key = a.max_key > b.max_key ? a.max_key : b.max_key;
    const int64_t ia = a.max_key == r.max_key ? a.argmax : INT64_MAX;
    const int64_t ib = b.max_key == r.max_key ? b.argmax : INT64_MAX;
    r.argmax = ia < ib ? ia : ib;
    r.n_valid = a.n_valid + b.n_valid;
    r.n_posinf = 0;
    r.lower = a.lower < b.lower ? a.lower : b.lower;
    return r;
  }
};
__device__ __forceinline__ Stats empty_stats() {
  return Stats{core::kKeyNegInf, 0, INT64_MAX, 0, core::kKeyNegInf + 1};
}
// The three largest keys a thread holds (with multiplicity) and the chunk indices of the first
// two. Tokens of one thread arrive in increasing index order, so a strict > keeps the first
// maximum (the argmax).
struct Top3 {
  uint32_t k1 = core::kKeyNegInf, k2 = core::kKeyNegInf, k3 = core::kKeyNegInf;
  int i1 = -1, i2 = -1;
  __device__ __forceinline__ void add(uint32_t k, int i) {
    if (k > k2) {
      k3 = k2;
      if (k > k1) {
        k2 = k1;
        i2 = i1;
        k1 = k;
        i1 = i;
      } else {
        k2 = k;
        i2 = i;
      }
    } else if (k > k3) {
      k3 = k;
    }
  }
};
__device__ __forceinline__ void count_key(Stats& s, uint32_t k) {
  s.n_valid += k > core::kKeyNegInf;  // (+inf keys are counted only in rows whose maximum is +inf)
}
__device__ __forceinline__ void finish_stats(Stats& s, const Top3& t, int64_t c0) {
  s.max_key = t.k1;
  s.argmax = t.i1 >= 0 ? c0 + t.i1 : INT64_MAX;
}

// The CTA's statistics from each thread's, through per-warp reductions and one block barrier.
// With k > 0 (1 <= k <= kWarpSize) the same barrier serves the k-th largest of the threads'
// `thread_max` (block_kth_largest's two steps), which becomes the CTA's `lower` (at least
// kKeyNegInf + 1), at the cost of a second barrier.
template <int kThreads>
__device__ Stats block_stats(const Stats& s, uint32_t thread_max, int k, Exchange& ex) {
  constexpr int kWarps = kThreads / kWarpSize;
  const int lane = lane_id(), warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const uint32_t mk = warp_max_u32(s.max_key);
  const uint32_t am =
      warp_min_u32(s.max_key == mk && s.argmax != INT64_MAX ? static_cast<uint32_t>(s.argmax)
                                                            : UINT32_MAX);  // token ids < 2^24
  const uint32_t nv = warp_sum_u32(s.n_valid);
  const uint32_t lo = warp_min_u32(s.lower);
  if (k > 0) kth_post(thread_max, ex);
  if (lane == 0) {
    uint32_t* w = ex.warp_stats[warp];
    w[0] = mk;
    w[1] = am;
    w[2] = nv;
    w[3] = lo;
  }
  __syncthreads();
  if (k > 0) kth_merge<kThreads>(k, ex);
  uint32_t rmax = core::kKeyNegInf, rarg = UINT32_MAX, rlo = UINT32_MAX;
  Stats r = empty_stats();
  for (int w = 0; w < kWarps; ++w) {
    const uint32_t* p = ex.warp_stats[w];
    if (p[0] > rmax) {
      rmax = p[0];
      rarg = p[1];
    } else if (p[0] == rmax) {
      rarg = p[1] < rarg ? p[1] : rarg;
    }
    r.n_valid += p[2];
    rlo = p[3] < rlo ? p[3] : rlo;
  }
  r.max_key = rmax;
  r.argmax = rarg == UINT32_MAX ? INT64_MAX : static_cast<int64_t>(rarg);
  r.lower = rlo;
  if (k > 0) {
    __syncthreads();  // publishes ex.bound
    r.lower = ex.bound > core::kKeyNegInf ? ex.bound : core::kKeyNegInf + 1;
  }
  return r;
}

// Which of a CTA's chunk indices a thread owns: 16-byte vectors v = tid, tid + kThreads, ...
// (`per` elements each) when the chunk starts 16-byte aligned, then (or else) single elements
// strided by kThreads. The load, the recount and the candidate rescan all follow it.
struct Ownership {
  bool vec;
  int per;
};
__device__ __forceinline__ Ownership ownership_of(const void* row, DType dt, int64_t c0) {
  const int esize = dt == DType::kFloat32 ? 4 : 2;
  const char* base = static_cast<const char*>(row) + c0 * esize;
  return Ownership{(reinterpret_cast<uintptr_t>(base) & 15u) == 0, 16 / esize};
}
// Calls f(i) for the owned indices of the vectors and elements first, first + step, ... of the
// ownership's order (the `first`-th vector of a chunk is thread `first`'s first vector).
template <typename F>
__device__ __forceinline__ void for_owned_from(const Ownership& o, int n, int first, int step,
                                               F f) {
  int done = 0;
  if (o.vec) {
    const int nvec = n / o.per;
    for (int v = first; v < nvec; v += step)
      for (int j = 0; j < o.per; ++j) f(v * o.per + j);
    done = nvec * o.per;
  }
  for (int i = done + first; i < n; i += step) f(i);
}
// The indices this thread owns.
template <int kThreads, typename F>
__device__ __forceinline__ void for_each_owned(const Ownership& o, int n, F f) {
  for_owned_from(o, n, static_cast<int>(threadIdx.x), kThreads, f);
}
// The indices thread `owner` of the block owns, split over the calling warp's lanes (lane l takes
// the owner's l-th, (l + kWarpSize)-th, ... vector, then element), so a warp rescans one thread's
// tokens with kWarpSize independent reads at a time.
template <int kThreads, typename F>
__device__ __forceinline__ void for_each_owned_by(const Ownership& o, int n, int owner, F f) {
  for_owned_from(o, n, owner + lane_id() * kThreads, kThreads * kWarpSize, f);
}

// Loads tokens [c0, c0 + n) of the row as keys (bitmask applied), with 16-byte loads where
// aligned and several in flight per thread (the indices `ownership_of` gives this thread), and
// returns this thread's statistics of them; *top gets its three largest keys. keys_in_smem: keys
// points to shared memory; keys null: nothing is stored (streaming).
template <int kThreads>
__device__ Stats load_chunk(uint32_t* keys, bool keys_in_smem, const void* row, DType dt,
                            int64_t c0, int n, const uint32_t* mask, Top3* top) {
  Stats s = empty_stats();
  Top3 t;
  // one token, exactly: canonical key, bitmask, statistics
  const auto put = [&](int i, uint32_t bits) {
    uint32_t k = core::canonical_key_of_bits(bits);
    if (mask) {
      const int64_t tok = c0 + i;
      k = ((mask[tok >> 5] >> (tok & 31)) & 1u) ? k : core::kKeyNegInf;
    }
    if (keys) keys[i] = k;
    t.add(k, i);
    count_key(s, k);
  };
  const bool store = keys != nullptr;
  const bool keys16 = store && (reinterpret_cast<uintptr_t>(keys) & 15u) == 0;
  // four tokens i0 .. i0 + 3 (i0 a multiple of 4: one mask word holds their bits), with the
  // per-token work only where a vector needs it (NaN, a partial mask, a new top-3 key, -inf)
  const auto put4 = [&](int i0, uint32_t b0, uint32_t b1, uint32_t b2, uint32_t b3) {
    uint32_t nib = 0xfu;
    if (mask) {
      const int64_t tok = c0 + i0;
      nib = (mask[tok >> 5] >> (tok & 31)) & 0xfu;
    }
    if (nib == 0) {  // all masked out
      if (keys16) {
        *reinterpret_cast<uint4*>(keys + i0) =
            uint4{core::kKeyNegInf, core::kKeyNegInf, core::kKeyNegInf, core::kKeyNegInf};
      } else if (store) {
        for (int j = 0; j < 4; ++j) keys[i0 + j] = core::kKeyNegInf;
      }
      return;
    }
    const uint32_t k0 = core::order_key_of_bits(b0), k1 = core::order_key_of_bits(b1),
                   k2 = core::order_key_of_bits(b2), k3 = core::order_key_of_bits(b3);
    const uint32_t mx01 = k0 > k1 ? k0 : k1, mx23 = k2 > k3 ? k2 : k3;
    const uint32_t mn01 = k0 < k1 ? k0 : k1, mn23 = k2 < k3 ? k2 : k3;
    const uint32_t mx = mx01 > mx23 ? mx01 : mx23, mn = mn01 < mn23 ? mn01 : mn23;
    // outside [-inf, +inf]: a NaN, which the exact path turns into -inf
    if (nib != 0xfu || mn < core::kKeyNegInf || mx > core::kKeyPosInf) {
      put(i0, b0);
      put(i0 + 1, b1);
      put(i0 + 2, b2);
      put(i0 + 3, b3);
      return;
    }
    if (keys16) {
      *reinterpret_cast<uint4*>(keys + i0) = uint4{k0, k1, k2, k3};
    } else if (store) {
      keys[i0] = k0;
      keys[i0 + 1] = k1;
      keys[i0 + 2] = k2;
      keys[i0 + 3] = k3;
    }
    s.n_valid += mn > core::kKeyNegInf ? 4u
                                       : (k0 > core::kKeyNegInf) + (k1 > core::kKeyNegInf) +
                                             (k2 > core::kKeyNegInf) + (k3 > core::kKeyNegInf);
    if (mx > t.k3) {
      t.add(k0, i0);
      t.add(k1, i0 + 1);
      t.add(k2, i0 + 2);
      t.add(k3, i0 + 3);
    }
  };
  const auto bits16 = [dt](uint32_t word, int half) {
    const uint16_t h = static_cast<uint16_t>(word >> (16 * half));
    return dt == DType::kBFloat16 ? static_cast<uint32_t>(h) << 16
                                  : core::float_bits(core::f16_to_float(h));
  };
  const int esize = dt == DType::kFloat32 ? 4 : 2;
  const Ownership own = ownership_of(row, dt, c0);
  const int per = own.per;  // elements per 16-byte load
  int done = 0;
  (void)keys_in_smem;  // (without async copies every load goes through registers)
#if LMS_HAS_ASYNC_COPY
  if (own.vec && esize == 4 && keys_in_smem && store) {
    // fp32 into shared memory: every 16-byte copy of this thread in flight at once (no
    // registers held), then each thread turns its own vectors into keys in place
    const int nvec = n / 4;
    const uint4* src = reinterpret_cast<const uint4*>(static_cast<const char*>(row) + c0 * 4);
    uint4* dst = reinterpret_cast<uint4*>(keys);
    for (int v = threadIdx.x; v < nvec; v += kThreads) async_copy16(dst + v, src + v);
    async_copy_wait();
    for (int v = threadIdx.x; v < nvec; v += kThreads) {
      const uint4 q = dst[v];
      put4(v * 4, q.x, q.y, q.z, q.w);
    }
    done = nvec * 4;
  } else
#endif
      if (own.vec) {
    const int nvec = n / per;
    const uint4* src = reinterpret_cast<const uint4*>(static_cast<const char*>(row) + c0 * esize);
    constexpr int kInFlight = 4;  // independent 16-byte loads per thread before the first use
    for (int v0 = threadIdx.x; v0 < nvec; v0 += kThreads * kInFlight) {
      uint4 q4[kInFlight];
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int v = v0 + u * kThreads;
        q4[u] = v < nvec ? src[v] : uint4{0, 0, 0, 0};
      }
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int v = v0 + u * kThreads;
        if (v >= nvec) break;
        const uint4 q = q4[u];
        if (esize == 4) {
          put4(v * 4, q.x, q.y, q.z, q.w);
        } else {
          put4(v * 8, bits16(q.x, 0), bits16(q.x, 1), bits16(q.y, 0), bits16(q.y, 1));
          put4(v * 8 + 4, bits16(q.z, 0), bits16(q.z, 1), bits16(q.w, 0), bits16(q.w, 1));
        }
      }
    }
    done = nvec * per;
  }
  for (int i = done + static_cast<int>(threadIdx.x); i < n; i += kThreads)
    put(i, load_bits(row, dt, c0 + i));
  finish_stats(s, t, c0);
  *top = t;
  return s;
}

// Logit bias of this CTA's tokens, entries applied in the order given (warp 0; duplicates of a
// token within a batch of kWarpSize entries are applied by the lane of its first occurrence).
__device__ inline void apply_bias(uint32_t* keys, const SparseRows& b, int64_t row, int64_t c0,
                                  int n, Exchange& ex) {
  if (threadIdx.x >= kWarpSize) return;
  int32_t* toks = reinterpret_cast<int32_t*>(ex.top);  // scratch: kWarpSize tokens + values
  float* vals = reinterpret_cast<float*>(ex.top) + kWarpSize;
  const int lane = threadIdx.x;
  const int64_t e0 = b.offsets[row], e1 = b.offsets[row + 1];
  for (int64_t base = e0; base < e1; base += kWarpSize) {
    const int64_t e = base + lane;
    toks[lane] = e < e1 ? b.tokens[e] : -1;
    vals[lane] = e < e1 ? b.values[e] : 0.0f;
    sync_warp();
    const int32_t t = toks[lane];
    bool first = t >= 0;
    for (int s = 0; s < lane; ++s) first = first && toks[s] != t;
    const int64_t local = static_cast<int64_t>(t) - c0;
    if (first && local >= 0 && local < n) {
      float y = value_of(keys[local]);
      for (int s = lane; s < kWarpSize; ++s)
        if (toks[s] == t) y = core::canonical(core::add_rn(y, vals[s]));
      keys[local] = key_of(y);
    }
    sync_warp();
  }
}

// Penalties of this CTA's tokens: tags count occurrences (integer atomics), then the first thread
// to take a token's tag applies the penalty once.
// `extra` (extra_n tokens) follows the output history (verification's drafts or path).
template <int kThreads>
__device__ void apply_penalties(uint32_t* keys, uint32_t* tags, const Request& req, int64_t row,
                                int64_t c0, int n, const core::RowSettings& rs,
                                const int32_t* extra = nullptr, int64_t extra_n = 0) {
  constexpr uint32_t kSeen = 0x80000000u;
  for (int pass = 0; pass < 3; ++pass) {
    for (int l = 0; l < 3; ++l) {  // prompt, output, extra
      const SparseRows& h = l == 0 ? req.prompt_tokens : req.output_tokens;
      if (l < 2 && !h.offsets) continue;
      if (l == 2 && extra_n <= 0) continue;
      const int32_t* toks = l < 2 ? h.tokens : extra;
      const int64_t e0 = l < 2 ? h.offsets[row] : 0, e1 = l < 2 ? h.offsets[row + 1] : extra_n;
      for (int64_t e = e0 + threadIdx.x; e < e1; e += kThreads) {
        const int64_t local = static_cast<int64_t>(toks[e]) - c0;
        if (local < 0 || local >= n) continue;
        if (pass == 0) {
          tags[local] = 0;
        } else if (pass == 1) {
          atomicOr(&tags[local], kSeen);
          if (l >= 1) atomicAdd(&tags[local], 1u);
        } else {
          const uint32_t tag = atomicExch(&tags[local], 0u);
          if (tag)
            keys[local] =
                key_of(core::apply_penalties(value_of(keys[local]), true, tag & ~kSeen, rs));
        }
      }
    }
    __syncthreads();
  }
}

// What one token contributes to a draw: whether it is kept, and its weight.
struct Contribution {
  bool kept;
  uint64_t w;
};

// Draw: the smallest token id whose running weight (over kept tokens, in id order) exceeds
// t = floor(u * W / 2^64). Returns the token in the CTA that holds it, -1 elsewhere; *kept_count
// gets the group's number of kept tokens. contribution_of must be branch-free and give nothing
// for keys below skip_below (and for key 0).
template <int kThreads, typename Group, typename KeyAt, typename TokenAt, typename ContributionOf>
__device__ int64_t group_draw(const Group& g, Exchange& ex, int& phase, int n, KeyAt key_at,
                              TokenAt token_at, ContributionOf contribution_of, uint32_t skip_below,
                              uint64_t u, int64_t* kept_count, int64_t row = -1,
                              uint64_t* total_out = nullptr) {
  using B = Block<kThreads>;
  row = g.rank() == 0 ? row : -1;  // (profiling: rank 0's stamps)
  // Each thread owns a contiguous run of entries, so one block scan of the threads' sums
  // locates the thread that holds the draw, whose warp then walks its run.
  const int per = (n + kThreads - 1) / kThreads;
  const int i0 = static_cast<int>(threadIdx.x) * per, i1 = i0 + per < n ? i0 + per : n;
  // (contribution_of is branch-free, so the 4 keys of a batch are worked on together; a batch
  // with no key at or above skip_below contributes nothing and is skipped)
  uint64_t mine = 0, cnt = 0;
  for (int i = i0; i < i1; i += 4) {
    uint32_t k[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) k[j] = i + j < i1 ? key_at(i + j) : 0u;
    const uint32_t top = max(max(k[0], k[1]), max(k[2], k[3]));
    if (top < skip_below) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const Contribution c = contribution_of(k[j]);
      const bool kept = c.kept && i + j < i1;
      mine += kept ? c.w : 0;
      cnt += kept;
    }
  }
  LMS_STAMP_ROW(25, row);
  const uint64_t kept_here = B::allreduce(
      cnt, [](uint64_t a, uint64_t b) { return a + b; }, ex);
  uint64_t blk = 0;
  const uint64_t incl = B::inclusive_scan(mine, &blk, ex);
  LMS_STAMP_ROW(26, row);
  Sum2 before2{0, 0};
  const Sum2 all = group_sum2(g, ex, phase, Sum2{blk, kept_here}, &before2);
  LMS_STAMP_ROW(27, row);
  const uint64_t total = all.a, before = before2.a;
  *kept_count = static_cast<int64_t>(all.b);
  if (total_out) *total_out = total;
  const uint64_t t = core::scale_draw(u, total);
  if (!(before <= t && t < before + blk)) return -1;  // uniform within the CTA
  const uint64_t acc = before + incl - mine;
  // The warp of the thread whose run brackets t walks that run together: kWarpSize entries at a
  // time, a warp scan of their weights in entry order, the first entry whose running weight
  // passes t.
  const uint64_t owner = ballot(mine > 0 && acc <= t && t < acc + mine);
  if (owner != 0) {
    const int src = static_cast<int>(__ffsll(static_cast<long long>(owner))) - 1;
    const int lane = lane_id();
    const int s0 = static_cast<int>(shfl_idx(static_cast<uint32_t>(i0), src));
    const int s1 = static_cast<int>(shfl_idx(static_cast<uint32_t>(i1), src));
    uint64_t base = shfl_idx64(acc, src);
    for (int b = s0; b < s1; b += kWarpSize) {
      const int i = b + lane;
      uint64_t w = 0;
      if (i < s1) {
        const Contribution c = contribution_of(key_at(i));
        w = c.kept ? c.w : 0;
      }
      uint64_t run = w;
#pragma unroll
      for (int d = 1; d < kWarpSize; d <<= 1) {
        const uint64_t x = shfl_up(run, d);
        if (lane >= d) run += x;
      }
      const uint64_t past = ballot(base + run > t);
      if (past != 0) {
        if (lane == static_cast<int>(__ffsll(static_cast<long long>(past))) - 1) {
          ex.bcast[2] = static_cast<uint64_t>(token_at(i));
          ex.bcast[3] = key_at(i);  // the drawn token's key (for its logprob)
        }
        break;
      }
      base += shfl_idx64(run, kWarpSize - 1);
    }
  }
  __syncthreads();
  const int64_t token = static_cast<int64_t>(ex.bcast[2]);
  __syncthreads();
  return token;
}

// The top-k threshold of the entries keys[0, c) (distinct tokens, any order, c <= kThreads,
// padded with 0 to a multiple of 4): the largest key with at least k entries at or above it
// (at least kKeyNegInf + 1), `split` threads per entry counting over the entries.
template <int kThreads, int split>
__device__ uint32_t block_top_k_key_split(const uint32_t* keys, int c, int top_k, Exchange& ex) {
  using B = Block<kThreads>;
  static_assert(split <= kWarpSize, "an entry's threads share a warp");
  const int c4 = (c + 3) / 4;
  const int e = static_cast<int>(threadIdx.x) / split, part = static_cast<int>(threadIdx.x) % split;
  const bool live = e < c;
  const uint32_t key = live ? keys[e] : core::kKeyNegInf;
  const uint4* keys4 = reinterpret_cast<const uint4*>(keys);
  uint64_t ge = 0;
#pragma unroll 4
  for (int j = part; j < c4; j += split) {
    const uint4 q = keys4[j];
    ge += (q.x >= key) + (q.y >= key) + (q.z >= key) + (q.w >= key);
  }
#pragma unroll
  for (int d = 1; d < split; d <<= 1) ge += shfl_xor(ge, d);
  const uint32_t best = B::allreduce(
      live && ge >= static_cast<uint64_t>(top_k) ? key : 0u,
      [](uint32_t x, uint32_t y) { return x > y ? x : y; }, ex);
  return best > core::kKeyNegInf + 1 ? best : core::kKeyNegInf + 1;
}

// The last steps of a row whose candidates (keys[0, c) / toks[0, c), in any order, c <=
// kThreads, distinct tokens) hold every token the filters can keep and pass top-k, in one CTA:
// `split` threads per entry (a power of two, as many as the block allows) count over the entries
// in parallel. min-p drops entries; the top-p threshold is the largest key whose suffix mass
// reaches the target; the draw takes the
// kept entry whose running weight in token order (the weight of the kept entries of lower ids)
// brackets t. Results (kept-set size, token, its key) land in ex.bcast[1..3].
template <int kThreads, int split>
__device__ void block_finish_split(const uint32_t* keys, const uint32_t* toks, int c,
                                   const core::RowSettings& rs, float m, float inv_t, uint64_t u,
                                   Exchange& ex, int64_t row) {
  using B = Block<kThreads>;
  static_assert(split <= kWarpSize, "an entry's threads share a warp");
  const int c4 = (c + 3) / 4;  // 16-byte groups of entries (the caller pads keys with 0 and
                               // tokens with UINT32_MAX up to a multiple of 4)
  const int e = static_cast<int>(threadIdx.x) / split, part = static_cast<int>(threadIdx.x) % split;
  const bool live = e < c;
  const bool staged = e < 4 * c4;  // entries (padding included) whose weight is staged
  const uint32_t key = live ? keys[e] : core::kKeyNegInf;
  const uint32_t tok = live ? toks[e] : 0u;
  const uint4* keys4 = reinterpret_cast<const uint4*>(keys);
  const uint4* toks4 = reinterpret_cast<const uint4*>(toks);
  const ulonglong2* w2 = reinterpret_cast<const ulonglong2*>(ex.stage_w);
  const auto sum_split = [](uint64_t v) {
#pragma unroll
    for (int d = 1; d < split; d <<= 1) v += shfl_xor(v, d);
    return v;
  };
  const float ev = live ? core::rel_likelihood(value_of(key), m, inv_t) : -1.0f;
  const bool ok = live && ev >= rs.min_p;
  const uint64_t w = ok ? core::mass_of(ev) : 0;  // < 2^40
  // staged: the weight of each entry that passes top-k and min-p, with bit 63 set
  constexpr uint64_t kOk = uint64_t{1} << 63;
  if (part == 0 && staged) ex.stage_w[e] = ok ? (w | kOk) : 0;
  const Sum2 all = B::allreduce(
      Sum2{part == 0 && ok ? 1u : 0u, part == 0 ? w : 0},
      [](Sum2 x, Sum2 y) {
        return Sum2{x.a + y.a, x.b + y.b};
      },
      ex);  // its barriers publish stage_w
  // top-p: tau is the largest key whose suffix mass (over the staged entries) reaches the
  // target; the kept set is the staged entries at or above it, whose count and weight are that
  // suffix's (so they ride on the same reduction)
  struct Pick {
    uint32_t key, count;
    uint64_t weight;
  };
  Pick kept{0, static_cast<uint32_t>(all.a), all.b};
  if (rs.top_p < 1.0f) {
    const uint64_t target = core::ceil_fraction(rs.top_p, all.b);
    LMS_STAMP_ROW(12, row);
    uint64_t sw = 0, sn = 0;
    const auto add = [&](uint32_t k, uint64_t v) {
      if (k >= key) {
        sw += v & ~kOk;
        sn += v >> 63;
      }
    };
#pragma unroll 4
    for (int j = part; j < c4; j += split) {
      const uint4 q = keys4[j];
      const ulonglong2 a = w2[2 * j], b = w2[2 * j + 1];
      add(q.x, a.x);
      add(q.y, a.y);
      add(q.z, b.x);
      add(q.w, b.y);
    }
    sw = sum_split(sw);
    sn = sum_split(sn);
    const bool hit = ok && sw >= target;
    kept = B::allreduce(
        Pick{hit ? key : 0u, hit ? static_cast<uint32_t>(sn) : 0u, hit ? sw : 0},
        [](const Pick& x, const Pick& y) { return x.key >= y.key ? x : y; }, ex);
  }
  const uint32_t tau = kept.key;
  LMS_STAMP_ROW(13, row);
  LMS_STAMP_ROW(14, row);
  // the draw: the kept entry whose running kept weight in token order brackets t
  const bool keep = ok && key >= tau;
  const uint64_t wk = keep ? w : 0;
  uint64_t before = 0;
  const auto add_before = [&](uint32_t k, uint32_t t2, uint64_t v) {
    return k >= tau && t2 < tok ? (v & ~kOk) : 0;
  };
#pragma unroll 4
  for (int j = part; j < c4; j += split) {
    const uint4 q = keys4[j], r = toks4[j];
    const ulonglong2 a = w2[2 * j], b = w2[2 * j + 1];
    before += add_before(q.x, r.x, a.x) + add_before(q.y, r.y, a.y) + add_before(q.z, r.z, b.x) +
              add_before(q.w, r.w, b.y);
  }
  before = sum_split(before);
  const uint64_t t = core::scale_draw(u, kept.weight);
  if (part == 0 && wk > 0 && before <= t && t - before < wk) {
    ex.bcast[1] = kept.count;
    ex.bcast[2] = tok;
    ex.bcast[3] = key;
  }
  if (threadIdx.x == 0) {  // (for verification's kept sets)
    ex.kept_tau = tau;
    ex.kept_total = kept.weight;
  }
  LMS_STAMP_ROW(15, row);
  __syncthreads();
}

// Calls run(std::integral_constant<int, split>) with as many threads per entry of c entries as
// the block allows (a power of two, at most a warp).
template <int kThreads, typename Run>
__device__ __forceinline__ auto with_split(int c, Run run) {
  if (32 * c <= kThreads) return run(std::integral_constant<int, 32>{});
  if (16 * c <= kThreads) return run(std::integral_constant<int, 16>{});
  if (8 * c <= kThreads) return run(std::integral_constant<int, 8>{});
  if (4 * c <= kThreads) return run(std::integral_constant<int, 4>{});
  if (2 * c <= kThreads) return run(std::integral_constant<int, 2>{});
  return run(std::integral_constant<int, 1>{});
}

// block_finish_split with as many threads per entry as the block allows. With top-k (k below the
// number of entries: at most k entries are the whole top-k set), the entries that pass it are
// first compacted into ex.gath_key / ex.gath_tok (free in rank 0 once its gather buffer was
// compacted into keys / toks), so that the later steps, whose work grows with the square of the
// entries, run over about k entries rather than every candidate.
template <int kThreads>
__device__ void block_finish(const uint32_t* keys, const uint32_t* toks, int c, int top_k,
                             const core::RowSettings& rs, float m, float inv_t, uint64_t u,
                             Exchange& ex, int64_t row = -1) {
  if (threadIdx.x == 0) ex.kept_lo = 0;  // (published by the barriers below)
  if (top_k > 0 && top_k < c) {
    if (threadIdx.x == 0) ex.kept_count = 0;  // published by the selection's barriers
    const uint32_t lo = with_split<kThreads>(c, [&](auto split) {
      return block_top_k_key_split<kThreads, decltype(split)::value>(keys, c, top_k, ex);
    });
    LMS_STAMP_ROW(11, row);
    if (threadIdx.x == 0) ex.kept_lo = lo;
    const int e = static_cast<int>(threadIdx.x);  // (c <= kThreads)
    const bool in = e < c && keys[e] >= lo;
    const uint64_t mask = ballot(in);
    if (mask != 0) {
      const int lane = lane_id();
      const int leader = static_cast<int>(__ffsll(static_cast<long long>(mask))) - 1;
      uint32_t base = 0;
      if (lane == leader) base = atomicAdd(&ex.kept_count, static_cast<unsigned>(__popcll(mask)));
      base = shfl_idx(base, leader);
      if (in) {
        const uint32_t at =
            base + static_cast<uint32_t>(__popcll(mask & ((uint64_t{1} << lane) - 1)));
        ex.gath_key[at] = keys[e];
        ex.gath_tok[at] = toks[e];
      }
    }
    __syncthreads();
    const int kept = static_cast<int>(ex.kept_count);
    if (threadIdx.x < 4 && kept + static_cast<int>(threadIdx.x) < (kept + 3) / 4 * 4) {
      ex.gath_key[kept + threadIdx.x] = 0;  // padding for the 16-byte reads
      ex.gath_tok[kept + threadIdx.x] = UINT32_MAX;
    }
    __syncthreads();
    with_split<kThreads>(kept, [&](auto split) {
      block_finish_split<kThreads, decltype(split)::value>(ex.gath_key, ex.gath_tok, kept, rs, m,
                                                           inv_t, u, ex, row);
      return 0;
    });
    return;
  }
  with_split<kThreads>(c, [&](auto split) {
    block_finish_split<kThreads, decltype(split)::value>(keys, toks, c, rs, m, inv_t, u, ex, row);
    return 0;
  });
}

// Top-n processed logits of the row (highest first, ties to the lower id) with their logprobs,
// written by rank 0.
template <int kThreads, typename KeyAt>
__device__ void group_top_n(const RowGroup& g, Exchange& ex, int& phase, int& hphase, KeyAt key_at,
                            int n, int64_t c0, const Stats& st, double log_norm, int top_n,
                            int32_t* ids_out, float* lp_out) {
  using B = Block<kThreads>;
  const int want = static_cast<int>(st.n_valid < static_cast<uint32_t>(top_n) ? st.n_valid : top_n);
  if (g.rank() == 0 && threadIdx.x == 0) ex.top_count = 0;
  uint32_t tau = core::kKeyNegInf + 1;
  if (want > 0) {
    tau = group_select<kThreads>(
        g, ex, hphase, n, key_at,
        [](uint32_t k, int) { return static_cast<uint64_t>(k > core::kKeyNegInf); },
        static_cast<uint64_t>(want));
  }
  // entries above tau all belong; ties at tau go to the lowest ids
  uint64_t gt = 0, eq = 0;
  if (want > 0)
    for_keys<4>(static_cast<int>(threadIdx.x), n, kThreads, key_at, [&](int, uint32_t k) {
      gt += k > tau;
      eq += k == tau;
    });
  const auto add = [](uint64_t a, uint64_t b) { return a + b; };
  gt = B::allreduce(gt, add, ex);
  eq = B::allreduce(eq, add, ex);
  Sum2 before{0, 0};
  const uint64_t gt_all = group_sum2(g, ex, phase, Sum2{gt, eq}, &before).a;
  const uint64_t eq_before = before.b;
  const uint64_t ties_needed = static_cast<uint64_t>(want) - gt_all;
  const uint64_t take =
      eq_before >= ties_needed ? 0 : (ties_needed - eq_before < eq ? ties_needed - eq_before : eq);
  Exchange* root = g.map(&ex, 0);
  uint64_t tie_seen = 0;
  for (int base = 0; base < n; base += kThreads) {
    const int i = base + static_cast<int>(threadIdx.x);
    const uint32_t k = i < n && want > 0 ? key_at(i) : 0u;
    const bool is_tie = i < n && want > 0 && k == tau;
    uint64_t tile = 0;
    const uint64_t incl = B::inclusive_scan(is_tie ? 1 : 0, &tile, ex);
    const bool take_tie = is_tie && tie_seen + incl <= take;
    if (i < n && want > 0 && (k > tau || take_tie)) {
      const uint32_t slot = atomicAdd(&root->top_count, 1u);
      root->top[slot] =
          (static_cast<uint64_t>(k) << 32) | static_cast<uint32_t>(~static_cast<uint32_t>(c0 + i));
    }
    tie_seen += tile;
  }
  g.sync();
  if (g.rank() == 0) {
    const int cnt = static_cast<int>(ex.top_count);
    for (int j = threadIdx.x; j < top_n; j += kThreads) {
      if (j >= cnt) {
        ids_out[j] = -1;
        lp_out[j] = core::neg_inf();
      }
    }
    for (int j = threadIdx.x; j < cnt; j += kThreads) {
      const uint64_t e = ex.top[j];
      int rank = 0;
      for (int q = 0; q < cnt; ++q) rank += ex.top[q] > e;
      const uint32_t key = static_cast<uint32_t>(e >> 32);
      ids_out[rank] = static_cast<int32_t>(~static_cast<uint32_t>(e));
      lp_out[rank] =
          st.n_posinf > 0
              ? (key == core::kKeyPosInf ? core::uniform_logprob(st.n_posinf) : core::neg_inf())
              : core::logprob_of(value_of(key), value_of(st.max_key), log_norm);
    }
  }
}

// After each rank pushed its entries into its region of rank 0's gather buffer (regions of
// `cap`, counted in its ex.cand_count): publishes every rank's count to every rank (ex.gcount)
// through one group barrier; returns the total, or -1 where a region overflowed.
template <typename Group>
__device__ int exchange_gathered_counts(const Group& g, Exchange& ex, int cap) {
  const unsigned G = g.size();
  __syncthreads();  // every push of this CTA counted
  if (threadIdx.x < G) g.map(ex.gcount, threadIdx.x)[g.rank()] = ex.cand_count;
  g.sync();
  int total = 0;
  bool overflow = false;
  for (unsigned q = 0; q < G; ++q) {
    total += static_cast<int>(ex.gcount[q]);
    overflow = overflow || ex.gcount[q] > static_cast<uint32_t>(cap);
  }
  return overflow ? -1 : total;
}

// Rank 0: the regions of its gather buffer compacted into ex.cand in rank order (any order
// within a region), keys and, with kTokens, tokens. The thread maxima must be dead (ex.cand
// shares their space). The caller passes a block barrier before reading ex.cand.
template <int kThreads, bool kTokens>
__device__ void compact_gathered(Exchange& ex, unsigned G, int cap) {
  for (int slot = threadIdx.x; slot < cap * static_cast<int>(G); slot += kThreads) {
    const int q = slot / cap, j = slot % cap;
    if (j >= static_cast<int>(ex.gcount[q])) continue;
    int at = j;
    for (int r = 0; r < q; ++r) at += static_cast<int>(ex.gcount[r]);
    ex.cand.key[at] = ex.gath_key[slot];
    if (kTokens) ex.cand.tok[at] = ex.gath_tok[slot];
  }
}

// The top-p threshold: the largest key whose suffix weight over the group's entries reaches
// ceil(p W) (an entry weighs mass_of(kept_likelihood(key)), 0 where that is negative: keys below
// `lo`, below min-p, -inf), found by
// likelihood rather than by key digits. One pass sums the weights per likelihood bucket (an exp
// per entry, like a radix select's first round); the group's histogram gives the bucket that
// holds the threshold and the weight above it. A compare-only pass then pushes that bucket's
// entries to rank 0 (a key range with margins far above the rounding of the contract's
// likelihood, then the exact bucket), and rank 0 ranks them by key and posts the threshold to
// the group. The row's maximum key has a bucket of its own above the others (kMaxBucket): where
// its ties alone reach the target (a confident row, or a flat one) the threshold is the maximum,
// with no push. Returns 0 where this does not apply (the threshold in the lowest bucket, or too
// many entries in its bucket): the caller then runs the radix select.
template <int kThreads, typename Group, typename KeyAt, typename KeptLikelihood>
__device__ uint32_t group_top_p_threshold(const Group& g, Exchange& ex, int& phase, int& hphase,
                                          int n, KeyAt key_at, KeptLikelihood kept_likelihood,
                                          float m, uint32_t max_key, const core::RowSettings& rs,
                                          uint32_t lo, int64_t row = -1) {
  // the maximum's ties (likelihood 1, and no other key above them): above every likelihood
  // bucket (core::likelihood_bucket(1) = 241)
  constexpr uint32_t kMaxBucket = 255;
  using B = Block<kThreads>;
  const float top_p = rs.top_p;
  row = g.rank() == 0 ? row : -1;  // (profiling: rank 0's stamps)
  uint64_t* h = ex.hist[hphase];
  hphase ^= 1;
  for (int b = threadIdx.x; b < 256; b += kThreads) h[b] = 0;
  if (threadIdx.x == 0) ex.cand_count = 0;
  __syncthreads();
  // a register sum for the last bucket a thread met (nearby likelihoods share buckets) and one
  // for the lowest bucket
  uint32_t cached = 256;
  uint64_t cached_sum = 0, low = 0;
  for_keys<4>(static_cast<int>(threadIdx.x), n, kThreads, key_at, [&](int, uint32_t k) {
    const float e = kept_likelihood(k);
    if (e < 0.0f) return;
    const uint64_t w = core::mass_of(e);
    const uint32_t b = k == max_key ? kMaxBucket : core::likelihood_bucket(e);
    if (b == 0) {
      low += w;
    } else if (b == cached) {
      cached_sum += w;
    } else {
      if (cached < 256) atomic_add_u64(&h[cached], cached_sum);
      cached = b;
      cached_sum = w;
    }
  });
  if (cached < 256) atomic_add_u64(&h[cached], cached_sum);
#pragma unroll
  for (int d = kWarpSize / 2; d > 0; d >>= 1) low += shfl_xor(low, d);
  if (lane_id() == 0 && low > 0) atomic_add_u64(&h[0], low);
  LMS_STAMP_ROW(19, row);
  g.sync();
  LMS_STAMP_ROW(20, row);
  const uint64_t* merged = merge_histogram<kThreads>(g, ex, h);
  if (threadIdx.x < kWarpSize) {
    uint64_t target = 0;
    scan_top_bucket(
        merged,
        [&](uint64_t total) {
          target = core::ceil_fraction(top_p, total);
          return target;
        },
        ex);
    if (threadIdx.x == 0) ex.bcast[2] = target;
  }
  __syncthreads();
  const uint32_t jb = static_cast<uint32_t>(ex.bcast[0]);
  const uint64_t above = ex.bcast[1], target = ex.bcast[2];
  LMS_STAMP_ROW(21, row);
  if (jb == 0) return 0;  // (the same verdict in every rank: the same histogram)
  if (jb == kMaxBucket) return max_key;
  // more entries than rank 0 ranks, proven by the bucket's weight against its top weight (all
  // equal logits, say): no push
  const float e_top = core::likelihood_bucket_floor(jb + 1);
  if (merged[jb] > static_cast<uint64_t>(kThreads) * core::mass_of(e_top < 1.0f ? e_top : 1.0f))
    return 0;
  // the keys of bucket jb lie in [klo, khi]
  const float t = rs.temperature;
  const uint32_t khi =
      core::key_ceiling_of_likelihood(m, t, logf(core::likelihood_bucket_floor(jb + 1)));
  uint32_t klo = core::key_floor_of_likelihood(m, t, logf(core::likelihood_bucket_floor(jb)));
  klo = klo > lo ? klo : lo;
  if (klo <= core::kKeyNegInf) klo = core::kKeyNegInf + 1;
  // push the bucket's entries into this rank's region of rank 0's gather buffer
  const unsigned rank = g.rank(), G = g.size();
  const int cap = Exchange::kMaxGathered / static_cast<int>(G);
  uint32_t* root_key = g.map(ex.gath_key, 0) + rank * cap;
  for_keys<4>(static_cast<int>(threadIdx.x), n, kThreads, key_at, [&](int, uint32_t k) {
    if (k < klo || k > khi) return;
    const float e = kept_likelihood(k);
    if (e < 0.0f || k == max_key || core::likelihood_bucket(e) != jb) return;
    const int slot = static_cast<int>(atomicAdd(&ex.cand_count, 1u));
    if (slot < cap) root_key[slot] = k;
  });
  LMS_STAMP_ROW(22, row);
  const int total = exchange_gathered_counts(g, ex, cap);
  LMS_STAMP_ROW(23, row);
  if (total < 0 || total > kThreads) return 0;
  uint32_t tau = 0;
  if (rank == 0) {
    // compact the regions, stage each entry's weight, then each entry's suffix weight: the
    // weight above the bucket plus that of the bucket's entries at or above it
    compact_gathered<kThreads, false>(ex, G, cap);
    __syncthreads();
    const bool live = static_cast<int>(threadIdx.x) < total;
    const uint32_t key = live ? ex.cand.key[threadIdx.x] : 0u;
    if (live) ex.stage_w[threadIdx.x] = core::mass_of(kept_likelihood(key));
    __syncthreads();
    uint64_t suffix = above;
    for (int j = 0; j < total; ++j) suffix += ex.cand.key[j] >= key ? ex.stage_w[j] : 0;
    tau = B::allreduce(
        live && suffix >= target ? key : 0u, [](uint32_t x, uint32_t y) { return x > y ? x : y; },
        ex);
  }
  LMS_STAMP_ROW(24, row);
  // every rank takes rank 0's threshold
  const uint64_t(*box)[8] = post_to_group(g, ex, phase, tau);
  return static_cast<uint32_t>(box[0][0]);
}

// top-k, then top-p, then the draw over the entries [0, n) of the group (`key_at`, `token_at`;
// entries in token order across the group's ranks). Returns the token in the CTA that drew it
// (its key in ex.bcast[3]), -1 elsewhere; *kept gets the kept-set size. kth_floor: a lower bound
// of the k-th largest key (0: none known); where it is the row's maximum key, so is the k-th
// largest (flat rows, or k tokens tied at the maximum), and no selection runs.
template <int kThreads, typename Group, typename KeyAt, typename TokenAt>
__device__ int64_t filter_and_draw(const Group& g, Exchange& ex, int& phase, int& hphase, int n,
                                   KeyAt key_at, TokenAt token_at, const core::RowSettings& rs,
                                   float m, float inv_t, bool use_k, uint32_t kth_floor,
                                   uint32_t max_key, uint64_t u, int64_t* kept, int64_t row = -1,
                                   uint32_t* tau_out = nullptr, uint64_t* total_out = nullptr) {
  uint32_t lo = core::kKeyNegInf + 1;
  LMS_STAMP_ROW(16, g.rank() == 0 ? row : -1);
  if (use_k && kth_floor == max_key) {
    lo = max_key;
  } else if (use_k) {
    lo = group_select<kThreads>(
        g, ex, hphase, n, key_at,
        [](uint32_t k, int) { return static_cast<uint64_t>(k > core::kKeyNegInf); },
        static_cast<uint64_t>(rs.top_k));
  }
  const float min_p = rs.min_p;
  uint32_t tau = lo;
  LMS_STAMP_ROW(17, g.rank() == 0 ? row : -1);
  // (lo == max_key: every kept key is the maximum, and top-p keeps every tie of its lowest key)
  if (rs.top_p < 1.0f && lo != max_key) {
    // the top-p threshold by mass; the target comes from the total weight of the entries the
    // first round of the select sees
    const float top_p = rs.top_p;
    // the likelihood of a key that top-k and min-p keep, -1 for any other
    const auto kept_likelihood = [&](uint32_t k) {  // (branch-free)
      const float e = core::rel_likelihood(value_of(k), m, inv_t);
      return k >= lo && e >= min_p ? e : -1.0f;
    };
    uint32_t tp = group_top_p_threshold<kThreads>(g, ex, phase, hphase, n, key_at, kept_likelihood,
                                                  m, max_key, rs, lo, row);
    if (tp == 0) {
      LMS_COUNT_TOPP_FALLBACK();
      tp = group_select_of<kThreads>(
          g, ex, hphase, n, key_at,
          [&](uint32_t k, int) -> uint64_t {
            const float e = kept_likelihood(k);
            return e >= 0.0f ? core::mass_of(e) : 0;
          },
          [top_p](uint64_t total) { return core::ceil_fraction(top_p, total); });
    }
    tau = tp > lo ? tp : lo;
  }
  LMS_STAMP_ROW(18, g.rank() == 0 ? row : -1);
  if (tau_out) *tau_out = tau;
  return group_draw<kThreads>(
      g, ex, phase, n, key_at, token_at,
      [&](uint32_t k) {
        const float e = core::rel_likelihood(value_of(k), m, inv_t);
        return Contribution{k >= tau && e >= min_p, core::mass_of(e)};
      },
      tau, u, kept, row, total_out);
}

template <int kThreads>
__device__ void write_outputs(const Outputs& out, int64_t row, int32_t token, int32_t status,
                              int32_t kept, float logprob, int top_n) {
  out.tokens[row] = token;
  out.status[row] = status;
  if (out.kept) out.kept[row] = kept;
  if (out.logprob) out.logprob[row] = logprob;
  if (token < 0)
    for (int j = 0; j < top_n; ++j) {
      out.top_ids[row * top_n + j] = -1;
      out.top_logprobs[row * top_n + j] = core::neg_inf();
    }
}

__device__ inline bool ids_in_range(const SparseRows& s, int64_t row, int64_t v, int tid,
                                    int nthreads) {
  if (!s.offsets) return true;
  bool ok = true;
  for (int64_t e = s.offsets[row] + tid; e < s.offsets[row + 1]; e += nthreads)
    ok = ok && s.tokens[e] >= 0 && s.tokens[e] < v;
  return ok;
}

// kVerify: verification's kept sets (KernelArgs::vrows, extra, kept_sets) besides the outputs.
template <int kThreads, bool kVerify = false>
__global__ void __launch_bounds__(kThreads, 2) sample_rows_kernel(const KernelArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  using B = Block<kThreads>;
  Exchange& ex = *reinterpret_cast<Exchange*>(smem);
  const RowGroup g;
  const unsigned G = g.size();
  const int64_t slot = blockIdx.x / G;
  const int64_t row = kVerify && a.row_map ? a.row_map[slot] : slot;
  if (row < 0) return;                           // (every CTA of the slot: the same word)
  if (a.pending && a.pending[row] == 0) return;  // (every CTA of the row: the same word)
  // prow: the row of the parameters and the sparse lists; mrow: the bitmask's
  int64_t prow = row, mrow = row;
  VerifyRow vr{};
  if constexpr (kVerify) {
    vr = a.vrows[row];
    if (vr.req < 0) return;
    prow = vr.req;
    mrow = vr.mask_row;
  }
  const int32_t* extra = kVerify && a.extra ? a.extra + vr.extra_off : nullptr;
  const Request& req = a.req;
  const int64_t V = req.logits.vocab;
  const int64_t c0 = static_cast<int64_t>(g.rank()) * a.chunk;
  const int n = static_cast<int>(c0 >= V ? 0 : (V - c0 < a.chunk ? V - c0 : a.chunk));
  uint32_t* keys = a.stream    ? nullptr
                   : a.ws_keys ? a.ws_keys + row * V + c0
                               : reinterpret_cast<uint32_t*>(smem + sizeof(Exchange));
  uint32_t* tags = a.ws_keys ? a.ws_tags + row * V + c0 : keys + a.chunk;  // (penalties only)
  const int top_n = req.top_logprobs;
  const bool lead = g.rank() == 0 && threadIdx.x == 0;
  int phase = 0, hphase = 0;

  // ---- parameters (every CTA of the row reaches the same verdict) ----
  core::RowSettings rs = core::load_row_settings(req.params, prow);
  if constexpr (kVerify) rs.substream += vr.substream;
  int32_t status = core::validate_row_settings(rs);
  if (status == kRowOk &&
      (req.logit_bias.offsets || req.prompt_tokens.offsets || req.output_tokens.offsets)) {
    // (verification's extra tokens were checked by verify_prepare_kernel)
    const bool ok = ids_in_range(req.logit_bias, prow, V, threadIdx.x, kThreads) &&
                    ids_in_range(req.prompt_tokens, prow, V, threadIdx.x, kThreads) &&
                    ids_in_range(req.output_tokens, prow, V, threadIdx.x, kThreads);
    const bool all_ok = B::allreduce(
        ok, [](bool x, bool y) { return x && y; }, ex);
    if (!all_ok) status = kRowBadTokenId;
  }
  if (status != kRowOk) {
    if (lead) write_outputs<kThreads>(a.out, row, -1, status, 0, core::neg_inf(), top_n);
    return;  // no sibling reads this CTA's shared memory yet
  }

  g.arrive();  // waited for before the first write into a sibling's shared memory

  // ---- load (the one read of the logits), bias, penalties ----
  const size_t esize = req.logits.dtype == DType::kFloat32 ? 4 : 2;
  const void* xrow =
      static_cast<const char*>(req.logits.data) + static_cast<size_t>(row * a.stride) * esize;
  const uint32_t* mask = req.allowed_mask ? req.allowed_mask + mrow * a.mask_words : nullptr;
  const Ownership own = ownership_of(xrow, req.logits.dtype, c0);
  const ChunkKeys key_at{keys, xrow, req.logits.dtype, c0, mask};
  if (threadIdx.x == 0) ex.cand_count = 0;  // published by the barriers below
  LMS_STAMP(0);
  Top3 top;
  Stats s =
      load_chunk<kThreads>(keys, a.ws_keys == nullptr, xrow, req.logits.dtype, c0, n, mask, &top);
  LMS_STAMP(1);
  const bool penalties = req.prompt_tokens.offsets || req.output_tokens.offsets ||
                         (kVerify && a.extra && vr.extra_n > 0);
  if ((req.logit_bias.offsets || penalties) && keys) {  // (never streamed: see make_plan)
    __syncthreads();
    if (req.logit_bias.offsets) {
      apply_bias(keys, req.logit_bias, prow, c0, n, ex);
      __syncthreads();
    }
    // (no extra list where the host found no penalty that could apply: then it changes nothing)
    if (penalties)
      apply_penalties<kThreads>(keys, tags, req, prow, c0, n, rs, extra, extra ? vr.extra_n : 0);
    // the statistics of the load no longer hold: recount
    s = empty_stats();
    top = Top3{};
    for_each_owned<kThreads>(own, n, [&](int i) {
      top.add(keys[i], i);
      count_key(s, keys[i]);
    });
    finish_stats(s, top, c0);
  }

  // ---- statistics ----
  // Small top-k: a lower bound of the row's k-th largest key. With k' = ceil(k / G), each CTA
  // takes the k'-th largest of its threads' maxima (maxima of a partition of its chunk), so it
  // holds at least k' keys at or above it; the minimum over the G CTAs then has at least
  // G k' >= k keys of the row at or above it. It rides on the statistics exchange.
  const bool small_k = rs.temperature > 0.0f && rs.top_k > 0 && rs.top_k <= kThreads;
  const uint32_t k_cta = small_k ? (static_cast<uint32_t>(rs.top_k) + G - 1) / G : 0;
  const bool warp_kth = k_cta > 0 && k_cta <= static_cast<uint32_t>(kWarpSize);
  if (small_k && !warp_kth) {  // k' above the warp size: a radix select of the thread maxima
    ex.thread_max[threadIdx.x] = top.k1;
    const uint64_t valid_maxima = B::allreduce(
        static_cast<uint64_t>(top.k1 > core::kKeyNegInf),
        [](uint64_t x, uint64_t y) { return x + y; }, ex);
    if (valid_maxima >= k_cta) {
      const SingleBlock self;
      s.lower = group_select<kThreads>(
          self, ex, hphase, kThreads, [&](int i) { return ex.thread_max[i]; },
          [](uint32_t k, int) { return static_cast<uint64_t>(k > core::kKeyNegInf); },
          static_cast<uint64_t>(k_cta));
    }
  }
  LMS_STAMP(9);
  s = block_stats<kThreads>(s, top.k1, warp_kth ? static_cast<int>(k_cta) : 0, ex);
  LMS_STAMP(10);
  g.wait();  // every sibling has started: its shared memory may be written
  Stats st = group_allreduce(g, ex, phase, s, StatsOp{});
  if (st.max_key == core::kKeyPosInf) {  // +inf logits: the draw is uniform over them
    uint64_t part = 0;
    for_keys<4>(static_cast<int>(threadIdx.x), n, kThreads, key_at,
                [&](int, uint32_t k) { part += k == core::kKeyPosInf; });
    part = B::allreduce(
        part, [](uint64_t x, uint64_t y) { return x + y; }, ex);
    st.n_posinf = static_cast<uint32_t>(group_sum(g, ex, phase, part, nullptr));
  }
  LMS_STAMP(2);
  if (st.n_valid == 0) {
    if (lead) write_outputs<kThreads>(a.out, row, -1, kRowEmpty, 0, core::neg_inf(), top_n);
    return;
  }
  const float m = value_of(st.max_key);

  // ---- the logprob normaliser S = sum of floor(exp(y - m) * 2^39) ----
  const bool want_lp = a.out.logprob != nullptr || top_n > 0;
  double log_norm = 0.0;
  if (want_lp && st.n_posinf == 0) {
    uint64_t part = 0;
    for_keys<4>(static_cast<int>(threadIdx.x), n, kThreads, key_at, [&](int, uint32_t k) {
      const uint64_t w = core::mass_of(core::rel_likelihood(value_of(k), m, 1.0f));  // (no branch)
      part += k > core::kKeyNegInf ? w : 0;
    });
    part = B::allreduce(
        part, [](uint64_t x, uint64_t y) { return x + y; }, ex);
    log_norm = core::log_normaliser(group_sum(g, ex, phase, part, nullptr));
  }
  const auto logprob_at = [&](uint32_t key) {
    if (st.n_posinf > 0)
      return key == core::kKeyPosInf ? core::uniform_logprob(st.n_posinf) : core::neg_inf();
    return core::logprob_of(value_of(key), m, log_norm);
  };

  // ---- choose the token ----
  const uint64_t u = core::row_uniform64(rs.seed, rs.step, rs.substream);
  int64_t token = -1;  // known to the CTA that found it (all CTAs for greedy)
  uint32_t token_key = st.max_key;
  int64_t kept = 0;
  bool topn_from_candidates = false, topn_done = false;  // (group-uniform)
  uint32_t kept_tau = 0;    // a tempered row's threshold (rank 0; verification)
  uint64_t kept_total = 0;  // and its kept weight
  if (rs.temperature == 0.0f) {
    token = g.rank() == 0 ? st.argmax : -1;
    kept = 1;
  } else if (st.n_posinf > 0) {
    token = group_draw<kThreads>(
        g, ex, phase, n, key_at, [&](int i) { return c0 + i; },
        [](uint32_t k) {
          return Contribution{k == core::kKeyPosInf, 1};
        },
        core::kKeyPosInf, u, &kept);
    token_key = core::kKeyPosInf;
  } else {
    const float inv_t = core::div_rn(1.0f, rs.temperature);
    const bool use_k = rs.top_k > 0 && static_cast<uint32_t>(rs.top_k) < st.n_valid;
    // The candidate path: with a lower bound `cand_lo` of every key the filters can keep, each
    // CTA pushes its keys >= it to rank 0, which (when they are few) finishes the row alone,
    // with block barriers only; otherwise (or for other rows) every CTA takes part in the
    // selections over its whole chunk.
    //  - small top-k: st.lower (the k-th largest key is at least it);
    //  - min-p alone: a key below y = m + T ln(min_p), less a margin far above the rounding of
    //    the contract's likelihood (relative 1e-6), cannot pass the exact min-p test.
    uint32_t cand_lo = 0;  // 0: no candidate path
    bool gathered = false;
    int64_t gathered_token = -1, gathered_kept = 0;
    if (use_k && small_k) {
      // (where the bound is the maximum, so is the k-th largest key: filter_and_draw keeps the
      // maximum's ties with no selection, where the candidates could be the whole row)
      if (st.lower != st.max_key) cand_lo = st.lower;
    } else if (!use_k && rs.top_p >= 1.0f && rs.min_p > 0.0f) {
      cand_lo = core::key_floor_of_likelihood(m, rs.temperature, logf(rs.min_p));
    }
    // top-n logprobs of a gathered top-k row with n <= k come from the candidates too
    topn_from_candidates = top_n > 0 && use_k && small_k && top_n <= rs.top_k;
    if (cand_lo != 0) {
      // Each CTA pushes its keys >= the bound (its threads' three largest keys tell which
      // threads hold any, and which hold more than two and must rescan their tokens) into its
      // region of rank 0's gather buffer, and its count to every rank; after one group barrier
      // every rank knows whether rank 0 can finish the row alone.
      LMS_STAMP(3);
      const uint32_t lo = cand_lo;
      const unsigned rank = g.rank();
      const int cap = Exchange::kMaxGathered / static_cast<int>(G);
      uint32_t* root_key = g.map(ex.gath_key, 0) + rank * cap;
      uint32_t* root_tok = g.map(ex.gath_tok, 0) + rank * cap;
      const auto push = [&](uint32_t k, int i) {
        const int slot = static_cast<int>(atomicAdd(&ex.cand_count, 1u));
        if (slot < cap) {
          root_key[slot] = k;
          root_tok[slot] = static_cast<uint32_t>(c0 + i);
        }
      };
      // a thread whose third largest key passes rescans its tokens: with its warp's help where
      // few lanes of the warp must (the usual case), each alone where many must (flat rows)
      uint64_t rescan = ballot(top.k3 >= lo);
      if (__popcll(static_cast<long long>(rescan)) > 2) {
        if (top.k3 >= lo)
          for_each_owned<kThreads>(own, n, [&](int i) {
            const uint32_t k = key_at(i);
            if (k >= lo) push(k, i);
          });
        rescan = 0;
      }
      const int warp0 = static_cast<int>(threadIdx.x) - lane_id();
      while (rescan != 0) {
        const int src = static_cast<int>(__ffsll(static_cast<long long>(rescan))) - 1;
        rescan &= rescan - 1;
        for_each_owned_by<kThreads>(own, n, warp0 + src, [&](int i) {
          const uint32_t k = key_at(i);
          if (k >= lo) push(k, i);
        });
      }
      if (top.k3 < lo) {
        if (top.k1 >= lo) push(top.k1, top.i1);
        if (top.k2 >= lo) push(top.k2, top.i2);
      }
      const int total = exchange_gathered_counts(g, ex, cap);  // -1: a region overflowed
      LMS_STAMP(4);
      LMS_PROFILE_VALUE(0, static_cast<unsigned long long>(total < 0 ? ~0u : total));
      LMS_PROFILE_VALUE(1, static_cast<unsigned long long>(ex.gcount[0]));
      if (total >= 0 && total <= kThreads) {
        gathered = true;
        topn_done = topn_from_candidates;
        if (rank == 0) {
          // compact the regions (the thread maxima are dead: cand may be written)
          compact_gathered<kThreads, true>(ex, G, cap);
          if (threadIdx.x < 4 && total + static_cast<int>(threadIdx.x) < (total + 3) / 4 * 4) {
            ex.cand.key[total + threadIdx.x] = 0;  // padding for block_finish's 16-byte reads
            ex.cand.tok[total + threadIdx.x] = UINT32_MAX;
          }
          __syncthreads();
          LMS_STAMP(5);
          block_finish<kThreads>(ex.cand.key, ex.cand.tok, total, use_k ? rs.top_k : 0, rs, m,
                                 inv_t, u, ex, row);
          gathered_token = static_cast<int64_t>(ex.bcast[2]);
          gathered_kept = static_cast<int64_t>(ex.bcast[1]);
          // the row's threshold: the candidates' bound, top-k's and top-p's
          kept_tau = max(max(cand_lo, ex.kept_lo), ex.kept_tau);
          kept_total = ex.kept_total;
          if (topn_from_candidates) {
            // The row's n largest keys (n <= k) are all candidates: each takes its rank in
            // (key descending, token ascending) order, and the first n write their entry.
            for (int e = threadIdx.x; e < total; e += kThreads) {
              const uint32_t key = ex.cand.key[e], tok = ex.cand.tok[e];
              int before_e = 0;
              for (int j = 0; j < total; ++j) {
                const uint32_t kj = ex.cand.key[j];
                before_e += kj > key || (kj == key && ex.cand.tok[j] < tok);
              }
              if (before_e < top_n) {
                a.out.top_ids[row * top_n + before_e] = static_cast<int32_t>(tok);
                a.out.top_logprobs[row * top_n + before_e] = logprob_at(key);
              }
            }
          }
          __syncthreads();
        }
      }
    }
    if (gathered) {
      token = g.rank() == 0 ? gathered_token : -1;
      kept = gathered_kept;
    } else {
      token = filter_and_draw<kThreads>(
          g, ex, phase, hphase, n, key_at, [&](int i) { return c0 + static_cast<int64_t>(i); }, rs,
          m, inv_t, use_k, small_k ? st.lower : 0u, st.max_key, u, &kept, row, &kept_tau,
          &kept_total);
    }
    if (token >= 0) token_key = static_cast<uint32_t>(ex.bcast[3]);
  }

  if (token >= 0 && threadIdx.x == 0) {
    const uint32_t key = token_key;
    write_outputs<kThreads>(a.out, row, static_cast<int32_t>(token), kRowOk,
                            static_cast<int32_t>(kept), logprob_at(key), 0);
  }
  if constexpr (kVerify) {
    if (lead) {
      KeptSet ks;
      ks.kind = rs.temperature == 0.0f ? kKeptGreedy
                : st.n_posinf > 0      ? kKeptPosInf
                                       : kKeptTempered;
      ks.total = ks.kind == kKeptGreedy ? 1 : ks.kind == kKeptPosInf ? st.n_posinf : kept_total;
      ks.tau = kept_tau;
      ks.m = m;
      ks.log_norm = log_norm;
      ks.n_posinf = st.n_posinf;
      a.kept_sets[row] = ks;
    }
  }
  LMS_STAMP(6);
  if (top_n > 0 && !topn_done)
    group_top_n<kThreads>(g, ex, phase, hphase, key_at, n, c0, st, log_norm, top_n,
                          a.out.top_ids + row * top_n, a.out.top_logprobs + row * top_n);
  LMS_STAMP(7);
  // No final group barrier: siblings write into a CTA's shared memory only before a group
  // barrier (post_to_group, the candidate push, top-n's atomics) and read it only between one
  // group barrier and the next (group_select's histogram merge), and every path ends with a
  // barrier followed by local work only. So each CTA leaves as soon as its part is done (rank 0
  // alone finishes a gathered row), and its multiprocessor slot goes to the next CTA.
  LMS_STAMP(8);
}

}  // namespace lmsample::gpu
