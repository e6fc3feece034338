// Key bounds of likelihood thresholds, for the GPU backend's candidate filters (min-p alone and
// the bucketed top-p threshold): which processed logits y can have a contract likelihood
// e = rel_likelihood(y, m, 1/T) at or above, or below, a bound. These are not the contract's
// arithmetic: a bound only chooses candidates, whose exact tests use core/math.hpp. They live in
// core/ so that the host tests (tests/test_core.cpp) check the margins the GPU relies on.
#pragma once

#include <cmath>

#include "core/math.hpp"

namespace lmsample::core {

//! How far in y a bound stays from m + T ln(e): far above the rounding of the contract's
//! likelihood (three roundings of relative error 2^-24 in (y - m) / T and an exp of relative
//! error below 2^-23: relative error below 5e-6 in e).
LMS_HD float likelihood_margin(float m, float t, float ln_e) {
  return 1e-3f * (1.0f + fabsf(m) + t * (fabsf(ln_e) + 1.0f));
}

//! A key below this one has a likelihood below e = exp(ln_e), e in (0, 1]: the key of
//! y = m + T ln(e) less the margin. 0 (no bound) where that y is not a finite number.
LMS_HD uint32_t key_floor_of_likelihood(float m, float t, float ln_e) {
  const float y = m + t * ln_e - likelihood_margin(m, t, ln_e);
  return is_finite(y) ? order_key(canonical(y)) : 0u;
}

//! A key above this one has a likelihood of at least e = exp(ln_e): the key of y = m + T ln(e)
//! plus the margin. UINT32_MAX (no bound) where e > 1 or that y is not a finite number.
LMS_HD uint32_t key_ceiling_of_likelihood(float m, float t, float ln_e) {
  const float y = m + t * ln_e + likelihood_margin(m, t, ln_e);
  return ln_e > 0.0f || !is_finite(y) ? UINT32_MAX : order_key(canonical(y));
}

//! Likelihood buckets of the GPU's top-p threshold: 8 per binade of e from 2^-30 up (bucket
//! b >= 1 holds the e whose float bits lie in [(b - 1 + 776) << 20, (b + 776) << 20); bucket 241
//! holds e = 1), bucket 0 everything below 2^-30. Non-decreasing in e, so in the key.
constexpr uint32_t kLikelihoodBucketBase = 776;  // (127 - 30) << 3
constexpr int kLikelihoodBucketShift = 20;
LMS_HD uint32_t likelihood_bucket(float e) {
  const uint32_t q = float_bits(e) >> kLikelihoodBucketShift;
  return q >= kLikelihoodBucketBase ? q - kLikelihoodBucketBase + 1 : 0u;
}
//! The likelihood at the lower edge of bucket b >= 1.
LMS_HD float likelihood_bucket_floor(uint32_t b) {
  return bits_float((b - 1 + kLikelihoodBucketBase) << kLikelihoodBucketShift);
}

}  // namespace lmsample::core
