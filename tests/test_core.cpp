// The contract's scalar arithmetic (src/core) against known answers and brute force.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "check/stats.hpp"
#include "core/likelihood_bounds.hpp"
#include "core/math.hpp"
#include "core/params.hpp"
#include "core/philox.hpp"
#include "core/verify.hpp"
#include "test_util.hpp"

namespace core = lmsample::core;
__extension__ typedef unsigned __int128 u128;

namespace {

core::Philox4 philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  return core::philox4x32_10(core::Philox4{{c0, c1, c2, c3}}, k0, k1);
}

void expect_philox(const core::Philox4& got, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  EXPECT_EQ(got.v[0], a);
  EXPECT_EQ(got.v[1], b);
  EXPECT_EQ(got.v[2], c);
  EXPECT_EQ(got.v[3], d);
}

}  // namespace

// Random123's kat_vectors for philox4x32_10.
TEST(Philox, KnownAnswerZero) {
  expect_philox(philox(0, 0, 0, 0, 0, 0), 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u);
}

TEST(Philox, KnownAnswerAllOnes) {
  const uint32_t f = 0xffffffffu;
  expect_philox(philox(f, f, f, f, f, f), 0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu);
}

TEST(Philox, KnownAnswerPi) {
  expect_philox(
      philox(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u),
      0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u);
}

