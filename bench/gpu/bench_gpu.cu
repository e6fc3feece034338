// lmsample_bench_gpu: times lmsample::sample (CUDA backend) per (op, dtype, B, V) with CUDA events,
// cold L2 (a >= 2x L2 scratch buffer is rewritten before every run, untimed), 20 warm-ups and the
// median of 100 runs, next to a "floor": a kernel that only reads the same logits once (many blocks
// per row, 16-byte loads, a max-reduction with one atomic per block), timed the same way.
// Before timing a config, a few of its rows are checked against the CPU backend (bit for bit on
// tokens/statuses, 1e-6 on logprobs); a config that disagrees is reported and not timed.
//
//   lmsample_bench_gpu [--ops greedy,temp,topk,topp,topp95,minp,topk_topp,topk_topp_lp]
//                      [--batch 1,8,32,128,512] [--vocab 32000,128256,151936,262144]
//                      [--dtype f32,bf16] [--dist peaked,flat] [--flat-ops topk_topp]
//                      [--warmup 20] [--iters 100] [--verify-rows 3] [--no-verify]
//                      [--seed N] [--out results.{csv,json}] [--quick]
// Prints a markdown table to stdout. Exit code: 0 all verified, 1 a config disagreed with the CPU
// or failed, 2 usage error, 3 no CUDA device.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench_kit.cuh"
#include "lmsample/lmsample.hpp"

namespace {

using namespace lmsbench;  // NOLINT

using lmsample::DType;

// ---- ops ------------------------------------------------------------------------------------
struct OpDef {
  const char* cli;   // --ops name
  const char* name;  // table name
  float temperature;
  int32_t top_k;
  float top_p;
  float min_p;
  int32_t top_logprobs;
};
const OpDef kOps[] = {
    {"greedy", "greedy", 0.0f, 0, 1.0f, 0.0f, 0},
    {"temp", "temperature", 1.0f, 0, 1.0f, 0.0f, 0},
    {"topk", "top_k50", 1.0f, 50, 1.0f, 0.0f, 0},
    {"topp", "top_p0.9", 1.0f, 0, 0.9f, 0.0f, 0},
    {"topp95", "top_p0.95", 1.0f, 0, 0.95f, 0.0f, 0},
    {"minp", "min_p0.05", 1.0f, 0, 1.0f, 0.05f, 0},
    {"topk_topp", "top_k50+top_p0.9", 1.0f, 50, 0.9f, 0.0f, 0},
    {"topk_topp_lp", "top_k50+top_p0.9+logprobs20", 1.0f, 50, 0.9f, 0.0f, 20},
};

// ---- options --------------------------------------------------------------------------------
struct Options {
  std::vector<std::string> ops = {"greedy", "temp",      "topk",        "topp",
                                  "minp",   "topk_topp", "topk_topp_lp"};
  std::vector<int64_t> batch = {1, 8, 32, 128, 512};
  std::vector<int64_t> vocab = {32000, 128256, 151936, 262144};
  std::vector<std::string> dtype = {"f32", "bf16"};
  std::vector<std::string> dist = {"peaked", "flat"};
  std::vector<std::string> flat_ops = {"topk_topp"};
  int warmup = 20;
  int iters = 100;
  int verify_rows = 3;
  bool verify = true;
  bool scalar_params = false;
  uint64_t seed = 12345;
  std::string out;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) v.push_back(item);
  return v;
}
std::vector<int64_t> split_int(const std::string& s) {
  std::vector<int64_t> v;
  for (const std::string& x : split(s)) v.push_back(std::strtoll(x.c_str(), nullptr, 0));
  return v;
}

