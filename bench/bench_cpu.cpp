// CPU benchmarks: lmsample::sample on the CPU backend against the sort-based reference
// (lmsample::check::reference_sample_batch), per row and per core.
//
// Every case samples a batch of kRows rows (different logits, seeds and steps per row) per
// iteration; the counters report time per row (us_per_row, wall clock) and logits bytes read per
// second. Before a CPU case is timed, its outputs (token, status, kept-set size, logprobs) are
// compared with the reference once; a mismatch fails the case instead of timing it.
//
// Case names:
// sample/impl:<cpu|ref>/op:<op>/dtype:<f32|bf16>/logits:<gauss|llm>/V:<V>/cpu_threads:<n>
// bench/run_cpu.sh parses them; keep the format.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "check/reference.hpp"
#include "lmsample/lmsample.hpp"

namespace {

using lmsample::DType;

bool g_failed = false;  // a case failed (the process then exits with status 1)

constexpr int64_t kRows = 8;  // rows per timed call; per-row numbers divide by this
constexpr int64_t kVocabs[] = {32000, 128256, 151936, 262144};
constexpr int64_t kMainVocab = 151936;

enum class Impl { kCpu, kRef };
enum class Shape { kGauss, kLlm };

struct Op {
  const char* name;
  float temperature;
  int32_t top_k;
  float top_p;
  float min_p;
  int32_t top_logprobs;
};

const Op kOps[] = {
    {"greedy", 0.0f, 0, 1.0f, 0.0f, 0},
    {"temp1", 1.0f, 0, 1.0f, 0.0f, 0},
    {"topk50", 1.0f, 50, 1.0f, 0.0f, 0},
    {"topp0.9", 1.0f, 0, 0.9f, 0.0f, 0},
    {"minp0.05", 1.0f, 0, 1.0f, 0.05f, 0},
    {"topk50_topp0.9", 1.0f, 50, 0.9f, 0.0f, 0},
    {"topk50_topp0.9_logprobs20", 1.0f, 50, 0.9f, 0.0f, 20},
};
constexpr int kMainOp = 5;  // top-k 50 + top-p 0.9: the one run in bf16 and multi-threaded too

struct Case {
  Impl impl;
  Op op;
  DType dtype;
  Shape shape;
  int64_t vocab;
  int cpu_threads;
};

const char* impl_name(Impl i) { return i == Impl::kCpu ? "cpu" : "ref"; }
const char* dtype_name(DType d) { return d == DType::kFloat32 ? "f32" : "bf16"; }
const char* shape_name(Shape s) { return s == Shape::kGauss ? "gauss" : "llm"; }

std::string case_name(const Case& c) {
  return std::string("sample/impl:") + impl_name(c.impl) + "/op:" + c.op.name +
         "/dtype:" + dtype_name(c.dtype) + "/logits:" + shape_name(c.shape) +
         "/V:" + std::to_string(c.vocab) + "/cpu_threads:" + std::to_string(c.cpu_threads);
}

// ---------------------------------------------------------------------------------------------
// Logits. Deterministic (fixed seeds, own Box-Muller), generated once per (shape, V) and shared.
//
// gauss: N(0,1) * 4, the shape the peer baselines use (FlashInfer's and vLLM's sampling
//        benchmarks draw randn * scale). Its softmax mass sits in the extreme upper tail of
//        150k normals, so top-p 0.9 keeps hundreds to thousands of tokens.
// llm:   a heavy-tailed, LLM-like row: a bulk N(0,1)*2, a sparse heavy right tail (2% of tokens
//        get + Exp(mean 1.5)), and a "head" of 32 random token ids at 22 - s * ln(rank), where the
//        per-row sharpness s in [0.5, 3] makes some rows confident (top-p keeps a few tokens) and
//        some flat (top-p keeps tens to thousands).
// ---------------------------------------------------------------------------------------------
class Gen {
 public:
  explicit Gen(uint64_t seed) : rng_(seed) {}
  double uniform() { return (static_cast<double>(rng_() >> 11) + 0.5) * 0x1.0p-53; }
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = uniform(), u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(6.283185307179586 * u2);
    has_spare_ = true;
    return r * std::cos(6.283185307179586 * u2);
  }
  uint64_t next() { return rng_(); }

