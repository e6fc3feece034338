// The C++ API: structural validation shared by all backends, then dispatch.
#include <cmath>
#include <cstdio>
#include <vector>

#include "api/validate.hpp"
#include "core/params.hpp"
#include "cpu/sample_cpu.hpp"
#include "cpu/verify_cpu.hpp"
#include "lmsample/lmsample.hpp"
#if defined(LMSAMPLE_WITH_CUDA) || defined(LMSAMPLE_WITH_HIP)
#include "gpu/sample_gpu.hpp"
#include "gpu/verify_gpu.hpp"
#endif

namespace lmsample {
namespace api {

// "top_p = nan (must be > 0)": the first bad parameter of some settings.
std::string describe_settings(const core::RowSettings& s, int32_t status);

namespace {

Status invalid(const std::string& msg) { return Status{Code::kInvalidArgument, msg}; }

Status check_sparse(const SparseRows& s, const char* name, int64_t batch, bool needs_values,
                    bool host_readable) {
  if (!s.offsets) return Status::Ok();
  if (!s.tokens) return invalid(std::string(name) + ": offsets given but tokens is null");
  if (needs_values && !s.values)
    return invalid(std::string(name) + ": offsets given but values is null");
  if (!host_readable) return Status::Ok();
  if (s.offsets[0] < 0) return invalid(std::string(name) + ": offsets[0] is negative");
  for (int64_t r = 0; r < batch; ++r) {
    if (s.offsets[r + 1] < s.offsets[r]) {
      return invalid(std::string(name) + ": offsets decrease at row " + std::to_string(r) + " (" +
                     std::to_string(s.offsets[r]) + " > " + std::to_string(s.offsets[r + 1]) + ")");
    }
  }
  return Status::Ok();
}

// NOTE: printf, not an ostringstream: a Python extension that links libstdc++ statically (as
// some toolchains' wheel builds do) may have no initialised locale facets, and iostreams then
// crash (seen on the H200 machine's image).
std::string fmt(float f) {
  if (std::isnan(f)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(f));
  return buf;
}

// The RowParams::defaults values that some row uses (their array is null) must be valid.
Status check_defaults(const RowParams& p) {
  const core::RowSettings d = core::default_row_settings(p);
  core::RowSettings used;  // valid placeholders where an array is given
  if (!p.temperature) used.temperature = d.temperature;
  if (!p.top_k) used.top_k = d.top_k;
  if (!p.top_p) used.top_p = d.top_p;
  if (!p.min_p) used.min_p = d.min_p;
  if (!p.repetition_penalty) used.repetition = d.repetition;
  if (!p.frequency_penalty) used.frequency = d.frequency;
  if (!p.presence_penalty) used.presence = d.presence;
  const int32_t st = core::validate_row_settings(used);
  if (st == kRowOk) return Status::Ok();
  return invalid("params.defaults: " + describe_settings(used, st));
}

}  // namespace

// The elements a batch of logits spans, (batch - 1) * stride + vocab, and their bytes: "" when
// they fit in 64 bits, else what overflows (sizes are checked before anything uses them).
std::string logits_span_error(const Logits& l, const std::string& name) {
  if (l.batch <= 1 || l.vocab < 1) return "";
  const int64_t stride = l.row_stride == 0 ? l.vocab : l.row_stride;
  int64_t elems = 0, bytes = 0;
  if (__builtin_mul_overflow(l.batch - 1, stride, &elems) ||
      __builtin_add_overflow(elems, l.vocab, &elems) ||
      __builtin_mul_overflow(elems, int64_t{4}, &bytes))
    return name + ".batch = " + std::to_string(l.batch) + " rows of stride " +
           std::to_string(stride) + " overflow a 64-bit size";
  return "";
}

Status check_threads(const ExecConfig& cfg) {
  if (cfg.cpu_threads >= 0 && cfg.cpu_threads <= kMaxCpuThreads) return Status::Ok();
  return invalid("cpu_threads = " + std::to_string(cfg.cpu_threads) +
                 " is outside [0, kMaxCpuThreads = " + std::to_string(kMaxCpuThreads) +
                 "] (0 = all hardware threads)");
}

Status validate_request(const Request& req, const Outputs& out, bool host_readable) {
  const Logits& l = req.logits;
  if (l.batch < 0) return invalid("logits.batch = " + std::to_string(l.batch) + " is negative");
  if (l.vocab < 1 || l.vocab > kMaxVocab)
    return invalid("logits.vocab = " + std::to_string(l.vocab) + " is outside [1, " +
                   std::to_string(kMaxVocab) + "]");
  if (l.dtype != DType::kFloat32 && l.dtype != DType::kBFloat16 && l.dtype != DType::kFloat16)
    return invalid("logits.dtype = " + std::to_string(static_cast<int>(l.dtype)) +
                   " is not a DType");
  if (l.row_stride != 0 && l.row_stride < l.vocab)
    return invalid("logits.row_stride = " + std::to_string(l.row_stride) +
                   " is smaller than vocab = " + std::to_string(l.vocab));
  if (req.top_logprobs < 0 || req.top_logprobs > kMaxTopLogprobs)
    return invalid("top_logprobs = " + std::to_string(req.top_logprobs) + " is outside [0, " +
                   std::to_string(kMaxTopLogprobs) + "]");
  if (req.allowed_mask && req.mask_row_words != 0 && req.mask_row_words < (l.vocab + 31) / 32)
    return invalid("mask_row_words = " + std::to_string(req.mask_row_words) +
                   " is smaller than ceil(vocab / 32) = " + std::to_string((l.vocab + 31) / 32));
  Status d = check_defaults(req.params);
  if (!d.ok()) return d;
  if (l.batch == 0) return Status::Ok();
  if (const std::string e = logits_span_error(l, "logits"); !e.empty()) return invalid(e);
  if (!l.data) return invalid("logits.data is null");
  if (!out.tokens) return invalid("outputs.tokens is null");
  if (!out.status) return invalid("outputs.status is null");
  if (req.top_logprobs > 0 && (!out.top_ids || !out.top_logprobs))
    return invalid("top_logprobs = " + std::to_string(req.top_logprobs) +
                   " but outputs.top_ids or outputs.top_logprobs is null");
  Status s = check_sparse(req.logit_bias, "logit_bias", l.batch, true, host_readable);
  if (!s.ok()) return s;
  s = check_sparse(req.prompt_tokens, "prompt_tokens", l.batch, false, host_readable);
  if (!s.ok()) return s;
  return check_sparse(req.output_tokens, "output_tokens", l.batch, false, host_readable);
}

std::string describe_settings(const core::RowSettings& s, int32_t status) {
  switch (status) {
    case kRowBadTemperature:
      return "temperature = " + fmt(s.temperature) + " (must be finite and >= 0)";
    case kRowBadTopK:
      return "top_k = " + std::to_string(s.top_k) + " (must be >= 0)";
    case kRowBadTopP:
      return "top_p = " + fmt(s.top_p) + " (must be > 0)";
    case kRowBadMinP:
      return "min_p = " + fmt(s.min_p) + " (must be in [0, 1])";
    case kRowBadRepetitionPenalty:
      return "repetition_penalty = " + fmt(s.repetition) + " (must be finite and > 0)";
    case kRowBadFrequencyPenalty:
      return "frequency_penalty = " + fmt(s.frequency) + " (must be in [-2, 2])";
    case kRowBadPresencePenalty:
      return "presence_penalty = " + fmt(s.presence) + " (must be in [-2, 2])";
    default:
      return row_status_name(status);
  }
}

std::string describe_bad_row(const Request& req, int64_t row, int32_t status) {
  const std::string r = "row " + std::to_string(row) + ": ";
  if (status == kRowBadTokenId)
    return r + "a logit_bias, prompt_tokens or output_tokens id is outside [0, vocab = " +
           std::to_string(req.logits.vocab) + ")";
  return r + describe_settings(core::load_row_settings(req.params, row), status);
}

namespace {

Status check_logits(const Logits& l, const char* name, int64_t rows) {
  const std::string n(name);
  if (l.batch != rows)
    return invalid(n + ".batch = " + std::to_string(l.batch) + " but the request needs " +
                   std::to_string(rows) + " rows");
  if (l.dtype != DType::kFloat32 && l.dtype != DType::kBFloat16 && l.dtype != DType::kFloat16)
    return invalid(n + ".dtype = " + std::to_string(static_cast<int>(l.dtype)) + " is not a DType");
  if (l.row_stride != 0 && l.row_stride < l.vocab)
    return invalid(n + ".row_stride = " + std::to_string(l.row_stride) +
                   " is smaller than vocab = " + std::to_string(l.vocab));
  if (rows > 0 && !l.data) return invalid(n + ".data is null");
  if (const std::string e = logits_span_error(l, n); !e.empty()) return invalid(e);
  return Status::Ok();
}

// What the host checks of a verification request whose arrays are device memory (a GPU
// backend; the device checks the rest and reports it in each request's status): the shapes the
// call states and the pointers.
template <typename Req>
Status check_device_parts(const Req& req) {
  const int64_t b = req.requests, n = req.target.batch;
  if (n < b)
    return invalid("target.batch = " + std::to_string(n) + " is below requests = " +
                   std::to_string(b) + " (each request has at least one row)");
  Status s = check_logits(req.target, "target", n);
  if (!s.ok()) return s;
  if (req.allowed_mask && req.mask_row_words != 0 &&
      req.mask_row_words < (req.target.vocab + 31) / 32)
    return invalid(
        "mask_row_words = " + std::to_string(req.mask_row_words) +
        " is smaller than ceil(vocab / 32) = " + std::to_string((req.target.vocab + 31) / 32));
  s = check_sparse(req.logit_bias, "logit_bias", b, true, false);
  if (!s.ok()) return s;
  s = check_sparse(req.prompt_tokens, "prompt_tokens", b, false, false);
  if (!s.ok()) return s;
  return check_sparse(req.output_tokens, "output_tokens", b, false, false);
}
Status check_device_chain(const ChainRequest& req) {
  Status s = check_device_parts(req);
  if (!s.ok()) return s;
  const int64_t nd = req.target.batch - req.requests, v = req.target.vocab;
  if (nd > 0 && !req.draft_tokens) return invalid("draft_tokens is null");
  const int32_t kind = static_cast<int32_t>(req.draft_kind);
  if (kind < 0 || kind > 2)
    return invalid("draft_kind = " + std::to_string(kind) + " is not a DraftKind (0, 1 or 2)");
  if (req.draft_kind == DraftKind::kDeterministic) return Status::Ok();
  s = check_logits(req.draft, "draft", nd);
  if (!s.ok()) return s;
  if (req.draft.vocab != v)
    return invalid("draft.vocab = " + std::to_string(req.draft.vocab) +
                   " differs from target.vocab = " + std::to_string(v));
  if (req.draft_kind == DraftKind::kProbs && req.draft.dtype != DType::kFloat32)
    return invalid("draft probabilities must be fp32 (draft.dtype = " +
                   std::to_string(static_cast<int>(req.draft.dtype)) + ")");
  return Status::Ok();
}
Status check_device_tree(const TreeRequest& req) {
  Status s = check_device_parts(req);
  if (!s.ok()) return s;
  if (!req.parents || !req.tokens) return invalid("parents or tokens is null");
  return Status::Ok();
}

// The request count, the vocabulary and the used defaults of a verification request.
Status check_head(int64_t b, int64_t v, const RowParams& params) {
  if (b < 0) return invalid("requests = " + std::to_string(b) + " is negative");
  if (v < 1 || v > kMaxVocab)
    return invalid("target.vocab = " + std::to_string(v) + " is outside [1, " +
                   std::to_string(kMaxVocab) + "]");
  return check_defaults(params);
}

// The bitmask row length and the per-request bias and histories of a verification request.
template <typename Req>
Status check_parts(const Req& req, int64_t b, int64_t v) {
  if (req.allowed_mask && req.mask_row_words != 0 && req.mask_row_words < (v + 31) / 32)
    return invalid("mask_row_words = " + std::to_string(req.mask_row_words) +
                   " is smaller than ceil(vocab / 32) = " + std::to_string((v + 31) / 32));
  Status s = check_sparse(req.logit_bias, "logit_bias", b, true, true);
  if (!s.ok()) return s;
  s = check_sparse(req.prompt_tokens, "prompt_tokens", b, false, true);
  if (!s.ok()) return s;
  return check_sparse(req.output_tokens, "output_tokens", b, false, true);
}

}  // namespace

Status validate_chain(const ChainRequest& req, const ChainOutputs& out, bool host_readable) {
  const int64_t b = req.requests, v = req.target.vocab;
  Status d = check_head(b, v, req.params);
  if (!d.ok() || b == 0) return d;
  if (!req.row_offsets) return invalid("row_offsets is null");
  if (!out.accepted || !out.tokens || !out.status)
    return invalid("outputs.accepted, outputs.tokens or outputs.status is null");
  if (req.max_drafts < 0 || req.max_drafts > kMaxDrafts)
    return invalid("max_drafts = " + std::to_string(req.max_drafts) +
                   " (must be 0, not stated, to kMaxDrafts = " + std::to_string(kMaxDrafts) + ")");
  if (!host_readable) return check_device_chain(req);
  if (req.row_offsets[0] != 0)
    return invalid("row_offsets[0] = " + std::to_string(req.row_offsets[0]) + " (must be 0)");
  const int64_t kmax = req.max_drafts > 0 ? req.max_drafts : kMaxDrafts;
  for (int64_t r = 0; r < b; ++r) {
    const int64_t k = req.row_offsets[r + 1] - req.row_offsets[r] - 1;
    if (k < 0 || k > kMaxDrafts)
      return invalid(
          "request " + std::to_string(r) + ": " + std::to_string(k + 1) +
          " target rows (must be 1 to kMaxDrafts + 1 = " + std::to_string(kMaxDrafts + 1) + ")");
    if (k > kmax)
      return invalid("request " + std::to_string(r) + ": " + std::to_string(k) +
                     " drafts, more than max_drafts = " + std::to_string(kmax));
  }
  const int64_t n = req.row_offsets[b];
  Status s = check_logits(req.target, "target", n);
  if (!s.ok()) return s;
  if (n - b > 0 && !req.draft_tokens) return invalid("draft_tokens is null");
  const int32_t kind = static_cast<int32_t>(req.draft_kind);
  if (kind < 0 || kind > 2)
    return invalid("draft_kind = " + std::to_string(kind) + " is not a DraftKind (0, 1 or 2)");
  if (req.draft_kind != DraftKind::kDeterministic) {
    s = check_logits(req.draft, "draft", n - b);
    if (!s.ok()) return s;
    if (req.draft.vocab != v)
      return invalid("draft.vocab = " + std::to_string(req.draft.vocab) +
                     " differs from target.vocab = " + std::to_string(v));
    if (req.draft_kind == DraftKind::kProbs && req.draft.dtype != DType::kFloat32)
      return invalid("draft probabilities must be fp32 (draft.dtype = " +
                     std::to_string(static_cast<int>(req.draft.dtype)) + ")");
  }
  s = check_parts(req, b, v);
  if (!s.ok()) return s;
  // every draft id, and every draft probability, before anything is written
  const int64_t dstride = req.draft.row_stride == 0 ? v : req.draft.row_stride;
  for (int64_t r = 0; r < b; ++r) {
    const int64_t k = req.row_offsets[r + 1] - req.row_offsets[r] - 1;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t i = req.row_offsets[r] - r + j;
      const int32_t x = req.draft_tokens[i];
      if (x < 0 || x >= v)
        return invalid("request " + std::to_string(r) + ": draft " + std::to_string(j) + " = " +
                       std::to_string(x) + " is outside [0, vocab = " + std::to_string(v) + ")");
      if (req.draft_kind != DraftKind::kProbs) continue;
      const float* q = static_cast<const float*>(req.draft.data) + i * dstride;
      for (int64_t t = 0; t < v; ++t) {
        if (!(q[t] >= 0.0f && q[t] <= 1.0f))
          return invalid("request " + std::to_string(r) + ": draft " + std::to_string(j) +
                         " probability of token " + std::to_string(t) + " = " + fmt(q[t]) +
                         " is outside [0, 1]");
      }
    }
  }
  return Status::Ok();
}

Status validate_tree(const TreeRequest& req, const TreeOutputs& out, bool host_readable) {
  const int64_t b = req.requests, v = req.target.vocab;
  Status d = check_head(b, v, req.params);
  if (!d.ok() || b == 0) return d;
  if (!req.node_offsets) return invalid("node_offsets is null");
  if (!out.accepted || !out.path || !out.tokens || !out.status)
    return invalid("outputs.accepted, outputs.path, outputs.tokens or outputs.status is null");
  if (req.max_depth < 0 || req.max_depth > kMaxDrafts)
    return invalid("max_depth = " + std::to_string(req.max_depth) +
                   " (must be 0, not stated, to kMaxDrafts = " + std::to_string(kMaxDrafts) + ")");
  if (!host_readable) return check_device_tree(req);
  const int32_t dmax = req.max_depth > 0 ? req.max_depth : kMaxDrafts;
  if (req.node_offsets[0] != 0)
    return invalid("node_offsets[0] = " + std::to_string(req.node_offsets[0]) + " (must be 0)");
  for (int64_t r = 0; r < b; ++r) {
    const int64_t m = req.node_offsets[r + 1] - req.node_offsets[r];
    if (m < 1 || m > kMaxTreeNodes)
      return invalid("request " + std::to_string(r) + ": " + std::to_string(m) +
                     " nodes (must be 1 to kMaxTreeNodes = " + std::to_string(kMaxTreeNodes) + ")");
  }
  Status s = check_logits(req.target, "target", req.node_offsets[b]);
  if (!s.ok()) return s;
  if (!req.parents || !req.tokens) return invalid("parents or tokens is null");
  s = check_parts(req, b, v);
  if (!s.ok()) return s;
  for (int64_t r = 0; r < b; ++r) {
    const int64_t n0 = req.node_offsets[r], m = req.node_offsets[r + 1] - n0;
    const std::string who = "request " + std::to_string(r) + ": node ";
    if (req.parents[n0] != -1)
      return invalid(who + "0 (the root) has parent " + std::to_string(req.parents[n0]) +
                     " (must be -1)");
    std::vector<int32_t> depth(static_cast<size_t>(m), 0);
    for (int64_t i = 1; i < m; ++i) {
      const int32_t p = req.parents[n0 + i], x = req.tokens[n0 + i];
      if (p < 0 || p >= i)
        return invalid(who + std::to_string(i) + " has parent " + std::to_string(p) +
                       " (must be a node before it: 0 .. " + std::to_string(i - 1) + ")");
      depth[i] = depth[p] + 1;
      if (depth[i] > dmax)
        return invalid(who + std::to_string(i) + " is at depth " + std::to_string(depth[i]) +
                       (req.max_depth > 0 ? " (deeper than max_depth = "
                                          : " (a path holds at most kMaxDrafts = ") +
                       std::to_string(dmax) + " drafts)");
      if (x < 0 || x >= v)
        return invalid(who + std::to_string(i) + " has token " + std::to_string(x) +
                       ", outside [0, vocab = " + std::to_string(v) + ")");
    }
  }
  return Status::Ok();
}

}  // namespace api

