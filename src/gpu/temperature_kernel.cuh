// Temperature alone, and temperature with top-p (docs/contract.md sections 2-4 with no other
// filter): with no filter a row's kept set is every valid token, so its draw needs the row
// maximum and then every token's weight, in token order; with top-p, see kCandCap below.
// Launched instead of the general kernel where the host knows that no row has a top-k or min-p
// filter (no top_k or min_p array, none in RowParams::defaults; top_p only from B = 32 on) and
// no step of the contract but the load applies (no bitmask, bias or penalty history, no
// logprobs); the temperature and top_p may be one for the call or arrays (rows with T = 0 are
// greedy). Same bits as the general kernel and the CPU: the same exact keys, likelihoods
// (core/math.hpp) and integer sums.
//
// Work items claimed in order, no clusters, nothing kept on chip between them: each row is split
// into G chunks; a "max" item reads a chunk from memory for its statistics (maximum key at its
// lowest index, valid count), a "weight" item reads it again (from L2: a row's weight items come
// `lookahead` rows after its max items) for its weights, one sum per 512-token sub-chunk, and
// the last weight item of a row draws: it finds the sub-chunk that holds t = floor(u W / 2^64)
// from the sums, and one warp walks it in token order. A CTA claims its item from a counter
// (tickets in order), and a weight item waits only for the max items of its row, which have
// lower tickets: each was claimed by a CTA that is running and waits for nothing, so the wait
// ends whatever the GPU runs at once.
#pragma once

#include "core/math.hpp"
#include "core/params.hpp"
#include "gpu/block.cuh"
#include "gpu/greedy_kernel.cuh"
#include "gpu/sample_kernel.cuh"

