// Goodness of fit: the tokens lmsample::sample (CPU backend) draws over N consecutive steps of one
// seed follow the contract's exact truncated distribution (reference_distribution), for many
// configurations. Seeds are fixed, so the outcome is deterministic: a pass never turns into a
// flake. Negative controls show that the test rejects distributions that are slightly wrong.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "check/reference.hpp"
#include "check/stats.hpp"
#include "core/math.hpp"
#include "core/philox.hpp"
#include "test_util.hpp"

using lmsample::DType;
using lmsample::check::chi_square_test;
using lmsample::check::ChiSquare;
using lmsample::check::RefDistribution;
using lmsample::check::reference_distribution;
using lmstest::Batch;
using lmstest::OutBuf;
using lmstest::Rng;
using lmstest::RowSpec;

namespace {

constexpr double kAlpha = 1e-4;  // pass threshold on the p-value
constexpr int kDraws = 20000;

enum class Vary { kStep, kSeed, kSubstream };

// Draws `n` tokens for `row`: n rows that differ only in step (or seed / substream).
std::vector<uint64_t> sample_counts(const RowSpec& row, DType dtype, int64_t vocab, int n,
                                    Vary vary = Vary::kStep) {
  std::vector<RowSpec> spec(static_cast<size_t>(n), row);
  for (int i = 0; i < n; ++i) {
    RowSpec& r = spec[static_cast<size_t>(i)];
    switch (vary) {
      case Vary::kStep:
        r.step = row.step + static_cast<uint64_t>(i);
        break;
      case Vary::kSeed:
        r.seed = row.seed + static_cast<uint64_t>(i);
        break;
      case Vary::kSubstream:
        r.substream = row.substream + static_cast<uint32_t>(i);
        break;
    }
  }
  Batch batch(dtype, vocab, std::move(spec));
  OutBuf out(n, 0);
  const lmsample::Status st = lmstest::run_cpu(batch.request(), out, 2);
  EXPECT_TRUE(st.ok()) << st.message;
  std::vector<uint64_t> counts(static_cast<size_t>(vocab), 0);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(out.status[static_cast<size_t>(i)], lmsample::kRowOk);
    const int32_t t = out.tokens[static_cast<size_t>(i)];
    EXPECT_TRUE(t >= 0 && t < vocab) << t;
    if (t >= 0 && t < vocab) ++counts[static_cast<size_t>(t)];
  }
  return counts;
}

// The contract's probabilities w_i / W over the whole vocabulary (0 outside the kept set).
std::vector<double> contract_probs(const RowSpec& row, DType dtype, int64_t vocab) {
  std::vector<RowSpec> spec{row};
  Batch batch(dtype, vocab, std::move(spec));
  const RefDistribution d = reference_distribution(batch.request(), 0);
  EXPECT_EQ(d.status, lmsample::kRowOk);
  std::vector<double> p(static_cast<size_t>(vocab), 0.0);
  for (size_t i = 0; i < d.ids.size(); ++i) {
    p[static_cast<size_t>(d.ids[i])] =
        static_cast<double>(d.weights[i]) / static_cast<double>(d.total);
  }
  return p;
}

struct Config {
  std::string name;
  int64_t vocab;
  DType dtype = DType::kFloat32;
  std::function<void(RowSpec&, Rng&)> setup;
  Vary vary = Vary::kStep;
};

RowSpec gaussian_row(Rng& rng, int64_t vocab, DType dtype, double sd) {
  RowSpec row;
  std::vector<float> x(static_cast<size_t>(vocab));
  for (float& xi : x) xi = static_cast<float>(rng.normal(0.0, sd));
  lmstest::set_logits(row, dtype, x);
  row.seed = rng.u64();
  row.step = rng.u64() >> 8;
  return row;
}

