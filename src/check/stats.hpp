// Goodness-of-fit statistics for sampled frequencies.
#pragma once

#include <cstdint>
#include <vector>

namespace lmsample::check {

struct ChiSquare {
  double statistic = 0.0;
  int dof = 0;
  double p_value = 1.0;  //!< upper tail probability of the chi-square distribution
};

//! Pearson's chi-square test of `counts` (one per category) against probabilities `probs`
//! (summing to 1). Categories whose expected count is below `min_expected` are pooled into one.
ChiSquare chi_square_test(const std::vector<uint64_t>& counts, const std::vector<double>& probs,
                          double min_expected = 5.0);

//! Upper tail of the chi-square distribution with `dof` degrees of freedom at `x`.
double chi_square_upper_tail(double x, int dof);

}  // namespace lmsample::check
