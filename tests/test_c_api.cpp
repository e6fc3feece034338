// The C API (include/lmsample/lmsample.h) against the C++ API: same outputs bit for bit on random
// batches, the same codes, and lms_last_error() texts for bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "lmsample/lmsample.h"
#include "test_util.hpp"

extern "C" int lms_c_smoke(void);
extern "C" int lms_c_verify_smoke(void);
extern "C" int lms_c_verify_smoke(void);

using lmsample::DType;
using lmstest::Batch;
using lmstest::OutBuf;
using lmstest::Rng;
using lmstest::RowSpec;

static_assert(LMS_OK == static_cast<int>(lmsample::Code::kOk));
static_assert(LMS_INVALID_ARGUMENT == static_cast<int>(lmsample::Code::kInvalidArgument));
static_assert(LMS_INVALID_ROW_PARAMETER == static_cast<int>(lmsample::Code::kInvalidRowParameter));
static_assert(LMS_WORKSPACE_TOO_SMALL == static_cast<int>(lmsample::Code::kWorkspaceTooSmall));
static_assert(LMS_UNSUPPORTED == static_cast<int>(lmsample::Code::kUnsupported));
static_assert(LMS_BACKEND_ERROR == static_cast<int>(lmsample::Code::kBackendError));
static_assert(LMS_GPU_KEYS_AUTO == static_cast<int>(lmsample::GpuKeys::kAuto));
static_assert(LMS_GPU_KEYS_ON_CHIP == static_cast<int>(lmsample::GpuKeys::kOnChip));
static_assert(LMS_GPU_KEYS_STREAM == static_cast<int>(lmsample::GpuKeys::kStream));
static_assert(LMS_ROW_OK == lmsample::kRowOk && LMS_ROW_EMPTY == lmsample::kRowEmpty &&
              LMS_ROW_BAD_TEMPERATURE == lmsample::kRowBadTemperature &&
              LMS_ROW_BAD_TOP_K == lmsample::kRowBadTopK &&
              LMS_ROW_BAD_TOP_P == lmsample::kRowBadTopP &&
              LMS_ROW_BAD_MIN_P == lmsample::kRowBadMinP &&
              LMS_ROW_BAD_REPETITION_PENALTY == lmsample::kRowBadRepetitionPenalty &&
              LMS_ROW_BAD_FREQUENCY_PENALTY == lmsample::kRowBadFrequencyPenalty &&
              LMS_ROW_BAD_PRESENCE_PENALTY == lmsample::kRowBadPresencePenalty &&
              LMS_ROW_BAD_TOKEN_ID == lmsample::kRowBadTokenId &&
              LMS_ROW_BAD_DRAFT == lmsample::kRowBadDraft);
static_assert(LMS_DTYPE_F32 == static_cast<int>(DType::kFloat32) &&
              LMS_DTYPE_BF16 == static_cast<int>(DType::kBFloat16) &&
              LMS_DTYPE_F16 == static_cast<int>(DType::kFloat16));
static_assert(LMS_BACKEND_AUTO == static_cast<int>(lmsample::Backend::kAuto) &&
              LMS_BACKEND_CPU == static_cast<int>(lmsample::Backend::kCpu) &&
              LMS_BACKEND_CUDA == static_cast<int>(lmsample::Backend::kCuda));

