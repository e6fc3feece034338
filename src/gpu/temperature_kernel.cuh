// Temperature alone (docs/contract.md sections 2-4 with no filter): a row's kept set is every
// valid token, so its draw needs the row maximum and then every token's weight, in token order.
// Launched instead of the general kernel where the host knows that no row has a filter (no
// top_k, top_p or min_p array, none in RowParams::defaults) and no step of the contract but the
// load applies (no bitmask, bias or penalty history, no logprobs); the temperature may be one
// for the call or an array (rows with T = 0 are greedy). Same bits as the general kernel and the
// CPU: the same exact keys, likelihoods (core/math.hpp) and integer sums.
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
constexpr uint32_t kBias = 0x4b000000u;  // float bits of 2^23
__device__ __forceinline__ void weight_bits(float z, uint32_t& hi_bits, uint32_t& lo_bits) {
  const core::ExpParts e = core::exp_parts(fmaxf(z, -86.0f));
  const uint32_t scaled_bits = core::float_bits(e.p) + ((e.s_bits + 39u) << 23);  // p 2^(k+39)
  const float x = core::bits_float(scaled_bits - (20u << 23));                    // scaled 2^-20
  const float t = floor_plus_2p23(x);                                             // 2^23 + hi
  const float hi_f = core::sub_rn(t, 8388608.0f);
  const float rest = core::fma_rn(-hi_f, 1048576.0f, core::bits_float(scaled_bits));  // exact
  hi_bits = core::float_bits(t);
  lo_bits = core::float_bits(floor_plus_2p23(rest));
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

constexpr int kSub = 512;  // tokens per sub-chunk (a warp's 16 tokens per lane)

struct StreamArgs {
  KernelArgs a;
  uint32_t* counters;  // [0] next ticket, [1, B] max items done per row, [B + 1, 2B] weight items
  uint64_t* stats;     // [B][G][2]: a chunk's greedy_pack of its maximum, its valid count
  uint64_t* sub_sums;  // [B][nsub]: the weight of each sub-chunk of the row
  int groups;          // G: chunks per row
  int chunk;           // tokens per chunk (a multiple of kSub)
  int nsub;            // ceil(V / kSub)
  int lookahead;       // rows between a row's max items and its weight items
};

// Float bits of token `tok` of `row` (the bits of -inf at and beyond V).
template <DType kDt>
__device__ __forceinline__ uint32_t token_bits(const void* row, int64_t tok, int64_t v) {
  return tok < v ? load_bits(row, kDt, tok) : 0xff800000u;
}

// The weight of this lane's 16 tokens of sub-chunk k (lane + 32 j, j < 16, in 16-byte vectors
// where the row is aligned and the sub-chunk whole), for the sub-chunk's sum.
template <DType kDt, typename W>
__device__ __forceinline__ uint64_t lane_weight16(const void* row, bool aligned, int64_t v,
                                                  int64_t k, W weight) {
  const int lane = lane_id();
  const int64_t t0 = k * kSub;
  uint32_t b[16];
  if (aligned && t0 + kSub <= v) {
    const uint4* q = reinterpret_cast<const uint4*>(static_cast<const unsigned char*>(row) +
                                                    t0 * (kDt == DType::kFloat32 ? 4 : 2));
    if constexpr (kDt == DType::kFloat32) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint4 w = q[lane + 32 * j];
        b[4 * j] = w.x;
        b[4 * j + 1] = w.y;
        b[4 * j + 2] = w.z;
        b[4 * j + 3] = w.w;
      }
    } else {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const uint4 w = q[lane + 32 * j];
        const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int h = 0; h < 8; ++h) {
          const uint16_t x = static_cast<uint16_t>(words[h / 2] >> (16 * (h % 2)));
          b[8 * j + h] = kDt == DType::kBFloat16 ? static_cast<uint32_t>(x) << 16
                                                 : core::float_bits(core::f16_to_float(x));
        }
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < 16; ++j) b[j] = token_bits<kDt>(row, t0 + lane + 32 * j, v);
  }
  if constexpr (W::kBits) {
    uint32_t hs = 0, ls = 0;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      uint32_t h, l;
      weight_bits(weight.z_of(b[j]), h, l);
      hs += h;
      ls += l;
    }
    return (static_cast<uint64_t>(hs - 16u * kBias) << 20) + (ls - 16u * kBias);
  } else {
    uint64_t sum = 0;
#pragma unroll
    for (int j = 0; j < 16; ++j) sum += weight(b[j]);
    return sum;
  }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int d = kWarpSize / 2; d > 0; d >>= 1) v += shfl_xor(v, d);
  return v;
}

// The weight item's sums: warp w takes the sub-chunks c * spc + w, + warps, ... of its chunk.
template <int kThreads, DType kDt, typename W>
__device__ void chunk_sub_sums(const StreamArgs& s, const void* row, bool aligned, int64_t r, int c,
                               W weight) {
  constexpr int kWarps = kThreads / kWarpSize;
  const int64_t v = s.a.req.logits.vocab;
  const int spc = s.chunk / kSub;
  const int k1 = (c + 1) * spc < s.nsub ? (c + 1) * spc : s.nsub;
  for (int k = c * spc + static_cast<int>(threadIdx.x) / kWarpSize; k < k1; k += kWarps) {
    const uint64_t sum = warp_sum(lane_weight16<kDt>(row, aligned, v, k, weight));
    if (lane_id() == 0) s.sub_sums[r * s.nsub + k] = sum;
  }
}

