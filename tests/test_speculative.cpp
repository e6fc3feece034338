// Chain verification of speculative drafts (lmsample::verify_chain, docs/contract.md section 8)
// on the CPU backend: the emitted tokens have exactly the target's distribution (chi-square over
// many seeds, for drafts that agree, disagree, come from logits or probabilities or are
// deterministic), acceptance rates equal the analytic sum of min(p, q), K = 0 is sample(), a
// request's result does not depend on the others, and bad input names the request and writes
// nothing. Target and draft distributions for the expectations come from the sort-based
// reference (src/check/), not from the library.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check/reference.hpp"
#include "check/stats.hpp"
#include "lmsample/lmsample.hpp"

namespace {

using lmsample::ChainOutputs;
using lmsample::ChainRequest;
using lmsample::DraftKind;
using lmsample::DType;

// A batch of requests with K drafts each over V tokens, fp32 logits.
struct Chain {
  int64_t v = 0;
  std::vector<int64_t> offsets{0};
  std::vector<float> target, draft;  // [N, V], [N - B, V]
  std::vector<int32_t> drafts;
  std::vector<float> temperature, top_p;
  std::vector<int32_t> top_k;
  std::vector<uint64_t> seed, step;
  std::vector<int64_t> out_off{0};
  std::vector<int32_t> out_tok;
  DraftKind kind = DraftKind::kDeterministic;
  float frequency = 0.0f;
  int32_t max_drafts = 0;

  int64_t requests() const { return static_cast<int64_t>(offsets.size()) - 1; }
  void add(const std::vector<std::vector<float>>& rows, const std::vector<int32_t>& ds,
           const std::vector<std::vector<float>>& draft_rows, float t, float p, int32_t k,
           uint64_t s, uint64_t st, const std::vector<int32_t>& history = {}) {
    for (const auto& r : rows) target.insert(target.end(), r.begin(), r.end());
    for (const auto& r : draft_rows) draft.insert(draft.end(), r.begin(), r.end());
    drafts.insert(drafts.end(), ds.begin(), ds.end());
    offsets.push_back(offsets.back() + static_cast<int64_t>(rows.size()));
    temperature.push_back(t);
    top_p.push_back(p);
    top_k.push_back(k);
    seed.push_back(s);
    step.push_back(st);
    out_tok.insert(out_tok.end(), history.begin(), history.end());
    out_off.push_back(static_cast<int64_t>(out_tok.size()));
  }
  ChainRequest request() const {
    ChainRequest r;
    const int64_t n = offsets.back(), b = requests();
    r.target = lmsample::Logits{target.data(), DType::kFloat32, n, v, 0};
    r.row_offsets = offsets.data();
    r.requests = b;
    r.draft_tokens = drafts.data();
    r.draft_kind = kind;
    if (kind != DraftKind::kDeterministic)
      r.draft = lmsample::Logits{draft.data(), DType::kFloat32, n - b, v, 0};
    r.params.temperature = temperature.data();
    r.params.top_p = top_p.data();
    r.params.top_k = top_k.data();
    r.params.seed = seed.data();
    r.params.step = step.data();
    r.params.defaults.frequency_penalty = frequency;
    if (!out_tok.empty())
      r.output_tokens = lmsample::SparseRows{out_off.data(), out_tok.data(), nullptr};
    r.max_drafts = max_drafts;
    return r;
  }
};

struct Result {
  std::vector<int32_t> accepted, tokens, status;
  std::vector<float> logprobs;
  lmsample::Status st;
};

Result run(const Chain& c, int threads = 1) {
  Result res;
  const ChainRequest req = c.request();
  res.accepted.assign(static_cast<size_t>(c.requests()), -7);
  res.tokens.assign(static_cast<size_t>(c.offsets.back()), -7);
  res.status.assign(static_cast<size_t>(c.requests()), -7);
  res.logprobs.assign(static_cast<size_t>(c.offsets.back()), 7.0f);
  lmsample::ExecConfig cfg;
  cfg.cpu_threads = threads;
  std::vector<unsigned char> ws(lmsample::verify_chain_workspace_size(req, cfg));
  res.st = lmsample::verify_chain(
      req,
      ChainOutputs{res.accepted.data(), res.tokens.data(), res.status.data(), res.logprobs.data()},
      ws.data(), ws.size(), cfg);
  return res;
}

// The reference's distribution of one row of logits under (T, p, k) and a history.
std::vector<double> reference_probs(const std::vector<float>& row, float t, float p, int32_t k,
                                    float frequency, const std::vector<int32_t>& history) {
  lmsample::Request req;
  req.logits =
      lmsample::Logits{row.data(), DType::kFloat32, 1, static_cast<int64_t>(row.size()), 0};
  req.params.defaults.temperature = t;
  req.params.defaults.top_p = p;
  req.params.defaults.top_k = k;
  req.params.defaults.frequency_penalty = frequency;
  const int64_t off[2] = {0, static_cast<int64_t>(history.size())};
  if (!history.empty()) req.output_tokens = lmsample::SparseRows{off, history.data(), nullptr};
  const lmsample::check::RefDistribution d = lmsample::check::reference_distribution(req, 0);
  std::vector<double> probs(row.size(), 0.0);
  for (size_t i = 0; i < d.ids.size(); ++i)
    probs[static_cast<size_t>(d.ids[i])] =
        static_cast<double>(d.weights[i]) / static_cast<double>(d.total);
  return probs;
}

// x rounded to the nearest bfloat16 (toward zero is enough here: any value bf16 holds).
float lmstest_round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u &= 0xffff0000u;
  std::memcpy(&x, &u, 4);
  return x;
}

std::vector<float> random_row(std::mt19937_64& g, int64_t v, float scale) {
  std::normal_distribution<float> n(0.0f, scale);
  std::vector<float> x(static_cast<size_t>(v));
  for (auto& e : x) e = n(g);
  return x;
}

