// The GPU backend's launch plumbing shared by sampling (sample_gpu.cu) and verification
// (verify_gpu.cu): the device's facts, the general kernel's plan and workspace, its launch.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/port.hpp"
#include "lmsample/lmsample.hpp"

namespace lmsample::gpu {

struct KernelArgs;

namespace detail {

constexpr int kThreads = 512;  // the general kernel's block
constexpr size_t kSmemTarget =
    113 * 1024;  // two CTAs per multiprocessor (228 KB, 1 KB each reserved)

struct Device {
  int id = -1;
  int sms = 0;
  int max_smem = 0;
  bool clusters = false;
  bool cluster16 = false;
};
//! The current device's facts, read once per device and thread (id -1: no device).
const Device& device();

struct Plan {
  int group = 1;          // CTAs per row
  int chunk = 0;          // tokens per CTA
  bool stream = false;    // keys recomputed from the logits, stored nowhere
  bool smem_keys = true;  // keys (and tags) in shared memory (else, unless streamed, workspace)
  size_t smem = 0;        // dynamic shared memory per CTA
};
//! The general kernel's plan for req's rows.
Plan make_plan(const Request& req, const Device& d, GpuKeys keys);
//! Its workspace (keys and tags of every row where they are kept neither on chip nor streamed).
size_t general_bytes(const Request& req, const Plan& p);

enum class RowsKernel { kSample, kGreedy, kVerify };
//! Launches the general kernel (or the greedy one, or the verification instantiation) over
//! `rows` rows with plan p on `stream`.
Status launch_rows(const KernelArgs& a, const Plan& p, int64_t rows, RowsKernel kernel,
                   gpuStream_t stream);

Status runtime_error(const char* what, gpuError_t e);

}  // namespace detail
}  // namespace lmsample::gpu
