// A row's outputs are a pure function of the row: the same bits whatever the batch size, the row's
// position, the other rows, the thread count and the memory layout (row stride, bitmask row length,
// CSR offsets base, parameter arrays given or left null).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cpu/sample_cpu.hpp"
#include "test_util.hpp"

using lmsample::DType;
using lmstest::Batch;
using lmstest::Layout;
using lmstest::OutBuf;
using lmstest::Rng;
using lmstest::RowSpec;

namespace {

// The outputs of one row, bit for bit.
struct RowOut {
  int32_t token, status, kept;
  uint32_t logprob;
  std::vector<int32_t> top_ids;
  std::vector<uint32_t> top_lp;
  bool operator==(const RowOut& o) const {
    return token == o.token && status == o.status && kept == o.kept && logprob == o.logprob &&
           top_ids == o.top_ids && top_lp == o.top_lp;
  }
};

RowOut row_out(const OutBuf& out, int64_t r) {
  RowOut o{out.tokens[static_cast<size_t>(r)],
           out.status[static_cast<size_t>(r)],
           out.kept[static_cast<size_t>(r)],
           lmstest::bits_of(out.logprob[static_cast<size_t>(r)]),
           {},
           {}};
  for (int32_t j = 0; j < out.n_top; ++j) {
    const auto k = static_cast<size_t>(r * out.n_top + j);
    o.top_ids.push_back(out.top_ids[k]);
    o.top_lp.push_back(lmstest::bits_of(out.top_logprobs[k]));
  }
  return o;
}

std::string show(const RowOut& o) {
  return "token " + std::to_string(o.token) + " status " + std::to_string(o.status) + " kept " +
         std::to_string(o.kept) + " logprob bits " + std::to_string(o.logprob);
}

// Runs `rows` with the probe rows at `positions` and returns each probe's outputs.
std::vector<RowOut> run_with(DType dtype, int64_t vocab, const std::vector<RowSpec>& probes,
                             int64_t batch_size, Rng& rng, int threads, const Layout& layout,
                             int32_t top) {
  std::vector<RowSpec> rows;
  std::vector<int64_t> where;
  // probes at random distinct positions, filler rows (random parameters) everywhere else
  std::vector<int64_t> slots(static_cast<size_t>(batch_size));
  for (int64_t i = 0; i < batch_size; ++i) slots[static_cast<size_t>(i)] = i;
  std::shuffle(slots.begin(), slots.end(), rng.engine());
  std::vector<int64_t> probe_at(static_cast<size_t>(batch_size), -1);
  for (size_t p = 0; p < probes.size(); ++p)
    probe_at[static_cast<size_t>(slots[p])] = static_cast<int64_t>(p);
  where.assign(probes.size(), -1);
  for (int64_t i = 0; i < batch_size; ++i) {
    const int64_t p = probe_at[static_cast<size_t>(i)];
    if (p >= 0) {
      rows.push_back(probes[static_cast<size_t>(p)]);
      where[static_cast<size_t>(p)] = i;
    } else {
      rows.push_back(lmstest::random_row(rng, dtype, vocab));
    }
  }
  Batch batch(dtype, vocab, std::move(rows), top, layout);
  OutBuf out(batch_size, top);
  lmstest::run_cpu(batch.request(), out, threads);
  std::vector<RowOut> res;
  for (const int64_t w : where) res.push_back(row_out(out, w));
  return res;
}

}  // namespace

TEST(Invariance, PositionBatchSizeThreadsLayout) {
  Rng rng(31337);
  struct Case {
    DType dtype;
    int64_t vocab;
  };
  const Case cases[] = {{DType::kFloat32, 1000},
                        {DType::kBFloat16, 3000},
                        {DType::kFloat16, 257},
                        {DType::kFloat32, 32000}};
  for (const Case& c : cases) {
    // Probe rows: a mix of every kind (filters, penalties, masks, specials, bad parameters).
    std::vector<RowSpec> probes;
    for (int i = 0; i < 7; ++i) {
      lmstest::RowMix mix;
      mix.bad_param = 0.1;
      probes.push_back(lmstest::random_row(rng, c.dtype, c.vocab, mix));
    }
    const int32_t top = 5;
    // Baseline: each probe alone in a batch of 1, one thread, default layout.
    std::vector<RowOut> base;
    for (const RowSpec& p : probes) {
      Rng filler(1);
      base.push_back(run_with(c.dtype, c.vocab, {p}, 1, filler, 1, Layout{}, top)[0]);
    }
    const int64_t sizes[] = {7, 99};
    const int thread_counts[] = {1, 2, 3, 8};
    for (const int64_t b : sizes) {
      for (const int threads : thread_counts) {
        Layout layout;
        layout.stride_extra = threads == 1 ? 0 : rng.range(1, 100);
        layout.mask_extra_words = threads >= 3 ? rng.range(1, 4) : 0;
        layout.csr_base = threads == 2 ? rng.range(1, 20) : 0;
        layout.always_pass_params = threads == 8;
        const std::vector<RowOut> got =
            run_with(c.dtype, c.vocab, probes, b, rng, threads, layout, top);
        for (size_t p = 0; p < probes.size(); ++p) {
          EXPECT_TRUE(got[p] == base[p])
              << lmstest::dtype_name(c.dtype) << " V=" << c.vocab << " batch " << b << " threads "
              << threads << " probe " << p << ": " << show(got[p]) << " vs alone " << show(base[p])
              << "\n  " << lmstest::describe(probes[p]);
        }
      }
    }
  }
}

