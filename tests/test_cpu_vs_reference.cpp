// lmsample::sample on the CPU backend against the reference (src/check/reference.cpp), bit for bit:
// token, status, kept-set size, logprob and top logprobs, over thousands of random rows with mixed
// parameters in every batch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "check/reference.hpp"
#include "test_util.hpp"

using lmsample::DType;
using lmstest::Batch;
using lmstest::Layout;
using lmstest::OutBuf;
using lmstest::Rng;
using lmstest::RowSpec;

namespace {

// Runs both implementations on one batch and reports the first difference with its row's inputs.
// The CPU backend runs twice: with the instruction-set build it picks here (AVX2 where available)
// and with the portable build (LMSAMPLE_CPU_ISA=baseline).
void expect_same(const Batch& batch, int threads, const std::string& where) {
  const lmsample::Request& req = batch.request();
  OutBuf want(batch.batch(), req.top_logprobs);
  lmsample::check::reference_sample_batch(req, want.outputs());
  bool any_bad = false;
  for (const int32_t s : want.status) any_bad = any_bad || s >= lmsample::kRowBadTemperature;
  for (const bool baseline : {false, true}) {
    OutBuf got(batch.batch(), req.top_logprobs);
    lmsample::Status st;
    {
      lmstest::ScopedIsa isa(baseline ? "baseline" : nullptr);
      st = lmstest::run_cpu(req, got, threads);
    }
    const std::string name = std::string("cpu/") + (baseline ? "baseline" : "default-isa");
    EXPECT_EQ(st.code, any_bad ? lmsample::Code::kInvalidRowParameter : lmsample::Code::kOk)
        << where << " " << name << ": " << st.message;
    const std::string diff = lmstest::first_difference(got, want, name.c_str(), "reference");
    if (!diff.empty()) {
      const int64_t row = std::stoll(diff.substr(4));
      ADD_FAILURE() << where << ": " << diff << "\n  row inputs: "
                    << lmstest::describe(batch.rows()[static_cast<size_t>(row)]);
    }
  }
}

class CpuVsReference : public ::testing::TestWithParam<std::tuple<DType, int64_t>> {};

}  // namespace

