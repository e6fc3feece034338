// lmsample._lmsample: the Python extension. A thin binding (FlashInfer's rule: check inputs,
// forward): arrays of any framework come in through DLPack (nanobind's ndarray), Python scalars
// go to RowParams::defaults, and one call of lmsample::sample() runs. The Python package
// (python/lmsample/) allocates outputs and workspaces through the caller's framework.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "lmsample/lmsample.hpp"

#if defined(LMSAMPLE_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using lmsample::Backend;
using lmsample::Code;
using lmsample::DType;

constexpr int kCpu = nb::device::cpu::value;
constexpr int kCuda = nb::device::cuda::value;
constexpr int kRocm = nb::device::rocm::value;

using In = nb::ndarray<nb::ro>;
using Out = nb::ndarray<>;

[[noreturn]] void fail(const std::string& msg) { throw nb::value_error(msg.c_str()); }

nb::dlpack::dtype bf16_dtype() {
  return nb::dlpack::dtype{static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat), 16, 1};
}

std::string dtype_name(nb::dlpack::dtype d) {
  const char* code = "?";
  switch (static_cast<nb::dlpack::dtype_code>(d.code)) {
    case nb::dlpack::dtype_code::Int:
      code = "int";
      break;
    case nb::dlpack::dtype_code::UInt:
      code = "uint";
      break;
    case nb::dlpack::dtype_code::Float:
      code = "float";
      break;
    case nb::dlpack::dtype_code::Bfloat:
      code = "bfloat";
      break;
    case nb::dlpack::dtype_code::Bool:
      code = "bool";
      break;
    default:
      break;
  }
  return std::string(code) + std::to_string(d.bits);
}

std::string device_name(int type, int id) {
  const char* t = type == kCpu ? "cpu" : type == kCuda ? "cuda" : type == kRocm ? "rocm" : "other";
  return type == kCpu ? std::string(t) : std::string(t) + ":" + std::to_string(id);
}

// The device every array of a call must be on: the logits'.
struct Where {
  int type = kCpu;
  int id = 0;
};

template <class A>
void check_device(const A& a, const Where& w, const char* name) {
  if (a.device_type() != w.type || (w.type != kCpu && a.device_id() != w.id))
    fail(std::string(name) + " is on " + device_name(a.device_type(), a.device_id()) +
         " but the logits are on " + device_name(w.type, w.id));
}

bool is_array(nb::handle h) {
  return nb::hasattr(h, "__dlpack__") || PyObject_CheckBuffer(h.ptr()) ||
         nb::hasattr(h, "__cuda_array_interface__");
}

// A 1-D array of `b` elements of one of the dtypes given (contiguous, or any stride for b <= 1).
template <class A>
A vector_of(nb::handle h, const char* name, int64_t b, const Where& w,
            std::initializer_list<nb::dlpack::dtype> dtypes, const char* want) {
  A a;
  if (!nb::try_cast<A>(h, a, false))
    fail(std::string(name) + ": expected a Python scalar, None or a 1-D array (DLPack), got " +
         nb::type_name(h.type()).c_str());
  bool dtype_ok = false;
  for (const auto& d : dtypes) dtype_ok = dtype_ok || a.dtype() == d;
  if (!dtype_ok)
    fail(std::string(name) + " has dtype " + dtype_name(a.dtype()) + "; expected " + want);
  if (a.ndim() != 1 || static_cast<int64_t>(a.shape(0)) != b)
    fail(std::string(name) + " must have shape (" + std::to_string(b) + ",) (one value per row)" +
         ", got " + std::to_string(a.ndim()) + "-D" +
         (a.ndim() >= 1 ? " of length " + std::to_string(a.shape(0)) : std::string()));
  if (b > 1 && a.stride(0) != 1)
    fail(std::string(name) + " must be contiguous (stride 1), got stride " +
         std::to_string(a.stride(0)));
  check_device(a, w, name);
  return a;
}

// Private fast path of the Python package (_api.py's torch path): a 1-tuple (address,) is an
// array the package has already checked (dtype, length, contiguity, device) with the tensor's
// own accessors, which costs far less than a DLPack export.
bool raw_address(nb::handle h, const void** ptr) {
  if (!PyTuple_Check(h.ptr()) || PyTuple_GET_SIZE(h.ptr()) != 1) return false;
  *ptr = reinterpret_cast<const void*>(
      static_cast<uintptr_t>(PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(h.ptr(), 0))));
  return true;
}

double float_scalar(nb::handle h, const char* name) {
  double v = 0;
  if (PyBool_Check(h.ptr()) || !nb::try_cast<double>(h, v))
    fail(std::string(name) + ": expected a number or a 1-D array, got " +
         nb::type_name(h.type()).c_str());
  return v;
}

bool is_scalar(nb::handle h) {
  return PyFloat_Check(h.ptr()) || PyLong_Check(h.ptr()) ||
         (!is_array(h) && PyNumber_Check(h.ptr()));
}

