// lmsample_bench_verify_gpu: times lmsample::verify_chain (CUDA backend) per (draft kind, dtype,
// B requests, K drafts each, V), next to the floor: one read of the B (K + 1) target rows. Timing
// as lmsample_bench_gpu (bench_kit.cuh: CUDA events, cold L2, warm-ups, the median).
//
// Inputs: target logits N(0,1) * 4 as fp32 or bf16; each draft row is its target row plus N(0,1)
// noise (fp32 logits, or their softmax for kProbs) and the draft token is the draft row's argmax,
// so that drafts are often but not always accepted (the mean accepted count is printed); T = 1,
// no truncation, every request's own seed.
//
//   lmsample_bench_verify_gpu [--batch 1,8,64,256] [--k 1,4,8] [--vocab 151936]
//                             [--dtype f32,bf16] [--kinds det,probs,logits]
//                             [--warmup 20] [--iters 100]
// Prints `# ` header lines, then one line per point:
//   op dtype B K V median_us p10_us p90_us floor_us mean_accepted
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_kit.cuh"
#include "lmsample/lmsample.hpp"

namespace {

using namespace lmsbench;  // NOLINT
using lmsample::DraftKind;
using lmsample::DType;

std::vector<int64_t> ints(const char* s) {
  std::vector<int64_t> v;
  for (const char* p = s; *p;) {
    v.push_back(std::atoll(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return v;
}
std::vector<std::string> words(const char* s) {
  std::vector<std::string> v;
  std::string cur;
  for (const char* p = s;; ++p) {
    if (*p == ',' || *p == 0) {
      if (!cur.empty()) v.push_back(cur);
      cur.clear();
      if (*p == 0) break;
    } else {
      cur += *p;
    }
  }
  return v;
}

// Draft row d (request d / k, position d % k) = its target row + N(0,1) noise, as fp32.
__global__ void make_draft_rows(const void* target, int dtype, float* draft, int64_t v, int64_t k,
                                uint64_t seed) {
  const int64_t d = blockIdx.y, r = d + d / k;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < v;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float t = dtype == 0
                        ? static_cast<const float*>(target)[r * v + i]
                        : __bfloat162float(static_cast<const __nv_bfloat16*>(target)[r * v + i]);
    const uint64_t h = splitmix(seed ^ (static_cast<uint64_t>(d * v + i) * 0xd1342543de82ef95ull));
    const float u1 = (static_cast<float>(h >> 40) + 1.0f) * 0x1.0p-24f;
    const float u2 = static_cast<float>((h >> 16) & 0xffffffu) * 0x1.0p-24f;
    draft[d * v + i] = t + sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
  }
}

// One block per draft row: its argmax (the draft token) and, with probs, the row's softmax in
// place.
__global__ void __launch_bounds__(256)
    finish_draft_rows(float* draft, int64_t v, int32_t* tokens, int softmax) {
  const int64_t d = blockIdx.x;
  float* x = draft + d * v;
  __shared__ float sm[256];
  __shared__ int si[256];
  float m = -INFINITY;
  int at = 0;
  for (int64_t i = threadIdx.x; i < v; i += 256)
    if (x[i] > m) {
      m = x[i];
      at = static_cast<int>(i);
    }
  sm[threadIdx.x] = m;
  si[threadIdx.x] = at;
  __syncthreads();
  for (int s = 128; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float o = sm[threadIdx.x + s];
      const int oi = si[threadIdx.x + s];
      if (o > sm[threadIdx.x] || (o == sm[threadIdx.x] && oi < si[threadIdx.x])) {
        sm[threadIdx.x] = o;
        si[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  m = sm[0];
  if (threadIdx.x == 0) tokens[d] = si[0];
  if (!softmax) return;
  __syncthreads();
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < v; i += 256) s += expf(x[i] - m);
  sm[threadIdx.x] = s;
  __syncthreads();
  for (int w = 128; w > 0; w >>= 1) {
    if (threadIdx.x < w) sm[threadIdx.x] += sm[threadIdx.x + w];
    __syncthreads();
  }
  const float inv = 1.0f / sm[0];
  for (int64_t i = threadIdx.x; i < v; i += 256) x[i] = fminf(1.0f, expf(x[i] - m) * inv);
}

template <class T>
T* dalloc(size_t n) {
  void* p = nullptr;
  CK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
  return static_cast<T*>(p);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> batches{1, 8, 64, 256}, ks{1, 4, 8}, vocabs{151936};
  std::vector<std::string> dtypes{"f32", "bf16"}, kinds{"det", "probs", "logits"};
  int warmup = 20, iters = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--batch")
      batches = ints(argv[i + 1]);
    else if (a == "--k")
      ks = ints(argv[i + 1]);
    else if (a == "--vocab")
      vocabs = ints(argv[i + 1]);
    else if (a == "--dtype")
      dtypes = words(argv[i + 1]);
    else if (a == "--kinds")
      kinds = words(argv[i + 1]);
    else if (a == "--warmup")
      warmup = std::atoi(argv[i + 1]);
    else if (a == "--iters")
      iters = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
    std::fprintf(stderr, "no CUDA device\n");
    return 3;
  }
  std::printf("# gpu %s (sm_%d%d, %d SMs), lmsample %s, contract %d\n", prop.name, prop.major,
              prop.minor, prop.multiProcessorCount, lmsample::version(),
              lmsample::contract_version());
  std::printf("# method: CUDA events, L2 flushed before each run, %d warm-ups, median of %d\n",
              warmup, iters);
  std::printf("# op dtype B K V median_us p10_us p90_us floor_us mean_accepted\n");
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  const size_t flush_bytes =
      std::max<size_t>(2 * static_cast<size_t>(prop.l2CacheSize), 256u << 20);
  void* flush = dalloc<unsigned char>(flush_bytes);
  int failures = 0;
  for (const int64_t v : vocabs)
    for (const std::string& dts : dtypes)
      for (const int64_t b : batches)
        for (const int64_t k : ks) {
          const int dtype = dts == "f32" ? 0 : 1;
          const DType dt = dtype == 0 ? DType::kFloat32 : DType::kBFloat16;
          const int64_t n = b * (k + 1), nd = b * k;
          const size_t esz = dtype == 0 ? 4 : 2;
          void* target = dalloc<unsigned char>(static_cast<size_t>(n * v) * esz);
          gen_logits<<<1024, 256, 0, st>>>(target, n * v, dtype, 0,
                                           1234 + static_cast<uint64_t>(n));
          float* draft = dalloc<float>(static_cast<size_t>(nd * v));
          int32_t* dtok = dalloc<int32_t>(static_cast<size_t>(nd));
          std::vector<int64_t> off(static_cast<size_t>(b + 1));
          for (int64_t i = 0; i <= b; ++i) off[static_cast<size_t>(i)] = i * (k + 1);
          int64_t* doff = dalloc<int64_t>(off.size());
          CK(cudaMemcpy(doff, off.data(), off.size() * 8, cudaMemcpyHostToDevice));
          std::vector<uint64_t> seeds(static_cast<size_t>(b));
          for (int64_t i = 0; i < b; ++i)
            seeds[static_cast<size_t>(i)] = 1000 + static_cast<uint64_t>(i);
          uint64_t* dseed = dalloc<uint64_t>(seeds.size());
          CK(cudaMemcpy(dseed, seeds.data(), seeds.size() * 8, cudaMemcpyHostToDevice));
          int32_t *acc = dalloc<int32_t>(static_cast<size_t>(b)),
                  *tok = dalloc<int32_t>(static_cast<size_t>(n)),
                  *sta = dalloc<int32_t>(static_cast<size_t>(b));
          unsigned* fl = dalloc<unsigned>(static_cast<size_t>(n));
          const int64_t chunk = 8192;
          const dim3 fgrid(static_cast<unsigned>((v + chunk - 1) / chunk),
                           static_cast<unsigned>(n));
          const Timing floor = time_runs(st, flush, flush_bytes, warmup, iters, [&] {
            floor_read<<<fgrid, 256, 0, st>>>(static_cast<const unsigned char*>(target), v, chunk,
                                              dtype, fl);
          });
          for (const std::string& kn : kinds) {
            const DraftKind kind = kn == "det"     ? DraftKind::kDeterministic
                                   : kn == "probs" ? DraftKind::kProbs
                                                   : DraftKind::kLogits;
            make_draft_rows<<<dim3(64, static_cast<unsigned>(nd)), 256, 0, st>>>(target, dtype,
                                                                                 draft, v, k, 99);
            finish_draft_rows<<<static_cast<unsigned>(nd), 256, 0, st>>>(
                draft, v, dtok, kind == DraftKind::kProbs ? 1 : 0);
            CK(cudaStreamSynchronize(st));
            lmsample::ChainRequest req;
            req.target = lmsample::Logits{target, dt, n, v, 0};
            req.row_offsets = doff;
            req.requests = b;
            req.draft_tokens = dtok;
            req.draft_kind = kind;
            if (kind != DraftKind::kDeterministic)
              req.draft = lmsample::Logits{draft, DType::kFloat32, nd, v, 0};
            req.params.seed = dseed;
            req.max_drafts = static_cast<int32_t>(k);  // (as an engine states its K)
            lmsample::ExecConfig cfg;
            cfg.backend = lmsample::Backend::kCuda;
            cfg.stream = st;
            const size_t wsb = lmsample::verify_chain_workspace_size(req, cfg);
            void* ws = dalloc<unsigned char>(wsb);
            const lmsample::ChainOutputs out{acc, tok, sta, nullptr};
            lmsample::Status s = lmsample::verify_chain(req, out, ws, wsb, cfg);
            CK(cudaStreamSynchronize(st));
            std::vector<int32_t> ha(static_cast<size_t>(b)), hs(static_cast<size_t>(b));
            CK(cudaMemcpy(ha.data(), acc, ha.size() * 4, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(hs.data(), sta, hs.size() * 4, cudaMemcpyDeviceToHost));
            double mean = 0;
            bool ok = s.ok();
            for (int64_t i = 0; i < b; ++i) {
              mean += ha[static_cast<size_t>(i)];
              ok = ok && hs[static_cast<size_t>(i)] == 0 && ha[static_cast<size_t>(i)] >= 0 &&
                   ha[static_cast<size_t>(i)] <= k;
            }
            mean /= static_cast<double>(b);
            if (!ok) {
              std::printf("# bad verify_%s %s B=%lld K=%lld: %s\n", kn.c_str(), dts.c_str(),
                          static_cast<long long>(b), static_cast<long long>(k), s.message.c_str());
              ++failures;
              CK(cudaFree(ws));
              continue;
            }
            const Timing t = time_runs(st, flush, flush_bytes, warmup, iters,
                                       [&] { s = lmsample::verify_chain(req, out, ws, wsb, cfg); });
            std::printf("verify_%s %s %lld %lld %lld %.1f %.1f %.1f %.1f %.2f\n", kn.c_str(),
                        dts.c_str(), static_cast<long long>(b), static_cast<long long>(k),
                        static_cast<long long>(v), t.median_us, t.p10_us, t.p90_us, floor.median_us,
                        mean);
            std::fflush(stdout);
            CK(cudaFree(ws));
          }
          for (void* p :
               {static_cast<void*>(target), static_cast<void*>(draft), static_cast<void*>(dtok),
                static_cast<void*>(doff), static_cast<void*>(dseed), static_cast<void*>(acc),
                static_cast<void*>(tok), static_cast<void*>(sta), static_cast<void*>(fl)})
            CK(cudaFree(p));
        }
  return failures ? 1 : 0;
}