std::vector<Config> configs() {
  std::vector<Config> c;
  auto add = [&](std::string name, int64_t vocab, std::function<void(RowSpec&, Rng&)> f,
                 DType dtype = DType::kFloat32, Vary vary = Vary::kStep) {
    c.push_back(Config{std::move(name), vocab, dtype, std::move(f), vary});
  };
  add("plain_V8", 8, [](RowSpec&, Rng&) {});
  add("plain_V50", 50, [](RowSpec&, Rng&) {});
  add("plain_V200", 200, [](RowSpec&, Rng&) {});
  add("temp0_5", 64, [](RowSpec& r, Rng&) { r.temperature = 0.5f; });
  add("temp2", 64, [](RowSpec& r, Rng&) { r.temperature = 2.0f; });
  add("temp0_15", 64, [](RowSpec& r, Rng&) { r.temperature = 0.15f; });
  add("topk1", 30, [](RowSpec& r, Rng&) { r.top_k = 1; });
  add("topk3", 30, [](RowSpec& r, Rng&) { r.top_k = 3; });
  add("topk10_temp1_5", 120, [](RowSpec& r, Rng&) {
    r.top_k = 10;
    r.temperature = 1.5f;
  });
  add("topk_ties", 40, [](RowSpec& r, Rng&) {
    for (float& x : r.f32) x = std::round(x * 2.0f) / 2.0f;  // many ties at the k-th value
    r.top_k = 7;
  });
  add("topp0_5", 100, [](RowSpec& r, Rng&) { r.top_p = 0.5f; });
  add("topp0_9", 100, [](RowSpec& r, Rng&) { r.top_p = 0.9f; });
  add("topp0_99_temp0_7", 150, [](RowSpec& r, Rng&) {
    r.top_p = 0.99f;
    r.temperature = 0.7f;
  });
  add("topp_ties", 60, [](RowSpec& r, Rng&) {
    for (float& x : r.f32) x = std::round(x);
    r.top_p = 0.6f;
  });
  add("minp0_05", 100, [](RowSpec& r, Rng&) { r.min_p = 0.05f; });
  add("minp0_3_temp2", 100, [](RowSpec& r, Rng&) {
    r.min_p = 0.3f;
    r.temperature = 2.0f;
  });
  add("topk_topp_minp", 200, [](RowSpec& r, Rng&) {
    r.top_k = 40;
    r.top_p = 0.95f;
    r.min_p = 0.02f;
    r.temperature = 1.2f;
  });
  add("penalties", 80, [](RowSpec& r, Rng& rng) {
    r.repetition = 1.3f;
    r.frequency = 0.4f;
    r.presence = 0.6f;
    for (int i = 0; i < 30; ++i) r.prompt.push_back(static_cast<int32_t>(rng.range(0, 79)));
    for (int i = 0; i < 30; ++i) r.output.push_back(static_cast<int32_t>(rng.range(0, 15)));
  });
  add("negative_penalties", 50, [](RowSpec& r, Rng& rng) {
    r.repetition = 0.7f;
    r.frequency = -0.5f;
    r.presence = -1.0f;
    for (int i = 0; i < 20; ++i) r.output.push_back(static_cast<int32_t>(rng.range(0, 49)));
  });
  add("bias", 60, [](RowSpec& r, Rng& rng) {
    for (int i = 0; i < 10; ++i)
      r.bias.emplace_back(static_cast<int32_t>(rng.range(0, 59)),
                          static_cast<float>(rng.uniform(-3, 3)));
    r.bias.emplace_back(3, -std::numeric_limits<float>::infinity());  // banned by bias
  });
  add("mask", 96, [](RowSpec& r, Rng& rng) {
    r.mask.assign(3, 0u);
    for (int t = 0; t < 96; ++t) {
      if (rng.chance(0.4)) r.mask[static_cast<size_t>(t / 32)] |= 1u << (t % 32);
    }
    r.mask[0] &= ~1u;
    r.f32[0] = 100.0f;  // the best token is masked: must never be drawn
  });
  add("mask_bias_penalty_topk", 128, [](RowSpec& r, Rng& rng) {
    r.mask.assign(4, 0u);
    for (int t = 0; t < 128; ++t) {
      if (rng.chance(0.7)) r.mask[static_cast<size_t>(t / 32)] |= 1u << (t % 32);
    }
    for (int i = 0; i < 8; ++i) r.bias.emplace_back(static_cast<int32_t>(rng.range(0, 127)), 2.0f);
    r.repetition = 1.5f;
    for (int i = 0; i < 10; ++i) r.prompt.push_back(static_cast<int32_t>(rng.range(0, 127)));
    r.top_k = 25;
    r.top_p = 0.97f;
  });
  add("posinf_uniform", 40, [](RowSpec& r, Rng&) {
    for (const int t : {2, 9, 10, 33, 39})
      r.f32[static_cast<size_t>(t)] = std::numeric_limits<float>::infinity();
    r.top_k = 1;  // filters do not change the +inf case
  });
  add(
      "bf16_ties", 100, [](RowSpec& r, Rng&) { r.top_p = 0.8f; }, DType::kBFloat16);
  add(
      "f16", 100, [](RowSpec& r, Rng&) { r.min_p = 0.01f; }, DType::kFloat16);
  add(
      "vary_seed", 50, [](RowSpec& r, Rng&) { r.top_k = 20; }, DType::kFloat32, Vary::kSeed);
  add(
      "vary_substream", 50, [](RowSpec& r, Rng&) { r.temperature = 0.8f; }, DType::kFloat32,
      Vary::kSubstream);
  return c;
}