// A float parameter: scalar -> defaults, array -> pointer.
void float_param(nb::handle h, const char* name, int64_t b, const Where& w, const float** ptr,
                 float* dflt) {
  if (h.is_none()) return;
  if (const void* raw = nullptr; raw_address(h, &raw)) {
    *ptr = static_cast<const float*>(raw);
    return;
  }
  if (is_scalar(h)) {
    *dflt = static_cast<float>(float_scalar(h, name));
    return;
  }
  *ptr = static_cast<const float*>(
      vector_of<In>(h, name, b, w, {nb::dtype<float>()}, "float32").data());
}

int64_t int_scalar(nb::handle h, const char* name) {
  if (PyFloat_Check(h.ptr()) || PyBool_Check(h.ptr()))
    fail(std::string(name) + ": expected an integer, got " + nb::type_name(h.type()).c_str());
  int64_t v = 0;
  if (!nb::try_cast<int64_t>(h, v))
    fail(std::string(name) + ": expected an integer in [-2^63, 2^63) or a 1-D array, got " +
         nb::str(h).c_str());
  return v;
}

void top_k_param(nb::handle h, int64_t b, const Where& w, const int32_t** ptr, int32_t* dflt) {
  if (h.is_none()) return;
  if (const void* raw = nullptr; raw_address(h, &raw)) {
    *ptr = static_cast<const int32_t*>(raw);
    return;
  }
  if (is_scalar(h)) {
    const int64_t v = int_scalar(h, "top_k");
    if (v < INT32_MIN || v > INT32_MAX)
      fail("top_k = " + std::to_string(v) + " does not fit in int32");
    *dflt = static_cast<int32_t>(v);
    return;
  }
  *ptr = static_cast<const int32_t*>(
      vector_of<In>(h, "top_k", b, w, {nb::dtype<int32_t>()}, "int32").data());
}

// seed / step: 64-bit patterns (int64 arrays are read as their two's-complement bits)
void u64_param(nb::handle h, const char* name, int64_t b, const Where& w, const uint64_t** ptr,
               uint64_t* dflt) {
  if (h.is_none()) return;
  if (const void* raw = nullptr; raw_address(h, &raw)) {
    *ptr = static_cast<const uint64_t*>(raw);
    return;
  }
  if (is_scalar(h)) {
    if (PyFloat_Check(h.ptr()) || PyBool_Check(h.ptr()))
      fail(std::string(name) + ": expected an integer, got " + nb::type_name(h.type()).c_str());
    uint64_t u = 0;
    int64_t s = 0;
    if (nb::try_cast<uint64_t>(h, u)) {
      *dflt = u;
    } else if (nb::try_cast<int64_t>(h, s) && s >= 0) {
      *dflt = static_cast<uint64_t>(s);
    } else {
      fail(std::string(name) + " = " + nb::str(h).c_str() + " is outside [0, 2^64)");
    }
    return;
  }
  *ptr = static_cast<const uint64_t*>(
      vector_of<In>(h, name, b, w, {nb::dtype<uint64_t>(), nb::dtype<int64_t>()}, "int64 or uint64")
          .data());
}

void u32_param(nb::handle h, const char* name, int64_t b, const Where& w, const uint32_t** ptr,
               uint32_t* dflt) {
  if (h.is_none()) return;
  if (const void* raw = nullptr; raw_address(h, &raw)) {
    *ptr = static_cast<const uint32_t*>(raw);
    return;
  }
  if (is_scalar(h)) {
    const int64_t v = int_scalar(h, name);
    if (v < 0 || v > UINT32_MAX)
      fail(std::string(name) + " = " + std::to_string(v) + " is outside [0, 2^32)");
    *dflt = static_cast<uint32_t>(v);
    return;
  }
  *ptr = static_cast<const uint32_t*>(
      vector_of<In>(h, name, b, w, {nb::dtype<uint32_t>(), nb::dtype<int32_t>()}, "int32 or uint32")
          .data());
}

