// docs/contract.md sections 3 (special rows) and 6 (parameters and errors), case by case, on the
// CPU backend; each expectation is stated from the contract, not from the reference.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "core/math.hpp"
#include "test_util.hpp"

using lmsample::Code;
using lmsample::DType;
using lmstest::Batch;
using lmstest::kInf;
using lmstest::kNaN;
using lmstest::OutBuf;
using lmstest::RowSpec;

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

RowSpec row_of(std::vector<float> x) {
  RowSpec r;
  r.f32 = std::move(x);
  return r;
}

// Runs one batch of rows (f32) and returns the outputs.
OutBuf run(std::vector<RowSpec> rows, int64_t vocab, int32_t top = 0,
           lmsample::Status* status = nullptr, DType dtype = DType::kFloat32) {
  const auto b = static_cast<int64_t>(rows.size());
  Batch batch(dtype, vocab, std::move(rows), top);
  OutBuf out(b, top);
  const lmsample::Status st = lmstest::run_cpu(batch.request(), out, 2);
  if (status) *status = st;
  return out;
}

void expect_empty_like(const OutBuf& out, int64_t r, int32_t status) {
  const auto i = static_cast<size_t>(r);
  EXPECT_EQ(out.status[i], status) << "row " << r;
  EXPECT_EQ(out.tokens[i], -1) << "row " << r;
  EXPECT_EQ(out.kept[i], 0) << "row " << r;
  EXPECT_EQ(out.logprob[i], kNegInf) << "row " << r;
  for (int32_t j = 0; j < out.n_top; ++j) {
    EXPECT_EQ(out.top_ids[static_cast<size_t>(r * out.n_top + j)], -1) << "row " << r;
    EXPECT_EQ(out.top_logprobs[static_cast<size_t>(r * out.n_top + j)], kNegInf) << "row " << r;
  }
}

std::vector<float> ramp(int64_t v, float scale = 0.01f) {
  std::vector<float> x(static_cast<size_t>(v));
  for (int64_t i = 0; i < v; ++i)
    x[static_cast<size_t>(i)] = static_cast<float>((i * 7919) % 1000) * scale;
  return x;
}

}  // namespace

// ---- section 3: special rows ----

TEST(EdgeEmpty, AllNegInfAllNanAllMasked) {
  const int64_t v = 100;
  std::vector<RowSpec> rows;
  rows.push_back(row_of(std::vector<float>(v, kNegInf)));  // all -inf
  rows.push_back(row_of(std::vector<float>(v, kNaN)));     // all NaN
  RowSpec masked = row_of(ramp(v));
  masked.mask.assign(4, 0u);  // nothing allowed
  rows.push_back(masked);
  RowSpec mixed = row_of(std::vector<float>(v, kNegInf));  // NaN / -inf, the rest masked
  mixed.f32[3] = kNaN;
  mixed.f32[50] = 4.0f;
  mixed.mask.assign(4, 0xffffffffu);
  mixed.mask[1] &= ~(1u << (50 - 32));
  rows.push_back(mixed);
  RowSpec greedy = row_of(std::vector<float>(v, kNaN));  // greedy does not change EMPTY
  greedy.temperature = 0.0f;
  rows.push_back(greedy);
  rows.push_back(row_of(ramp(v)));  // a normal row in between
  lmsample::Status st;
  const OutBuf out = run(rows, v, 4, &st);
  EXPECT_EQ(st.code, Code::kOk) << st.message;  // EMPTY is not a parameter error
  for (int64_t r = 0; r < 5; ++r) expect_empty_like(out, r, lmsample::kRowEmpty);
  EXPECT_EQ(out.status[5], lmsample::kRowOk);
}

TEST(EdgeEmpty, LargeVocabularyAndVocabOne) {
  lmsample::Status st;
  OutBuf out = run({row_of(std::vector<float>(151936, kNegInf))}, 151936, 2, &st);
  EXPECT_EQ(st.code, Code::kOk);
  expect_empty_like(out, 0, lmsample::kRowEmpty);
  out = run({row_of({kNaN}), row_of({kNegInf})}, 1, 1, &st);
  expect_empty_like(out, 0, lmsample::kRowEmpty);
  expect_empty_like(out, 1, lmsample::kRowEmpty);
}

TEST(EdgeVocabOne, TheOnlyToken) {
  std::vector<RowSpec> rows;
  for (const float x : {0.0f, -3.0f, 1e30f, -1e30f}) {
    for (const float t : {0.0f, 1.0f, 0.01f}) {
      RowSpec r = row_of({x});
      r.temperature = t;
      r.top_k = 1;
      r.top_p = 0.01f;
      r.min_p = 1.0f;
      r.seed = 5;
      rows.push_back(r);
    }
  }
  const auto n = static_cast<int64_t>(rows.size());
  const OutBuf out = run(rows, 1, 3);
  for (int64_t r = 0; r < n; ++r) {
    const auto i = static_cast<size_t>(r);
    EXPECT_EQ(out.status[i], lmsample::kRowOk);
    EXPECT_EQ(out.tokens[i], 0);
    EXPECT_EQ(out.kept[i], 1);
    EXPECT_NEAR(out.logprob[i], 0.0f, 1e-6f) << "log_softmax of a single token is 0";
    EXPECT_EQ(out.top_ids[i * 3], 0);
    EXPECT_NEAR(out.top_logprobs[i * 3], 0.0f, 1e-6f);
    EXPECT_EQ(out.top_ids[i * 3 + 1], -1);
    EXPECT_EQ(out.top_logprobs[i * 3 + 2], kNegInf);
  }
  // +inf as the only token
  const OutBuf inf = run({row_of({kInf})}, 1, 1);
  EXPECT_EQ(inf.tokens[0], 0);
  EXPECT_EQ(inf.kept[0], 1);
  EXPECT_EQ(inf.logprob[0], 0.0f);
}