const char* row_status_name(int32_t status) noexcept {
  switch (status) {
    case kRowOk:
      return "ok";
    case kRowEmpty:
      return "empty";
    case kRowBadTemperature:
      return "bad_temperature";
    case kRowBadTopK:
      return "bad_top_k";
    case kRowBadTopP:
      return "bad_top_p";
    case kRowBadMinP:
      return "bad_min_p";
    case kRowBadRepetitionPenalty:
      return "bad_repetition_penalty";
    case kRowBadFrequencyPenalty:
      return "bad_frequency_penalty";
    case kRowBadPresencePenalty:
      return "bad_presence_penalty";
    case kRowBadTokenId:
      return "bad_token_id";
    case kRowBadDraft:
      return "bad_draft";
    default:
      return "unknown";
  }
}

namespace {

// The GPU backend this library was built with (kCpu when none).
constexpr Backend kBuiltGpu =
#if defined(LMSAMPLE_WITH_CUDA)
    Backend::kCuda;
#elif defined(LMSAMPLE_WITH_HIP)
    Backend::kHip;
#else
    Backend::kCpu;
#endif

}  // namespace

bool backend_available(Backend backend) {
  switch (backend) {
    case Backend::kCpu:
    case Backend::kAuto:
      return true;
    case Backend::kCuda:
    case Backend::kHip:
#if defined(LMSAMPLE_WITH_CUDA) || defined(LMSAMPLE_WITH_HIP)
      return backend == kBuiltGpu && gpu::device_present();
#else
      return false;
#endif
  }
  return false;
}