class Statistics : public ::testing::TestWithParam<Config> {};

}  // namespace

TEST_P(Statistics, GoodnessOfFit) {
  const Config& cfg = GetParam();
  uint64_t name_hash = 1469598103934665603ull;  // FNV-1a: a seed per configuration
  for (const char ch : cfg.name)
    name_hash = (name_hash ^ static_cast<unsigned char>(ch)) * 1099511628211ull;
  Rng rng(name_hash);
  RowSpec row = gaussian_row(rng, cfg.vocab, DType::kFloat32, 2.0);
  cfg.setup(row, rng);
  const std::vector<float> x = row.f32;
  lmstest::set_logits(row, cfg.dtype, x);
  const std::vector<double> probs = contract_probs(row, cfg.dtype, cfg.vocab);
  const std::vector<uint64_t> counts = sample_counts(row, cfg.dtype, cfg.vocab, kDraws, cfg.vary);
  // Tokens outside the kept set (masked, truncated, banned) are never drawn.
  for (int64_t t = 0; t < cfg.vocab; ++t) {
    if (probs[static_cast<size_t>(t)] == 0.0) {
      EXPECT_EQ(counts[static_cast<size_t>(t)], 0u) << "token " << t << " is outside the kept set";
    }
  }
  if (!row.mask.empty()) {
    for (int64_t t = 0; t < cfg.vocab; ++t) {
      if (((row.mask[static_cast<size_t>(t / 32)] >> (t % 32)) & 1u) == 0) {
        EXPECT_EQ(counts[static_cast<size_t>(t)], 0u) << "masked token " << t << " drawn";
      }
    }
  }
  const ChiSquare r = chi_square_test(counts, probs);
  RecordProperty("p_value", std::to_string(r.p_value));
  EXPECT_GT(r.p_value, kAlpha) << cfg.name << ": chi2 = " << r.statistic << ", dof = " << r.dof;
}

INSTANTIATE_TEST_SUITE_P(Configs, Statistics, ::testing::ValuesIn(configs()),
                         [](const auto& param_info) { return param_info.param.name; });

// ---- negative controls: the test has the power to see small errors ----