TEST(EdgeNan, NanTokensAreNeverDrawn) {
  // Every token NaN but one: that token, for every step; logprob 0 (it is the only valid one).
  const int64_t v = 64;
  std::vector<RowSpec> rows;
  for (int s = 0; s < 50; ++s) {
    RowSpec r = row_of(std::vector<float>(v, kNaN));
    r.f32[37] = -2.0f;
    r.step = static_cast<uint64_t>(s);
    rows.push_back(r);
  }
  const OutBuf out = run(rows, v, 2);
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_EQ(out.tokens[i], 37);
    ASSERT_EQ(out.kept[i], 1);
    ASSERT_NEAR(out.logprob[i], 0.0f, 1e-6f);
    ASSERT_EQ(out.top_ids[i * 2 + 1], -1);  // NaN tokens are not listed
  }
}

TEST(EdgePosInf, UniformOverInfTokens) {
  const int64_t v = 50;
  const std::vector<int32_t> inf_ids = {4, 11, 12, 40};
  std::vector<RowSpec> rows;
  for (int s = 0; s < 400; ++s) {
    RowSpec r = row_of(ramp(v, 1.0f));
    r.f32[30] = 1e38f;
    r.f32[31] = kNaN;
    for (const int32_t t : inf_ids) r.f32[static_cast<size_t>(t)] = kInf;
    r.step = static_cast<uint64_t>(s);
    r.seed = 77;
    // filters do not change the +inf case
    r.top_k = s % 4 == 1 ? 1 : 0;
    r.top_p = s % 4 == 2 ? 1e-6f : 1.0f;
    r.min_p = s % 4 == 3 ? 1.0f : 0.0f;
    rows.push_back(r);
  }
  const OutBuf out = run(rows, v, 6);
  std::multiset<int32_t> seen;
  const float lp = static_cast<float>(-std::log(4.0));
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_EQ(out.status[i], lmsample::kRowOk);
    ASSERT_TRUE(std::find(inf_ids.begin(), inf_ids.end(), out.tokens[i]) != inf_ids.end())
        << out.tokens[i];
    ASSERT_EQ(out.kept[i], 4);
    ASSERT_EQ(out.logprob[i], lp);
    // top logprobs: the +inf tokens in id order, -log 4 each; then the finite ones, at -inf
    for (size_t j = 0; j < 4; ++j) {
      ASSERT_EQ(out.top_ids[i * 6 + j], inf_ids[j]);
      ASSERT_EQ(out.top_logprobs[i * 6 + j], lp);
    }
    ASSERT_EQ(out.top_ids[i * 6 + 4], 30);  // the largest finite logit
    ASSERT_EQ(out.top_logprobs[i * 6 + 4], kNegInf);
    seen.insert(out.tokens[i]);
  }
  for (const int32_t t : inf_ids) {
    EXPECT_GT(seen.count(t), 60u) << "token " << t << " drawn " << seen.count(t) << " times of 400";
  }
}

TEST(EdgePosInf, GreedyTakesLowestInfId) {
  RowSpec r = row_of(ramp(20));
  r.f32[13] = kInf;
  r.f32[6] = kInf;
  r.f32[19] = kInf;
  r.temperature = 0.0f;
  const OutBuf out = run({r}, 20, 0);
  EXPECT_EQ(out.tokens[0], 6);
  EXPECT_EQ(out.kept[0], 1);
  EXPECT_EQ(out.logprob[0], static_cast<float>(-std::log(3.0)));
}

TEST(EdgePosInf, FromBiasAndNotThroughMask) {
  // A +inf bias makes a +inf token; on a disallowed token it has no effect.
  RowSpec a = row_of(ramp(10));
  a.bias = {{7, kInf}};
  RowSpec b = row_of(ramp(10));
  b.mask = {1u};  // only token 0 allowed
  b.bias = {{3, kInf}, {5, 1.0f}};
  const OutBuf out = run({a, b}, 10, 0);
  EXPECT_EQ(out.tokens[0], 7);
  EXPECT_EQ(out.kept[0], 1);
  EXPECT_EQ(out.tokens[1], 0);
  EXPECT_EQ(out.kept[1], 1);
  EXPECT_NEAR(out.logprob[1], 0.0f, 1e-6f);
}

