// See exec.hpp.
#include "exec.hpp"

#include <algorithm>
#include <new>
#include <thread>
#include <vector>

#if defined(LMSAMPLE_CLI_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace lmsample::tool {

bool parse_backend(const std::string& text, Backend* out) {
  if (text == "auto")
    *out = Backend::kAuto;
  else if (text == "cpu")
    *out = Backend::kCpu;
  else if (text == "cuda")
    *out = Backend::kCuda;
  else if (text == "hip")
    *out = Backend::kHip;
  else
    return false;
  return true;
}

const char* backend_name(Backend b) {
  switch (b) {
    case Backend::kAuto:
      return "auto";
    case Backend::kCpu:
      return "cpu";
    case Backend::kCuda:
      return "cuda";
    case Backend::kHip:
      return "hip";
  }
  return "?";
}

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

#if defined(LMSAMPLE_CLI_CUDA)
namespace {

size_t logits_elem_bytes(DType t) { return t == DType::kFloat32 ? 4 : 2; }

// Number of elements sample() may read from each input array of `req` (0 when absent).
struct Sizes {
  size_t logits = 0, rows = 0, mask = 0, top = 0;
  size_t entries(const SparseRows& s) const {
    if (!s.offsets || rows == 0) return 0;
    return s.offsets[rows] > 0 ? static_cast<size_t>(s.offsets[rows]) : 0;
  }
};
Sizes sizes_of(const Request& req) {
  Sizes z;
  const int64_t b = req.logits.batch, v = req.logits.vocab;
  if (b <= 0 || v <= 0) return z;
  z.rows = static_cast<size_t>(b);
  const int64_t stride = req.logits.row_stride ? req.logits.row_stride : v;
  z.logits = static_cast<size_t>((b - 1) * stride + v);
  const int64_t words = req.mask_row_words ? req.mask_row_words : (v + 31) / 32;
  z.mask = static_cast<size_t>(b * words);
  z.top = req.top_logprobs > 0 ? static_cast<size_t>(b) * static_cast<size_t>(req.top_logprobs) : 0;
  return z;
}

}  // namespace

struct Executor::Device {
  std::vector<void*> inputs;  // freed on the next prepare()
  std::vector<void*> outputs;
  struct Copy {
    void* host;
    const void* dev;
    size_t bytes;
  };
  std::vector<Copy> back;
  void* workspace = nullptr;
  size_t workspace_capacity = 0;

  ~Device() {
    release();
    if (workspace) cudaFree(workspace);
  }
  void release() {
    for (void* p : inputs) cudaFree(p);
    for (void* p : outputs) cudaFree(p);
    inputs.clear();
    outputs.clear();
    back.clear();
  }
  static Status error(const char* what, cudaError_t e) {
    return Status{Code::kBackendError, std::string(what) + ": " + cudaGetErrorString(e)};
  }
  template <class T>
  Status upload(const T* host, size_t n, const T** dev) {
    *dev = nullptr;
    if (!host) return Status::Ok();
    void* p = nullptr;
    const size_t bytes = std::max<size_t>(n, 1) * sizeof(T);
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) return error("cudaMalloc", e);
    inputs.push_back(p);
    if (n) {
      e = cudaMemcpy(p, host, n * sizeof(T), cudaMemcpyHostToDevice);
      if (e != cudaSuccess) return error("cudaMemcpy to the device", e);
    }
    *dev = static_cast<const T*>(p);
    return Status::Ok();
  }
  template <class T>
  Status output(T* host, size_t n, T** dev) {
    *dev = nullptr;
    if (!host) return Status::Ok();
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T));
    if (e != cudaSuccess) return error("cudaMalloc", e);
    outputs.push_back(p);
    *dev = static_cast<T*>(p);
    if (n) back.push_back(Copy{host, p, n * sizeof(T)});
    return Status::Ok();
  }
  Status sparse(const SparseRows& h, size_t rows, size_t entries, SparseRows* d) {
    *d = SparseRows{};
    if (!h.offsets) return Status::Ok();
    Status s = upload(h.offsets, rows + 1, &d->offsets);
    if (s.ok()) s = upload(h.tokens, entries, &d->tokens);
    if (s.ok()) s = upload(h.values, entries, &d->values);
    return s;
  }
};
#else
struct Executor::Device {};
#endif