Backend resolve_backend(Backend backend) {
  if (backend != Backend::kAuto) return backend;
  return kBuiltGpu != Backend::kCpu && backend_available(kBuiltGpu) ? kBuiltGpu : Backend::kCpu;
}

namespace {

// verify_chain and verify_tree: validated (on a GPU backend, what the host can see), nothing to
// do for no request.
template <typename Req, typename Out, typename Validate, typename Cpu, typename Gpu>
Status run_verification(const Req& req, const Out& out, const ExecConfig& cfg, Validate validate,
                        Cpu cpu, Gpu gpu) {
  if (Status t = api::check_threads(cfg); !t.ok()) return t;
  const Backend be = resolve_backend(cfg.backend);
  if (be != Backend::kCpu && be != Backend::kCuda && be != Backend::kHip)
    return Status{Code::kInvalidArgument,
                  "backend = " + std::to_string(static_cast<int>(be)) + " is not a Backend"};
  if (be != Backend::kCpu && be != kBuiltGpu)  // (as sample(); no device: the GPU call says so)
    return Status{Code::kUnsupported, std::string("this lmsample was built without the ") +
                                          (be == Backend::kCuda ? "CUDA" : "HIP") + " backend"};
  Status s = validate(req, out, be == Backend::kCpu);
  if (!s.ok()) return s;
  if (req.requests == 0) return Status::Ok();
  return be == Backend::kCpu ? cpu() : gpu();
}

}  // namespace

