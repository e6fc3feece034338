// Block- and row-group-level primitives (reduce, scan, radix select), templated on the block
// size; the warp size is the compile-time constant kWarpSize (32 on NVIDIA and RDNA, 64 on CDNA).
// Every reduction here is over integers or exact selections, so the result does not depend on
// the order in which threads or CTAs combine.
#pragma once

#include <type_traits>

#include "core/port.hpp"

namespace lmsample::gpu {

//! The exchange buffers of the kernels that need only reductions, scans and group sums
//! (temperature_kernel.cuh): the members of Exchange that Block's reductions, post_to_group and
//! the group sums use, which take either type.
struct alignas(16) SmallExchange {
  static constexpr int kMaxGroup = 16;
  uint64_t posted[2][kMaxGroup][8];
  uint64_t scratch[64 * 4];
  uint64_t bcast[4];
};

//! Shared memory every CTA of a row uses to exchange partial results with its siblings.
//! Exchange buffers are double-buffered: a buffer is written again only two exchanges later,
//! and every exchange has a group barrier, so no CTA overwrites what a sibling still reads.
struct alignas(16) Exchange {
  static constexpr int kMaxThreads = 512;
  static constexpr int kMaxWarps = kMaxThreads / kWarpSize;
  static constexpr int kMaxGroup = 16;
  static constexpr int kMaxCandidates = 512;  // per CTA
  static constexpr int kMaxGathered = 1024;   // per row, in rank 0
  uint64_t hist[2][256];                      // radix histograms exchanged with the group
  uint64_t merged[256];                       // the group's histogram (local copy)
  uint64_t posted[2][kMaxGroup][8];  // the group's partials (64 bytes), pushed by each rank
  uint64_t scratch[64 * 4];          // block-reduce scratch: up to 64 warps x 32 bytes
  uint64_t bcast[4];                 // block broadcast
  uint64_t top[64];                  // top-n entries gathered in rank 0
  uint32_t top_count;
  uint32_t cand_count;                // candidates this CTA found (candidate path)
  uint32_t kept_count;                // candidates that pass top-k (rank 0's finish)
  uint32_t gcount[kMaxGroup];         // candidates of each rank (pushed by each rank)
  uint32_t bound;                     // the k-th largest of the block's values (pre-filter)
  uint32_t kept_lo, kept_tau;         // rank 0's finish: its top-k and top-p thresholds (0: none)
  uint64_t kept_total;                // rank 0's finish: the kept set's weight
  uint32_t warp_stats[kMaxWarps][4];  // per-warp partial statistics
  union {                             // never live at the same time
    alignas(16) uint64_t stage_w[kMaxThreads];    // weights staged by the candidates finish
    uint64_t merge_part[kMaxThreads / 256][256];  // partial sums (histogram merge)
  };
  union {                              // the thread maxima are dead once the candidates are pushed
    uint32_t thread_max[kMaxThreads];  // the warps' sorted thread maxima (top-k pre-filter)
    struct {
      alignas(16) uint32_t key[kMaxCandidates];  // the row's candidates in rank 0 (any order)
      alignas(16) uint32_t tok[kMaxCandidates];
    } cand;
  };
  // The candidates of the group's ranks, pushed into rank 0: rank q's in the q-th of G equal
  // regions (any order inside a region).
  uint32_t gath_key[kMaxGathered];
  uint32_t gath_tok[kMaxGathered];
};

//! Pushes this CTA's block-uniform `mine` into slot [rank] of every rank's ex.posted[phase] (remote
//! stores: no round trip), then passes the group barrier; returns this CTA's ex.posted[phase],
//! which then holds every rank's value. Every CTA of the group must have started (see
//! RowGroup::arrive / wait) before the first post. Two parities: a rank can post into a buffer
//! again only after passing the next barrier, which every thread of every rank reaches after its
//! last read of that buffer.
template <typename Group, typename T, typename Ex>
__device__ const uint64_t (*post_to_group(const Group& g, Ex& ex, int& phase, const T& mine))[8] {
  static_assert(sizeof(T) <= sizeof(ex.posted[0][0]), "value too large");
  uint64_t(*box)[8] = ex.posted[phase];
  phase ^= 1;
  if (threadIdx.x < g.size()) {
    constexpr int kWords = (sizeof(T) + 7) / 8;
    uint64_t w[kWords] = {};
    memcpy(w, &mine, sizeof(T));
    uint64_t* dst = g.map(&box[0][0], threadIdx.x) + 8 * g.rank();
#pragma unroll
    for (int i = 0; i < kWords; ++i) dst[i] = w[i];  // 8-byte remote stores
  }
  g.sync();
  return box;
}

//! Calls f(i, key_at(i)) for i = first, first + stride, ... below end, reading kBatch keys before
//! using any (where keys are recomputed from memory, kBatch reads are in flight at once). The
//! calls of a full batch are not guarded by branches, so a branch-free f's work for the kBatch
//! keys (an exp each, say) is interleaved rather than run one after another.
template <int kBatch, typename KeyAt, typename F>
__device__ __forceinline__ void for_keys(int first, int end, int stride, KeyAt key_at, F f) {
  int i0 = first;
  for (; i0 + (kBatch - 1) * stride < end; i0 += kBatch * stride) {
    uint32_t k[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) k[j] = key_at(i0 + j * stride);
#pragma unroll
    for (int j = 0; j < kBatch; ++j) f(i0 + j * stride, k[j]);
  }
  for (int i = i0; i < end; i += stride) f(i, key_at(i));
}

//! A warp's inclusive prefix sum of 64-bit values (lane l gets the sum of lanes 0 .. l). Every
//! lane of the warp must call it.
__device__ __forceinline__ uint64_t warp_inclusive_sum(uint64_t v) {
  const int lane = lane_id();
#pragma unroll
  for (int d = 1; d < kWarpSize; d <<= 1) {
    const uint64_t x = shfl_up(v, d);
    if (lane >= d) v += x;
  }
  return v;
}

template <int kThreads>
struct Block {
  static constexpr int kWarps = kThreads / kWarpSize;
  static_assert(kThreads % kWarpSize == 0, "block size must be a multiple of the warp size");
  static_assert(kThreads <= Exchange::kMaxThreads, "block too large for the exchange buffers");