namespace {

lms_sparse_rows to_c(const lmsample::SparseRows& s) {
  return lms_sparse_rows{s.offsets, s.tokens, s.values};
}

lms_request to_c(const lmsample::Request& r) {
  lms_request c;
  lms_request_init(&c);
  c.logits = r.logits.data;
  c.dtype = static_cast<int32_t>(r.logits.dtype);
  c.batch = r.logits.batch;
  c.vocab = r.logits.vocab;
  c.row_stride = r.logits.row_stride;
  c.temperature = r.params.temperature;
  c.top_k = r.params.top_k;
  c.top_p = r.params.top_p;
  c.min_p = r.params.min_p;
  c.repetition_penalty = r.params.repetition_penalty;
  c.frequency_penalty = r.params.frequency_penalty;
  c.presence_penalty = r.params.presence_penalty;
  c.seed = r.params.seed;
  c.step = r.params.step;
  c.substream = r.params.substream;
  const lmsample::RowDefaults& d = r.params.defaults;
  c.defaults.temperature = d.temperature;
  c.defaults.top_k = d.top_k;
  c.defaults.top_p = d.top_p;
  c.defaults.min_p = d.min_p;
  c.defaults.repetition_penalty = d.repetition_penalty;
  c.defaults.frequency_penalty = d.frequency_penalty;
  c.defaults.presence_penalty = d.presence_penalty;
  c.defaults.seed = d.seed;
  c.defaults.step = d.step;
  c.defaults.substream = d.substream;
  c.allowed_mask = r.allowed_mask;
  c.mask_row_words = r.mask_row_words;
  c.logit_bias = to_c(r.logit_bias);
  c.prompt_tokens = to_c(r.prompt_tokens);
  c.output_tokens = to_c(r.output_tokens);
  c.top_logprobs = r.top_logprobs;
  return c;
}

lms_outputs to_c(OutBuf& o) {
  lms_outputs c;
  lms_outputs_init(&c);
  const lmsample::Outputs p = o.outputs();
  c.tokens = p.tokens;
  c.status = p.status;
  c.logprob = p.logprob;
  c.kept = p.kept;
  c.top_ids = p.top_ids;
  c.top_logprobs = p.top_logprobs;
  return c;
}

int c_sample(const lmsample::Request& req, OutBuf& out, int threads, size_t* bytes_used = nullptr) {
  const lms_request c = to_c(req);
  const lms_outputs o = to_c(out);
  lms_exec exec;
  lms_exec_init(&exec);
  exec.cpu_threads = threads;
  size_t bytes = 0;
  const int rc = lms_workspace_size(&c, &exec, &bytes);
  if (rc != LMS_OK) return rc;
  if (bytes_used) *bytes_used = bytes;
  std::vector<unsigned char> ws(bytes + 1);
  return lms_sample(&c, &o, ws.data(), bytes, &exec);
}

}  // namespace

TEST(CApi, CompiledAsC) { EXPECT_EQ(lms_c_smoke(), 0); }
TEST(CApi, VerifyChainFromC) { EXPECT_EQ(lms_c_verify_smoke(), 0); }

