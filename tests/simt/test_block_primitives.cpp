// The block-level code of the GPU backend (src/gpu/block.cuh) run on the CPU through the host
// emulation of a thread block (core/simt_host.hpp), once per warp size: this file is compiled
// with LMS_SIMT_WARP = 32 (NVIDIA, AMD RDNA) and 64 (AMD CDNA). Results are compared with plain
// host computations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "gpu/block.cuh"

namespace {

using lmsample::gpu::Block;
using lmsample::gpu::block_kth_largest;
using lmsample::gpu::block_select_by_mass;
using lmsample::gpu::Exchange;
using lmsample::gpu::group_select;
using lmsample::gpu::MassSelect;
using lmsample::gpu::SingleBlock;
using lmsample::gpu::ValueWeight;

Exchange& shared_exchange() {
  static Exchange ex;  // the block's shared memory
  return ex;
}

constexpr uint32_t kKeyNegInf = 0x007fffffu;

template <int kThreads>
void check_allreduce_and_scan(uint32_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<uint64_t> v(kThreads);
  for (auto& x : v) x = gen() >> 24;  // sums stay far below 2^64
  std::vector<uint64_t> sum(kThreads), mx(kThreads), incl(kThreads), total(kThreads);
  Exchange& ex = shared_exchange();
  lms_simt::launch_block(kThreads, [&] {
    const unsigned t = threadIdx.x;
    using B = Block<kThreads>;
    sum[t] = B::allreduce(
        v[t], [](uint64_t a, uint64_t b) { return a + b; }, ex);
    mx[t] = B::allreduce(
        v[t], [](uint64_t a, uint64_t b) { return a > b ? a : b; }, ex);
    incl[t] = B::inclusive_scan(v[t], &total[t], ex);
  });
  uint64_t s = 0;
  for (int t = 0; t < kThreads; ++t) {
    s += v[t];
    ASSERT_EQ(incl[t], s) << "thread " << t;
  }
  const uint64_t m = *std::max_element(v.begin(), v.end());
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(sum[t], s) << "thread " << t;
    ASSERT_EQ(mx[t], m) << "thread " << t;
    ASSERT_EQ(total[t], s) << "thread " << t;
  }
}

TEST(SimtBlock, AllreduceAndScan) {
  for (uint32_t seed = 1; seed <= 2; ++seed) {
    check_allreduce_and_scan<256>(seed);
    check_allreduce_and_scan<512>(seed);
  }
}

// warp_inclusive_sum: each lane gets the sum of its warp's lanes up to its own, in every warp of
// a block (the residual draw's scans; 32 and 64 lanes).
TEST(SimtBlock, WarpInclusiveSum) {
  constexpr int kThreads = 256, kWarpSize = lmsample::gpu::kWarpSize;
  std::mt19937_64 gen(5);
  std::vector<uint64_t> v(kThreads), got(kThreads);
  for (auto& x : v) x = gen() >> 8;  // (a warp's sum stays below 2^64)
  lms_simt::launch_block(
      kThreads, [&] { got[threadIdx.x] = lmsample::gpu::warp_inclusive_sum(v[threadIdx.x]); });
  for (int t = 0; t < kThreads; ++t) {
    uint64_t want = 0;
    for (int l = t - t % kWarpSize; l <= t; ++l) want += v[static_cast<size_t>(l)];
    ASSERT_EQ(got[static_cast<size_t>(t)], want) << "thread " << t << ", warp size " << kWarpSize;
  }
}

// Largest key t with sum of weights of keys >= t reaching target (the contract's selections).
uint32_t reference_select(const std::vector<uint32_t>& keys, const std::vector<uint64_t>& w,
                          uint64_t target) {
  std::vector<size_t> order(keys.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return keys[a] > keys[b]; });
  uint64_t acc = 0;
  for (const size_t i : order) {
    acc += w[i];
    if (acc >= target) return keys[i];
  }
  return 0;
}

// target_of_total: 0 = the fixed target; else the target is ceil(total * num / 16), set by
// group_select_of from the total it finds in its first round.
template <int kThreads>
void check_select(const std::vector<uint32_t>& keys, const std::vector<uint64_t>& w,
                  uint64_t target, uint64_t num = 0) {
  std::vector<uint32_t> got(kThreads);
  Exchange& ex = shared_exchange();
  const int n = static_cast<int>(keys.size());
  lms_simt::launch_block(kThreads, [&] {
    const SingleBlock g;
    int hphase = 0;
    const auto key_at = [&](int i) { return keys[static_cast<size_t>(i)]; };
    const auto weight_of = [&](uint32_t, int i) { return w[static_cast<size_t>(i)]; };
    got[threadIdx.x] = num == 0
                           ? group_select<kThreads>(g, ex, hphase, n, key_at, weight_of, target)
                           : lmsample::gpu::group_select_of<kThreads>(
                                 g, ex, hphase, n, key_at, weight_of,
                                 [num](uint64_t total) { return (total * num + 15) / 16; });
  });
  if (num != 0) {
    uint64_t total = 0;
    for (const uint64_t x : w) total += x;
    target = (total * num + 15) / 16;
  }
  const uint32_t want = reference_select(keys, w, target);
  for (int t = 0; t < kThreads; ++t)
    ASSERT_EQ(got[t], want) << "thread " << t << ", n = " << n << ", target = " << target;
}