TEST(EdgeGreedy, TiesGoToLowestId) {
  std::vector<RowSpec> rows;
  for (int s = 0; s < 20; ++s) {
    RowSpec r = row_of({1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 3.0f});
    r.temperature = 0.0f;
    r.step = static_cast<uint64_t>(s);
    r.seed = static_cast<uint64_t>(s) * 1000003u;
    rows.push_back(r);
  }
  RowSpec zeros = row_of({-0.0f, 0.0f, -0.0f});  // -0 and +0 are the same processed logit
  zeros.temperature = 0.0f;
  RowSpec zeros2 = row_of({-1.0f, -0.0f, 0.0f});
  zeros2.temperature = 0.0f;
  const OutBuf out = run(rows, 6, 0);
  for (int s = 0; s < 20; ++s) {
    EXPECT_EQ(out.tokens[static_cast<size_t>(s)], 1);
    EXPECT_EQ(out.kept[static_cast<size_t>(s)], 1);
  }
  const OutBuf z = run({zeros, zeros2}, 3, 0);
  EXPECT_EQ(z.tokens[0], 0);
  EXPECT_EQ(z.tokens[1], 1);
  // bf16 logits with many ties: the lowest id of the maximum
  RowSpec h;
  h.h16 = {lmstest::float_to_bf16(1.0f), lmstest::float_to_bf16(2.0f), lmstest::float_to_bf16(2.0f),
           lmstest::float_to_bf16(2.0f)};
  h.temperature = 0.0f;
  const OutBuf hb = run({h}, 4, 0, nullptr, DType::kBFloat16);
  EXPECT_EQ(hb.tokens[0], 1);
}

TEST(EdgeGreedy, NegativeZeroTiesInSampling) {
  // -0 and +0 canonicalise to one value: equal weights, both kept by a tie-closed top-k 1.
  std::vector<RowSpec> rows;
  for (int s = 0; s < 200; ++s) {
    RowSpec r = row_of({-0.0f, 0.0f, -5.0f});
    r.top_k = 1;
    r.step = static_cast<uint64_t>(s);
    rows.push_back(r);
  }
  const OutBuf out = run(rows, 3, 0);
  int zeros = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_EQ(out.kept[i], 2);
    ASSERT_TRUE(out.tokens[i] == 0 || out.tokens[i] == 1);
    zeros += out.tokens[i] == 0;
  }
  EXPECT_GT(zeros, 60);
  EXPECT_LT(zeros, 140);
}

TEST(EdgeFilters, OffValuesChangeNothing) {
  // k = 0, k >= V, k >= valid tokens, p >= 1, min_p = 0: the same outputs as no filter at all.
  const int64_t v = 300;
  std::vector<RowSpec> base_rows, off_rows;
  lmstest::Rng rng(3);
  for (int s = 0; s < 60; ++s) {
    RowSpec r = row_of(lmstest::random_logits(rng, v));
    r.seed = rng.u64();
    r.step = static_cast<uint64_t>(s);
    r.temperature = 0.8f;
    if (s % 6 == 5) {  // only 100 valid tokens: k = 100 is off, too
      r.mask.assign(10, 0u);
      for (int t = 0; t < 100; ++t) r.mask[static_cast<size_t>(t * 3 / 32)] |= 1u << ((t * 3) % 32);
    }
    base_rows.push_back(r);
    RowSpec o = r;
    switch (s % 6) {
      case 0:
        o.top_k = 0;
        break;
      case 1:
        o.top_k = static_cast<int32_t>(v);
        break;
      case 2:
        o.top_k = std::numeric_limits<int32_t>::max();
        break;
      case 3:
        o.top_p = s % 12 == 3 ? 1.0f : kInf;
        break;
      case 4:
        o.top_p = 1.5f;
        o.min_p = 0.0f;
        break;
      default:
        o.top_k = 100;
        break;
    }
    off_rows.push_back(o);
  }
  const OutBuf a = run(base_rows, v, 3), b = run(off_rows, v, 3);
  EXPECT_EQ(lmstest::first_difference(b, a, "filter off", "no filter"), "");
  for (size_t i = 0; i < base_rows.size(); ++i) {
    const int32_t expected_kept = i % 6 == 5 ? 100 : static_cast<int32_t>(v);
    EXPECT_EQ(a.kept[i], expected_kept) << i;
  }
}

TEST(EdgeFilters, KeptSizesWithTies) {
  // y = [5, 5, 5, 4, 4, 3, 2, 1]: top-k keeps every token tied with the k-th value.
  const std::vector<float> x = {5, 5, 5, 4, 4, 3, 2, 1};
  auto kept_with = [&](int32_t k, float p, float min_p, float t = 1.0f) {
    RowSpec r = row_of(x);
    r.top_k = k;
    r.top_p = p;
    r.min_p = min_p;
    r.temperature = t;
    const OutBuf out = run({r}, 8, 0);
    EXPECT_EQ(out.status[0], lmsample::kRowOk);
    return out.kept[0];
  };
  EXPECT_EQ(kept_with(1, 1.0f, 0.0f), 3);
  EXPECT_EQ(kept_with(3, 1.0f, 0.0f), 3);
  EXPECT_EQ(kept_with(4, 1.0f, 0.0f), 5);
  EXPECT_EQ(kept_with(5, 1.0f, 0.0f), 5);
  EXPECT_EQ(kept_with(6, 1.0f, 0.0f), 6);
  EXPECT_EQ(kept_with(7, 1.0f, 0.0f), 7);
  EXPECT_EQ(kept_with(8, 1.0f, 0.0f), 8);    // k = V: off
  EXPECT_EQ(kept_with(0, 1e-30f, 0.0f), 3);  // tiny p: the maximum, closed under ties
  EXPECT_EQ(kept_with(0, 0.5f, 0.0f), 3);    // the three 5s hold ~0.7 of the mass
  EXPECT_EQ(kept_with(0, 1.0f, 1.0f), 3);    // min_p = 1: the maximum and its ties
  EXPECT_EQ(kept_with(0, 1.0f, 0.3f), 5);    // e = exp(-1) = 0.37 >= 0.3 for the 4s
  EXPECT_EQ(kept_with(0, 1.0f, 0.4f), 3);
  EXPECT_EQ(kept_with(5, 1e-30f, 0.0f), 3);       // the strictest filter wins
  EXPECT_EQ(kept_with(0, 1.0f, 0.0f, 1e-3f), 8);  // weight-0 tokens stay in the kept set
  // top-p by the exact fixed-point rule: weights 2^39 * (1, 1, 1, e^-1, e^-1, ...): p such that
  // p * W falls just above 3 * 2^39 needs one more tied group.
  EXPECT_EQ(kept_with(0, 0.999999f, 0.0f), 8);
}

