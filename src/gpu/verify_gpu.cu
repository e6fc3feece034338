// Host side of the GPU backend's verification (docs/contract.md, section 8): the launches that
// check the structure, map every target (and draft) row to its request, reduce the rows to
// their kept sets (temperature_rows_kernel for temperature alone, else the general kernel's
// verification instantiation), then make each request's decisions (verify_kernel.cuh).
// Where the batch fills the GPU, the kept sets come in rounds: each round computes the next
// few positions (chain) or the node reached (tree) of every request still undecided, and its
// decisions name the next round's rows, so that the rows after a request's rejection are never
// read. No allocation, no host synchronisation: a call can be captured in a CUDA graph.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "api/validate.hpp"
#include "gpu/launch.hpp"
#include "gpu/sample_kernel.cuh"
#include "gpu/verify_gpu.hpp"
#include "gpu/verify_kernel.cuh"

namespace lmsample::gpu {
namespace {

using namespace detail;  // NOLINT

size_t up256(size_t x) { return (x + 255) / 256 * 256; }

// A launch that may start while the stream's previous kernel still runs where `dependent` is
// set (programmatic dependent launch, CUDA on sm_90 and later: its CTAs are dispatched as soon
// as that kernel's have all exited or triggered, hiding the launch's latency); the kernel calls
// grid_dependency_wait() before it touches memory. A plain launch otherwise, and on HIP.
// Verification launches so where its drafts are deterministic (a chain's or a tree's): on an
// H200 that took 3 to 9 us off each call, while calls with draft distributions, whose residual
// kernel has work, took up to 5 us longer at B <= 8
// (results/gpu/2026-12-02-h200-3c2a2d1-pdl-trial).
template <typename... Params, typename... Args>
gpuError_t launch_dependent(bool dependent, void (*kernel)(Params...), dim3 grid, dim3 block,
                            gpuStream_t stream, const Args&... args) {
#if !defined(__HIPCC__)
  cudaLaunchConfig_t lc{};
  lc.gridDim = grid;
  lc.blockDim = block;
  lc.dynamicSmemBytes = 0;
  lc.stream = stream;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  lc.attrs = &attr;
  lc.numAttrs = dependent && device().pdl ? 1 : 0;
  return cudaLaunchKernelEx(&lc, kernel, args...);
#else
  (void)dependent;
  void* argv[] = {const_cast<void*>(static_cast<const void*>(&args))...};
  return hipLaunchKernel(reinterpret_cast<const void*>(kernel), grid, block, argv, 0, stream);
#endif
}
int64_t stride_of(const Logits& l) { return l.row_stride == 0 ? l.vocab : l.row_stride; }

// What a verification's rows share with sampling: their request as the general kernel sees it
// (the call's target or draft logits, bitmask, bias and histories; parameters per request).
template <typename Req>
Request rows_request(const Req& req, const Logits& rows) {
  Request r;
  r.logits = rows;
  r.params = req.params;
  r.allowed_mask = req.allowed_mask;
  r.mask_row_words = req.mask_row_words;
  r.logit_bias = req.logit_bias;
  r.prompt_tokens = req.prompt_tokens;
  r.output_tokens = req.output_tokens;
  return r;
}

// Whether some row's penalties may change a logit (an array, or a default that is not neutral):
// then the drafts (or the path) before a row are its history too.
bool penalties_may_apply(const RowParams& p) {
  return p.repetition_penalty || p.frequency_penalty || p.presence_penalty ||
         p.defaults.repetition_penalty != 1.0f || p.defaults.frequency_penalty != 0.0f ||
         p.defaults.presence_penalty != 0.0f;
}

// The rows' plan: keys in the workspace wherever bias or penalties rewrite them (the decisions
// read the processed keys from there), else the plan sampling would take.
// Rows with temperature alone (no filter, bitmask, bias or history as the host knows it, no
// logprobs) take temperature_rows_kernel, about 2.5x faster a row than the general kernel at
// large batches (its kept set: every valid token).
// r: the rows' request with the batch of one launch (the rounds' slots), `rows` all the rows.
struct RowsPlan {
  Plan plan;
  bool temperature = false;
  bool rewrites = false;  // bias or penalties
  size_t ws_bytes = 0;
};
RowsPlan rows_plan(const Request& r, int64_t rows, bool extra, bool logprobs,
                   const ExecConfig& cfg) {
  RowsPlan rp;
  rp.rewrites = r.logit_bias.offsets || r.prompt_tokens.offsets || r.output_tokens.offsets || extra;
  if (!rp.rewrites && !logprobs && stream_alone(r) && !may_top_p(r)) {
    rp.temperature = true;
    rp.ws_bytes = temperature_bytes(r, rows);  // (its sub-chunk sums: every row's)
    return rp;
  }
  rp.plan = make_plan(r, device(), cfg.gpu_keys);
  if (rp.rewrites) {
    rp.plan.stream = false;
    rp.plan.smem_keys = false;
    rp.plan.smem = sizeof(Exchange);
    rp.ws_bytes =
        2 * static_cast<size_t>(rows) * static_cast<size_t>(r.logits.vocab) * sizeof(uint32_t);
  }
  return rp;
}

// The workspace's parts, in order.
struct Layout {
  size_t flag = 0, state = 0, t_rows = 0, d_rows = 0, paths = 0, t_sets = 0, t_token = 0,
         t_status = 0, t_lp = 0, d_sets = 0, d_token = 0, d_status = 0, d_total = 0, d_bad = 0,
         jobs = 0, done = 0, sums = 0, removed = 0, walk = 0, t_map = 0, d_map = 0, t_ws = 0,
         d_ws = 0;
  size_t bytes() const {
    return flag + state + t_rows + d_rows + paths + t_sets + t_token + t_status + t_lp + d_sets +
           d_token + d_status + d_total + d_bad + jobs + done + sums + removed + walk + t_map +
           d_map + t_ws + d_ws + 256;
  }
};

// Rows a round should give the GPU at least (LMSAMPLE_VERIFY_ROUND_ROWS overrides it, for tests
// and tuning): about where the temperature kernel's time per row stops falling on an H200.
int64_t round_rows() {
  const char* e = std::getenv("LMSAMPLE_VERIFY_ROUND_ROWS");
  const long long v = e ? std::atoll(e) : 0;
  return v > 0 ? v : 128;
}

struct Call {
  int64_t requests = 0, rows = 0, drafts = 0;  // drafts: rows - requests (chain)
  int64_t chunks = 0;                          // of the residual kernels
  int32_t max_drafts = kMaxDrafts;             // chain: drafts, tree: depth, a request's most
  int32_t window = 0;                          // rows per request a round (0: one launch)
  int32_t rounds = 1;
  int64_t slots = 0;  // rows a launch computes (window * requests)
  bool tree = false;
  DraftKind kind = DraftKind::kDeterministic;
  bool logprobs = false;
  bool extra = false;  // the drafts (path) before a row are its history
  Request t_req, d_req;
  RowsPlan t_plan, d_plan;
  Layout lay;
};

// The rounds: a chain's request has at most max_drafts + 1 positions, a tree's path as many
// nodes. Where every row at once would not fill the GPU past round_rows(), one launch computes
// them all (what early rejections leave unused costs little there); else a chain's round takes
// the next ceil(round_rows() / B) positions of each request, a tree's the node reached.
void plan_rounds(Call& c, int32_t cap) {
  const int64_t bound = std::max<int64_t>(0, std::min<int64_t>(kMaxDrafts, c.rows - c.requests));
  c.max_drafts = cap > 0 ? std::min(cap, kMaxDrafts) : kMaxDrafts;
  const int64_t positions = std::min<int64_t>(c.max_drafts, bound) + 1;
  const int64_t fill = round_rows();
  c.window = 0;
  c.rounds = 1;
  c.slots = c.rows;
  if (c.requests == 0 || c.rows <= fill || positions <= 1) return;
  const int64_t w = c.tree ? 1 : std::max<int64_t>(1, (fill + c.requests - 1) / c.requests);
  if (w >= positions) return;
  c.window = static_cast<int32_t>(w);
  c.rounds = static_cast<int32_t>((positions + w - 1) / w);
  c.slots = c.requests * w;
}

template <typename Req>
Call plan_call(const Req& req, bool tree, DraftKind kind, const Logits& draft, bool logprobs,
               int32_t cap, const ExecConfig& cfg) {
  Call c;
  c.requests = req.requests;
  c.rows = req.target.batch;
  c.drafts = c.rows - c.requests;
  c.tree = tree;
  c.kind = kind;
  c.logprobs = logprobs;
  c.extra = penalties_may_apply(req.params) && c.rows > c.requests;
  plan_rounds(c, cap);
  c.t_req = rows_request(req, req.target);
  c.t_req.logits.batch = c.slots;
  c.t_plan = rows_plan(c.t_req, c.rows, c.extra, logprobs, cfg);
  const size_t n = static_cast<size_t>(c.rows), b = static_cast<size_t>(c.requests);
  const size_t nd = kind == DraftKind::kDeterministic || tree ? 0 : static_cast<size_t>(c.drafts);
  Layout& l = c.lay;
  l.flag = 256;
  l.state = up256(b * 4);
  l.t_rows = up256(n * sizeof(VerifyRow));
  l.paths = tree ? up256(n * kMaxDrafts * sizeof(int32_t)) : 0;
  l.t_sets = up256(n * sizeof(KeptSet));
  l.t_token = l.t_status = up256(n * 4);
  l.t_lp = logprobs ? up256(n * 4) : 0;
  if (kind == DraftKind::kLogits && !tree) {
    c.d_req = rows_request(req, draft);
    if (c.window) c.d_req.logits.batch = c.slots;
    c.d_plan = rows_plan(c.d_req, c.drafts, c.extra, false, cfg);
    l.d_rows = up256(nd * sizeof(VerifyRow));
    l.d_sets = up256(nd * sizeof(KeptSet));
    l.d_token = l.d_status = up256(nd * 4);
    l.d_ws = c.d_plan.ws_bytes;
  }
  if (kind == DraftKind::kProbs && !tree) {
    l.d_total = up256(nd * 8);
    l.d_bad = up256(nd * 4);
  }
  c.chunks = (req.target.vocab + kResidualChunk - 1) / kResidualChunk;
  l.jobs = up256(b * sizeof(ResidualJob));
  l.done = up256(b * 4);
  l.sums = up256(b * static_cast<size_t>(c.chunks) * sizeof(core::U128));
  l.removed = tree ? up256(b * kMaxTreeNodes * sizeof(int32_t)) : 0;
  if (c.window) {
    const size_t slots = static_cast<size_t>(c.slots);
    l.walk = up256(b * 4);
    l.t_map = up256(slots * 4);
    l.d_map = kind == DraftKind::kLogits && !tree ? up256(slots * 4) : 0;
  }
  l.t_ws = c.t_plan.ws_bytes;
  return c;
}

template <typename T>
T* take(char*& at, size_t bytes) {
  T* p = bytes ? reinterpret_cast<T*>(at) : nullptr;
  at += bytes;
  return p;
}

// The kept sets of one set of rows (`rows` of them; r's batch: the launch's slots, which map
// names the rows of, or every row where map is null): the temperature kernel (*sub_sums gets
// its sub-chunk sums) or the general kernel's verification instantiation.
Status launch_kept_sets(const Request& r, int64_t rows, const RowsPlan& rp, const int32_t* map,
                        const VerifyRow* vrows, const int32_t* extra, KeptSet* sets, int32_t* token,
                        int32_t* status, float* lp, uint32_t* ws, const uint64_t** sub_sums,
                        gpuStream_t stream) {
  KernelArgs a{};
  a.req = r;
  a.out.tokens = token;
  a.out.status = status;
  a.out.logprob = lp;  // (asks for the logprob normaliser, which the kept set keeps)
  a.stride = stride_of(r.logits);
  a.vrows = vrows;
  a.kept_sets = sets;
  a.row_map = map;
  if (rp.temperature) {
    const uint32_t* pending = nullptr;
    char* fallback = nullptr;
    return launch_temperature(a, reinterpret_cast<char*>(ws), stream, &pending, &fallback, rows,
                              sub_sums);
  }
  a.mask_words = api::mask_words_of(r);
  a.chunk = rp.plan.chunk;
  a.stream = rp.plan.stream;
  if (ws && rp.rewrites) {
    a.ws_keys = ws;
    a.ws_tags = ws + static_cast<size_t>(rows) * static_cast<size_t>(r.logits.vocab);
  }
  a.extra = extra;
  return launch_rows(a, rp.plan, r.logits.batch, RowsKernel::kVerify, stream);
}

// The residual kernel for the call's kind of draft (256 threads of one group, or 128 of two
// from kResidualTwoGroupsFrom requests on).
template <int kThreads>
gpuError_t launch_residual_with(const Call& c, const VerifyArgs& va, gpuStream_t stream) {
  const dim3 grid(static_cast<unsigned>(c.requests), static_cast<unsigned>(c.chunks));
  if (c.tree || c.kind == DraftKind::kDeterministic)
    return launch_dependent(true, residual_kernel<kThreads, kFastNone>, grid, dim3(kThreads),
                            stream, va);
  if (c.kind == DraftKind::kProbs)
    return launch_dependent(false, residual_kernel<kThreads, kFastProbs>, grid, dim3(kThreads),
                            stream, va);
  return launch_dependent(false, residual_kernel<kThreads, kFastLogits>, grid, dim3(kThreads),
                          stream, va);
}
gpuError_t launch_residual(const Call& c, const VerifyArgs& va, gpuStream_t stream) {
  return c.requests >= kResidualTwoGroupsFrom ? launch_residual_with<128>(c, va, stream)
                                              : launch_residual_with<256>(c, va, stream);
}

template <typename Req>
Status run(const Req& req, const Call& c, VerifyArgs& va, void* workspace, size_t workspace_bytes,
           const ExecConfig& cfg) {
  if (device().id < 0) return Status{Code::kUnsupported, "no GPU device is available"};
  const size_t need = c.lay.bytes();
  if (workspace_bytes < need)
    return Status{Code::kWorkspaceTooSmall, "workspace of " + std::to_string(workspace_bytes) +
                                                " bytes is smaller than the " +
                                                std::to_string(need) + " bytes asked for"};
  const gpuStream_t stream = static_cast<gpuStream_t>(cfg.stream);
  char* at = static_cast<char*>(workspace);
  at += (256 - reinterpret_cast<uintptr_t>(at) % 256) % 256;
  const Layout& l = c.lay;
  va.flag = take<uint32_t>(at, l.flag);
  va.state = take<int32_t>(at, l.state);
  va.t_rows = take<VerifyRow>(at, l.t_rows);
  va.d_rows = take<VerifyRow>(at, l.d_rows);
  va.paths = take<int32_t>(at, l.paths);
  KeptSet* t_sets = take<KeptSet>(at, l.t_sets);
  int32_t* t_token = take<int32_t>(at, l.t_token);
  int32_t* t_status = take<int32_t>(at, l.t_status);
  float* t_lp = take<float>(at, l.t_lp);
  KeptSet* d_sets = take<KeptSet>(at, l.d_sets);
  int32_t* d_token = take<int32_t>(at, l.d_token);
  int32_t* d_status = take<int32_t>(at, l.d_status);
  va.d_prob_total = take<uint64_t>(at, l.d_total);
  va.d_prob_bad = take<uint32_t>(at, l.d_bad);
  va.jobs = take<ResidualJob>(at, l.jobs);
  va.job_done = take<uint32_t>(at, l.done);
  va.chunk_sums = take<core::U128>(at, l.sums);
  va.chunks = c.chunks;
  va.removed = take<int32_t>(at, l.removed);
  va.walk = take<int32_t>(at, l.walk);
  va.t_map = take<int32_t>(at, l.t_map);
  va.d_map = take<int32_t>(at, l.d_map);
  va.window = c.window;
  va.max_drafts = c.max_drafts;
  uint32_t* t_ws = take<uint32_t>(at, l.t_ws);
  uint32_t* d_ws = take<uint32_t>(at, l.d_ws);
  va.requests = c.requests;
  va.rows = c.rows;
  va.vocab = req.target.vocab;
  va.tree = c.tree;
  va.target = req.target;
  va.tstride = stride_of(req.target);
  va.mask = req.allowed_mask;
  va.mask_words = api::mask_words_of(c.t_req);
  va.params = req.params;
  va.t_sets = t_sets;
  va.t_token = t_token;
  va.t_status = t_status;
  va.t_keys = c.t_plan.rewrites ? t_ws : nullptr;  // (else the temperature kernel's, or none)
  va.d_sets = d_sets;
  va.d_token = d_token;
  va.d_status = d_status;
  va.d_keys = c.d_plan.rewrites ? d_ws : nullptr;

  // 1. the structure (in every CTA of 2 for small batches, else one CTA first), 2. each
  // request's drafts or tree and its rows' maps
  const int max_rows = c.tree ? kMaxTreeNodes : kMaxDrafts + 1;
  const unsigned pgrid = static_cast<unsigned>((c.requests + 127) / 128);
  if (c.requests <= kCheckInPrepare) {
    verify_prepare_kernel<128, true><<<pgrid, 128, 0, stream>>>(va, max_rows);
  } else {
    verify_check_kernel<256><<<1, 256, 0, stream>>>(va, max_rows);
    verify_prepare_kernel<128, false><<<pgrid, 128, 0, stream>>>(va, max_rows);
  }
  gpuError_t e = gpuGetLastError();
  if (e != gpuSuccess) return runtime_error("verification launch", e);
  // 3. the draft probabilities' totals (every row: each probability is checked before a
  // decision), then in each round 4. the kept sets of its target rows (and draft rows) and
  // 5. its decisions; 6. the residual draws they leave (sums per chunk, the last CTA of a job
  // draws)
  const int32_t* extra = !c.extra ? nullptr : c.tree ? va.paths : va.drafts;
  if (c.kind == DraftKind::kProbs && c.drafts > 0) {
    e = launch_dependent(false, draft_prob_total_kernel<128>,
                         dim3(static_cast<unsigned>(c.drafts), static_cast<unsigned>(c.chunks)),
                         dim3(128), stream, va);
    if (e != gpuSuccess) return runtime_error("verification launch", e);
  }
  const unsigned grid = static_cast<unsigned>(c.requests);
  const bool pdl = c.tree || c.kind == DraftKind::kDeterministic;  // (launch_dependent says why)
  for (int32_t round = 0; round < c.rounds; ++round) {
    const uint64_t* sub_sums = nullptr;
    Status s = launch_kept_sets(c.t_req, c.rows, c.t_plan, va.t_map, va.t_rows, extra, t_sets,
                                t_token, t_status, t_lp, t_ws, &sub_sums, stream);
    if (!s.ok()) return s;
    va.t_sub_sums = sub_sums;
    va.nsub = sub_sums ? (req.target.vocab + temperature::kSub - 1) / temperature::kSub : 0;
    if (c.kind == DraftKind::kLogits && c.drafts > 0) {
      s = launch_kept_sets(c.d_req, c.drafts, c.d_plan, va.d_map, va.d_rows, extra, d_sets, d_token,
                           d_status, nullptr, d_ws, nullptr, stream);
      if (!s.ok()) return s;
    }
    e = c.tree ? launch_dependent(pdl, verify_tree_kernel<kDecideThreads>, dim3(grid),
                                  dim3(kDecideThreads), stream, va)
               : launch_dependent(pdl, verify_chain_kernel<kDecideThreads>, dim3(grid),
                                  dim3(kDecideThreads), stream, va);
    if (e != gpuSuccess) return runtime_error("verification launch", e);
  }
  e = launch_residual(c, va, stream);
  if (e != gpuSuccess) return runtime_error("verification launch", e);
  return Status::Ok();
}

Call chain_call(const ChainRequest& req, bool logprobs, const ExecConfig& cfg) {
  return plan_call(req, false, req.draft_kind, req.draft, logprobs, req.max_drafts, cfg);
}
Call tree_call(const TreeRequest& req, bool logprobs, const ExecConfig& cfg) {
  return plan_call(req, true, DraftKind::kDeterministic, Logits{}, logprobs, req.max_depth, cfg);
}

}  // namespace

// (with or without logprobs, whichever plan asks more: the size cannot depend on the outputs)
size_t verify_chain_workspace_size(const ChainRequest& req, const ExecConfig& cfg) {
  if (device().id < 0) return 0;
  return std::max(chain_call(req, true, cfg).lay.bytes(), chain_call(req, false, cfg).lay.bytes());
}

Status verify_chain(const ChainRequest& req, const ChainOutputs& out, void* workspace,
                    size_t workspace_bytes, const ExecConfig& cfg) {
  const Call c = chain_call(req, out.logprobs != nullptr, cfg);
  VerifyArgs va;
  va.offsets = req.row_offsets;
  va.drafts = req.draft_tokens;
  va.kind = req.draft_kind;
  va.draft = req.draft;
  va.dstride = req.draft_kind == DraftKind::kDeterministic ? 0 : stride_of(req.draft);
  va.accepted = out.accepted;
  va.tokens = out.tokens;
  va.status = out.status;
  va.logprobs = out.logprobs;
  return run(req, c, va, workspace, workspace_bytes, cfg);
}

size_t verify_tree_workspace_size(const TreeRequest& req, const ExecConfig& cfg) {
  if (device().id < 0) return 0;
  return std::max(tree_call(req, true, cfg).lay.bytes(), tree_call(req, false, cfg).lay.bytes());
}

Status verify_tree(const TreeRequest& req, const TreeOutputs& out, void* workspace,
                   size_t workspace_bytes, const ExecConfig& cfg) {
  const Call c = tree_call(req, out.logprobs != nullptr, cfg);
  VerifyArgs va;
  va.offsets = req.node_offsets;
  va.parents = req.parents;
  va.node_tokens = req.tokens;
  va.accepted = out.accepted;
  va.tokens = out.tokens;
  va.status = out.status;
  va.logprobs = out.logprobs;
  va.path = out.path;
  return run(req, c, va, workspace, workspace_bytes, cfg);
}

}  // namespace lmsample::gpu
