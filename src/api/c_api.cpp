// The C API: converts the plain structs and catches every exception at the boundary.
#include <exception>
#include <string>

#include "lmsample/lmsample.h"
#include "lmsample/lmsample.hpp"

namespace {

thread_local std::string g_last_error;

lmsample::SparseRows to_cpp(const lms_sparse_rows& s) {
  lmsample::SparseRows r;
  r.offsets = s.offsets;
  r.tokens = s.tokens;
  r.values = s.values;
  return r;
}

lmsample::RowDefaults to_cpp(const lms_row_defaults& c) {
  lmsample::RowDefaults d;
  d.temperature = c.temperature;
  d.top_k = c.top_k;
  d.top_p = c.top_p;
  d.min_p = c.min_p;
  d.repetition_penalty = c.repetition_penalty;
  d.frequency_penalty = c.frequency_penalty;
  d.presence_penalty = c.presence_penalty;
  d.seed = c.seed;
  d.step = c.step;
  d.substream = c.substream;
  return d;
}

lms_row_defaults to_c(const lmsample::RowDefaults& d) {
  lms_row_defaults c;
  c.temperature = d.temperature;
  c.top_k = d.top_k;
  c.top_p = d.top_p;
  c.min_p = d.min_p;
  c.repetition_penalty = d.repetition_penalty;
  c.frequency_penalty = d.frequency_penalty;
  c.presence_penalty = d.presence_penalty;
  c.seed = d.seed;
  c.step = d.step;
  c.substream = d.substream;
  return c;
}

lmsample::Request to_cpp(const lms_request& c) {
  lmsample::Request r;
  r.logits.data = c.logits;
  r.logits.dtype = static_cast<lmsample::DType>(c.dtype);
  r.logits.batch = c.batch;
  r.logits.vocab = c.vocab;
  r.logits.row_stride = c.row_stride;
  r.params.temperature = c.temperature;
  r.params.top_k = c.top_k;
  r.params.top_p = c.top_p;
  r.params.min_p = c.min_p;
  r.params.repetition_penalty = c.repetition_penalty;
  r.params.frequency_penalty = c.frequency_penalty;
  r.params.presence_penalty = c.presence_penalty;
  r.params.seed = c.seed;
  r.params.step = c.step;
  r.params.substream = c.substream;
  r.params.defaults = to_cpp(c.defaults);
  r.allowed_mask = c.allowed_mask;
  r.mask_row_words = c.mask_row_words;
  r.logit_bias = to_cpp(c.logit_bias);
  r.prompt_tokens = to_cpp(c.prompt_tokens);
  r.output_tokens = to_cpp(c.output_tokens);
  r.top_logprobs = c.top_logprobs;
  return r;
}

lmsample::Outputs to_cpp(const lms_outputs& c) {
  lmsample::Outputs o;
  o.tokens = c.tokens;
  o.status = c.status;
  o.logprob = c.logprob;
  o.kept = c.kept;
  o.top_ids = c.top_ids;
  o.top_logprobs = c.top_logprobs;
  return o;
}

lmsample::ExecConfig to_cpp(const lms_exec* c) {
  lmsample::ExecConfig e;
  if (c) {
    e.backend = static_cast<lmsample::Backend>(c->backend);
    e.cpu_threads = c->cpu_threads;
    e.stream = c->stream;
    e.gpu_keys = static_cast<lmsample::GpuKeys>(c->gpu_keys);
  }
  return e;
}

// The fields a verification request shares with a sampling request: its target's parameters,
// bitmask, bias and histories.
template <typename R>
void take_shared(const lmsample::Request& t, R& r) {
  r.params = t.params;
  r.allowed_mask = t.allowed_mask;
  r.mask_row_words = t.mask_row_words;
  r.logit_bias = t.logit_bias;
  r.prompt_tokens = t.prompt_tokens;
  r.output_tokens = t.output_tokens;
}

lmsample::ChainRequest to_cpp(const lms_chain_request& c) {
  const lmsample::Request t = to_cpp(c.target);
  lmsample::ChainRequest r;
  r.target = t.logits;
  r.row_offsets = c.row_offsets;
  r.requests = c.requests;
  r.draft_tokens = c.draft_tokens;
  r.draft_kind = static_cast<lmsample::DraftKind>(c.draft_kind);
  r.draft = lmsample::Logits{c.draft, static_cast<lmsample::DType>(c.draft_dtype),
                             t.logits.batch - c.requests, t.logits.vocab, c.draft_row_stride};
  r.max_drafts = c.max_drafts;
  take_shared(t, r);
  return r;
}

lmsample::TreeRequest to_cpp(const lms_tree_request& c) {
  const lmsample::Request t = to_cpp(c.target);
  lmsample::TreeRequest r;
  r.target = t.logits;
  r.node_offsets = c.node_offsets;
  r.requests = c.requests;
  r.parents = c.parents;
  r.tokens = c.tokens;
  r.max_depth = c.max_depth;
  take_shared(t, r);
  return r;
}

int fail(int code, std::string msg) {
  g_last_error = std::move(msg);
  return code;
}

int from_status(const lmsample::Status& s) {
  if (s.ok()) {
    g_last_error.clear();
    return LMS_OK;
  }
  return fail(static_cast<int>(s.code), s.message);
}

// Runs f() at the boundary: its Status as an LMS_* code, exceptions caught.
template <typename F>
int guarded(const char* name, F f) {
  try {
    return from_status(f());
  } catch (const std::exception& e) {
    return fail(LMS_INTERNAL_ERROR, std::string(name) + ": " + e.what());
  } catch (...) {
    return fail(LMS_INTERNAL_ERROR, std::string(name) + ": unknown exception");
  }
}

// A workspace-size call of the C API: size(C++ request, config) into *bytes.
template <typename CReq, typename Size>
int size_of(const char* name, const CReq* req, const lms_exec* exec, size_t* bytes, Size size) {
  if (!req || !bytes)
    return fail(LMS_INVALID_ARGUMENT, std::string(name) + ": req and bytes must not be null");
  return guarded(name, [&] {
    *bytes = size(to_cpp(*req), to_cpp(exec));
    return lmsample::Status::Ok();
  });
}

}  // namespace