TEST(EdgeFilters, TopKIgnoresInvalidTokens) {
  // k counts valid tokens only: 5 valid tokens (the rest masked) and k = 5 is off; k = 4 is on.
  std::vector<float> x = ramp(64);
  RowSpec r = row_of(x);
  r.mask = {0x1fu, 0u};  // tokens 0..4
  RowSpec r4 = r, r5 = r;
  r4.top_k = 4;
  r5.top_k = 5;
  const OutBuf out = run({r4, r5}, 64, 0);
  EXPECT_EQ(out.kept[0], 4);
  EXPECT_EQ(out.kept[1], 5);
  EXPECT_LT(out.tokens[1], 5);
}

TEST(EdgeProcessing, BiasInOrderAndPenalties) {
  // bias entries for one token are added one after another in the order given
  RowSpec ordered = row_of({0.0f, 0.5f});
  ordered.bias = {{0, 1e8f}, {0, -1e8f}, {0, 1.0f}};  // ((0 + 1e8) - 1e8) + 1 = 1
  ordered.temperature = 0.0f;
  RowSpec reordered = row_of({0.0f, 0.5f});
  reordered.bias = {{0, 1.0f}, {0, 1e8f}, {0, -1e8f}};  // ((0 + 1) + 1e8) - 1e8 = 0
  reordered.temperature = 0.0f;
  // repetition: y / r for y > 0, y * r otherwise; prompt or output makes a token "seen"
  RowSpec rep_pos = row_of({2.0f, 1.5f});
  rep_pos.repetition = 2.0f;
  rep_pos.prompt = {0};
  rep_pos.temperature = 0.0f;
  RowSpec rep_neg = row_of({-1.0f, -1.5f});
  rep_neg.repetition = 2.0f;
  rep_neg.output = {0};
  rep_neg.temperature = 0.0f;
  // frequency per occurrence in the output, presence once; the prompt does not count
  RowSpec freq = row_of({2.0f, 1.45f, 1.0f});
  freq.frequency = 0.2f;
  freq.output = {0, 0};
  freq.prompt = {0, 0, 0, 0, 0};
  freq.temperature = 0.0f;  // 2 - 0.4 = 1.6 > 1.45: still token 0
  RowSpec freq3 = freq;
  freq3.output = {0, 0, 0};  // 2 - 0.6 = 1.4 < 1.45: token 1
  RowSpec pres = row_of({2.0f, 1.45f, 1.0f});
  pres.presence = 0.6f;  // 2 - 0.6 = 1.4 < 1.45
  pres.output = {0};
  pres.prompt = {1};  // the prompt gets no presence penalty
  pres.temperature = 0.0f;
  EXPECT_EQ(run({ordered}, 2, 0).tokens[0], 0);
  EXPECT_EQ(run({reordered}, 2, 0).tokens[0], 1);
  EXPECT_EQ(run({rep_pos}, 2, 0).tokens[0], 1);
  EXPECT_EQ(run({rep_neg}, 2, 0).tokens[0], 1);
  EXPECT_EQ(run({freq}, 3, 0).tokens[0], 0);
  EXPECT_EQ(run({freq3}, 3, 0).tokens[0], 1);
  EXPECT_EQ(run({pres}, 3, 0).tokens[0], 1);
}

TEST(EdgeProcessing, LogprobsIgnoreTemperatureAndFilters) {
  // logprob is log_softmax(y) at T = 1 whatever T, k, p, min_p.
  const std::vector<float> x = {1.0f, 2.0f, 3.0f, 0.5f};
  double norm = 0.0;
  for (const float v : x) norm += std::exp(static_cast<double>(v) - 3.0);
  std::vector<RowSpec> rows;
  for (int i = 0; i < 4; ++i) {
    RowSpec r = row_of(x);
    r.temperature = std::vector<float>{0.0f, 0.3f, 5.0f, 1.0f}[static_cast<size_t>(i)];
    r.top_k = i == 3 ? 1 : 0;
    r.top_p = i == 1 ? 0.5f : 1.0f;
    r.step = static_cast<uint64_t>(i);
    rows.push_back(r);
  }
  const OutBuf out = run(rows, 4, 4);
  for (size_t i = 0; i < rows.size(); ++i) {
    const int32_t t = out.tokens[i];
    ASSERT_GE(t, 0);
    EXPECT_NEAR(out.logprob[i],
                static_cast<double>(x[static_cast<size_t>(t)]) - 3.0 - std::log(norm), 2e-6);
    const std::vector<int32_t> order = {2, 1, 0, 3};
    for (size_t j = 0; j < 4; ++j) {
      EXPECT_EQ(out.top_ids[i * 4 + j], order[j]);
      EXPECT_NEAR(out.top_logprobs[i * 4 + j],
                  static_cast<double>(x[static_cast<size_t>(order[j])]) - 3.0 - std::log(norm),
                  2e-6);
    }
  }
}