void usage() {
  std::printf(
      "usage: lmsample_bench_gpu [options]\n"
      "  --ops LIST        greedy,temp,topk,topp,topp95,minp,topk_topp,topk_topp_lp (default\n"
      "                    all but topp95)\n"
      "  --batch LIST      batch sizes (default 1,8,32,128,512)\n"
      "  --vocab LIST      vocabulary sizes (default 32000,128256,151936,262144)\n"
      "  --dtype LIST      f32,bf16,f16 (default f32,bf16)\n"
      "  --dist LIST       peaked (N(0,1)*4), flat (all equal) (default both)\n"
      "  --flat-ops LIST   ops also timed on flat logits (default topk_topp; 'all' for every op)\n"
      "  --warmup N        warm-up runs per config (default 20)\n"
      "  --iters N         timed runs per config; the median is reported (default 100)\n"
      "  --verify-rows N   rows checked against the CPU backend per config (default 3)\n"
      "  --no-verify       skip the CPU check\n"
      "  --scalar-params   pass each op's parameters once for the call (RowParams::defaults, as\n"
      "                    the Python package does for scalars) instead of as per-row arrays\n"
      "  --seed N          seed of the logits and of the rows' Philox keys\n"
      "  --out PATH        also write the results as CSV (or JSON when PATH ends in .json)\n"
      "  --quick           B 1,32,512; V 151936; ops greedy,topk_topp,topk_topp_lp; 10 warm-ups, "
      "50 runs\n"
      "environment: LMS_BENCH_WARM_L2=1 skips the L2 flush before each run (a diagnostic of what "
      "the cold L2 costs)\n");
}

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], v;
    const size_t eq = a.find('=');
    if (eq != std::string::npos) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    auto val = [&]() -> std::string {
      if (!v.empty()) return v;
      if (i + 1 < argc) return argv[++i];
      std::fprintf(stderr, "missing value for %s\n", a.c_str());
      std::exit(2);
    };
    if (a == "--help" || a == "-h") {
      usage();
      std::exit(0);
    } else if (a == "--ops")
      o.ops = split(val());
    else if (a == "--batch")
      o.batch = split_int(val());
    else if (a == "--vocab")
      o.vocab = split_int(val());
    else if (a == "--dtype")
      o.dtype = split(val());
    else if (a == "--dist")
      o.dist = split(val());
    else if (a == "--flat-ops")
      o.flat_ops = split(val());
    else if (a == "--warmup")
      o.warmup = std::atoi(val().c_str());
    else if (a == "--iters")
      o.iters = std::atoi(val().c_str());
    else if (a == "--verify-rows")
      o.verify_rows = std::atoi(val().c_str());
    else if (a == "--no-verify")
      o.verify = false;
    else if (a == "--scalar-params")
      o.scalar_params = true;
    else if (a == "--seed")
      o.seed = std::strtoull(val().c_str(), nullptr, 0);
    else if (a == "--out")
      o.out = val();
    else if (a == "--quick") {
      o.batch = {1, 32, 512};
      o.vocab = {151936};
      o.ops = {"greedy", "topk_topp", "topk_topp_lp"};
      o.warmup = 10;
      o.iters = 50;
    } else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      usage();
      return false;
    }
  }
  if (o.flat_ops.size() == 1 && o.flat_ops[0] == "all") o.flat_ops = o.ops;
  for (const std::string& op : o.ops) {
    bool found = false;
    for (const OpDef& d : kOps) found = found || op == d.cli;
    if (!found) {
      std::fprintf(stderr, "unknown op %s\n", op.c_str());
      return false;
    }
  }
  for (const std::string& d : o.dtype)
    if (d != "f32" && d != "bf16" && d != "f16") {
      std::fprintf(stderr, "unknown dtype %s\n", d.c_str());
      return false;
    }
  for (const std::string& d : o.dist)
    if (d != "peaked" && d != "flat") {
      std::fprintf(stderr, "unknown dist %s\n", d.c_str());
      return false;
    }
  if (o.iters < 1 || o.warmup < 0) return false;
  return true;
}

DType dtype_of(const std::string& s) {
  return s == "f32" ? DType::kFloat32 : s == "bf16" ? DType::kBFloat16 : DType::kFloat16;
}
size_t elem_bytes(DType d) { return d == DType::kFloat32 ? 4 : 2; }