TEST(SimtBlock, SelectByCountAndByMass) {
  std::mt19937_64 gen(7);
  for (const int n : {1, 37, 700}) {
    for (const int kind : {0, 1, 2}) {  // distinct-ish keys, heavy ties, one key
      std::vector<uint32_t> keys(static_cast<size_t>(n));
      for (auto& k : keys) {
        const uint32_t r = static_cast<uint32_t>(gen());
        k = kind == 0   ? (r | 0x00800000u)
            : kind == 1 ? (0xc0000000u | (r & 0x7u) << 20)
                        : 0xbf800000u;
      }
      // count select: unit weights of valid keys (one -inf key when n > 1 must not count)
      std::vector<uint64_t> unit(keys.size(), 1);
      if (n > 1) {
        keys[1] = kKeyNegInf;
        unit[1] = 0;
      }
      const uint64_t valid = static_cast<uint64_t>(std::count(unit.begin(), unit.end(), 1));
      for (const uint64_t k : {uint64_t{1}, (valid + 1) / 2, valid})
        check_select<256>(keys, unit, k);
      check_select<512>(keys, unit, valid);
      // mass select: fixed-point weights up to 2^39
      std::vector<uint64_t> mass(keys.size());
      uint64_t total = 0;
      for (auto& m : mass) total += (m = gen() >> 25);
      if (total == 0) continue;
      for (const uint64_t target : {uint64_t{1}, total / 3 + 1, total})
        check_select<256>(keys, mass, target);
      // the target as a fraction of the total the select finds (top-p)
      for (const uint64_t num : {uint64_t{1}, uint64_t{9}, uint64_t{16}})
        check_select<256>(keys, mass, 0, num);
    }
  }
}

// The k-th largest of one value per thread (the top-k pre-filter's bound), against a sort: values
// with many duplicates and with the -inf key, k from 1 to the warp size.
template <int kThreads>
void check_kth_largest(uint32_t seed, uint32_t spread) {
  std::mt19937 gen(seed);
  std::vector<uint32_t> v(kThreads);
  for (auto& x : v)
    x = gen() % 4 == 0 ? kKeyNegInf : 0x80000000u + static_cast<uint32_t>(gen() % spread);
  std::vector<uint32_t> sorted = v;
  std::sort(sorted.begin(), sorted.end(), std::greater<uint32_t>());
  Exchange& ex = shared_exchange();
  constexpr int kW = lmsample::gpu::kWarpSize;
  for (const int k : {1, 2, 3, 7, kW / 2 + 1, kW}) {
    std::vector<uint32_t> got(kThreads);
    lms_simt::launch_block(
        kThreads, [&] { got[threadIdx.x] = block_kth_largest<kThreads>(v[threadIdx.x], k, ex); });
    for (int t = 0; t < kThreads; ++t)
      ASSERT_EQ(got[t], sorted[k - 1]) << "k " << k << " thread " << t << " seed " << seed;
  }
}

TEST(SimtBlock, KthLargestOfThreadValues) {
  check_kth_largest<256>(1, 1u << 30);
  check_kth_largest<512>(2, 1u << 30);
  check_kth_largest<512>(3, 7);  // heavy ties
}

// 64-bit shared-memory adds made of two 32-bit atomics with the low half's carry: sums that
// carry out of the low half many times, from every thread at once, land exactly.
TEST(SimtBlock, AtomicAdd64CarriesIntoTheHighHalf) {
  constexpr int kThreads = 512;
  std::mt19937_64 gen(11);
  std::vector<uint64_t> v(kThreads * 4);
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = i % 3 == 0 ? 0xfffffff0u + (gen() & 0xff) : gen() >> 24;  // low halves near 2^32
  uint64_t want = 0;
  for (const uint64_t x : v) want += x;
  uint64_t sum = 0;
  lms_simt::launch_block(kThreads, [&] {
    for (int j = 0; j < 4; ++j)
      lmsample::gpu::atomic_add_u64(&sum, v[static_cast<size_t>(threadIdx.x) * 4 + j]);
  });
  EXPECT_EQ(sum, want);
}