namespace {

// Draws n tokens from arbitrary probabilities with the contract's own generator (an independent
// inverse-CDF sampler), so that counts of a deliberately wrong distribution can be produced.
std::vector<uint64_t> draw_from(const std::vector<double>& probs, int n, uint64_t seed) {
  std::vector<uint64_t> w(probs.size());
  uint64_t total = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    w[i] = static_cast<uint64_t>(std::floor(probs[i] * 1099511627776.0));  // 2^40
    total += w[i];
  }
  std::vector<uint64_t> counts(probs.size(), 0);
  for (int s = 0; s < n; ++s) {
    const uint64_t t = lmsample::core::scale_draw(
        lmsample::core::row_uniform64(seed, static_cast<uint64_t>(s), 0), total);
    uint64_t acc = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      acc += w[i];
      if (acc > t) {
        ++counts[i];
        break;
      }
    }
  }
  return counts;
}

}  // namespace

TEST(StatisticsPower, RejectsWronglyTruncatedOrTempered) {
  Rng rng(4242);
  const int64_t vocab = 100;
  const RowSpec base = gaussian_row(rng, vocab, DType::kFloat32, 2.0);
  auto probs_with = [&](const std::function<void(RowSpec&)>& f) {
    RowSpec r = base;
    f(r);
    return contract_probs(r, DType::kFloat32, vocab);
  };
  const std::vector<double> right = probs_with([](RowSpec& r) {
    r.top_k = 20;
    r.temperature = 1.0f;
  });

  // The independent sampler on the right distribution passes (the harness is not biased) ...
  EXPECT_GT(chi_square_test(draw_from(right, kDraws, 1), right).p_value, kAlpha);

  // ... and the same sampler on slightly wrong distributions is rejected.
  const std::vector<std::pair<const char*, std::vector<double>>> wrong = {
      {"top-k 19 instead of 20", probs_with([](RowSpec& r) { r.top_k = 19; })},
      {"top-k 21 instead of 20", probs_with([](RowSpec& r) { r.top_k = 21; })},
      {"temperature 1.2 instead of 1", probs_with([](RowSpec& r) {
         r.top_k = 20;
         r.temperature = 1.2f;
       })},
      {"top-p 0.97 on top of top-k 20", probs_with([](RowSpec& r) {
         r.top_k = 20;
         r.top_p = 0.97f;
       })},
  };
  for (const auto& [what, probs] : wrong) {
    const ChiSquare r = chi_square_test(draw_from(probs, kDraws, 1), right);
    std::printf("%s: p = %.3g\n", what, r.p_value);
    EXPECT_LT(r.p_value, 1e-6) << what << ": chi2 = " << r.statistic << ", dof = " << r.dof;
  }

  // And the real sampler's counts are rejected against the wrong distributions.
  RowSpec sampled = base;
  sampled.top_k = 20;
  const std::vector<uint64_t> counts = sample_counts(sampled, DType::kFloat32, vocab, kDraws);
  EXPECT_GT(chi_square_test(counts, right).p_value, kAlpha);
  for (const auto& [what, probs] : wrong) {
    EXPECT_LT(chi_square_test(counts, probs).p_value, 1e-6) << "sampled counts vs " << what;
  }
}

TEST(StatisticsPower, RejectsAnOffByOneDraw) {
  // A sampler that picks the token after the right one (a classic inverse-CDF off-by-one, e.g.
  // ">= t" instead of "> t" shifted by one token) is rejected.
  Rng rng(4343);
  const int64_t vocab = 30;
  const RowSpec base = gaussian_row(rng, vocab, DType::kFloat32, 1.0);
  const std::vector<double> right = contract_probs(base, DType::kFloat32, vocab);
  std::vector<double> shifted(right.size(), 0.0);
  for (size_t i = 0; i < right.size(); ++i) shifted[(i + 1) % right.size()] = right[i];
  EXPECT_LT(chi_square_test(draw_from(shifted, kDraws, 2), right).p_value, 1e-6);
}