// lms_verify_chain and lms_verify_tree against the C++ calls, and a bad draft id's message.
TEST(CApi, VerifyMatchesCpp) {
  const int64_t v = 16;
  std::mt19937_64 g(5);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> target(static_cast<size_t>(7 * v));
  for (auto& x : target) x = nd(g);
  const int64_t offsets[3] = {0, 3, 7};  // K = 2 and 3
  std::vector<int32_t> drafts = {1, 2, 3, 4, 5};
  const float temps[2] = {1.0f, 0.7f};
  const uint64_t seeds[2] = {11, 12};
  lms_chain_request c;
  lms_chain_request_init(&c);
  c.target.logits = target.data();
  c.target.dtype = LMS_DTYPE_F32;
  c.target.batch = 7;
  c.target.vocab = v;
  c.target.temperature = temps;
  c.target.seed = seeds;
  c.row_offsets = offsets;
  c.requests = 2;
  c.draft_tokens = drafts.data();
  lms_exec exec;
  lms_exec_init(&exec);
  size_t bytes = 0;
  ASSERT_EQ(lms_verify_chain_workspace_size(&c, &exec, &bytes), LMS_OK);
  std::vector<unsigned char> ws(bytes);
  std::vector<int32_t> acc(2, -7), tok(7, -7), st(2, -7);
  lms_chain_outputs co{acc.data(), tok.data(), st.data(), nullptr};
  ASSERT_EQ(lms_verify_chain(&c, &co, ws.data(), ws.size(), &exec), LMS_OK) << lms_last_error();
  lmsample::ChainRequest cc;
  cc.target = lmsample::Logits{target.data(), lmsample::DType::kFloat32, 7, v, 0};
  cc.row_offsets = offsets;
  cc.requests = 2;
  cc.draft_tokens = drafts.data();
  cc.params.temperature = temps;
  cc.params.seed = seeds;
  std::vector<int32_t> acc2(2, -7), tok2(7, -7), st2(2, -7);
  std::vector<unsigned char> ws2(lmsample::verify_chain_workspace_size(cc, {}));
  ASSERT_TRUE(
      lmsample::verify_chain(cc, {acc2.data(), tok2.data(), st2.data()}, ws2.data(), ws2.size(), {})
          .ok());
  EXPECT_EQ(acc, acc2);
  EXPECT_EQ(tok, tok2);
  EXPECT_EQ(st, st2);
  // the same two requests as chain-shaped trees
  const int32_t parents[7] = {-1, 0, 1, -1, 0, 1, 2};
  const int32_t ttok[7] = {0, 1, 2, 0, 3, 4, 5};
  lms_tree_request t;
  lms_tree_request_init(&t);
  t.target = c.target;
  t.node_offsets = offsets;
  t.requests = 2;
  t.parents = parents;
  t.tokens = ttok;
  ASSERT_EQ(lms_verify_tree_workspace_size(&t, &exec, &bytes), LMS_OK);
  std::vector<unsigned char> ws3(bytes);
  std::vector<int32_t> acc3(2, -7), path(7, -7), tok3(7, -7), st3(2, -7);
  lms_tree_outputs to{acc3.data(), path.data(), tok3.data(), st3.data(), nullptr};
  ASSERT_EQ(lms_verify_tree(&t, &to, ws3.data(), ws3.size(), &exec), LMS_OK) << lms_last_error();
  EXPECT_EQ(acc3, acc);
  EXPECT_EQ(tok3, tok);
  // the stated bounds reach the library: max_drafts = 2 < request 1's 3, max_depth = 2 < 3
  c.max_drafts = 2;
  EXPECT_EQ(lms_verify_chain(&c, &co, ws.data(), ws.size(), &exec), LMS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(lms_last_error()).find("request 1: 3 drafts, more than max_drafts = 2"),
            std::string::npos)
      << lms_last_error();
  c.max_drafts = 3;
  ASSERT_EQ(lms_verify_chain(&c, &co, ws.data(), ws.size(), &exec), LMS_OK) << lms_last_error();
  EXPECT_EQ(tok, tok2);
  t.max_depth = 2;
  EXPECT_EQ(lms_verify_tree(&t, &to, ws3.data(), ws3.size(), &exec), LMS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(lms_last_error()).find("deeper than max_depth = 2"), std::string::npos)
      << lms_last_error();
  // a draft id outside [0, V): the request named, nothing written
  drafts[3] = 99;
  std::fill(tok.begin(), tok.end(), -7);
  EXPECT_EQ(lms_verify_chain(&c, &co, ws.data(), ws.size(), &exec), LMS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(lms_last_error()).find("request 1: draft 1 = 99"), std::string::npos)
      << lms_last_error();
  EXPECT_EQ(tok, std::vector<int32_t>(7, -7));
}

TEST(CApi, InitDefaults) {
  lms_request r;
  std::memset(&r, 0x5a, sizeof r);
  lms_request_init(&r);
  EXPECT_EQ(r.logits, nullptr);
  EXPECT_EQ(r.batch, 0);
  EXPECT_EQ(r.row_stride, 0);
  EXPECT_EQ(r.temperature, nullptr);
  EXPECT_EQ(r.allowed_mask, nullptr);
  EXPECT_EQ(r.logit_bias.offsets, nullptr);
  EXPECT_EQ(r.output_tokens.offsets, nullptr);
  EXPECT_EQ(r.top_logprobs, 0);
  EXPECT_EQ(r.dtype, LMS_DTYPE_F32);
  lms_outputs o;
  std::memset(&o, 0x5a, sizeof o);
  lms_outputs_init(&o);
  EXPECT_EQ(o.tokens, nullptr);
  EXPECT_EQ(o.top_logprobs, nullptr);
  lms_exec e;
  std::memset(&e, 0x5a, sizeof e);
  lms_exec_init(&e);
  EXPECT_EQ(e.backend, LMS_BACKEND_CPU);
  EXPECT_EQ(e.cpu_threads, 0);
  EXPECT_EQ(e.stream, nullptr);
  EXPECT_EQ(e.gpu_keys, LMS_GPU_KEYS_AUTO);
}