namespace lmsample::gpu {

constexpr int kTemperatureThreads = 256;

namespace temperature {

// Element i of a chunk, as float bits (16-bit formats widened exactly).
template <DType kDt>
__device__ __forceinline__ uint32_t bits_at(const unsigned char* data, int i) {
  if constexpr (kDt == DType::kFloat32) {
    return reinterpret_cast<const uint32_t*>(data)[i];
  } else {
    const uint16_t h = reinterpret_cast<const uint16_t*>(data)[i];
    return kDt == DType::kBFloat16 ? static_cast<uint32_t>(h) << 16
                                   : core::float_bits(core::f16_to_float(h));
  }
}

struct Stats {
  uint64_t best;   // greedy_pack of the maximum key at its lowest index (0: none valid)
  uint64_t valid;  // tokens with a key above -inf
};
struct StatsOp {
  __device__ Stats operator()(const Stats& a, const Stats& b) const {
    return Stats{a.best > b.best ? a.best : b.best, a.valid + b.valid};
  }
};

// This thread's statistics of the chunk's n elements (16-byte vectors strided by kThreads, then
// the elements after the last whole vector).
template <int kThreads, DType kDt>
__device__ Stats chunk_stats(const unsigned char* data, int n, int64_t c0) {
  constexpr int kPer = kDt == DType::kFloat32 ? 4 : 8;  // elements per 16-byte vector
  uint32_t best_key = core::kKeyNegInf;
  int best_i = -1;
  uint32_t valid = 0;
  const int nvec = n / kPer;
  const uint4* vec = reinterpret_cast<const uint4*>(data);
#pragma unroll 4
  for (int v = threadIdx.x; v < nvec; v += kThreads) {
    const uint4 q = vec[v];
    uint32_t k[kPer];
    if constexpr (kDt == DType::kFloat32) {
      k[0] = core::canonical_key_of_bits(q.x);
      k[1] = core::canonical_key_of_bits(q.y);
      k[2] = core::canonical_key_of_bits(q.z);
      k[3] = core::canonical_key_of_bits(q.w);
    } else {
#pragma unroll
      for (int j = 0; j < kPer; ++j)
        k[j] = core::canonical_key_of_bits(bits_at<kDt>(data, v * kPer + j));
    }
    uint32_t mx = k[0], mn = k[0];
#pragma unroll
    for (int j = 1; j < kPer; ++j) {
      mx = k[j] > mx ? k[j] : mx;
      mn = k[j] < mn ? k[j] : mn;
    }
    if (mn > core::kKeyNegInf) {
      valid += kPer;
    } else {
#pragma unroll
      for (int j = 0; j < kPer; ++j) valid += k[j] > core::kKeyNegInf;
    }
    if (mx > best_key) {  // (a thread's vectors come in increasing index order)
      int first = kPer - 1;
#pragma unroll
      for (int j = kPer - 2; j >= 0; --j) first = k[j] == mx ? j : first;
      best_key = mx;
      best_i = v * kPer + first;
    }
  }
  for (int i = nvec * kPer + static_cast<int>(threadIdx.x); i < n; i += kThreads) {
    const uint32_t key = core::canonical_key_of_bits(bits_at<kDt>(data, i));
    valid += key > core::kKeyNegInf;
    if (key > best_key) {
      best_key = key;
      best_i = i;
    }
  }
  return Stats{best_i < 0 ? 0 : greedy_pack(best_key, c0 + best_i), valid};
}

// floor(exp_nonpos(z) * 2^39) for z <= 0 or NaN, as core::mass_parts' split hi * 2^20 + lo, from
// exp_parts with exponent-field adds and floor_plus_2p23 (port.hpp: 2^23 + floor(x) for x in
// [0, 2^23), whose float bits are 0x4b000000 + floor(x); a round-toward-zero add on CUDA): no
// float <-> integer conversion, which the GPU issues at a quarter of an add's rate. Returned as
// those biased bits; a sum of n tokens' bits less n * kBias (mod 2^32) is the sum of their parts.
// z is first raised to -86 (fmaxf also takes NaN there): exp_nonpos gives 0 below, and the
// weight of exp(-86) is 0 too.
// The likelihood is returned too: exp_nonpos(max(z, -86)), which is exp_nonpos(z) wherever the
// weight is not 0 (a min-p test needs it there only).
constexpr uint32_t kBias = 0x4b000000u;  // float bits of 2^23
__device__ __forceinline__ float weight_bits_and_e(float z, uint32_t& hi_bits, uint32_t& lo_bits) {
  const core::ExpParts e = core::exp_parts(fmaxf(z, -86.0f));
  const uint32_t scaled_bits = core::float_bits(e.p) + ((e.s_bits + 39u) << 23);  // p 2^(k+39)
  const float x = core::bits_float(scaled_bits - (20u << 23));                    // scaled 2^-20
  const float t = floor_plus_2p23(x);                                             // 2^23 + hi
  const float hi_f = core::sub_rn(t, 8388608.0f);
  const float rest = core::fma_rn(-hi_f, 1048576.0f, core::bits_float(scaled_bits));  // exact
  hi_bits = core::float_bits(t);
  lo_bits = core::float_bits(floor_plus_2p23(rest));
  return core::bits_float(core::float_bits(e.p) + (e.s_bits << 23));
}
__device__ __forceinline__ void weight_bits(float z, uint32_t& hi_bits, uint32_t& lo_bits) {
  (void)weight_bits_and_e(z, hi_bits, lo_bits);
}

// Weight of one element (float bits) for the kinds of rows: a finite maximum with T = 1 or any
// finite 1/T (the likelihood without the d == 0 select, core::rel_likelihood_finite, through
// weight_bits), any other 1/T (+inf for a tiny T: core::rel_likelihood), and a row whose maximum
// is +inf (weight 1 for each +inf token, section 3). NaN bits give 0 in each (NaN - m is NaN,
// whose exp is 0; the canonical value of a NaN is -inf, whose weight is 0), and -0 gives +0's
// weight (y - m is the same).
template <int kMode>  // 0: T = 1, 1: finite 1/T, 2: other 1/T, 3: +inf maximum
struct Weight {
  float m, inv_t;
  static constexpr bool kBits = kMode <= 1;  // weight_bits
  __device__ __forceinline__ float z_of(uint32_t bits) const {
    const float d = core::sub_rn(core::bits_float(bits), m);
    return kMode == 0 ? d : core::mul_rn(d, inv_t);
  }
  __device__ __forceinline__ uint64_t operator()(uint32_t bits) const {
    if constexpr (kMode == 3) {
      return bits == 0x7f800000u ? 1u : 0u;
    } else if constexpr (kBits) {
      uint32_t h, l;
      weight_bits(z_of(bits), h, l);
      return (static_cast<uint64_t>(h - kBias) << 20) + (l - kBias);
    } else {
      return core::mass_of(core::rel_likelihood(core::bits_float(bits), m, inv_t));
    }
  }
};

// Calls f(Weight<mode>{m, inv_t}) for a mode 0 .. 3 known at run time.
template <typename F>
__device__ __forceinline__ void with_weight(int mode, float m, float inv_t, F f) {
  switch (mode) {
    case 0:
      f(Weight<0>{m, inv_t});
      break;
    case 1:
      f(Weight<1>{m, inv_t});
      break;
    case 2:
      f(Weight<2>{m, inv_t});
      break;
    default:
      f(Weight<3>{m, inv_t});
      break;
  }
}

constexpr int kSub = 512;                   // tokens per sub-chunk
constexpr int kPerLane = kSub / kWarpSize;  // a lane's tokens of a sub-chunk (16, or 8 on CDNA)

// Top-p rows (temperature and top-p, no other filter) look for their threshold among the
// tokens whose weight is at least (P - 1) 2^20, where the tokens of weight >= P 2^20 (the
// probe: likelihood >= 2^-L, P = 2^(31 - L)) hold the target ceil(p W): the same argument as
// the CPU's (src/cpu/rows.cpp, at kProbe) makes that exact for any P. Each weight item counts,
// per sub-chunk, the tokens tied with the row maximum and appends the candidates of the row's
// deeper level (float bits, token) to the row's list (list_cap_of); the last weight item, in
// one pass over the list, sums the weight of the probe's tokens at two levels, P and 2 P, and
// ranks (block_select_by_mass) the candidates of the shallower level that holds the target:
// from shared memory (key, token and likelihood of each) where they fit (kCandCap), else from
// the list itself until what is still in play fits (rank_and_draw_long). The levels follow the
// row's p (probe_hi_of): on N(0,1) * 4 logits (600 rows) 2^-12 fails 0.7% of the rows at
// p = 0.9 and 81% at 0.95, 2^-13 none at 0.9 and 31% at 0.95, 2^-14 1% at 0.95 and 2^-15 none
// (median candidates 1,377 / 2,158 / 3,310 / ~4,900). Where the maximum's ties alone hold the
// target (a flat row), the threshold is the maximum and the draw walks the ties; where none of
// this applies (neither level holds the target, more candidates than the list keeps, a tiny T
// or a +inf maximum) the row is marked pending and the general kernel, launched next,
// finishes it (a pending row costs that launch ~70 us on an H200).
#if defined(__HIPCC__)
constexpr int kCandCap = 4096;  // candidates ranked in shared memory (48 KB of CDNA's 64 KB)
#else
constexpr int kCandCap = 5120;  // candidates ranked in shared memory (60 KB)
#endif
constexpr int kListCap = 16384;  // candidates kept per row (N(0,1) * 4, p = 0.95: max ~10,000)
// P of a row's deeper probe level: likelihood 2^-13 for p <= 0.9, 2^-15 for p <= 0.95,
// 2^-17 above (the shallower level, 2 P, is twice the likelihood)
__device__ __forceinline__ uint32_t probe_hi_of(float top_p) {
  return top_p <= 0.9f ? 64u : top_p <= 0.95f ? 16u : 4u;
}
// The candidates a row's list keeps: half the list for the shallowest probe (a flat row's every
// token is a candidate, and appends beyond what a probe needs cost time)
__device__ __forceinline__ uint32_t list_cap_of(uint32_t probe_hi) {
  return probe_hi >= 64 ? kListCap / 2 : kListCap;
}
// the last weight item's copy of the list: keys, tokens and likelihoods
constexpr size_t kCandSmemBytes = kCandCap * (4 + 4 + 4);

struct StreamArgs {
  KernelArgs a;
  // [0] next ticket, [1, B] max items done per row, [B + 1, 2B] weight items done, and with
  // top-p rows [2B + 1, 3B] candidates per row, [3B + 1, 4B] rows left to the general kernel
  uint32_t* counters;
  uint64_t* stats;     // [B][G][2]: a chunk's greedy_pack of its maximum, its valid count
  uint64_t* sub_sums;  // [B][nsub]: the weight of each sub-chunk of the row
  // top-p rows only (null where no row can have one)
  uint32_t* sub_ties;  // [B][nsub]: each sub-chunk's tokens tied with the row maximum
  uint2* cand;         // [B][kListCap]: float bits and token of each candidate
  int groups;          // G: chunks per row
  int chunk;           // tokens per chunk (a multiple of kSub)
  int nsub;            // ceil(V / kSub)
  int lookahead;       // rows between a row's max items and its weight items