// CSR rows: offsets int64 [b + 1], tokens int32 [n], values float32 [n] (bias only).
lmsample::SparseRows sparse(nb::handle off, nb::handle tok, nb::handle val, const char* name,
                            int64_t b, const Where& w) {
  lmsample::SparseRows s;
  if (off.is_none()) return s;
  const std::string n(name);
  In o = vector_of<In>(off, (n + " offsets").c_str(), b + 1, w, {nb::dtype<int64_t>()}, "int64");
  In t;
  if (!nb::try_cast<In>(tok, t, false)) fail(n + " tokens: expected a 1-D int32 array");
  if (t.dtype() != nb::dtype<int32_t>())
    fail(n + " tokens has dtype " + dtype_name(t.dtype()) + "; expected int32");
  if (t.ndim() != 1 || (t.shape(0) > 1 && t.stride(0) != 1))
    fail(n + " tokens must be a contiguous 1-D array");
  check_device(t, w, (n + " tokens").c_str());
  s.offsets = static_cast<const int64_t*>(o.data());
  s.tokens = static_cast<const int32_t*>(t.data());
  if (!val.is_none()) {
    In v;
    if (!nb::try_cast<In>(val, v, false)) fail(n + " values: expected a 1-D float32 array");
    if (v.dtype() != nb::dtype<float>())
      fail(n + " values has dtype " + dtype_name(v.dtype()) + "; expected float32");
    if (v.ndim() != 1 || v.shape(0) != t.shape(0) || (v.shape(0) > 1 && v.stride(0) != 1))
      fail(n + " values must be a contiguous 1-D array as long as its tokens (" +
           std::to_string(t.shape(0)) + ")");
    check_device(v, w, (n + " values").c_str());
    s.values = static_cast<const float*>(v.data());
  }
  // On the CPU the library checks that the offsets do not decrease; it cannot check that they
  // stay inside `tokens` (it is not told its length): check that here where the host can read
  // them.
  if (w.type == kCpu && b > 0) {
    const int64_t* p = s.offsets;
    if (p[0] < 0 || p[b] > static_cast<int64_t>(t.shape(0)))
      fail(n + " offsets run outside its " + std::to_string(t.shape(0)) + " tokens (offsets[0] = " +
           std::to_string(p[0]) + ", offsets[B] = " + std::to_string(p[b]) + ")");
  }
  return s;
}

template <class T>
T* out_vec(nb::handle h, const char* name, int64_t b, const Where& w, nb::dlpack::dtype d,
           const char* want, int64_t cols = -1) {
  if (h.is_none()) return nullptr;
  if (PyLong_Check(h.ptr())) {
    // private fast path of lmsample.Sampler: the address of a buffer it allocated itself on the
    // logits' device, of the right dtype and at least this size
    return reinterpret_cast<T*>(static_cast<uintptr_t>(PyLong_AsUnsignedLongLong(h.ptr())));
  }
  Out a;
  if (!nb::try_cast<Out>(h, a, false))
    fail(std::string(name) + ": expected a writable array (DLPack), got " +
         nb::type_name(h.type()).c_str());
  if (a.dtype() != d)
    fail(std::string(name) + " has dtype " + dtype_name(a.dtype()) + "; expected " + want);
  const bool shape_ok = cols < 0 ? a.ndim() == 1 && static_cast<int64_t>(a.shape(0)) == b
                                 : a.ndim() == 2 && static_cast<int64_t>(a.shape(0)) == b &&
                                       static_cast<int64_t>(a.shape(1)) == cols;
  if (!shape_ok)
    fail(std::string(name) + " must have shape (" + std::to_string(b) +
         (cols < 0 ? std::string(",)") : ", " + std::to_string(cols) + ")"));
  const bool contiguous =
      cols < 0 ? (b <= 1 || a.stride(0) == 1)
               : ((b <= 1 || a.stride(0) == cols) && (cols <= 1 || a.stride(1) == 1));
  if (!contiguous) fail(std::string(name) + " must be contiguous");
  check_device(a, w, name);
  return static_cast<T*>(a.data());
}