  //! All-reduce of a trivially copyable value (sizeof <= 32) with an associative, commutative
  //! and exact `op`; every thread gets the result. Contains two block barriers.
  template <typename T, typename Op, typename Ex>
  static __device__ T allreduce(T v, Op op, Ex& ex) {
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
  template <typename Ex>
  static __device__ uint64_t inclusive_scan(uint64_t v, uint64_t* total, Ex& ex) {
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

//! An entry of block_select_by_mass: a value to rank by and its weight.
struct ValueWeight {
  uint32_t val;
  uint64_t w;
};

//! block_select_by_mass one round at a time, so that a caller can move the entries still in
//! play (in_play) somewhere faster between rounds. Constructed from lo and hi; round() over
//! entries that include every one still in play (others may come too: they are not counted);
//! result() and above() once done().
struct MassSelect {
  int top;  // the bits below `top` are not decided yet
  uint64_t prefix, heavier = 0;
  __device__ MassSelect(uint32_t lo, uint32_t hi) : top(0) {
    while (top < 32 && (lo ^ hi) >> top != 0) ++top;
    prefix = top < 32 ? hi >> top : 0;
  }
  __device__ bool done() const { return top == 0; }
  __device__ bool in_play(const ValueWeight& e) const {
    return e.w > 0 && (static_cast<uint64_t>(e.val) >> top) == prefix;
  }
  __device__ uint32_t result() const { return static_cast<uint32_t>(prefix); }
  __device__ uint64_t above() const { return heavier; }

  template <int kThreads, typename Entry, typename Ex>
  __device__ void round(int n, Entry entry, uint64_t target, uint64_t* hist, Ex& ex) {
    static_assert(kThreads >= 256, "one bucket a thread");
    using B = Block<kThreads>;
    const int lane = lane_id();
    const int width = top < 8 ? top : 8, s = top - width;
    for (int b = threadIdx.x; b < 256; b += kThreads) hist[b] = 0;
    __syncthreads();
    // (per warp: kBatch entries a lane read before any is used, so that entries in global
    // memory are kBatch loads in flight, not one)
    constexpr int kBatch = 4;
    for (int i0 = static_cast<int>(threadIdx.x) - lane; i0 < n; i0 += kBatch * kThreads) {
      ValueWeight e[kBatch];
#pragma unroll
      for (int q = 0; q < kBatch; ++q) {
        const int i = i0 + q * kThreads + lane;
        e[q] = i < n ? entry(i) : ValueWeight{0, 0};
      }
#pragma unroll
      for (int q = 0; q < kBatch; ++q) {
        uint32_t bucket = 256;
        uint64_t w = 0;
        if (in_play(e[q])) {
          bucket = (e[q].val >> s) & ((1u << width) - 1u);
          w = e[q].w;
        }
        const uint32_t first = shfl_idx(bucket, 0);
        if (ballot(bucket != first) == 0) {
#pragma unroll
          for (int d = kWarpSize / 2; d > 0; d >>= 1) w += shfl_xor(w, d);
          if (lane == 0 && first < 256) atomic_add_u64(&hist[first], w);
        } else if (bucket < 256) {
          atomic_add_u64(&hist[bucket], w);
        }
      }
    }
    __syncthreads();
    // thread j holds bucket 255 - j: its inclusive scan is the weight of buckets >= 255 - j
    const int j = static_cast<int>(threadIdx.x);
    const uint64_t mine = j < 256 ? hist[255 - j] : 0;
    uint64_t all = 0;
    const uint64_t incl = B::inclusive_scan(mine, &all, ex);
    if (j < 256 && heavier + incl >= target && heavier + incl - mine < target) {
      ex.bcast[0] = static_cast<uint64_t>(255 - j);
      ex.bcast[1] = incl - mine;
    }
    __syncthreads();
    prefix = (prefix << width) | ex.bcast[0];
    heavier += ex.bcast[1];
    __syncthreads();  // (bcast and hist are written again next round)
    top = s;
  }
};

//! The largest x such that the entries with val >= x weigh at least `target` in all, over the
//! entries entry(i) -> ValueWeight, i in [0, n), every val in [lo, hi]; needs 0 < target <= the
//! entries' total weight (the result is then the val of an entry of positive weight). A
//! most-significant-digit-first radix select below the leading bits that lo and hi (and so every
//! val) share, 8 bits a round: each round sums the weights of the entries that share the digits
//! found so far into 256 buckets (`hist`: 256 words of shared memory, integer atomics, so the
//! sums do not depend on their order; a warp whose entries fall in one bucket adds them with
//! one atomic), and a block scan from the top bucket down finds the digit where the running
//! weight reaches the target. *above gets the weight of the entries with val > x. Every thread
//! gets the result; kThreads >= 256 (a bucket a thread).
template <int kThreads, typename Entry, typename Ex>
__device__ uint32_t block_select_by_mass(int n, Entry entry, uint64_t target, uint32_t lo,
                                         uint32_t hi, uint64_t* hist, Ex& ex, uint64_t* above) {
  MassSelect sel(lo, hi);
  while (!sel.done()) sel.round<kThreads>(n, entry, target, hist, ex);
  *above = sel.above();
  return sel.result();
}

//! The warp's values sorted in descending order across its lanes (lane 0 gets the largest):
//! a bitonic sort by shuffles.
__device__ __forceinline__ uint32_t warp_sort_desc(uint32_t v) {
  const int lane = lane_id();
#pragma unroll
  for (int k = 2; k <= kWarpSize; k <<= 1) {
#pragma unroll
    for (int j = k / 2; j > 0; j >>= 1) {
      const uint32_t p = shfl_xor(v, j);
      const bool low = (lane & j) == 0, desc = (lane & k) == 0;
      v = low == desc ? (v > p ? v : p) : (v < p ? v : p);
    }
  }
  return v;
}

//! The kWarpSize largest of two descending lane-sorted lists, sorted descending (bitonic merge).
__device__ __forceinline__ uint32_t warp_merge_desc(uint32_t a, uint32_t b) {
  const int lane = lane_id();
  const uint32_t rb = shfl_idx(b, kWarpSize - 1 - lane);
  uint32_t v = a > rb ? a : rb;  // a bitonic sequence holding the kWarpSize largest
#pragma unroll
  for (int j = kWarpSize / 2; j > 0; j >>= 1) {
    const uint32_t p = shfl_xor(v, j);
    v = (lane & j) == 0 ? (v > p ? v : p) : (v < p ? v : p);
  }
  return v;
}

//! The k-th largest (1 <= k <= kWarpSize) of the block's values, one per thread, in two steps
//! around a block barrier: kth_post (every thread: its warp sorts its values into
//! ex.thread_max), then kth_merge (warp 0 merges the warps' sorted lists pairwise and writes the
//! result to ex.bound).
__device__ __forceinline__ void kth_post(uint32_t v, Exchange& ex) {
  ex.thread_max[threadIdx.x / kWarpSize * kWarpSize + lane_id()] = warp_sort_desc(v);
}
template <int kThreads>
__device__ __forceinline__ void kth_merge(int k, Exchange& ex) {
  constexpr int kWarps = kThreads / kWarpSize;
  static_assert((kWarps & (kWarps - 1)) == 0, "warps per block must be a power of two");
  if (threadIdx.x >= kWarpSize) return;
  const int lane = lane_id();
  uint32_t list[kWarps];
#pragma unroll
  for (int w = 0; w < kWarps; ++w) list[w] = ex.thread_max[w * kWarpSize + lane];
#pragma unroll
  for (int width = kWarps / 2; width > 0; width /= 2) {
#pragma unroll
    for (int w = 0; w < width; ++w) list[w] = warp_merge_desc(list[w], list[w + width]);
  }
  const uint32_t kth = shfl_idx(list[0], k - 1);
  if (lane == 0) ex.bound = kth;
}
//! Both steps; every thread gets the result. Two block barriers.
template <int kThreads>
__device__ uint32_t block_kth_largest(uint32_t v, int k, Exchange& ex) {
  kth_post(v, ex);
  __syncthreads();
  kth_merge<kThreads>(k, ex);
  __syncthreads();
  return ex.bound;
}

//! Sums over the row group of each CTA's block-uniform pair `mine`; *before gets the sums over
//! the CTAs of lower rank (earlier tokens). One group barrier.
struct Sum2 {
  uint64_t a, b;
};
template <typename Group, typename Ex>
__device__ Sum2 group_sum2(const Group& g, Ex& ex, int& phase, Sum2 mine, Sum2* before) {
  const uint64_t(*box)[8] = post_to_group(g, ex, phase, mine);
  Sum2 all{0, 0}, b{0, 0};
  const unsigned rank = g.rank(), n = g.size();
  for (unsigned q = 0; q < n; ++q) {
    const uint64_t va = box[q][0], vb = box[q][1];
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
template <typename Group, typename Ex>
__device__ uint64_t group_sum(const Group& g, Ex& ex, int& phase, uint64_t mine, uint64_t* before) {
  Sum2 b{0, 0};
  const Sum2 all = group_sum2(g, ex, phase, Sum2{mine, 0}, &b);
  if (before) *before = b.a;
  return all.a;
}

//! Group all-reduce of a block-uniform value (sizeof <= 64). One group barrier.
template <typename Group, typename T, typename Op, typename Ex>
__device__ T group_allreduce(const Group& g, Ex& ex, int& phase, T mine, Op op) {
  const uint64_t(*box)[8] = post_to_group(g, ex, phase, mine);
  T r;
  memcpy(&r, box[0], sizeof(T));
  for (unsigned q = 1; q < g.size(); ++q) {
    T v;
    memcpy(&v, box[q], sizeof(T));
    r = op(r, v);
  }
  return r;
}

//! The group's histogram: the sum over the ranks of each one's 256-bucket histogram `h` (in
//! the same place of every rank's shared memory), after the group barrier that published them.
//! kParts threads per bucket, each loading its ranks' copies at once (remote loads are round
//! trips), then the parts summed into ex.merged. Two block barriers.
template <int kThreads, typename Group>
__device__ const uint64_t* merge_histogram(const Group& g, Exchange& ex, const uint64_t* h) {
  static_assert(kThreads % 256 == 0, "block size must be a multiple of 256");
  constexpr int kParts = kThreads / 256;
  constexpr int kPer = (Exchange::kMaxGroup + kParts - 1) / kParts;
  const unsigned gsize = g.size();
  const int b = static_cast<int>(threadIdx.x) % 256, part = static_cast<int>(threadIdx.x) / 256;
  if (part < kParts) {
    uint64_t v[kPer];
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const unsigned q = static_cast<unsigned>(part * kPer + j);
      v[j] = q < gsize ? g.map(h, q)[b] : 0;
    }
    uint64_t sum = 0;
#pragma unroll
    for (int j = 0; j < kPer; ++j) sum += v[j];
    ex.merge_part[part][b] = sum;
  }
  __syncthreads();
  if (part == 0) {
    uint64_t sum = 0;
#pragma unroll
    for (int p2 = 0; p2 < kParts; ++p2) sum += ex.merge_part[p2][b];
    ex.merged[b] = sum;
  }
  __syncthreads();
  return ex.merged;
}

//! Called by the lanes of warp 0: over a 256-bucket histogram (bucket 255 holds the highest
//! keys), the highest bucket b at which the running sum from the top reaches need_of(total)
//! (total: the sum of every bucket; need >= 1). ex.bcast[0] gets b, ex.bcast[1] the sum of the
//! buckets above b; returns the total.
template <typename NeedOf>
__device__ uint64_t scan_top_bucket(const uint64_t* merged, NeedOf need_of, Exchange& ex) {
  constexpr int kPer = 256 / kWarpSize;  // buckets per lane, lane 0 owns the top ones
  const int lane0 = static_cast<int>(threadIdx.x);
  uint64_t part = 0;
#pragma unroll
  for (int j = 0; j < kPer; ++j) part += merged[255 - lane0 * kPer - j];
  uint64_t incl = part;
#pragma unroll
  for (int d = 1; d < kWarpSize; d <<= 1) {
    const uint64_t t = shfl_up(incl, d);
    if (lane0 >= d) incl += t;
  }
  uint64_t total = part;
#pragma unroll
  for (int d = kWarpSize / 2; d > 0; d >>= 1) total += shfl_xor(total, d);
  const uint64_t need = need_of(total);
  const uint64_t hit = ballot(incl >= need);
  const int first = hit ? __ffsll(static_cast<long long>(hit)) - 1 : kWarpSize - 1;
  if (lane0 == first) {
    uint64_t cum = incl - part;
    int bucket = 255 - lane0 * kPer - (kPer - 1);
    for (int j = 0; j < kPer; ++j) {
      const int b = 255 - lane0 * kPer - j;
      if (cum + merged[b] >= need) {
        bucket = b;
        break;
      }
      cum += merged[b];
    }
    ex.bcast[0] = static_cast<uint64_t>(bucket);
    ex.bcast[1] = cum;
  }
  return total;
}

//! Largest key t such that the total weight of the group's entries with key >= t reaches
//! `target` (1 <= target <= total weight). Four rounds of 8-bit digits; each round is a pass over
//! this CTA's n entries, a shared-memory histogram (integer atomics: order-free), a group-wide
//! merge through distributed shared memory and a warp scan from the top bucket down.
//! key_at(i) gives entry i's key, weight_of(key, i) its weight (0 = not an entry; a count
//! selection weighs every entry 1).
//! Siblings read this CTA's histograms after each round's barrier: a CTA passes another group
//! barrier before it leaves.
//! group_select_of sets the target from the group's total weight (target_of(total), computed
//! in the first round, so that a caller needs no pass of its own for the total).
template <int kThreads, typename Group, typename KeyAt, typename WeightOf, typename TargetOf>
__device__ uint32_t group_select_of(const Group& g, Exchange& ex, int& hphase, int n, KeyAt key_at,
                                    WeightOf weight_of, TargetOf target_of) {
  uint64_t target = 0;  // known to warp 0 from the first round on
  // A one-CTA group needs no merge, and can clear the next round's histogram during this one.
  constexpr bool kLocal = std::is_same<Group, SingleBlock>::value;
  uint32_t prefix = 0, pmask = 0;
  uint64_t above = 0;
  if (kLocal) {
    for (int b = threadIdx.x; b < 256; b += kThreads) ex.hist[hphase][b] = 0;
    __syncthreads();
  }
  for (int round = 0; round < 4; ++round) {
    const int shift = 24 - 8 * round;
    uint64_t* h = ex.hist[hphase];
    hphase ^= 1;
    if (kLocal) {
      for (int b = threadIdx.x; b < 256; b += kThreads) ex.hist[hphase][b] = 0;  // next round's
    } else {
      for (int b = threadIdx.x; b < 256; b += kThreads) h[b] = 0;
      __syncthreads();
    }
    // Each thread sums its entries' weights per bucket in a small cache of registers (a few
    // buckets hold almost every entry: the digits of nearby keys agree) and adds a sum to the
    // shared histogram (integer atomics: order-free) only when a bucket leaves the cache.
    constexpr int kSlots = 4;
    uint32_t slot_bucket[kSlots];
    uint64_t slot_sum[kSlots];
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      slot_bucket[j] = 256;  // empty
      slot_sum[j] = 0;
    }
    for_keys<4>(static_cast<int>(threadIdx.x), n, kThreads, key_at, [&](int i, uint32_t k) {
      if ((k & pmask) != prefix) return;
      const uint64_t w = weight_of(k, i);
      if (w == 0) return;
      const uint32_t bucket = (k >> shift) & 255u;
      bool hit = false;
#pragma unroll
      for (int j = 0; j < kSlots; ++j) {
        if (!hit && slot_bucket[j] == bucket) {
          slot_sum[j] += w;
          hit = true;
        }
      }
      if (!hit) {  // the oldest bucket leaves; the new one enters at the front
        if (slot_bucket[kSlots - 1] < 256)
          atomic_add_u64(&h[slot_bucket[kSlots - 1]], slot_sum[kSlots - 1]);
#pragma unroll
        for (int j = kSlots - 1; j > 0; --j) {
          slot_bucket[j] = slot_bucket[j - 1];
          slot_sum[j] = slot_sum[j - 1];
        }
        slot_bucket[0] = bucket;
        slot_sum[0] = w;
      }
    });
#pragma unroll
    for (int j = 0; j < kSlots; ++j)
      if (slot_bucket[j] < 256) atomic_add_u64(&h[slot_bucket[j]], slot_sum[j]);
    g.sync();
    const uint64_t* merged = kLocal ? h : merge_histogram<kThreads>(g, ex, h);
    if (threadIdx.x < kWarpSize)
      scan_top_bucket(
          merged,
          [&](uint64_t total) {
            if (round == 0) target = target_of(total);
            return target - above;
          },
          ex);
    __syncthreads();
    // NOTE: no barrier after these reads: bcast is written again only after the next round's
    // fill barrier, which every thread reaches after reading it.
    prefix |= static_cast<uint32_t>(ex.bcast[0]) << shift;
    pmask |= 255u << shift;
    above += ex.bcast[1];
  }
  return prefix;
}

template <int kThreads, typename Group, typename KeyAt, typename WeightOf>
__device__ uint32_t group_select(const Group& g, Exchange& ex, int& hphase, int n, KeyAt key_at,
                                 WeightOf weight_of, uint64_t target) {
  return group_select_of<kThreads>(g, ex, hphase, n, key_at, weight_of,
                                   [target](uint64_t) { return target; });
}

}  // namespace lmsample::gpu