  // the counters of row r
  LMS_HD uint32_t* max_done(int64_t r) const { return counters + 1 + r; }
  LMS_HD uint32_t* weight_done(int64_t r) const { return counters + 1 + a.req.logits.batch + r; }
  LMS_HD uint32_t* cand_count(int64_t r) const { return counters + 1 + 2 * a.req.logits.batch + r; }
  // nonzero: the general kernel finishes row r (KernelArgs::pending points here)
  LMS_HD uint32_t* pending(int64_t r) const { return counters + 1 + 3 * a.req.logits.batch + r; }
};

// Float bits of token `tok` of `row` (the bits of -inf at and beyond V).
template <DType kDt>
__device__ __forceinline__ uint32_t token_bits(const void* row, int64_t tok, int64_t v) {
  return tok < v ? load_bits(row, kDt, tok) : 0xff800000u;
}

// This lane's kPerLane tokens of sub-chunk k, as float bits: in 16-byte vectors lane + kWarpSize
// jj where the row is aligned and the sub-chunk whole (`vectors` set), else tokens
// lane + kWarpSize j. Token of b[j]: lane_token below.
template <DType kDt>
__device__ __forceinline__ bool lane_bits(const void* row, bool aligned, int64_t v, int64_t k,
                                          uint32_t (&b)[kPerLane]) {
  constexpr int kPerVec = kDt == DType::kFloat32 ? 4 : 8;
  const int lane = lane_id();
  const int64_t t0 = k * kSub;
  if (aligned && t0 + kSub <= v) {
    const uint4* q = reinterpret_cast<const uint4*>(static_cast<const unsigned char*>(row) +
                                                    t0 * (kDt == DType::kFloat32 ? 4 : 2));
#pragma unroll
    for (int jj = 0; jj < kPerLane / kPerVec; ++jj) {
      const uint4 w = q[lane + kWarpSize * jj];
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int h = 0; h < kPerVec; ++h) {
        if constexpr (kDt == DType::kFloat32) {
          b[kPerVec * jj + h] = words[h];
        } else {
          const uint16_t x = static_cast<uint16_t>(words[h / 2] >> (16 * (h % 2)));
          b[kPerVec * jj + h] = kDt == DType::kBFloat16 ? static_cast<uint32_t>(x) << 16
                                                        : core::float_bits(core::f16_to_float(x));
        }
      }
    }
    return true;
  }
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) b[j] = token_bits<kDt>(row, t0 + lane + kWarpSize * j, v);
  return false;
}
template <DType kDt>
__device__ __forceinline__ int64_t lane_token(int64_t k, bool vectors, int j) {
  constexpr int kPerVec = kDt == DType::kFloat32 ? 4 : 8;
  const int lane = lane_id();
  return k * kSub + (vectors ? kPerVec * (lane + kWarpSize * (j / kPerVec)) + j % kPerVec
                             : lane + kWarpSize * j);
}

// The weight of this lane's tokens of sub-chunk k, for the sub-chunk's sum.
template <DType kDt, typename W>
__device__ __forceinline__ uint64_t lane_weight(const void* row, bool aligned, int64_t v, int64_t k,
                                                W weight) {
  uint32_t b[kPerLane];
  lane_bits<kDt>(row, aligned, v, k, b);
  if constexpr (W::kBits) {
    uint32_t hs = 0, ls = 0;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      uint32_t h, l;
      weight_bits(weight.z_of(b[j]), h, l);
      hs += h;
      ls += l;
    }
    return (static_cast<uint64_t>(hs - kPerLane * kBias) << 20) + (ls - kPerLane * kBias);
  } else {
    uint64_t sum = 0;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) sum += weight(b[j]);
    return sum;
  }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int d = kWarpSize / 2; d > 0; d >>= 1) v += shfl_xor(v, d);
  return v;
}

// A top-p row's sub-chunk k (weight_bits modes): its weight into sub_sums, its ties with the
// maximum into sub_ties, its candidates appended to the row's list (a warp reserves its slots
// with one atomic; a warp whose slots all lie beyond the list writes none).
template <DType kDt, typename W>
__device__ __forceinline__ void top_p_sub_chunk(const StreamArgs& s, const void* row, bool aligned,
                                                int64_t r, int64_t k, W weight, uint32_t probe_hi) {
  const int64_t v = s.a.req.logits.vocab;
  uint32_t b[kPerLane];
  const bool vectors = lane_bits<kDt>(row, aligned, v, k, b);
  uint32_t hs = 0, ls = 0, cand = 0, ties = 0;  // cand: bit j for a candidate b[j]
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    uint32_t h, l;
    weight_bits(weight.z_of(b[j]), h, l);
    hs += h;
    ls += l;
    cand |= h - kBias >= probe_hi - 1 ? 1u << j : 0u;
    // a tie with the (finite) maximum: y - m == 0 exactly (NaN, -inf and every other value
    // give a nonzero or NaN difference; -0 and +0 are tied, as their canonical keys are)
    ties += core::sub_rn(core::bits_float(b[j]), weight.m) == 0.0f ? 1u : 0u;
  }
  if (ballot(cand != 0) != 0) {
    const int lane = lane_id();
    const uint32_t n = static_cast<uint32_t>(__popc(cand));
    uint32_t before = n;  // (an inclusive scan over the lanes)
#pragma unroll
    for (int d = 1; d < kWarpSize; d <<= 1) {
      const uint32_t x = shfl_up(before, d);
      if (lane >= d) before += x;
    }
    const uint32_t all = shfl_idx(before, kWarpSize - 1);
    uint32_t base = 0;
    if (lane == 0) base = atomicAdd(s.cand_count(r), all);
    base = shfl_idx(base, 0);
    const uint32_t cap = list_cap_of(probe_hi);
    if (base < cap && cand != 0) {
      base += before - n;
      uint2* list = s.cand + r * kListCap;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        if ((cand >> j) & 1u) {
          if (base < cap)
            list[base] = make_uint2(b[j], static_cast<uint32_t>(lane_token<kDt>(k, vectors, j)));
          ++base;
        }
      }
    }
  }
  const uint64_t sum =
      warp_sum((static_cast<uint64_t>(hs - kPerLane * kBias) << 20) + (ls - kPerLane * kBias));
  ties = warp_sum(ties);
  if (lane_id() == 0) {
    s.sub_sums[r * s.nsub + k] = sum;
    s.sub_ties[r * s.nsub + k] = ties;
  }
}