// ---- device state of one (dtype, B, V)
// -----------------------------------------------------------
struct DevArrays {
  void* logits = nullptr;
  float *temperature = nullptr, *top_p = nullptr, *min_p = nullptr, *logprob = nullptr,
        *top_lp = nullptr;
  int32_t *top_k = nullptr, *tokens = nullptr, *status = nullptr, *kept = nullptr,
          *top_ids = nullptr;
  uint64_t *seed = nullptr, *step = nullptr;
  unsigned* floor_out = nullptr;
  void* ws = nullptr;
  size_t ws_bytes = 0;
  std::vector<void*> all;
  template <class T>
  T* alloc(size_t n) {
    void* p = nullptr;
    CK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
    all.push_back(p);
    return static_cast<T*>(p);
  }
  void reserve_ws(size_t bytes) {
    if (bytes <= ws_bytes && ws) return;
    if (ws) CK(cudaFree(ws));
    CK(cudaMalloc(&ws, std::max<size_t>(bytes, 1)));
    ws_bytes = bytes;
  }
  ~DevArrays() {
    for (void* p : all) cudaFree(p);
    if (ws) cudaFree(ws);
  }
};

struct Result {
  std::string op, dist, dtype;
  int64_t batch = 0, vocab = 0;
  Timing t;
  double bytes = 0;
  double floor_us = 0;
  bool verified = false;
  std::string error;
};

bool lp_close(float a, float b) {
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  if (ua == ub) return true;
  if (std::isnan(a) || std::isnan(b) || std::isinf(a) || std::isinf(b)) return false;
  return std::fabs(static_cast<double>(a) - b) <=
         1e-6 * std::max(1.0, std::fabs(static_cast<double>(b)));
}

// ---- one config -------------------------------------------------------------------------------
class Bench {
 public:
  Bench(const Options& o, cudaStream_t st, void* flush, size_t flush_bytes, int sms)
      : o_(o), st_(st), flush_(flush), flush_bytes_(flush_bytes), sms_(sms) {}

  void run_shape(DType dt, const std::string& dts, int64_t b, int64_t v,
                 std::vector<Result>& results) {
    DevArrays d;
    const size_t n = static_cast<size_t>(b * v);
    d.logits = d.alloc<unsigned char>(n * elem_bytes(dt));
    d.temperature = d.alloc<float>(static_cast<size_t>(b));
    d.top_p = d.alloc<float>(static_cast<size_t>(b));
    d.min_p = d.alloc<float>(static_cast<size_t>(b));
    d.top_k = d.alloc<int32_t>(static_cast<size_t>(b));
    d.seed = d.alloc<uint64_t>(static_cast<size_t>(b));
    d.step = d.alloc<uint64_t>(static_cast<size_t>(b));
    d.tokens = d.alloc<int32_t>(static_cast<size_t>(b));
    d.status = d.alloc<int32_t>(static_cast<size_t>(b));
    d.kept = d.alloc<int32_t>(static_cast<size_t>(b));
    d.logprob = d.alloc<float>(static_cast<size_t>(b));
    d.top_ids = d.alloc<int32_t>(static_cast<size_t>(b) * lmsample::kMaxTopLogprobs);
    d.top_lp = d.alloc<float>(static_cast<size_t>(b) * lmsample::kMaxTopLogprobs);
    d.floor_out = d.alloc<unsigned>(static_cast<size_t>(b));
    // Per-row Philox keys and steps (the same for every op).
    seeds_.resize(static_cast<size_t>(b));
    steps_.resize(static_cast<size_t>(b));
    uint64_t z = o_.seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(b * 131 + v);
    for (int64_t r = 0; r < b; ++r) {
      z = z * 6364136223846793005ull + 1442695040888963407ull;
      seeds_[static_cast<size_t>(r)] = z ^ (z >> 29);
      steps_[static_cast<size_t>(r)] = static_cast<uint64_t>(r * 7 + 100);
    }
    CK(cudaMemcpy(d.seed, seeds_.data(), seeds_.size() * 8, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.step, steps_.data(), steps_.size() * 8, cudaMemcpyHostToDevice));

    const int dcode = dt == DType::kFloat32 ? 0 : dt == DType::kBFloat16 ? 1 : 2;
    const double bytes = static_cast<double>(n * elem_bytes(dt));
    double floor_us = 0;
    for (const std::string& dist : o_.dist) {
      const bool flat = dist == "flat";
      std::vector<const OpDef*> ops;
      for (const std::string& name : o_.ops) {
        if (flat && std::find(o_.flat_ops.begin(), o_.flat_ops.end(), name) == o_.flat_ops.end())
          continue;
        for (const OpDef& od : kOps)
          if (name == od.cli) ops.push_back(&od);
      }
      if (ops.empty()) continue;
      gen_logits<<<sms_ * 8, 256, 0, st_>>>(d.logits, static_cast<int64_t>(n), dcode, flat ? 1 : 0,
                                            o_.seed + 17);
      CK(cudaGetLastError());
      CK(cudaStreamSynchronize(st_));
      if (floor_us == 0) floor_us = time_floor(d, dcode, b, v);
      for (const OpDef* od : ops) {
        Result r;
        r.op = od->name;
        r.dist = dist;
        r.dtype = dts;
        r.batch = b;
        r.vocab = v;
        r.bytes = bytes;
        r.floor_us = floor_us;
        run_op(d, dt, b, v, *od, r);
        print_row(r);
        results.push_back(r);
      }
    }
  }