// The last weight item of row r: the token whose running weight passes t = floor(u W / 2^64).
// Each thread sums a contiguous run of the row's sub-chunk sums, a block scan finds the run and
// the sub-chunk that hold t, and warp 0 walks that sub-chunk in token order (16 tokens a lane).
template <int kThreads, DType kDt, typename W>
__device__ int64_t stream_draw(const StreamArgs& s, SmallExchange& ex, const void* row, int64_t r,
                               uint64_t u, W weight, uint64_t* total) {
  using B = Block<kThreads>;
  const int64_t v = s.a.req.logits.vocab;
  const volatile uint64_t* sums = s.sub_sums + r * s.nsub;  // (written by other CTAs)
  const int per = (s.nsub + kThreads - 1) / kThreads;
  const int k0 = static_cast<int>(threadIdx.x) * per;
  const int k1 = k0 + per < s.nsub ? k0 + per : s.nsub;
  uint64_t mine = 0;
  for (int k = k0; k < k1; ++k) mine += sums[k];
  uint64_t all = 0;
  const uint64_t incl = B::inclusive_scan(mine, &all, ex);
  *total = all;
  const uint64_t t = core::scale_draw(u, all);
  uint64_t acc = incl - mine;
  if (mine > 0 && acc <= t && t < acc + mine) {  // one thread
    int k = k0;
    while (acc + sums[k] <= t) acc += sums[k++];
    ex.bcast[0] = static_cast<uint64_t>(k);
    ex.bcast[1] = acc;
  }
  __syncthreads();
  int64_t token = -1;
  if (threadIdx.x < kWarpSize) {
    const int64_t k = static_cast<int64_t>(ex.bcast[0]);
    const uint64_t base = ex.bcast[1];
    const int lane = lane_id();
    const int64_t t0 = k * kSub + 16 * lane;
    uint64_t w[16], lane_sum = 0;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
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
  return token;  // (in the one lane that found it)
}

template <int kThreads, DType kDt>
__device__ void stream_item(const StreamArgs& s, SmallExchange& ex, bool is_max, int64_t r, int c) {
  using B = Block<kThreads>;
  const KernelArgs& a = s.a;
  const int64_t v = a.req.logits.vocab, batch = a.req.logits.batch;
  constexpr int kEsize = kDt == DType::kFloat32 ? 4 : 2;
  const void* row = static_cast<const unsigned char*>(a.req.logits.data) +
                    static_cast<size_t>(r) * static_cast<size_t>(a.stride) * kEsize;
  const bool aligned = (reinterpret_cast<uintptr_t>(row) & 15u) == 0;
  uint32_t* maxdone = s.counters + 1;
  uint32_t* wdone = s.counters + 1 + batch;
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
      atomicAdd(&maxdone[r], 1u);
    }
    return;
  }
  // a weight item: wait for the row's statistics
  if (threadIdx.x == 0) {
    const volatile uint32_t* done = maxdone + r;
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
  const core::RowSettings rs = core::load_row_settings(a.req.params, r);
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
  if (mode >= 0)
    with_weight(mode, m, inv_t,
                [&](auto weight) { chunk_sub_sums<kThreads, kDt>(s, row, aligned, r, c, weight); });
  __syncthreads();
  if (threadIdx.x == 0) {
    device_fence();
    ex.bcast[2] = atomicAdd(&wdone[r], 1u) == static_cast<uint32_t>(s.groups) - 1;
  }
  __syncthreads();
  if (ex.bcast[2] == 0) return;  // not the row's last weight item
  device_fence();
  if (mode < 0) {
    if (threadIdx.x == 0) {
      if (status != kRowOk)
        write_outputs<kThreads>(a.out, r, -1, status, 0, core::neg_inf(), 0);
      else if (all.best == 0)
        write_outputs<kThreads>(a.out, r, -1, kRowEmpty, 0, core::neg_inf(), 0);
      else
        write_outputs<kThreads>(a.out, r,
                                static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(all.best)),
                                kRowOk, 1, 0.0f, 0);
    }
    return;
  }
  const uint64_t u = core::row_uniform64(rs.seed, rs.step, rs.substream);
  uint64_t total = 0;
  int64_t token = -1;
  with_weight(mode, m, inv_t, [&](auto weight) {
    token = stream_draw<kThreads, kDt>(s, ex, row, r, u, weight, &total);
  });
  if (token >= 0) {
    const int32_t kept = static_cast<int32_t>(mode == 3 ? total : all.valid);
    write_outputs<kThreads>(a.out, r, static_cast<int32_t>(token), kRowOk, kept, 0.0f, 0);
  }
}

}  // namespace temperature

//! One CTA per work item (2 B G of them), each claiming its item from s.counters[0] (zeroed
//! with the row counters before the launch).
template <int kThreads>
__global__ void __launch_bounds__(kThreads, 4)
    temperature_rows_kernel(const temperature::StreamArgs s) {
  __shared__ SmallExchange ex;
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
  switch (s.a.req.logits.dtype) {
    case DType::kFloat32:
      temperature::stream_item<kThreads, DType::kFloat32>(s, ex, is_max, r, c);
      break;
    case DType::kBFloat16:
      temperature::stream_item<kThreads, DType::kBFloat16>(s, ex, is_max, r, c);
      break;
    default:
      temperature::stream_item<kThreads, DType::kFloat16>(s, ex, is_max, r, c);
      break;
  }
}

}  // namespace lmsample::gpu