std::unique_ptr<Executor> Executor::create(Backend requested, int cpu_threads, Status* status) {
  *status = Status::Ok();
#if defined(LMSAMPLE_CLI_CUDA)
  const Backend b = resolve_backend(requested);
#else
  // Without CUDA support in the tool, auto means the CPU even if the library has a GPU backend.
  const Backend b = requested == Backend::kAuto ? Backend::kCpu : requested;
#endif
  if (b == Backend::kCuda) {
#if defined(LMSAMPLE_CLI_CUDA)
    if (!backend_available(Backend::kCuda)) {
      *status = Status{Code::kUnsupported,
                       "the CUDA backend is not usable here (lmsample was built without it, or no "
                       "CUDA device is present)"};
      return nullptr;
    }
#else
    *status = Status{Code::kUnsupported,
                     "the CUDA backend is not available: this lmsample tool was built without "
                     "CUDA support"};
    return nullptr;
#endif
  } else if (b == Backend::kHip) {
    *status = Status{Code::kUnsupported,
                     "the tool drives CUDA devices only: use the library's Backend::kHip directly "
                     "(the HIP backend is built but has not been run on an AMD GPU yet)"};
    return nullptr;
  } else if (b != Backend::kCpu) {
    *status = Status{Code::kInvalidArgument, "unknown backend"};
    return nullptr;
  }
  std::unique_ptr<Executor> e(new Executor());
  e->cfg_.backend = b;
  e->cfg_.cpu_threads = cpu_threads;
  e->dev_ = std::make_unique<Device>();
  return e;
}

Executor::~Executor() {
  if (workspace_) ::operator delete(workspace_, std::align_val_t(256));
}

std::string Executor::describe() const {
  if (cfg_.backend == Backend::kCuda) {
#if defined(LMSAMPLE_CLI_CUDA)
    int dev = 0;
    cudaDeviceProp prop{};
    if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
      return std::string("cuda (device ") + std::to_string(dev) + ": " + prop.name + ")";
#endif
    return "cuda";
  }
  const int n = cfg_.cpu_threads > 0 ? cfg_.cpu_threads : hardware_threads();
  return "cpu (" + std::to_string(n) + (n == 1 ? " thread" : " threads") +
         (cfg_.cpu_threads > 0 ? "" : ", all hardware threads") + ")";
}

