// Shared helpers of the GPU tests: random batches generated on the host (flat arrays, in parallel),
// their device copies, poisoned device outputs, the CPU backend as the reference, bitwise
// comparison, and a watchdog so that no test can hang on a stuck kernel.
//
// Environment:
//   LMS_GPU_TEST_SMALL=1   shrink every test (small B, V <= 151936): for compute-sanitizer runs
//   LMS_GPU_TEST_SEED=n    base seed of the random batches (default fixed)
//   LMS_GPU_TEST_ROUNDS=n  groups of GpuVsCpu.RandomShapes (default 24; e.g. 500 for a soak run)
//   LMS_GPU_TIMEOUT_S=s    host-side deadline for any one GPU call + wait (default 120 s)
//   LMS_GPU_WATCHDOG_S=s   deadline of the watchdog tests' waits (default 60 s)
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "lmsample/lmsample.hpp"

namespace lmsgpu {

using lmsample::DType;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr uint32_t kPoisonBits = 0x7f7f7f7fu;  //!< every output byte is 0x7f before a GPU run
constexpr unsigned char kPoisonByte = 0x7f;

// ---- environment ---------------------------------------------------------------------------
bool small_mode();
uint64_t base_seed();
double call_timeout_s();
double watchdog_timeout_s();
const char* dtype_name(DType d);
size_t dtype_bytes(DType d);

// ---- CUDA errors: throw (GoogleTest reports the exception as a failure of the test) --------
void cuda_check(cudaError_t e, const char* expr, const char* file, int line);
#define LMS_CUDA(expr) ::lmsgpu::cuda_check((expr), #expr, __FILE__, __LINE__)

//! "" when a CUDA device is usable, else why not (for GTEST_SKIP).
std::string no_device_reason();
//! "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)".
std::string device_description();

// ---- never hang ----------------------------------------------------------------------------
//! While alive, a background thread kills the process (exit code 124, with a message naming
//! `what`) if the guard is not destroyed within `seconds`. Protects host calls that might block.
class WatchdogGuard {
 public:
  WatchdogGuard(double seconds, std::string what);
  ~WatchdogGuard();
  WatchdogGuard(const WatchdogGuard&) = delete;
  WatchdogGuard& operator=(const WatchdogGuard&) = delete;