#if defined(LMSAMPLE_WITH_CUDA)
// Makes the logits' device current for the call (and restores the caller's).
struct DeviceGuard {
  int old = -1;
  explicit DeviceGuard(const Where& w) {
    if (w.type != kCuda) return;
    if (cudaGetDevice(&old) == cudaSuccess && old != w.id) {
      if (cudaSetDevice(w.id) != cudaSuccess)
        fail("cannot make cuda:" + std::to_string(w.id) + " the current device");
    } else {
      old = -1;
    }
  }
  ~DeviceGuard() {
    if (old >= 0) cudaSetDevice(old);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};
#endif

Backend backend_for(const Where& w, int asked) {
  const auto b = static_cast<Backend>(asked);
  if (w.type == kCpu) {
    if (b == Backend::kAuto || b == Backend::kCpu) return Backend::kCpu;
    fail(
        "backend is not the cpu but the logits are in host memory; move them to the device or "
        "use backend='cpu'");
  }
  if (w.type == kCuda) {
    if (b == Backend::kAuto || b == Backend::kCuda) {
      // asked once per process: a device count is not free, and calls are on the hot path
      static const bool cuda = lmsample::backend_available(Backend::kCuda);
      if (!cuda)
        fail(std::string("the logits are on ") + device_name(w.type, w.id) +
             " but this lmsample has no usable CUDA backend (built without nvcc, or no device)");
      return Backend::kCuda;
    }
    fail("backend = 'cpu' but the logits are on " + device_name(w.type, w.id) +
         "; move them to the host first");
  }
  if (w.type == kRocm) {
    if (b == Backend::kAuto || b == Backend::kHip) {
      if (!lmsample::backend_available(Backend::kHip))
        fail("the logits are on a ROCm device but this lmsample has no usable HIP backend");
      return Backend::kHip;
    }
    fail("the logits are on a ROCm device; use backend='auto' or 'hip'");
  }
  fail("the logits are on an unsupported device (" + device_name(w.type, w.id) + ")");
}

struct Call {
  lmsample::Request req;
  lmsample::Outputs out;
  lmsample::ExecConfig cfg;
  Where where;
};

// Reads the logits [B, V] (fp32 / bf16 / fp16, unit element stride, any row stride).
void read_logits(nb::handle h, Call& c) {
  if (PyTuple_Check(h.ptr())) {
    // (address, dtype code, batch, vocab, row stride, device type, device id): the package's
    // torch fast path, read off the tensor's own accessors and checked there
    nb::tuple t = nb::borrow<nb::tuple>(h);
    if (t.size() != 7) fail("logits: internal: a raw logits tuple has 7 entries");
    c.req.logits.data = reinterpret_cast<const void*>(nb::cast<uintptr_t>(t[0]));
    c.req.logits.dtype = static_cast<DType>(nb::cast<int>(t[1]));
    c.req.logits.batch = nb::cast<int64_t>(t[2]);
    c.req.logits.vocab = nb::cast<int64_t>(t[3]);
    c.req.logits.row_stride = c.req.logits.batch > 1 ? nb::cast<int64_t>(t[4]) : 0;
    c.where.type = nb::cast<int>(t[5]);
    c.where.id = nb::cast<int>(t[6]);
    return;
  }
  In l;
  if (!nb::try_cast<In>(h, l, false))
    fail(std::string("logits: expected a 2-D array or tensor (DLPack), got ") +
         nb::type_name(h.type()).c_str());
  if (l.ndim() != 2)
    fail("logits must be 2-D [batch, vocab], got " + std::to_string(l.ndim()) + "-D");
  const nb::dlpack::dtype d = l.dtype();
  if (d == nb::dtype<float>())
    c.req.logits.dtype = DType::kFloat32;
  else if (d == bf16_dtype())
    c.req.logits.dtype = DType::kBFloat16;
  else if (d == nb::dlpack::dtype{static_cast<uint8_t>(nb::dlpack::dtype_code::Float), 16, 1})
    c.req.logits.dtype = DType::kFloat16;
  else
    fail("logits have dtype " + dtype_name(d) + "; expected float32, bfloat16 or float16");
  const int64_t b = static_cast<int64_t>(l.shape(0)), v = static_cast<int64_t>(l.shape(1));
  if (b > 0 && v > 1 && l.stride(1) != 1)
    fail("logits must have unit stride along the vocabulary (got " + std::to_string(l.stride(1)) +
         "); a row stride of any size is fine");
  if (b > 1 && l.stride(0) < v)
    fail("logits' row stride " + std::to_string(l.stride(0)) + " is smaller than the vocabulary (" +
         std::to_string(v) + ")");
  c.where.type = l.device_type();
  c.where.id = l.device_id();
  c.req.logits.data = l.data();
  c.req.logits.batch = b;
  c.req.logits.vocab = v;
  c.req.logits.row_stride = b > 1 ? static_cast<int64_t>(l.stride(0)) : 0;
}

nb::tuple sample(nb::handle logits, nb::handle tokens, nb::handle status, nb::handle logprob,
                 nb::handle kept, nb::handle top_ids, nb::handle top_lp, nb::handle temperature,
                 nb::handle top_k, nb::handle top_p, nb::handle min_p, nb::handle repetition,
                 nb::handle frequency, nb::handle presence, nb::handle seed, nb::handle step,
                 nb::handle substream, nb::handle mask, nb::handle bias_off, nb::handle bias_tok,
                 nb::handle bias_val, nb::handle prompt_off, nb::handle prompt_tok,
                 nb::handle output_off, nb::handle output_tok, int n_top, nb::handle workspace,
                 size_t workspace_size, uintptr_t stream, int backend, int gpu_keys,
                 int cpu_threads) {
  Call c;
  read_logits(logits, c);
  const int64_t b = c.req.logits.batch, v = c.req.logits.vocab;
  const Where& w = c.where;
  lmsample::RowParams& p = c.req.params;
  lmsample::RowDefaults& d = p.defaults;
  float_param(temperature, "temperature", b, w, &p.temperature, &d.temperature);
  top_k_param(top_k, b, w, &p.top_k, &d.top_k);
  float_param(top_p, "top_p", b, w, &p.top_p, &d.top_p);
  float_param(min_p, "min_p", b, w, &p.min_p, &d.min_p);
  float_param(repetition, "repetition_penalty", b, w, &p.repetition_penalty, &d.repetition_penalty);
  float_param(frequency, "frequency_penalty", b, w, &p.frequency_penalty, &d.frequency_penalty);
  float_param(presence, "presence_penalty", b, w, &p.presence_penalty, &d.presence_penalty);
  u64_param(seed, "seed", b, w, &p.seed, &d.seed);
  u64_param(step, "step", b, w, &p.step, &d.step);
  u32_param(substream, "substream", b, w, &p.substream, &d.substream);
  if (!mask.is_none()) {
    In m;
    if (!nb::try_cast<In>(mask, m, false))
      fail("allowed_mask: expected a 2-D int32 array [batch, ceil(vocab / 32)]");
    if (m.dtype() != nb::dtype<int32_t>() && m.dtype() != nb::dtype<uint32_t>())
      fail("allowed_mask has dtype " + dtype_name(m.dtype()) + "; expected int32 (xgrammar's " +
           "bitmask) or uint32");
    const int64_t words = (v + 31) / 32;
    if (m.ndim() != 2 || static_cast<int64_t>(m.shape(0)) != b ||
        static_cast<int64_t>(m.shape(1)) < words)
      fail("allowed_mask must have shape (" + std::to_string(b) + ", " + std::to_string(words) +
           ") (at least ceil(vocab / 32) words a row)");
    if (m.shape(1) > 1 && m.stride(1) != 1) fail("allowed_mask must have unit stride along a row");
    check_device(m, w, "allowed_mask");
    c.req.allowed_mask = static_cast<const uint32_t*>(m.data());
    c.req.mask_row_words = b > 1 ? static_cast<int64_t>(m.stride(0)) : 0;
    if (b > 1 && c.req.mask_row_words < words)
      fail("allowed_mask's row stride is smaller than ceil(vocab / 32)");
  }
  c.req.logit_bias = sparse(bias_off, bias_tok, bias_val, "logit_bias", b, w);
  if (c.req.logit_bias.offsets && !c.req.logit_bias.values) fail("logit_bias: values missing");
  c.req.prompt_tokens = sparse(prompt_off, prompt_tok, nb::none(), "prompt_tokens", b, w);
  c.req.output_tokens = sparse(output_off, output_tok, nb::none(), "output_tokens", b, w);
  if (n_top < 0 || n_top > lmsample::kMaxTopLogprobs)
    fail("top_logprobs = " + std::to_string(n_top) + " is outside [0, " +
         std::to_string(lmsample::kMaxTopLogprobs) + "]");
  c.req.top_logprobs = n_top;

  c.out.tokens = out_vec<int32_t>(tokens, "out tokens", b, w, nb::dtype<int32_t>(), "int32");
  c.out.status = out_vec<int32_t>(status, "out status", b, w, nb::dtype<int32_t>(), "int32");
  c.out.logprob = out_vec<float>(logprob, "out logprob", b, w, nb::dtype<float>(), "float32");
  c.out.kept = out_vec<int32_t>(kept, "out kept", b, w, nb::dtype<int32_t>(), "int32");
  if (n_top > 0) {
    c.out.top_ids =
        out_vec<int32_t>(top_ids, "out top_ids", b, w, nb::dtype<int32_t>(), "int32", n_top);
    c.out.top_logprobs =
        out_vec<float>(top_lp, "out top_logprobs", b, w, nb::dtype<float>(), "float32", n_top);
  }
  if (b > 0 && (!c.out.tokens || !c.out.status)) fail("tokens and status outputs are required");

  c.cfg.backend = backend_for(w, backend);
  if (gpu_keys < 0 || gpu_keys > 2) fail("gpu_keys must be 'auto', 'on_chip' or 'stream'");
  c.cfg.gpu_keys = static_cast<lmsample::GpuKeys>(gpu_keys);
  if (cpu_threads < 0) fail("cpu_threads must be >= 0 (0 = all hardware threads)");
  c.cfg.cpu_threads = cpu_threads;
  c.cfg.stream = reinterpret_cast<void*>(stream);

  void* ws = nullptr;
  size_t ws_bytes = 0;
  if (PyLong_Check(workspace.ptr())) {  // the Sampler's own: (address, workspace_size)
    ws =
        reinterpret_cast<void*>(static_cast<uintptr_t>(PyLong_AsUnsignedLongLong(workspace.ptr())));
    ws_bytes = workspace_size;
  } else if (!workspace.is_none()) {
    Out a;
    if (!nb::try_cast<Out>(workspace, a, false)) fail("workspace: expected a writable array");
    check_device(a, w, "workspace");
    ws = a.data();
    ws_bytes = a.nbytes();
  }
  lmsample::Status s;
  {
#if defined(LMSAMPLE_WITH_CUDA)
    DeviceGuard guard(w);
#endif
    if (c.cfg.backend == Backend::kCpu) {
      nb::gil_scoped_release unlocked;  // CPU calls run for a while; GPU calls return at once
      s = lmsample::sample(c.req, c.out, ws, ws_bytes, c.cfg);
    } else {
      s = lmsample::sample(c.req, c.out, ws, ws_bytes, c.cfg);
    }
  }
  if (s.code == Code::kWorkspaceTooSmall)  // nothing was written; the package sizes it itself
    throw std::runtime_error("lmsample: internal error: " + s.message);
  if (s.code == Code::kInvalidArgument) fail(s.message);
  if (s.code == Code::kBackendError || s.code == Code::kUnsupported)
    throw std::runtime_error(s.message);
  return nb::make_tuple(static_cast<int>(s.code), s.message, size_t{0});
}

// The per-request parameters of a verification call: 1-D arrays of B (the package makes them).
lmsample::RowParams chain_params(nb::handle temperature, nb::handle top_k, nb::handle top_p,
                                 nb::handle min_p, nb::handle seed, nb::handle step, int64_t b,
                                 const Where& w) {
  lmsample::RowParams p;
  p.temperature = static_cast<const float*>(
      vector_of<In>(temperature, "temperature", b, w, {nb::dtype<float>()}, "float32").data());
  p.top_k = static_cast<const int32_t*>(
      vector_of<In>(top_k, "top_k", b, w, {nb::dtype<int32_t>()}, "int32").data());
  p.top_p = static_cast<const float*>(
      vector_of<In>(top_p, "top_p", b, w, {nb::dtype<float>()}, "float32").data());
  p.min_p = static_cast<const float*>(
      vector_of<In>(min_p, "min_p", b, w, {nb::dtype<float>()}, "float32").data());
  p.seed = static_cast<const uint64_t*>(vector_of<In>(seed, "seed", b, w,
                                                      {nb::dtype<uint64_t>(), nb::dtype<int64_t>()},
                                                      "int64 or uint64")
                                            .data());
  p.step = static_cast<const uint64_t*>(vector_of<In>(step, "step", b, w,
                                                      {nb::dtype<uint64_t>(), nb::dtype<int64_t>()},
                                                      "int64 or uint64")
                                            .data());
  return p;
}

// A verification call's offsets: a contiguous 1-D int64 array of B + 1 entries ending at the
// target's N rows; *b gets B.
const int64_t* offsets_of(nb::handle h, const char* name, int64_t n, int64_t* b) {
  In off;
  if (!nb::try_cast<In>(h, off, false) || off.dtype() != nb::dtype<int64_t>() || off.ndim() != 1 ||
      off.shape(0) < 1 || (off.shape(0) > 1 && off.stride(0) != 1))
    fail(std::string(name) + " must be a contiguous 1-D int64 array of B + 1 entries");
  *b = static_cast<int64_t>(off.shape(0)) - 1;
  const int64_t* p = static_cast<const int64_t*>(off.data());
  if (*b > 0 && p[*b] != n)
    fail(std::string(name) + "[B] = " + std::to_string(p[*b]) + " but the target has " +
         std::to_string(n) + " rows");
  return p;
}

// Runs a verification call on the CPU with its own workspace, the GIL released.
template <typename Req, typename Out, typename Size, typename Run>
void run_verification(const Req& r, const Out& o, int cpu_threads, Size size, Run run) {
  if (cpu_threads < 0) fail("cpu_threads must be >= 0 (0 = all hardware threads)");
  lmsample::ExecConfig cfg;
  cfg.cpu_threads = cpu_threads;
  std::vector<unsigned char> ws(size(r, cfg));
  lmsample::Status s;
  {
    nb::gil_scoped_release unlocked;
    s = run(r, o, ws.data(), ws.size(), cfg);
  }
  if (s.code == Code::kInvalidArgument) fail(s.message);
  if (!s.ok()) throw std::runtime_error(s.message);
}

// Chain verification (lmsample::verify_chain) of CPU arrays: target and draft rows as logits
// are, offsets int64 [B + 1], drafts int32 [N - B], per-request parameters as 1-D arrays of B
// (the package makes them), outputs int32 accepted [B], tokens [N], status [B] and optionally
// float32 logprobs [N].
void verify_chain(nb::handle target, nb::handle offsets, nb::handle drafts, int kind,
                  nb::handle draft, nb::handle temperature, nb::handle top_k, nb::handle top_p,
                  nb::handle min_p, nb::handle seed, nb::handle step, nb::handle accepted,
                  nb::handle tokens, nb::handle status, nb::handle logprobs, int cpu_threads) {
  Call t;
  read_logits(target, t);
  const Where w = t.where;
  if (w.type != kCpu)
    fail(
        "lmsample.verify_chain takes CPU arrays in this version (the C++ and C APIs verify on a "
        "GPU): the target logits are on " +
        device_name(w.type, w.id));
  const int64_t n = t.req.logits.batch;
  int64_t b = 0;
  lmsample::ChainRequest r;
  r.target = t.req.logits;
  r.row_offsets = offsets_of(offsets, "row_offsets", n, &b);
  r.requests = b;
  r.draft_tokens = static_cast<const int32_t*>(
      vector_of<In>(drafts, "drafts", n - b, w, {nb::dtype<int32_t>()}, "int32").data());
  r.draft_kind = static_cast<lmsample::DraftKind>(kind);
  if (kind != 0) {
    Call d;
    read_logits(draft, d);
    if (d.where.type != kCpu) fail("the draft rows must be CPU arrays");
    r.draft = d.req.logits;
  }
  r.params = chain_params(temperature, top_k, top_p, min_p, seed, step, b, w);
  lmsample::ChainOutputs o;
  o.accepted = out_vec<int32_t>(accepted, "out accepted", b, w, nb::dtype<int32_t>(), "int32");
  o.tokens = out_vec<int32_t>(tokens, "out tokens", n, w, nb::dtype<int32_t>(), "int32");
  o.status = out_vec<int32_t>(status, "out status", b, w, nb::dtype<int32_t>(), "int32");
  o.logprobs = out_vec<float>(logprobs, "out logprobs", n, w, nb::dtype<float>(), "float32");
  run_verification(r, o, cpu_threads, lmsample::verify_chain_workspace_size,
                   lmsample::verify_chain);
}

// Tree verification (lmsample::verify_tree) of CPU arrays: target rows one per node, node
// offsets int64 [B + 1], parents and tokens int32 [N], per-request parameters as verify_chain's,
// outputs int32 accepted [B], path and tokens [N], status [B], optionally float32 logprobs [N].
void verify_tree(nb::handle target, nb::handle offsets, nb::handle parents, nb::handle node_tokens,
                 nb::handle temperature, nb::handle top_k, nb::handle top_p, nb::handle min_p,
                 nb::handle seed, nb::handle step, nb::handle accepted, nb::handle path,
                 nb::handle tokens, nb::handle status, nb::handle logprobs, int cpu_threads) {
  Call t;
  read_logits(target, t);
  const Where w = t.where;
  if (w.type != kCpu)
    fail(
        "lmsample.verify_tree takes CPU arrays in this version (the C++ and C APIs verify on a "
        "GPU): the target logits are on " +
        device_name(w.type, w.id));
  const int64_t n = t.req.logits.batch;
  int64_t b = 0;
  lmsample::TreeRequest r;
  r.target = t.req.logits;
  r.node_offsets = offsets_of(offsets, "node_offsets", n, &b);
  r.requests = b;
  r.parents = static_cast<const int32_t*>(
      vector_of<In>(parents, "parents", n, w, {nb::dtype<int32_t>()}, "int32").data());
  r.tokens = static_cast<const int32_t*>(
      vector_of<In>(node_tokens, "tokens", n, w, {nb::dtype<int32_t>()}, "int32").data());
  r.params = chain_params(temperature, top_k, top_p, min_p, seed, step, b, w);
  lmsample::TreeOutputs o;
  o.accepted = out_vec<int32_t>(accepted, "out accepted", b, w, nb::dtype<int32_t>(), "int32");
  o.path = out_vec<int32_t>(path, "out path", n, w, nb::dtype<int32_t>(), "int32");
  o.tokens = out_vec<int32_t>(tokens, "out tokens", n, w, nb::dtype<int32_t>(), "int32");
  o.status = out_vec<int32_t>(status, "out status", b, w, nb::dtype<int32_t>(), "int32");
  o.logprobs = out_vec<float>(logprobs, "out logprobs", n, w, nb::dtype<float>(), "float32");
  run_verification(r, o, cpu_threads, lmsample::verify_tree_workspace_size, lmsample::verify_tree);
}

// Bytes of workspace a call needs: the largest over the request kinds a Sampler may serve
// (with_temperature_alone = false: over those with a top-k or min-p filter, which the GPU's
// temperature kernel and its workspace never serve).
size_t workspace_bytes(int64_t batch, int64_t vocab, int dtype, int device_type, int device_id,
                       int backend, int gpu_keys, int cpu_threads, bool with_temperature_alone) {
  Where w{device_type, device_id};
  lmsample::Request r;
  r.logits.batch = batch;
  r.logits.vocab = vocab;
  r.logits.dtype = static_cast<DType>(dtype);
  lmsample::ExecConfig cfg;
  cfg.backend = backend_for(w, backend);
  cfg.gpu_keys = static_cast<lmsample::GpuKeys>(gpu_keys);
  cfg.cpu_threads = cpu_threads;
  static const int64_t kOff[2] = {0, 0};
  static const int32_t kTok[1] = {0};
  static const float kVal[1] = {0};
  static const int32_t kK[1] = {1};
  size_t most = 0;
#if defined(LMSAMPLE_WITH_CUDA)
  DeviceGuard guard(w);
#endif
  for (int variant = 0; variant < 32; ++variant) {
    lmsample::Request q = r;
    if (variant & 16) q.params.defaults.top_p = 0.5f;  // (top-p rows: candidate lists)
    if (variant & 1) q.prompt_tokens = {kOff, kTok, nullptr};
    if (variant & 2) q.logit_bias = {kOff, kTok, kVal};
    if (variant & 4) q.params.top_k = kK;
    if (variant & 8) q.top_logprobs = 1;
    if (!with_temperature_alone) q.params.defaults.min_p = 0.5f;
    const size_t n = lmsample::workspace_size(q, cfg);
    most = n > most ? n : most;
  }
  return most;
}

// For the Python-overhead benchmark (scripts/bench_python_overhead.py): the host time of `n`
// lmsample::sample() calls made straight from C++ on these logits (temperature and top_p for
// every row through RowParams::defaults, outputs into `tokens` / `status`), in microseconds per
// call. Nothing is synchronised inside the loop.
double bench_cpp_host_us(nb::handle logits, nb::handle tokens, nb::handle status, float temperature,
                         float top_p, int n, uintptr_t stream) {
  Call c;
  read_logits(logits, c);
  const int64_t b = c.req.logits.batch;
  c.req.params.defaults.temperature = temperature;
  c.req.params.defaults.top_p = top_p;
  c.out.tokens = out_vec<int32_t>(tokens, "tokens", b, c.where, nb::dtype<int32_t>(), "int32");
  c.out.status = out_vec<int32_t>(status, "status", b, c.where, nb::dtype<int32_t>(), "int32");
  c.cfg.backend = backend_for(c.where, 0);
  c.cfg.stream = reinterpret_cast<void*>(stream);
  if (lmsample::workspace_size(c.req, c.cfg) != 0) fail("bench_cpp_host_us: needs a workspace");
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    const lmsample::Status s = lmsample::sample(c.req, c.out, nullptr, 0, c.cfg);
    if (!s.ok()) fail(s.message);
  }
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::micro>(t1 - t0).count() / n;
}

}  // namespace

