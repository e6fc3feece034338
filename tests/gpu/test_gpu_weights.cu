// The GPU's conversion-free weight (temperature_kernel.cuh, temperature::weight_bits) against
// the contract's floor(exp_nonpos(z) * 2^39) (core::mass_parts of core::exp_nonpos) on the host,
// bit for bit, on a dense grid of z, runs of consecutive floats and the special values; and the
// residual kernel's weights from float bits (verify_kernel.cuh: FastKept, prob_weight_parts)
// against the contract's kept weight and core::prob_weight.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/verify.hpp"
#include "gpu/temperature_kernel.cuh"
#include "gpu/verify_kernel.cuh"
#include "gpu_test_util.hpp"

namespace {

__global__ void weights_kernel(const float* z, uint32_t* hi, uint32_t* lo, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint32_t h, l;
  lmsample::gpu::temperature::weight_bits(z[i], h, l);
  hi[i] = h - lmsample::gpu::temperature::kBias;
  lo[i] = l - lmsample::gpu::temperature::kBias;
}

TEST(GpuWeights, ConversionFreeWeightIsTheContracts) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    (void)cudaGetLastError();
    GTEST_SKIP() << "no CUDA device: the GPU weight is not checked here";
  }
  std::vector<float> z;
  const int grid = 4000000;
  for (int i = 0; i <= grid; ++i) z.push_back(static_cast<float>(-90.0 * i / grid));
  for (const float c : {-0.35f, -0.0155337583f, -1.0f, -27.03f, -85.999f, -86.0f, -86.001f}) {
    float x = c;
    for (int i = 0; i < 20000; ++i) {
      z.push_back(x);
      x = std::nextafter(x, 0.0f);
    }
  }
  for (const float s :
       {0.0f, -0.0f, -std::numeric_limits<float>::infinity(),
        std::numeric_limits<float>::quiet_NaN(), -1e30f, -std::numeric_limits<float>::denorm_min()})
    z.push_back(s);
  const int n = static_cast<int>(z.size());
  float* dz = nullptr;
  uint32_t *dh = nullptr, *dl = nullptr;
  ASSERT_EQ(cudaMalloc(&dz, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dh, n * sizeof(uint32_t)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dl, n * sizeof(uint32_t)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dz, z.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  weights_kernel<<<(n + 255) / 256, 256>>>(dz, dh, dl, n);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint32_t> hi(n), lo(n);
  ASSERT_EQ(cudaMemcpy(hi.data(), dh, n * sizeof(uint32_t), cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(lo.data(), dl, n * sizeof(uint32_t), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(dz);
  cudaFree(dh);
  cudaFree(dl);
  int bad = 0;
  for (int i = 0; i < n; ++i) {
    const lmsample::core::MassParts want =
        lmsample::core::mass_parts(lmsample::core::exp_nonpos(z[i]));  // (NaN: 0)
    if (hi[i] != want.hi || lo[i] != want.lo) {
      if (++bad <= 5)
        ADD_FAILURE() << "z = " << z[i] << ": gpu " << hi[i] << " * 2^20 + " << lo[i]
                      << ", contract " << want.hi << " * 2^20 + " << want.lo;
    }
  }
  EXPECT_EQ(bad, 0) << "of " << n;
}

// One float's weight on the residual kernel's fast path: a kept set's (FastKept, with and
// without its bounds' checks) and a draft probability's.
struct FastCase {
  uint32_t bits;
  float m, inv_t, min_p;
  uint32_t tau;
  uint32_t allowed;
};
__global__ void fast_weights_kernel(const FastCase* c, uint64_t* w, float* wf, uint64_t* q,
                                    float* qf, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  lmsample::gpu::FastKept k;
  k.m = c[i].m;
  k.inv_t = c[i].inv_t;
  k.min_p = c[i].min_p;
  k.tau = c[i].tau;
  const lmsample::gpu::WeightParts p = k.weight<true>(c[i].bits, c[i].allowed != 0);
  w[i] = p.value();
  wf[i] = p.f;
  const lmsample::gpu::WeightParts r = lmsample::gpu::prob_weight_parts(c[i].bits);
  q[i] = r.value();
  qf[i] = r.f;
}

TEST(GpuWeights, ResidualFastPathWeightsAreTheContracts) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    (void)cudaGetLastError();
    GTEST_SKIP() << "no CUDA device: the residual kernel's weights are not checked here";
  }
  namespace core = lmsample::core;
  std::mt19937_64 gen(2026);
  std::uniform_real_distribution<float> logit(-30.0f, 30.0f), unit(0.0f, 1.0f);
  const float inv_ts[] = {1.0f, 0.5f, 1.25f, 3.0f, 1e-3f, 1e6f};
  const float specials[] = {0.0f,
                            -0.0f,
                            1.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::denorm_min(),
                            std::ldexp(1.0f, -39),
                            std::nextafter(std::ldexp(1.0f, -39), 0.0f),
                            std::nextafter(1.0f, 0.0f)};
  std::vector<FastCase> cases;
  for (int i = 0; i < 400000; ++i) {
    FastCase c{};
    float y = i % 10 == 0 ? specials[(i / 10) % 10] : i % 2 ? logit(gen) : unit(gen);
    if (y == std::numeric_limits<float>::infinity()) y = 30.0f;  // (a +inf row is not tempered)
    c.bits = core::float_bits(y);
    c.m = i % 7 == 0 ? y : logit(gen);  // (y - m = 0 for some)
    if (!core::is_finite(c.m)) c.m = 30.0f;
    if (c.m < y) c.m = y;  // (m is the row's maximum)
    c.inv_t = inv_ts[i % 6];
    c.min_p = i % 3 == 0 ? 0.0f : unit(gen) * 1e-3f;
    c.tau = i % 4 == 0 ? core::kKeyNegInf + 1 : core::order_key(logit(gen));
    c.allowed = i % 11 != 0;
    cases.push_back(c);
  }
  const int n = static_cast<int>(cases.size());
  lmsgpu::DevBuf dc(n * sizeof(FastCase)), dw(n * 8), dwf(n * 4), dq(n * 8), dqf(n * 4);
  ASSERT_EQ(cudaMemcpy(dc.get(), cases.data(), n * sizeof(FastCase), cudaMemcpyHostToDevice),
            cudaSuccess);
  fast_weights_kernel<<<(n + 255) / 256, 256>>>(
      dc.as<FastCase>(), dw.as<uint64_t>(), dwf.as<float>(), dq.as<uint64_t>(), dqf.as<float>(), n);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint64_t> w(n), q(n);
  std::vector<float> wf(n), qf(n);
  ASSERT_EQ(cudaMemcpy(w.data(), dw.get(), n * 8, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(wf.data(), dwf.get(), n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(q.data(), dq.get(), n * 8, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(qf.data(), dqf.get(), n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  int bad = 0, kept = 0, probs = 0;
  for (int i = 0; i < n; ++i) {
    const FastCase& c = cases[static_cast<size_t>(i)];
    // KeptWeight's rule: the canonical key (bitmask applied) at least tau and not -inf, the
    // likelihood at least min-p, then mass_of of the likelihood
    const uint32_t key = c.allowed ? core::canonical_key_of_bits(c.bits) : core::kKeyNegInf;
    const float e = core::rel_likelihood(core::key_to_float(key), c.m, c.inv_t);
    const uint64_t want =
        key >= c.tau && key > core::kKeyNegInf && e >= c.min_p ? core::mass_of(e) : 0;
    kept += want > 0;
    if (w[i] != want || wf[i] != static_cast<float>(want)) {
      if (++bad <= 5)
        ADD_FAILURE() << "bits " << std::hex << c.bits << std::dec << " m " << c.m << " 1/T "
                      << c.inv_t << " tau " << c.tau << " min_p " << c.min_p << ": gpu " << w[i]
                      << " (" << wf[i] << "), contract " << want;
    }
    const float y = core::bits_float(c.bits);
    if (core::prob_ok(y)) {
      ++probs;
      const uint64_t pw = core::prob_weight(y);
      if (q[i] != pw || qf[i] != static_cast<float>(pw)) {
        if (++bad <= 5)
          ADD_FAILURE() << "probability " << y << ": gpu " << q[i] << " (" << qf[i]
                        << "), core::prob_weight " << pw;
      }
    }
  }
  EXPECT_EQ(bad, 0) << "of " << n;
  EXPECT_GT(kept, n / 10);  // (the cases keep many tokens, and drop many)
  EXPECT_LT(kept, n - n / 10);
  EXPECT_GT(probs, n / 3);
}

}  // namespace