  static void print_header() {
    std::printf(
        "| op | logits | dtype | B | V | median µs | p10 µs | p90 µs | MB read | GB/s | floor µs | "
        "floor GB/s | × floor | check |\n");
    std::printf("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    std::fflush(stdout);
  }
  static void print_row(const Result& r) {
    if (!r.error.empty()) {
      std::printf(
          "| %s | %s | %s | %lld | %lld | - | - | - | %.1f | - | %.1f | - | - | FAILED: %s |\n",
          r.op.c_str(), r.dist.c_str(), r.dtype.c_str(), static_cast<long long>(r.batch),
          static_cast<long long>(r.vocab), r.bytes / 1e6, r.floor_us, r.error.c_str());
    } else {
      std::printf(
          "| %s | %s | %s | %lld | %lld | %.1f | %.1f | %.1f | %.1f | %.0f | %.1f | %.0f | %.2f | "
          "%s |\n",
          r.op.c_str(), r.dist.c_str(), r.dtype.c_str(), static_cast<long long>(r.batch),
          static_cast<long long>(r.vocab), r.t.median_us, r.t.p10_us, r.t.p90_us, r.bytes / 1e6,
          r.bytes / (r.t.median_us * 1e3), r.floor_us, r.bytes / (r.floor_us * 1e3),
          r.t.median_us / r.floor_us, r.verified ? "cpu-equal" : "unchecked");
    }
    std::fflush(stdout);
  }

 private:
  double time_floor(DevArrays& d, int dcode, int64_t b, int64_t v) {
    const int64_t esz = dcode == 0 ? 4 : 2;
    const int64_t per_vec = 16 / esz;
    // Enough blocks to fill the GPU (8 per SM), but at least 2 vectors per thread per block.
    const int64_t target = std::max<int64_t>(1, (static_cast<int64_t>(sms_) * 8 + b - 1) / b);
    const int64_t max_chunks = std::max<int64_t>(1, v / (256 * per_vec * 2));
    const int64_t chunks = std::min(target, max_chunks);
    int64_t chunk = (v + chunks - 1) / chunks;
    chunk = (chunk + per_vec - 1) / per_vec * per_vec;
    const int64_t grid_x = (v + chunk - 1) / chunk;
    if (b > 65535) {
      std::fprintf(stderr, "batch too large for the floor kernel's grid\n");
      std::exit(2);
    }
    const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(b));
    auto fn = [&] {
      floor_read<<<grid, 256, 0, st_>>>(static_cast<const unsigned char*>(d.logits), v, chunk,
                                        dcode, d.floor_out);
    };
    CK(cudaMemsetAsync(d.floor_out, 0, static_cast<size_t>(b) * 4, st_));
    fn();
    CK(cudaGetLastError());
    CK(cudaStreamSynchronize(st_));
    return time_runs(st_, flush_, flush_bytes_, o_.warmup, o_.iters, fn).median_us;
  }