// block_select_by_mass against a sort: the largest x whose entries at or above it weigh the
// target, over entry sets that are clustered (a shared leading part, as top-p candidates' keys
// are), spread over the whole range, tied, with zero weights, and sized 1 .. 1024 (few: the
// emulated block's barriers are slow).
template <int kThreads>
void check_select_by_mass(uint32_t seed) {
  std::mt19937_64 gen(seed);
  for (int trial = 0; trial < 8; ++trial) {
    const int n = trial == 0 ? 1 : static_cast<int>(gen() % 1024) + 1;
    std::vector<uint32_t> val(n);
    std::vector<uint64_t> w(n);
    const int kind = trial % 4;
    const uint32_t base = static_cast<uint32_t>(gen());
    for (int i = 0; i < n; ++i) {
      val[i] = kind == 0   ? base + static_cast<uint32_t>(gen() % 5000)  // clustered
               : kind == 1 ? static_cast<uint32_t>(gen())                // spread
               : kind == 2 ? base + static_cast<uint32_t>(gen() % 3)     // tied
                           : static_cast<uint32_t>(gen() % 151936);      // token ids
      w[i] = kind == 3 && gen() % 3 == 0 ? 0 : (gen() >> 25) + 1;
    }
    if (kind == 0 || kind == 2)  // (no wrap-around: every val between lo and hi)
      for (auto& x : val) x = std::max(x, base);
    uint64_t total = 0;
    for (int i = 0; i < n; ++i) total += w[i];
    if (total == 0) continue;
    const uint32_t lo = *std::min_element(val.begin(), val.end());
    const uint32_t hi = *std::max_element(val.begin(), val.end());
    const uint64_t some = static_cast<uint64_t>(gen() % total) + 1;
    for (const uint64_t target : {trial % 2 ? uint64_t{1} : total, some}) {
      // the reference: walk the values from the top
      std::vector<int> order(n);
      for (int i = 0; i < n; ++i) order[i] = i;
      std::sort(order.begin(), order.end(), [&](int a, int b) { return val[a] > val[b]; });
      uint64_t run = 0, want_above = 0;
      uint32_t want = 0;
      for (int j = 0; j < n;) {
        const uint32_t x = val[order[j]];
        uint64_t at = 0;
        while (j < n && val[order[j]] == x) at += w[order[j++]];
        if (at > 0 && run + at >= target) {
          want = x;
          want_above = run;
          break;
        }
        run += at;
      }
      std::vector<uint32_t> got(kThreads);
      std::vector<uint64_t> above(kThreads);
      uint64_t hist[256];
      Exchange& ex = shared_exchange();
      {
        const bool tight = target == some;  // [lo, hi] exact, or the whole range
        lms_simt::launch_block(kThreads, [&] {
          got[threadIdx.x] = block_select_by_mass<kThreads>(
              n,
              [&](int i) {
                return ValueWeight{val[i], w[i]};
              },
              target, tight ? lo : 0u, tight ? hi : 0xffffffffu, hist, ex, &above[threadIdx.x]);
        });
        for (int t = 0; t < kThreads; ++t) {
          ASSERT_EQ(got[t], want) << "trial " << trial << " n " << n << " target " << target
                                  << " thread " << t;
          ASSERT_EQ(above[t], want_above) << "trial " << trial << " thread " << t;
        }
        // MassSelect one round at a time, going on after the first round over only the
        // entries still in play, in another order (as the temperature kernel's long lists do
        // when they move them to shared memory)
        std::vector<int> sub;
        lms_simt::launch_block(kThreads, [&] {
          MassSelect sel(tight ? lo : 0u, tight ? hi : 0xffffffffu);
          const auto full = [&](int i) { return ValueWeight{val[i], w[i]}; };
          if (!sel.done()) sel.round<kThreads>(n, full, target, hist, ex);
          if (threadIdx.x == 0)
            for (int i = n - 1; i >= 0; --i)
              if (sel.in_play(full(i))) sub.push_back(i);
          __syncthreads();
          const int m = static_cast<int>(sub.size());
          while (!sel.done())
            sel.round<kThreads>(
                m, [&](int j) { return full(sub[j]); }, target, hist, ex);
          got[threadIdx.x] = sel.result();
          above[threadIdx.x] = sel.above();
        });
        for (int t = 0; t < kThreads; ++t) {
          ASSERT_EQ(got[t], want) << "resumed: trial " << trial << " n " << n << " target "
                                  << target << " thread " << t;
          ASSERT_EQ(above[t], want_above) << "resumed: trial " << trial << " thread " << t;
        }
      }
    }
  }
}

TEST(SimtBlock, SelectByMass) { check_select_by_mass<256>(7); }

}  // namespace