// (The GPU entry points, or kUnsupported where this build has none.)
#if defined(LMSAMPLE_WITH_CUDA) || defined(LMSAMPLE_WITH_HIP)
#define LMS_GPU_CALL(call) gpu::call
#else
#define LMS_GPU_CALL(call) \
  Status { Code::kUnsupported, "this lmsample was built without a GPU backend" }
#endif

size_t verify_chain_workspace_size(const ChainRequest& req, const ExecConfig& cfg) {
#if defined(LMSAMPLE_WITH_CUDA) || defined(LMSAMPLE_WITH_HIP)
  if (resolve_backend(cfg.backend) == kBuiltGpu) return gpu::verify_chain_workspace_size(req, cfg);
#endif
  return cpu::verify_chain_workspace_size(req, cfg);
}

Status verify_chain(const ChainRequest& req, const ChainOutputs& out, void* workspace,
                    size_t workspace_bytes, const ExecConfig& cfg) {
  return run_verification(
      req, out, cfg, api::validate_chain,
      [&] { return cpu::verify_chain(req, out, workspace, workspace_bytes, cfg); },
      [&] { return LMS_GPU_CALL(verify_chain(req, out, workspace, workspace_bytes, cfg)); });
}

size_t verify_tree_workspace_size(const TreeRequest& req, const ExecConfig& cfg) {
#if defined(LMSAMPLE_WITH_CUDA) || defined(LMSAMPLE_WITH_HIP)
  if (resolve_backend(cfg.backend) == kBuiltGpu) return gpu::verify_tree_workspace_size(req, cfg);
#endif
  return cpu::verify_tree_workspace_size(req, cfg);
}