// The weight item's sums: warp w takes the sub-chunks c * spc + w, + warps, ... of its chunk.
template <int kThreads, DType kDt, bool kTopP, typename W>
__device__ void chunk_sub_sums(const StreamArgs& s, const void* row, bool aligned, int64_t r, int c,
                               W weight, bool top_p, uint32_t probe_hi) {
  constexpr int kWarps = kThreads / kWarpSize;
  const int64_t v = s.a.req.logits.vocab;
  const int spc = s.chunk / kSub;
  const int k1 = (c + 1) * spc < s.nsub ? (c + 1) * spc : s.nsub;
  const int k0 = c * spc + static_cast<int>(threadIdx.x) / kWarpSize;
  if constexpr (kTopP && W::kBits) {
    if (top_p) {
      for (int k = k0; k < k1; k += kWarps)
        top_p_sub_chunk<kDt>(s, row, aligned, r, k, weight, probe_hi);
      return;
    }
  }
  for (int k = k0; k < k1; k += kWarps) {
    const uint64_t sum = warp_sum(lane_weight<kDt>(row, aligned, v, k, weight));
    if (lane_id() == 0) s.sub_sums[r * s.nsub + k] = sum;
  }
}

// The token whose running weight passes t = floor(u W / 2^64), W the sum of sum_at(k) over the
// row's sub-chunks, weight(bits) the weight of one token (sum_at(k) the sum of its sub-chunk's):
// each thread sums a contiguous run of the sub-chunk sums, a block scan finds the run and the
// sub-chunk that hold t, and warp 0 walks that sub-chunk in token order (kPerLane tokens a
// lane). *total gets W. Returns the token in the one lane that found it, -1 elsewhere.
template <int kThreads, DType kDt, typename SumAt, typename W>
__device__ int64_t stream_draw(const StreamArgs& s, SmallExchange& ex, const void* row, uint64_t u,
                               SumAt sum_at, W weight, uint64_t* total) {
  using B = Block<kThreads>;
  const int64_t v = s.a.req.logits.vocab;
  const int per = (s.nsub + kThreads - 1) / kThreads;
  const int k0 = static_cast<int>(threadIdx.x) * per;
  const int k1 = k0 + per < s.nsub ? k0 + per : s.nsub;
  uint64_t mine = 0;
  for (int k = k0; k < k1; ++k) mine += sum_at(k);
  uint64_t all = 0;
  const uint64_t incl = B::inclusive_scan(mine, &all, ex);
  *total = all;
  const uint64_t t = core::scale_draw(u, all);
  uint64_t acc = incl - mine;
  if (mine > 0 && acc <= t && t < acc + mine) {  // one thread
    int k = k0;
    while (acc + sum_at(k) <= t) acc += sum_at(k++);
    ex.bcast[0] = static_cast<uint64_t>(k);
    ex.bcast[1] = acc;
  }
  __syncthreads();
  int64_t token = -1;
  if (threadIdx.x < kWarpSize) {
    const int64_t k = static_cast<int64_t>(ex.bcast[0]);
    const uint64_t base = ex.bcast[1];
    const int lane = lane_id();
    const int64_t t0 = k * kSub + kPerLane * lane;
    uint64_t w[kPerLane], lane_sum = 0;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      w[j] = weight(token_bits<kDt>(row, t0 + j, v));
      lane_sum += w[j];
    }
    uint64_t run = lane_sum;  // inclusive scan over the lanes
#pragma unroll
    for (int d = 1; d < kWarpSize; d <<= 1) {
      const uint64_t x = shfl_up(run, d);
      if (lane >= d) run += x;
    }
    uint64_t a = base + run - lane_sum;
    if (lane_sum > 0 && a <= t && t < a + lane_sum) {
      int j = 0;
      while (a + w[j] <= t) a += w[j++];
      token = t0 + j;
    }
  }
  __syncthreads();  // (bcast)
  return token;
}

// The bits that hold every token id below v.
__device__ __forceinline__ int id_bits_of(int64_t v) {
  int b = 1;
  while ((int64_t{1} << b) < v) ++b;
  return b;
}

// f(i, key, token, likelihood) for each entry i of a row's list of n (float bits, token),
// four entries in flight a thread.
template <int kThreads, typename W, typename F>
__device__ __forceinline__ void for_list(const volatile uint32_t* src, int n, W weight, F f) {
  for (int i0 = threadIdx.x; i0 < n; i0 += 4 * kThreads) {
    uint32_t w[8];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int i = i0 + q * kThreads;
      w[2 * q] = i < n ? src[2 * i] : 0u;
      w[2 * q + 1] = i < n ? src[2 * i + 1] : 0u;
    }
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int i = i0 + q * kThreads;
      if (i < n)
        f(i, core::canonical_key_of_bits(w[2 * q]), w[2 * q + 1],
          core::exp_nonpos(weight.z_of(w[2 * q])));
    }
  }
}