std::vector<float> softmax(const std::vector<float>& x) {
  const float m = *std::max_element(x.begin(), x.end());
  std::vector<float> p(x.size());
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += std::exp(static_cast<double>(x[i] - m));
  for (size_t i = 0; i < x.size(); ++i)
    p[i] = static_cast<float>(std::exp(static_cast<double>(x[i] - m)) / s);
  return p;
}

// Many requests of one shape with different seeds: the emitted token at position 0, and at
// position 1 where draft 0 was accepted, against the target's distributions; the acceptance rate
// of draft 0 against sum_x min(p(x), q(x)) (q the draft's distribution as verify_chain reads it).
void check_distribution(DraftKind kind, float t, float p, int32_t k, float frequency,
                        uint64_t seed) {
  const int64_t v = 12, n_req = 24000;
  std::mt19937_64 g(seed);
  const std::vector<float> t0 = random_row(g, v, 1.5f), t1 = random_row(g, v, 1.5f),
                           t2 = random_row(g, v, 1.5f);
  const std::vector<float> dl0 = random_row(g, v, 1.5f), dl1 = random_row(g, v, 1.5f);
  // draft rows: logits, or the probabilities of a softmax of them (what a draft model sampled)
  const std::vector<float> dr0 = kind == DraftKind::kProbs ? softmax(dl0) : dl0;
  const std::vector<float> dr1 = kind == DraftKind::kProbs ? softmax(dl1) : dl1;
  const std::vector<int32_t> history = {3, 3, 7};
  // q at position 0, for the draft tokens' distribution and the acceptance rate
  std::vector<double> q0(static_cast<size_t>(v), 0.0);
  if (kind == DraftKind::kLogits) {
    q0 = reference_probs(dr0, t, p, k, frequency, history);
  } else if (kind == DraftKind::kProbs) {
    double s = 0;
    for (float x : dr0) s += std::floor(static_cast<double>(x) * 549755813888.0);
    for (int64_t i = 0; i < v; ++i)
      q0[static_cast<size_t>(i)] =
          std::floor(static_cast<double>(dr0[static_cast<size_t>(i)]) * 549755813888.0) / s;
  }
  Chain c;
  c.v = v;
  c.kind = kind;
  c.frequency = frequency;
  std::mt19937_64 dg(seed + 1);
  std::discrete_distribution<int32_t> dd0(q0.begin(), q0.end());
  // draft 1 from the draft's distribution at position 1, whose history holds draft 0
  std::vector<std::discrete_distribution<int32_t>> dd1;
  for (int32_t e = 0; e < v; ++e) {
    std::vector<int32_t> h = history;
    h.push_back(e);
    std::vector<double> q1(static_cast<size_t>(v), 1.0);
    if (kind == DraftKind::kLogits) q1 = reference_probs(dr1, t, p, k, frequency, h);
    if (kind == DraftKind::kProbs) q1.assign(dr1.begin(), dr1.end());
    dd1.emplace_back(q1.begin(), q1.end());
  }
  for (int64_t r = 0; r < n_req; ++r) {
    // drafts from the draft's distributions (deterministic drafts: draft 0 a fixed token that
    // the target rarely picks, draft 1 any)
    const int32_t d0 = kind == DraftKind::kDeterministic ? static_cast<int32_t>(r % 3) : dd0(dg);
    const int32_t d1 = dd1[static_cast<size_t>(d0)](dg);
    c.add({t0, t1, t2}, {d0, d1}, {dr0, dr1}, t, p, k, 1000 + static_cast<uint64_t>(r), 5, history);
  }
  const Result res = run(c, 2);
  ASSERT_TRUE(res.st.ok()) << res.st.message;
  const std::vector<double> p0 = reference_probs(t0, t, p, k, frequency, history);
  std::vector<uint64_t> c0(static_cast<size_t>(v), 0);
  std::vector<std::vector<uint64_t>> c1(static_cast<size_t>(v),
                                        std::vector<uint64_t>(static_cast<size_t>(v), 0));
  uint64_t accepted0 = 0;
  for (int64_t r = 0; r < n_req; ++r) {
    ASSERT_EQ(res.status[static_cast<size_t>(r)], lmsample::kRowOk);
    const int32_t e0 = res.tokens[static_cast<size_t>(3 * r)];
    ASSERT_GE(e0, 0);
    ++c0[static_cast<size_t>(e0)];
    if (res.accepted[static_cast<size_t>(r)] >= 1) {
      ++accepted0;
      ++c1[static_cast<size_t>(e0)]
          [static_cast<size_t>(res.tokens[static_cast<size_t>(3 * r + 1)])];
    } else {
      EXPECT_EQ(res.tokens[static_cast<size_t>(3 * r + 1)], -1);
    }
  }
  const lmsample::check::ChiSquare x0 = lmsample::check::chi_square_test(c0, p0);
  EXPECT_GT(x0.p_value, 1e-4) << "position 0: chi-square " << x0.statistic << ", dof " << x0.dof;
  // position 1, given draft 0 (= e0) accepted: the target row 1 with e0 in the history
  for (int32_t e = 0; e < v; ++e) {
    uint64_t n = 0;
    for (uint64_t x : c1[static_cast<size_t>(e)]) n += x;
    if (n < 400) continue;
    std::vector<int32_t> h = history;
    h.push_back(e);
    const std::vector<double> p1 = reference_probs(t1, t, p, k, frequency, h);
    const lmsample::check::ChiSquare x1 =
        lmsample::check::chi_square_test(c1[static_cast<size_t>(e)], p1);
    EXPECT_GT(x1.p_value, 1e-4) << "position 1 after " << e << ": chi-square " << x1.statistic;
  }
  // acceptance of draft 0: the expected sum over the drafts actually proposed of min(1, p/q)
  double expect = 0;
  for (int64_t r = 0; r < n_req; ++r) {
    const auto d0 = static_cast<size_t>(c.drafts[static_cast<size_t>(2 * r)]);
    const double q = kind == DraftKind::kDeterministic ? 1.0 : q0[d0];
    expect += q > 0 ? std::min(1.0, p0[d0] / q) : (p0[d0] > 0 ? 1.0 : 0.0);
  }
  const double sd = std::sqrt(expect * (1.0 - expect / static_cast<double>(n_req)));
  EXPECT_NEAR(static_cast<double>(accepted0), expect, 5.0 * sd + 1.0)
      << "acceptance of draft 0 (sum of min(p, q) over the drafts proposed)";
}