TEST(EdgeProcessing, TopLogprobsPadAndTieOrder) {
  // 3 valid tokens of 6 (two -inf, one NaN), top 5: ties by lower id, then -1 / -inf padding.
  RowSpec r = row_of({2.0f, kNegInf, 2.0f, kNaN, 1.0f, kNegInf});
  const OutBuf out = run({r}, 6, 5);
  const std::vector<int32_t> ids = {0, 2, 4, -1, -1};
  for (size_t j = 0; j < 5; ++j) EXPECT_EQ(out.top_ids[j], ids[j]) << j;
  EXPECT_EQ(out.top_logprobs[0], out.top_logprobs[1]);
  EXPECT_EQ(out.top_logprobs[3], kNegInf);
  EXPECT_EQ(out.top_logprobs[4], kNegInf);
}

TEST(EdgeProcessing, OptionalOutputsMayBeNull) {
  lmstest::Rng rng(8);
  std::vector<RowSpec> rows;
  for (int i = 0; i < 20; ++i) rows.push_back(lmstest::random_row(rng, DType::kFloat32, 500));
  Batch batch(DType::kFloat32, 500, rows, 0);
  OutBuf full(20, 0), bare(20, 0);
  lmstest::run_cpu(batch.request(), full, 2);
  lmsample::Outputs o = bare.outputs();
  o.logprob = nullptr;
  o.kept = nullptr;
  lmsample::ExecConfig cfg;
  const size_t bytes = lmsample::workspace_size(batch.request(), cfg);
  std::vector<unsigned char> ws(bytes + 1);
  lmsample::sample(batch.request(), o, ws.data(), bytes, cfg);
  EXPECT_EQ(bare.tokens, full.tokens);
  EXPECT_EQ(bare.status, full.status);
  for (const float lp : bare.logprob)
    EXPECT_EQ(lmstest::bits_of(lp), lmstest::bits_of(OutBuf::kPoisonF));
}

TEST(EdgeProcessing, TinyTemperature) {
  // T = 1e-30: inv_t = 1e30; every token below the maximum has weight 0 and is never drawn, but
  // stays in the kept set.
  std::vector<RowSpec> rows;
  for (int s = 0; s < 50; ++s) {
    RowSpec r = row_of({1.0f, 3.0f, 2.9999998f, 3.0f, -1.0f});
    r.temperature = 1e-30f;
    r.step = static_cast<uint64_t>(s);
    rows.push_back(r);
  }
  const OutBuf out = run(rows, 5, 0);
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_TRUE(out.tokens[i] == 1 || out.tokens[i] == 3) << out.tokens[i];
    ASSERT_EQ(out.kept[i], 5);
  }
}

// ---- section 6: parameters and errors ----

TEST(EdgeParams, EachInvalidParameter) {
  struct Bad {
    const char* name;  // must appear in the message
    int32_t status;
    void (*set)(RowSpec&);
  };
  const Bad bads[] = {
      {"temperature", lmsample::kRowBadTemperature, [](RowSpec& r) { r.temperature = -0.5f; }},
      {"temperature", lmsample::kRowBadTemperature, [](RowSpec& r) { r.temperature = kNaN; }},
      {"temperature", lmsample::kRowBadTemperature, [](RowSpec& r) { r.temperature = kInf; }},
      {"top_k", lmsample::kRowBadTopK, [](RowSpec& r) { r.top_k = -1; }},
      {"top_p", lmsample::kRowBadTopP, [](RowSpec& r) { r.top_p = 0.0f; }},
      {"top_p", lmsample::kRowBadTopP, [](RowSpec& r) { r.top_p = -0.5f; }},
      {"top_p", lmsample::kRowBadTopP, [](RowSpec& r) { r.top_p = kNaN; }},
      {"min_p", lmsample::kRowBadMinP, [](RowSpec& r) { r.min_p = -0.01f; }},
      {"min_p", lmsample::kRowBadMinP, [](RowSpec& r) { r.min_p = 1.01f; }},
      {"min_p", lmsample::kRowBadMinP, [](RowSpec& r) { r.min_p = kNaN; }},
      {"repetition_penalty", lmsample::kRowBadRepetitionPenalty,
       [](RowSpec& r) { r.repetition = 0.0f; }},
      {"repetition_penalty", lmsample::kRowBadRepetitionPenalty,
       [](RowSpec& r) { r.repetition = -1.0f; }},
      {"repetition_penalty", lmsample::kRowBadRepetitionPenalty,
       [](RowSpec& r) { r.repetition = kInf; }},
      {"repetition_penalty", lmsample::kRowBadRepetitionPenalty,
       [](RowSpec& r) { r.repetition = kNaN; }},
      {"frequency_penalty", lmsample::kRowBadFrequencyPenalty,
       [](RowSpec& r) { r.frequency = 2.01f; }},
      {"frequency_penalty", lmsample::kRowBadFrequencyPenalty,
       [](RowSpec& r) { r.frequency = kNaN; }},
      {"presence_penalty", lmsample::kRowBadPresencePenalty,
       [](RowSpec& r) { r.presence = -2.5f; }},
      {"presence_penalty", lmsample::kRowBadPresencePenalty, [](RowSpec& r) { r.presence = kNaN; }},
  };
  const int64_t v = 40;
  for (const Bad& bad : bads) {
    // rows 0..2 good, row 3 bad, row 4 good: the good rows are sampled as if alone
    std::vector<RowSpec> rows;
    for (int i = 0; i < 5; ++i) {
      RowSpec r = row_of(ramp(v));
      r.seed = static_cast<uint64_t>(i);
      r.top_k = 10;
      rows.push_back(r);
    }
    bad.set(rows[3]);
    lmsample::Status st;
    const OutBuf out = run(rows, v, 2, &st);
    EXPECT_EQ(st.code, Code::kInvalidRowParameter) << bad.name;
    EXPECT_NE(st.message.find("row 3"), std::string::npos) << st.message;
    EXPECT_NE(st.message.find(bad.name), std::string::npos) << st.message;
    expect_empty_like(out, 3, bad.status);
    const OutBuf good = run({rows[0], rows[1], rows[2], rows[4]}, v, 2);
    for (const auto& [i, j] :
         std::vector<std::pair<size_t, size_t>>{{0, 0}, {1, 1}, {2, 2}, {4, 3}}) {
      EXPECT_EQ(out.status[i], lmsample::kRowOk);
      EXPECT_EQ(out.tokens[i], good.tokens[j]);
      EXPECT_EQ(out.kept[i], good.kept[j]);
      EXPECT_EQ(lmstest::bits_of(out.logprob[i]), lmstest::bits_of(good.logprob[j]));
    }
  }
}

