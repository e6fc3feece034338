// CPU backend: rows spread over OpenMP threads, each in its own slice of the caller's workspace.
#include "cpu/sample_cpu.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "api/validate.hpp"
#include "cpu/rows.hpp"

namespace lmsample::cpu {
namespace {

using RowFn = void (*)(const Scratch&, const Request&, const Outputs&, int64_t, int64_t, int64_t);

// The instruction-set build to run: AVX2 + FMA where the processor has both, unless
// LMSAMPLE_CPU_ISA=baseline asks for the portable one (the tests compare the two).
bool use_avx2() {
  const char* isa = std::getenv("LMSAMPLE_CPU_ISA");
  const bool force_baseline = isa && std::string(isa) == "baseline";
#if defined(LMS_HAVE_AVX2_BUILD)
  return !force_baseline && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  (void)force_baseline;
  return false;
#endif
}

RowFn pick_row_fn() {
#if defined(LMS_HAVE_AVX2_BUILD)
  if (use_avx2()) return &avx2::sample_row;
#endif
  return &baseline::sample_row;
}

}  // namespace

DistributionFn row_distribution_fn() {
#if defined(LMS_HAVE_AVX2_BUILD)
  if (use_avx2()) return &avx2::row_distribution;
#endif
  return &baseline::row_distribution;
}
LogprobFn row_logprob_fn() {
#if defined(LMS_HAVE_AVX2_BUILD)
  if (use_avx2()) return &avx2::row_logprob;
#endif
  return &baseline::row_logprob;
}

const char* isa_name() { return pick_row_fn() == &baseline::sample_row ? "baseline" : "avx2+fma"; }

int threads_for(const Request& req, const ExecConfig& cfg) {
  int t =
      cfg.cpu_threads > 0 ? cfg.cpu_threads : static_cast<int>(std::thread::hardware_concurrency());
  if (t < 1) t = 1;
  if (t > kMaxCpuThreads) t = kMaxCpuThreads;  // (a call asking for more is refused first)
  const int64_t b = req.logits.batch;
  if (b < t) t = static_cast<int>(std::max<int64_t>(b, 1));
  return t;
}

size_t workspace_size(const Request& req, const ExecConfig& cfg) {
  return static_cast<size_t>(threads_for(req, cfg)) * Scratch::bytes(req.logits.vocab) + kAlign;
}

Status sample(const Request& req, const Outputs& out, void* workspace, size_t workspace_bytes,
              const ExecConfig& cfg) {
  const int threads = threads_for(req, cfg);
  const size_t per_thread = Scratch::bytes(req.logits.vocab);
  if (workspace_bytes < cpu::workspace_size(req, cfg)) {
    return Status{Code::kWorkspaceTooSmall, "workspace of " + std::to_string(workspace_bytes) +
                                                " bytes is smaller than the " +
                                                std::to_string(cpu::workspace_size(req, cfg)) +
                                                " bytes workspace_size() asks for"};
  }
  char* base = static_cast<char*>(workspace);
  base += (kAlign - reinterpret_cast<uintptr_t>(base) % kAlign) % kAlign;
  const int64_t stride = api::row_stride_of(req);
  const int64_t mask_words = api::mask_words_of(req);
  const bool penalties = req.prompt_tokens.offsets || req.output_tokens.offsets;
  const int64_t batch = req.logits.batch;
  const RowFn row_fn = pick_row_fn();

#pragma omp parallel num_threads(threads)
  {
    const Scratch s = Scratch::carve(base + static_cast<size_t>(omp_get_thread_num()) * per_thread,
                                     req.logits.vocab);
    if (penalties) std::memset(s.tags, 0, static_cast<size_t>(req.logits.vocab) * sizeof(uint32_t));
#pragma omp for schedule(dynamic, 1)
    for (int64_t r = 0; r < batch; ++r) row_fn(s, req, out, r, stride, mask_words);
  }
  return Status::Ok();
}

}  // namespace lmsample::cpu
