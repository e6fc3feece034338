// The contract's arithmetic, shared bit for bit by every backend (host, CUDA, HIP).
// Only IEEE-754 operations with one defined result are used (through port.hpp), so these
// functions return the same bits everywhere. docs/contract.md is the specification.
#pragma once

#include "core/port.hpp"

namespace lmsample::core {

//! Fixed-point scale of probability masses: a weight of 2^39 is "probability ratio 1".
//! V <= 2^24 tokens of at most 2^39 each sum to at most 2^63: every sum is exact in uint64.
constexpr int kMassBits = 39;
constexpr uint64_t kMassOne = uint64_t{1} << kMassBits;

//! Version of the arithmetic below (docs/contract.md, "Versions"): 2 since exp_nonpos uses
//! fused multiply-adds (version 1: separate multiplies and adds, a different last bit).
constexpr int kContractVersion = 2;

//! exp(z) for z <= 0 (z = -inf allowed, NaN not), from fused multiply-adds.
//! NOTE: contract version 2. k = round(z log2(e)) from one FMA with 1.5 * 2^23 (whose float bits
//! then hold k), Cody-Waite reduction r = z - k ln2 with two FMAs (|r| <= ln2/2 + tiny), a
//! degree-7 Taylor polynomial of e^r in Horner form (seven FMAs), and 2^k applied exactly by
//! adding k to the exponent field (k >= -124, so the result stays normal). Relative error below
//! 2^-23 against exp (tests/test_core.cpp measures it), exactly 1 at z = 0, non-decreasing, and
//! 0 for z < -86 (e^-86 < 2^-124; no such likelihood carries fixed-point mass).
//! The two pieces of exp_nonpos(z) for z in [-86, 0]: e^z = p * 2^k with p = e^r in
//! [0.70, 1.42] and k in [-124, 0] held in the low 9 bits of s_bits (the float bits of
//! 1.5 * 2^23 + k), so that float_bits(p) + (s_bits << 23) are the bits of p * 2^k.
struct ExpParts {
  float p;
  uint32_t s_bits;
};
LMS_HD ExpParts exp_parts(float z) {
  constexpr float kLog2e = 1.44269502162933349609375f;  // nearest float to 1/ln 2
  constexpr float kLn2Hi = 0.693145751953125f;          // 15 significant bits: k*kLn2Hi is exact
  constexpr float kLn2Lo = 1.428606765330187045e-06f;   // ln 2 - kLn2Hi
  constexpr float kRound = 12582912.0f;                 // 1.5 * 2^23: its binade has ulp 1
  const float s = fma_rn(z, kLog2e, kRound);            // 1.5 * 2^23 + k, k in [-124, 0]
  const float kf = sub_rn(s, kRound);                   // k, exactly
  float r = fma_rn(kf, -kLn2Hi, z);
  r = fma_rn(kf, -kLn2Lo, r);
  float p = 1.0f / 5040.0f;
  p = fma_rn(p, r, 1.0f / 720.0f);
  p = fma_rn(p, r, 1.0f / 120.0f);
  p = fma_rn(p, r, 1.0f / 24.0f);
  p = fma_rn(p, r, 1.0f / 6.0f);
  p = fma_rn(p, r, 0.5f);
  p = fma_rn(p, r, 1.0f);
  p = fma_rn(p, r, 1.0f);  // in [0.70, 1.42]
  return ExpParts{p, float_bits(s)};
}

LMS_HD float exp_nonpos(float z) {
  // Branch-free (selects only) so that host compilers vectorise it; every path computes the
  // same operations, so scalar, SIMD and GPU code give the same bits.
  const bool underflow = !(z >= -86.0f);  // also z = -inf
  const ExpParts e = exp_parts(z);
  // float_bits(s) = float_bits(1.5 * 2^23) + k, whose low 9 bits are k's: shifted by 23 they
  // add k to p's exponent field (p * 2^k, exact: the result is normal)
  const uint32_t scaled = float_bits(e.p) + (e.s_bits << 23);
  return underflow ? 0.0f : bits_float(scaled);
}

//! The contract's relative likelihood of a token: e = exp((y - m) / T) written as
//! d = y - m, e = (d == 0) ? 1 : exp_nonpos(d * inv_t), with inv_t = 1 / T (all rounded to
//! nearest). The d == 0 case keeps the row's maximum at exactly 1 even when inv_t is +inf.
LMS_HD float rel_likelihood(float y, float m, float inv_t) {
  const float d = sub_rn(y, m);
  const float e = exp_nonpos(mul_rn(d, inv_t));  // d * inv_t is NaN only when d == 0
  return d == 0.0f ? 1.0f : e;
}

//! rel_likelihood for a finite inv_t, bit for bit: there d == 0 gives d * inv_t = 0 and
//! exp_nonpos(0) = 1 exactly, so the select is not needed. With kUnitT (inv_t == 1, T = 1) the
//! multiply is skipped too (d * 1 = d exactly).
template <bool kUnitT = false>
LMS_HD float rel_likelihood_finite(float y, float m, float inv_t) {
  const float d = sub_rn(y, m);
  return exp_nonpos(kUnitT ? d : mul_rn(d, inv_t));
}

//! Fixed-point weight of a likelihood e in [0, 1]: floor(e * 2^39).
//! NOTE: computed as hi * 2^20 + lo with two float -> int32 truncations, which is exactly
//! floor(e * 2^39) (every step is exact: e * 2^39 < 2^40 has a 24-bit mantissa, so its part
//! below 2^20 is representable) and vectorises on every host SIMD level.
struct MassParts {
  uint32_t hi;  // floor(e * 2^19), at most 2^19
  uint32_t lo;  // the rest below 2^20
};
LMS_HD MassParts mass_parts(float e) {
  constexpr float kScale = 549755813888.0f;    // 2^39
  constexpr float kTwo20 = 1048576.0f;         // 2^20
  constexpr float kInv20 = 1.0f / 1048576.0f;  // 2^-20
  const float scaled = mul_rn(e, kScale);
  const int32_t hi = static_cast<int32_t>(mul_rn(scaled, kInv20));
  const float rest = sub_rn(scaled, mul_rn(static_cast<float>(hi), kTwo20));
  return MassParts{static_cast<uint32_t>(hi), static_cast<uint32_t>(static_cast<int32_t>(rest))};
}
LMS_HD uint64_t mass_of(float e) {
  const MassParts p = mass_parts(e);
  return (static_cast<uint64_t>(p.hi) << 20) + p.lo;
}

//! Natural log of a positive integer, in double, from adds, multiplies and one divide.
//! NOTE: x = m * 2^e with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(f), f = (m-1)/(m+1),
//! |f| <= 0.1716, summed to f^23 (truncation below 1e-17).
LMS_HD double log_u64(uint64_t s) {
  const double x =
      dadd_rn(dmul_rn(static_cast<double>(static_cast<uint32_t>(s >> 32)), 4294967296.0),
              static_cast<double>(static_cast<uint32_t>(s)));
  const uint64_t bits = double_bits(x);
  int e = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
  double m = bits_double((bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull);
  if (m > 1.4142135623730951) {
    m = dmul_rn(m, 0.5);
    e += 1;
  }
  const double f = ddiv_rn(dadd_rn(m, -1.0), dadd_rn(m, 1.0));
  const double f2 = dmul_rn(f, f);
  double s_ = 2.0 / 23.0;
  s_ = dadd_rn(dmul_rn(s_, f2), 2.0 / 21.0);
  s_ = dadd_rn(dmul_rn(s_, f2), 2.0 / 19.0);
  s_ = dadd_rn(dmul_rn(s_, f2), 2.0 / 17.0);
  s_ = dadd_rn(dmul_rn(s_, f2), 2.0 / 15.0);
  s_ = dadd_rn(dmul_rn(s_, f2), 2.0 / 13.0);
  s_ = dadd_rn(dmul_rn(s_, f2), 2.0 / 11.0);
  s_ = dadd_rn(dmul_rn(s_, f2), 2.0 / 9.0);
  s_ = dadd_rn(dmul_rn(s_, f2), 2.0 / 7.0);
  s_ = dadd_rn(dmul_rn(s_, f2), 2.0 / 5.0);
  s_ = dadd_rn(dmul_rn(s_, f2), 2.0 / 3.0);
  s_ = dadd_rn(dmul_rn(s_, f2), 2.0);
  constexpr double kLn2 = 0.6931471805599453;
  return dadd_rn(dmul_rn(static_cast<double>(e), kLn2), dmul_rn(s_, f));
}

//! log of the softmax normaliser sum_j exp(y_j - m) from its fixed-point value S (>= 2^39).
LMS_HD double log_normaliser(uint64_t s) {
  constexpr double kLn2x39 = 39.0 * 0.6931471805599453;  // 39 ln 2, rounded once at compile time
  return dadd_rn(log_u64(s), -kLn2x39);
}

//! logprob = (float)((double)(y - m) - log_norm).
LMS_HD float logprob_of(float y, float m, double log_norm) {
  const double v = dadd_rn(static_cast<double>(sub_rn(y, m)), -log_norm);
#if LMS_DEVICE_PASS
  return __double2float_rn(v);
#else
  return static_cast<float>(v);
#endif
}

//! Logprob of each of n equally likely tokens (the +inf case): (float)(-log n).
LMS_HD float uniform_logprob(uint64_t n) {
  const double v = -log_u64(n);
#if LMS_DEVICE_PASS
  return __double2float_rn(v);
#else
  return static_cast<float>(v);
#endif
}

//! Order-preserving map from non-NaN floats to uint32 (larger float -> larger key).
//! Processed logits are canonical (no NaN, no -0), so equal floats have equal keys.
LMS_HD uint32_t order_key(float f) {
  const uint32_t u = float_bits(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
LMS_HD float key_to_float(uint32_t k) {
  return bits_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

//! Keys of -inf (the lowest key a canonical value can have) and +inf.
constexpr uint32_t kKeyNegInf = 0x007fffffu;
constexpr uint32_t kKeyPosInf = 0xff800000u;

//! Order key of the non-NaN float with bits u, -0 taken as +0 (NaN bits map outside
//! [kKeyNegInf, kKeyPosInf]; canonical_key_of_bits maps them to kKeyNegInf). Branch-free.
LMS_HD uint32_t order_key_of_bits(uint32_t u) {
  const uint32_t k = u ^ (static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u);
  return k == 0x7fffffffu ? 0x80000000u : k;  // -0
}

//! Order key of the canonical form of the float with bits u: NaN -> -inf, -0 -> +0.
//! Integer-only, so loops over a row vectorise.
LMS_HD uint32_t canonical_key_of_bits(uint32_t u) {
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  const uint32_t c = nan ? 0xff800000u : (u == 0x80000000u ? 0u : u);
  return (c & 0x80000000u) ? ~c : (c | 0x80000000u);
}

//! Canonical processed logit: NaN -> -inf, -0 -> +0.
LMS_HD float canonical(float y) {
  if (is_nan(y)) return neg_inf();
  return y == 0.0f ? 0.0f : y;
}

//! ceil(p * w) for p in (0, 1) and w < 2^63, exactly (p's mantissa times w in 128 bits).
LMS_HD uint64_t ceil_fraction(float p, uint64_t w) {
  const uint32_t b = float_bits(p);
  const uint32_t be = (b >> 23) & 0xffu;
  const uint64_t mant = be ? ((b & 0x7fffffu) | 0x800000u) : (b & 0x7fffffu);
  const int shift = be ? 150 - static_cast<int>(be) : 149;  // p = mant * 2^-shift, shift >= 24
  const U128 prod = mul_u64(mant, w);                       // < 2^87
  if (prod.hi == 0 && prod.lo == 0) return 0;
  if (shift >= 88) return 1;  // 0 < p*w < 1
  uint64_t q;
  bool exact;
  if (shift >= 64) {
    q = prod.hi >> (shift - 64);
    exact = (prod.lo == 0) && ((prod.hi & ((uint64_t{1} << (shift - 64)) - 1)) == 0);
  } else {
    q = (prod.lo >> shift) | (prod.hi << (64 - shift));
    exact = (prod.lo & ((uint64_t{1} << shift) - 1)) == 0;
  }
  return exact ? q : q + 1;
}

//! Draw position in [0, total): floor(u * total / 2^64).
LMS_HD uint64_t scale_draw(uint64_t u, uint64_t total) { return mul_u64(u, total).hi; }

}  // namespace lmsample::core