// A top-p row's candidates as the ranking reads them: key, token and weight of entry i.
struct SmemEntries {  // in shared memory: kCandCap keys, then tokens, then likelihoods
  uint32_t* key;
  __device__ uint32_t* tok() const { return key + kCandCap; }
  __device__ float* lik() const { return reinterpret_cast<float*>(key + 2 * kCandCap); }
  __device__ uint32_t key_at(int i) const { return key[i]; }
  __device__ uint32_t tok_at(int i) const { return tok()[i]; }
  __device__ uint64_t mass(int i) const { return core::mass_of(lik()[i]); }
  __device__ ValueWeight key_mass(int i) const { return ValueWeight{key[i], mass(i)}; }
};
template <typename W>
struct GlobalEntries {  // the row's list (float bits, token), written by other CTAs
  const volatile uint32_t* list;
  W weight;
  __device__ uint32_t key_at(int i) const { return core::canonical_key_of_bits(list[2 * i]); }
  __device__ uint32_t tok_at(int i) const { return list[2 * i + 1]; }
  __device__ uint64_t mass(int i) const { return weight(list[2 * i]); }
  __device__ ValueWeight key_mass(int i) const {  // (one load)
    const uint32_t b = list[2 * i];
    return ValueWeight{core::canonical_key_of_bits(b), weight(b)};
  }
};

// Two block-wide integer sums at once (Block::allreduce with PairSum).
struct Pair {
  uint64_t a, b;
};
struct PairSum {
  __device__ Pair operator()(const Pair& x, const Pair& y) const {
    return Pair{x.a + y.a, x.b + y.b};
  }
};

// What the last weight item learns of a row's list in one pass: the weight of the tokens at or
// above the probe (weight >= P 2^20, P = probe_hi_of(p)) and at or above twice it, the
// candidates of the shallower level (weight >= (2 P - 1) 2^20) and the lowest key of each set.
struct ListSums {
  uint64_t w_deep = 0, w_shallow = 0;
  uint32_t n_shallow = 0, kmin_deep, kmin_shallow;
  __device__ void add(uint32_t k, uint64_t m, uint64_t probe) {
    w_deep += m >= probe ? m : 0;
    w_shallow += m >= 2 * probe ? m : 0;
    const bool shallow = m >= 2 * probe - (uint64_t{1} << 20);
    n_shallow += shallow ? 1u : 0u;
    kmin_deep = k < kmin_deep ? k : kmin_deep;
    kmin_shallow = shallow && k < kmin_shallow ? k : kmin_shallow;
  }
};
struct ListSumsOp {
  __device__ ListSums operator()(const ListSums& x, const ListSums& y) const {
    ListSums r;
    r.w_deep = x.w_deep + y.w_deep;
    r.w_shallow = x.w_shallow + y.w_shallow;
    r.n_shallow = x.n_shallow + y.n_shallow;
    r.kmin_deep = x.kmin_deep < y.kmin_deep ? x.kmin_deep : y.kmin_deep;
    r.kmin_shallow = x.kmin_shallow < y.kmin_shallow ? x.kmin_shallow : y.kmin_shallow;
    return r;
  }
};

// The draw among the kept entries of `es` (key >= tau) in token order: the smallest token whose
// running weight exceeds t, i.e. the largest reversed id whose kept entries at or above it weigh
// t + 1. Every thread gets the token.
template <int kThreads, typename Entries>
__device__ __forceinline__ int64_t draw_kept(int n, const Entries& es, uint32_t tau, uint64_t t,
                                             int64_t vocab, uint64_t* hist, SmallExchange& ex) {
  const int bits = id_bits_of(vocab);
  const uint32_t ones = bits >= 32 ? 0xffffffffu : (1u << bits) - 1u;
  uint64_t below = 0;
  const uint32_t x = block_select_by_mass<kThreads>(
      n,
      [&](int i) {
        const ValueWeight km = es.key_mass(i);
        return ValueWeight{ones - es.tok_at(i), km.val >= tau ? km.w : 0};
      },
      t + 1, 0u, ones, hist, ex, &below);
  return static_cast<int64_t>(ones - x);
}

// The threshold among the n candidates `es` (kmin the lowest of their keys; they include every
// token with a key at or above the lowest key of the probe's tokens, whose weight holds the
// target) and the draw among the kept ones. *token (thread 0) and *kept get the result.
// (not inlined: it keeps the kernel's registers for the passes over the row)
template <int kThreads, typename Entries>
__device__ __noinline__ void rank_and_draw(int n, const Entries& es, uint32_t kmin, uint64_t target,
                                           uint32_t max_key, uint64_t u, int64_t vocab,
                                           uint64_t* hist, SmallExchange& ex, int64_t r,
                                           int64_t* token, int64_t* kept) {
  using B = Block<kThreads>;
  __syncthreads();  // (es in shared memory: written by other threads)
  LMS_STAMP_ROW(29, r);
  // the threshold: the largest key whose candidates at or above it weigh the target (every
  // candidate's key lies between the lowest and the maximum: the select skips the leading bits
  // they share)
  uint64_t above = 0;
  const uint32_t tau = block_select_by_mass<kThreads>(
      n, [&](int i) { return es.key_mass(i); }, target, kmin, max_key, hist, ex, &above);
  // the kept set's weight and size, then the draw among the kept candidates (draw_kept)
  Pair km{0, 0};  // weight, count
  for (int i0 = threadIdx.x; i0 < n; i0 += 4 * kThreads) {
    ValueWeight e[4];
#pragma unroll
    for (int q = 0; q < 4; ++q)
      e[q] = i0 + q * kThreads < n ? es.key_mass(i0 + q * kThreads) : ValueWeight{0, 0};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const bool in = i0 + q * kThreads < n && e[q].val >= tau;
      km.a += in ? e[q].w : 0;
      km.b += in ? 1 : 0;
    }
  }
  const Pair kall = B::allreduce(km, PairSum{}, ex);
  const uint64_t t = core::scale_draw(u, kall.a);
  LMS_STAMP_ROW(30, r);
  const int64_t x = draw_kept<kThreads>(n, es, tau, t, vocab, hist, ex);
  if (threadIdx.x == 0) *token = x;
  LMS_STAMP_ROW(31, r);
  *kept = static_cast<int64_t>(kall.b);
}