 private:
  uint64_t id_;
};

//! Polls cudaStreamQuery until the stream is idle or `seconds` pass. On timeout: a GoogleTest
//! failure and a message on stderr, then the process exits (a stuck GPU cannot be recovered).
//! Returns the elapsed wall time in ms. Throws on a CUDA error reported by the stream.
double wait_stream(cudaStream_t stream, double seconds, const std::string& what);

// ---- deterministic random source (splitmix64; fast enough for 10^9 draws in parallel) -------
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t u64() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(u64() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  int64_t range(int64_t lo, int64_t hi) {  // inclusive
    return lo + static_cast<int64_t>(u64() % static_cast<uint64_t>(hi - lo + 1));
  }
  bool chance(double p) { return uniform() < p; }
  float normal();  //!< N(0, 1), Box-Muller in float
  bool has_spare = false;
  float spare = 0.0f;
};
uint64_t mix_seed(uint64_t a, uint64_t b);

uint16_t float_to_bf16(float f);
uint16_t float_to_f16(float f);
float bits_to_float(uint32_t u);
uint32_t float_to_bits(float f);

// ---- a batch on the host --------------------------------------------------------------------
//! Shape of a row's logits (recorded per row for failure messages).
enum Shape : int {
  kGauss,
  kQuantized,
  kFewValues,
  kLlmLike,
  kWide,
  kNearlyFlat,
  kFlat,
  kPeaked,
  kExtreme,
  kNumShapes
};
//! Special content of a row.
enum Special : int {
  kNone,
  kAllNegInf,
  kAllNaN,
  kFewPosInf,
  kSprinkle,
  kAllMasked,
  kOneValid,
  kNumSpecials
};
const char* shape_name(int s);
const char* special_name(int s);

//! Probabilities of the features of a random row.
struct Mix {
  double greedy = 0.2;
  double special = 0.12;
  double mask = 0.25;
  double bias = 0.25;
  double penalties = 0.25;
  double long_history = 0.04;  //!< a history of 500..3000 tokens (when penalties)
  double bad_param = 0.03;
  double bad_token_id = 0.02;
  double top_k = 0.45, top_p = 0.45, min_p = 0.35;
  int force_shape = -1;         //!< >= 0: every row has this shape
  bool cycle_specials = false;  //!< row r gets special r % kNumSpecials (directed test)
  bool tie_heavy = false;       //!< shapes with many exact ties, top-k/top-p set on most rows
};

//! Layout of a batch (never changes a row's result).
struct Layout {
  int64_t stride_extra = 0;      //!< row_stride = V + stride_extra (0: field left 0)
  int64_t base_offset = 0;       //!< elements before row 0 (misaligns the rows)
  int64_t mask_extra_words = 0;  //!< mask_row_words = ceil(V/32) + this (0: field left 0)
  int64_t csr_base = 0;          //!< offsets[0] of the CSR arrays (junk entries before it)
  bool pass_all_params = false;  //!< pass every parameter array even when all rows are default
};

struct GroupCfg {
  std::string name;
  DType dtype = DType::kFloat32;
  int64_t vocab = 1;
  int64_t batch = 1;
  uint64_t seed = 1;
  int32_t top_n = 0;             //!< Request::top_logprobs
  bool optional_outputs = true;  //!< pass logprob / kept (else null)
  bool default_stream = false;   //!< run on the legacy default stream
  Layout layout;
  Mix mix;
  lmsample::GpuKeys gpu_keys = lmsample::GpuKeys::kAuto;  //!< ExecConfig::gpu_keys of the GPU call
};

struct Csr {
  bool used = false;
  std::vector<int64_t> offsets;  //!< batch + 1
  std::vector<int32_t> tokens;   //!< never empty (a sentinel after the last row when needed)
  std::vector<float> values;     //!< logit bias only
};

struct HostBatch {
  DType dtype = DType::kFloat32;
  int64_t batch = 0, vocab = 0, stride = 0, base = 0;
  int64_t stride_field = 0;  //!< Logits::row_stride as passed
  int32_t top_n = 0;
  std::vector<unsigned char> logits;  //!< (base + (B-1)*stride + V) elements
  std::vector<float> temperature, top_p, min_p, repetition, frequency, presence;
  std::vector<int32_t> top_k;
  std::vector<uint64_t> seed, step;
  std::vector<uint32_t> substream;
  uint32_t passed = 0;  //!< bit i: parameter array i is passed (order of the vectors above)
  bool has_mask = false;
  int64_t mask_words = 0, mask_words_field = 0;
  std::vector<uint32_t> mask;
  Csr bias, prompt, output;
  std::vector<uint8_t> shape, special;  //!< per row, for messages
  std::vector<float> mask_density;      //!< per row, -1 = no mask