 private:
  std::mt19937_64 rng_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

std::vector<float> make_logits(Shape shape, int64_t vocab) {
  std::vector<float> x(static_cast<size_t>(kRows * vocab));
  for (int64_t r = 0; r < kRows; ++r) {
    Gen g(0x5eed0000ull + static_cast<uint64_t>(r) * 7919u + static_cast<uint64_t>(vocab) * 31u +
          (shape == Shape::kLlm ? 1u : 0u));
    float* row = x.data() + r * vocab;
    if (shape == Shape::kGauss) {
      for (int64_t i = 0; i < vocab; ++i) row[i] = static_cast<float>(g.normal() * 4.0);
      continue;
    }
    for (int64_t i = 0; i < vocab; ++i) {
      double y = 2.0 * g.normal();
      if (g.uniform() < 0.02) y += -1.5 * std::log(g.uniform());
      row[i] = static_cast<float>(y);
    }
    const double sharp = 0.5 + 2.5 * static_cast<double>(r) / static_cast<double>(kRows - 1);
    for (int j = 0; j < 32; ++j) {
      const int64_t id = static_cast<int64_t>(g.next() % static_cast<uint64_t>(vocab));
      row[id] = static_cast<float>(22.0 - sharp * std::log(1.0 + j) + 0.25 * g.normal());
    }
  }
  return x;
}

uint16_t to_bf16(float f) {  // round to nearest even (inputs are finite)
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

const std::vector<float>& logits_f32(Shape shape, int64_t vocab) {
  static std::map<std::pair<int, int64_t>, std::vector<float>> cache;
  auto key = std::make_pair(static_cast<int>(shape), vocab);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, make_logits(shape, vocab)).first;
  return it->second;
}

const std::vector<uint16_t>& logits_bf16(Shape shape, int64_t vocab) {
  static std::map<std::pair<int, int64_t>, std::vector<uint16_t>> cache;
  auto key = std::make_pair(static_cast<int>(shape), vocab);
  auto it = cache.find(key);
  if (it == cache.end()) {
    const auto& f = logits_f32(shape, vocab);
    std::vector<uint16_t> h(f.size());
    for (size_t i = 0; i < f.size(); ++i) h[i] = to_bf16(f[i]);
    it = cache.emplace(key, std::move(h)).first;
  }
  return it->second;
}

// One batch: request, parameters, outputs and workspace, all allocated before timing.
struct Batch {
  std::vector<float> temperature, top_p, min_p;
  std::vector<int32_t> top_k;
  std::vector<uint64_t> seed, step;
  std::vector<int32_t> tokens, status, kept, top_ids;
  std::vector<float> logprob, top_lp;
  std::vector<unsigned char> workspace;
  lmsample::Request req;
  lmsample::Outputs out;

  Batch(const Case& c, bool with_diagnostics) {
    const auto n = static_cast<size_t>(kRows);
    temperature.assign(n, c.op.temperature);
    top_k.assign(n, c.op.top_k);
    top_p.assign(n, c.op.top_p);
    min_p.assign(n, c.op.min_p);
    seed.resize(n);
    step.assign(n, 0);
    for (size_t r = 0; r < n; ++r) seed[r] = 0x9e3779b97f4a7c15ull * (r + 1);
    tokens.assign(n, -1);
    status.assign(n, -1);

    req.logits.data = c.dtype == DType::kFloat32
                          ? static_cast<const void*>(logits_f32(c.shape, c.vocab).data())
                          : static_cast<const void*>(logits_bf16(c.shape, c.vocab).data());
    req.logits.dtype = c.dtype;
    req.logits.batch = kRows;
    req.logits.vocab = c.vocab;
    req.params.temperature = temperature.data();
    req.params.top_k = top_k.data();
    req.params.top_p = top_p.data();
    req.params.min_p = min_p.data();
    req.params.seed = seed.data();
    req.params.step = step.data();
    req.top_logprobs = c.op.top_logprobs;

    out.tokens = tokens.data();
    out.status = status.data();
    if (c.op.top_logprobs > 0 || with_diagnostics) {
      logprob.assign(n, 0.0f);
      out.logprob = logprob.data();
    }
    if (with_diagnostics) {
      kept.assign(n, -1);
      out.kept = kept.data();
    }
    if (c.op.top_logprobs > 0) {
      top_ids.assign(n * static_cast<size_t>(c.op.top_logprobs), -2);
      top_lp.assign(n * static_cast<size_t>(c.op.top_logprobs), 0.0f);
      out.top_ids = top_ids.data();
      out.top_logprobs = top_lp.data();
    }
    if (c.impl == Impl::kCpu) workspace.resize(lmsample::workspace_size(req, exec(c)));
  }

  static lmsample::ExecConfig exec(const Case& c) {
    lmsample::ExecConfig cfg;
    cfg.backend = lmsample::Backend::kCpu;
    cfg.cpu_threads = c.cpu_threads;
    return cfg;
  }

