// Speculative decoding's decisions in exact integer arithmetic (docs/contract.md, section 8),
// shared by every backend. Masses are the contract's fixed-point weights: the target's kept set
// w(x) with total Wp, the draft's v(x) with total Wq; products of a weight and a total are
// 128-bit (each < 2^63), and so are sums of V of them (< 2^126).
#pragma once

#include <cstdint>

#include "core/math.hpp"
#include "core/port.hpp"

namespace lmsample::core {

LMS_HD bool u128_less(const U128& a, const U128& b) {
  return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo);
}
LMS_HD U128 u128_add(const U128& a, const U128& b) {
  const uint64_t lo = a.lo + b.lo;
  return U128{a.hi + b.hi + (lo < a.lo ? 1u : 0u), lo};
}
LMS_HD U128 u128_sub(const U128& a, const U128& b) {  // a >= b
  return U128{a.hi - b.hi - (a.lo < b.lo ? 1u : 0u), a.lo - b.lo};
}
//! floor(u * x / 2^64) for a 128-bit x: below x, and each value of it for a share of the u.
LMS_HD U128 u128_scale(uint64_t u, const U128& x) {
  const U128 lo = mul_u64(u, x.lo);
  const U128 hi = mul_u64(u, x.hi);
  return u128_add(hi, U128{0, lo.hi});
}

//! Whether draft token d is accepted: with probability min(1, p(d) / q(d)), p(d) = w_d / Wp and
//! q(d) = v_d / Wq, from the uniform u: A = w_d Wq, D = v_d Wp; accepted where A >= D, else where
//! floor(u D / 2^64) < A (probability ceil(A 2^64 / D) / 2^64, within 2^-64 of A / D). A draft
//! of mass 0 (v_d = 0) is accepted where the target gives it mass.
LMS_HD bool accept_draft(uint64_t u, uint64_t w_d, uint64_t wp, uint64_t v_d, uint64_t wq) {
  if (v_d == 0) return w_d > 0;
  const U128 a = mul_u64(w_d, wq), d = mul_u64(v_d, wp);
  if (!u128_less(a, d)) return true;
  return u128_less(u128_scale(u, d), a);
}

//! The residual weight of token x after a rejection: max(0, w(x) Wq - v(x) Wp), 128-bit.
LMS_HD U128 residual_weight(uint64_t w_x, uint64_t wp, uint64_t v_x, uint64_t wq) {
  const U128 a = mul_u64(w_x, wq), d = mul_u64(v_x, wp);
  return u128_less(d, a) ? u128_sub(a, d) : U128{0, 0};
}

//! Whether residual_weight(w, wp, v, wq) is nonzero (w Wq > v Wp), the same answer from fp32
//! products wherever those differ by more than their rounding can move them, else from the
//! 128-bit products. wf and vf are w and v as floats (exact: weights below 2^40 with at most
//! 24 significant bits), wq_f and wp_f the totals as floats (within 2^-23). Each product is then
//! within 2^-22 of the exact one, so a gap of 2^-20 between them decides. This lets a GPU pass
//! test almost every token with a few float operations and no branch: residual_sign_fp32 is
//! 1 where the residual is positive for sure, -1 where it is 0, and 0 where the 128-bit
//! products must decide.
LMS_HD int residual_sign_fp32(float wf, float vf, float wq_f, float wp_f) {
  constexpr float kMargin = 1.00000095367431640625f;  // 1 + 2^-20
  const float a = mul_rn(wf, wq_f), d = mul_rn(vf, wp_f);
  const bool yes = wf > 0.0f && (vf == 0.0f || a > mul_rn(d, kMargin));
  const bool no = wf == 0.0f || d > mul_rn(a, kMargin);
  return yes ? 1 : no ? -1 : 0;
}
LMS_HD bool residual_positive(uint64_t w, uint64_t v, float wf, float vf, uint64_t wq, uint64_t wp,
                              float wq_f, float wp_f) {
  const int sign = residual_sign_fp32(wf, vf, wq_f, wp_f);
  if (sign != 0) return sign > 0;
  return u128_less(mul_u64(v, wp), mul_u64(w, wq));
}

//! A draft probability's fixed-point mass (q checked to be in [0, 1]): floor(q 2^39), exact.
LMS_HD uint64_t prob_weight(float q) { return static_cast<uint64_t>(mul_rn(q, 549755813888.0f)); }
//! Whether a draft probability is one (fp32 in [0, 1]; NaN is not).
LMS_HD bool prob_ok(float q) { return q >= 0.0f && q <= 1.0f; }

//! Substreams of a request's decisions (base: its RowParams substream): the token emitted at
//! position j (recovered after rejecting draft j, or the bonus at j = K) draws from base + 2 j,
//! the test of draft j from base + 2 j + 1 (mod 2^32). With K = 0 the bonus is sample()'s token.
LMS_HD uint32_t draw_substream(uint32_t base, int64_t j) {
  return base + 2u * static_cast<uint32_t>(j);
}
LMS_HD uint32_t accept_substream(uint32_t base, int64_t j) {
  return base + 2u * static_cast<uint32_t>(j) + 1u;
}

}  // namespace lmsample::core