  //! The request with host pointers.
  lmsample::Request request() const;
  //! Rows [first, first + count) of `req` (host or device pointers alike), as their own request.
  static lmsample::Request slice(const lmsample::Request& req, int64_t first, int64_t count);
  size_t logits_elems() const { return static_cast<size_t>(base + (batch - 1) * stride + vocab); }
  std::string describe_row(int64_t r) const;
};

enum ParamIndex : uint32_t {
  kPTemperature,
  kPTopK,
  kPTopP,
  kPMinP,
  kPRepetition,
  kPFrequency,
  kPPresence,
  kPSeed,
  kPStep,
  kPSubstream
};

//! A random batch (rows generated in parallel; deterministic in cfg.seed).
HostBatch make_batch(const GroupCfg& cfg);

// ---- device memory --------------------------------------------------------------------------
class DevBuf {
 public:
  DevBuf() = default;
  explicit DevBuf(size_t bytes) { alloc(bytes); }
  ~DevBuf();
  DevBuf(DevBuf&& o) noexcept : p_(o.p_), n_(o.n_) {
    o.p_ = nullptr;
    o.n_ = 0;
  }
  DevBuf& operator=(DevBuf&& o) noexcept;
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void alloc(size_t bytes);  //!< exactly `bytes` (>= 1), replacing what was held
  void reserve(size_t bytes) {
    if (bytes > n_) alloc(bytes);
  }
  void* get() const { return p_; }
  size_t size() const { return n_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

//! Device copy of a HostBatch. Buffers are allocated exactly (so that memcheck sees over-reads),
//! or with the capacities of `capacity_from` (graph replays upload other batches of the same
//! shape).
class DeviceBatch {
 public:
  explicit DeviceBatch(const HostBatch& hb) : DeviceBatch(hb, {&hb}) {}
  DeviceBatch(const HostBatch& hb, const std::vector<const HostBatch*>& capacity_from);
  //! Copies `hb` (same shape as the one this was made from) into the device buffers.
  void upload(const HostBatch& hb, cudaStream_t stream);
  lmsample::Request request() const { return req_; }

 private:
  DevBuf logits_, temperature_, top_k_, top_p_, min_p_, repetition_, frequency_, presence_, seed_,
      step_, substream_, mask_;
  DevBuf bias_off_, bias_tok_, bias_val_, prompt_off_, prompt_tok_, output_off_, output_tok_;
  lmsample::Request req_;
};

struct HostOutputs {
  int64_t batch = 0;
  int32_t top_n = 0;
  std::vector<int32_t> tokens, status, kept, top_ids;
  std::vector<float> logprob, top_logprobs;
  HostOutputs(int64_t b, int32_t n);
  lmsample::Outputs outputs(bool optional);
};

struct DeviceOutputs {
  int64_t batch = 0;
  int32_t top_n = 0;
  DevBuf tokens, status, logprob, kept, top_ids, top_logprobs;
  DeviceOutputs(int64_t b, int32_t n);
  lmsample::Outputs outputs(bool optional) const;
  void poison(cudaStream_t stream);
  //! Copies the outputs of rows [first, first + ho.batch) into `ho`, after the stream is idle.
  void download(HostOutputs& ho, int64_t first = 0) const;
};

// ---- running ---------------------------------------------------------------------------------
//! CPU backend on the host batch (cpu_threads = 0). Returns the call status.
lmsample::Status run_cpu(const lmsample::Request& req, HostOutputs& out, bool optional);

//! A device workspace reused across calls, grown as needed.
class Workspace {
 public:
  void* get(size_t bytes) {
    buf_.reserve(bytes == 0 ? 1 : bytes);
    return buf_.get();
  }

 private:
  DevBuf buf_;
};

struct GpuRun {
  lmsample::Status status;
  double ms = 0;  //!< wall time of the call and the wait
};
//! Poisons `out`, calls lmsample::sample (kCuda) on `stream`, waits (deadline `timeout_s`).
GpuRun run_gpu(const lmsample::Request& dreq, DeviceOutputs& out, bool optional,
               cudaStream_t stream, Workspace& ws, double timeout_s, const std::string& what,
               lmsample::GpuKeys keys = lmsample::GpuKeys::kAuto);

// ---- comparison ------------------------------------------------------------------------------
struct Compared {
  int64_t rows = 0;
  int64_t mismatched = 0;
  int64_t unwritten = 0;      //!< GPU output elements still holding the poison
  int64_t logprob_exact = 0;  //!< logprobs (and all top logprobs) bitwise equal
  std::string report;         //!< the first few differences
  void add(const Compared& o);
};
//! Row `gpu_row` of `gpu` against row `cpu_row` of `cpu`; `hb_row` names the row in `hb`.
void compare_row(const HostBatch& hb, int64_t hb_row, const HostOutputs& gpu, int64_t gpu_row,
                 const HostOutputs& cpu, int64_t cpu_row, bool optional, Compared& acc);
Compared compare_all(const HostBatch& hb, const HostOutputs& gpu, const HostOutputs& cpu,
                     bool optional);
//! GPU against GPU: every bit equal.
std::string bitwise_difference(const HostOutputs& a, const HostOutputs& b, bool optional);

// ---- test fixture ----------------------------------------------------------------------------
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  //! Generates cfg's batch, runs CPU and GPU, compares; EXPECTs equality; prints one line.
  Compared run_group(const GroupCfg& cfg);
  //! Prints "[ summary ] <test>: <rows> rows compared on <device> ..." at the end of a test.
  void summary(const Compared& c, const std::string& extra = "");
  cudaStream_t stream_ = nullptr;
  Workspace ws_;
};

}  // namespace lmsgpu
