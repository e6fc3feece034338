// RowParams::defaults (one value for every row whose array is null): the same bits as the same
// value passed as an array, on the CPU backend and through the C API; a used value that is not
// valid is a structural error that writes nothing, an unused one is ignored.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "lmsample/lmsample.h"
#include "test_util.hpp"

using lmsample::Code;
using lmsample::DType;
using lmstest::Batch;
using lmstest::OutBuf;
using lmstest::RowSpec;

namespace {

// `rows` random rows that all share one value of every parameter (`base`'s), logits of their own.
std::vector<RowSpec> uniform_rows(lmstest::Rng& rng, DType dtype, int64_t v, int64_t rows,
                                  const RowSpec& base) {
  std::vector<RowSpec> out;
  lmstest::RowMix mix;
  mix.mask = mix.bias = mix.penalties = mix.bad_param = mix.bad_token_id = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    RowSpec row = lmstest::random_row(rng, dtype, v, mix);
    row.temperature = base.temperature;
    row.top_k = base.top_k;
    row.top_p = base.top_p;
    row.min_p = base.min_p;
    row.repetition = base.repetition;
    row.frequency = base.frequency;
    row.presence = base.presence;
    row.seed = base.seed;
    row.step = base.step;
    row.substream = base.substream;
    if (base.repetition != 1.0f || base.frequency != 0.0f || base.presence != 0.0f) {
      row.prompt = {static_cast<int32_t>(r % v), 3};
      row.output = {1, 1, static_cast<int32_t>((r * 7) % v)};
    }
    out.push_back(std::move(row));
  }
  return out;
}

OutBuf run(const std::vector<RowSpec>& rows, DType dtype, int64_t v, int32_t top, bool defaults,
           bool* used_defaults = nullptr) {
  lmstest::Layout layout;
  layout.uniform_as_defaults = defaults;
  Batch batch(dtype, v, rows, top, layout);
  if (used_defaults) {
    const lmsample::RowParams& p = batch.request().params;
    *used_defaults = !p.temperature && !p.top_k && !p.top_p && !p.min_p && !p.seed && !p.step;
  }
  OutBuf out(batch.batch(), top);
  const lmsample::Status st = lmstest::run_cpu(batch.request(), out, 2);
  EXPECT_TRUE(st.ok()) << st.message;
  return out;
}

TEST(RowDefaults, SameBitsAsArraysOfTheSameValue) {
  lmstest::Rng rng(20261201);
  const std::vector<RowSpec> settings = [] {
    std::vector<RowSpec> s(6);
    s[0].temperature = 0.0f;  // greedy
    s[1].temperature = 0.7f;  // temperature alone
    s[2].temperature = 0.8f, s[2].top_p = 0.9f;
    s[3].top_k = 40, s[3].top_p = 0.95f, s[3].temperature = 1.3f;
    s[4].min_p = 0.05f, s[4].temperature = 0.6f;
    s[5].repetition = 1.2f, s[5].frequency = 0.5f, s[5].presence = -0.3f, s[5].top_k = 7;
    for (size_t i = 0; i < s.size(); ++i) {
      s[i].seed = 1234 + i;
      s[i].step = 99 * i;
      s[i].substream = static_cast<uint32_t>(i % 2);
    }
    return s;
  }();
  for (const DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    for (size_t i = 0; i < settings.size(); ++i) {
      const int64_t v = 1000 + 37 * static_cast<int64_t>(i);
      const std::vector<RowSpec> rows = uniform_rows(rng, dtype, v, 9, settings[i]);
      bool used = false;
      const OutBuf with_arrays = run(rows, dtype, v, 3, false);
      const OutBuf with_defaults = run(rows, dtype, v, 3, true, &used);
      ASSERT_TRUE(used) << "the layout did not move the parameters to defaults";
      EXPECT_EQ(lmstest::first_difference(with_defaults, with_arrays, "defaults", "arrays"), "")
          << "setting " << i << " " << lmstest::dtype_name(dtype);
    }
  }
}

TEST(RowDefaults, DefaultsMatterWhereTheArrayIsNull) {
  // a greedy default changes the result of a flat-ish row; an array given overrides it
  const int64_t v = 64;
  RowSpec row;
  row.f32.assign(v, 0.0f);
  row.f32[17] = 0.5f;
  row.f32[40] = 0.5f;
  Batch batch(DType::kFloat32, v, {row, row});
  lmsample::Request req = batch.request();
  req.params.defaults.temperature = 0.0f;
  OutBuf out(2, 0);
  ASSERT_TRUE(lmstest::run_cpu(req, out, 1).ok());
  EXPECT_EQ(out.tokens[0], 17);  // greedy: lowest id among the tied maxima
  EXPECT_EQ(out.tokens[1], 17);
  const std::vector<float> hot = {1e6f, 1e6f};  // the array wins: nearly uniform
  req.params.temperature = hot.data();
  std::vector<int> seen(v, 0);
  const std::vector<uint64_t> steps = {0, 1};
  req.params.step = steps.data();
  for (uint64_t seed = 0; seed < 40; ++seed) {
    req.params.defaults.seed = seed;
    OutBuf o(2, 0);
    ASSERT_TRUE(lmstest::run_cpu(req, o, 1).ok());
    for (int32_t t : o.tokens) seen[static_cast<size_t>(t)] = 1;
  }
  int distinct = 0;
  for (int s : seen) distinct += s;
  EXPECT_GT(distinct, 20);  // not greedy: the array's temperature was used
}