  void run_op(DevArrays& d, DType dt, int64_t b, int64_t v, const OpDef& od, Result& r) {
    const auto ub = static_cast<size_t>(b);
    std::vector<float> t(ub, od.temperature), p(ub, od.top_p), mp(ub, od.min_p);
    std::vector<int32_t> k(ub, od.top_k);
    CK(cudaMemcpy(d.temperature, t.data(), ub * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.top_p, p.data(), ub * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.min_p, mp.data(), ub * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.top_k, k.data(), ub * 4, cudaMemcpyHostToDevice));

    lmsample::Request req;
    req.logits.data = d.logits;
    req.logits.dtype = dt;
    req.logits.batch = b;
    req.logits.vocab = v;
    // Only the parameters an engine would pass for this op: as per-row arrays, or with
    // --scalar-params as one value for the call (RowParams::defaults, what the Python package
    // passes for a scalar such as temperature=0), which tells the host the op of every row.
    if (o_.scalar_params) {
      req.params.defaults.temperature = od.temperature;
      req.params.defaults.top_k = od.top_k;
      req.params.defaults.top_p = od.top_p;
      req.params.defaults.min_p = od.min_p;
    } else {
      req.params.temperature = d.temperature;
      if (od.top_k) req.params.top_k = d.top_k;
      if (od.top_p < 1.0f) req.params.top_p = d.top_p;
      if (od.min_p > 0.0f) req.params.min_p = d.min_p;
    }
    req.params.seed = d.seed;
    req.params.step = d.step;
    req.top_logprobs = od.top_logprobs;
    lmsample::Outputs out;
    out.tokens = d.tokens;
    out.status = d.status;
    if (od.top_logprobs > 0) {
      out.logprob = d.logprob;
      out.kept = d.kept;
      out.top_ids = d.top_ids;
      out.top_logprobs = d.top_lp;
    }
    lmsample::ExecConfig cfg;
    cfg.backend = lmsample::Backend::kCuda;
    cfg.stream = st_;
    const size_t wsb = lmsample::workspace_size(req, cfg);
    d.reserve_ws(wsb);

    lmsample::Status s = lmsample::sample(req, out, d.ws, wsb, cfg);
    if (!s.ok()) {
      r.error = "sample() returned " + std::to_string(static_cast<int>(s.code)) + ": " + s.message;
      return;
    }
    const cudaError_t e = cudaStreamSynchronize(st_);
    if (e != cudaSuccess) {
      std::fprintf(stderr, "CUDA error after sample(): %s\n", cudaGetErrorString(e));
      std::exit(1);
    }
    if (o_.verify) {
      r.error = verify(d, dt, b, v, od, req);
      if (!r.error.empty()) return;
      r.verified = true;
    }
    bool failed = false;
    r.t = time_runs(st_, flush_, flush_bytes_, o_.warmup, o_.iters, [&] {
      if (!lmsample::sample(req, out, d.ws, wsb, cfg).ok()) failed = true;
    });
    if (failed) r.error = "sample() failed while timing";
  }