TEST(EdgeParams, BoundaryValuesAreValid) {
  std::vector<RowSpec> rows;
  auto add = [&](void (*set)(RowSpec&)) {
    RowSpec r = row_of(ramp(16));
    set(r);
    rows.push_back(r);
  };
  add([](RowSpec& r) { r.temperature = 0.0f; });
  add([](RowSpec& r) { r.temperature = std::numeric_limits<float>::max(); });
  add([](RowSpec& r) { r.temperature = std::numeric_limits<float>::denorm_min(); });
  add([](RowSpec& r) { r.top_p = std::numeric_limits<float>::denorm_min(); });
  add([](RowSpec& r) { r.top_p = kInf; });
  add([](RowSpec& r) { r.min_p = 1.0f; });
  add([](RowSpec& r) { r.min_p = 0.0f; });
  add([](RowSpec& r) {
    r.repetition = std::numeric_limits<float>::denorm_min();
    r.prompt = {1};
  });
  add([](RowSpec& r) {
    r.repetition = std::numeric_limits<float>::max();
    r.output = {1, 2};
  });
  add([](RowSpec& r) {
    r.frequency = -2.0f;
    r.presence = 2.0f;
    r.output = {3};
  });
  add([](RowSpec& r) {
    r.frequency = 2.0f;
    r.presence = -2.0f;
    r.output = {3};
  });
  add([](RowSpec& r) { r.top_k = std::numeric_limits<int32_t>::max(); });
  lmsample::Status st;
  const OutBuf out = run(rows, 16, 0, &st);
  EXPECT_EQ(st.code, Code::kOk) << st.message;
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(out.status[i], lmsample::kRowOk) << "case " << i;
    EXPECT_GE(out.tokens[i], 0) << "case " << i;
  }
}

TEST(EdgeParams, FirstBadParameterInTableOrder) {
  RowSpec r = row_of(ramp(8));
  r.presence = 9.0f;
  r.min_p = 2.0f;
  r.top_p = 0.0f;
  r.bias = {{-1, 1.0f}};
  lmsample::Status st;
  OutBuf out = run({r}, 8, 0, &st);
  EXPECT_EQ(out.status[0], lmsample::kRowBadTopP);
  EXPECT_NE(st.message.find("top_p"), std::string::npos) << st.message;
  // a bad parameter wins over a bad token id, a bad token id over EMPTY
  RowSpec e = row_of(std::vector<float>(8, kNegInf));
  e.output = {8};
  out = run({e}, 8, 0, &st);
  EXPECT_EQ(out.status[0], lmsample::kRowBadTokenId);
  EXPECT_EQ(st.code, Code::kInvalidRowParameter);
}

TEST(EdgeParams, TokenIdsOutOfRange) {
  const int64_t v = 20;
  std::vector<RowSpec> rows;
  for (int i = 0; i < 7; ++i) rows.push_back(row_of(ramp(v)));
  rows[1].bias = {{3, 1.0f}, {20, 1.0f}};
  rows[2].bias = {{-1, 1.0f}};
  rows[3].prompt = {0, 19, 25};
  rows[4].output = {5, -3};
  rows[5].output = {19};  // in range: fine
  rows[6].prompt = {std::numeric_limits<int32_t>::min()};
  lmsample::Status st;
  const OutBuf out = run(rows, v, 1, &st);
  EXPECT_EQ(st.code, Code::kInvalidRowParameter);
  EXPECT_NE(st.message.find("row 1"), std::string::npos) << st.message;
  for (const int64_t r : {1, 2, 3, 4, 6}) expect_empty_like(out, r, lmsample::kRowBadTokenId);
  EXPECT_EQ(out.status[0], lmsample::kRowOk);
  EXPECT_EQ(out.status[5], lmsample::kRowOk);
}

// ---- structural errors: kInvalidArgument / kWorkspaceTooSmall, nothing written ----

namespace {

struct Structural {
  std::string name;
  Code code;
  void (*mutate)(lmsample::Request&, lmsample::Outputs&, size_t& workspace_bytes);
};

}  // namespace

