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
  bool pdl = false;  // programmatic dependent launch (verify_gpu.cu's launch_dependent)
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

//! temperature_rows_kernel (temperature alone, or with top-p; bitmask, bias and histories
//! absent): its workspace, and its launch over a's request with that workspace at `base`.
//! *pending gets the rows it leaves to the general kernel (null where no row can have top-p),
//! *fallback where that kernel's workspace goes. sums_rows (verification's rounds, whose slots
//! compute rows of a larger set): the rows its sub-chunk sums (kSub tokens each, indexed by the
//! row, not the slot) cover, if more than the batch; *sub_sums, unless null, gets where they are.
size_t temperature_bytes(const Request& req, int64_t sums_rows = 0);
Status launch_temperature(const KernelArgs& a, char* base, gpuStream_t stream,
                          const uint32_t** pending, char** fallback, int64_t sums_rows = 0,
                          const uint64_t** sub_sums = nullptr);
//! Whether temperature_rows_kernel serves req (its filters, as the host knows them, and its steps).
bool stream_alone(const Request& req);
bool may_top_p(const Request& req);

Status runtime_error(const char* what, gpuError_t e);

}  // namespace detail
}  // namespace lmsample::gpu
