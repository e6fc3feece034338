// fi_chain_bench: times FlashInfer's chain speculative sampling (flashinfer-python 0.5.3 wheel,
// header-only kernels of flashinfer/data/include) on one GPU, as the peer of lmsample's
// speculative verification.
//
//   build: scripts/build_fi_chain_bench.sh        usage: .dev/fi_chain_bench [vocab=151936]
//
// Points: B in {1, 8, 64, 256} requests, K in {1, 4, 8} draft tokens, vocab V. Inputs: target
// logits [B*(K+1), V] and draft logits [B*K, V], N(0,1)*4 from curand Philox; draft token ids
// [B, K] uniform in [0, V). One line per (op, B, K): `op dtype B K V median_us min_us`, the
// CUDA-event time of one call, median and min of 100 runs after 20 warm-ups, L2 flushed before
// each timed run by a 256 MiB cudaMemsetAsync outside the timed region. Ops:
//   softmax_target        OnlineSoftmax of the B*(K+1) target rows (temperature 1)
//   softmax_draft         OnlineSoftmax of the B*K draft rows
//   chain                 ChainSpeculativeSampling on the softmaxed probabilities
//   softmax_target_chain  softmax_target + chain (the peer path when the draft gives probs)
//   softmax_both_chain    both softmaxes + chain (the peer path when the draft gives logits)
//   floor                 one read of the target logits by a GPU-filling grid-stride max
// As flashinfer/sampling.py: deterministic=true, enable_pdl=false (sampling.py would enable PDL
// on sm_90 for softmax; chain has no PDL), a 1 MiB softmax workspace, and a fresh Philox offset
// per chain call (advanced by (B*(K+1)+3)/4*4 as get_seed_and_offset does). The two int32
// counters that chain accumulates into (+=) are zeroed before every call, outside the timed
// region (sampling.py allocates them with torch.zeros when the caller gives none).
//
// dtype: fp32 only. OnlineSoftmax<DType> (sampling.cuh:1255) reads and writes the same DType,
// so there is no bf16-logits -> fp32-probs form, and ChainSpeculativeSampling is only
// instantiated on fp32 probabilities by FlashInfer (csrc/sampling.cu; sampling.py calls
// .float() on bf16 inputs first, a separate torch cast kernel not timed here).
//
// After one more untimed call per point, chain's outputs are checked: accepted and emitted counts
// in [0, K] with emitted <= accepted, output ids [B, K+1] = the first `emitted` draft ids, then one
// id in [0, V), then -1s; and one target and one draft probability row must sum to 1. Breaches
// are printed as `# bad ...` lines, their count on a last `# checks:` line (exit status 2 if any).
#include <flashinfer/sampling.cuh>

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace fs = flashinfer::sampling;

constexpr uint32_t BATCHES[] = {1, 8, 64, 256};
constexpr uint32_t KS[] = {1, 4, 8};
constexpr uint32_t BMAX = 256, KMAX = 8;
constexpr int WARMUP = 20, ITERS = 100, MAX_REPORTS = 4;
constexpr uint64_t SEED = 20251201;
constexpr size_t FLUSH_BYTES = size_t(256) << 20;
constexpr size_t SOFTMAX_WS_BYTES = size_t(1) << 20;  // sampling.py's "softmax_workspace"
constexpr int FLOOR_THREADS = 256;

#define CK(x) check((x), #x, __LINE__)
static void check(cudaError_t e, const char* what, int line) {
  if (e == cudaSuccess) return;
  printf("# fatal: line %d: %s: %s\n", line, what, cudaGetErrorString(e));
  exit(1);
}
#define TRY(x)                        \
  do {                                \
    const cudaError_t e_ = (x);       \
    if (e_ != cudaSuccess) return e_; \
  } while (0)

// ---------------------------------------------------------------- helper kernels (not FlashInfer)

// x[i] = N(0,1) * scale; element i draws from Philox subsequence i.
__global__ void fill_normal(float* x, size_t n, float scale, uint64_t seed) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    curandStatePhilox4_32_10_t st;
    curand_init(seed, i, 0, &st);
    x[i] = curand_normal(&st) * scale;
  }
}

// ids[i] uniform in [0, v).
__global__ void fill_ids(int* ids, size_t n, uint32_t v, uint64_t seed) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  curandStatePhilox4_32_10_t st;
  curand_init(seed, i, 0, &st);
  ids[i] = int(curand(&st) % v);
}