NB_MODULE(_lmsample, m) {
  m.doc() = "lmsample's extension: one call of lmsample::sample() on DLPack arrays.";
  m.def("sample", &sample, "logits"_a, "tokens"_a, "status"_a, "logprob"_a.none(), "kept"_a.none(),
        "top_ids"_a.none(), "top_logprobs"_a.none(), "temperature"_a.none(), "top_k"_a.none(),
        "top_p"_a.none(), "min_p"_a.none(), "repetition_penalty"_a.none(),
        "frequency_penalty"_a.none(), "presence_penalty"_a.none(), "seed"_a.none(), "step"_a.none(),
        "substream"_a.none(), "allowed_mask"_a.none(), "bias_offsets"_a.none(),
        "bias_tokens"_a.none(), "bias_values"_a.none(), "prompt_offsets"_a.none(),
        "prompt_tokens"_a.none(), "output_offsets"_a.none(), "output_tokens"_a.none(), "n_top"_a,
        "workspace"_a.none(), "workspace_size"_a, "stream"_a, "backend"_a, "gpu_keys"_a,
        "cpu_threads"_a,
        "Low-level: samples into the given outputs; returns (code, message, workspace_needed).");
  m.def("verify_chain", &verify_chain, "target"_a, "row_offsets"_a, "drafts"_a, "kind"_a,
        "draft"_a.none(), "temperature"_a, "top_k"_a, "top_p"_a, "min_p"_a, "seed"_a, "step"_a,
        "accepted"_a, "tokens"_a, "status"_a, "logprobs"_a.none(), "cpu_threads"_a,
        "Low-level: speculative chain verification (CPU) into the given outputs.");
  m.def("verify_tree", &verify_tree, "target"_a, "node_offsets"_a, "parents"_a, "tokens"_a,
        "temperature"_a, "top_k"_a, "top_p"_a, "min_p"_a, "seed"_a, "step"_a, "accepted"_a,
        "path"_a, "out_tokens"_a, "status"_a, "logprobs"_a.none(), "cpu_threads"_a,
        "Low-level: speculative tree verification (CPU) into the given outputs.");
  m.def("workspace_bytes", &workspace_bytes, "batch"_a, "vocab"_a, "dtype"_a, "device_type"_a,
        "device_id"_a, "backend"_a, "gpu_keys"_a, "cpu_threads"_a,
        "with_temperature_alone"_a = true,
        "Workspace bytes that serve any request of this shape (with_temperature_alone=False: "
        "any with a top-k or min-p filter).");
  m.def("_bench_cpp_host_us", &bench_cpp_host_us, "logits"_a, "tokens"_a, "status"_a,
        "temperature"_a, "top_p"_a, "n"_a, "stream"_a,
        "Benchmark helper: host microseconds per lmsample::sample() call made from C++.");
  m.def("version", [] { return std::string(lmsample::version()); });
  m.def("contract_version", [] { return lmsample::contract_version(); });
  m.def("backend_available",
        [](int b) { return lmsample::backend_available(static_cast<Backend>(b)); });
  m.def("row_status_name", [](int s) { return std::string(lmsample::row_status_name(s)); });
  m.attr("DEVICE_CPU") = kCpu;
  m.attr("DEVICE_CUDA") = kCuda;
  m.attr("DEVICE_ROCM") = kRocm;
  m.attr("MAX_TOP_LOGPROBS") = lmsample::kMaxTopLogprobs;
  m.attr("MAX_VOCAB") = lmsample::kMaxVocab;
}
