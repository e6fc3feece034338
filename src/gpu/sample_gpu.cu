// Host side of the GPU backend: picks the row-group size, sizes the workspace, launches.
// No allocation, no host synchronisation: a call can be captured in a CUDA graph.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "api/validate.hpp"
#include "gpu/greedy_kernel.cuh"
#include "gpu/launch.hpp"
#include "gpu/sample_gpu.hpp"
#include "gpu/sample_kernel.cuh"
#include "gpu/temperature_kernel.cuh"

namespace lmsample::gpu {
namespace detail {

Device query_device() {
  Device d;
  if (gpuGetDevice(&d.id) != gpuSuccess) return Device{};
  int major = 0;
  if (gpuDeviceGetAttribute(&d.sms, gpuDevAttrMultiProcessorCount, d.id) != gpuSuccess ||
      gpuDeviceGetAttribute(&d.max_smem, gpuDevAttrMaxSharedMemoryPerBlockOptin, d.id) !=
          gpuSuccess ||
      gpuDeviceGetAttribute(&major, gpuDevAttrComputeCapabilityMajor, d.id) != gpuSuccess)
    return Device{};
#if !defined(__HIPCC__)
  d.clusters = major >= 9;  // thread-block clusters: Hopper and later
  d.pdl = major >= 9;       // programmatic dependent launch, likewise
#else
  (void)major;
#endif
  return d;
}

// Per-device facts, read once per device and thread (a device query is not free).
const Device& device() {
  thread_local Device cached;
  int id = -1;
  if (gpuGetDevice(&id) != gpuSuccess) {
    cached = Device{};
    return cached;
  }
  if (cached.id != id) {
    cached = query_device();
#if !defined(__HIPCC__)
    if (cached.clusters) {
      cudaFuncSetAttribute(sample_rows_kernel<kThreads>,
                           cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
      cudaFuncSetAttribute(greedy_rows_kernel<kThreads>,
                           cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
      cudaFuncSetAttribute(sample_rows_kernel<kThreads>, gpuFuncAttributeMaxDynamicSharedMemorySize,
                           cached.max_smem);
      cudaFuncSetAttribute(sample_rows_kernel<kThreads, true>,
                           cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
      cudaFuncSetAttribute(sample_rows_kernel<kThreads, true>,
                           gpuFuncAttributeMaxDynamicSharedMemorySize, cached.max_smem);
      // Is a cluster of 16 CTAs with a full shared memory budget schedulable here?
      cudaLaunchConfig_t cfg{};
      cfg.gridDim = dim3(16);
      cfg.blockDim = dim3(kThreads);
      cfg.dynamicSmemBytes = kSmemTarget;
      cudaLaunchAttribute attr{};
      attr.id = cudaLaunchAttributeClusterDimension;
      attr.val.clusterDim.x = 16;
      attr.val.clusterDim.y = 1;
      attr.val.clusterDim.z = 1;
      cfg.attrs = &attr;
      cfg.numAttrs = 1;
      int clusters = 0;
      cached.cluster16 = cudaOccupancyMaxActiveClusters(&clusters, sample_rows_kernel<kThreads>,
                                                        &cfg) == cudaSuccess &&
                         clusters > 0;
      cudaGetLastError();
    }
#endif
    if (!cached.clusters) {
      (void)gpuFuncSetAttribute(reinterpret_cast<const void*>(&sample_rows_kernel<kThreads>),
                                gpuFuncAttributeMaxDynamicSharedMemorySize, cached.max_smem);
      (void)gpuFuncSetAttribute(reinterpret_cast<const void*>(&sample_rows_kernel<kThreads, true>),
                                gpuFuncAttributeMaxDynamicSharedMemorySize, cached.max_smem);
    }
    // (top-p rows' candidate lists: above the 48 KB a kernel gets without asking)
    (void)gpuFuncSetAttribute(
        reinterpret_cast<const void*>(&temperature_rows_kernel<kTemperatureThreads, true>),
        gpuFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(temperature::kCandSmemBytes));
  }
  return cached;
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Every row greedy as the host knows it: temperature 0 for the call, no temperature array.
bool all_greedy_by_defaults(const Request& req) {
  return !req.params.temperature && req.params.defaults.temperature == 0.0f;
}

Plan make_plan(const Request& req, const Device& d, GpuKeys keys) {
  const int64_t v = req.logits.vocab, b = std::max<int64_t>(req.logits.batch, 1);
  const bool penalties = req.prompt_tokens.offsets || req.output_tokens.offsets;
  const size_t per_token = penalties ? 8 : 4;  // key (+ tag)
  const int max_group = d.clusters ? (d.cluster16 ? 16 : 8) : 1;
  Plan p;
  // about one CTA per multiprocessor at small batch, at least 1024 tokens per CTA. (A cap of 8
  // CTAs per row was measured on an H100 at V = 151,936: it gains 3 us on top-k + top-p at
  // B = 8, whose candidates are fewer with 8, but loses 4 us on temperature and 40 us on top-p
  // at B = 1, whose passes over the chunk are split further with 16.)
  int group = 1;
  while (group < max_group && b * group < d.sms && v > 1024 * group) group *= 2;
  auto chunk_of = [&](int gsize) { return round_up((v + gsize - 1) / gsize, 64); };
  const auto fits = [&](int gsize) {
    return static_cast<size_t>(chunk_of(gsize)) * per_token + sizeof(Exchange) <= kSmemTarget;
  };
  // GpuKeys (lmsample.hpp): streamed rows keep the CTA count above (CTAs that keep only
  // registers and the exchange buffers, two per multiprocessor whatever the chunk); rows kept
  // on chip take enough CTAs for the row to fit in shared memory. Nothing is streamed where
  // bias or penalties rewrite keys. LMSAMPLE_GPU_KEYS=stream / smem / auto overrides the
  // caller's choice (for tuning and tests: results do not depend on it).
  static const int forced_keys = [] {
    const char* e = std::getenv("LMSAMPLE_GPU_KEYS");
    if (!e) return -1;
    const std::string m(e);
    return m == "stream" ? 2 : m == "smem" ? 1 : m == "auto" ? 0 : -1;
  }();
  const int mode = forced_keys >= 0 ? forced_keys : static_cast<int>(keys);
  const bool can_stream = !penalties && !req.logit_bias.offsets;
  // kAuto streams requests that carry a top-k or min-p array (or a top-k or min-p for every row in
  // RowParams::defaults): their rows finish from the load's
  // statistics, which streamed keys make as fast at B <= 32 and 1.7-2.1x faster at B >= 128 (H100,
  // results/gpu/README.md); with logprobs (a second pass over the row) only from B = 128 on.
  const bool logprobs = req.top_logprobs > 0;
  const RowParams& rp = req.params;
  const bool candidate_filters = rp.top_k != nullptr || rp.min_p != nullptr ||
                                 (!rp.top_k && rp.defaults.top_k > 0) ||
                                 (!rp.min_p && rp.defaults.min_p > 0.0f);
  // Every row greedy, as the host knows from RowParams::defaults (temperature 0 for the whole
  // call, no array): the row finishes from the load's maximum too, so stream it (the H200
  // baseline of 801ad00 measured greedy streamed at 0.59 / 0.52x its on-chip time at B = 128 /
  // 512; results/gpu/README.md has this session's comparison at every B).
  const bool all_greedy = all_greedy_by_defaults(req);
  const bool auto_stream = (candidate_filters || all_greedy) && (!logprobs || b >= 128);
  p.stream = can_stream && (mode == static_cast<int>(GpuKeys::kStream) ||
                            (mode == static_cast<int>(GpuKeys::kAuto) && auto_stream));
  while (!p.stream && group < max_group && !fits(group)) group *= 2;
  // no empty CTA
  while (group > 1 && chunk_of(group) * (group - 1) >= v) group /= 2;
  // LMSAMPLE_GPU_GROUP=N (1, 2, 4, 8 or 16) overrides the choice, for tuning (results do not
  // depend on it: the tests compare every group size with the CPU)
  static const int forced = [] {
    const char* e = std::getenv("LMSAMPLE_GPU_GROUP");
    return e ? std::atoi(e) : 0;
  }();
  if (forced == 1 || forced == 2 || forced == 4 || forced == 8 || forced == 16)
    group = std::min(forced, max_group);
  while (group > 1 && chunk_of(group) * (group - 1) >= v) group /= 2;
  p.group = group;
  p.chunk = static_cast<int>(chunk_of(group));
  const size_t need = static_cast<size_t>(p.chunk) * per_token + sizeof(Exchange);
  p.smem_keys = !p.stream && need <= static_cast<size_t>(d.max_smem);
  // auto: stream rather than keep the keys in the workspace
  if (!p.smem_keys && can_stream && mode == static_cast<int>(GpuKeys::kAuto)) p.stream = true;
  p.smem = p.smem_keys ? need : sizeof(Exchange);
  return p;
}

// No step of the contract besides the load and the canonicalisation (no bitmask, bias or penalty
// history) and no top logprobs: what the greedy and temperature kernels compute.
bool only_the_load(const Request& req) {
  return !req.allowed_mask && !req.logit_bias.offsets && !req.prompt_tokens.offsets &&
         !req.output_tokens.offsets && req.top_logprobs == 0;
}

// Whether greedy_rows_kernel computes the whole request: every row greedy as the host knows it
// (all_greedy_by_defaults), only_the_load, and no logprob output. LMSAMPLE_GPU_GREEDY=0 turns it
// off (for tests and tuning: results do not depend on it).
bool greedy_only(const Request& req, const Outputs& out) {
  static const bool enabled = [] {
    const char* e = std::getenv("LMSAMPLE_GPU_GREEDY");
    return !(e && std::string(e) == "0");
  }();
  return enabled && all_greedy_by_defaults(req) && only_the_load(req) && !out.logprob;
}

// Whether temperature_rows_kernel computes the whole request (with no logprob output), or all of
// it but the top-p rows it leaves pending: no row has a top-k or min-p filter as the host knows
// it (no top_k or min_p array, and none in RowParams::defaults) and only_the_load; the
// temperature and top_p may be arrays.
bool stream_alone(const Request& req) {
  const RowParams& rp = req.params;
  const RowDefaults& df = rp.defaults;
  return !rp.top_k && !rp.min_p && df.top_k == 0 && df.min_p == 0.0f && only_the_load(req);
}

// Whether a row of the request can have top-p (a top_p array, or one in RowParams::defaults).
constexpr int64_t kStreamTopPMinBatch = 32;
bool may_top_p(const Request& req) {
  return req.params.top_p != nullptr || req.params.defaults.top_p < 1.0f;
}

// Whether temperature_rows_kernel serves the request, logprob output aside (every row greedy by
// the defaults is greedy_rows_kernel's). LMSAMPLE_GPU_TEMPERATURE=0 turns it off (for tests and
// tuning: results do not depend on it).
bool temperature_kernel_serves(const Request& req) {
  static const bool on = [] {
    const char* e = std::getenv("LMSAMPLE_GPU_TEMPERATURE");
    return !(e && std::string(e) == "0");
  }();
  // (top-p rows from B = 32 on: below, the general kernel is as fast or faster on an H200, whose
  // row groups spread a row over more multiprocessors than the ranking of one CTA; results/gpu)
  return on && stream_alone(req) && !all_greedy_by_defaults(req) &&
         (!may_top_p(req) || req.logits.batch >= kStreamTopPMinBatch);
}

// The plan of the general kernel that finishes the top-p rows the temperature kernel leaves
// pending (a few rows of the batch, or none: its other CTAs return at once): streamed keys, and
// the row-group size of a batch of at most 32 rows (more CTAs per pending row, fewer that only
// return).
Plan pending_plan(const Request& req, const Device& d) {
  Request few = req;
  few.logits.batch = std::min<int64_t>(req.logits.batch, 32);
  return make_plan(few, d, GpuKeys::kStream);  // (group and chunk depend on B alone)
}

// The general kernel's workspace for plan p (keys kept neither on chip nor streamed).
size_t general_bytes(const Request& req, const Plan& p) {
  const size_t cells = static_cast<size_t>(std::max<int64_t>(req.logits.batch, 0)) *
                       static_cast<size_t>(req.logits.vocab);
  return p.smem_keys || p.stream ? 0 : 2 * cells * sizeof(uint32_t) + 256;
}

// temperature_rows_kernel's launch and workspace: chunks of 4096 to 16384 tokens (about four
// work items per multiprocessor and kind, and every warp of a weight item busy), weight items
// about 24 MB of logits after the max items of their row (meant for their second read to hit
// L2; Nsight Compute measured a 17% hit rate at B = 512, but 1 to 16 MB were slower on an H200:
// the weight items waited for their rows' max items). With top-p rows, their tie counts and
// candidate lists, and the workspace of the general kernel that finishes the rows
// left pending (streamed keys: none, unless LMSAMPLE_GPU_KEYS says otherwise).
struct StreamPlan {
  int groups = 0, chunk = 0, nsub = 0, lookahead = 1;
  bool top_p = false;
  size_t counter_bytes = 0, stats_bytes = 0, sums_bytes = 0;
  size_t ties_bytes = 0, cand_bytes = 0, fallback_bytes = 0;
  size_t bytes() const {
    return counter_bytes + stats_bytes + sums_bytes + ties_bytes + cand_bytes + fallback_bytes +
           256;
  }
};

// sums_rows: the rows the sub-chunk sums cover where more than the batch (verification's rounds,
// whose slots compute rows of a larger set: KernelArgs::row_map)
StreamPlan stream_plan(const Request& req, const Device& d, int64_t sums_rows = 0) {
  const int64_t v = req.logits.vocab, b = std::max<int64_t>(req.logits.batch, 1);
  const int esize = req.logits.dtype == DType::kFloat32 ? 4 : 2;
  const int64_t sms = std::max(d.sms, 1);
  static const int64_t forced_chunk = [] {
    const char* e = std::getenv("LMSAMPLE_GPU_TEMPERATURE_CHUNK");
    return e ? std::atoll(e) : 0;
  }();
  int64_t chunk = round_up((v * b + 4 * sms - 1) / (4 * sms), 4096);
  chunk = std::min<int64_t>(std::max<int64_t>(chunk, 4096), 16384);
  if (forced_chunk >= 4096) chunk = round_up(forced_chunk, 4096);
  StreamPlan p;
  p.chunk = static_cast<int>(chunk);
  p.groups = static_cast<int>((v + chunk - 1) / chunk);
  p.nsub = static_cast<int>((v + temperature::kSub - 1) / temperature::kSub);
  // (the live set between a row's two reads is the rows ahead of it and the rows behind it
  // whose weight items still run: about twice the lookahead; LMSAMPLE_GPU_TEMPERATURE_AHEAD_MB
  // overrides it, for tuning)
  static const int64_t ahead_mb = [] {
    const char* e = std::getenv("LMSAMPLE_GPU_TEMPERATURE_AHEAD_MB");
    return e && std::atoll(e) > 0 ? std::atoll(e) : int64_t{24};
  }();
  p.lookahead = static_cast<int>(std::max<int64_t>(1, (ahead_mb << 20) / (v * esize)));
  p.top_p = may_top_p(req);
  const size_t ub = static_cast<size_t>(b), nsub = static_cast<size_t>(p.nsub);
  const auto up = [](size_t x) {
    return static_cast<size_t>(round_up(static_cast<int64_t>(x), 256));
  };
  p.counter_bytes = up(((p.top_p ? 4 : 2) * ub + 1) * 4);
  p.stats_bytes = up(ub * static_cast<size_t>(p.groups) * 16);
  p.sums_bytes = up(std::max(ub, static_cast<size_t>(std::max<int64_t>(sums_rows, 0))) * nsub * 8);
  if (p.top_p) {
    p.ties_bytes = up(ub * nsub * 4);
    p.cand_bytes = up(ub * static_cast<size_t>(temperature::kListCap) * 8);
    p.fallback_bytes = general_bytes(req, pending_plan(req, d));
  }
  return p;
}

Status runtime_error(const char* what, gpuError_t e) {
  return Status{Code::kBackendError, std::string(what) + ": " + gpuGetErrorString(e)};
}

Status launch_rows(const KernelArgs& a, const Plan& p, int64_t rows, RowsKernel kernel,
                   gpuStream_t stream) {
  const Device& d = device();
  const unsigned grid = static_cast<unsigned>(rows * p.group);
  const size_t smem = kernel == RowsKernel::kGreedy ? sizeof(Exchange) : p.smem;
#if !defined(__HIPCC__)
  cudaLaunchConfig_t lc{};
  lc.gridDim = dim3(grid);
  lc.blockDim = dim3(kThreads);
  lc.dynamicSmemBytes = smem;
  lc.stream = stream;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = static_cast<unsigned>(p.group);
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  lc.attrs = &attr;
  lc.numAttrs = d.clusters ? 1 : 0;
  const gpuError_t e = kernel == RowsKernel::kGreedy
                           ? cudaLaunchKernelEx(&lc, greedy_rows_kernel<kThreads>, a)
                       : kernel == RowsKernel::kVerify
                           ? cudaLaunchKernelEx(&lc, sample_rows_kernel<kThreads, true>, a)
                           : cudaLaunchKernelEx(&lc, sample_rows_kernel<kThreads>, a);
#else
  (void)d;
  if (kernel == RowsKernel::kGreedy)
    hipLaunchKernelGGL(greedy_rows_kernel<kThreads>, dim3(grid), dim3(kThreads), smem, stream, a);
  else if (kernel == RowsKernel::kVerify)
    hipLaunchKernelGGL((sample_rows_kernel<kThreads, true>), dim3(grid), dim3(kThreads), smem,
                       stream, a);
  else
    hipLaunchKernelGGL(sample_rows_kernel<kThreads>, dim3(grid), dim3(kThreads), smem, stream, a);
  const gpuError_t e = gpuGetLastError();
#endif
  if (e != gpuSuccess) return runtime_error("sample kernel launch", e);
  return Status::Ok();
}

size_t temperature_bytes(const Request& req, int64_t sums_rows) {
  return stream_plan(req, device(), sums_rows).bytes();
}

Status launch_temperature(const KernelArgs& a, char* base, gpuStream_t stream,
                          const uint32_t** pending, char** fallback, int64_t sums_rows,
                          const uint64_t** sub_sums) {
  const Request& req = a.req;
  const StreamPlan sp = stream_plan(req, device(), sums_rows);
  // (a row map names rows for slots; the top-p lists and finish are the slots', so never both)
  if (a.row_map && sp.top_p)
    return Status{Code::kBackendError, "temperature kernel: a row map with top-p rows"};
  temperature::StreamArgs sa{};
  sa.a = a;
  char* at = base;
  const auto take = [&at](size_t bytes) {
    char* p = at;
    at += bytes;
    return p;
  };
  sa.counters = reinterpret_cast<uint32_t*>(take(sp.counter_bytes));
  sa.stats = reinterpret_cast<uint64_t*>(take(sp.stats_bytes));
  sa.sub_sums = reinterpret_cast<uint64_t*>(take(sp.sums_bytes));
  if (sub_sums) *sub_sums = sa.sub_sums;
  if (sp.top_p) {
    sa.sub_ties = reinterpret_cast<uint32_t*>(take(sp.ties_bytes));
    sa.cand = reinterpret_cast<uint2*>(take(sp.cand_bytes));
  }
  sa.groups = sp.groups;
  sa.chunk = sp.chunk;
  sa.nsub = sp.nsub;
  sa.lookahead = sp.lookahead;
  gpuError_t e = gpuMemsetAsync(sa.counters, 0, sp.counter_bytes, stream);
  if (e != gpuSuccess) return runtime_error("temperature counters", e);
  const unsigned items = static_cast<unsigned>(2 * req.logits.batch * sp.groups);
  // (the candidate list of a top-p row in shared memory, for its ranking)
  const size_t list_bytes = sp.top_p ? temperature::kCandSmemBytes : 0;
  // (two instantiations: the one without top-p keeps every register for its loads)
#if !defined(__HIPCC__)
  if (sp.top_p)
    temperature_rows_kernel<kTemperatureThreads, true>
        <<<items, kTemperatureThreads, list_bytes, stream>>>(sa);
  else
    temperature_rows_kernel<kTemperatureThreads, false>
        <<<items, kTemperatureThreads, 0, stream>>>(sa);
#else
  if (sp.top_p)
    hipLaunchKernelGGL((temperature_rows_kernel<kTemperatureThreads, true>), dim3(items),
                       dim3(kTemperatureThreads), list_bytes, stream, sa);
  else
    hipLaunchKernelGGL((temperature_rows_kernel<kTemperatureThreads, false>), dim3(items),
                       dim3(kTemperatureThreads), 0, stream, sa);
#endif
  e = gpuGetLastError();
  if (e != gpuSuccess) return runtime_error("temperature kernel launch", e);
  *pending = sp.top_p ? sa.pending(0) : nullptr;
  *fallback = sp.top_p ? take(sp.fallback_bytes) : nullptr;
  return Status::Ok();
}

}  // namespace detail

using namespace detail;  // NOLINT (this file's own internals)

bool device_present() {
  int n = 0;
  const bool ok = gpuGetDeviceCount(&n) == gpuSuccess && n > 0;
  (void)gpuGetLastError();  // clear the error a machine without a driver leaves behind
  return ok;
}

size_t workspace_size(const Request& req, const ExecConfig& cfg) {
  const Device& d = device();
  if (d.id < 0) return 0;
  const size_t general = general_bytes(req, make_plan(req, d, cfg.gpu_keys));
  // (temperature and top-p alone: the temperature kernel's counters, sums and candidates and the
  // workspace of the general kernel after it, unless the call turns out to want logprobs, which
  // the general kernel computes alone)
  if (temperature_kernel_serves(req)) return std::max(general, stream_plan(req, d).bytes());
  return general;
}

Status sample(const Request& req, const Outputs& out, void* workspace, size_t workspace_bytes,
              const ExecConfig& cfg) {
  if (req.logits.batch == 0) return Status::Ok();
  const Device& d = device();
  if (d.id < 0) return Status{Code::kUnsupported, "no GPU device is available"};
  const size_t need = gpu::workspace_size(req, cfg);
  if (workspace_bytes < need)
    return Status{Code::kWorkspaceTooSmall, "workspace of " + std::to_string(workspace_bytes) +
                                                " bytes is smaller than the " +
                                                std::to_string(need) +
                                                " bytes workspace_size() asks for"};
  const gpuStream_t stream = static_cast<gpuStream_t>(cfg.stream);
  char* base = static_cast<char*>(workspace);
  base += (256 - reinterpret_cast<uintptr_t>(base) % 256) % 256;
  // The general (or greedy) kernel with plan p, its workspace keys (if any) at keys_at, on the
  // rows `pending` names (null: every row).
  const auto launch_general = [&](const Plan& p, char* keys_at, bool greedy,
                                  const uint32_t* pending) -> Status {
    KernelArgs a{};
    a.req = req;
    a.out = out;
    a.stride = api::row_stride_of(req);
    a.mask_words = api::mask_words_of(req);
    a.chunk = p.chunk;
    a.stream = p.stream;
    a.pending = pending;
    if (!p.smem_keys && !p.stream) {
      const size_t cells =
          static_cast<size_t>(req.logits.batch) * static_cast<size_t>(req.logits.vocab);
      a.ws_keys = reinterpret_cast<uint32_t*>(keys_at);
      a.ws_tags = a.ws_keys + cells;
    }
    return launch_rows(a, p, req.logits.batch, greedy ? RowsKernel::kGreedy : RowsKernel::kSample,
                       stream);
  };
  if (!out.logprob && temperature_kernel_serves(req)) {
    KernelArgs a{};
    a.req = req;
    a.out = out;
    a.stride = api::row_stride_of(req);
    const uint32_t* pending = nullptr;
    char* fallback = nullptr;
    Status s = launch_temperature(a, base, stream, &pending, &fallback);
    if (!s.ok() || !pending) return s;
    // the top-p rows the temperature kernel left pending
    return launch_general(pending_plan(req, d), fallback, false, pending);
  }
  return launch_general(make_plan(req, d, cfg.gpu_keys), base, greedy_only(req, out), nullptr);
}

}  // namespace lmsample::gpu