TEST(CApi, MatchesCppOnRandomBatches) {
  Rng rng(555);
  const DType dtypes[] = {DType::kFloat32, DType::kBFloat16, DType::kFloat16};
  const int64_t vocabs[] = {1, 77, 1000, 32000};
  for (const DType dtype : dtypes) {
    for (const int64_t v : vocabs) {
      std::vector<RowSpec> rows;
      const int n = v >= 32000 ? 12 : 60;
      for (int i = 0; i < n; ++i) rows.push_back(lmstest::random_row(rng, dtype, v));
      lmstest::Layout layout;
      layout.stride_extra = rng.range(0, 5);
      layout.csr_base = rng.range(0, 3);
      Batch batch(dtype, v, std::move(rows), 7, layout);
      OutBuf cpp(n, 7), c(n, 7);
      const lmsample::Status st = lmstest::run_cpu(batch.request(), cpp, 2);
      const int rc = c_sample(batch.request(), c, 2);
      EXPECT_EQ(rc, static_cast<int>(st.code));
      if (rc != LMS_OK) {
        EXPECT_EQ(std::string(lms_last_error()), st.message);
      } else {
        EXPECT_STREQ(lms_last_error(), "");
      }
      EXPECT_EQ(lmstest::first_difference(c, cpp, "C", "C++"), "")
          << lmstest::dtype_name(dtype) << " V=" << v;
      lmsample::ExecConfig cfg;
      cfg.cpu_threads = 2;
      const lms_request creq = to_c(batch.request());
      lms_exec exec;
      lms_exec_init(&exec);
      exec.cpu_threads = 2;
      size_t bytes = 0;
      ASSERT_EQ(lms_workspace_size(&creq, &exec, &bytes), LMS_OK);
      EXPECT_EQ(bytes, lmsample::workspace_size(batch.request(), cfg));
    }
  }
}