TEST(EdgeStructural, ErrorsWriteNothing) {
  const Structural cases[] = {
      {"null logits", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) { q.logits.data = nullptr; }},
      {"vocab 0", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) { q.logits.vocab = 0; }},
      {"vocab negative", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) { q.logits.vocab = -5; }},
      {"vocab 2^24 + 1", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) {
         q.logits.vocab = (int64_t{1} << 24) + 1;
       }},
      {"batch negative", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) { q.logits.batch = -1; }},
      {"stride below vocab", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) { q.logits.row_stride = 15; }},
      {"batch x stride overflows", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) {
         q.logits.row_stride = int64_t{1} << 40;  // 4 rows of 2^40: fine; the bytes are not
         q.logits.batch = int64_t{1} << 23;
       }},
      {"bad dtype", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) {
         q.logits.dtype = static_cast<DType>(7);
       }},
      {"top_logprobs 65", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) { q.top_logprobs = 65; }},
      {"top_logprobs -1", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) { q.top_logprobs = -1; }},
      {"mask row too short", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) { q.mask_row_words = 1; }},
      {"null tokens", Code::kInvalidArgument,
       [](lmsample::Request&, lmsample::Outputs& o, size_t&) { o.tokens = nullptr; }},
      {"null status", Code::kInvalidArgument,
       [](lmsample::Request&, lmsample::Outputs& o, size_t&) { o.status = nullptr; }},
      {"null top arrays", Code::kInvalidArgument,
       [](lmsample::Request&, lmsample::Outputs& o, size_t&) { o.top_ids = nullptr; }},
      {"workspace too small", Code::kWorkspaceTooSmall,
       [](lmsample::Request&, lmsample::Outputs&, size_t& ws) { ws -= 1; }},
      {"workspace 0", Code::kWorkspaceTooSmall,
       [](lmsample::Request&, lmsample::Outputs&, size_t& ws) { ws = 0; }},
      {"decreasing bias offsets", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) {
         const_cast<int64_t*>(q.logit_bias.offsets)[2] = 0;
       }},
      {"decreasing output offsets", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) {
         const_cast<int64_t*>(q.output_tokens.offsets)[3] = 1;
       }},
      {"bias values null", Code::kInvalidArgument,
       [](lmsample::Request& q, lmsample::Outputs&, size_t&) { q.logit_bias.values = nullptr; }},
  };
  const int64_t v = 40;
  for (const Structural& c : cases) {
    std::vector<RowSpec> rows;
    for (int i = 0; i < 4; ++i) {
      RowSpec r = row_of(ramp(v));
      r.bias = {{1, 1.0f}, {2, -1.0f}};
      r.output = {3, 4};
      r.mask = {0xffffffffu, 0xffu};
      rows.push_back(r);
    }
    Batch batch(DType::kFloat32, v, rows, 3,
                lmstest::Layout{0, 1, 0, false});  // mask_row_words = 3
    lmsample::Request req = batch.request();
    OutBuf out(4, 3);
    lmsample::Outputs o = out.outputs();
    lmsample::ExecConfig cfg;
    cfg.cpu_threads = 2;
    size_t ws_bytes = lmsample::workspace_size(req, cfg);
    std::vector<unsigned char> ws(ws_bytes + 1);
    // sanity: the unmutated request is fine
    {
      OutBuf ok(4, 3);
      ASSERT_TRUE(lmsample::sample(req, ok.outputs(), ws.data(), ws_bytes, cfg).ok()) << c.name;
    }
    c.mutate(req, o, ws_bytes);
    const lmsample::Status st = lmsample::sample(req, o, ws.data(), ws_bytes, cfg);
    EXPECT_EQ(st.code, c.code) << c.name << ": " << st.message;
    EXPECT_FALSE(st.message.empty()) << c.name;
    EXPECT_TRUE(out.untouched()) << c.name << ": outputs were written";
  }
}

// ExecConfig::cpu_threads beyond kMaxCpuThreads (65,536 crashed inside libgomp) or negative: the
// library says so and writes nothing; the cap itself is fine.
TEST(EdgeStructural, ThreadCountsOutsideTheCapAreRefused) {
  const int64_t v = 40;
  std::vector<RowSpec> rows(4, row_of(ramp(v)));
  Batch batch(DType::kFloat32, v, rows, 3);
  const lmsample::Request req = batch.request();
  for (const int threads : {-1, lmsample::kMaxCpuThreads + 1, 65536}) {
    lmsample::ExecConfig cfg;
    cfg.cpu_threads = threads;
    std::vector<unsigned char> ws(lmsample::workspace_size(req, cfg));
    OutBuf out(4, 3);
    const lmsample::Status st = lmsample::sample(req, out.outputs(), ws.data(), ws.size(), cfg);
    EXPECT_EQ(st.code, Code::kInvalidArgument) << threads;
    EXPECT_NE(st.message.find("cpu_threads = " + std::to_string(threads)), std::string::npos)
        << st.message;
    EXPECT_TRUE(out.untouched()) << threads;
  }
  lmsample::ExecConfig cfg;
  cfg.cpu_threads = lmsample::kMaxCpuThreads;
  std::vector<unsigned char> ws(lmsample::workspace_size(req, cfg));
  OutBuf out(4, 3);
  EXPECT_TRUE(lmsample::sample(req, out.outputs(), ws.data(), ws.size(), cfg).ok());
}