TEST_P(CpuVsReference, RandomMixedBatches) {
  const auto [dtype, vocab] = GetParam();
  // rows per vocabulary: thousands in total, fewer where V is large
  int batches = 12, rows = 64;
  if (vocab >= 151936) {
    batches = 4;
    rows = 12;
  } else if (vocab >= 32000) {
    batches = 6;
    rows = 20;
  } else if (vocab >= 1000) {
    batches = 8;
    rows = 64;
  }
  Rng rng(1000 + static_cast<uint64_t>(vocab) * 7 + static_cast<uint64_t>(dtype));
  for (int b = 0; b < batches; ++b) {
    std::vector<RowSpec> spec;
    for (int r = 0; r < rows; ++r) spec.push_back(lmstest::random_row(rng, dtype, vocab));
    Layout layout;
    layout.stride_extra = rng.chance(0.5) ? rng.range(1, 70) : 0;
    layout.mask_extra_words = rng.chance(0.3) ? rng.range(1, 3) : 0;
    layout.csr_base = rng.chance(0.5) ? rng.range(1, 9) : 0;
    layout.always_pass_params = rng.chance(0.3);
    const int32_t top = static_cast<int32_t>(
        std::vector<int64_t>{0, 1, 5, 20, 64}[static_cast<size_t>(rng.range(0, 4))]);
    Batch batch(dtype, vocab, std::move(spec), top, layout);
    const int threads = static_cast<int>(rng.range(1, 4));
    expect_same(batch, threads,
                std::string(lmstest::dtype_name(dtype)) + " V=" + std::to_string(vocab) +
                    " batch " + std::to_string(b));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Vocabularies, CpuVsReference,
    ::testing::Combine(::testing::Values(DType::kFloat32, DType::kBFloat16, DType::kFloat16),
                       ::testing::Values(int64_t{1}, int64_t{2}, int64_t{111}, int64_t{1000},
                                         int64_t{32000}, int64_t{151936})),
    [](const auto& param_info) {
      return std::string(lmstest::dtype_name(std::get<0>(param_info.param))) + "_V" +
             std::to_string(std::get<1>(param_info.param));
    });

// Each filter alone and in combination, on quantized logits (many exact ties at every threshold).
TEST(CpuVsReferenceFilters, TiesAtThresholds) {
  Rng rng(77);
  const int64_t vocab = 5000;
  std::vector<RowSpec> spec;
  for (int i = 0; i < 240; ++i) {
    RowSpec row;
    std::vector<float> x(static_cast<size_t>(vocab));
    const double q = i % 3 == 0 ? 1.0 : 8.0;
    for (float& xi : x) xi = static_cast<float>(std::round(rng.normal(0.0, 2.0) * q) / q);
    row.f32 = x;
    row.temperature = std::vector<float>{1.0f, 0.5f, 2.0f, 0.1f}[static_cast<size_t>(i % 4)];
    switch (i % 6) {
      case 0:
        row.top_k = static_cast<int32_t>(rng.range(1, 3000));
        break;
      case 1:
        row.top_p = static_cast<float>(rng.uniform(0.01, 0.999));
        break;
      case 2:
        row.min_p = static_cast<float>(rng.uniform(0.001, 0.9));
        break;
      case 3:
        row.top_k = static_cast<int32_t>(rng.range(1, 3000));
        row.top_p = static_cast<float>(rng.uniform(0.01, 0.999));
        break;
      case 4:
        row.top_k = static_cast<int32_t>(rng.range(1, 200));
        row.min_p = static_cast<float>(rng.uniform(0.001, 0.5));
        row.top_p = static_cast<float>(rng.uniform(0.3, 0.95));
        break;
      default:
        row.top_p = static_cast<float>(rng.uniform(0.9, 0.9999));
        row.temperature = 5.0f;  // thousands of candidates: the radix top-p path
        break;
    }
    row.seed = rng.u64();
    row.step = static_cast<uint64_t>(i);
    spec.push_back(std::move(row));
  }
  Batch batch(DType::kFloat32, vocab, std::move(spec), 8);
  expect_same(batch, 2, "ties");
}

// Large top-k (radix select) and top-p over many candidates, at the largest vocabulary.
TEST(CpuVsReferenceFilters, LargeKAndWideTopP) {
  Rng rng(78);
  const int64_t vocab = 151936;
  std::vector<RowSpec> spec;
  for (int i = 0; i < 8; ++i) {
    RowSpec row;
    std::vector<float> x = lmstest::random_logits(rng, vocab);
    lmstest::set_logits(row, i % 2 ? DType::kBFloat16 : DType::kFloat32, x);
    row.f32 = x;
    row.temperature = i % 4 == 3 ? 3.0f : 1.0f;
    row.top_k = std::vector<int32_t>{1025, 50000, 151935, 0}[static_cast<size_t>(i % 4)];
    row.top_p = i % 2 ? 0.95f : 1.0f;
    row.seed = rng.u64();
    spec.push_back(std::move(row));
  }
  Batch batch(DType::kFloat32, vocab, std::move(spec), 3);
  expect_same(batch, 2, "large k");
}

// Random rows drawn with a tiny (t = 0) or a huge (t = W - 1) uniform: every draw sits on the first
// or last boundary of the running weights, where an off-by-one in the draw shows.
TEST(CpuVsReferenceFilters, ExtremeDraws) {
  Rng rng(79);
  for (const int64_t vocab : {3, 100, 5000}) {
    std::vector<RowSpec> spec;
    for (int i = 0; i < 120; ++i) {
      RowSpec row = lmstest::random_row(rng, DType::kFloat32, vocab);
      const bool low = i % 2 == 0;
      row.seed = low ? 0x0fedcba987654321ull : 0x0123456789abcdefull;
      row.step = low ? 0x2208c864e297b8e4ull : 0x85e14f3a5d3c2d96ull;
      row.substream = low ? 0xde595dbau : 0xedf0caf3u;
      if (i % 3 == 0) row.temperature = 0.05f;  // many weight-0 tokens around the drawn one
      spec.push_back(std::move(row));
    }
    Batch batch(DType::kFloat32, vocab, std::move(spec), 2);
    expect_same(batch, 2, "extreme draws V=" + std::to_string(vocab));
  }
}

// min-p on rows crowded at its boundary: the CPU backend skips blocks whose keys are all below a
// threshold it derives from min_p without computing a likelihood (rows.cpp, min_p_floor_key);
// tokens just below, at and just above e = min_p (and a body far below) must get the
// reference's kept sets and tokens, for small and large temperatures and min_p values.
TEST(CpuVsReferenceMinP, RowsCrowdedAtTheBoundary) {
  Rng rng(31337);
  for (const float min_p : {0.05f, 0.3f, 0.999f, 1e-20f, 1e-35f, 1.0f}) {
    for (const float temperature : {1.0f, 0.7f, 3.0f, 1e-3f, 40.0f}) {
      std::vector<RowSpec> rows;
      for (int r = 0; r < 6; ++r) {
        const int64_t v = 700 + 129 * r;
        std::vector<float> x(static_cast<size_t>(v));
        const double edge = static_cast<double>(temperature) * std::log(static_cast<double>(min_p));
        for (int64_t i = 0; i < v; ++i) {
          const int kind = static_cast<int>(rng.range(0, 3));
          double y;
          if (kind == 0) {  // within a few ulps of the boundary
            y = edge * (1.0 + rng.uniform(-1e-6, 1e-6));
          } else if (kind == 1) {  // within the prefilter's margin (1e-3 in z)
            y = edge + static_cast<double>(temperature) * rng.uniform(-2e-3, 2e-3);
          } else if (kind == 2) {  // far below
            y = edge - static_cast<double>(temperature) * rng.uniform(0.01, 30.0);
          } else {  // between the boundary and the maximum
            y = edge * rng.uniform(0.0, 1.0);
          }
          x[static_cast<size_t>(i)] = static_cast<float>(y);
        }
        x[static_cast<size_t>(rng.range(0, v - 1))] = 0.0f;  // the maximum
        RowSpec row;
        lmstest::set_logits(row, DType::kFloat32, x);
        row.temperature = temperature;
        row.min_p = min_p;
        row.top_k = r % 3 == 0 ? 0 : static_cast<int32_t>(rng.range(1, v));
        row.top_p = r % 2 == 0 ? 1.0f : 0.9f;
        row.seed = rng.u64();
        rows.push_back(std::move(row));
      }
      // one batch per row: rows of several vocabulary sizes
      for (size_t r = 0; r < rows.size(); ++r) {
        const int64_t v = static_cast<int64_t>(rows[r].f32.size());
        Batch batch(DType::kFloat32, v, {rows[r]});
        expect_same(batch, 1,
                    "min_p=" + std::to_string(min_p) + " T=" + std::to_string(temperature) +
                        " row " + std::to_string(r));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The one-pass paths of the CPU backend (src/cpu/rows.cpp): temperature alone (block weights,
// then a rescan of the block that holds the draw) and top-p alone (a probe of the tokens with
// likelihood >= 2^-12, whose candidates give the threshold when they hold the target).

namespace {

namespace core = lmsample::core;
using lmstest::kInf;
using lmstest::kNaN;

constexpr float kProbeLikelihood = 1.0f / 4096.0f;  // rows.cpp's kProbe (2^-12)

// The row's processed logits (the reference's) and settings, with its maximum and valid count.
struct Processed {
  int32_t status = lmsample::kRowOk;
  std::vector<float> y;
  core::RowSettings s;
  float m = -kInf;
  int64_t n_valid = 0;
  float inv_t = 0.0f;
};

Processed processed(const lmsample::Request& req, int64_t r) {
  Processed p;
  p.status = lmsample::check::reference_processed_logits(req, r, p.y, &p.s);
  for (const float yi : p.y) {
    if (yi > -kInf) {
      ++p.n_valid;
      p.m = std::max(p.m, yi);
    }
  }
  if (p.s.temperature > 0.0f) p.inv_t = core::div_rn(1.0f, p.s.temperature);
  return p;
}

// How the CPU backend's top-p-alone path treats row r, worked out here from the reference's
// processed logits and the core arithmetic: kProbe where ceil(top_p * W) is at most the weight of
// the tokens with likelihood >= 2^-12 (the threshold then comes from the probe's candidates),
// kFallback where it is not (the general candidate pass), kNone where the row does not take the
// top-p-alone path at all.
enum class TopPRoute { kNone, kProbe, kFallback };

TopPRoute top_p_route(const lmsample::Request& req, int64_t r) {
  const Processed p = processed(req, r);
  const core::RowSettings& s = p.s;
  if (p.status != lmsample::kRowOk || p.n_valid == 0 || p.m == kInf || !(s.temperature > 0.0f) ||
      !core::is_finite(p.inv_t) || s.min_p != 0.0f || !(s.top_p < 1.0f) ||
      (s.top_k > 0 && s.top_k < p.n_valid))
    return TopPRoute::kNone;
  uint64_t total = 0, probe = 0;
  for (const float yi : p.y) {
    if (!(yi > -kInf)) continue;
    const float e = core::rel_likelihood(yi, p.m, p.inv_t);
    total += core::mass_of(e);
    probe += e >= kProbeLikelihood ? core::mass_of(e) : 0;
  }
  return core::ceil_fraction(s.top_p, total) <= probe ? TopPRoute::kProbe : TopPRoute::kFallback;
}

// Whether a kProbe row also takes rows.cpp's narrower probe (kProbe2 = 2^-8: its tokens alone
// hold ceil(top_p * W), and the candidates are cut to them before ranking).
bool narrow_probe(const lmsample::Request& req, int64_t r) {
  if (top_p_route(req, r) != TopPRoute::kProbe) return false;
  const Processed p = processed(req, r);
  uint64_t total = 0, probe2 = 0;
  for (const float yi : p.y) {
    if (!(yi > -kInf)) continue;
    const float e = core::rel_likelihood(yi, p.m, p.inv_t);
    total += core::mass_of(e);
    probe2 += e >= 1.0f / 256.0f ? core::mass_of(e) : 0;
  }
  return core::ceil_fraction(p.s.top_p, total) <= probe2;
}

// Counts the rows of a batch by route.
struct RouteCounts {
  int probe = 0, fallback = 0, none = 0;
};
RouteCounts count_routes(const Batch& batch) {
  RouteCounts c;
  for (int64_t r = 0; r < batch.batch(); ++r) {
    switch (top_p_route(batch.request(), r)) {
      case TopPRoute::kProbe:
        ++c.probe;
        break;
      case TopPRoute::kFallback:
        ++c.fallback;
        break;
      default:
        ++c.none;
        break;
    }
  }
  return c;
}

// Sets a fraction of a row's tokens (never all of them) to -inf or NaN.
void sprinkle_invalid(Rng& rng, std::vector<float>& x, double fraction) {
  const auto v = static_cast<int64_t>(x.size());
  if (v < 2) return;
  const int64_t n = std::max<int64_t>(1, static_cast<int64_t>(fraction * static_cast<double>(v)));
  for (int64_t i = 0; i < n; ++i)
    x[static_cast<size_t>(rng.range(0, v - 1))] = rng.chance(0.5) ? -kInf : kNaN;
  x[static_cast<size_t>(rng.range(0, v - 1))] = 0.5f;  // at least one valid token
}

// The weight of the tokens at or above each distinct processed logit, highest first (the
// reference's top-p threshold is the first level whose running weight reaches the target).
struct Level {
  float y;
  uint64_t weight;  // of the tokens with this y
  uint64_t cum;     // of the tokens with y >= this y
};
std::vector<Level> levels_of(const Processed& p) {
  std::vector<float> ys;
  for (const float yi : p.y)
    if (yi > -kInf) ys.push_back(yi);
  std::sort(ys.begin(), ys.end(), [](float a, float b) { return a > b; });
  std::vector<Level> out;
  uint64_t cum = 0;
  for (const float yi : ys) {
    const uint64_t w = core::mass_of(core::rel_likelihood(yi, p.m, p.inv_t));
    cum += w;
    if (out.empty() || out.back().y != yi)
      out.push_back(Level{yi, w, cum});
    else {
      out.back().weight += w;
      out.back().cum = cum;
    }
  }
  return out;
}

// The smallest float p in (0, 1) with ceil(p * total) > c, or 0 when there is none.
float smallest_p_above(uint64_t c, uint64_t total) {
  uint32_t lo = 1, hi = core::float_bits(std::nextafter(1.0f, 0.0f));
  if (core::ceil_fraction(core::bits_float(hi), total) <= c) return 0.0f;
  while (lo < hi) {  // answer in [lo, hi]
    const uint32_t mid = lo + (hi - lo) / 2;
    if (core::ceil_fraction(core::bits_float(mid), total) > c)
      hi = mid;
    else
      lo = mid + 1;
  }
  return core::bits_float(lo);
}

// The reference's token of every row of a batch.
std::vector<int32_t> reference_tokens(const Batch& batch) {
  OutBuf want(batch.batch(), 0);
  lmsample::check::reference_sample_batch(batch.request(), want.outputs());
  return want.tokens;
}

}  // namespace

// Top-p alone (no top-k, min_p = 0, finite 1/T), where the backend's probe of the tokens with
// e >= 2^-12 holds the target (peaked rows, moderate p) and where it falls back to the general
// pass (a tail below 2^-12 that carries more than 1 - p of the weight), at T = 1 (the unit-T
// pass) and T != 1, small vocabularies (a single partial block, exactly one block, one block
// and a token) and large ones, with -inf / NaN tokens in some rows. Both routes must occur at
// every vocabulary (worked out from the core arithmetic, top_p_route).
TEST(CpuVsReferenceTopP, AloneProbeAndFallback) {
  Rng rng(2185842);
  const float ps[] = {0.5f, 0.9f, 0.99f, 0.999f, 0.99999f};
  const float ts[] = {1.0f, 0.7f, 1.3f};
  for (const int64_t v : {int64_t{3}, int64_t{64}, int64_t{65}, int64_t{1000}, int64_t{151936}}) {
    const int n_rows = v >= 151936 ? 12 : v >= 1000 ? 240 : 480;
    std::vector<RowSpec> rows;
    for (int i = 0; i < n_rows; ++i) {
      const int shape = i % 4;
      const float t = ts[static_cast<size_t>((i / 4) % 3)];
      // (at the largest vocabulary, 12 rows: every shape meets p = 0.9, 0.999 and 0.99999)
      const float p = v >= 151936
                          ? std::vector<float>{0.9f, 0.999f, 0.99999f}[static_cast<size_t>(i % 3)]
                          : ps[static_cast<size_t>((i / 12) % 5)];
      std::vector<float> x(static_cast<size_t>(v));
      switch (shape) {
        case 0:  // peaked: most of the weight at e >= 2^-12
          for (float& xi : x) xi = static_cast<float>(4.0 * rng.normal());
          break;
        case 1:  // flat-ish
          for (float& xi : x) xi = static_cast<float>(0.5 * rng.normal());
          break;
        case 2: {  // a few strong tokens over a body centred on the probe's likelihood
          const double edge =
              static_cast<double>(t) * std::log(static_cast<double>(kProbeLikelihood));
          for (float& xi : x) xi = static_cast<float>(edge + static_cast<double>(t) * rng.normal());
          const int64_t spikes = rng.range(1, 3);
          for (int64_t s = 0; s < spikes; ++s)
            x[static_cast<size_t>(rng.range(0, v - 1))] = static_cast<float>(rng.uniform(0.0, 2.0));
          break;
        }
        default:  // uniform in z over [-20, 0]: a tail of about 2^-12 of the weight below it
          for (float& xi : x) xi = static_cast<float>(static_cast<double>(t) * rng.uniform(-20, 0));
          break;
      }
      if (i % 7 == 3) sprinkle_invalid(rng, x, 0.1);
      RowSpec row;
      row.f32 = std::move(x);
      row.temperature = t;
      row.top_p = p;
      row.seed = rng.u64();
      row.step = static_cast<uint64_t>(rng.range(0, 1 << 20));
      rows.push_back(std::move(row));
    }
    Batch batch(DType::kFloat32, v, std::move(rows));
    const RouteCounts c = count_routes(batch);
    int narrow = 0;
    for (int64_t r = 0; r < batch.batch(); ++r) narrow += narrow_probe(batch.request(), r);
    EXPECT_GT(narrow, 0) << "V=" << v << ": no row took the narrower probe";
    EXPECT_LT(narrow, c.probe) << "V=" << v << ": every probe row took the narrower probe";
    EXPECT_GT(c.probe, 0) << "V=" << v << ": no row took the probe";
    EXPECT_GT(c.fallback, 0) << "V=" << v << ": no row fell back";
    RecordProperty("routes_V" + std::to_string(v),
                   std::to_string(c.probe) + " probe, " + std::to_string(c.fallback) + " fallback");
    expect_same(batch, 2, "top-p alone V=" + std::to_string(v));
  }
}

// Top-p alone on rows crowded at the probe's boundary: many tokens whose likelihood is within a
// few steps of 2^-12 (logits m + T ln 2^-12 moved by a few ulps, with exact ties, and a few
// ulps around 2^-12 (1 - 2^-10), the probe's candidate bound), with p chosen so that the target
// falls on each of those levels, at both ends of the range of p that picks it. Among them: the
// largest p whose target the tokens at e >= 2^-12 still hold (the probe, threshold on the lowest
// of them) and the smallest p whose target they do not (the fallback, threshold one level
// below). Vocabularies with few candidates (sorted) and with more than 2048 (radix select),
// T = 1 and T != 1, maxima where y - m rounds (distinct logits of equal likelihood).
TEST(CpuVsReferenceTopP, RowsCrowdedAtTheProbeBoundary) {
  Rng rng(4096);
  const std::pair<float, float> configs[] = {{0.0f, 1.0f},   {5.3f, 1.0f},  {-2.7f, 0.7f},
                                             {13.1f, 1.3f},  {0.0f, 40.0f}, {1000.0f, 1.0f},
                                             {0.25f, 0.05f}, {-60.0f, 3.0f}};
  int probe = 0, fallback = 0, boundary_rows = 0;
  for (const auto& [m, t] : configs) {
    for (const int64_t v : {int64_t{700}, int64_t{6001}}) {
      const float inv_t = core::div_rn(1.0f, t);
      const auto e_of = [&](float y) { return core::rel_likelihood(y, m, inv_t); };
      // the smallest logit (locally) whose likelihood reaches `bound`
      const auto crossing = [&](float bound) {
        float y = static_cast<float>(static_cast<double>(m) +
                                     static_cast<double>(t) * std::log(static_cast<double>(bound)));
        while (e_of(y) >= bound) y = std::nextafter(y, -kInf);
        while (e_of(y) < bound) y = std::nextafter(y, kInf);
        return y;
      };
      const float y_probe = crossing(kProbeLikelihood);
      const float y_low = crossing(kProbeLikelihood * (1.0f - 1.0f / 1024.0f));
      std::vector<float> crowd;
      for (int k = -8; k <= 8; ++k) {
        float y = y_probe;
        for (int j = 0; j < std::abs(k); ++j) y = std::nextafter(y, k < 0 ? -kInf : kInf);
        crowd.push_back(y);
      }
      for (int k = -3; k <= 3; ++k) {
        float y = y_low;
        for (int j = 0; j < std::abs(k); ++j) y = std::nextafter(y, k < 0 ? -kInf : kInf);
        crowd.push_back(y);
      }
      ASSERT_GE(e_of(y_probe), kProbeLikelihood);
      ASSERT_LT(e_of(std::nextafter(y_probe, -kInf)), kProbeLikelihood);

      std::vector<float> x(static_cast<size_t>(v));
      for (float& xi : x) {
        const double u = rng.uniform();
        if (u < 0.05) {  // between the boundary and the maximum
          xi = static_cast<float>(static_cast<double>(m) -
                                  static_cast<double>(t) * rng.uniform(0.0, 8.0));
        } else if (u < 0.7) {  // the crowd (many exact ties)
          xi = crowd[static_cast<size_t>(rng.range(0, static_cast<int64_t>(crowd.size()) - 1))];
        } else if (u < 0.98) {  // far below
          xi = static_cast<float>(static_cast<double>(m) -
                                  static_cast<double>(t) * rng.uniform(9.0, 40.0));
        } else {
          xi = rng.chance(0.5) ? -kInf : kNaN;
        }
      }
      x[static_cast<size_t>(rng.range(0, v - 1))] = m;
      x[static_cast<size_t>(rng.range(0, v - 1))] = m;  // the maximum, perhaps twice

      // the levels of this row, and the target range that puts the threshold on each level of
      // the crowd and on the levels next to it
      RowSpec base;
      base.f32 = x;
      base.temperature = t;
      std::vector<RowSpec> rows;
      std::vector<std::pair<size_t, TopPRoute>> boundary;  // rows at the probe's exact boundary
      {
        Batch probe_batch(DType::kFloat32, v, {base});
        const Processed pr = processed(probe_batch.request(), 0);
        ASSERT_EQ(pr.m, m);
        const std::vector<Level> lv = levels_of(pr);
        const uint64_t total = lv.back().cum;
        const float y_hi = crowd[16], y_lo = crowd[17];  // the crowd's highest and lowest logits
        for (size_t j = 1; j < lv.size(); ++j) {
          const bool near = lv[j].y <= y_hi && lv[j].y >= y_lo;
          const bool next_to = (j + 1 < lv.size() && lv[j + 1].y <= y_hi && lv[j].y > y_hi) ||
                               (lv[j - 1].y >= y_lo && lv[j].y < y_lo);
          if (!near && !next_to) continue;
          // targets in (cum[j-1], cum[j]] put the threshold on level j
          const float p_first = smallest_p_above(lv[j - 1].cum, total);
          const float p_after = smallest_p_above(lv[j].cum, total);
          if (p_first == 0.0f || p_after == 0.0f || !(p_first < p_after)) continue;
          const float p_last = std::nextafter(p_after, 0.0f);
          // the boundary itself: the largest p that puts the threshold on the lowest logit at
          // e >= 2^-12 and the smallest p that puts it one level below
          if (lv[j].y == y_probe) boundary.emplace_back(rows.size() + 1, TopPRoute::kProbe);
          if (lv[j - 1].y == y_probe) boundary.emplace_back(rows.size(), TopPRoute::kFallback);
          for (const float p : {p_first, p_last}) {
            RowSpec row = base;
            row.top_p = p;
            row.seed = rng.u64();
            rows.push_back(std::move(row));
          }
        }
      }
      Batch batch(DType::kFloat32, v, std::move(rows));
      const RouteCounts c = count_routes(batch);
      EXPECT_EQ(c.none, 0);
      EXPECT_EQ(boundary.size(), 2u) << "m=" << m << " T=" << t << " V=" << v;
      for (const auto& [r, route] : boundary) {
        EXPECT_TRUE(top_p_route(batch.request(), static_cast<int64_t>(r)) == route)
            << "m=" << m << " T=" << t << " V=" << v << " row " << r;
        ++boundary_rows;
      }
      probe += c.probe;
      fallback += c.fallback;
      expect_same(
          batch, 1,
          "crowd m=" + std::to_string(m) + " T=" + std::to_string(t) + " V=" + std::to_string(v));
    }
  }
  EXPECT_GT(probe, 100);
  EXPECT_GT(fallback, 100);
  EXPECT_EQ(boundary_rows, 2 * 2 * static_cast<int>(std::size(configs)));
  RecordProperty("routes",
                 std::to_string(probe) + " probe, " + std::to_string(fallback) + " fallback");
}

// Temperature alone (no filter, finite 1/T): the backend keeps each 64-token block's weight and
// rescans only the block that holds the draw. Draws must land in every block, the last partial
// one included (V not a multiple of 64), at T = 1 (the unit-T pass) and T != 1, on flat rows,
// rows with one strong token in a chosen block and position, rows with -inf / NaN tokens, rows
// whose valid tokens all lie in the last block or whose leading blocks weigh nothing, and draws
// at the first and the last unit of the total weight.
TEST(CpuVsReferenceTemperature, DrawsInEveryBlock) {
  Rng rng(6464);
  const float ts[] = {1.0f, 0.7f, 1.3f, 0.01f, 25.0f};
  for (const int64_t v : {int64_t{1}, int64_t{2}, int64_t{63}, int64_t{64}, int64_t{65},
                          int64_t{127}, int64_t{129}, int64_t{1000}, int64_t{4097}}) {
    const int64_t blocks = (v + 63) / 64;
    const int64_t last0 = (blocks - 1) * 64;  // first token of the last block
    std::vector<RowSpec> rows;
    int row_no = 0;
    const auto add = [&](std::vector<float> x, float t) {
      RowSpec row;
      row.f32 = std::move(x);
      row.temperature = t;
      switch (row_no++ % 8) {
        case 0:  // t = 0: the first token of positive weight
          row.seed = 0x0fedcba987654321ull;
          row.step = 0x2208c864e297b8e4ull;
          row.substream = 0xde595dbau;
          break;
        case 1:  // t = W - 1: the last token of positive weight
          row.seed = 0x0123456789abcdefull;
          row.step = 0x85e14f3a5d3c2d96ull;
          row.substream = 0xedf0caf3u;
          break;
        default:
          row.seed = rng.u64();
          row.step = static_cast<uint64_t>(rng.range(0, 100000));
          break;
      }
      rows.push_back(std::move(row));
    };
    for (size_t ti = 0; ti < std::size(ts); ++ti) {
      const float t = ts[ti];
      const double td = static_cast<double>(t);
      // flat rows: every token about equally likely
      for (int i = 0; i < std::max<int64_t>(16, blocks / 2); ++i) {
        std::vector<float> x(static_cast<size_t>(v));
        for (float& xi : x) xi = static_cast<float>(1e-3 * td * rng.normal());
        if (i % 3 == 0) sprinkle_invalid(rng, x, 0.2);
        add(std::move(x), t);
      }
      // one strong token in each block, at a position that moves from block to block; the body
      // is either faint (the draw is almost surely the strong token) or about as heavy
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t len = std::min<int64_t>(64, v - b * 64);
        const int64_t pos = b * 64 + (b * 37 + static_cast<int64_t>(ti) * 11) % len;
        const double body = rng.chance(0.5) ? 40.0 : std::log(static_cast<double>(v)) + 0.5;
        std::vector<float> x(static_cast<size_t>(v));
        for (float& xi : x) xi = static_cast<float>(td * (-body + 0.5 * rng.normal()));
        if (b % 2 == 1) sprinkle_invalid(rng, x, 0.1);
        x[static_cast<size_t>(pos)] = 2.0f;
        add(std::move(x), t);
      }
      // valid tokens only in the last block (the rest -inf or NaN)
      for (int i = 0; i < 4; ++i) {
        std::vector<float> x(static_cast<size_t>(v), -kInf);
        for (int64_t j = 0; j < v; ++j)
          if (rng.chance(0.5)) x[static_cast<size_t>(j)] = kNaN;
        for (int64_t j = last0; j < v; ++j)
          if (j == v - 1 || rng.chance(0.6))
            x[static_cast<size_t>(j)] = static_cast<float>(rng.normal());
        add(std::move(x), t);
      }
      // leading and trailing blocks of valid tokens that weigh nothing (e < 2^-39)
      for (int i = 0; i < 4; ++i) {
        std::vector<float> x(static_cast<size_t>(v));
        for (float& xi : x) xi = static_cast<float>(-td * rng.uniform(30.0, 80.0));
        const int64_t a = rng.range(0, v - 1), z = std::min<int64_t>(v - 1, a + rng.range(0, 70));
        for (int64_t j = a; j <= z; ++j)
          x[static_cast<size_t>(j)] = static_cast<float>(rng.normal());
        add(std::move(x), t);
      }
    }
    Batch batch(DType::kFloat32, v, std::move(rows), 1);
    const RouteCounts c = count_routes(batch);
    EXPECT_EQ(c.probe + c.fallback, 0);  // none of these rows has top-p
    expect_same(batch, 2, "temperature alone V=" + std::to_string(v));

    // every block, the last partial one included, holds some row's draw
    std::vector<int> hits(static_cast<size_t>(blocks), 0);
    for (const int32_t tok : reference_tokens(batch)) {
      ASSERT_GE(tok, 0);
      ++hits[static_cast<size_t>(tok / 64)];
    }
    for (int64_t b = 0; b < blocks; ++b)
      EXPECT_GT(hits[static_cast<size_t>(b)], 0) << "V=" << v << ": no draw in block " << b;
  }
}

// Temperature alone at the largest vocabulary and at one with a short last block: flat rows,
// rows whose weight sits in the first or the last block, -inf / NaN tokens.
TEST(CpuVsReferenceTemperature, LargeVocabularies) {
  Rng rng(151936);
  for (const int64_t v : {int64_t{151936}, int64_t{50001}}) {
    std::vector<RowSpec> rows;
    for (int i = 0; i < 12; ++i) {
      const float t = i % 3 == 0 ? 1.0f : i % 3 == 1 ? 0.7f : 1.3f;
      std::vector<float> x(static_cast<size_t>(v));
      const int shape = i / 3;
      for (float& xi : x)
        xi = static_cast<float>(shape == 0 ? 0.01 * rng.normal() : 3.0 * rng.normal() - 30.0);
      if (shape == 1) x[0] = 0.0f;
      if (shape == 2) x[static_cast<size_t>(v - 1)] = 0.0f;
      if (shape == 3) sprinkle_invalid(rng, x, 0.3);
      RowSpec row;
      row.f32 = std::move(x);
      row.temperature = t;
      row.seed = rng.u64();
      rows.push_back(std::move(row));
    }
    Batch batch(DType::kFloat32, v, std::move(rows), 2);
    expect_same(batch, 2, "temperature alone V=" + std::to_string(v));
  }
}