  //! A few rows against the CPU backend (one row at a time, from host copies).
  std::string verify(DevArrays& d, DType dt, int64_t b, int64_t v, const OpDef& od,
                     const lmsample::Request& dreq) {
    std::vector<int64_t> rows = {0, b / 2, b - 1};
    for (int64_t i = 3; i < o_.verify_rows; ++i) rows.push_back((i * 7919) % b);
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    if (static_cast<int>(rows.size()) > o_.verify_rows)
      rows.resize(static_cast<size_t>(std::max(1, o_.verify_rows)));
    const size_t esz = elem_bytes(dt);
    const int32_t n = od.top_logprobs;
    std::vector<unsigned char> row(static_cast<size_t>(v) * esz);
    for (const int64_t r : rows) {
      CK(cudaMemcpy(row.data(),
                    static_cast<const unsigned char*>(d.logits) + static_cast<size_t>(r * v) * esz,
                    row.size(), cudaMemcpyDeviceToHost));
      int32_t g_tok = 0, g_stat = 0, g_kept = 0;
      float g_lp = 0;
      std::vector<int32_t> g_ids(static_cast<size_t>(n) + 1);
      std::vector<float> g_tlp(static_cast<size_t>(n) + 1);
      CK(cudaMemcpy(&g_tok, d.tokens + r, 4, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(&g_stat, d.status + r, 4, cudaMemcpyDeviceToHost));
      if (n > 0) {
        CK(cudaMemcpy(&g_kept, d.kept + r, 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(&g_lp, d.logprob + r, 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(g_ids.data(), d.top_ids + r * n, static_cast<size_t>(n) * 4,
                      cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(g_tlp.data(), d.top_lp + r * n, static_cast<size_t>(n) * 4,
                      cudaMemcpyDeviceToHost));
      }
      const float t = od.temperature, p = od.top_p, mp = od.min_p;
      const int32_t k = od.top_k;
      const uint64_t seed = seeds_[static_cast<size_t>(r)], step = steps_[static_cast<size_t>(r)];
      lmsample::Request h;
      h.logits.data = row.data();
      h.logits.dtype = dt;
      h.logits.batch = 1;
      h.logits.vocab = v;
      h.params.defaults = dreq.params.defaults;
      h.params.temperature = &t;
      if (dreq.params.top_k) h.params.top_k = &k;
      if (dreq.params.top_p) h.params.top_p = &p;
      if (dreq.params.min_p) h.params.min_p = &mp;
      h.params.seed = &seed;
      h.params.step = &step;
      h.top_logprobs = n;
      int32_t c_tok = -2, c_stat = -2, c_kept = -2;
      float c_lp = 0;
      std::vector<int32_t> c_ids(static_cast<size_t>(n) + 1);
      std::vector<float> c_tlp(static_cast<size_t>(n) + 1);
      lmsample::Outputs ho;
      ho.tokens = &c_tok;
      ho.status = &c_stat;
      if (n > 0) {
        ho.kept = &c_kept;
        ho.logprob = &c_lp;
        ho.top_ids = c_ids.data();
        ho.top_logprobs = c_tlp.data();
      }
      lmsample::ExecConfig cc;
      cc.backend = lmsample::Backend::kCpu;
      const size_t wb = lmsample::workspace_size(h, cc);
      std::unique_ptr<unsigned char[]> w(new unsigned char[wb + 64]);
      const lmsample::Status s = lmsample::sample(h, ho, w.get(), wb, cc);
      if (!s.ok()) return "CPU backend failed on row " + std::to_string(r) + ": " + s.message;
      std::ostringstream why;
      if (g_stat != c_stat)
        why << "status gpu " << g_stat << " cpu " << c_stat;
      else if (g_tok != c_tok)
        why << "token gpu " << g_tok << " cpu " << c_tok;
      else if (n > 0 && g_kept != c_kept)
        why << "kept gpu " << g_kept << " cpu " << c_kept;
      else if (n > 0 && !lp_close(g_lp, c_lp))
        why << "logprob gpu " << g_lp << " cpu " << c_lp;
      for (int32_t j = 0; why.str().empty() && j < n; ++j) {
        const auto jj = static_cast<size_t>(j);
        if (g_ids[jj] != c_ids[jj])
          why << "top_ids[" << j << "] gpu " << g_ids[jj] << " cpu " << c_ids[jj];
        else if (!lp_close(g_tlp[jj], c_tlp[jj]))
          why << "top_logprobs[" << j << "] gpu " << g_tlp[jj] << " cpu " << c_tlp[jj];
      }
      if (!why.str().empty()) {
        std::fprintf(stderr, "MISMATCH %s %s B=%lld V=%lld row %lld: %s\n", od.name,
                     dt == DType::kFloat32 ? "f32" : "16-bit", static_cast<long long>(b),
                     static_cast<long long>(v), static_cast<long long>(r), why.str().c_str());
        return "row " + std::to_string(r) + " differs from the CPU (" + why.str() + ")";
      }
    }
    return "";
  }

  const Options& o_;
  cudaStream_t st_;
  void* flush_;
  size_t flush_bytes_;
  int sms_;
  std::vector<uint64_t> seeds_, steps_;
};

void write_out(const std::string& path, const std::vector<Result>& rs, const std::string& device) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    return;
  }
  const bool json = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
  if (json) {
    std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"lmsample\": \"%s\",\n  \"results\": [\n",
                 device.c_str(), lmsample::version());
    for (size_t i = 0; i < rs.size(); ++i) {
      const Result& r = rs[i];
      std::fprintf(
          f,
          "    {\"op\": \"%s\", \"logits\": \"%s\", \"dtype\": \"%s\", \"batch\": %lld, \"vocab\": "
          "%lld, "
          "\"median_us\": %.3f, \"p10_us\": %.3f, \"p90_us\": %.3f, \"bytes\": %.0f, \"gbps\": "
          "%.2f, "
          "\"floor_us\": %.3f, \"ratio_to_floor\": %.4f, \"verified\": %s, \"error\": \"%s\"}%s\n",
          r.op.c_str(), r.dist.c_str(), r.dtype.c_str(), static_cast<long long>(r.batch),
          static_cast<long long>(r.vocab), r.t.median_us, r.t.p10_us, r.t.p90_us, r.bytes,
          r.error.empty() ? r.bytes / (r.t.median_us * 1e3) : 0.0, r.floor_us,
          r.error.empty() ? r.t.median_us / r.floor_us : 0.0, r.verified ? "true" : "false",
          r.error.c_str(), i + 1 < rs.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
  } else {
    std::fprintf(f,
                 "op,logits,dtype,batch,vocab,median_us,p10_us,p90_us,bytes,gbps,floor_us,ratio_to_"
                 "floor,verified,error,device\n");
    for (const Result& r : rs) {
      std::fprintf(f, "%s,%s,%s,%lld,%lld,%.3f,%.3f,%.3f,%.0f,%.2f,%.3f,%.4f,%d,\"%s\",\"%s\"\n",
                   r.op.c_str(), r.dist.c_str(), r.dtype.c_str(), static_cast<long long>(r.batch),
                   static_cast<long long>(r.vocab), r.t.median_us, r.t.p10_us, r.t.p90_us, r.bytes,
                   r.error.empty() ? r.bytes / (r.t.median_us * 1e3) : 0.0, r.floor_us,
                   r.error.empty() ? r.t.median_us / r.floor_us : 0.0, r.verified ? 1 : 0,
                   r.error.c_str(), device.c_str());
    }
  }
  std::fclose(f);
  std::fprintf(stderr, "wrote %s\n", path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) return 2;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::fprintf(stderr, "no CUDA device: %s\n",
                 e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount() = 0");
    return 3;
  }
  if (!lmsample::backend_available(lmsample::Backend::kCuda)) {
    std::fprintf(stderr, "lmsample reports the CUDA backend unavailable\n");
    return 3;
  }
  int dev = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, dev));
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);
  const size_t flush_bytes = std::max<size_t>(2 * l2, size_t{128} << 20);
  void* flush = nullptr;
  CK(cudaMalloc(&flush, flush_bytes));
  cudaStream_t st = nullptr;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  char device[256];
  std::snprintf(device, sizeof device, "%s (sm_%d%d, %d SMs, L2 %.0f MB)", prop.name, prop.major,
                prop.minor, prop.multiProcessorCount, static_cast<double>(l2) / 1e6);
  std::printf("# lmsample %s GPU benchmark on %s\n", lmsample::version(), device);
  std::printf(
      "# CUDA events; L2 flushed before each run (%.0f MB rewritten, untimed); %d warm-ups, median "
      "of %d runs\n",
      static_cast<double>(flush_bytes) / 1e6, o.warmup, o.iters);
  std::printf(
      "# logits: peaked = N(0,1)*4, flat = all equal; floor = one read of the logits (16-byte "
      "loads, max-reduction)\n\n");
  Bench::print_header();

  Bench bench(o, st, flush, flush_bytes, prop.multiProcessorCount);
  std::vector<Result> results;
  for (const std::string& dts : o.dtype)
    for (const int64_t v : o.vocab)
      for (const int64_t b : o.batch) {
        if (b < 1 || v < 1 || v > lmsample::kMaxVocab) {
          std::fprintf(stderr, "skipping B=%lld V=%lld\n", static_cast<long long>(b),
                       static_cast<long long>(v));
          continue;
        }
        bench.run_shape(dtype_of(dts), dts, b, v, results);
      }
  int failed = 0;
  for (const Result& r : results) failed += !r.error.empty();
  if (!o.out.empty()) write_out(o.out, results, device);
  CK(cudaFree(flush));
  CK(cudaStreamDestroy(st));
  if (failed) std::fprintf(stderr, "%d config(s) FAILED (see the table)\n", failed);
  return failed ? 1 : 0;
}