TEST(EdgeStructural, EmptyBatchIsFine) {
  lmsample::Request req;
  req.logits.vocab = 10;
  req.logits.batch = 0;
  lmsample::Outputs o;
  lmsample::ExecConfig cfg;
  const size_t bytes = lmsample::workspace_size(req, cfg);
  std::vector<unsigned char> ws(bytes + 1);
  EXPECT_EQ(lmsample::sample(req, o, ws.data(), bytes, cfg).code, Code::kOk);
}

TEST(EdgeStructural, RowStatusNames) {
  const char* names[] = {"ok",
                         "empty",
                         "bad_temperature",
                         "bad_top_k",
                         "bad_top_p",
                         "bad_min_p",
                         "bad_repetition_penalty",
                         "bad_frequency_penalty",
                         "bad_presence_penalty",
                         "bad_token_id",
                         "bad_draft"};
  for (int32_t s = 0; s < 11; ++s) EXPECT_STREQ(lmsample::row_status_name(s), names[s]);
}

// ---- exact boundaries of the draw and of top-p (random rows essentially never hit them) ----

namespace {

// (seed, step, substream) whose Philox uniform is tiny (u = 0x710: t = 0 for any W < 2^52) or
// huge (u = 2^64 - 55: t = W - 1 for any W < 2^58). Found offline by inverting Philox4x32-10;
// test_core checks the values.
constexpr uint64_t kLowSeed = 0x0fedcba987654321ull, kLowStep = 0x2208c864e297b8e4ull;
constexpr uint32_t kLowSub = 0xde595dbau;
constexpr uint64_t kHighSeed = 0x0123456789abcdefull, kHighStep = 0x85e14f3a5d3c2d96ull;
constexpr uint32_t kHighSub = 0xedf0caf3u;

RowSpec with_draw(RowSpec r, bool low) {
  r.seed = low ? kLowSeed : kHighSeed;
  r.step = low ? kLowStep : kHighStep;
  r.substream = low ? kLowSub : kHighSub;
  return r;
}

}  // namespace

TEST(EdgeDraw, FirstDrawSkipsZeroWeightTokens) {
  // t = 0: the smallest id whose running weight exceeds 0, never a weight-0 token before it.
  RowSpec plain = with_draw(row_of({-100.0f, -90.0f, 0.0f, -1.0f}), true);
  RowSpec topk = plain;
  topk.top_k = 3;  // the candidate path
  RowSpec minp = plain;
  minp.min_p = 1e-30f;
  const OutBuf out = run({plain, topk, minp}, 4, 0);
  EXPECT_EQ(out.tokens[0], 2) << "no filter";
  EXPECT_EQ(out.tokens[1], 2) << "top-k";
  EXPECT_EQ(out.tokens[2], 2) << "min-p";
  EXPECT_EQ(out.kept[0], 4);
  EXPECT_EQ(out.kept[1], 3);
}

TEST(EdgeDraw, LastDrawTakesTheLastPositiveWeight) {
  // y = -27 has e = exp(-27) = 2^-38.95: weight exactly 1. W = 2^39 + 1 and t = W - 1 = 2^39:
  // only token 1's unit of weight makes the running sum exceed t.
  RowSpec plain = with_draw(row_of({0.0f, -27.0f, -100.0f}), false);
  RowSpec topk = plain;
  topk.top_k = 2;
  std::vector<RowSpec> rows = {plain, topk};
  // a wider row: the unit-weight token last in id order behind blocks of zero-weight tokens
  RowSpec wide = with_draw(row_of(std::vector<float>(300, -100.0f)), false);
  wide.f32[5] = 0.0f;
  wide.f32[290] = -27.0f;
  const OutBuf out = run(rows, 3, 0);
  EXPECT_EQ(out.tokens[0], 1) << "no filter";
  EXPECT_EQ(out.tokens[1], 1) << "top-k";
  const OutBuf w = run({wide}, 300, 0);
  EXPECT_EQ(w.tokens[0], 290);
}

TEST(EdgeDraw, TopPReachedExactly) {
  // exp_nonpos(-0.6931472f) is exactly 0.5: weights 2^39, 2^38, 2^38, so W = 2^40 and
  // p = 0.5 gives ceil(p W) = 2^39, reached exactly by the maximum alone.
  ASSERT_EQ(lmsample::core::exp_nonpos(-0.6931472f), 0.5f);
  RowSpec half = row_of({-0.6931472f, 0.0f, -0.6931472f});
  half.top_p = 0.5f;
  RowSpec above = half;
  above.top_p = std::nextafter(0.5f, 1.0f);
  // the same with 4096 candidates (the by-mass selection path): zero-weight tokens fill the rest
  RowSpec big = row_of(std::vector<float>(4096, -100.0f));
  big.f32[100] = 0.0f;
  big.f32[7] = -0.6931472f;
  big.f32[4000] = -0.6931472f;
  big.top_p = 0.5f;
  RowSpec big_above = big;
  big_above.top_p = std::nextafter(0.5f, 1.0f);
  const OutBuf out = run({half, above}, 3, 0);
  EXPECT_EQ(out.kept[0], 1);
  EXPECT_EQ(out.tokens[0], 1);
  EXPECT_EQ(out.kept[1], 3);
  const OutBuf b = run({big, big_above}, 4096, 0);
  EXPECT_EQ(b.kept[0], 1);
  EXPECT_EQ(b.tokens[0], 100);
  EXPECT_EQ(b.kept[1], 3);
}