// Float -> uint with the same order, so that atomicMax on keys is a float max.
__device__ inline unsigned float_key(float f) {
  const unsigned u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// The floor: reads n floats once, four float4 loads in flight per thread on a grid that fills
// the GPU; each block folds its max into *out with one atomicMax.
__global__ void __launch_bounds__(FLOOR_THREADS)
    floor_max(const float* __restrict__ x, size_t n, unsigned* out) {
  const float4* x4 = reinterpret_cast<const float4*>(x);
  const size_t n4 = n / 4, step = size_t(gridDim.x) * FLOOR_THREADS;
  const size_t t = blockIdx.x * size_t(FLOOR_THREADS) + threadIdx.x;
  float m = -INFINITY;
  auto fold = [&m](const float4& v) { m = fmaxf(fmaxf(m, fmaxf(v.x, v.y)), fmaxf(v.z, v.w)); };
  size_t i = t;
  for (; i + 3 * step < n4; i += 4 * step) {
    const float4 a = x4[i], b = x4[i + step], c = x4[i + 2 * step], d = x4[i + 3 * step];
    fold(a);
    fold(b);
    fold(c);
    fold(d);
  }
  for (; i < n4; i += step) fold(x4[i]);
  for (size_t j = 4 * n4 + t; j < n; j += step) m = fmaxf(m, x[j]);
  using Reduce = cub::BlockReduce<float, FLOOR_THREADS>;
  __shared__ typename Reduce::TempStorage tmp;
  m = Reduce(tmp).Reduce(m, MaxOp{});
  if (threadIdx.x == 0) atomicMax(out, float_key(m));
}

// ---------------------------------------------------------------- state and ops

uint32_t V = 151936;
uint32_t B = 1, K = 1;  // the current point
uint64_t philox_offset = 0;

struct {
  float *tgt_logits, *drf_logits;  // [BMAX*(KMAX+1), V], [BMAX*KMAX, V]
  float *tgt_probs, *drf_probs;    // same shapes
  int* draft_ids;                  // [BMAX*KMAX]; point (B, K) uses the first B*K as [B, K]
  int* out_ids;                    // [BMAX*(KMAX+1)]
  int *accepted, *emitted;         // [BMAX]
  void* softmax_ws;
  unsigned* floor_out;
  void* flush;
  int floor_grid_max;
} g;

static cudaError_t softmax(float* in, float* out, uint32_t rows) {
  return fs::OnlineSoftmax<float>(in, out, rows, V, /*temperature_arr=*/nullptr,
                                  /*temperature_val=*/1.f, g.softmax_ws, SOFTMAX_WS_BYTES,
                                  /*enable_pdl=*/false);
}
static cudaError_t softmax_target() { return softmax(g.tgt_logits, g.tgt_probs, B * (K + 1)); }
static cudaError_t softmax_draft() { return softmax(g.drf_logits, g.drf_probs, B * K); }

static cudaError_t chain() {
  const uint64_t off = philox_offset;
  philox_offset += (uint64_t(B) * (K + 1) + 3) / 4 * 4;
  return fs::ChainSpeculativeSampling<float, int>(g.drf_probs, g.draft_ids, g.tgt_probs, g.out_ids,
                                                  g.accepted, g.emitted, B, K, V,
                                                  /*deterministic=*/true, SEED, off, /*stream=*/0);
}

static cudaError_t floor_op() {
  const size_t n = size_t(B) * (K + 1) * V;
  const size_t want = (n / 4 + FLOOR_THREADS - 1) / FLOOR_THREADS;
  const int grid = int(std::max<size_t>(1, std::min<size_t>(want, g.floor_grid_max)));
  floor_max<<<grid, FLOOR_THREADS>>>(g.tgt_logits, n, g.floor_out);
  return cudaGetLastError();
}

struct Op {
  const char* name;
  std::function<cudaError_t()> run;
};
static const Op OPS[] = {
    {"softmax_target", softmax_target},
    {"softmax_draft", softmax_draft},
    {"chain", chain},
    {"softmax_target_chain",
     [] {
       TRY(softmax_target());
       return chain();
     }},
    {"softmax_both_chain",
     [] {
       TRY(softmax_target());
       TRY(softmax_draft());
       return chain();
     }},
    {"floor", floor_op},
};

// ---------------------------------------------------------------- timing

cudaEvent_t ev0, ev1;

// A hung kernel would otherwise stall the whole sweep; give up after 10 s.
static void wait_for(cudaEvent_t e, const std::string& what) {
  const auto t0 = std::chrono::steady_clock::now();
  cudaError_t r;
  while ((r = cudaEventQuery(e)) == cudaErrorNotReady) {
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(10)) {
      printf("# HANG %s: not done after 10 s, giving up\n", what.c_str());
      fflush(stdout);
      _exit(3);
    }
    usleep(20);
  }
  if (r != cudaSuccess) {
    printf("# fatal: %s: %s\n", what.c_str(), cudaGetErrorString(r));
    exit(1);
  }
}