  // Runs the batch once; returns an empty string or what went wrong.
  std::string run(const Case& c) {
    if (c.impl == Impl::kRef) {
      lmsample::check::reference_sample_batch(req, out);
      return {};
    }
    const lmsample::Status s =
        lmsample::sample(req, out, workspace.data(), workspace.size(), exec(c));
    return s.ok() ? std::string() : "lmsample::sample failed: " + s.message;
  }
};

bool same_float(float a, float b, float tol) {
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(a - b) <= tol;
}

// Runs the CPU case once with every output and compares with the reference.
std::string verify(const Case& c, double* mean_kept) {
  Batch cpu(c, true);
  Case rc = c;
  rc.impl = Impl::kRef;
  Batch ref(rc, true);
  std::string err = cpu.run(c);
  if (!err.empty()) return err;
  ref.run(rc);
  double kept_sum = 0.0;
  for (int64_t r = 0; r < kRows; ++r) {
    const size_t i = static_cast<size_t>(r);
    char buf[256];
    if (cpu.tokens[i] != ref.tokens[i] || cpu.status[i] != ref.status[i] ||
        cpu.kept[i] != ref.kept[i] || !same_float(cpu.logprob[i], ref.logprob[i], 1e-6f)) {
      std::snprintf(buf, sizeof buf,
                    "row %lld differs from the reference: token %d/%d status %d/%d kept %d/%d "
                    "logprob %.9g/%.9g (cpu/ref)",
                    static_cast<long long>(r), cpu.tokens[i], ref.tokens[i], cpu.status[i],
                    ref.status[i], cpu.kept[i], ref.kept[i], static_cast<double>(cpu.logprob[i]),
                    static_cast<double>(ref.logprob[i]));
      return buf;
    }
    if (cpu.status[i] != lmsample::kRowOk) {
      std::snprintf(buf, sizeof buf, "row %lld: status %s", static_cast<long long>(r),
                    lmsample::row_status_name(cpu.status[i]));
      return buf;
    }
    for (size_t j = 0; j < cpu.top_ids.size(); ++j) {
      if (cpu.top_ids[j] != ref.top_ids[j] || !same_float(cpu.top_lp[j], ref.top_lp[j], 1e-6f)) {
        std::snprintf(buf, sizeof buf, "top logprob %zu differs from the reference", j);
        return buf;
      }
    }
    kept_sum += cpu.kept[i];
  }
  *mean_kept = kept_sum / static_cast<double>(kRows);
  return {};
}

void run_case(benchmark::State& state, Case c) {
  // The verification (and the mean kept-set size) is computed once per case and process.
  static std::map<std::string, std::pair<std::string, double>> verified;
  const std::string name = case_name(c);
  Case vc = c;
  vc.impl = Impl::kCpu;
  auto it = verified.find(case_name(vc));
  if (it == verified.end()) {
    double mean_kept = 0.0;
    std::string err = verify(vc, &mean_kept);
    it = verified.emplace(case_name(vc), std::make_pair(err, mean_kept)).first;
  }
  if (c.impl == Impl::kCpu && !it->second.first.empty()) {
    g_failed = true;
    state.SkipWithError(it->second.first.c_str());
    return;
  }

  Batch b(c, false);
  uint64_t step = 1;
  for (auto _ : state) {
    for (auto& s : b.step) s = step;  // a new draw each iteration, like successive decode steps
    ++step;
    std::string err = b.run(c);
    if (!err.empty()) {
      g_failed = true;
      state.SkipWithError(err.c_str());
      break;
    }
    benchmark::DoNotOptimize(b.tokens.data());
    benchmark::ClobberMemory();
  }
  const int64_t elem = c.dtype == DType::kFloat32 ? 4 : 2;
  state.SetItemsProcessed(state.iterations() * kRows);
  state.SetBytesProcessed(state.iterations() * kRows * c.vocab * elem);
  state.counters["us_per_row"] = benchmark::Counter(
      static_cast<double>(kRows) * 1e-6,
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["kept"] = it->second.second;  // mean kept-set size (same for both impls)
}

void register_case(const Case& c) {
  // On a shared VM the median can be far from the undisturbed time: also report the best
  // repetition.
  benchmark::RegisterBenchmark(case_name(c).c_str(), run_case, c)
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond)
      ->ComputeStatistics("min", [](const std::vector<double>& v) {
        return *std::min_element(v.begin(), v.end());
      });
}

void register_all() {
  const Shape shapes[] = {Shape::kGauss, Shape::kLlm};
  const Impl impls[] = {Impl::kCpu, Impl::kRef};
  for (int o = 0; o < static_cast<int>(sizeof kOps / sizeof kOps[0]); ++o) {
    const DType dtypes[] = {DType::kFloat32, DType::kBFloat16};
    for (DType d : dtypes) {
      if (d == DType::kBFloat16 && o != kMainOp) continue;
      for (Shape s : shapes)
        for (int64_t v : kVocabs)
          for (Impl i : impls) register_case(Case{i, kOps[o], d, s, v, 1});
    }
  }
  // Multi-threaded: the main op at V = 151,936 with 2 threads (the per-row time is wall clock /
  // rows).
  for (Shape s : shapes)
    register_case(Case{Impl::kCpu, kOps[kMainOp], DType::kFloat32, s, kMainVocab, 2});
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("lmsample_version", lmsample::version());
  benchmark::AddCustomContext("rows_per_call", std::to_string(kRows));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (g_failed) std::fprintf(stderr, "lmsample_bench_cpu: some cases failed (see above)\n");
  return g_failed ? 1 : 0;
}
