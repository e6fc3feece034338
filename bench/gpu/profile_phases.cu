// Phase timing of the sampling kernel: builds the GPU backend with LMS_PROFILE_PHASES, which makes
// rank 0 of row 0 stamp the global timer between phases, and prints the phase durations of
// top-k 50 + top-p 0.9 at V = 151,936 (fp32, N(0,1)*4 logits) for a few batch sizes.
// results/gpu/README.md quotes its output.
#define LMS_PROFILE_PHASES 1
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "gpu/sample_gpu.cu"

namespace {
#define CHECK(x)                                                           \
  do {                                                                     \
    const cudaError_t e_ = (x);                                            \
    if (e_ != cudaSuccess) {                                               \
      std::fprintf(stderr, "%s failed: %s\n", #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                        \
    }                                                                      \
  } while (0)
}  // namespace

int main() {
  using namespace lmsample;
  const int64_t v = 151936;
  for (const int64_t b : {int64_t{1}, int64_t{32}, int64_t{512}}) {
    std::vector<float> x(static_cast<size_t>(b * v));
    std::mt19937 gen(1);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float& f : x) f = nd(gen) * 4.0f;
    // LMS_PROFILE_TOPP=1: top-p 0.9 alone (the full path), =2: temperature alone (the draw
    // only), else top-k 50 + top-p 0.9
    static const char* const topp_env = std::getenv("LMS_PROFILE_TOPP");
    static const bool topp_only = topp_env != nullptr;
    const bool temp_only = topp_only && topp_env[0] == '2';
    const std::vector<int32_t> k(static_cast<size_t>(b), topp_only ? 0 : 50);
    const std::vector<float> p(static_cast<size_t>(b), temp_only ? 1.0f : 0.9f);
    float *dx = nullptr, *dp = nullptr;
    int32_t *dk = nullptr, *tok = nullptr, *st = nullptr;
    CHECK(cudaMalloc(&dx, x.size() * sizeof(float)));
    CHECK(cudaMalloc(&dp, p.size() * sizeof(float)));
    CHECK(cudaMalloc(&dk, k.size() * sizeof(int32_t)));
    CHECK(cudaMalloc(&tok, k.size() * sizeof(int32_t)));
    CHECK(cudaMalloc(&st, k.size() * sizeof(int32_t)));
    CHECK(cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dp, p.data(), p.size() * sizeof(float), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dk, k.data(), k.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    Request r;
    r.logits = {dx, DType::kFloat32, b, v, 0};
    // only the arrays an engine would pass (a top_k array makes GpuKeys::kAuto stream)
    if (!topp_only) r.params.top_k = dk;
    r.params.top_p = dp;
    Outputs o;
    o.tokens = tok;
    o.status = st;
    ExecConfig c;
    c.backend = Backend::kCuda;
    void* ws = nullptr;
    const size_t wsb = gpu::workspace_size(r, c);
    if (wsb) CHECK(cudaMalloc(&ws, wsb));
    {  // no stamp left over from the previous batch size
      static const unsigned long long zero_ns[16][32] = {}, zero_values[16][8] = {}, zero = 0;
      CHECK(cudaMemcpyToSymbol(gpu::g_topp_fallbacks, &zero, sizeof zero));
      CHECK(cudaMemcpyToSymbol(gpu::g_phase_ns, zero_ns, sizeof zero_ns));
      CHECK(cudaMemcpyToSymbol(gpu::g_phase_value, zero_values, sizeof zero_values));
    }
    // LMS_PROFILE_COLD=1: the L2 flushed (256 MB rewritten) before the last, stamped, run, as
    // the benchmark does before each run (instruction fetches included)
    static const bool cold = std::getenv("LMS_PROFILE_COLD") != nullptr;
    static void* flush = nullptr;
    const size_t flush_bytes = size_t{256} << 20;
    if (cold && !flush) CHECK(cudaMalloc(&flush, flush_bytes));
    for (int it = 0; it < 300; ++it) {  // enough for the clocks to ramp up
      if (cold && it == 299) CHECK(cudaMemsetAsync(flush, it & 0xff, flush_bytes));
      const Status s = gpu::sample(r, o, ws, wsb, c);
      if (!s.ok()) {
        std::fprintf(stderr, "%s\n", s.message.c_str());
        return 1;
      }
    }
    CHECK(cudaDeviceSynchronize());
    unsigned long long ts[16][32], vals[16][8];
    CHECK(cudaMemcpyFromSymbol(ts, gpu::g_phase_ns, sizeof ts));
    CHECK(cudaMemcpyFromSymbol(vals, gpu::g_phase_value, sizeof vals));
    unsigned long long fallbacks = 0;
    CHECK(cudaMemcpyFromSymbol(&fallbacks, gpu::g_topp_fallbacks, sizeof fallbacks));
    const unsigned long long* t = ts[0];
    // the group's CTAs of row 0: those that stamped the end
    int group = 0;
    while (group < 16 && ts[group][8] >= t[0] && ts[group][8] - t[0] < 1000000000ull) ++group;
    unsigned long long start_lo = ~0ull, start_hi = 0, load_lo = ~0ull, load_hi = 0;
    for (int q = 0; q < group; ++q) {
      start_lo = std::min(start_lo, ts[q][0]);
      start_hi = std::max(start_hi, ts[q][0]);
      load_lo = std::min(load_lo, ts[q][1]);
      load_hi = std::max(load_hi, ts[q][1]);
    }
    std::printf(
        "B=%ld (group %d): load %llu, local bound %llu, block reduce %llu, group exchange %llu, "
        "compaction %llu, count exchange + gather %llu, rank-0 finish %llu, final barrier %llu ns "
        "(total %llu); start spread %llu, load-end spread %llu ns; candidates %llu (rank 0: "
        "%llu)\n",
        static_cast<long>(b), group, t[1] - t[0], t[9] - t[1], t[10] - t[9], t[2] - t[10],
        t[4] - t[3], t[5] - t[4], t[6] - t[5], t[8] - t[7], t[8] - t[0], start_hi - start_lo,
        load_hi - load_lo, vals[0][0], vals[0][1]);
    if (topp_only && !temp_only && t[28] != 0)  // (temperature_rows_kernel's top-p finish)
      std::printf(
          "  temperature kernel's top-p finish: totals + list + lowest key %llu, key select + "
          "kept %llu, token select %llu ns; finish start - row 0's first stamp %lld ns\n",
          t[29] - t[28], t[30] - t[29], t[31] - t[30],
          static_cast<long long>(t[28]) - static_cast<long long>(t[0]));
    if (!topp_only)  // (the candidate path's stamps; the full path has its own)
      std::printf(
          "  finish: top-k %llu, weights + total %llu, top-p %llu, kept %llu, draw %llu, "
          "barrier %llu ns\n",
          t[11] - t[5], t[12] - t[11], t[13] - t[12], t[14] - t[13], t[15] - t[14], t[6] - t[15]);
    else if (temp_only)  // (no top-p: its stamps are not written)
      std::printf(
          "  full path: draw %llu ns (sum pass %llu, block reduce + scan %llu, group sum %llu, "
          "walk %llu)\n",
          t[6] - t[18], t[25] - t[18], t[26] - t[25], t[27] - t[26], t[6] - t[27]);
    else
      std::printf(
          "  full path: top-k select %llu, top-p select %llu (exp pass %llu, group barrier "
          "%llu, merge + scan %llu, push pass %llu, count exchange %llu, rank 0 ranks %llu, "
          "post %llu), draw %llu ns (sum pass %llu, block reduce + scan %llu, group sum "
          "%llu, walk %llu); top-p by radix select (the bucketed threshold did not apply) in "
          "%llu of %ld rows\n",
          t[17] - t[16], t[18] - t[17], t[19] - t[17], t[20] - t[19], t[21] - t[20], t[22] - t[21],
          t[23] - t[22], t[24] - t[23], t[18] - t[24], t[6] - t[18], t[25] - t[18], t[26] - t[25],
          t[27] - t[26], t[6] - t[27], fallbacks / 300, static_cast<long>(b));
    cudaFree(dx);
    cudaFree(dp);
    cudaFree(dk);
    cudaFree(tok);
    cudaFree(st);
    if (ws) cudaFree(ws);
  }
  return 0;
}