TEST(Philox, RowUniformLayout) {
  // key = seed (low word first), counter = (step lo, step hi, substream, 0), u = out1:out0.
  const uint64_t seed = 0x299f31d0a4093822ull;
  const uint64_t step = 0x85a308d3243f6a88ull;
  const core::Philox4 out =
      philox(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(core::row_uniform64(seed, step, 0x13198a2eu),
            (static_cast<uint64_t>(out.v[1]) << 32) | out.v[0]);
  // The pi vector has a non-zero fourth counter word, so check it through philox4x32_10 only,
  // and the zero vector through row_uniform64.
  EXPECT_EQ(core::row_uniform64(0, 0, 0), (uint64_t{0xe169c58du} << 32) | 0x6627e8d5u);
}

TEST(Philox, ExtremeDrawsUsedByTheEdgeTests) {
  // test_edge_cases relies on these (found by inverting Philox4x32-10 offline).
  EXPECT_EQ(core::row_uniform64(0x0fedcba987654321ull, 0x2208c864e297b8e4ull, 0xde595dbau), 0x710u);
  EXPECT_EQ(core::row_uniform64(0x0123456789abcdefull, 0x85e14f3a5d3c2d96ull, 0xedf0caf3u),
            0xffffffffffffffc9ull);
}

TEST(ExpNonpos, RelativeErrorDenseGrid) {
  // Every float z in [-86, 0] on a dense grid (and every float near 0): |exp_nonpos(z)/exp(z) - 1|
  // must stay below 2^-23 (an exhaustive run over all 1.1e9 floats of [-86, 0] measured 7.9e-8
  // at z = -5.891; contract version 1's exp measured 1.02e-7). Below -86 the result is 0.
  const double bound = std::ldexp(1.0, -23);
  double worst = 0.0;
  float worst_z = 0.0f;
  auto check = [&](float z) {
    const double ref = std::exp(static_cast<double>(z));
    if (ref < std::ldexp(1.0, -126)) return;
    const double err = std::fabs(static_cast<double>(core::exp_nonpos(z)) / ref - 1.0);
    if (err > worst) {
      worst = err;
      worst_z = z;
    }
  };
  const int n = 4000000;
  for (int i = 0; i <= n; ++i) check(static_cast<float>(-86.0 * i / n));
  // runs of consecutive floats in every binade from 2^-10 down to 2^-60, and around a few points
  for (int b = 10; b <= 60; ++b) {
    float z = -std::ldexp(1.0f, -b);
    for (int i = 0; i < 20000; ++i) {
      check(z);
      z = std::nextafter(z, 0.0f);
    }
  }
  for (const float c :
       {-0.34657359f, -0.6931472f, -1.0397208f, -5.8911238f, -10.0f, -27.03f, -60.0f, -85.99f}) {
    float z = c;
    for (int i = 0; i < 100000; ++i) {
      check(z);
      z = std::nextafter(z, 0.0f);
    }
  }
  EXPECT_LT(worst, bound) << "at z = " << worst_z;
  RecordProperty("worst_relative_error", std::to_string(worst));
}

TEST(ExpNonpos, SpecialValues) {
  EXPECT_EQ(core::exp_nonpos(0.0f), 1.0f);
  EXPECT_EQ(core::exp_nonpos(-0.0f), 1.0f);
  EXPECT_EQ(core::exp_nonpos(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(core::exp_nonpos(-104.0f), 0.0f);
  EXPECT_EQ(core::exp_nonpos(-1000.0f), 0.0f);
  EXPECT_EQ(core::exp_nonpos(std::nextafter(-86.0f, -87.0f)), 0.0f);       // the stated cut-off
  EXPECT_GE(core::exp_nonpos(-86.0f), std::numeric_limits<float>::min());  // normal down to it
  EXPECT_LE(core::exp_nonpos(-std::numeric_limits<float>::denorm_min()), 1.0f);
}

TEST(ExpNonpos, BitsOfContractVersion2) {
  // The exp of contract version 2 (fused multiply-adds), bit for bit; a change here is a new
  // contract version (docs/contract.md "Versions"). The first value is one where version 1's
  // exp (separate multiplies and adds) gave 0x3f7c0dd8.
  EXPECT_EQ(core::kContractVersion, 2);
  const std::pair<float, uint32_t> pins[] = {
      {-0.0155337583f, 0x3f7c0dd9u}, {-1.0f, 0x3ebc5ab2u},   {-0.5f, 0x3f1b4598u},
      {-10.0f, 0x383e6bceu},         {-27.03f, 0x2c0059e3u}, {-85.9f, 0x018698a0u},
  };
  for (const auto& [z, bits] : pins) EXPECT_EQ(core::float_bits(core::exp_nonpos(z)), bits) << z;
}

TEST(ExpNonpos, MonotoneNonDecreasing) {
  // Consecutive grid points over [-104, 0] and every float in a few dense bands. (Not every
  // float: the polynomial's rounding makes 2,878 of the 1.1e9 floats of [-86, 0] one ulp below
  // their lower neighbour, e.g. z = -0.01553376; ExpNonpos.DecreasesAtMostOneUlp bounds that.)
  float prev_z = -104.0f;
  float prev = core::exp_nonpos(prev_z);
  const int n = 4000000;
  for (int i = 1; i <= n; ++i) {
    const float z = static_cast<float>(-104.0 + 104.0 * i / n);
    const float e = core::exp_nonpos(z);
    ASSERT_GE(e, prev) << "z = " << z << " after z = " << prev_z;
    prev = e;
    prev_z = z;
  }
  for (const float c : {-0.5f, -0.35f, -1.04f, -20.0f, -87.5f, -100.5f}) {
    float z = c;
    float p = core::exp_nonpos(z);
    for (int i = 0; i < 200000; ++i) {
      const float z2 = std::nextafter(z, 0.0f);
      const float e = core::exp_nonpos(z2);
      ASSERT_GE(e, p) << "z = " << z2 << " after z = " << z;
      z = z2;
      p = e;
    }
  }
  EXPECT_LE(core::exp_nonpos(-std::numeric_limits<float>::denorm_min()), 1.0f);
}

TEST(ExpNonpos, DecreasesAtMostOneUlp) {
  // Every float of [-0.35, 0] (the reduction's k = 0 band, where the wiggles are densest) and
  // of bands around other points: where exp_nonpos(z') < exp_nonpos(z) for z' > z, by one ulp
  // at most, and it happens (the contract says e is non-decreasing only up to this).
  int decreases = 0;
  for (const float c : {-0.35f, -1.04f, -5.0f, -20.0f, -85.0f}) {
    float z = c;
    float p = core::exp_nonpos(z);
    const int steps = c == -0.35f ? 60000000 : 2000000;
    for (int i = 0; i < steps && z < 0.0f; ++i) {
      const float z2 = std::nextafter(z, 0.0f);
      const float e = core::exp_nonpos(z2);
      if (e < p) {
        ++decreases;
        ASSERT_EQ(std::nextafter(e, 1.0f), p) << "z = " << z2 << " after z = " << z;
      }
      z = z2;
      p = e;
    }
  }
  EXPECT_GT(decreases, 0);
  RecordProperty("decreases", std::to_string(decreases));
}

TEST(RelLikelihood, MaximumIsExactlyOne) {
  EXPECT_EQ(core::rel_likelihood(3.5f, 3.5f, 1.0f), 1.0f);
  EXPECT_EQ(core::rel_likelihood(3.5f, 3.5f, std::numeric_limits<float>::infinity()), 1.0f);
  EXPECT_EQ(core::rel_likelihood(3.0f, 3.5f, std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(core::rel_likelihood(-std::numeric_limits<float>::infinity(), 3.5f, 1.0f), 0.0f);
}

// rel_likelihood_finite (the CPU backend's unfiltered passes) is rel_likelihood bit for bit for
// every finite inv_t: with kUnitT at inv_t = 1 (the multiply skipped) and without it at any
// finite inv_t (the select of d == 0 left out). Random maxima of many magnitudes (0, -0,
// subnormal, huge), y = m, y one or a few ulps below m, y = -inf, -0 against +0, y anywhere
// below m, and inv_t = 1, 1 / T for T over many decades, subnormal, huge and 0.
TEST(RelLikelihood, FiniteVariantsAreBitForBit) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  lmstest::Rng rng(2185842);
  int64_t checked = 0, unit_checked = 0, ones = 0;
  const auto check = [&](float y, float m, float inv_t) {
    const uint32_t want = core::float_bits(core::rel_likelihood(y, m, inv_t));
    ASSERT_EQ(core::float_bits(core::rel_likelihood_finite<false>(y, m, inv_t)), want)
        << "y=" << y << " m=" << m << " inv_t=" << inv_t;
    ++checked;
    ones += want == core::float_bits(1.0f);
    const uint32_t want1 = core::float_bits(core::rel_likelihood(y, m, 1.0f));
    ASSERT_EQ(core::float_bits(core::rel_likelihood_finite<true>(y, m, 1.0f)), want1)
        << "y=" << y << " m=" << m << " inv_t=1";
    ++unit_checked;
  };
  const auto random_m = [&]() -> float {
    switch (rng.range(0, 6)) {
      case 0:
        return rng.chance(0.5) ? 0.0f : -0.0f;
      case 1:
        return static_cast<float>(rng.normal(0.0, 10.0));
      case 2:
        return static_cast<float>(rng.uniform(-1e3, 1e3));
      case 3:  // tiny, subnormal included
        return static_cast<float>(
            std::ldexp(rng.uniform(-1.0, 1.0), -static_cast<int>(rng.range(100, 150))));
      case 4:  // huge
        return static_cast<float>(
            std::ldexp(rng.uniform(-1.0, 1.0), static_cast<int>(rng.range(20, 127))));
      default:
        return static_cast<float>(rng.uniform(-30.0, 30.0));
    }
  };
  const auto random_inv_t = [&]() -> float {
    switch (rng.range(0, 5)) {
      case 0:
        return 1.0f;
      case 1:
        return core::div_rn(1.0f, static_cast<float>(std::exp(rng.uniform(-12.0, 12.0))));
      case 2:
        return core::div_rn(1.0f, std::vector<float>{0.7f, 1.3f, 0.05f, 3.0f, 1e-3f,
                                                     50.0f}[static_cast<size_t>(rng.range(0, 5))]);
      case 3:  // subnormal (T near FLT_MAX), or 0
        return rng.chance(0.8) ? std::ldexp(static_cast<float>(rng.uniform(0.0, 1.0)), -126) : 0.0f;
      default:  // up to FLT_MAX (T tiny but 1/T finite)
        return std::ldexp(static_cast<float>(rng.uniform(0.5, 1.0)),
                          static_cast<int>(rng.range(10, 128)));
    }
  };
  for (int i = 0; i < 400000; ++i) {
    const float m = random_m();
    const float inv_t = random_inv_t();
    ASSERT_TRUE(core::is_finite(inv_t));
    float y;
    switch (rng.range(0, 7)) {
      case 0:
        y = m;
        break;
      case 1:
        y = -kInf;
        break;
      case 2: {  // a few ulps below m
        y = m;
        for (int64_t k = rng.range(1, 4); k > 0; --k) y = std::nextafter(y, -kInf);
        break;
      }
      case 3:  // -0 and +0 against each other
        y = rng.chance(0.5) ? -0.0f : 0.0f;
        check(y, rng.chance(0.5) ? -0.0f : 0.0f, inv_t);
        y = std::min(y, m);
        break;
      case 4:  // within about 30 T below m
        y = static_cast<float>(static_cast<double>(m) - rng.uniform(0.0, 30.0) / inv_t);
        break;
      default:  // anywhere below m
        y = static_cast<float>(static_cast<double>(m) - std::abs(rng.normal(0.0, 50.0)));
        break;
    }
    if (!(y <= m)) y = m;
    check(y, m, inv_t);
  }
  // consecutive floats y from m down (50,000 of them, or down to m - 2^-10) at a few maxima and
  // temperatures: d * inv_t near 0, where exp_nonpos is near 1 (at m = 0: subnormal d)
  for (const float m : {0.0f, -0.0f, 1.0f, -3.5f, 17.25f}) {
    for (const float inv_t : {1.0f, core::div_rn(1.0f, 0.7f), core::div_rn(1.0f, 1.3f)}) {
      int n = 0;
      for (float y = m; y >= m - 1.0f / 1024.0f && n < 50000; y = std::nextafter(y, -kInf), ++n)
        check(y, m, inv_t);
    }
  }
  EXPECT_GT(ones, 1000);  // y == m (and -0 against +0) did come up
  RecordProperty("checked", std::to_string(checked));
  RecordProperty("unit_checked", std::to_string(unit_checked));
}

// The GPU's candidate bounds by likelihood (core/likelihood_bounds.hpp): a processed logit whose
// contract likelihood lies in a bucket has its key within the bucket's key floor and ceiling,
// and one whose likelihood passes a min-p bound has its key at or above that bound's floor;
// buckets never decrease with the logit. Rows of many maxima and temperatures; logits on a
// sweep down from the maximum and a few ulps around every bucket edge (where the margin
// matters).
TEST(LikelihoodBounds, EveryLogitOfABucketIsWithinItsKeyBounds) {
  // the GPU's bucketed top-p gives the row maximum's ties a bucket of their own, 255, above
  // every likelihood bucket
  EXPECT_EQ(core::likelihood_bucket(1.0f), 241u);
  EXPECT_EQ(core::likelihood_bucket(std::nextafter(1.0f, 0.0f)), 240u);
  using namespace lmsample::core;
  std::mt19937 gen(2024);
  std::uniform_real_distribution<float> max_dist(-60.0f, 60.0f);
  const float temps[] = {0.02f, 0.3f, 1.0f, 1.7f, 5.0f, 60.0f};
  int64_t checked = 0;
  for (int trial = 0; trial < 60; ++trial) {
    const float m = trial == 0 ? 0.0f : max_dist(gen), t = temps[trial % 6];
    const float inv_t = div_rn(1.0f, t);
    const auto check = [&](float y) {
      const float e = rel_likelihood(y, m, inv_t);
      const uint32_t b = likelihood_bucket(e), key = order_key(canonical(y));
      if (b >= 1) {
        const uint32_t lo = key_floor_of_likelihood(m, t, std::log(likelihood_bucket_floor(b)));
        const uint32_t hi =
            key_ceiling_of_likelihood(m, t, std::log(likelihood_bucket_floor(b + 1)));
        ASSERT_TRUE(lo == 0 || key >= lo)
            << "m " << m << " T " << t << " y " << y << " bucket " << b;
        ASSERT_LE(key, hi) << "m " << m << " T " << t << " y " << y << " bucket " << b;
        ++checked;
      }
      for (const float p : {0.5f, 0.05f, 1e-3f}) {
        if (!(e >= p)) continue;
        const uint32_t lo = key_floor_of_likelihood(m, t, std::log(p));
        ASSERT_TRUE(lo == 0 || key >= lo) << "m " << m << " T " << t << " y " << y << " p " << p;
      }
    };
    // a sweep from the maximum down to below 2^-30 of it: buckets never increase
    uint32_t prev = UINT32_MAX;
    const float step = t * 0.0137f;
    for (int i = 0; i < 1700; ++i) {
      const float y = m - step * static_cast<float>(i);
      check(y);
      const uint32_t b = likelihood_bucket(rel_likelihood(y, m, inv_t));
      ASSERT_LE(b, prev) << "m " << m << " T " << t << " y " << y;
      prev = b;
    }
    // every bucket edge: the logits a few ulps around y = m + T ln(edge)
    for (uint32_t b = 1; b <= 241; ++b) {
      const float y0 = m + t * std::log(likelihood_bucket_floor(b));
      float below = y0, above = y0;
      for (int u = 0; u < 6; ++u) {
        check(below);
        check(above);
        below = std::nextafter(below, -INFINITY);
        above = std::nextafter(above, INFINITY);
      }
    }
  }
  EXPECT_GT(checked, 100000);
  // the edges themselves: bucket 241 is e = 1, and the bucket of each edge is that bucket
  EXPECT_EQ(likelihood_bucket(1.0f), 241u);
  EXPECT_EQ(likelihood_bucket(std::ldexp(1.0f, -31)), 0u);
  for (uint32_t b = 1; b <= 241; ++b) {
    EXPECT_EQ(likelihood_bucket(likelihood_bucket_floor(b)), b);
    EXPECT_EQ(likelihood_bucket(std::nextafter(likelihood_bucket_floor(b), 0.0f)), b - 1);
  }
}

TEST(LogU64, MatchesStdLog) {
  lmstest::Rng rng(11);
  for (int i = 0; i < 200000; ++i) {
    uint64_t s;
    switch (i % 4) {
      case 0:
        s = rng.u64();
        break;
      case 1:
        s = rng.u64() >> rng.range(0, 63);
        break;
      case 2:
        s = static_cast<uint64_t>(rng.range(1, 1000));
        break;
      default:
        s = (uint64_t{1} << 39) + static_cast<uint64_t>(rng.range(0, 1 << 30));
        break;
    }
    if (s == 0) s = 1;
    const long double ref = std::log(static_cast<long double>(s));
    const double got = core::log_u64(s);
    // About 1 ulp of a double, plus the rounding of s itself to a double (for s > 2^53).
    const long double tol = 4.0L * std::numeric_limits<double>::epsilon() * std::fabs(ref) + 1e-17L;
    ASSERT_LE(std::fabs(static_cast<long double>(got) - ref), tol) << "s = " << s;
  }
  EXPECT_EQ(core::log_u64(1), 0.0);
  // the +inf case's logprob: (float)(-log n)
  for (uint64_t n = 1; n < 5000; ++n) {
    ASSERT_EQ(core::uniform_logprob(n), static_cast<float>(-std::log(static_cast<double>(n)))) << n;
  }
  EXPECT_NEAR(core::log_normaliser(uint64_t{1} << 39), 0.0, 1e-15);
}

TEST(OrderKey, MonotoneAndInverse) {
  lmstest::Rng rng(12);
  std::vector<float> values = {-std::numeric_limits<float>::infinity(),
                               -3.4e38f,
                               -1.0f,
                               -1e-45f,
                               0.0f,
                               1e-45f,
                               1.0f,
                               3.4e38f,
                               std::numeric_limits<float>::infinity()};
  for (int i = 0; i < 100000; ++i) {
    uint32_t u = static_cast<uint32_t>(rng.u64());
    float f;
    std::memcpy(&f, &u, sizeof f);
    if (std::isnan(f)) continue;
    values.push_back(f);
  }
  for (size_t i = 0; i < values.size(); ++i) {
    const float a = values[i];
    const float b = values[(i * 7919 + 1) % values.size()];
    const uint32_t ka = core::order_key(a), kb = core::order_key(b);
    if (a < b) {
      ASSERT_LT(ka, kb) << a << " " << b;
    }
    if (a > b) {
      ASSERT_GT(ka, kb) << a << " " << b;
    }
    const float back = core::key_to_float(ka);
    ASSERT_EQ(lmstest::bits_of(back), lmstest::bits_of(a));
  }
  // canonical logits: +0 and -0 are mapped to the same +0 before keys are taken
  EXPECT_EQ(core::order_key(core::canonical(-0.0f)), core::order_key(0.0f));
}

TEST(OrderKey, CanonicalKeyOfBits) {
  // The integer-only shortcut used by the backends equals order_key(canonical(f)).
  EXPECT_EQ(core::kKeyNegInf, core::order_key(-std::numeric_limits<float>::infinity()));
  EXPECT_EQ(core::kKeyPosInf, core::order_key(std::numeric_limits<float>::infinity()));
  lmstest::Rng rng(16);
  std::vector<uint32_t> bits = {0u,          0x80000000u, 0x7f800000u, 0xff800000u,
                                0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u,
                                0x00000001u, 0x80000001u, 0x7f7fffffu, 0xff7fffffu};
  for (int i = 0; i < 2000000; ++i) bits.push_back(static_cast<uint32_t>(rng.u64()));
  for (const uint32_t u : bits) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    ASSERT_EQ(core::canonical_key_of_bits(u), core::order_key(core::canonical(f))) << std::hex << u;
    // the GPU load's fast path: equal off NaN, and NaN bits land outside [-inf, +inf]
    const uint32_t fast = core::order_key_of_bits(u);
    if (std::isnan(f)) {
      ASSERT_TRUE(fast < core::kKeyNegInf || fast > core::kKeyPosInf) << std::hex << u;
    } else {
      ASSERT_EQ(fast, core::canonical_key_of_bits(u)) << std::hex << u;
    }
  }
}

TEST(Canonical, NanAndNegativeZero) {
  EXPECT_EQ(core::canonical(std::numeric_limits<float>::quiet_NaN()),
            -std::numeric_limits<float>::infinity());
  EXPECT_EQ(lmstest::bits_of(core::canonical(-0.0f)), 0u);
  EXPECT_EQ(core::canonical(2.5f), 2.5f);
  EXPECT_EQ(core::canonical(std::numeric_limits<float>::infinity()),
            std::numeric_limits<float>::infinity());
}

TEST(CeilFraction, BruteForce128) {
  lmstest::Rng rng(13);
  auto brute = [](float p, uint64_t w) -> uint64_t {
    // p = mant * 2^e exactly (frexp), p * w = mant24 * w * 2^(e - 24); ceil in 128-bit integers.
    int e;
    const double fr = std::frexp(static_cast<double>(p), &e);     // p = fr * 2^e, fr in [0.5, 1)
    const auto mant = static_cast<uint64_t>(std::ldexp(fr, 24));  // exact: p has <= 24 bits
    const u128 prod = static_cast<u128>(mant) * w;
    const int shift = 24 - e;  // p * w = prod / 2^shift, shift >= 25 for p < 1
    if (shift >= 128) return prod == 0 ? 0 : 1;
    const u128 q = prod >> shift;
    const bool exact = (prod & ((static_cast<u128>(1) << shift) - 1)) == 0;
    return static_cast<uint64_t>(exact ? q : q + 1);
  };
  for (int i = 0; i < 500000; ++i) {
    float p;
    switch (i % 4) {
      case 0:
        p = static_cast<float>(rng.uniform());
        break;
      case 1:
        p = std::ldexp(static_cast<float>(rng.uniform(0.5, 1.0)),
                       -static_cast<int>(rng.range(1, 140)));
        break;
      case 2: {
        const uint32_t u = static_cast<uint32_t>(rng.range(1, 0x3f7fffff));  // (0, 1)
        std::memcpy(&p, &u, sizeof p);
        break;
      }
      default:
        p = std::nextafter(1.0f, 0.0f);
        break;
    }
    if (!(p > 0.0f && p < 1.0f)) continue;
    uint64_t w;
    switch (i % 3) {
      case 0:
        w = rng.u64() >> 1;
        break;  // < 2^63
      case 1:
        w = rng.u64() >> rng.range(1, 63);
        break;
      default:
        w = (uint64_t{1} << 39) * static_cast<uint64_t>(rng.range(1, 1 << 20));
        break;
    }
    ASSERT_EQ(core::ceil_fraction(p, w), brute(p, w)) << "p = " << p << " w = " << w;
  }
  EXPECT_EQ(core::ceil_fraction(0.5f, 10), 5u);
  EXPECT_EQ(core::ceil_fraction(0.5f, 11), 6u);
  EXPECT_EQ(core::ceil_fraction(0.5f, 0), 0u);
  EXPECT_EQ(core::ceil_fraction(std::numeric_limits<float>::denorm_min(), uint64_t{1} << 62), 1u);
}

TEST(ScaleDraw, FloorOfProduct) {
  EXPECT_EQ(core::scale_draw(0, 1000), 0u);
  EXPECT_EQ(core::scale_draw(~uint64_t{0}, 1000), 999u);
  EXPECT_EQ(core::scale_draw(uint64_t{1} << 63, 1000), 500u);
  lmstest::Rng rng(14);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t u = rng.u64(), w = rng.u64() >> 1;
    const uint64_t t = core::scale_draw(u, w);
    ASSERT_EQ(t, static_cast<uint64_t>((static_cast<u128>(u) * w) >> 64));
    ASSERT_LT(t, w);
  }
}

// The GPU residual pass's test of w Wq > v Wp (fp32 products, 128-bit where they are close) is
// the exact comparison: random weights, ties and near-ties of every size, and zero weights.
TEST(ResidualPositive, IsTheExactComparison) {
  lmstest::Rng rng(16);
  const auto weight = [&] {  // floor(e 2^39) of a likelihood e in [0, 1]: exact in fp32
    const float e = static_cast<float>(rng.uniform());
    return core::mass_of(rng.chance(0.1) ? e * 1e-9f : e);
  };
  int close = 0;
  for (int i = 0; i < 400000; ++i) {
    const uint64_t w = i % 50 == 0 ? 0 : weight(), v = i % 70 == 0 ? 0 : weight();
    uint64_t wq = (rng.u64() >> 1) | 1, wp = (rng.u64() >> 1) | 1;
    if (i % 4 != 0 && w > 0 && v > 0) {
      // a near tie: Wq about v Wp / w (off by a few, or exact), or equal totals and weights
      wp = (rng.u64() >> (2 + rng.range(0, 20))) | 1;
      const u128 q = static_cast<u128>(v) * wp / w;
      const int64_t off = static_cast<int64_t>(rng.range(0, 6)) - 3;
      wq = static_cast<uint64_t>(q) + static_cast<uint64_t>(off);
      if (i % 9 == 0) wq = wp;
      if (wq == 0 || q >> 63) continue;
    }
    const float wf = static_cast<float>(w), vf = static_cast<float>(v);
    ASSERT_EQ(static_cast<uint64_t>(wf), w);
    ASSERT_EQ(static_cast<uint64_t>(vf), v);
    const bool exact = static_cast<u128>(w) * wq > static_cast<u128>(v) * wp;
    close += core::residual_sign_fp32(wf, vf, static_cast<float>(wq), static_cast<float>(wp)) == 0;
    ASSERT_EQ(core::residual_positive(w, v, wf, vf, wq, wp, static_cast<float>(wq),
                                      static_cast<float>(wp)),
              exact)
        << "w " << w << " v " << v << " Wq " << wq << " Wp " << wp;
    ASSERT_EQ(exact, core::residual_weight(w, wp, v, wq).lo != 0 ||
                         core::residual_weight(w, wp, v, wq).hi != 0);
  }
  EXPECT_GT(close, 100000);  // the 128-bit fallback was taken often
}

TEST(F16ToFloat, KnownValues) {
  EXPECT_EQ(core::f16_to_float(0x0000), 0.0f);
  EXPECT_EQ(lmstest::bits_of(core::f16_to_float(0x8000)), 0x80000000u);
  EXPECT_EQ(core::f16_to_float(0x3c00), 1.0f);
  EXPECT_EQ(core::f16_to_float(0xbc00), -1.0f);
  EXPECT_EQ(core::f16_to_float(0x4000), 2.0f);
  EXPECT_EQ(core::f16_to_float(0x3555), 0.333251953125f);
  EXPECT_EQ(core::f16_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(core::f16_to_float(0xfbff), -65504.0f);
  EXPECT_EQ(core::f16_to_float(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(core::f16_to_float(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(core::f16_to_float(0x03ff), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(core::f16_to_float(0x0200), std::ldexp(1.0f, -15));
  EXPECT_EQ(core::f16_to_float(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(core::f16_to_float(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(core::f16_to_float(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(core::f16_to_float(0x7e00)));
  EXPECT_TRUE(std::isnan(core::f16_to_float(0x7c01)));
  EXPECT_TRUE(std::isnan(core::f16_to_float(0xfe00)));
}

TEST(F16ToFloat, EveryValueExact) {
  // Every half value: the float is exactly sign * mant * 2^(exp-25) with the IEEE rules, and the
  // tests' own float -> half conversion takes it back.
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = core::f16_to_float(static_cast<uint16_t>(h));
    const uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const double sign = (h & 0x8000) ? -1.0 : 1.0;
    if (e == 0x1f) {
      if (m == 0)
        ASSERT_EQ(f, static_cast<float>(sign * INFINITY)) << h;
      else
        ASSERT_TRUE(std::isnan(f)) << h;
      continue;
    }
    const double ref =
        e == 0 ? sign * std::ldexp(static_cast<double>(m), -24)
               : sign * std::ldexp(static_cast<double>(m | 0x400), static_cast<int>(e) - 25);
    ASSERT_EQ(static_cast<double>(f), ref) << h;
    ASSERT_EQ(lmstest::float_to_f16(f), h) << h;
  }
}

TEST(Bf16ToFloat, Exact) {
  EXPECT_EQ(core::bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(core::bf16_to_float(0xc040), -3.0f);
  EXPECT_EQ(core::bf16_to_float(0x7f80), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(core::bf16_to_float(0x7fc0)));
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = core::bf16_to_float(static_cast<uint16_t>(h));
    ASSERT_EQ(lmstest::bits_of(f), h << 16);
  }
}

TEST(MassOf, FixedPoint) {
  EXPECT_EQ(core::mass_of(1.0f), uint64_t{1} << 39);
  EXPECT_EQ(core::kMassOne, uint64_t{1} << 39);
  EXPECT_EQ(core::mass_of(0.0f), 0u);
  EXPECT_EQ(core::mass_of(0.5f), uint64_t{1} << 38);
  EXPECT_EQ(core::mass_of(std::ldexp(1.0f, -39)), 1u);
  EXPECT_EQ(core::mass_of(std::nextafter(std::ldexp(1.0f, -39), 0.0f)), 0u);
  lmstest::Rng rng(15);
  for (int i = 0; i < 100000; ++i) {
    const float e = static_cast<float>(rng.uniform());
    ASSERT_EQ(core::mass_of(e),
              static_cast<uint64_t>(std::floor(std::ldexp(static_cast<double>(e), 39))));
  }
}

TEST(Params, ValidationOrderAndBounds) {
  using lmsample::RowStatus;
  core::RowSettings s;
  EXPECT_EQ(core::validate_row_settings(s), lmsample::kRowOk);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto status_with = [](auto f) {
    core::RowSettings t;
    f(t);
    return core::validate_row_settings(t);
  };
  EXPECT_EQ(status_with([&](auto& t) { t.temperature = -1e-30f; }), lmsample::kRowBadTemperature);
  EXPECT_EQ(status_with([&](auto& t) { t.temperature = nan; }), lmsample::kRowBadTemperature);
  EXPECT_EQ(status_with([&](auto& t) { t.temperature = inf; }), lmsample::kRowBadTemperature);
  EXPECT_EQ(status_with([&](auto& t) { t.temperature = 0.0f; }), lmsample::kRowOk);
  EXPECT_EQ(status_with([&](auto& t) { t.top_k = -1; }), lmsample::kRowBadTopK);
  EXPECT_EQ(status_with([&](auto& t) { t.top_p = 0.0f; }), lmsample::kRowBadTopP);
  EXPECT_EQ(status_with([&](auto& t) { t.top_p = nan; }), lmsample::kRowBadTopP);
  EXPECT_EQ(status_with([&](auto& t) { t.top_p = 7.0f; }), lmsample::kRowOk);
  EXPECT_EQ(status_with([&](auto& t) { t.min_p = -0.1f; }), lmsample::kRowBadMinP);
  EXPECT_EQ(status_with([&](auto& t) { t.min_p = 1.5f; }), lmsample::kRowBadMinP);
  EXPECT_EQ(status_with([&](auto& t) { t.min_p = 1.0f; }), lmsample::kRowOk);
  EXPECT_EQ(status_with([&](auto& t) { t.repetition = 0.0f; }), lmsample::kRowBadRepetitionPenalty);
  EXPECT_EQ(status_with([&](auto& t) { t.repetition = inf; }), lmsample::kRowBadRepetitionPenalty);
  EXPECT_EQ(status_with([&](auto& t) { t.frequency = 2.5f; }), lmsample::kRowBadFrequencyPenalty);
  EXPECT_EQ(status_with([&](auto& t) { t.frequency = -2.0f; }), lmsample::kRowOk);
  EXPECT_EQ(status_with([&](auto& t) { t.presence = nan; }), lmsample::kRowBadPresencePenalty);
  // the first bad one in table order wins
  EXPECT_EQ(status_with([&](auto& t) {
              t.presence = nan;
              t.top_p = 0.0f;
              t.top_k = -3;
            }),
            lmsample::kRowBadTopK);
}

TEST(Penalties, VllmFormulas) {
  core::RowSettings s;
  s.repetition = 2.0f;
  s.frequency = 0.5f;
  s.presence = 0.25f;
  EXPECT_EQ(core::apply_penalties(4.0f, true, 0, s), 2.0f);
  EXPECT_EQ(core::apply_penalties(-4.0f, true, 0, s), -8.0f);
  EXPECT_EQ(core::apply_penalties(4.0f, true, 3, s), 2.0f - 1.5f - 0.25f);
  EXPECT_EQ(core::apply_penalties(4.0f, false, 0, s), 4.0f);
  EXPECT_EQ(core::apply_penalties(-std::numeric_limits<float>::infinity(), true, 2, s),
            -std::numeric_limits<float>::infinity());
}

// ---- the statistics helpers used by test_statistics ----

TEST(ChiSquare, UpperTailKnownValues) {
  using lmsample::check::chi_square_upper_tail;
  // dof 2: Q = exp(-x/2) exactly.
  for (const double x : {0.1, 1.0, 5.0, 20.0, 100.0}) {
    EXPECT_NEAR(chi_square_upper_tail(x, 2) / std::exp(-x / 2), 1.0, 1e-12) << x;
  }
  // dof 1: Q = erfc(sqrt(x/2)).
  for (const double x : {0.01, 0.5, 3.84, 10.0, 50.0}) {
    EXPECT_NEAR(chi_square_upper_tail(x, 1) / std::erfc(std::sqrt(x / 2)), 1.0, 1e-10) << x;
  }
  // dof 4: Q = exp(-x/2) (1 + x/2).
  for (const double x : {0.3, 2.0, 9.49, 40.0}) {
    EXPECT_NEAR(chi_square_upper_tail(x, 4) / (std::exp(-x / 2) * (1 + x / 2)), 1.0, 1e-12) << x;
  }
  // tables: 95% points
  EXPECT_NEAR(chi_square_upper_tail(3.841458820694124, 1), 0.05, 1e-9);
  EXPECT_NEAR(chi_square_upper_tail(18.307038053275146, 10), 0.05, 1e-9);
  EXPECT_NEAR(chi_square_upper_tail(124.34211340400407, 100), 0.05, 1e-9);
  EXPECT_NEAR(chi_square_upper_tail(1000.0, 1000), 0.4940520, 1e-6);
  EXPECT_EQ(chi_square_upper_tail(0.0, 5), 1.0);
}

TEST(ChiSquare, PoolingAndRejection) {
  using lmsample::check::chi_square_test;
  // A perfect fit.
  auto r = chi_square_test({250, 250, 500}, {0.25, 0.25, 0.5});
  EXPECT_EQ(r.statistic, 0.0);
  EXPECT_EQ(r.dof, 2);
  EXPECT_EQ(r.p_value, 1.0);
  // Small categories are pooled: 10 categories of expected 0.1 + 2 big ones -> 3 categories.
  std::vector<double> probs(12, 0.0001);
  probs[10] = 0.5 - 0.0005;
  probs[11] = 0.5 - 0.0005;
  std::vector<uint64_t> counts(12, 0);
  counts[10] = 5000;
  counts[11] = 4992;
  counts[3] = 8;
  r = chi_square_test(counts, probs);
  EXPECT_EQ(r.dof, 2);  // pooled (expected 10) + two big ones = 3 categories
  EXPECT_NEAR(r.statistic, 0.4 + 25.0 / 4995 + 9.0 / 4995, 1e-9);
  EXPECT_GT(r.p_value, 0.5);
  // A pool still below min_expected joins the smallest big category.
  r = chi_square_test({0, 0, 300, 700}, {0.001, 0.001, 0.3, 0.698});
  EXPECT_EQ(r.dof, 1);
  // A count where the probability is 0 is rejected outright.
  r = chi_square_test({10, 1}, {1.0, 0.0});
  EXPECT_EQ(r.p_value, 0.0);
  // A clear misfit is rejected.
  r = chi_square_test({600, 400}, {0.5, 0.5});
  EXPECT_LT(r.p_value, 1e-9);
}