TEST(CApi, ErrorCodesAndMessages) {
  std::vector<RowSpec> rows(3);
  for (RowSpec& r : rows) r.f32 = {1.0f, 2.0f, 3.0f, 4.0f};
  rows[1].top_p = 0.0f;
  Batch batch(DType::kFloat32, 4, rows, 2);

  // a bad row parameter: code 2, the message names the row and the parameter, rows written
  OutBuf out(3, 2);
  EXPECT_EQ(c_sample(batch.request(), out, 1), LMS_INVALID_ROW_PARAMETER);
  const std::string msg = lms_last_error();
  EXPECT_NE(msg.find("row 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("top_p"), std::string::npos) << msg;
  EXPECT_EQ(out.status[1], LMS_ROW_BAD_TOP_P);
  EXPECT_EQ(out.status[0], LMS_ROW_OK);
  EXPECT_EQ(out.tokens[1], -1);
  EXPECT_GE(out.tokens[0], 0);

  // structural: null logits
  lms_request c = to_c(batch.request());
  OutBuf none(3, 2);
  lms_outputs o = to_c(none);
  lms_exec exec;
  lms_exec_init(&exec);
  std::vector<unsigned char> ws(1 << 20);
  c.logits = nullptr;
  EXPECT_EQ(lms_sample(&c, &o, ws.data(), ws.size(), &exec), LMS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(lms_last_error()).find("logits"), std::string::npos) << lms_last_error();
  c = to_c(batch.request());
  c.vocab = 0;
  EXPECT_EQ(lms_sample(&c, &o, ws.data(), ws.size(), &exec), LMS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(lms_last_error()).find("vocab"), std::string::npos) << lms_last_error();
  c = to_c(batch.request());
  c.top_logprobs = 65;
  EXPECT_EQ(lms_sample(&c, &o, ws.data(), ws.size(), &exec), LMS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(lms_last_error()).find("top_logprobs"), std::string::npos)
      << lms_last_error();
  c = to_c(batch.request());
  c.dtype = 9;
  EXPECT_EQ(lms_sample(&c, &o, ws.data(), ws.size(), &exec), LMS_INVALID_ARGUMENT);
  // an exec setting that is not one of its values
  c = to_c(batch.request());
  exec.gpu_keys = 3;
  EXPECT_EQ(lms_sample(&c, &o, ws.data(), ws.size(), &exec), LMS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(lms_last_error()).find("gpu_keys"), std::string::npos) << lms_last_error();
  lms_exec_init(&exec);
  // workspace too small
  c = to_c(batch.request());
  size_t bytes = 0;
  ASSERT_EQ(lms_workspace_size(&c, &exec, &bytes), LMS_OK);
  EXPECT_EQ(lms_sample(&c, &o, ws.data(), bytes - 1, &exec), LMS_WORKSPACE_TOO_SMALL);
  EXPECT_NE(std::string(lms_last_error()).find("workspace"), std::string::npos) << lms_last_error();
  EXPECT_TRUE(none.untouched());
  // null request / outputs / bytes
  EXPECT_EQ(lms_sample(nullptr, &o, ws.data(), ws.size(), &exec), LMS_INVALID_ARGUMENT);
  EXPECT_STRNE(lms_last_error(), "");
  EXPECT_EQ(lms_sample(&c, nullptr, ws.data(), ws.size(), &exec), LMS_INVALID_ARGUMENT);
  EXPECT_EQ(lms_workspace_size(&c, &exec, nullptr), LMS_INVALID_ARGUMENT);
  // a success clears the last error
  rows[1].top_p = 1.0f;
  Batch good(DType::kFloat32, 4, rows, 2);
  OutBuf ok(3, 2);
  EXPECT_EQ(c_sample(good.request(), ok, 1), LMS_OK);
  EXPECT_STREQ(lms_last_error(), "");
}

TEST(CApi, LastErrorIsPerThread) {
  lms_request c;
  lms_request_init(&c);
  c.batch = 1;
  c.vocab = 0;
  lms_outputs o;
  lms_outputs_init(&o);
  EXPECT_EQ(lms_sample(&c, &o, nullptr, 0, nullptr), LMS_INVALID_ARGUMENT);
  const std::string mine = lms_last_error();
  std::string other;
  std::thread t([&] { other = lms_last_error(); });
  t.join();
  EXPECT_FALSE(mine.empty());
  EXPECT_EQ(other, "");
  EXPECT_EQ(std::string(lms_last_error()), mine);
}

TEST(CApi, NamesVersionBackends) {
  EXPECT_STREQ(lms_row_status_name(LMS_ROW_BAD_TOKEN_ID), "bad_token_id");
  EXPECT_STREQ(lms_row_status_name(LMS_ROW_OK), "ok");
  EXPECT_STREQ(lms_version(), lmsample::version());
  // docs/contract.md "Versions": 2 is the FMA exp (tests/test_core.cpp pins its bits)
  EXPECT_EQ(lms_contract_version(), 2);
  EXPECT_EQ(lmsample::contract_version(), 2);
  EXPECT_EQ(lms_backend_available(LMS_BACKEND_CPU), 1);
  EXPECT_EQ(lms_backend_available(LMS_BACKEND_CUDA),
            lmsample::backend_available(lmsample::Backend::kCuda) ? 1 : 0);
  if (!lmsample::backend_available(lmsample::Backend::kCuda)) {
    // asking for a backend that is not there
    std::vector<RowSpec> rows(1);
    rows[0].f32 = {1.0f, 2.0f};
    Batch batch(DType::kFloat32, 2, rows, 0);
    lms_request c = to_c(batch.request());
    OutBuf out(1, 0);
    lms_outputs o = to_c(out);
    lms_exec exec;
    lms_exec_init(&exec);
    exec.backend = LMS_BACKEND_CUDA;
    std::vector<unsigned char> ws(1 << 16);
    EXPECT_EQ(lms_sample(&c, &o, ws.data(), ws.size(), &exec), LMS_UNSUPPORTED);
    EXPECT_STRNE(lms_last_error(), "");
    EXPECT_TRUE(out.untouched());
  }
}