// rank_and_draw for a list longer than shared memory holds (n > kCandCap), ranked where it lies
// only until what is still in play fits: the threshold's rounds run over the list until the
// entries that share the digits found so far fit in shared memory, and go on there; the kept
// entries (key >= the threshold) are then copied there for the draw where they fit. Entries in
// any order (the selects do not see it).
template <int kThreads, typename W>
__device__ __noinline__ void rank_and_draw_long(int n, const volatile uint32_t* src, W weight,
                                                uint32_t kmin, uint64_t target, uint32_t max_key,
                                                uint64_t u, int64_t vocab, uint64_t* hist,
                                                SmallExchange& ex, unsigned char* smem, int64_t r,
                                                int64_t* token, int64_t* kept) {
  using B = Block<kThreads>;
  LMS_STAMP_ROW(29, r);
  const GlobalEntries<W> gl{src, weight};
  const SmemEntries sm{reinterpret_cast<uint32_t*>(smem)};
  uint32_t* slots = reinterpret_cast<uint32_t*>(&ex.bcast[3]);
  // copies the entries with keep(key) true into shared memory; their count (all of them, also
  // those beyond kCandCap, which are not copied)
  const auto copy_if = [&](auto keep) {
    if (threadIdx.x == 0) *slots = 0;
    __syncthreads();
    for_list<kThreads>(src, n, weight, [&](int, uint32_t k, uint32_t tok, float e) {
      if (!keep(k, e)) return;
      const uint32_t i = atomicAdd(slots, 1u);
      if (i < static_cast<uint32_t>(kCandCap)) {
        sm.key[i] = k;
        sm.tok()[i] = tok;
        sm.lik()[i] = e;
      }
    });
    __syncthreads();
    const int c = static_cast<int>(*slots);
    __syncthreads();  // (slots is written again by the next copy)
    return c;
  };
  MassSelect sel(kmin, max_key);
  int m = -1;  // entries in play in shared memory (-1: none there yet)
  while (!sel.done()) {
    if (m >= 0) {
      sel.round<kThreads>(
          m, [&](int i) { return sm.key_mass(i); }, target, hist, ex);
      continue;
    }
    sel.round<kThreads>(
        n, [&](int i) { return gl.key_mass(i); }, target, hist, ex);
    if (sel.done()) break;
    const int c = copy_if([&](uint32_t k, float e) {
      return sel.in_play(ValueWeight{k, core::mass_of(e)});
    });
    if (c <= kCandCap) m = c;
  }
  const uint32_t tau = sel.result();
  LMS_STAMP_ROW(30, r);
  // the kept entries, their weight and count; then the draw among them in token order
  Pair km{0, 0};
  const int c = copy_if([&](uint32_t k, float) { return k >= tau; });
  for (int i = threadIdx.x; i < (c <= kCandCap ? c : 0); i += kThreads) km.a += sm.mass(i);
  if (c > kCandCap) {
    for_list<kThreads>(src, n, weight, [&](int, uint32_t k, uint32_t, float e) {
      km.a += k >= tau ? core::mass_of(e) : 0;
    });
  }
  const Pair kall = B::allreduce(km, PairSum{}, ex);
  const uint64_t t = core::scale_draw(u, kall.a);
  // (entries copied on chip are all kept; the list's others are masked by tau)
  const int64_t x = c <= kCandCap ? draw_kept<kThreads>(c, sm, tau, t, vocab, hist, ex)
                                  : draw_kept<kThreads>(n, gl, tau, t, vocab, hist, ex);
  if (threadIdx.x == 0) *token = x;
  LMS_STAMP_ROW(31, r);
  *kept = c;
}

