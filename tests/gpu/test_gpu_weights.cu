// The GPU's conversion-free weight (temperature_kernel.cuh, temperature::weight_bits) against
// the contract's floor(exp_nonpos(z) * 2^39) (core::mass_parts of core::exp_nonpos) on the host,
// bit for bit, on a dense grid of z, runs of consecutive floats and the special values.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "gpu/temperature_kernel.cuh"
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

}  // namespace