// Work that every call needs but that is not the op: chain's += counters start at zero.
static void pre_call() {
  CK(cudaMemsetAsync(g.accepted, 0, BMAX * sizeof(int)));
  CK(cudaMemsetAsync(g.emitted, 0, BMAX * sizeof(int)));
  CK(cudaMemsetAsync(g.floor_out, 0, sizeof(unsigned)));
}

static cudaError_t time_op(const Op& op, const std::string& what, float* med, float* mn) {
  for (int i = 0; i < WARMUP; ++i) {
    pre_call();
    TRY(op.run());
  }
  std::vector<float> t(ITERS);
  for (int i = 0; i < ITERS; ++i) {
    CK(cudaMemsetAsync(g.flush, i & 0xff, FLUSH_BYTES));  // evict L2
    pre_call();
    CK(cudaEventRecord(ev0));
    const cudaError_t e = op.run();
    CK(cudaEventRecord(ev1));
    wait_for(ev1, what);
    TRY(e);
    CK(cudaEventElapsedTime(&t[i], ev0, ev1));
    t[i] *= 1000.f;
  }
  std::sort(t.begin(), t.end());
  *med = t[ITERS / 2];
  *mn = t[0];
  return cudaSuccess;
}

// ---------------------------------------------------------------- checks

static int reported = 0;
static void bad(const std::string& what) {
  if (reported++ < 64) printf("# bad %s\n", what.c_str());
}

static void check_row_sum(const float* probs, uint32_t row, const std::string& what) {
  std::vector<float> h(V);
  CK(cudaMemcpy(h.data(), probs + size_t(row) * V, V * sizeof(float), cudaMemcpyDeviceToHost));
  double s = 0;
  for (float p : h) s += p;
  if (!(std::fabs(s - 1.0) < 1e-3))
    bad(what + " row " + std::to_string(row) + " sums to " + std::to_string(s));
}