// The last weight item of a top-p row (weight_bits modes): its threshold and token as the
// comment at kCandCap says, written to the outputs; or the row marked pending for the general
// kernel. hist: 256 words of shared memory; smem: kCandSmemBytes of it.
template <int kThreads, DType kDt, typename W>
__device__ __forceinline__ void top_p_finish(const StreamArgs& s, SmallExchange& ex, uint64_t* hist,
                                             unsigned char* smem, const void* row, int64_t r,
                                             uint64_t u, float top_p, W weight, uint32_t max_key) {
  using B = Block<kThreads>;
  LMS_STAMP_ROW(28, r);
  const volatile uint64_t* sums = s.sub_sums + r * s.nsub;  // (written by other CTAs)
  const volatile uint32_t* ties = s.sub_ties + r * s.nsub;
  Pair mine{0, 0};  // weight, ties
  for (int k = threadIdx.x; k < s.nsub; k += kThreads) {
    mine.a += sums[k];
    mine.b += ties[k];
  }
  const Pair all = B::allreduce(mine, PairSum{}, ex);
  const uint64_t row_w = all.a, row_ties = all.b;
  const uint64_t target = core::ceil_fraction(top_p, row_w);
  const uint32_t n = *static_cast<const volatile uint32_t*>(s.cand_count(r));
  const uint32_t probe_hi = probe_hi_of(top_p);
  int64_t token = -1;
  int64_t kept = 0;
  const auto pending = [&] {
    if (threadIdx.x == 0) *s.pending(r) = 1u;
  };
  if (row_ties * core::kMassOne >= target) {
    // the maximum's ties hold the target: the draw walks them
    uint64_t total = 0;
    token = stream_draw<kThreads, kDt>(
        s, ex, row, u, [&](int k) { return static_cast<uint64_t>(ties[k]) * core::kMassOne; },
        [&](uint32_t bits) {
          return core::canonical_key_of_bits(bits) == max_key ? core::kMassOne : uint64_t{0};
        },
        &total);
    kept = static_cast<int64_t>(row_ties);
  } else if (n <= list_cap_of(probe_hi)) {
    // one pass over the list (written by other CTAs: read past this SM's L1, four loads in
    // flight a thread) for the probe's weight at its two levels
    const volatile uint32_t* src =
        reinterpret_cast<const volatile uint32_t*>(s.cand + r * kListCap);
    const int cn = static_cast<int>(n);
    const uint64_t probe = uint64_t{probe_hi} << 20;
    ListSums mine;
    mine.kmin_deep = mine.kmin_shallow = max_key;
    for_list<kThreads>(src, cn, weight, [&](int, uint32_t k, uint32_t, float e) {
      mine.add(k, core::mass_of(e), probe);
    });
    const ListSums ls = B::allreduce(mine, ListSumsOp{}, ex);
    // the level: the shallower where its tokens hold the target (its candidates, fewer, are
    // ranked), else the deeper (every entry), else none
    const bool shallow = target <= ls.w_shallow;
    if (!shallow && target > ls.w_deep) {
      pending();
      return;
    }
    const int ranked = shallow ? static_cast<int>(ls.n_shallow) : cn;
    const uint32_t kmin = shallow ? ls.kmin_shallow : ls.kmin_deep;
    if (ranked <= kCandCap) {
      // the ranked entries into shared memory as keys, tokens and likelihoods (mass_of of which
      // is weight()'s weight_bits, bit for bit), in any order (the ranking does not see it)
      SmemEntries es{reinterpret_cast<uint32_t*>(smem)};
      uint32_t* slots = reinterpret_cast<uint32_t*>(&ex.bcast[3]);
      if (threadIdx.x == 0) *slots = 0;
      __syncthreads();
      const uint64_t floor_m = shallow ? 2 * probe - (uint64_t{1} << 20) : 0;
      for_list<kThreads>(src, cn, weight, [&](int, uint32_t k, uint32_t tok, float e) {
        if (core::mass_of(e) < floor_m) return;
        const uint32_t i = atomicAdd(slots, 1u);
        es.key[i] = k;
        es.tok()[i] = tok;
        es.lik()[i] = e;
      });
      rank_and_draw<kThreads>(ranked, es, kmin, target, max_key, u, s.a.req.logits.vocab, hist, ex,
                              r, &token, &kept);
    } else {
      rank_and_draw_long<kThreads>(cn, src, weight, ls.kmin_deep, target, max_key, u,
                                   s.a.req.logits.vocab, hist, ex, smem, r, &token, &kept);
    }
  } else {
    pending();
    return;
  }
  if (token >= 0)
    write_outputs<kThreads>(s.a.out, r, static_cast<int32_t>(token), kRowOk,
                            static_cast<int32_t>(kept), 0.0f, 0);
}

template <int kThreads, DType kDt, bool kTopP>
__device__ void stream_item(const StreamArgs& s, SmallExchange& ex, uint64_t* hist,
                            unsigned char* smem, bool is_max, int64_t r, int64_t pr, int c) {
  using B = Block<kThreads>;
  const KernelArgs& a = s.a;
  const int64_t v = a.req.logits.vocab;
  constexpr int kEsize = kDt == DType::kFloat32 ? 4 : 2;
  const void* row = static_cast<const unsigned char*>(a.req.logits.data) +
                    static_cast<size_t>(pr) * static_cast<size_t>(a.stride) * kEsize;
  const bool aligned = (reinterpret_cast<uintptr_t>(row) & 15u) == 0;
  uint64_t* st = s.stats + (r * s.groups) * 2;
  if (is_max) {
    const int64_t c0 = static_cast<int64_t>(c) * s.chunk;
    const int n = static_cast<int>(v - c0 < s.chunk ? v - c0 : s.chunk);
    Stats mine{0, 0};
    if (aligned) {
      mine =
          chunk_stats<kThreads, kDt>(static_cast<const unsigned char*>(row) + c0 * kEsize, n, c0);
    } else {
      uint32_t best_key = core::kKeyNegInf;
      int best_i = -1;
      uint32_t valid = 0;
      for (int i = threadIdx.x; i < n; i += kThreads) {
        const uint32_t key = core::canonical_key_of_bits(load_bits(row, kDt, c0 + i));
        valid += key > core::kKeyNegInf;
        if (key > best_key) {
          best_key = key;
          best_i = i;
        }
      }
      mine = Stats{best_i < 0 ? 0 : greedy_pack(best_key, c0 + best_i), valid};
    }
    mine = B::allreduce(mine, StatsOp{}, ex);
    if (threadIdx.x == 0) {
      st[2 * c] = mine.best;
      st[2 * c + 1] = mine.valid;
      device_fence();
      atomicAdd(s.max_done(r), 1u);
    }
    return;
  }
  // a weight item: wait for the row's statistics
  if (threadIdx.x == 0) {
    const volatile uint32_t* done = s.max_done(r);
    while (*done < static_cast<uint32_t>(s.groups)) spin_pause(64);
    device_fence();
    const volatile uint64_t* vst = st;
    Stats all{0, 0};
    for (int q = 0; q < s.groups; ++q) all = StatsOp{}(all, Stats{vst[2 * q], vst[2 * q + 1]});
    ex.bcast[0] = all.best;
    ex.bcast[1] = all.valid;
  }
  __syncthreads();
  const Stats all{ex.bcast[0], ex.bcast[1]};
  __syncthreads();
  // verification (KernelArgs::vrows): the row's request gives the parameters, a skipped row
  // (req < 0) writes nothing
  const VerifyRow* vr = a.vrows ? a.vrows + pr : nullptr;
  const bool skip = vr && vr->req < 0;
  core::RowSettings rs = core::load_row_settings(a.req.params, vr ? (skip ? 0 : vr->req) : r);
  if (vr) rs.substream += vr->substream;
  const int32_t status = core::validate_row_settings(rs);
  const bool draws = status == kRowOk && all.best != 0 && rs.temperature != 0.0f;
  const uint32_t max_key = static_cast<uint32_t>(all.best >> 32);
  const float m = core::key_to_float(max_key);
  const float inv_t = draws ? core::div_rn(1.0f, rs.temperature) : 1.0f;
  const int mode = !draws                        ? -1
                   : max_key == core::kKeyPosInf ? 3
                   : inv_t == 1.0f               ? 0
                   : core::is_finite(inv_t)      ? 1
                                                 : 2;
  // top-p (s.cand: the host allowed it): the candidates in weight_bits modes; in the others the
  // row is left to the general kernel, which its sums do not serve
  const bool top_p = kTopP && draws && rs.top_p < 1.0f;
  if (mode >= 0 && !(top_p && mode >= 2))
    with_weight(mode, m, inv_t, [&](auto weight) {
      chunk_sub_sums<kThreads, kDt, kTopP>(s, row, aligned, pr, c, weight, top_p,
                                           probe_hi_of(rs.top_p));
    });
  __syncthreads();
  if (threadIdx.x == 0) {
    device_fence();
    ex.bcast[2] = atomicAdd(s.weight_done(r), 1u) == static_cast<uint32_t>(s.groups) - 1;
  }
  __syncthreads();
  if (ex.bcast[2] == 0) return;  // not the row's last weight item
  __syncthreads();               // (bcast)
  device_fence();
  if (skip) return;
  if (mode < 0) {
    if (threadIdx.x == 0) {
      if (a.kept_sets && status == kRowOk && all.best != 0)  // a greedy row's kept set
        a.kept_sets[pr] = KeptSet{1, 0.0, 0u, m, kKeptGreedy, 0u};
      if (status != kRowOk)
        write_outputs<kThreads>(a.out, pr, -1, status, 0, core::neg_inf(), 0);
      else if (all.best == 0)
        write_outputs<kThreads>(a.out, pr, -1, kRowEmpty, 0, core::neg_inf(), 0);
      else
        write_outputs<kThreads>(a.out, pr,
                                static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(all.best)),
                                kRowOk, 1, 0.0f, 0);
    }
    return;
  }
  const uint64_t u = core::row_uniform64(rs.seed, rs.step, rs.substream);
  if constexpr (kTopP) {
    if (!top_p) {
      // (no top-p: as below)
    } else if (mode >= 2) {
      if (threadIdx.x == 0) *s.pending(r) = 1u;
    } else {
      with_weight(mode, m, inv_t, [&](auto weight) {
        if constexpr (decltype(weight)::kBits)
          top_p_finish<kThreads, kDt>(s, ex, hist, smem, row, r, u, rs.top_p, weight, max_key);
      });
    }
    if (top_p) return;
  }
  uint64_t total = 0;
  int64_t token = -1;
  const volatile uint64_t* sums = s.sub_sums + pr * s.nsub;  // (written by other CTAs)
  with_weight(mode, m, inv_t, [&](auto weight) {
    token = stream_draw<kThreads, kDt>(
        s, ex, row, u, [&](int k) { return sums[k]; }, weight, &total);
  });
  if (token >= 0) {
    const int32_t kept = static_cast<int32_t>(mode == 3 ? total : all.valid);
    write_outputs<kThreads>(a.out, pr, static_cast<int32_t>(token), kRowOk, kept, 0.0f, 0);
    if (a.kept_sets)  // (the one thread that drew; no filter: every valid token is kept)
      a.kept_sets[pr] = KeptSet{total,
                                0.0,
                                core::kKeyNegInf + 1,
                                m,
                                mode == 3 ? kKeptPosInf : kKeptTempered,
                                mode == 3 ? static_cast<uint32_t>(total) : 0u};
  }
}

}  // namespace temperature