Status Executor::prepare(const Request& req, const Outputs& out) {
  host_req_ = req;
  host_out_ = out;
  req_ = req;
  out_ = out;
  if (cfg_.backend == Backend::kCpu) {
    const size_t need = workspace_size(req, cfg_);
    if (need > workspace_capacity_) {
      if (workspace_) ::operator delete(workspace_, std::align_val_t(256));
      workspace_ = nullptr;
      workspace_capacity_ = 0;
      workspace_ = ::operator new(need, std::align_val_t(256), std::nothrow);
      if (!workspace_)
        return Status{Code::kBackendError,
                      "cannot allocate " + std::to_string(need) + " bytes of workspace"};
      workspace_capacity_ = need;
    }
    workspace_bytes_ = need;
    return Status::Ok();
  }
#if defined(LMSAMPLE_CLI_CUDA)
  Device& d = *dev_;
  d.release();
  const Sizes z = sizes_of(req);
  Status s = Status::Ok();
  const void* logits = nullptr;
  if (req.logits.data) {
    void* p = nullptr;
    const size_t bytes = std::max<size_t>(z.logits, 1) * logits_elem_bytes(req.logits.dtype);
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) return Device::error("cudaMalloc", e);
    d.inputs.push_back(p);
    if (z.logits) {
      e = cudaMemcpy(p, req.logits.data, z.logits * logits_elem_bytes(req.logits.dtype),
                     cudaMemcpyHostToDevice);
      if (e != cudaSuccess) return Device::error("cudaMemcpy to the device", e);
    }
    logits = p;
  }
  req_.logits.data = logits;
  const RowParams& hp = req.params;
  RowParams& dp = req_.params;
  if (s.ok()) s = d.upload(hp.temperature, z.rows, &dp.temperature);
  if (s.ok()) s = d.upload(hp.top_k, z.rows, &dp.top_k);
  if (s.ok()) s = d.upload(hp.top_p, z.rows, &dp.top_p);
  if (s.ok()) s = d.upload(hp.min_p, z.rows, &dp.min_p);
  if (s.ok()) s = d.upload(hp.repetition_penalty, z.rows, &dp.repetition_penalty);
  if (s.ok()) s = d.upload(hp.frequency_penalty, z.rows, &dp.frequency_penalty);
  if (s.ok()) s = d.upload(hp.presence_penalty, z.rows, &dp.presence_penalty);
  if (s.ok()) s = d.upload(hp.seed, z.rows, &dp.seed);
  if (s.ok()) s = d.upload(hp.step, z.rows, &dp.step);
  if (s.ok()) s = d.upload(hp.substream, z.rows, &dp.substream);
  if (s.ok()) s = d.upload(req.allowed_mask, z.mask, &req_.allowed_mask);
  if (s.ok()) s = d.sparse(req.logit_bias, z.rows, z.entries(req.logit_bias), &req_.logit_bias);
  if (s.ok())
    s = d.sparse(req.prompt_tokens, z.rows, z.entries(req.prompt_tokens), &req_.prompt_tokens);
  if (s.ok())
    s = d.sparse(req.output_tokens, z.rows, z.entries(req.output_tokens), &req_.output_tokens);
  if (s.ok()) s = d.output(out.tokens, z.rows, &out_.tokens);
  if (s.ok()) s = d.output(out.status, z.rows, &out_.status);
  if (s.ok()) s = d.output(out.logprob, z.rows, &out_.logprob);
  if (s.ok()) s = d.output(out.kept, z.rows, &out_.kept);
  if (s.ok()) s = d.output(out.top_ids, z.top, &out_.top_ids);
  if (s.ok()) s = d.output(out.top_logprobs, z.top, &out_.top_logprobs);
  if (!s.ok()) return s;
  const size_t need = workspace_size(req_, cfg_);
  if (need > d.workspace_capacity) {
    if (d.workspace) cudaFree(d.workspace);
    d.workspace = nullptr;
    d.workspace_capacity = 0;
    const cudaError_t e = cudaMalloc(&d.workspace, std::max<size_t>(need, 1));
    if (e != cudaSuccess) return Device::error("cudaMalloc (workspace)", e);
    d.workspace_capacity = need;
  }
  workspace_bytes_ = need;
  return Status::Ok();
#else
  return Status{Code::kUnsupported, "CUDA support is not built into this tool"};
#endif
}

Status Executor::launch() {
  if (cfg_.backend == Backend::kCpu) return sample(req_, out_, workspace_, workspace_bytes_, cfg_);
#if defined(LMSAMPLE_CLI_CUDA)
  Status s = sample(req_, out_, dev_->workspace, workspace_bytes_, cfg_);
  const cudaError_t e = cudaStreamSynchronize(static_cast<cudaStream_t>(cfg_.stream));
  if (e != cudaSuccess && (s.ok() || s.code == Code::kInvalidRowParameter))
    return Device::error("the sampling kernel failed", e);
  return s;
#else
  return Status{Code::kUnsupported, "CUDA support is not built into this tool"};
#endif
}

Status Executor::fetch() {
  if (cfg_.backend == Backend::kCpu) return Status::Ok();
#if defined(LMSAMPLE_CLI_CUDA)
  for (const auto& c : dev_->back) {
    const cudaError_t e = cudaMemcpy(c.host, c.dev, c.bytes, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) return Device::error("cudaMemcpy from the device", e);
  }
#endif
  return Status::Ok();
}

Status Executor::run(const Request& req, const Outputs& out) {
  Status s = prepare(req, out);
  if (!s.ok()) return s;
  s = launch();
  if (s.ok() || s.code == Code::kInvalidRowParameter) {
    Status f = fetch();
    if (!f.ok()) return f;
  }
  return s;
}

}  // namespace lmsample::tool