TEST(Invariance, SameRowEverywhereInOneBatch) {
  // One row repeated 99 times with 3 threads: every copy gives the same outputs.
  Rng rng(4711);
  for (int rep = 0; rep < 6; ++rep) {
    const DType dtype = rep % 3 == 0   ? DType::kFloat32
                        : rep % 3 == 1 ? DType::kBFloat16
                                       : DType::kFloat16;
    const RowSpec row = lmstest::random_row(rng, dtype, 5000);
    std::vector<RowSpec> rows(99, row);
    Batch batch(dtype, 5000, std::move(rows), 3);
    OutBuf out(99, 3);
    lmstest::run_cpu(batch.request(), out, 3);
    const RowOut first = row_out(out, 0);
    for (int64_t r = 1; r < 99; ++r) {
      ASSERT_TRUE(row_out(out, r) == first)
          << "copy " << r << ": " << show(row_out(out, r)) << " vs " << show(first);
    }
  }
}

TEST(Invariance, ThreadCountZeroMeansAllAndChangesNothing) {
  Rng rng(99);
  std::vector<RowSpec> rows;
  for (int i = 0; i < 40; ++i) rows.push_back(lmstest::random_row(rng, DType::kFloat32, 2000));
  Batch batch(DType::kFloat32, 2000, std::move(rows), 2);
  OutBuf a(40, 2), b(40, 2);
  lmstest::run_cpu(batch.request(), a, 1);
  lmstest::run_cpu(batch.request(), b, 0);
  EXPECT_EQ(lmstest::first_difference(b, a, "threads=0", "threads=1"), "");
}

TEST(Invariance, RepeatedCallsAreIdentical) {
  // No state is carried between calls: the same request twice gives the same bits.
  Rng rng(100);
  std::vector<RowSpec> rows;
  for (int i = 0; i < 30; ++i) rows.push_back(lmstest::random_row(rng, DType::kBFloat16, 4096));
  Batch batch(DType::kBFloat16, 4096, std::move(rows), 4);
  OutBuf a(30, 4), b(30, 4);
  lmstest::run_cpu(batch.request(), a, 2);
  lmstest::run_cpu(batch.request(), b, 2);
  EXPECT_EQ(lmstest::first_difference(b, a, "second", "first"), "");
}

TEST(Invariance, InstructionSetBuildsAgree) {
  // The CPU backend's AVX2 build and its portable build return the same bits.
  {
    lmstest::ScopedIsa isa(nullptr);
    RecordProperty("default_isa", lmsample::cpu::isa_name());
  }
  {
    lmstest::ScopedIsa isa("baseline");
    EXPECT_STREQ(lmsample::cpu::isa_name(), "baseline");
  }
  Rng rng(2718);
  const DType dtypes[] = {DType::kFloat32, DType::kBFloat16, DType::kFloat16};
  for (const DType dtype : dtypes) {
    for (const int64_t v : {int64_t{100}, int64_t{5000}, int64_t{151936}}) {
      const int n = v > 10000 ? 6 : 60;
      std::vector<RowSpec> rows;
      for (int i = 0; i < n; ++i) rows.push_back(lmstest::random_row(rng, dtype, v));
      Batch batch(dtype, v, std::move(rows), 8);
      OutBuf a(n, 8), b(n, 8);
      {
        lmstest::ScopedIsa isa(nullptr);
        lmstest::run_cpu(batch.request(), a, 2);
      }
      {
        lmstest::ScopedIsa isa("baseline");
        lmstest::run_cpu(batch.request(), b, 2);
      }
      EXPECT_EQ(lmstest::first_difference(a, b, "default", "baseline"), "")
          << lmstest::dtype_name(dtype) << " V=" << v;
    }
  }
}
