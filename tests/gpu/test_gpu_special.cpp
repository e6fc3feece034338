// GPU backend: CUDA graph capture and replay, never-hang watchdog runs on huge shapes, structural
// errors, and invariance (repeat, row slices, streams, concurrent calls).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "gpu_test_util.hpp"

namespace lmsgpu {
namespace {

using lmsample::Code;
using lmsample::ExecConfig;
using lmsample::Outputs;
using lmsample::Request;
using lmsample::Status;

ExecConfig cuda_cfg(cudaStream_t s) {
  ExecConfig c;
  c.backend = lmsample::Backend::kCuda;
  c.stream = s;
  return c;
}

//! Rows [first, first + count) of `h` as their own HostOutputs.
HostOutputs rows_of(const HostOutputs& h, int64_t first, int64_t count) {
  HostOutputs o(count, h.top_n);
  const auto f = static_cast<size_t>(first), c = static_cast<size_t>(count),
             n = static_cast<size_t>(h.top_n);
  std::copy_n(h.tokens.begin() + static_cast<std::ptrdiff_t>(f), c, o.tokens.begin());
  std::copy_n(h.status.begin() + static_cast<std::ptrdiff_t>(f), c, o.status.begin());
  std::copy_n(h.kept.begin() + static_cast<std::ptrdiff_t>(f), c, o.kept.begin());
  std::copy_n(h.logprob.begin() + static_cast<std::ptrdiff_t>(f), c, o.logprob.begin());
  std::copy_n(h.top_ids.begin() + static_cast<std::ptrdiff_t>(f * n), c * n, o.top_ids.begin());
  std::copy_n(h.top_logprobs.begin() + static_cast<std::ptrdiff_t>(f * n), c * n,
              o.top_logprobs.begin());
  return o;
}

GroupCfg cfg_of(const std::string& name, DType dt, int64_t v, int64_t b, int32_t top,
                uint64_t salt) {
  GroupCfg g;
  g.name = name;
  g.dtype = dt;
  g.vocab = v;
  g.batch = b;
  g.top_n = top;
  g.seed = mix_seed(base_seed(), salt);
  return g;
}

// ---------------------------------------------------------------------------------------------
// (a) CUDA graphs: lmsample::sample captured once, replayed with new logits, parameters, seeds,
// steps, masks, biases and histories written to the same device arrays between replays.
class GpuGraph : public GpuTest {};

TEST_F(GpuGraph, CaptureAndReplayWithNewParameters) {
  struct Case {
    DType dt;
    int64_t v, b;
    int32_t top;
  };
  std::vector<Case> cases = {{DType::kFloat32, 32000, 48, 5},
                             {DType::kBFloat16, 151936, 8, 20},
                             {DType::kFloat16, 111, 99, 0},
                             {DType::kFloat32, 1, 7, 1}};
  if (small_mode()) cases = {{DType::kFloat32, 4097, 4, 5}, {DType::kBFloat16, 111, 5, 0}};
  Compared total;
  int64_t replays = 0;
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& cs = cases[ci];
    const std::string name = "graph#" + std::to_string(ci);
    // Five batches of one shape; every parameter and CSR array passed in each, so that the
    // captured request (its pointers) serves them all.
    std::vector<HostBatch> hbs;
    std::vector<const HostBatch*> caps;
    for (int i = 0; i < 5; ++i) {
      GroupCfg g =
          cfg_of(name, cs.dt, cs.v, cs.b, cs.top, 1000 + ci * 10 + static_cast<uint64_t>(i));
      g.layout.pass_all_params = true;
      g.layout.stride_extra = ci == 0 ? 5 : 0;
      g.mix.long_history = 0.1;
      hbs.push_back(make_batch(g));
    }
    for (const HostBatch& h : hbs) caps.push_back(&h);
    DeviceBatch db(hbs[0], caps);
    DeviceOutputs dout(cs.b, cs.top);
    const ExecConfig cfg = cuda_cfg(stream_);
    const Request dreq = db.request();
    const size_t bytes = lmsample::workspace_size(dreq, cfg);
    void* w = ws_.get(bytes);
    LMS_CUDA(cudaStreamSynchronize(stream_));

    cudaGraph_t graph = nullptr;
    LMS_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
    Status s;
    {
      WatchdogGuard guard(call_timeout_s(), "lmsample::sample under stream capture");
      s = lmsample::sample(dreq, dout.outputs(true), w, bytes, cfg);
    }
    const cudaError_t ec = cudaStreamEndCapture(stream_, &graph);
    (void)cudaGetLastError();
    ASSERT_EQ(s.code, Code::kOk) << name
                                 << ": lmsample::sample failed under stream capture: " << s.message;
    ASSERT_EQ(ec, cudaSuccess)
        << name << ": cudaStreamEndCapture: " << cudaGetErrorName(ec)
        << " (sample() did something a graph cannot capture: a synchronisation, "
           "an allocation, a host read of device memory, a legacy-stream operation?)";
    size_t nodes = 0;
    LMS_CUDA(cudaGraphGetNodes(graph, nullptr, &nodes));
    EXPECT_GT(nodes, 0u) << name << ": the captured graph is empty";
    cudaGraphExec_t exec = nullptr;
    LMS_CUDA(cudaGraphInstantiate(&exec, graph, 0));

    // Replays 0..4, then 0 again (same inputs: same bits as the first replay).
    std::vector<int> order = {0, 1, 2, 3, 4, 0};
    HostOutputs first(cs.b, cs.top);
    for (size_t k = 0; k < order.size(); ++k) {
      const HostBatch& hb = hbs[static_cast<size_t>(order[k])];
      db.upload(hb, stream_);
      dout.poison(stream_);
      LMS_CUDA(cudaGraphLaunch(exec, stream_));
      wait_stream(stream_, call_timeout_s(), name + " replay " + std::to_string(k));
      HostOutputs gpu(cs.b, cs.top);
      dout.download(gpu);
      HostOutputs cpu(cs.b, cs.top);
      const Status c = run_cpu(hb.request(), cpu, true);
      EXPECT_TRUE(c.code == Code::kOk || c.code == Code::kInvalidRowParameter) << c.message;
      const Compared cmp = compare_all(hb, gpu, cpu, true);
      EXPECT_EQ(cmp.mismatched, 0) << name << " replay " << k << " (batch " << order[k]
                                   << "): GPU graph replay differs from the CPU:" << cmp.report;
      EXPECT_EQ(cmp.unwritten, 0) << name << " replay " << k << ": outputs left unwritten";
      total.add(cmp);
      ++replays;
      if (k == 0) first = gpu;
      if (k + 1 == order.size()) {
        EXPECT_EQ(bitwise_difference(gpu, first, true), "")
            << name << ": replaying the same inputs changed bits";
      }
    }
    std::printf(
        "[   gpu    ] %-30s %-4s V=%-8lld B=%-4lld top=%-2d: %zu graph nodes, %zu replays equal "
        "the CPU\n",
        name.c_str(), dtype_name(cs.dt), static_cast<long long>(cs.v), static_cast<long long>(cs.b),
        cs.top, nodes, order.size());
    LMS_CUDA(cudaGraphExecDestroy(exec));
    LMS_CUDA(cudaGraphDestroy(graph));
  }
  summary(total, std::to_string(replays) + " graph replays");
}

// ---------------------------------------------------------------------------------------------
// (b) Never hang: huge shapes, waited for with a host-side deadline (LMS_GPU_WATCHDOG_S, 60 s).
class GpuWatchdog : public GpuTest {
 protected:
  //! Runs `hb` on the GPU with the watchdog deadline; compares every row with the CPU when the
  //! batch is small enough, else `spot` rows (first, last, middle, random) one by one.
  void run_big(const std::string& name, const HostBatch& hb, int spot) {
    size_t free_b = 0, total_b = 0;
    LMS_CUDA(cudaMemGetInfo(&free_b, &total_b));
    const ExecConfig cfg = cuda_cfg(stream_);
    Request shape_only = hb.request();
    const size_t ws_bytes = lmsample::workspace_size(shape_only, cfg);
    const size_t need = hb.logits.size() + ws_bytes + (size_t{1} << 29);
    if (need > free_b) {
      GTEST_SKIP() << name << ": needs about " << (need >> 20) << " MiB of device memory, "
                   << (free_b >> 20) << " MiB free";
    }
    DeviceBatch db(hb);
    DeviceOutputs dout(hb.batch, hb.top_n);
    dout.poison(stream_);
    void* w = ws_.get(ws_bytes);
    LMS_CUDA(cudaStreamSynchronize(stream_));
    Status s;
    double ms = 0;
    {
      WatchdogGuard guard(watchdog_timeout_s() + 30.0, "lmsample::sample call for " + name);
      s = lmsample::sample(db.request(), dout.outputs(true), w, ws_bytes, cfg);
      ms = wait_stream(stream_, watchdog_timeout_s(), "watchdog run " + name);
    }
    ASSERT_EQ(s.code, Code::kOk) << name << ": " << s.message;
    HostOutputs gpu(hb.batch, hb.top_n);
    dout.download(gpu);

    // Every row written, with a plausible status and token.
    int64_t bad = 0;
    std::string first_bad;
    for (int64_t r = 0; r < hb.batch; ++r) {
      const auto i = static_cast<size_t>(r);
      const bool ok =
          gpu.status[i] >= 0 && gpu.status[i] <= lmsample::kRowBadTokenId &&
          (gpu.status[i] == lmsample::kRowOk ? gpu.tokens[i] >= 0 && gpu.tokens[i] < hb.vocab
                                             : gpu.tokens[i] == -1);
      if (!ok && bad++ == 0)
        first_bad = "row " + std::to_string(r) + ": status " + std::to_string(gpu.status[i]) +
                    " token " + std::to_string(gpu.tokens[i]);
    }
    EXPECT_EQ(bad, 0) << name << ": " << bad << " rows with an impossible status/token, first "
                      << first_bad;

    Compared c;
    const auto t0 = std::chrono::steady_clock::now();
    if (hb.batch * hb.vocab <= (int64_t{1} << 26) || spot <= 0) {
      HostOutputs cpu(hb.batch, hb.top_n);
      const Status cs = run_cpu(hb.request(), cpu, true);
      EXPECT_TRUE(cs.code == Code::kOk || cs.code == Code::kInvalidRowParameter) << cs.message;
      c = compare_all(hb, gpu, cpu, true);
    } else {
      std::vector<int64_t> rows = {0, hb.batch - 1, hb.batch / 2};
      Rng rng(mix_seed(base_seed(), 77));
      while (static_cast<int>(rows.size()) < spot) rows.push_back(rng.range(1, hb.batch - 2));
      const Request host_req = hb.request();
      for (const int64_t r : rows) {
        HostOutputs cpu(1, hb.top_n);
        const Status cs = run_cpu(HostBatch::slice(host_req, r, 1), cpu, true);
        EXPECT_TRUE(cs.code == Code::kOk || cs.code == Code::kInvalidRowParameter) << cs.message;
        compare_row(hb, r, gpu, r, cpu, 0, true, c);
      }
      // The unchecked rows must still be written.
      for (int64_t r = 0; r < hb.batch; ++r) {
        const auto i = static_cast<size_t>(r);
        c.unwritten += static_cast<uint32_t>(gpu.tokens[i]) == kPoisonBits;
        c.unwritten += static_cast<uint32_t>(gpu.status[i]) == kPoisonBits;
        c.unwritten += static_cast<uint32_t>(gpu.kept[i]) == kPoisonBits;
        c.unwritten += float_to_bits(gpu.logprob[i]) == kPoisonBits;
      }
    }
    const double cpu_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(c.mismatched, 0) << name << ": GPU differs from the CPU:" << c.report;
    EXPECT_EQ(c.unwritten, 0) << name << ": outputs left unwritten";
    std::printf(
        "[   gpu    ] %-30s %-4s V=%-8lld B=%-4lld top=%-2d: finished in %.2f ms (deadline %.0f "
        "s); %lld/%lld "
        "checked rows equal the CPU (cpu %.0f ms)\n",
        name.c_str(), dtype_name(hb.dtype), static_cast<long long>(hb.vocab),
        static_cast<long long>(hb.batch), hb.top_n, ms, watchdog_timeout_s(),
        static_cast<long long>(c.rows - c.mismatched), static_cast<long long>(c.rows), cpu_ms);
    summary(c);
  }
};

TEST_F(GpuWatchdog,
       HugeVocabFlatRows) {  // V = 2^24 (kMaxVocab), all logits equal: worst case for ties
  if (small_mode()) GTEST_SKIP() << "LMS_GPU_TEST_SMALL: skipped";
  GroupCfg g = cfg_of("huge_flat", DType::kFloat32, int64_t{1} << 24, 2, 20, 501);
  g.mix.force_shape = kFlat;
  g.mix.special = 0;
  g.mix.bad_param = 0;
  g.mix.bad_token_id = 0;
  HostBatch hb = make_batch(g);
  hb.temperature = {1.0f, 0.7f};
  hb.top_k = {static_cast<int32_t>(hb.vocab / 2 + 1), 0};
  hb.top_p = {0.5f, 0.99999994f};
  hb.min_p = {0.0f, 1e-8f};
  hb.passed |= (1u << kPTemperature) | (1u << kPTopK) | (1u << kPTopP) | (1u << kPMinP);
  run_big("huge_flat", hb, 0);
}

TEST_F(GpuWatchdog, HugeVocabRandomRows) {
  if (small_mode()) GTEST_SKIP() << "LMS_GPU_TEST_SMALL: skipped";
  GroupCfg g = cfg_of("huge_random", DType::kBFloat16, int64_t{1} << 24, 2, 64, 502);
  g.mix.bad_param = 0;
  g.mix.special = 0;
  HostBatch hb = make_batch(g);
  hb.top_k[0] = 50;
  hb.top_p[0] = 0.9f;
  hb.temperature[1] = 1.0f;
  hb.top_k[1] = 0;
  hb.top_p[1] = 0.99999994f;
  hb.passed |= (1u << kPTemperature) | (1u << kPTopK) | (1u << kPTopP);
  run_big("huge_random", hb, 0);
}

TEST_F(GpuWatchdog, WideBatch) {  // B = 4096, V = 4096: every row compared
  GroupCfg g = cfg_of("wide_batch", DType::kFloat32, 4096, small_mode() ? 256 : 4096, 5, 503);
  run_big("wide_batch", make_batch(g), 0);
}

TEST_F(GpuWatchdog,
       WideBatchLargeVocab) {  // B = 4096, V = 151936 fp32 (2.5 GB of logits): 24 rows checked
  if (small_mode()) GTEST_SKIP() << "LMS_GPU_TEST_SMALL: skipped";
  GroupCfg g = cfg_of("wide_batch_large_vocab", DType::kFloat32, 151936, 4096, 20, 504);
  run_big("wide_batch_large_vocab", make_batch(g), 24);
}

// ---------------------------------------------------------------------------------------------
// (d) Structural errors: kInvalidArgument / kWorkspaceTooSmall with a message; nothing written.
class GpuErrors : public GpuTest {};

TEST_F(GpuErrors, StructuralErrorsWriteNothing) {
  GroupCfg g = cfg_of("errors", DType::kFloat32, 111, 4, 3, 601);
  g.mix.mask = 1.0;
  g.mix.bias = 1.0;
  g.mix.penalties = 1.0;
  g.mix.bad_param = 0;
  g.mix.bad_token_id = 0;
  const HostBatch hb = make_batch(g);
  DeviceBatch db(hb);
  DeviceOutputs dout(hb.batch, hb.top_n);
  const ExecConfig cfg = cuda_cfg(stream_);
  const Request good = db.request();
  const size_t need = lmsample::workspace_size(good, cfg);
  void* w = ws_.get(need + 256);
  int cases = 0;

  auto expect = [&](const Request& req, const Outputs& out, void* ws, size_t bytes, Code code,
                    const std::string& what) {
    ++cases;
    dout.poison(stream_);
    Status s;
    {
      WatchdogGuard guard(call_timeout_s(), "error case " + what);
      s = lmsample::sample(req, out, ws, bytes, cfg);
      wait_stream(stream_, call_timeout_s(), "error case " + what);
    }
    EXPECT_EQ(static_cast<int>(s.code), static_cast<int>(code))
        << what << ": got code " << static_cast<int>(s.code) << " (" << s.message << ")";
    if (code != Code::kOk) {
      EXPECT_FALSE(s.message.empty()) << what << ": no message";
    }
    HostOutputs h(hb.batch, hb.top_n);
    dout.download(h);
    int64_t written = 0;
    for (const int32_t v : h.tokens) written += static_cast<uint32_t>(v) != kPoisonBits;
    for (const int32_t v : h.status) written += static_cast<uint32_t>(v) != kPoisonBits;
    for (const int32_t v : h.kept) written += static_cast<uint32_t>(v) != kPoisonBits;
    for (const float v : h.logprob) written += float_to_bits(v) != kPoisonBits;
    for (const int32_t v : h.top_ids) written += static_cast<uint32_t>(v) != kPoisonBits;
    for (const float v : h.top_logprobs) written += float_to_bits(v) != kPoisonBits;
    EXPECT_EQ(written, 0) << what << ": " << written
                          << " output elements written by a call that failed";
  };
  const Outputs out = dout.outputs(true);
  const Code kInv = Code::kInvalidArgument;

  {
    Request r = good;
    r.logits.data = nullptr;
    expect(r, out, w, need, kInv, "null logits");
  }
  {
    Request r = good;
    r.logits.vocab = 0;
    expect(r, out, w, need, kInv, "V = 0");
  }
  {
    Request r = good;
    r.logits.vocab = lmsample::kMaxVocab + 1;
    expect(r, out, w, need, kInv, "V = 2^24 + 1");
  }
  {
    Request r = good;
    r.logits.batch = -1;
    expect(r, out, w, need, kInv, "B = -1");
  }
  {
    Request r = good;
    r.logits.row_stride = r.logits.vocab - 1;
    expect(r, out, w, need, kInv, "row_stride < V");
  }
  {
    Request r = good;
    r.logits.dtype = static_cast<DType>(7);
    expect(r, out, w, need, kInv, "dtype 7");
  }
  {
    Request r = good;
    r.top_logprobs = 65;
    expect(r, out, w, need, kInv, "top_logprobs = 65");
  }
  {
    Request r = good;
    r.top_logprobs = -1;
    expect(r, out, w, need, kInv, "top_logprobs = -1");
  }
  {
    Outputs o = out;
    o.top_ids = nullptr;
    expect(good, o, w, need, kInv, "top_logprobs = 3, top_ids null");
  }
  {
    Outputs o = out;
    o.top_logprobs = nullptr;
    expect(good, o, w, need, kInv, "top_logprobs = 3, top_logprobs null");
  }
  {
    Outputs o = out;
    o.tokens = nullptr;
    expect(good, o, w, need, kInv, "null tokens");
  }
  {
    Outputs o = out;
    o.status = nullptr;
    expect(good, o, w, need, kInv, "null status");
  }
  {
    Request r = good;
    r.mask_row_words = (r.logits.vocab + 31) / 32 - 1;
    expect(r, out, w, need, kInv, "mask_row_words too small");
  }
  {
    Request r = good;
    r.logit_bias.tokens = nullptr;
    expect(r, out, w, need, kInv, "logit_bias.tokens null");
  }
  {
    Request r = good;
    r.logit_bias.values = nullptr;
    expect(r, out, w, need, kInv, "logit_bias.values null");
  }
  {
    Request r = good;
    r.prompt_tokens.tokens = nullptr;
    expect(r, out, w, need, kInv, "prompt_tokens.tokens null");
  }
  {
    Request r = good;
    r.output_tokens.tokens = nullptr;
    expect(r, out, w, need, kInv, "output_tokens.tokens null");
  }
  if (need > 0) {
    expect(good, out, w, need - 1, Code::kWorkspaceTooSmall, "workspace one byte short");
    expect(good, out, nullptr, 0, Code::kWorkspaceTooSmall, "no workspace");
  }
  // A shape that needs a workspace on most designs (V = 2^20, B = 4): one byte short, and none.
  {
    GroupCfg gb = cfg_of("errors_big", DType::kFloat32, int64_t{1} << 20, hb.batch, hb.top_n, 602);
    gb.mix = g.mix;
    const HostBatch big = make_batch(gb);
    DeviceBatch dbig(big);
    const Request rb = dbig.request();
    const size_t need_big = lmsample::workspace_size(rb, cfg);
    void* wb = ws_.get(std::max(need_big, need + 256));
    if (need_big > 0) {
      expect(rb, out, wb, need_big - 1, Code::kWorkspaceTooSmall,
             "V = 2^20: workspace one byte short");
      expect(rb, out, nullptr, 0, Code::kWorkspaceTooSmall, "V = 2^20: no workspace");
    } else {
      std::printf(
          "[   gpu    ] workspace_size() is 0 even for V = 2^20: workspace-too-small cases not "
          "applicable\n");
    }
    w = ws_.get(need + 256);
  }
  {
    Request r = good;
    r.logits.batch = 0;
    expect(r, out, w, need, Code::kOk, "B = 0 (nothing to do)");
  }

  // The untouched request still works and equals the CPU.
  const GpuRun run =
      run_gpu(good, dout, true, stream_, ws_, call_timeout_s(), "errors: valid call");
  ASSERT_EQ(run.status.code, Code::kOk) << run.status.message;
  HostOutputs gpu(hb.batch, hb.top_n), cpu(hb.batch, hb.top_n);
  dout.download(gpu);
  (void)run_cpu(hb.request(), cpu, true);
  const Compared c = compare_all(hb, gpu, cpu, true);
  EXPECT_EQ(c.mismatched + c.unwritten, 0) << c.report;

  // workspace_size() needs no pointers.
  Request shapes_only;
  shapes_only.logits.batch = 989;
  shapes_only.logits.vocab = 151936;
  shapes_only.logits.dtype = DType::kBFloat16;
  shapes_only.top_logprobs = 20;
  (void)lmsample::workspace_size(shapes_only, cfg);
  EXPECT_TRUE(lmsample::resolve_backend(lmsample::Backend::kAuto) == lmsample::Backend::kCuda);
  summary(c, std::to_string(cases) + " structural error cases");
}

// ---------------------------------------------------------------------------------------------
// Invariance on the GPU: a repeat gives the same bits; a row's result does not depend on the
// batch it is in (row slices); the legacy default stream; two calls in flight on two streams.
class GpuInvariance : public GpuTest {};

TEST_F(GpuInvariance, RepeatSlicesStreamsConcurrency) {
  struct Case {
    DType dt;
    int64_t v, b;
    int32_t top;
  };
  std::vector<Case> cases = {{DType::kBFloat16, 32000, 99, 20},
                             {DType::kFloat32, 151936, 16, 5},
                             {DType::kFloat16, 111, 300, 64}};
  if (small_mode()) cases = {{DType::kBFloat16, 4097, 9, 20}};
  Compared total;
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& cs = cases[ci];
    const std::string name = "invariance#" + std::to_string(ci);
    const HostBatch hb = make_batch(cfg_of(name, cs.dt, cs.v, cs.b, cs.top, 700 + ci));
    DeviceBatch db(hb);
    DeviceOutputs dout(cs.b, cs.top);
    const Request dreq = db.request();

    ASSERT_EQ(run_gpu(dreq, dout, true, stream_, ws_, call_timeout_s(), name).status.code,
              Code::kOk);
    HostOutputs full(cs.b, cs.top), cpu(cs.b, cs.top);
    dout.download(full);
    (void)run_cpu(hb.request(), cpu, true);
    const Compared c = compare_all(hb, full, cpu, true);
    EXPECT_EQ(c.mismatched + c.unwritten, 0) << name << ":" << c.report;
    total.add(c);

    // Repeat, and on the legacy default stream.
    for (cudaStream_t st : {stream_, static_cast<cudaStream_t>(nullptr)}) {
      ASSERT_EQ(run_gpu(dreq, dout, true, st, ws_, call_timeout_s(), name + " repeat").status.code,
                Code::kOk);
      HostOutputs again(cs.b, cs.top);
      dout.download(again);
      EXPECT_EQ(bitwise_difference(again, full, true), "")
          << name << ": a repeated call " << (st ? "" : "on the default stream ") << "changed bits";
    }

    // Row slices: each row's result is independent of its batch and position.
    const std::vector<std::pair<int64_t, int64_t>> slices = {
        {0, 1}, {cs.b - 1, 1}, {cs.b / 3, std::max<int64_t>(1, cs.b / 2)}, {1, cs.b - 1}};
    for (const auto& [first, count] : slices) {
      if (first < 0 || count < 1 || first + count > cs.b) continue;
      DeviceOutputs sout(count, cs.top);
      const Request sreq = HostBatch::slice(dreq, first, count);
      ASSERT_EQ(
          run_gpu(sreq, sout, true, stream_, ws_, call_timeout_s(), name + " slice").status.code,
          Code::kOk);
      HostOutputs s(count, cs.top);
      sout.download(s);
      EXPECT_EQ(bitwise_difference(s, rows_of(full, first, count), true), "")
          << name << ": rows [" << first << ", " << first + count
          << ") sampled on their own differ from the full batch";
    }

    // Two calls in flight at once on two streams with their own workspaces and outputs.
    cudaStream_t s2 = nullptr;
    LMS_CUDA(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    Workspace ws2;
    DeviceOutputs o1(cs.b, cs.top), o2(cs.b, cs.top);
    const ExecConfig c1 = cuda_cfg(stream_), c2 = cuda_cfg(s2);
    const size_t bytes = lmsample::workspace_size(dreq, c1);
    void* w1 = ws_.get(bytes);
    void* w2 = ws2.get(bytes);
    o1.poison(stream_);
    o2.poison(s2);
    LMS_CUDA(cudaDeviceSynchronize());
    Status st1, st2;
    {
      WatchdogGuard guard(call_timeout_s(), name + " concurrent calls");
      st1 = lmsample::sample(dreq, o1.outputs(true), w1, bytes, c1);
      st2 = lmsample::sample(dreq, o2.outputs(true), w2, bytes, c2);
      wait_stream(stream_, call_timeout_s(), name + " concurrent call 1");
      wait_stream(s2, call_timeout_s(), name + " concurrent call 2");
    }
    LMS_CUDA(cudaStreamDestroy(s2));
    ASSERT_EQ(st1.code, Code::kOk) << st1.message;
    ASSERT_EQ(st2.code, Code::kOk) << st2.message;
    HostOutputs r1(cs.b, cs.top), r2(cs.b, cs.top);
    o1.download(r1);
    o2.download(r2);
    EXPECT_EQ(bitwise_difference(r1, full, true), "")
        << name << ": concurrent call on stream 1 differs";
    EXPECT_EQ(bitwise_difference(r2, full, true), "")
        << name << ": concurrent call on stream 2 differs";
    std::printf(
        "[   gpu    ] %-30s %-4s V=%-8lld B=%-4lld top=%-2d: repeat, default stream, %zu slices, 2 "
        "streams: "
        "bitwise equal\n",
        name.c_str(), dtype_name(cs.dt), static_cast<long long>(cs.v), static_cast<long long>(cs.b),
        cs.top, slices.size());
  }
  summary(total);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// (f) Greedy told by the host (RowParams::defaults.temperature = 0, no temperature array): the
// GPU runs greedy_rows_kernel, which must give the general kernel's (and the CPU's) tokens,
// statuses and kept sizes, special rows, bad parameters of other arrays, misaligned and strided
// rows and every dtype included.
// Tokens, statuses and kept sizes (no logprobs) of hreq on the CPU and dreq on the GPU, with
// kept sizes asked for and not; every row that differs is counted in `all`, the first few shown.
class TokensVsCpu : public GpuTest {
 protected:
  void compare_with_cpu(const HostBatch& hb, const lmsample::Request& hreq,
                        const lmsample::Request& dreq, const char* what, const std::string& label,
                        Compared& all) {
    for (const bool with_kept : {false, true}) {
      HostOutputs cpu(hb.batch, 0), gpu(hb.batch, 0);
      lmsample::Outputs ho = cpu.outputs(with_kept);
      ho.logprob = nullptr;
      lmsample::ExecConfig cc;
      std::vector<unsigned char> cws(lmsample::workspace_size(hreq, cc) + 1);
      const lmsample::Status cs = lmsample::sample(hreq, ho, cws.data(), cws.size(), cc);
      ASSERT_TRUE(cs.ok() || cs.code == lmsample::Code::kInvalidRowParameter) << cs.message;
      DeviceOutputs dout(hb.batch, 0);
      dout.poison(stream_);
      lmsample::Outputs dout_o = dout.outputs(with_kept);
      dout_o.logprob = nullptr;
      lmsample::ExecConfig gc;
      gc.backend = lmsample::Backend::kCuda;
      gc.stream = stream_;
      const size_t gws = lmsample::workspace_size(dreq, gc);
      const lmsample::Status gs = lmsample::sample(dreq, dout_o, ws_.get(gws), gws, gc);
      ASSERT_TRUE(gs.ok()) << gs.message;
      wait_stream(stream_, call_timeout_s(), what);
      dout.download(gpu);
      for (int64_t r = 0; r < hb.batch; ++r) {
        const auto i = static_cast<size_t>(r);
        ++all.rows;
        const bool same = gpu.tokens[i] == cpu.tokens[i] && gpu.status[i] == cpu.status[i] &&
                          (!with_kept || gpu.kept[i] == cpu.kept[i]);
        if (!same) {
          ++all.mismatched;
          if (all.mismatched <= 5)
            ADD_FAILURE() << label << " B=" << hb.batch << " V=" << hb.vocab << " row " << r << " ("
                          << hb.describe_row(r) << "): gpu token " << gpu.tokens[i] << " status "
                          << gpu.status[i] << " kept " << gpu.kept[i] << ", cpu token "
                          << cpu.tokens[i] << " status " << cpu.status[i] << " kept "
                          << cpu.kept[i];
        }
      }
    }
  }
};

class GpuGreedy : public TokensVsCpu {};

TEST_F(GpuGreedy, ByDefaultsMatchesCpu) {
  struct Case {
    DType dt;
    int64_t b, v, stride_extra, base_offset;
  };
  const Case cases[] = {
      {DType::kFloat32, 1, 151936, 0, 0},   {DType::kBFloat16, 7, 1000, 0, 1},
      {DType::kFloat16, 130, 32000, 5, 3},  {DType::kFloat32, 600, 4096, 3, 1},
      {DType::kBFloat16, 33, 151936, 0, 0}, {DType::kFloat32, 5, 1, 0, 0},
      {DType::kFloat32, 9, 63, 1, 0},
  };
  Compared all;
  for (const Case& c : cases) {
    GroupCfg g =
        cfg_of("greedy_defaults", c.dt, c.v, small_mode() ? std::min<int64_t>(c.b, 40) : c.b, 0,
               900 + static_cast<uint64_t>(c.v) + static_cast<uint64_t>(c.b));
    g.mix.greedy = 1.0;
    g.mix.mask = g.mix.bias = g.mix.penalties = 0.0;
    g.mix.special = 0.4;
    g.mix.bad_param = 0.1;
    g.mix.bad_token_id = 0.0;
    g.layout.stride_extra = c.stride_extra;
    g.layout.base_offset = c.base_offset;
    const HostBatch hb = make_batch(g);
    lmsample::Request hreq = hb.request();
    hreq.params.temperature = nullptr;  // every row greedy, told once
    hreq.params.defaults.temperature = 0.0f;
    const DeviceBatch db(hb);
    lmsample::Request dreq = db.request();
    dreq.params.temperature = nullptr;
    dreq.params.defaults.temperature = 0.0f;
    compare_with_cpu(hb, hreq, dreq, "greedy_defaults", std::string(dtype_name(c.dt)), all);
  }
  EXPECT_EQ(all.mismatched, 0);
  summary(all, "greedy by RowParams::defaults (greedy_rows_kernel)");
}

// The bf16 path's quick keys put -0 one below +0, and a positive NaN above +inf: rows whose
// maximum is zero, with -0 and +0 tied there in either order (or both -0), NaN and -inf among
// negative values, must give the lowest id of the zeros (the contract's canonical -0 is +0), as
// the CPU does.
TEST_F(GpuGreedy, Bf16SignedZerosAtTheMaximum) {
  Compared all;
  for (const int64_t v : {int64_t{64}, int64_t{1000}, int64_t{151936}}) {
    GroupCfg g = cfg_of("greedy_zeros", DType::kBFloat16, v, 24, 0, 977 + static_cast<uint64_t>(v));
    g.mix.greedy = 1.0;
    g.mix.mask = g.mix.bias = g.mix.penalties = 0.0;
    g.mix.special = g.mix.bad_param = g.mix.bad_token_id = 0.0;
    HostBatch hb = make_batch(g);
    std::vector<int64_t> want(static_cast<size_t>(hb.batch));
    for (int64_t r = 0; r < hb.batch; ++r) {
      uint16_t* h = reinterpret_cast<uint16_t*>(hb.logits.data()) + hb.base + r * hb.stride;
      for (int64_t i = 0; i < v; ++i)
        h[i] = i % 11 == 3   ? uint16_t{0x7fc0}  // NaN
               : i % 11 == 7 ? uint16_t{0xff80}  // -inf
                             : float_to_bf16(-1.0f - static_cast<float>(i % 5));
      const int64_t a = (r * 37 + 1) % v, b = (r * 101 + 5) % v;
      const int64_t lo = std::min(a, b), hi = std::max(a, b);
      h[lo] = r % 3 == 0 ? uint16_t{0x8000} : r % 3 == 1 ? uint16_t{0x0000} : uint16_t{0x8000};
      h[hi] = r % 3 == 2 ? uint16_t{0x0000} : uint16_t{0x8000};
      want[static_cast<size_t>(r)] = lo;
    }
    lmsample::Request hreq = hb.request();
    hreq.params.temperature = nullptr;
    hreq.params.defaults.temperature = 0.0f;
    // the property itself, on the CPU: the lowest id of the zeros
    HostOutputs cpu(hb.batch, 0);
    lmsample::Outputs ho = cpu.outputs(false);
    ho.logprob = nullptr;
    lmsample::ExecConfig cc;
    std::vector<unsigned char> cws(lmsample::workspace_size(hreq, cc) + 1);
    ASSERT_TRUE(lmsample::sample(hreq, ho, cws.data(), cws.size(), cc).ok());
    for (int64_t r = 0; r < hb.batch; ++r)
      ASSERT_EQ(cpu.tokens[static_cast<size_t>(r)], want[static_cast<size_t>(r)]) << "row " << r;
    const DeviceBatch db(hb);
    lmsample::Request dreq = db.request();
    dreq.params.temperature = nullptr;
    dreq.params.defaults.temperature = 0.0f;
    compare_with_cpu(hb, hreq, dreq, "greedy_zeros", "bf16 zeros", all);
  }
  EXPECT_EQ(all.mismatched, 0);
  summary(all, "bf16 greedy, -0 and +0 tied at the maximum (greedy_rows_kernel)");
}

// ---------------------------------------------------------------------------------------------
// (g) Temperature alone as the host knows it (no top_k, top_p or min_p array, none in
// RowParams::defaults, no bitmask, bias, penalties or logprobs): the GPU runs
// temperature_rows_kernel, which must give the CPU's tokens, statuses and kept sizes, with a
// temperature per row (greedy rows and bad temperatures among them) or one for the call, special
// rows (NaN, -inf, +inf), misaligned and strided rows and every dtype included.
// The shapes the load-only kernels' tests run (dtype, B, V, row stride extra, misaligning
// offset), and their batches: rows with no bitmask, bias or penalties, special rows and bad
// parameters among them.
struct LoadOnlyCase {
  DType dt;
  int64_t b, v, stride_extra, base_offset;
};
const LoadOnlyCase kLoadOnlyCases[] = {
    {DType::kFloat32, 1, 151936, 0, 0},   {DType::kBFloat16, 7, 1000, 0, 1},
    {DType::kFloat16, 130, 32000, 5, 3},  {DType::kFloat32, 600, 4096, 3, 1},
    {DType::kBFloat16, 33, 151936, 0, 0}, {DType::kFloat32, 5, 1, 0, 0},
    {DType::kFloat32, 9, 63, 1, 0},       {DType::kFloat32, 40, 262144, 0, 0},
    {DType::kBFloat16, 3, 151936, 1, 1},  {DType::kFloat32, 64, 151936, 0, 0},
};
GroupCfg load_only_cfg(const char* name, const LoadOnlyCase& c, uint64_t salt, double special) {
  GroupCfg g = cfg_of(name, c.dt, c.v, small_mode() ? std::min<int64_t>(c.b, 40) : c.b, 0,
                      salt + static_cast<uint64_t>(c.v) + static_cast<uint64_t>(c.b));
  g.mix.mask = g.mix.bias = g.mix.penalties = 0.0;
  g.mix.top_k = g.mix.min_p = 0.0;
  g.mix.special = special;
  g.mix.bad_token_id = 0.0;
  g.layout.stride_extra = c.stride_extra;
  g.layout.base_offset = c.base_offset;
  return g;
}

class GpuTemperature : public TokensVsCpu {};

TEST_F(GpuTemperature, AloneMatchesCpu) {
  Compared all;
  for (const LoadOnlyCase& c : kLoadOnlyCases) {
    for (const bool per_row_t : {true, false}) {
      GroupCfg g = load_only_cfg("temperature_alone", c, 1900, 0.4);
      g.mix.greedy = 0.1;
      g.mix.top_p = 0.0;
      g.mix.bad_param = 0.1;
      const HostBatch hb = make_batch(g);
      const DeviceBatch db(hb);
      lmsample::Request hreq = hb.request(), dreq = db.request();
      for (lmsample::Request* q : {&hreq, &dreq}) {
        q->params.top_k = nullptr;
        q->params.top_p = nullptr;
        q->params.min_p = nullptr;
        if (!per_row_t) {
          q->params.temperature = nullptr;
          q->params.defaults.temperature = 0.8f;
        }
      }
      compare_with_cpu(
          hb, hreq, dreq, "temperature_alone",
          std::string(dtype_name(c.dt)) + (per_row_t ? " (T per row)" : " (T for the call)"), all);
    }
  }
  EXPECT_EQ(all.mismatched, 0);
  summary(all, "temperature alone (temperature_rows_kernel)");
}

// ---------------------------------------------------------------------------------------------
// (h) Temperature and top-p with no other filter (no top_k or min_p array, none in the
// defaults, only the load): temperature_rows_kernel ranks a row's probe candidates, walks the
// maximum's ties, or leaves the row to the general kernel launched after it; every route must
// give the CPU's tokens, statuses and kept sizes.
namespace {
// Row r of an f32 batch as floats.
float* f32_row(HostBatch& hb, int64_t r) {
  return reinterpret_cast<float*>(hb.logits.data()) + hb.base + r * hb.stride;
}
}  // namespace

class GpuTopP : public TokensVsCpu {};

TEST_F(GpuTopP, AloneMatchesCpu) {
  Compared all;
  for (const LoadOnlyCase& c : kLoadOnlyCases) {
    for (const int params : {0, 1, 2}) {  // per row; p = 0.9 for the call; both for the call
      GroupCfg g = load_only_cfg("top_p_alone", c, 2900 + static_cast<uint64_t>(params), 0.3);
      g.mix.greedy = 0.1;
      g.mix.top_p = 0.8;
      g.mix.bad_param = 0.05;
      const HostBatch hb = make_batch(g);
      const DeviceBatch db(hb);
      lmsample::Request hreq = hb.request(), dreq = db.request();
      for (lmsample::Request* q : {&hreq, &dreq}) {
        q->params.top_k = nullptr;
        q->params.min_p = nullptr;
        if (params >= 1) {
          q->params.top_p = nullptr;
          q->params.defaults.top_p = 0.9f;
        }
        if (params == 2) {
          q->params.temperature = nullptr;
          q->params.defaults.temperature = 0.7f;
        }
      }
      static const char* kParams[] = {" (per row)", " (p for the call)", " (T and p for the call)"};
      compare_with_cpu(hb, hreq, dreq, "top_p_alone",
                       std::string(dtype_name(c.dt)) + kParams[params], all);
    }
  }
  EXPECT_EQ(all.mismatched, 0);
  summary(all, "top-p alone (temperature_rows_kernel, the general kernel for pending rows)");
}

// Rows built for each route of the temperature kernel's top-p, at its boundaries: the probe's
// candidates just below and above what shared memory holds (5120 on CUDA, 4096 on HIP) and the
// list (16384), ties at the maximum that hold the target or just miss it, a tail below the
// probe that holds too much of the weight (the probe fails), a temperature whose inverse
// overflows, and N(0,1) * 4 rows at each probe level's p (0.5, 0.9, 0.95, 0.99).
TEST_F(GpuTopP, RoutesAtTheirBoundaries) {
  const int64_t v = 151936;
  const int kRows = 32;  // (the temperature kernel takes top-p rows from B = 32 on)
  GroupCfg g = cfg_of("top_p_routes", DType::kFloat32, v, kRows, 0, 3917);
  g.mix.greedy = g.mix.mask = g.mix.bias = g.mix.penalties = 0.0;
  g.mix.special = g.mix.bad_param = g.mix.bad_token_id = 0.0;
  g.mix.top_k = g.mix.min_p = 0.0;
  HostBatch hb = make_batch(g);
  std::vector<float> temps(kRows, 1.0f), ps(kRows, 0.9f);
  for (int64_t r = 0; r < kRows; ++r) {
    float* x = f32_row(hb, r);
    uint64_t st = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(r + 1);
    const auto unif = [&st] {  // [0, 1)
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      return static_cast<float>(st >> 40) / 16777216.0f;
    };
    const auto fill = [&](float val) {
      for (int64_t i = 0; i < v; ++i) x[i] = val;
    };
    const size_t ri = static_cast<size_t>(r);
    switch (r % 8) {
      case 0:
      case 1: {  // distinct values in [-1, 0] on 4090 and 5110 tokens (ranked in shared memory
        // on CUDA), 5130 and 16000 at p = 0.95 (ranked from the list until what is in play
        // fits in shared memory: 16000 after two rounds), 17000 (more than the list holds)
        // spread over the row
        const int64_t n = r % 8 == 0 ? (r < 16 ? 4090 : 5110)
                          : r < 8    ? 5130
                          : r < 16   ? 16000
                                     : 17000;
        fill(-40.0f);
        for (int64_t j = 0; j < n; ++j) x[(j * 37) % v] = -unif();
        ps[ri] = n > 5120 ? 0.95f : 0.5f;
        break;
      }
      case 2:
      case 3: {  // 10,000 ties at 0 and the rest just below: the ties hold 0.9 or just miss it
        fill(r % 8 == 2 ? -30.0f : -6.0f);
        for (int64_t j = 0; j < 10000; ++j) x[(j * 13) % v] = 0.0f;
        ps[ri] = r % 8 == 2 ? 0.9f : 0.99f;
        break;
      }
      case 4:  // ten tokens at 0, the rest at -10 (likelihood 4.5e-5 < 2^-13, the probe of
        // p = 0.9), holding 41% of the weight: the probe fails
        fill(-10.0f);
        for (int64_t j = 0; j < 10; ++j) x[j * 1000 + 7] = 0.0f;
        break;
      case 5:  // a temperature whose inverse is +inf
        for (int64_t i = 0; i < v; ++i) x[i] = 4.0f * (unif() - 0.5f);
        temps[ri] = 1e-39f;
        break;
      default:  // N(0,1) * 4 by Box-Muller, p in {0.5, 0.9, 0.95, 0.99}
        for (int64_t i = 0; i < v; ++i) {
          const float u1 = unif() + 1.0f / 33554432.0f, u2 = unif();
          x[i] = 4.0f * std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853f * u2);
        }
        ps[ri] = r % 8 == 6 ? (r < 16 ? 0.5f : 0.9f) : (r < 16 ? 0.95f : 0.99f);
        break;
    }
  }
  hb.temperature = temps;
  hb.top_p = ps;
  hb.passed |= (1u << kPTemperature) | (1u << kPTopP);
  const DeviceBatch db(hb);
  lmsample::Request hreq = hb.request(), dreq = db.request();
  for (lmsample::Request* q : {&hreq, &dreq}) {
    q->params.top_k = nullptr;
    q->params.min_p = nullptr;
  }
  Compared all;
  compare_with_cpu(hb, hreq, dreq, "top_p_routes", "f32 crafted rows", all);
  EXPECT_EQ(all.mismatched, 0);
  EXPECT_EQ(all.rows, 2 * kRows);  // (with kept sizes asked for and not)
  summary(all, "top-p alone, every route of temperature_rows_kernel at its boundary");
}

}  // namespace lmsgpu
