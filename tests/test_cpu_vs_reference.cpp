// lmsample::sample on the CPU backend against the reference (src/check/reference.cpp), bit for bit:
// token, status, kept-set size, logprob and top logprobs, over thousands of random rows with mixed
// parameters in every batch.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>
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