TEST(VerifyChain, DeterministicDraftsKeepTheTargetsDistribution) {
  check_distribution(DraftKind::kDeterministic, 1.0f, 1.0f, 0, 0.0f, 11);
}
TEST(VerifyChain, DraftLogitsKeepTheTargetsDistribution) {
  check_distribution(DraftKind::kLogits, 0.8f, 0.9f, 0, 0.0f, 12);
}
TEST(VerifyChain, DraftProbsKeepTheTargetsDistribution) {
  check_distribution(DraftKind::kProbs, 1.0f, 1.0f, 6, 0.0f, 13);
}
TEST(VerifyChain, PenaltiesGrowWithTheAcceptedDrafts) {
  check_distribution(DraftKind::kLogits, 1.0f, 1.0f, 0, 1.5f, 14);
}

// K = 0 is sample() of the row with the request's substream; a request's outputs do not depend
// on the other requests or on its position; threads change nothing.
TEST(VerifyChain, KZeroIsSampleAndRequestsAreIndependent) {
  const int64_t v = 50;
  std::mt19937_64 g(21);
  Chain c;
  c.v = v;
  c.kind = DraftKind::kLogits;
  std::vector<std::vector<float>> rows;
  for (int r = 0; r < 30; ++r) {
    const int k = r % 4;  // 0 .. 3 drafts
    std::vector<std::vector<float>> t, d;
    std::vector<int32_t> ds;
    for (int j = 0; j <= k; ++j) t.push_back(random_row(g, v, 3.0f));
    for (int j = 0; j < k; ++j) {
      d.push_back(random_row(g, v, 3.0f));
      ds.push_back(static_cast<int32_t>(g() % static_cast<uint64_t>(v)));
    }
    c.add(t, ds, d, r % 5 == 0 ? 0.0f : 0.9f, 0.95f, r % 3 == 0 ? 10 : 0, 77 + r, 9, {1, 2});
  }
  const Result all = run(c, 1);
  ASSERT_TRUE(all.st.ok()) << all.st.message;
  EXPECT_EQ(run(c, 2).tokens, all.tokens);
  // each request alone
  for (int64_t b = 0; b < c.requests(); ++b) {
    Chain one;
    one.v = v;
    one.kind = c.kind;
    const int64_t r0 = c.offsets[static_cast<size_t>(b)],
                  r1 = c.offsets[static_cast<size_t>(b + 1)];
    std::vector<std::vector<float>> t, d;
    for (int64_t r = r0; r < r1; ++r)
      t.emplace_back(c.target.begin() + r * v, c.target.begin() + (r + 1) * v);
    for (int64_t j = r0 - b; j < r1 - b - 1; ++j)
      d.emplace_back(c.draft.begin() + j * v, c.draft.begin() + (j + 1) * v);
    std::vector<int32_t> ds(c.drafts.begin() + (r0 - b), c.drafts.begin() + (r1 - b - 1));
    one.add(t, ds, d, c.temperature[static_cast<size_t>(b)], c.top_p[static_cast<size_t>(b)],
            c.top_k[static_cast<size_t>(b)], c.seed[static_cast<size_t>(b)], 9, {1, 2});
    const Result alone = run(one);
    ASSERT_TRUE(alone.st.ok());
    EXPECT_EQ(alone.accepted[0], all.accepted[static_cast<size_t>(b)]) << "request " << b;
    for (int64_t r = r0; r < r1; ++r)
      EXPECT_EQ(alone.tokens[static_cast<size_t>(r - r0)], all.tokens[static_cast<size_t>(r)])
          << "request " << b;
    if (r1 - r0 == 1) {  // K = 0: sample()'s token
      lmsample::Request q;
      q.logits = lmsample::Logits{c.target.data() + r0 * v, DType::kFloat32, 1, v, 0};
      q.params.defaults.temperature = c.temperature[static_cast<size_t>(b)];
      q.params.defaults.top_p = c.top_p[static_cast<size_t>(b)];
      q.params.defaults.top_k = c.top_k[static_cast<size_t>(b)];
      q.params.defaults.seed = c.seed[static_cast<size_t>(b)];
      q.params.defaults.step = 9;
      const int64_t off[2] = {0, 2};
      const int32_t hist[2] = {1, 2};
      q.output_tokens = lmsample::SparseRows{off, hist, nullptr};
      int32_t tok = -2, st = -2;
      lmsample::Outputs o;
      o.tokens = &tok;
      o.status = &st;
      std::vector<unsigned char> ws(lmsample::workspace_size(q, {}));
      ASSERT_TRUE(lmsample::sample(q, o, ws.data(), ws.size(), {}).ok());
      EXPECT_EQ(all.tokens[static_cast<size_t>(r0)], tok) << "request " << b << " (K = 0)";
      EXPECT_EQ(all.accepted[static_cast<size_t>(b)], 0);
    }
  }
}