// One untimed softmax_both_chain call from zeroed counters and -2-filled ids, then the contract.
static void check_chain(const std::string& pt) {
  CK(cudaMemset(g.out_ids, 0xfe, BMAX * (KMAX + 1) * sizeof(int)));
  pre_call();
  CK(softmax_target());
  CK(softmax_draft());
  CK(chain());
  CK(cudaEventRecord(ev1));
  wait_for(ev1, "check " + pt);
  std::vector<int> ids(B * (K + 1)), draft(B * K), acc(B), emi(B);
  CK(cudaMemcpy(ids.data(), g.out_ids, ids.size() * sizeof(int), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(draft.data(), g.draft_ids, draft.size() * sizeof(int), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(acc.data(), g.accepted, B * sizeof(int), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(emi.data(), g.emitted, B * sizeof(int), cudaMemcpyDeviceToHost));
  int nbad = 0;
  for (uint32_t b = 0; b < B; ++b) {
    const std::string row = "chain " + pt + " row " + std::to_string(b) + ": ";
    const int a = acc[b], e = emi[b];
    const int* o = &ids[b * (K + 1)];
    std::string why;
    if (a < 0 || a > int(K))
      why = "accepted " + std::to_string(a) + " not in [0,K]";
    else if (e < 0 || e > int(K))
      why = "emitted " + std::to_string(e) + " not in [0,K]";
    else if (e > a)
      why = "emitted " + std::to_string(e) + " > accepted " + std::to_string(a);
    for (uint32_t j = 0; j <= K && why.empty(); ++j) {
      const int id = o[j], pos = int(j);
      if (id != -1 && (id < 0 || id >= int(V)))
        why = "id " + std::to_string(id) + " at " + std::to_string(j) + " not in [0,V) or -1";
      else if (pos < e && id != draft[b * K + j])
        why = "emitted id at " + std::to_string(j) + " is not the draft id";
      else if (pos == e && id == -1)
        why = "no token sampled at position emitted";
      else if (pos > e && id != -1)
        why = "id after the sampled token is not -1";
    }
    if (!why.empty() && nbad++ < MAX_REPORTS) bad(row + why);
  }
  if (nbad > MAX_REPORTS) bad("chain " + pt + ": " + std::to_string(nbad) + " bad rows in all");
  check_row_sum(g.tgt_probs, B * (K + 1) - 1, "softmax_target " + pt);
  check_row_sum(g.drf_probs, B * K - 1, "softmax_draft " + pt);
}

// ---------------------------------------------------------------- main

template <class T>
static T* dev_alloc(size_t count) {
  void* p = nullptr;
  CK(cudaMalloc(&p, count * sizeof(T)));
  return static_cast<T*>(p);
}

int main(int argc, char** argv) {
  if (argc > 1) V = uint32_t(std::strtoul(argv[1], nullptr, 10));
  if (V < 2) {
    printf("# fatal: vocab must be >= 2\n");
    return 1;
  }
  int dev, driver, runtime;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  CK(cudaDriverGetVersion(&driver));
  CK(cudaRuntimeGetVersion(&runtime));
  printf("# gpu %s, sm_%d%d, %d SMs, L2 %.1f MiB, %.1f GiB, driver %d, runtime %d\n", prop.name,
         prop.major, prop.minor, prop.multiProcessorCount, prop.l2CacheSize / 1048576.0,
         prop.totalGlobalMem / 1073741824.0, driver, runtime);
  printf(
      "# flashinfer 0.5.3 (flashinfer-python wheel, header-only data/include): OnlineSoftmax, "
      "ChainSpeculativeSampling<float,int>\n");
  printf(
      "# method: CUDA-event time of one call, median and min of %d runs after %d warm-ups, "
      "L2 flushed by a %zu MiB cudaMemsetAsync before each timed run (untimed); "
      "deterministic=1 enable_pdl=0 temperature=1, fresh Philox offset per chain call; "
      "logits N(0,1)*4, draft ids uniform\n",
      ITERS, WARMUP, FLUSH_BYTES >> 20);
  printf("# dtype: fp32 only (OnlineSoftmax has no bf16-in/fp32-out form; chain takes fp32)\n");
  printf("# op dtype B K V median_us min_us\n");
  fflush(stdout);

  const size_t tgt_n = size_t(BMAX) * (KMAX + 1) * V, drf_n = size_t(BMAX) * KMAX * V;
  g.tgt_logits = dev_alloc<float>(tgt_n);
  g.tgt_probs = dev_alloc<float>(tgt_n);
  g.drf_logits = dev_alloc<float>(drf_n);
  g.drf_probs = dev_alloc<float>(drf_n);
  g.draft_ids = dev_alloc<int>(BMAX * KMAX);
  g.out_ids = dev_alloc<int>(BMAX * (KMAX + 1));
  g.accepted = dev_alloc<int>(BMAX);
  g.emitted = dev_alloc<int>(BMAX);
  g.softmax_ws = dev_alloc<char>(SOFTMAX_WS_BYTES);
  g.floor_out = dev_alloc<unsigned>(1);
  g.flush = dev_alloc<char>(FLUSH_BYTES);
  CK(cudaEventCreate(&ev0));
  CK(cudaEventCreate(&ev1));
  int per_sm = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, floor_max, FLOOR_THREADS, 0));
  g.floor_grid_max = std::max(1, per_sm) * prop.multiProcessorCount;

  const int gen_grid = 8 * prop.multiProcessorCount;
  fill_normal<<<gen_grid, 256>>>(g.tgt_logits, tgt_n, 4.f, SEED);
  fill_normal<<<gen_grid, 256>>>(g.drf_logits, drf_n, 4.f, SEED + 1);
  fill_ids<<<(BMAX * KMAX + 255) / 256, 256>>>(g.draft_ids, BMAX * KMAX, V, SEED + 2);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());

  for (uint32_t b : BATCHES) {
    for (uint32_t k : KS) {
      B = b, K = k;
      const std::string pt = "fp32 B=" + std::to_string(B) + " K=" + std::to_string(K);
      // Probabilities for `chain` alone, plus the output check.
      check_chain(pt);
      for (const Op& op : OPS) {
        float med = 0, mn = 0;
        const cudaError_t e = time_op(op, std::string(op.name) + " " + pt, &med, &mn);
        if (e != cudaSuccess) {
          cudaGetLastError();
          printf("%-21s fp32 %3u %u %6u %9s %9s  # error %s\n", op.name, B, K, V, "nan", "nan",
                 cudaGetErrorName(e));
        } else {
          printf("%-21s fp32 %3u %u %6u %9.2f %9.2f\n", op.name, B, K, V, med, mn);
        }
        fflush(stdout);
      }
    }
  }
  printf("# checks: %d bad line(s)\n", reported);
  return reported ? 2 : 0;
}