//! One CTA per work item (2 B G of them), each claiming its item from s.counters[0] (zeroed
//! with the row counters before the launch). Two instantiations: kTopP = false (temperature
//! alone: no spill at 64 registers, four CTAs a multiprocessor) and kTopP = true (top-p rows
//! too: three CTAs a multiprocessor, whose 85 registers hold the candidate path; ptxas spilled
//! 0.9 KB a thread at 64 and 156 bytes here, with rank_and_draw a call of its own).
template <int kThreads, bool kTopP>
__global__ void __launch_bounds__(kThreads, kTopP ? 3 : 4)
    temperature_rows_kernel(const temperature::StreamArgs s) {
  __shared__ SmallExchange ex;
  __shared__ uint64_t hist[256];  // (top-p rows' selections)
  // kCandSmemBytes where the launch can have top-p rows (their candidates' ranking)
  extern __shared__ __align__(16) unsigned char cand_smem[];
  __shared__ uint32_t ticket;
  if (threadIdx.x == 0) ticket = atomicAdd(&s.counters[0], 1u);
  __syncthreads();
  const int64_t batch = s.a.req.logits.batch;
  const int64_t L = s.lookahead < batch ? s.lookahead : batch;
  const int64_t q = ticket / static_cast<uint32_t>(s.groups);
  const int c = static_cast<int>(ticket % static_cast<uint32_t>(s.groups));
  // block q of 2B: the max items of rows 0 .. L-1, then the weight items of row j and the max
  // items of row j + L in turn, then the weight items of the last L rows
  bool is_max;
  int64_t r;
  if (q < L) {
    is_max = true;
    r = q;
  } else if (q < L + 2 * (batch - L)) {
    const int64_t t = q - L;
    is_max = (t & 1) != 0;
    r = is_max ? L + t / 2 : t / 2;
  } else {
    is_max = false;
    r = q - batch;
  }
  // the row slot r computes (KernelArgs::row_map: verification's rounds; none: skipped)
  const int64_t pr = s.a.row_map ? s.a.row_map[r] : r;
  if (pr < 0) return;  // (every item of the slot: the same word)
  switch (s.a.req.logits.dtype) {
    case DType::kFloat32:
      temperature::stream_item<kThreads, DType::kFloat32, kTopP>(s, ex, hist, cand_smem, is_max, r,
                                                                 pr, c);
      break;
    case DType::kBFloat16:
      temperature::stream_item<kThreads, DType::kBFloat16, kTopP>(s, ex, hist, cand_smem, is_max, r,
                                                                  pr, c);
      break;
    default:
      temperature::stream_item<kThreads, DType::kFloat16, kTopP>(s, ex, hist, cand_smem, is_max, r,
                                                                 pr, c);
      break;
  }
}

}  // namespace lmsample::gpu