// Bitmasks per position and bias per request: a disallowed draft is never accepted and nothing
// disallowed is emitted; with K = 0 the token is sample()'s under the same mask and bias; bf16
// target rows give the fp32 rows' results where the values are the same.
TEST(VerifyChain, MasksBiasAndBf16) {
  const int64_t v = 40, b = 200, k = 2;
  std::mt19937_64 g(91);
  Chain c;
  c.v = v;
  c.kind = DraftKind::kLogits;
  const int64_t words = (v + 31) / 32;
  std::vector<uint32_t> mask;
  std::vector<int64_t> bias_off{0};
  std::vector<int32_t> bias_tok;
  std::vector<float> bias_val;
  for (int64_t r = 0; r < b; ++r) {
    std::vector<std::vector<float>> t, d;
    std::vector<int32_t> ds;
    for (int j = 0; j <= k; ++j) {
      std::vector<float> row = random_row(g, v, 2.0f);
      for (auto& x : row) x = lmstest_round_bf16(x);  // values that bf16 holds exactly
      t.push_back(row);
      for (int64_t w = 0; w < words; ++w)  // about half the tokens allowed, never none
        mask.push_back(static_cast<uint32_t>(g()) | (w == 0 ? 1u : 0u));
    }
    for (int j = 0; j < k; ++j) {
      d.push_back(random_row(g, v, 2.0f));
      ds.push_back(static_cast<int32_t>(g() % static_cast<uint64_t>(v)));
    }
    c.add(t, ds, d, 1.0f, 0.9f, 0, 300 + static_cast<uint64_t>(r), 2);
    bias_tok.push_back(static_cast<int32_t>(g() % static_cast<uint64_t>(v)));
    bias_val.push_back(3.0f);
    bias_off.push_back(static_cast<int64_t>(bias_tok.size()));
  }
  ChainRequest req = c.request();
  req.allowed_mask = mask.data();
  req.logit_bias = lmsample::SparseRows{bias_off.data(), bias_tok.data(), bias_val.data()};
  const auto run_req = [&](const ChainRequest& q) {
    Result res;
    res.accepted.assign(static_cast<size_t>(b), -7);
    res.tokens.assign(static_cast<size_t>(c.offsets.back()), -7);
    res.status.assign(static_cast<size_t>(b), -7);
    std::vector<unsigned char> ws(lmsample::verify_chain_workspace_size(q, {}));
    res.st = lmsample::verify_chain(
        q, ChainOutputs{res.accepted.data(), res.tokens.data(), res.status.data()}, ws.data(),
        ws.size(), {});
    return res;
  };
  const Result f32 = run_req(req);
  ASSERT_TRUE(f32.st.ok()) << f32.st.message;
  const auto allowed = [&](int64_t row, int32_t x) {
    return (mask[static_cast<size_t>(row * words + x / 32)] >> (x % 32)) & 1u;
  };
  int64_t accepted = 0;
  for (int64_t r = 0; r < b; ++r) {
    for (int64_t j = 0; j <= k; ++j) {
      const int32_t x = f32.tokens[static_cast<size_t>(r * (k + 1) + j)];
      if (x >= 0) {
        EXPECT_TRUE(allowed(r * (k + 1) + j, x)) << "request " << r << " position " << j;
      }
    }
    accepted += f32.accepted[static_cast<size_t>(r)];
  }
  EXPECT_GT(accepted, 20);
  // bf16 target rows: the same bits
  std::vector<uint16_t> t16(c.target.size());
  for (size_t i = 0; i < t16.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, &c.target[i], 4);
    t16[i] = static_cast<uint16_t>(u >> 16);
  }
  ChainRequest q16 = req;
  q16.target.data = t16.data();
  q16.target.dtype = DType::kBFloat16;
  const Result bf = run_req(q16);
  ASSERT_TRUE(bf.st.ok()) << bf.st.message;
  EXPECT_EQ(bf.tokens, f32.tokens);
  EXPECT_EQ(bf.accepted, f32.accepted);
  // K = 0 (the first target row of each request alone) is sample() with that mask and bias
  Chain c0;
  c0.v = v;
  std::vector<uint32_t> mask0;
  for (int64_t r = 0; r < b; ++r) {
    const int64_t row = r * (k + 1);
    c0.add({std::vector<float>(c.target.begin() + row * v, c.target.begin() + (row + 1) * v)}, {},
           {}, 1.0f, 0.9f, 0, 300 + static_cast<uint64_t>(r), 2);
    mask0.insert(mask0.end(), mask.begin() + row * words, mask.begin() + (row + 1) * words);
  }
  ChainRequest r0 = c0.request();
  r0.allowed_mask = mask0.data();
  r0.logit_bias = req.logit_bias;
  Result v0;
  v0.accepted.assign(static_cast<size_t>(b), -7);
  v0.tokens.assign(static_cast<size_t>(b), -7);
  v0.status.assign(static_cast<size_t>(b), -7);
  std::vector<unsigned char> ws0(lmsample::verify_chain_workspace_size(r0, {}));
  ASSERT_TRUE(lmsample::verify_chain(
                  r0, ChainOutputs{v0.accepted.data(), v0.tokens.data(), v0.status.data()},
                  ws0.data(), ws0.size(), {})
                  .ok());
  lmsample::Request q;
  q.logits = lmsample::Logits{c0.target.data(), DType::kFloat32, b, v, 0};
  q.params.temperature = c0.temperature.data();
  q.params.top_p = c0.top_p.data();
  q.params.top_k = c0.top_k.data();
  q.params.seed = c0.seed.data();
  q.params.step = c0.step.data();
  q.allowed_mask = mask0.data();
  q.logit_bias = req.logit_bias;
  std::vector<int32_t> tok(static_cast<size_t>(b)), st(static_cast<size_t>(b));
  lmsample::Outputs o;
  o.tokens = tok.data();
  o.status = st.data();
  std::vector<unsigned char> ws(lmsample::workspace_size(q, {}));
  ASSERT_TRUE(lmsample::sample(q, o, ws.data(), ws.size(), {}).ok());
  EXPECT_EQ(v0.tokens, tok);
}