Status verify_tree(const TreeRequest& req, const TreeOutputs& out, void* workspace,
                   size_t workspace_bytes, const ExecConfig& cfg) {
  return run_verification(
      req, out, cfg, api::validate_tree,
      [&] { return cpu::verify_tree(req, out, workspace, workspace_bytes, cfg); },
      [&] { return LMS_GPU_CALL(verify_tree(req, out, workspace, workspace_bytes, cfg)); });
}
#undef LMS_GPU_CALL

const char* version() noexcept { return "0.1.0"; }

int contract_version() noexcept { return core::kContractVersion; }

size_t workspace_size(const Request& req, const ExecConfig& cfg) {
#if defined(LMSAMPLE_WITH_CUDA) || defined(LMSAMPLE_WITH_HIP)
  if (resolve_backend(cfg.backend) == kBuiltGpu) return gpu::workspace_size(req, cfg);
#endif
  return cpu::workspace_size(req, cfg);
}

Status sample(const Request& req, const Outputs& out, void* workspace, size_t workspace_bytes,
              const ExecConfig& cfg) {
  if (Status t = api::check_threads(cfg); !t.ok()) return t;
  const Backend backend = resolve_backend(cfg.backend);
  const int32_t keys = static_cast<int32_t>(cfg.gpu_keys);
  if (keys < static_cast<int32_t>(GpuKeys::kAuto) || keys > static_cast<int32_t>(GpuKeys::kStream))
    return Status{Code::kInvalidArgument,
                  "gpu_keys = " + std::to_string(keys) + " is not a GpuKeys (0, 1 or 2)"};
  if (backend == Backend::kCuda || backend == Backend::kHip) {
#if defined(LMSAMPLE_WITH_CUDA) || defined(LMSAMPLE_WITH_HIP)
    if (backend == kBuiltGpu) {
      Status s = api::validate_request(req, out, false);
      if (!s.ok()) return s;
      return gpu::sample(req, out, workspace, workspace_bytes, cfg);
    }
#endif
    return Status{Code::kUnsupported, std::string("this lmsample was built without the ") +
                                          (backend == Backend::kCuda ? "CUDA" : "HIP") +
                                          " backend"};
  }
  if (backend != Backend::kCpu)
    return Status{Code::kInvalidArgument,
                  "backend = " + std::to_string(static_cast<int>(backend)) + " is not a Backend"};
  Status s = api::validate_request(req, out, true);
  if (!s.ok()) return s;
  if (req.logits.batch == 0) return Status::Ok();
  s = cpu::sample(req, out, workspace, workspace_bytes, cfg);
  if (!s.ok()) return s;
  for (int64_t r = 0; r < req.logits.batch; ++r) {
    if (out.status[r] >= kRowBadTemperature) {
      int64_t bad = 0;
      for (int64_t q = r; q < req.logits.batch; ++q) bad += out.status[q] >= kRowBadTemperature;
      std::string msg = api::describe_bad_row(req, r, out.status[r]);
      if (bad > 1)
        msg += " (and " + std::to_string(bad - 1) + " more bad rows; see the row statuses)";
      return Status{Code::kInvalidRowParameter, msg};
    }
  }
  return Status::Ok();
}

}  // namespace lmsample