struct BadDefault {
  const char* name;
  void (*set)(lmsample::RowDefaults&);
  const char* needle;
};

TEST(RowDefaults, BadUsedDefaultIsStructuralAndWritesNothing) {
  static float g_nan;
  g_nan = std::numeric_limits<float>::quiet_NaN();
  const BadDefault cases[] = {
      {"temperature", [](lmsample::RowDefaults& d) { d.temperature = -1.0f; }, "temperature"},
      {"temperature_nan", [](lmsample::RowDefaults& d) { d.temperature = g_nan; }, "temperature"},
      {"top_k", [](lmsample::RowDefaults& d) { d.top_k = -3; }, "top_k = -3"},
      {"top_p", [](lmsample::RowDefaults& d) { d.top_p = 0.0f; }, "top_p = 0"},
      {"min_p", [](lmsample::RowDefaults& d) { d.min_p = 1.5f; }, "min_p = 1.5"},
      {"repetition", [](lmsample::RowDefaults& d) { d.repetition_penalty = 0.0f; },
       "repetition_penalty"},
      {"frequency", [](lmsample::RowDefaults& d) { d.frequency_penalty = 3.0f; },
       "frequency_penalty"},
      {"presence", [](lmsample::RowDefaults& d) { d.presence_penalty = -2.5f; },
       "presence_penalty"},
  };
  lmstest::Rng rng(5);
  std::vector<RowSpec> rows;
  for (int i = 0; i < 3; ++i) rows.push_back(lmstest::random_row(rng, DType::kFloat32, 300, {}));
  for (RowSpec& r : rows) {  // valid parameters, so that only the default can be wrong
    RowSpec plain;
    plain.f32 = r.f32;
    r = plain;
  }
  Batch batch(DType::kFloat32, 300, rows);
  for (const BadDefault& c : cases) {
    lmsample::Request req = batch.request();
    c.set(req.params.defaults);
    OutBuf out(3, 0);
    const lmsample::Status st = lmstest::run_cpu(req, out, 2);
    EXPECT_EQ(st.code, Code::kInvalidArgument) << c.name;
    EXPECT_NE(st.message.find("params.defaults"), std::string::npos) << st.message;
    EXPECT_NE(st.message.find(c.needle), std::string::npos) << st.message;
    EXPECT_TRUE(out.untouched()) << c.name;
  }
  // unused: every row has its own array for the parameter, so the default is never read
  lmsample::Request req = batch.request();
  const std::vector<int32_t> k = {5, 5, 5};
  req.params.top_k = k.data();
  req.params.defaults.top_k = -3;
  OutBuf out(3, 0);
  EXPECT_TRUE(lmstest::run_cpu(req, out, 2).ok());
}

TEST(RowDefaults, CApiCarriesDefaults) {
  const int64_t v = 500;
  lmstest::Rng rng(77);
  RowSpec base;
  base.temperature = 0.9f;
  base.top_k = 20;
  base.top_p = 0.8f;
  base.seed = 42;
  base.step = 3;
  const std::vector<RowSpec> rows = uniform_rows(rng, DType::kFloat32, v, 5, base);
  const OutBuf expect = run(rows, DType::kFloat32, v, 0, false);

  Batch batch(DType::kFloat32, v, rows);
  lms_request c;
  lms_request_init(&c);
  EXPECT_EQ(c.defaults.temperature, 1.0f);
  EXPECT_EQ(c.defaults.top_p, 1.0f);
  EXPECT_EQ(c.defaults.repetition_penalty, 1.0f);
  c.logits = batch.request().logits.data;
  c.dtype = LMS_DTYPE_F32;
  c.batch = 5;
  c.vocab = v;
  c.defaults.temperature = 0.9f;
  c.defaults.top_k = 20;
  c.defaults.top_p = 0.8f;
  c.defaults.seed = 42;
  c.defaults.step = 3;
  OutBuf got(5, 0);
  lms_outputs o;
  lms_outputs_init(&o);
  o.tokens = got.tokens.data();
  o.status = got.status.data();
  o.kept = got.kept.data();
  o.logprob = got.logprob.data();
  lms_exec e;
  lms_exec_init(&e);
  size_t bytes = 0;
  ASSERT_EQ(lms_workspace_size(&c, &e, &bytes), LMS_OK);
  std::vector<unsigned char> ws(bytes + 1);
  ASSERT_EQ(lms_sample(&c, &o, ws.data(), bytes, &e), LMS_OK) << lms_last_error();
  EXPECT_EQ(lmstest::first_difference(got, expect, "c_api", "arrays"), "");

  c.defaults.top_p = -1.0f;
  OutBuf bad(5, 0);
  o.tokens = bad.tokens.data();
  o.status = bad.status.data();
  o.kept = bad.kept.data();
  o.logprob = bad.logprob.data();
  EXPECT_EQ(lms_sample(&c, &o, ws.data(), bytes, &e), LMS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(lms_last_error()).find("params.defaults: top_p = -1"), std::string::npos)
      << lms_last_error();
  EXPECT_TRUE(bad.untouched());
}

}  // namespace