// Each emitted token's logprob is section 5's in the row it was emitted from (the history grown
// by the drafts before it), as sample() reports it; -inf after.
TEST(VerifyChain, LogprobsOfTheEmittedTokens) {
  const int64_t v = 50;
  std::mt19937_64 g(101);
  Chain c;
  c.v = v;
  c.kind = DraftKind::kLogits;
  c.frequency = 0.4f;
  for (int r = 0; r < 40; ++r) {
    const int k = r % 4;
    std::vector<std::vector<float>> t, d;
    std::vector<int32_t> ds;
    for (int j = 0; j <= k; ++j) t.push_back(random_row(g, v, 2.0f));
    for (int j = 0; j < k; ++j) {
      d.push_back(t[static_cast<size_t>(j)]);  // (a draft that agrees: most are accepted)
      ds.push_back(static_cast<int32_t>(
          std::max_element(t[static_cast<size_t>(j)].begin(), t[static_cast<size_t>(j)].end()) -
          t[static_cast<size_t>(j)].begin()));
    }
    c.add(t, ds, d, 0.9f, 1.0f, 0, 40 + r, 1, {1, 2});
  }
  const ChainRequest req = c.request();
  std::vector<int32_t> acc(static_cast<size_t>(c.requests())), tok(c.target.size() / v),
      st(static_cast<size_t>(c.requests()));
  std::vector<float> lp(tok.size(), 7.0f);
  std::vector<unsigned char> ws(lmsample::verify_chain_workspace_size(req, {}));
  ASSERT_TRUE(lmsample::verify_chain(req,
                                     ChainOutputs{acc.data(), tok.data(), st.data(), lp.data()},
                                     ws.data(), ws.size(), {})
                  .ok());
  int64_t checked = 0;
  for (int64_t b = 0; b < c.requests(); ++b) {
    const int64_t r0 = c.offsets[static_cast<size_t>(b)],
                  r1 = c.offsets[static_cast<size_t>(b + 1)];
    std::vector<int32_t> hist = {1, 2};
    for (int64_t r = r0; r < r1; ++r) {
      const int32_t x = tok[static_cast<size_t>(r)];
      if (x < 0) {
        EXPECT_EQ(lp[static_cast<size_t>(r)], -std::numeric_limits<float>::infinity());
        continue;
      }
      // every token's logprob of this row, from sample()
      lmsample::Request q;
      q.logits = lmsample::Logits{c.target.data() + r * v, DType::kFloat32, 1, v, 0};
      q.params.defaults.frequency_penalty = 0.4f;
      const int64_t off[2] = {0, static_cast<int64_t>(hist.size())};
      q.output_tokens = lmsample::SparseRows{off, hist.data(), nullptr};
      q.top_logprobs = static_cast<int32_t>(v);
      int32_t one_tok = 0, one_st = 0;
      std::vector<int32_t> ids(static_cast<size_t>(v));
      std::vector<float> lps(static_cast<size_t>(v));
      lmsample::Outputs o;
      o.tokens = &one_tok;
      o.status = &one_st;
      o.top_ids = ids.data();
      o.top_logprobs = lps.data();
      std::vector<unsigned char> w2(lmsample::workspace_size(q, {}));
      ASSERT_TRUE(lmsample::sample(q, o, w2.data(), w2.size(), {}).ok());
      const auto it = std::find(ids.begin(), ids.end(), x);
      ASSERT_NE(it, ids.end());
      EXPECT_EQ(lp[static_cast<size_t>(r)], lps[static_cast<size_t>(it - ids.begin())])
          << "request " << b << " row " << r;
      ++checked;
      hist.push_back(x);
    }
  }
  EXPECT_GT(checked, 60);
}

// Greedy verification (T = 0): drafts are accepted while they are the target's argmax, then the
// argmax; all accepted gives the bonus argmax.
TEST(VerifyChain, GreedyAcceptsWhileTheDraftIsTheArgmax) {
  const int64_t v = 20;
  std::mt19937_64 g(31);
  Chain c;
  c.v = v;
  std::vector<std::vector<float>> t;
  std::vector<int32_t> argmax;
  for (int j = 0; j < 4; ++j) {
    t.push_back(random_row(g, v, 2.0f));
    argmax.push_back(static_cast<int32_t>(std::max_element(t.back().begin(), t.back().end()) -
                                          t.back().begin()));
  }
  // request 0: every draft right; request 1: the second wrong; request 2: the first wrong
  c.add(t, {argmax[0], argmax[1], argmax[2]}, {}, 0.0f, 1.0f, 0, 1, 0);
  c.add(t, {argmax[0], (argmax[1] + 1) % 20, argmax[2]}, {}, 0.0f, 1.0f, 0, 2, 0);
  c.add(t, {(argmax[0] + 1) % 20, argmax[1], argmax[2]}, {}, 0.0f, 1.0f, 0, 3, 0);
  const Result res = run(c);
  ASSERT_TRUE(res.st.ok()) << res.st.message;
  EXPECT_EQ(res.accepted, (std::vector<int32_t>{3, 1, 0}));
  EXPECT_EQ(std::vector<int32_t>(res.tokens.begin(), res.tokens.begin() + 4), argmax);
  EXPECT_EQ(std::vector<int32_t>(res.tokens.begin() + 4, res.tokens.begin() + 8),
            (std::vector<int32_t>{argmax[0], argmax[1], -1, -1}));
  EXPECT_EQ(std::vector<int32_t>(res.tokens.begin() + 8, res.tokens.end()),
            (std::vector<int32_t>{argmax[0], -1, -1, -1}));
}

