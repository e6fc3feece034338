// Pearson's chi-square goodness-of-fit test with an accurate upper-tail p-value.
#include "check/stats.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace lmsample::check {
namespace {

constexpr int kMaxIterations = 100000;
constexpr double kEps = 1e-16;
constexpr double kTiny = 1e-300;

// Regularised lower incomplete gamma P(a, x) by its series, for x < a + 1:
// P(a, x) = e^-x x^a / Gamma(a) * sum_n x^n / (a (a+1) ... (a+n)).
double gamma_p_series(double a, double x) {
  double ap = a;
  double term = 1.0 / a;
  double sum = term;
  for (int n = 0; n < kMaxIterations; ++n) {
    ap += 1.0;
    term *= x / ap;
    sum += term;
    if (std::fabs(term) < std::fabs(sum) * kEps) break;
  }
  return sum * std::exp(-x + a * std::log(x) - std::lgamma(a));
}

// Regularised upper incomplete gamma Q(a, x) by its continued fraction (modified Lentz), for
// x >= a + 1: Q(a, x) = e^-x x^a / Gamma(a) * 1 / (x + 1 - a - 1 (1 - a) / (x + 3 - a - ...)).
double gamma_q_continued_fraction(double a, double x) {
  double b = x + 1.0 - a;
  double c = 1.0 / kTiny;
  double d = 1.0 / b;
  double h = d;
  for (int i = 1; i < kMaxIterations; ++i) {
    const double an = -i * (i - a);
    b += 2.0;
    d = an * d + b;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = b + an / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1.0) < kEps) break;
  }
  return std::exp(-x + a * std::log(x) - std::lgamma(a)) * h;
}

// Q(a, x) = 1 - P(a, x), each branch where it converges fast and without cancellation.
double gamma_q(double a, double x) {
  if (x <= 0.0) return 1.0;
  if (x < a + 1.0) return 1.0 - gamma_p_series(a, x);
  return gamma_q_continued_fraction(a, x);
}

}  // namespace

double chi_square_upper_tail(double x, int dof) {
  if (dof <= 0) return 1.0;
  if (std::isnan(x)) return 0.0;
  if (x == std::numeric_limits<double>::infinity()) return 0.0;
  return gamma_q(0.5 * dof, 0.5 * x);
}

ChiSquare chi_square_test(const std::vector<uint64_t>& counts, const std::vector<double>& probs,
                          double min_expected) {
  ChiSquare result;
  const size_t k = std::min(counts.size(), probs.size());
  double n = 0.0;
  for (size_t i = 0; i < k; ++i) n += static_cast<double>(counts[i]);
  if (n == 0.0) return result;

  // A count in a category of probability 0 is impossible under the hypothesis: reject outright.
  for (size_t i = 0; i < k; ++i) {
    if (probs[i] <= 0.0 && counts[i] > 0) {
      result.statistic = std::numeric_limits<double>::infinity();
      result.dof = 0;
      result.p_value = 0.0;
      return result;
    }
  }

  // Categories with enough expected count stay alone; the others are pooled into one. If the
  // pool is still too small it joins the smallest of the others.
  std::vector<double> expected;
  std::vector<double> observed;
  double pool_e = 0.0;
  double pool_o = 0.0;
  for (size_t i = 0; i < k; ++i) {
    const double e = n * probs[i];
    if (e <= 0.0) continue;
    if (e < min_expected) {
      pool_e += e;
      pool_o += static_cast<double>(counts[i]);
    } else {
      expected.push_back(e);
      observed.push_back(static_cast<double>(counts[i]));
    }
  }
  if (pool_e > 0.0) {
    if (pool_e >= min_expected || expected.empty()) {
      expected.push_back(pool_e);
      observed.push_back(pool_o);
    } else {
      const size_t smallest = static_cast<size_t>(
          std::min_element(expected.begin(), expected.end()) - expected.begin());
      expected[smallest] += pool_e;
      observed[smallest] += pool_o;
    }
  }

  double stat = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double diff = observed[i] - expected[i];
    stat += diff * diff / expected[i];
  }
  result.statistic = stat;
  result.dof = static_cast<int>(expected.size()) - 1;
  result.p_value = chi_square_upper_tail(stat, result.dof);
  return result;
}

}  // namespace lmsample::check