extern "C" {

void lms_request_init(lms_request* req) {
  if (!req) return;
  *req = lms_request{};
  req->defaults = to_c(lmsample::RowDefaults{});
}
void lms_outputs_init(lms_outputs* out) {
  if (out) *out = lms_outputs{};
}
void lms_exec_init(lms_exec* exec) {
  if (!exec) return;
  *exec = lms_exec{};
  exec->backend = LMS_BACKEND_CPU;
}

int lms_workspace_size(const lms_request* req, const lms_exec* exec, size_t* bytes) {
  if (!req || !bytes)
    return fail(LMS_INVALID_ARGUMENT, "lms_workspace_size: req and bytes must not be null");
  try {
    *bytes = lmsample::workspace_size(to_cpp(*req), to_cpp(exec));
    g_last_error.clear();
    return LMS_OK;
  } catch (const std::exception& e) {
    return fail(LMS_INTERNAL_ERROR, std::string("lms_workspace_size: ") + e.what());
  } catch (...) {
    return fail(LMS_INTERNAL_ERROR, "lms_workspace_size: unknown exception");
  }
}

int lms_sample(const lms_request* req, const lms_outputs* out, void* workspace,
               size_t workspace_bytes, const lms_exec* exec) {
  if (!req || !out) return fail(LMS_INVALID_ARGUMENT, "lms_sample: req and out must not be null");
  try {
    return from_status(
        lmsample::sample(to_cpp(*req), to_cpp(*out), workspace, workspace_bytes, to_cpp(exec)));
  } catch (const std::exception& e) {
    return fail(LMS_INTERNAL_ERROR, std::string("lms_sample: ") + e.what());
  } catch (...) {
    return fail(LMS_INTERNAL_ERROR, "lms_sample: unknown exception");
  }
}

void lms_chain_request_init(lms_chain_request* req) {
  if (!req) return;
  *req = lms_chain_request{};
  lms_request_init(&req->target);
}
void lms_tree_request_init(lms_tree_request* req) {
  if (!req) return;
  *req = lms_tree_request{};
  lms_request_init(&req->target);
}

int lms_verify_chain_workspace_size(const lms_chain_request* req, const lms_exec* exec,
                                    size_t* bytes) {
  return size_of(
      "lms_verify_chain_workspace_size", req, exec, bytes,
      [](const auto& r, const auto& e) { return lmsample::verify_chain_workspace_size(r, e); });
}
int lms_verify_chain(const lms_chain_request* req, const lms_chain_outputs* out, void* workspace,
                     size_t workspace_bytes, const lms_exec* exec) {
  if (!req || !out)
    return fail(LMS_INVALID_ARGUMENT, "lms_verify_chain: req and out must not be null");
  return guarded("lms_verify_chain", [&] {
    return lmsample::verify_chain(
        to_cpp(*req),
        lmsample::ChainOutputs{out->accepted, out->tokens, out->status, out->logprobs}, workspace,
        workspace_bytes, to_cpp(exec));
  });
}
int lms_verify_tree_workspace_size(const lms_tree_request* req, const lms_exec* exec,
                                   size_t* bytes) {
  return size_of(
      "lms_verify_tree_workspace_size", req, exec, bytes,
      [](const auto& r, const auto& e) { return lmsample::verify_tree_workspace_size(r, e); });
}
int lms_verify_tree(const lms_tree_request* req, const lms_tree_outputs* out, void* workspace,
                    size_t workspace_bytes, const lms_exec* exec) {
  if (!req || !out)
    return fail(LMS_INVALID_ARGUMENT, "lms_verify_tree: req and out must not be null");
  return guarded("lms_verify_tree", [&] {
    return lmsample::verify_tree(
        to_cpp(*req),
        lmsample::TreeOutputs{out->accepted, out->path, out->tokens, out->status, out->logprobs},
        workspace, workspace_bytes, to_cpp(exec));
  });
}

const char* lms_last_error(void) { return g_last_error.c_str(); }
const char* lms_row_status_name(int32_t status) { return lmsample::row_status_name(status); }
int lms_backend_available(int32_t backend) {
  return lmsample::backend_available(static_cast<lmsample::Backend>(backend)) ? 1 : 0;
}
const char* lms_version(void) { return lmsample::version(); }
int lms_contract_version(void) { return lmsample::contract_version(); }

}  // extern "C"