// An empty target row stops its request with kRowEmpty; the others are unaffected.
TEST(VerifyChain, EmptyTargetRowStopsItsRequest) {
  const int64_t v = 8;
  std::mt19937_64 g(41);
  Chain c;
  c.v = v;
  const std::vector<float> ok = random_row(g, v, 1.0f);
  const std::vector<float> empty(static_cast<size_t>(v), -std::numeric_limits<float>::infinity());
  c.add({ok, empty, ok}, {2, 3}, {}, 1.0f, 1.0f, 0, 1, 0);
  c.add({ok}, {}, {}, 1.0f, 1.0f, 0, 2, 0);
  const Result res = run(c);
  ASSERT_TRUE(res.st.ok());
  EXPECT_EQ(res.status[1], lmsample::kRowOk);
  EXPECT_GE(res.tokens[3], 0);
  if (res.accepted[0] >= 1) {  // draft 0 accepted, then row 1 is empty
    EXPECT_EQ(res.status[0], lmsample::kRowEmpty);
    EXPECT_EQ(res.tokens[0], 2);
    EXPECT_EQ(res.tokens[1], -1);
  } else {  // rejected at position 0: row 1 is never read
    EXPECT_EQ(res.status[0], lmsample::kRowOk);
    EXPECT_NE(res.tokens[0], 2);
  }
  EXPECT_EQ(res.tokens[2], -1);
}

// Bad input: an error that names the request, and nothing written.
// A backend this build or machine lacks: kUnsupported, naming it, nothing written.
TEST(VerifyChain, AnUnavailableBackendIsRefused) {
  for (const lmsample::Backend be : {lmsample::Backend::kCuda, lmsample::Backend::kHip}) {
    if (lmsample::backend_available(be)) continue;  // (a GPU machine: tests/gpu covers it)
    std::mt19937_64 g(7);
    Chain c;
    c.v = 8;
    const std::vector<float> t = random_row(g, c.v, 1.0f);
    c.add({t, t}, {1}, {}, 1.0f, 1.0f, 0, 1, 0);
    const ChainRequest req = c.request();
    int32_t accepted = -7, status = -7, tokens[2] = {-7, -7};
    lmsample::ExecConfig cfg;
    cfg.backend = be;
    const lmsample::Status s = lmsample::verify_chain(
        req, ChainOutputs{&accepted, tokens, &status, nullptr}, nullptr, 0, cfg);
    EXPECT_EQ(s.code, lmsample::Code::kUnsupported);
    // (a build without the backend, or with it and no device)
    const bool named =
        s.message.find(be == lmsample::Backend::kCuda ? "CUDA" : "HIP") != std::string::npos ||
        s.message.find("no GPU device") != std::string::npos;
    EXPECT_TRUE(named) << s.message;
    EXPECT_EQ(accepted, -7);
    EXPECT_EQ(tokens[0], -7);
  }
}

TEST(VerifyChain, BadInputNamesTheRequestAndWritesNothing) {
  const int64_t v = 8;
  std::mt19937_64 g(51);
  const auto base = [&] {
    Chain c;
    c.v = v;
    c.kind = DraftKind::kProbs;
    const std::vector<float> t = random_row(g, v, 1.0f);
    const std::vector<float> q = softmax(random_row(g, v, 1.0f));
    c.add({t, t}, {1}, {q}, 1.0f, 1.0f, 0, 1, 0);
    c.add({t, t, t}, {2, 3}, {q, q}, 1.0f, 1.0f, 0, 2, 0);
    return c;
  };
  const auto expect_error = [](const Chain& c, const std::string& needle) {
    const Result res = run(c);
    EXPECT_FALSE(res.st.ok());
    EXPECT_NE(res.st.message.find(needle), std::string::npos) << res.st.message;
    for (int32_t x : res.tokens) EXPECT_EQ(x, -7);
    for (int32_t x : res.accepted) EXPECT_EQ(x, -7);
  };
  Chain c = base();
  c.drafts[2] = static_cast<int32_t>(v);
  expect_error(c, "request 1: draft 1 = 8 is outside [0, vocab = 8)");
  c = base();
  c.drafts[0] = -1;
  expect_error(c, "request 0: draft 0 = -1");
  c = base();
  c.draft[static_cast<size_t>(2 * v + 5)] = -0.5f;
  expect_error(c, "request 1: draft 1 probability of token 5 = -0.5 is outside [0, 1]");
  c = base();
  c.draft[static_cast<size_t>(3)] = std::numeric_limits<float>::quiet_NaN();
  expect_error(c, "request 0: draft 0 probability of token 3 = nan");
  c = base();
  c.offsets = {0, 2, 2};
  c.target.resize(static_cast<size_t>(2 * v));
  expect_error(c, "request 1: 0 target rows");
  // more than kMaxDrafts drafts
  Chain big;
  big.v = v;
  std::vector<std::vector<float>> t(static_cast<size_t>(lmsample::kMaxDrafts) + 2,
                                    random_row(g, v, 1.0f));
  big.add(t, std::vector<int32_t>(static_cast<size_t>(lmsample::kMaxDrafts) + 1, 0), {}, 1.0f, 1.0f,
          0, 1, 0);
  expect_error(big, "request 0: 66 target rows");
  // max_drafts: a bound the call states (for the GPU's rounds), checked; the bound itself too
  c = base();
  c.max_drafts = 1;
  expect_error(c, "request 1: 2 drafts, more than max_drafts = 1");
  c.max_drafts = -1;
  expect_error(c, "max_drafts = -1 (must be 0, not stated, to kMaxDrafts = 64)");
  c.max_drafts = lmsample::kMaxDrafts + 1;
  expect_error(c, "max_drafts = 65");
  c.max_drafts = 2;
  Chain unbounded = c;
  unbounded.max_drafts = 0;
  const Result bounded = run(c), free = run(unbounded);
  ASSERT_TRUE(bounded.st.ok()) << bounded.st.message;
  EXPECT_EQ(bounded.tokens, free.tokens);  // a bound that holds changes nothing
  EXPECT_EQ(bounded.accepted, free.accepted);
}

}  // namespace

// ---- tree verification ----------------------------------------------------------------------
namespace {

// Request trees over V tokens: nodes (parent, token) with one target row each.
struct Tree {
  int64_t v = 0;
  std::vector<int64_t> offsets{0};
  std::vector<int32_t> parents, tokens;
  std::vector<float> target;
  std::vector<float> temperature, top_p;
  std::vector<uint64_t> seed;
  std::vector<int64_t> out_off{0};
  std::vector<int32_t> out_tok;
  float frequency = 0.0f;
  int32_t max_depth = 0;

  int64_t requests() const { return static_cast<int64_t>(offsets.size()) - 1; }
  void add(const std::vector<int32_t>& par, const std::vector<int32_t>& tok,
           const std::vector<std::vector<float>>& rows, float t, float p, uint64_t s,
           const std::vector<int32_t>& history = {}) {
    parents.insert(parents.end(), par.begin(), par.end());
    tokens.insert(tokens.end(), tok.begin(), tok.end());
    for (const auto& r : rows) target.insert(target.end(), r.begin(), r.end());
    offsets.push_back(offsets.back() + static_cast<int64_t>(par.size()));
    temperature.push_back(t);
    top_p.push_back(p);
    seed.push_back(s);
    out_tok.insert(out_tok.end(), history.begin(), history.end());
    out_off.push_back(static_cast<int64_t>(out_tok.size()));
  }
  lmsample::TreeRequest request() const {
    lmsample::TreeRequest r;
    r.target = lmsample::Logits{target.data(), DType::kFloat32, offsets.back(), v, 0};
    r.node_offsets = offsets.data();
    r.requests = requests();
    r.parents = parents.data();
    r.tokens = tokens.data();
    r.params.temperature = temperature.data();
    r.params.top_p = top_p.data();
    r.params.seed = seed.data();
    r.params.defaults.step = 5;
    r.params.defaults.frequency_penalty = frequency;
    if (!out_tok.empty())
      r.output_tokens = lmsample::SparseRows{out_off.data(), out_tok.data(), nullptr};
    r.max_depth = max_depth;
    return r;
  }
};

struct TreeResult {
  std::vector<int32_t> accepted, path, tokens, status;
  std::vector<float> logprobs;
  lmsample::Status st;
};

TreeResult run_tree(const Tree& t, int threads = 1) {
  TreeResult res;
  const lmsample::TreeRequest req = t.request();
  res.accepted.assign(static_cast<size_t>(t.requests()), -7);
  res.path.assign(static_cast<size_t>(t.offsets.back()), -7);
  res.tokens.assign(static_cast<size_t>(t.offsets.back()), -7);
  res.status.assign(static_cast<size_t>(t.requests()), -7);
  res.logprobs.assign(static_cast<size_t>(t.offsets.back()), 7.0f);
  lmsample::ExecConfig cfg;
  cfg.cpu_threads = threads;
  std::vector<unsigned char> ws(lmsample::verify_tree_workspace_size(req, cfg));
  res.st = lmsample::verify_tree(
      req,
      lmsample::TreeOutputs{res.accepted.data(), res.path.data(), res.tokens.data(),
                            res.status.data(), res.logprobs.data()},
      ws.data(), ws.size(), cfg);
  return res;
}

// A chain-shaped tree gives exactly verify_chain's result with deterministic drafts.
TEST(VerifyTree, ChainShapedTreeIsTheChain) {
  const int64_t v = 40;
  std::mt19937_64 g(61);
  Chain c;
  c.v = v;
  c.frequency = 0.7f;
  Tree t;
  t.v = v;
  t.frequency = 0.7f;
  for (int r = 0; r < 300; ++r) {
    const int k = r % 5;
    std::vector<std::vector<float>> rows;
    std::vector<int32_t> ds, par{-1}, tok{0};
    for (int j = 0; j <= k; ++j) rows.push_back(random_row(g, v, 1.0f));
    for (int j = 0; j < k; ++j) {
      // a draft the target often accepts: the row's argmax, or another token
      const auto& row = rows[static_cast<size_t>(j)];
      const int32_t best =
          static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
      ds.push_back(g() % 3 ? best : static_cast<int32_t>(g() % static_cast<uint64_t>(v)));
      par.push_back(j);
      tok.push_back(ds.back());
    }
    const float temp = r % 7 == 0 ? 0.0f : 0.9f;
    c.add(rows, ds, {}, temp, 0.9f, 0, 500 + r, 5, {4});
    t.add(par, tok, rows, temp, 0.9f, 500 + r, {4});
  }
  const Result ch = run(c);
  const TreeResult tr = run_tree(t, 2);
  ASSERT_TRUE(ch.st.ok()) << ch.st.message;
  ASSERT_TRUE(tr.st.ok()) << tr.st.message;
  EXPECT_EQ(tr.accepted, ch.accepted);
  EXPECT_EQ(tr.tokens, ch.tokens);
  EXPECT_EQ(tr.status, ch.status);
  EXPECT_EQ(tr.logprobs, ch.logprobs);
  int64_t some = 0;
  for (int32_t a : ch.accepted) some += a > 0;
  EXPECT_GT(some, 50);  // (the comparison covers accepted drafts, not only rejections)
}

// A tree of three children of the root (one token twice), each with two children: the first
// emitted token has the root row's distribution, and the second, after an accepted child, that
// child's row's (its token in the history).
TEST(VerifyTree, SiblingsKeepTheTargetsDistribution) {
  const int64_t v = 10, n_req = 30000;
  std::mt19937_64 g(71);
  std::vector<std::vector<float>> rows;
  for (int i = 0; i < 10; ++i) rows.push_back(random_row(g, v, 1.2f));
  // nodes: 0 root; 1, 2, 3 children of the root (tokens 4, 7, 4); 4..9 two children each
  const std::vector<int32_t> par = {-1, 0, 0, 0, 1, 1, 2, 2, 3, 3};
  const std::vector<int32_t> tok = {0, 4, 7, 4, 1, 2, 3, 1, 5, 6};
  Tree t;
  t.v = v;
  t.frequency = 0.5f;
  for (int64_t r = 0; r < n_req; ++r) t.add(par, tok, rows, 1.0f, 0.95f, 9000 + r, {2});
  const TreeResult res = run_tree(t, 2);
  ASSERT_TRUE(res.st.ok()) << res.st.message;
  const std::vector<double> p0 = reference_probs(rows[0], 1.0f, 0.95f, 0, 0.5f, {2});
  std::vector<uint64_t> c0(static_cast<size_t>(v), 0);
  std::vector<std::vector<uint64_t>> c1(3, std::vector<uint64_t>(static_cast<size_t>(v), 0));
  for (int64_t r = 0; r < n_req; ++r) {
    const size_t o = static_cast<size_t>(10 * r);
    ASSERT_EQ(res.status[static_cast<size_t>(r)], lmsample::kRowOk);
    ++c0[static_cast<size_t>(res.tokens[o])];
    if (res.accepted[static_cast<size_t>(r)] >= 1) {
      const int32_t node = res.path[o];
      ASSERT_TRUE(node == 1 || node == 2) << node;  // (node 3 repeats node 1's token: never)
      EXPECT_EQ(res.tokens[o], tok[static_cast<size_t>(node)]);
      ++c1[static_cast<size_t>(node)][static_cast<size_t>(res.tokens[o + 1])];
    }
  }
  const lmsample::check::ChiSquare x0 = lmsample::check::chi_square_test(c0, p0);
  EXPECT_GT(x0.p_value, 1e-4) << "first token: chi-square " << x0.statistic;
  for (int node = 1; node <= 2; ++node) {
    const std::vector<double> p1 = reference_probs(rows[static_cast<size_t>(node)], 1.0f, 0.95f, 0,
                                                   0.5f, {2, tok[static_cast<size_t>(node)]});
    const lmsample::check::ChiSquare x1 =
        lmsample::check::chi_square_test(c1[static_cast<size_t>(node)], p1);
    EXPECT_GT(x1.p_value, 1e-4) << "after node " << node << ": chi-square " << x1.statistic;
  }
}

TEST(VerifyTree, BadTreesNameTheRequestAndNodeAndWriteNothing) {
  const int64_t v = 6;
  std::mt19937_64 g(81);
  const std::vector<float> row = random_row(g, v, 1.0f);
  const auto make = [&](const std::vector<int32_t>& par, const std::vector<int32_t>& tok) {
    Tree t;
    t.v = v;
    t.add({-1, 0}, {0, 1}, {row, row}, 1.0f, 1.0f, 1);
    t.add(par, tok, std::vector<std::vector<float>>(par.size(), row), 1.0f, 1.0f, 2);
    return t;
  };
  const auto expect_error = [](const Tree& t, const std::string& needle) {
    const TreeResult res = run_tree(t);
    EXPECT_FALSE(res.st.ok());
    EXPECT_NE(res.st.message.find(needle), std::string::npos) << res.st.message;
    for (int32_t x : res.tokens) EXPECT_EQ(x, -7);
    for (int32_t x : res.path) EXPECT_EQ(x, -7);
  };
  expect_error(make({-1, 0, 3, 1}, {0, 1, 2, 3}), "request 1: node 2 has parent 3");
  expect_error(make({-1, 0, 2}, {0, 1, 2}), "request 1: node 2 has parent 2");  // a cycle
  expect_error(make({0, 0}, {0, 1}), "request 1: node 0 (the root) has parent 0");
  expect_error(make({-1, 0, 0}, {0, 1, 6}), "request 1: node 2 has token 6");
  Tree big;
  big.v = v;
  std::vector<int32_t> par(static_cast<size_t>(lmsample::kMaxTreeNodes) + 1, 0), tok(par.size(), 0);
  par[0] = -1;
  big.add(par, tok, std::vector<std::vector<float>>(par.size(), row), 1.0f, 1.0f, 3);
  expect_error(big, "request 0: 1025 nodes");
  // a path of kMaxDrafts drafts is allowed, one more is not (a path is a chain of drafts)
  std::vector<int32_t> deep(static_cast<size_t>(lmsample::kMaxDrafts) + 2),
      deep_tok(deep.size(), 0);
  for (size_t i = 0; i < deep.size(); ++i) deep[i] = static_cast<int32_t>(i) - 1;
  expect_error(make(deep, deep_tok), "request 1: node 65 is at depth 65");
  deep.pop_back();
  deep_tok.pop_back();
  EXPECT_TRUE(run_tree(make(deep, deep_tok)).st.ok());
  // max_depth: a bound the call states, checked; the bound itself too
  Tree capped = make({-1, 0, 1, 0}, {0, 1, 2, 3});  // request 1: node 2 at depth 2
  capped.max_depth = 1;
  expect_error(capped, "request 1: node 2 is at depth 2 (deeper than max_depth = 1 drafts)");
  capped.max_depth = -2;
  expect_error(capped, "max_depth = -2 (must be 0, not stated, to kMaxDrafts = 64)");
  capped.max_depth = 2;
  const TreeResult bounded = run_tree(capped);
  capped.max_depth = 0;
  const TreeResult free = run_tree(capped);
  ASSERT_TRUE(bounded.st.ok()) << bounded.st.message;
  EXPECT_EQ(bounded.tokens, free.tokens);
  EXPECT_EQ(bounded.path, free.path);
}

}  // namespace
