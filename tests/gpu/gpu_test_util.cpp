// Implementation of the GPU tests' helpers (see gpu_test_util.hpp).
#include "gpu_test_util.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>

namespace lmsgpu {

using Clock = std::chrono::steady_clock;

static double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// ---- environment ---------------------------------------------------------------------------
static const char* env(const char* name) {
  const char* v = std::getenv(name);
  return (v && *v) ? v : nullptr;
}
bool small_mode() {
  const char* v = env("LMS_GPU_TEST_SMALL");
  return v && std::strcmp(v, "0") != 0;
}
uint64_t base_seed() {
  const char* v = env("LMS_GPU_TEST_SEED");
  return v ? std::strtoull(v, nullptr, 0) : 20251126ull;
}
double call_timeout_s() {
  const char* v = env("LMS_GPU_TIMEOUT_S");
  return v ? std::atof(v) : 120.0;
}
double watchdog_timeout_s() {
  const char* v = env("LMS_GPU_WATCHDOG_S");
  return v ? std::atof(v) : 60.0;
}
const char* dtype_name(DType d) {
  return d == DType::kFloat32 ? "f32" : d == DType::kBFloat16 ? "bf16" : "f16";
}
size_t dtype_bytes(DType d) { return d == DType::kFloat32 ? 4 : 2; }

void cuda_check(cudaError_t e, const char* expr, const char* file, int line) {
  if (e == cudaSuccess) return;
  std::ostringstream o;
  o << file << ":" << line << ": " << expr << " failed: " << cudaGetErrorName(e) << " ("
    << cudaGetErrorString(e) << ")";
  throw std::runtime_error(o.str());
}

std::string no_device_reason() {
  static const std::string reason = [] {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(e) + " (" +
             cudaGetErrorString(e) + ")";
    }
    if (n == 0) return std::string("cudaGetDeviceCount() = 0");
    return std::string();
  }();
  return reason;
}

std::string device_description() {
  static const std::string desc = [] {
    int dev = 0;
    cudaDeviceProp p{};
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess)
      return std::string("?");
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.256s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor,
                  p.multiProcessorCount,
                  static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
    return std::string(buf);
  }();
  return desc;
}

// ---- watchdog -------------------------------------------------------------------------------
namespace {
struct WatchdogState {
  std::mutex m;
  std::condition_variable cv;
  std::map<uint64_t, std::pair<Clock::time_point, std::string>> armed;
  uint64_t next = 1;
  bool started = false;
};
WatchdogState& wd() {
  static WatchdogState* s = new WatchdogState;  // never destroyed: its thread outlives main()
  return *s;
}
void watchdog_thread() {
  WatchdogState& s = wd();
  std::unique_lock<std::mutex> lk(s.m);
  for (;;) {
    if (s.armed.empty()) {
      s.cv.wait(lk);
      continue;
    }
    auto first = s.armed.begin();
    for (auto it = s.armed.begin(); it != s.armed.end(); ++it)
      if (it->second.first < first->second.first) first = it;
    if (Clock::now() >= first->second.first) {
      std::fflush(stdout);
      std::fprintf(stderr,
                   "\n[lmsample gpu tests] TIMEOUT: %s did not finish before its deadline: a hung "
                   "kernel or a "
                   "blocking call? Exiting with code 124.\n",
                   first->second.second.c_str());
      std::fflush(stderr);
      std::_Exit(124);
    }
    s.cv.wait_until(lk, first->second.first);
  }
}
}  // namespace

WatchdogGuard::WatchdogGuard(double seconds, std::string what) {
  WatchdogState& s = wd();
  std::lock_guard<std::mutex> lk(s.m);
  if (!s.started) {
    std::thread(watchdog_thread).detach();
    s.started = true;
  }
  id_ = s.next++;
  s.armed[id_] = {Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0)),
                  std::move(what)};
  s.cv.notify_all();
}

WatchdogGuard::~WatchdogGuard() {
  WatchdogState& s = wd();
  std::lock_guard<std::mutex> lk(s.m);
  s.armed.erase(id_);
  s.cv.notify_all();
}

double wait_stream(cudaStream_t stream, double seconds, const std::string& what) {
  const auto t0 = Clock::now();
  int sleep_us = 2;
  for (;;) {
    const cudaError_t e = cudaStreamQuery(stream);
    if (e == cudaSuccess) return ms_since(t0);
    if (e != cudaErrorNotReady)
      cuda_check(e, ("cudaStreamQuery after " + what).c_str(), __FILE__, __LINE__);
    const double ms = ms_since(t0);
    if (ms > seconds * 1000.0) {
      std::ostringstream o;
      o << "TIMEOUT: " << what << " did not complete within " << seconds
        << " s (host-side deadline, polling cudaStreamQuery): the GPU backend hangs or is far too "
           "slow";
      ADD_FAILURE() << o.str();
      std::fflush(stdout);
      std::fprintf(stderr,
                   "\n[lmsample gpu tests] %s. Exiting: a stuck device cannot be recovered.\n",
                   o.str().c_str());
      std::fflush(stderr);
      std::_Exit(1);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    sleep_us = std::min(sleep_us * 2, 1000);
  }
}

// ---- random numbers and conversions ---------------------------------------------------------
float Rng::normal() {
  if (has_spare) {
    has_spare = false;
    return spare;
  }
  const float u1 = static_cast<float>((u64() >> 40) + 1) * 0x1.0p-24f;  // (0, 1]
  const float u2 = static_cast<float>(u64() >> 40) * 0x1.0p-24f;        // [0, 1)
  const float r = std::sqrt(-2.0f * std::log(u1));
  const float a = 6.2831853f * u2;
  spare = r * std::sin(a);
  has_spare = true;
  return r * std::cos(a);
}

uint64_t mix_seed(uint64_t a, uint64_t b) {
  Rng r(a ^ (b * 0xd1342543de82ef95ull + 0x632be59bd9b4e019ull));
  r.u64();
  return r.u64();
}

uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

uint16_t float_to_bf16(float f) {  // round to nearest even; NaN stays a quiet NaN
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

uint16_t float_to_f16(float f) {  // round to nearest even, subnormals, overflow to inf, NaN
  const uint32_t u = float_to_bits(f);
  const auto sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a < 0x38800000u) {
    if (a < 0x33000000u) return sign;
    const uint32_t e = a >> 23;
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t r = a - 0x38000000u;
  r += 0xfffu + ((r >> 13) & 1u);
  return static_cast<uint16_t>(sign | (r >> 13));
}

const char* shape_name(int s) {
  static const char* n[] = {"gauss",       "quantized", "few_values", "llm_like", "wide",
                            "nearly_flat", "flat",      "peaked",     "extreme"};
  return s >= 0 && s < kNumShapes ? n[s] : "?";
}
const char* special_name(int s) {
  static const char* n[] = {
      "none",       "all_-inf", "all_nan", "few_+inf", "sprinkled_nan/-inf/-0",
      "all_masked", "one_valid"};
  return s >= 0 && s < kNumSpecials ? n[s] : "?";
}

// ---- batch generation -----------------------------------------------------------------------
namespace {

void gen_shape(Rng& rng, int shape, float* x, int64_t v) {
  const float mean = static_cast<float>(rng.uniform(-8.0, 8.0));
  switch (shape) {
    case kGauss: {
      const auto sd = static_cast<float>(rng.uniform(0.3, 6.0));
      for (int64_t i = 0; i < v; ++i) x[i] = mean + sd * rng.normal();
      break;
    }
    case kQuantized: {  // steps of 1/4 or 1: many exact ties
      const float q = rng.chance(0.5) ? 4.0f : 1.0f;
      const auto sd = static_cast<float>(rng.uniform(0.5, 4.0));
      for (int64_t i = 0; i < v; ++i) x[i] = std::round((mean + sd * rng.normal()) * q) / q;
      break;
    }
    case kFewValues: {
      const int64_t k = rng.range(1, 5);
      float vals[5];
      for (int64_t i = 0; i < k; ++i) vals[i] = mean + 3.0f * rng.normal();
      for (int64_t i = 0; i < v; ++i) x[i] = vals[rng.range(0, k - 1)];
      break;
    }
    case kLlmLike: {
      const auto sd = static_cast<float>(rng.uniform(1.0, 3.0));
      for (int64_t i = 0; i < v; ++i) x[i] = mean + sd * rng.normal();
      const int64_t spikes = rng.range(1, 10);
      for (int64_t i = 0; i < spikes; ++i)
        x[rng.range(0, v - 1)] += static_cast<float>(rng.uniform(5.0, 20.0));
      break;
    }
    case kWide:
      for (int64_t i = 0; i < v; ++i) x[i] = static_cast<float>(rng.uniform(-100.0, 100.0));
      break;
    case kNearlyFlat:
      for (int64_t i = 0; i < v; ++i) x[i] = mean + 1e-5f * rng.normal();
      break;
    case kFlat:
      for (int64_t i = 0; i < v; ++i) x[i] = mean;
      break;
    case kPeaked:
      for (int64_t i = 0; i < v; ++i) x[i] = 4.0f * rng.normal();
      break;
    default: {  // extreme magnitudes: near FLT_MAX down to subnormals, both signs
      for (int64_t i = 0; i < v; ++i) {
        const double e = rng.uniform(-148.0, 127.99);
        x[i] = static_cast<float>((rng.chance(0.5) ? 1.0 : -1.0) * std::exp2(e));
      }
      break;
    }
  }
}

void store_row(HostBatch& hb, int64_t r, const float* x) {
  const size_t off = static_cast<size_t>(hb.base + r * hb.stride);
  if (hb.dtype == DType::kFloat32) {
    std::memcpy(hb.logits.data() + off * 4, x, static_cast<size_t>(hb.vocab) * 4);
  } else {
    auto* h = reinterpret_cast<uint16_t*>(hb.logits.data()) + off;
    const bool bf = hb.dtype == DType::kBFloat16;
    for (int64_t i = 0; i < hb.vocab; ++i) h[i] = bf ? float_to_bf16(x[i]) : float_to_f16(x[i]);
  }
}

struct RowLists {
  std::vector<std::pair<int32_t, float>> bias;
  std::vector<int32_t> prompt, output;
};

void gen_row(const GroupCfg& cfg, HostBatch& hb, int64_t r, std::vector<float>& xbuf,
             RowLists& lists) {
  const Mix& mix = cfg.mix;
  const int64_t v = hb.vocab;
  Rng rng(mix_seed(cfg.seed, static_cast<uint64_t>(r)));
  float* x = xbuf.data();
  const size_t ri = static_cast<size_t>(r);

  // logits
  int shape;
  if (mix.force_shape >= 0)
    shape = mix.force_shape;
  else if (mix.tie_heavy)
    shape = rng.chance(0.5) ? kQuantized : rng.chance(0.6) ? kFewValues : kFlat;
  else
    shape = static_cast<int>(rng.range(0, kNumShapes - 1));
  gen_shape(rng, shape, x, v);
  int special = kNone;
  if (mix.cycle_specials)
    special = static_cast<int>(r % kNumSpecials);
  else if (rng.chance(mix.special))
    special = static_cast<int>(rng.range(1, kNumSpecials - 1));
  if (special == kAllMasked && !hb.has_mask) special = kAllNegInf;
  switch (special) {
    case kAllNegInf:
      std::fill(x, x + v, -kInf);
      break;
    case kAllNaN:
      std::fill(x, x + v, kNaN);
      break;
    case kFewPosInf: {
      const int64_t n = rng.range(1, std::min<int64_t>(v, 5));
      for (int64_t i = 0; i < n; ++i) x[rng.range(0, v - 1)] = kInf;
      break;
    }
    case kSprinkle: {
      const int64_t n = rng.range(1, std::max<int64_t>(1, v / 3));
      for (int64_t i = 0; i < n; ++i) {
        const int64_t t = rng.range(0, v - 1);
        const int64_t what = rng.range(0, 3);
        x[t] = what == 0 ? kNaN : what == 1 ? -kInf : what == 2 ? -0.0f : 0.0f;
      }
      break;
    }
    case kOneValid: {
      const int64_t keep = rng.range(0, v - 1);
      const float kv = x[keep];
      std::fill(x, x + v, rng.chance(0.5) ? -kInf : kNaN);
      x[keep] = std::isfinite(kv) ? kv : 1.0f;
      break;
    }
    default:
      break;
  }
  store_row(hb, r, x);
  hb.shape[ri] = static_cast<uint8_t>(shape);
  hb.special[ri] = static_cast<uint8_t>(special);

  // temperature
  float& t = hb.temperature[ri];
  if (rng.chance(mix.greedy)) {
    t = 0.0f;
  } else {
    switch (rng.range(0, 8)) {
      case 0:
        t = 1.0f;
        break;
      case 1:
        t = 0.7f;
        break;
      case 2:
        t = static_cast<float>(rng.uniform(0.05, 3.0));
        break;
      case 3:
        t = 1e-3f;
        break;
      case 4:
        t = 50.0f;
        break;
      case 5:
        t = 1e-40f;
        break;  // subnormal: 1/T = +inf
      case 6:
        t = rng.chance(0.1) ? 3e38f : 1.3f;
        break;
      default:
        t = static_cast<float>(std::exp(rng.uniform(-12.0, 6.0)));
        break;
    }
  }
  // top-k
  int32_t& k = hb.top_k[ri];
  if (rng.chance(mix.tie_heavy ? 0.8 : mix.top_k)) {
    switch (rng.range(0, 8)) {
      case 0:
        k = 1;
        break;
      case 1:
        k = static_cast<int32_t>(rng.range(1, std::min<int64_t>(v, 64)));
        break;
      case 2:
        k = static_cast<int32_t>(v);
        break;
      case 3:
        k = static_cast<int32_t>(v + rng.range(0, 100));
        break;
      case 4:
        k = static_cast<int32_t>(std::max<int64_t>(1, v - rng.range(0, 3)));
        break;
      case 5:
        k = static_cast<int32_t>(rng.range(1, std::min<int64_t>(v, 4000)));
        break;
      case 6: {
        static const int32_t edges[] = {50, 255, 256, 257, 1023, 1024, 1025, 2048, 4096};
        k = edges[rng.range(0, 8)];
        break;
      }
      case 7:
        k = 0;
        break;
      default:
        k = static_cast<int32_t>(rng.range(1, v));
        break;
    }
    if (mix.tie_heavy && k > 64 && rng.chance(0.7))
      k = static_cast<int32_t>(rng.range(1, std::min<int64_t>(v, 64)));
  }
  // top-p
  float& p = hb.top_p[ri];
  if (rng.chance(mix.tie_heavy ? 0.8 : mix.top_p)) {
    switch (rng.range(0, 7)) {
      case 0:
        p = static_cast<float>(rng.uniform(0.05, 0.99));
        break;
      case 1:
        p = 1e-6f;
        break;
      case 2:
        p = 1e-30f;
        break;
      case 3:
        p = 0.99999994f;
        break;  // largest float below 1
      case 4:
        p = rng.chance(0.5) ? 1.0f : 1.5f;
        break;
      case 5:
        p = 0.9f;
        break;
      case 6:
        p = 0.5f;
        break;
      default:
        p = static_cast<float>(rng.uniform(0.5, 0.999));
        break;
    }
  }
  // min-p
  float& mp = hb.min_p[ri];
  if (rng.chance(mix.min_p)) {
    switch (rng.range(0, 4)) {
      case 0:
        mp = static_cast<float>(rng.uniform(0.0, 0.5));
        break;
      case 1:
        mp = 1.0f;
        break;
      case 2:
        mp = 1e-8f;
        break;
      case 3:
        mp = 0.05f;
        break;
      default:
        mp = static_cast<float>(std::exp(rng.uniform(-25.0, 0.0)));
        break;
    }
  }
  // bitmask
  if (hb.has_mask) {
    uint32_t* m = hb.mask.data() + r * hb.mask_words;
    const int64_t valid_words = (v + 31) / 32;
    if (special == kAllMasked) {
      std::fill(m, m + hb.mask_words, 0u);
      for (int64_t b = v; b < valid_words * 32; ++b)  // bits past V set: they must be ignored
        m[b / 32] |= 1u << (b % 32);
      hb.mask_density[ri] = 0.0f;
    } else if (rng.chance(mix.mask)) {
      const double density = rng.chance(0.1)   ? 0.003
                             : rng.chance(0.3) ? 0.02
                             : rng.chance(0.5) ? 0.5
                                               : 0.97;
      hb.mask_density[ri] = static_cast<float>(density);
      if (density == 0.5) {
        for (int64_t w = 0; w < valid_words; ++w) m[w] = static_cast<uint32_t>(rng.u64());
      } else {
        std::fill(m, m + valid_words, 0u);
        for (int64_t i = 0; i < v; ++i)
          if (rng.chance(density)) m[i >> 5] |= 1u << (i & 31);
        for (int64_t b = v; b < valid_words * 32; ++b)
          if (rng.chance(0.5)) m[b / 32] |= 1u << (b % 32);
      }
      // Words past ceil(V/32) (mask_row_words > that): junk from their own stream, so that the
      // rows are the same whatever the layout.
      Rng junk(mix_seed(cfg.seed ^ 0x6a756e6bull, static_cast<uint64_t>(r)));
      for (int64_t w = valid_words; w < hb.mask_words; ++w)
        m[w] = static_cast<uint32_t>(junk.u64());
    }
  }
  // logit bias: duplicates add up in order; rare +-inf and NaN; sometimes one dominant token
  if (hb.bias.used && rng.chance(mix.bias)) {
    const int64_t n = rng.range(1, 12);
    for (int64_t i = 0; i < n; ++i) {
      const auto tok = static_cast<int32_t>(rng.range(0, v - 1));
      float b = static_cast<float>(rng.uniform(-10.0, 10.0));
      if (rng.chance(0.05)) b = rng.chance(0.5) ? kInf : -kInf;
      if (rng.chance(0.02)) b = kNaN;
      if (rng.chance(0.05)) b = 60.0f;
      lists.bias.emplace_back(tok, b);
      if (rng.chance(0.3)) lists.bias.emplace_back(tok, static_cast<float>(rng.uniform(-3.0, 3.0)));
    }
  }
  // penalties with histories (repeats count)
  if ((hb.prompt.used || hb.output.used) && rng.chance(mix.penalties)) {
    hb.repetition[ri] = rng.chance(0.2) ? 1.0f : static_cast<float>(rng.uniform(0.5, 2.0));
    hb.frequency[ri] = rng.chance(0.3) ? 0.0f : static_cast<float>(rng.uniform(-2.0, 2.0));
    hb.presence[ri] = rng.chance(0.3) ? 0.0f : static_cast<float>(rng.uniform(-2.0, 2.0));
    const bool long_h = rng.chance(mix.long_history);
    const int64_t np = long_h ? rng.range(500, 3000) : rng.range(0, 40);
    const int64_t no = long_h ? rng.range(500, 3000) : rng.range(0, 40);
    const int64_t span = std::min<int64_t>(v, rng.chance(0.5) ? 20 : v);
    if (hb.prompt.used)
      for (int64_t i = 0; i < np; ++i)
        lists.prompt.push_back(static_cast<int32_t>(rng.range(0, span - 1)));
    if (hb.output.used)
      for (int64_t i = 0; i < no; ++i)
        lists.output.push_back(static_cast<int32_t>(rng.range(0, span - 1)));
  }
  hb.seed[ri] = rng.u64();
  hb.step[ri] = rng.chance(0.5) ? static_cast<uint64_t>(rng.range(0, 5000)) : rng.u64();
  hb.substream[ri] = rng.chance(0.8) ? 0u : static_cast<uint32_t>(rng.u64());

  if (rng.chance(mix.bad_param)) {
    switch (rng.range(0, 6)) {
      case 0:
        t = rng.chance(0.3) ? -1.0f : rng.chance(0.5) ? kNaN : kInf;
        break;
      case 1:
        k = -static_cast<int32_t>(rng.range(1, 10));
        break;
      case 2:
        p = rng.chance(0.3) ? 0.0f : rng.chance(0.5) ? kNaN : -0.5f;
        break;
      case 3:
        mp = rng.chance(0.3) ? 1.5f : rng.chance(0.5) ? -0.25f : kNaN;
        break;
      case 4:
        hb.repetition[ri] = rng.chance(0.3) ? 0.0f : rng.chance(0.5) ? kInf : kNaN;
        break;
      case 5:
        hb.frequency[ri] = rng.chance(0.5) ? 2.5f : kNaN;
        break;
      default:
        hb.presence[ri] = -3.0f;
        break;
    }
  }
  if (rng.chance(mix.bad_token_id)) {
    const int32_t bad =
        rng.chance(0.5) ? -1
                        : static_cast<int32_t>(std::min<int64_t>(v + rng.range(0, 3), INT32_MAX));
    const int64_t where = rng.range(0, 2);
    if (where == 0 && hb.bias.used)
      lists.bias.emplace_back(bad, 1.0f);
    else if (where == 1 && hb.prompt.used)
      lists.prompt.push_back(bad);
    else if (hb.output.used)
      lists.output.push_back(bad);
    else if (hb.bias.used)
      lists.bias.emplace_back(bad, 1.0f);
  }
}

void build_csr(Csr& c, const std::vector<RowLists>& lists, int64_t csr_base, int which) {
  if (!c.used) return;
  c.offsets.assign(1, csr_base);
  c.tokens.assign(static_cast<size_t>(csr_base), -7);  // junk before offsets[0]: never read
  if (which == 0) c.values.assign(static_cast<size_t>(csr_base), kNaN);
  for (const RowLists& l : lists) {
    if (which == 0) {
      for (const auto& [t, b] : l.bias) {
        c.tokens.push_back(t);
        c.values.push_back(b);
      }
    } else {
      const auto& h = which == 1 ? l.prompt : l.output;
      c.tokens.insert(c.tokens.end(), h.begin(), h.end());
    }
    c.offsets.push_back(static_cast<int64_t>(c.tokens.size()));
  }
  if (c.tokens.empty()) {  // a valid pointer even with no entries
    c.tokens.push_back(-7);
    if (which == 0) c.values.push_back(kNaN);
  }
}

}  // namespace

HostBatch make_batch(const GroupCfg& cfg) {
  HostBatch hb;
  const Layout& lay = cfg.layout;
  hb.dtype = cfg.dtype;
  hb.batch = cfg.batch;
  hb.vocab = cfg.vocab;
  hb.stride = cfg.vocab + lay.stride_extra;
  hb.stride_field = lay.stride_extra == 0 ? 0 : hb.stride;
  hb.base = lay.base_offset;
  hb.top_n = cfg.top_n;
  const auto b = static_cast<size_t>(cfg.batch);
  const size_t elem = dtype_bytes(cfg.dtype);
  // Padding between and before rows: +inf, which would change any row that read it.
  hb.logits.resize(hb.logits_elems() * elem);
  if (cfg.dtype == DType::kFloat32) {
    auto* f = reinterpret_cast<uint32_t*>(hb.logits.data());
    std::fill(f, f + hb.logits_elems(), 0x7f800000u);
  } else {
    auto* h = reinterpret_cast<uint16_t*>(hb.logits.data());
    std::fill(h, h + hb.logits_elems(),
              cfg.dtype == DType::kBFloat16 ? uint16_t{0x7f80} : uint16_t{0x7c00});
  }
  hb.temperature.assign(b, 1.0f);
  hb.top_k.assign(b, 0);
  hb.top_p.assign(b, 1.0f);
  hb.min_p.assign(b, 0.0f);
  hb.repetition.assign(b, 1.0f);
  hb.frequency.assign(b, 0.0f);
  hb.presence.assign(b, 0.0f);
  hb.seed.assign(b, 0);
  hb.step.assign(b, 0);
  hb.substream.assign(b, 0);
  hb.shape.assign(b, 0);
  hb.special.assign(b, 0);
  hb.mask_density.assign(b, -1.0f);
  hb.has_mask = cfg.mix.mask > 0.0 || cfg.mix.cycle_specials;
  if (hb.has_mask) {
    hb.mask_words = (cfg.vocab + 31) / 32 + lay.mask_extra_words;
    hb.mask_words_field = lay.mask_extra_words == 0 ? 0 : hb.mask_words;
    hb.mask.assign(b * static_cast<size_t>(hb.mask_words), 0xffffffffu);
  }
  hb.bias.used = cfg.mix.bias > 0.0 || cfg.mix.bad_token_id > 0.0;
  hb.prompt.used = cfg.mix.penalties > 0.0 || cfg.mix.bad_token_id > 0.0;
  hb.output.used = cfg.mix.penalties > 0.0 || cfg.mix.bad_token_id > 0.0;

  std::vector<RowLists> lists(b);
#pragma omp parallel
  {
    std::vector<float> x(static_cast<size_t>(cfg.vocab));
#pragma omp for schedule(dynamic, 1)
    for (int64_t r = 0; r < cfg.batch; ++r) gen_row(cfg, hb, r, x, lists[static_cast<size_t>(r)]);
  }
  build_csr(hb.bias, lists, lay.csr_base, 0);
  build_csr(hb.prompt, lists, lay.csr_base, 1);
  build_csr(hb.output, lists, lay.csr_base, 2);

  auto any_f = [&](const std::vector<float>& a, float d) {
    for (const float x : a)
      if (!(x == d)) return true;
    return false;
  };
  auto any_i = [&](const auto& a) {
    for (const auto x : a)
      if (x != 0) return true;
    return false;
  };
  const bool all = lay.pass_all_params;
  hb.passed = 0;
  if (all || any_f(hb.temperature, 1.0f)) hb.passed |= 1u << kPTemperature;
  if (all || any_i(hb.top_k)) hb.passed |= 1u << kPTopK;
  if (all || any_f(hb.top_p, 1.0f)) hb.passed |= 1u << kPTopP;
  if (all || any_f(hb.min_p, 0.0f)) hb.passed |= 1u << kPMinP;
  if (all || any_f(hb.repetition, 1.0f)) hb.passed |= 1u << kPRepetition;
  if (all || any_f(hb.frequency, 0.0f)) hb.passed |= 1u << kPFrequency;
  if (all || any_f(hb.presence, 0.0f)) hb.passed |= 1u << kPPresence;
  if (all || any_i(hb.seed)) hb.passed |= 1u << kPSeed;
  if (all || any_i(hb.step)) hb.passed |= 1u << kPStep;
  if (all || any_i(hb.substream)) hb.passed |= 1u << kPSubstream;
  return hb;
}

lmsample::Request HostBatch::request() const {
  lmsample::Request q;
  q.logits.data = logits.data() + static_cast<size_t>(base) * dtype_bytes(dtype);
  q.logits.dtype = dtype;
  q.logits.batch = batch;
  q.logits.vocab = vocab;
  q.logits.row_stride = stride_field;
  auto on = [&](uint32_t i) { return (passed >> i) & 1u; };
  q.params.temperature = on(kPTemperature) ? temperature.data() : nullptr;
  q.params.top_k = on(kPTopK) ? top_k.data() : nullptr;
  q.params.top_p = on(kPTopP) ? top_p.data() : nullptr;
  q.params.min_p = on(kPMinP) ? min_p.data() : nullptr;
  q.params.repetition_penalty = on(kPRepetition) ? repetition.data() : nullptr;
  q.params.frequency_penalty = on(kPFrequency) ? frequency.data() : nullptr;
  q.params.presence_penalty = on(kPPresence) ? presence.data() : nullptr;
  q.params.seed = on(kPSeed) ? seed.data() : nullptr;
  q.params.step = on(kPStep) ? step.data() : nullptr;
  q.params.substream = on(kPSubstream) ? substream.data() : nullptr;
  if (has_mask) {
    q.allowed_mask = mask.data();
    q.mask_row_words = mask_words_field;
  }
  if (bias.used) q.logit_bias = {bias.offsets.data(), bias.tokens.data(), bias.values.data()};
  if (prompt.used) q.prompt_tokens = {prompt.offsets.data(), prompt.tokens.data(), nullptr};
  if (output.used) q.output_tokens = {output.offsets.data(), output.tokens.data(), nullptr};
  q.top_logprobs = top_n;
  return q;
}

lmsample::Request HostBatch::slice(const lmsample::Request& req, int64_t first, int64_t count) {
  lmsample::Request s = req;
  const int64_t stride = req.logits.row_stride == 0 ? req.logits.vocab : req.logits.row_stride;
  s.logits.data = static_cast<const unsigned char*>(req.logits.data) +
                  static_cast<size_t>(first * stride) * dtype_bytes(req.logits.dtype);
  s.logits.batch = count;
  auto shift = [&](auto*& p) {
    if (p) p += first;
  };
  shift(s.params.temperature);
  shift(s.params.top_k);
  shift(s.params.top_p);
  shift(s.params.min_p);
  shift(s.params.repetition_penalty);
  shift(s.params.frequency_penalty);
  shift(s.params.presence_penalty);
  shift(s.params.seed);
  shift(s.params.step);
  shift(s.params.substream);
  if (s.allowed_mask) {
    const int64_t words =
        req.mask_row_words == 0 ? (req.logits.vocab + 31) / 32 : req.mask_row_words;
    s.allowed_mask += first * words;
  }
  shift(s.logit_bias.offsets);
  shift(s.prompt_tokens.offsets);
  shift(s.output_tokens.offsets);
  return s;
}

std::string HostBatch::describe_row(int64_t r) const {
  const auto i = static_cast<size_t>(r);
  std::ostringstream o;
  o.precision(9);
  o << dtype_name(dtype) << " V=" << vocab << " shape=" << shape_name(shape[i])
    << " special=" << special_name(special[i]) << " T=" << temperature[i] << " k=" << top_k[i]
    << " p=" << top_p[i] << " min_p=" << min_p[i] << " rep=" << repetition[i]
    << " freq=" << frequency[i] << " pres=" << presence[i] << " seed=" << seed[i]
    << " step=" << step[i] << " sub=" << substream[i]
    << " mask=" << (mask_density[i] < 0 ? std::string("none") : std::to_string(mask_density[i]));
  auto csr_n = [&](const Csr& c) { return c.used ? c.offsets[i + 1] - c.offsets[i] : int64_t{0}; };
  o << " bias=" << csr_n(bias);
  if (bias.used && csr_n(bias) > 0) {
    o << " [";
    for (int64_t j = bias.offsets[i]; j < bias.offsets[i + 1] && j < bias.offsets[i] + 6; ++j)
      o << bias.tokens[static_cast<size_t>(j)] << ":" << bias.values[static_cast<size_t>(j)] << " ";
    o << "]";
  }
  o << " prompt=" << csr_n(prompt) << " output=" << csr_n(output);
  return o.str();
}

// ---- device memory --------------------------------------------------------------------------
DevBuf::~DevBuf() {
  if (p_) (void)cudaFree(p_);
}
DevBuf& DevBuf::operator=(DevBuf&& o) noexcept {
  if (this != &o) {
    if (p_) (void)cudaFree(p_);
    p_ = o.p_;
    n_ = o.n_;
    o.p_ = nullptr;
    o.n_ = 0;
  }
  return *this;
}
void DevBuf::alloc(size_t bytes) {
  if (p_) LMS_CUDA(cudaFree(p_));
  p_ = nullptr;
  n_ = 0;
  if (bytes == 0) bytes = 1;
  LMS_CUDA(cudaMalloc(&p_, bytes));
  n_ = bytes;
}

namespace {
template <class T>
size_t vbytes(const std::vector<T>& v) {
  return v.size() * sizeof(T);
}

template <class T, class F>
size_t max_bytes(const std::vector<const HostBatch*>& hs, F get) {
  size_t m = 0;
  for (const HostBatch* h : hs) m = std::max(m, vbytes<T>(get(*h)));
  return m;
}
}  // namespace

DeviceBatch::DeviceBatch(const HostBatch& hb, const std::vector<const HostBatch*>& cap) {
  logits_.alloc(max_bytes<unsigned char>(
      cap, [](const HostBatch& h) -> const auto& { return h.logits; }));
#define LMS_CAP(buf, T, member) \
  buf.alloc(max_bytes<T>(       \
      cap, [](const HostBatch& h) -> const auto& { return h.member; }))
  LMS_CAP(temperature_, float, temperature);
  LMS_CAP(top_k_, int32_t, top_k);
  LMS_CAP(top_p_, float, top_p);
  LMS_CAP(min_p_, float, min_p);
  LMS_CAP(repetition_, float, repetition);
  LMS_CAP(frequency_, float, frequency);
  LMS_CAP(presence_, float, presence);
  LMS_CAP(seed_, uint64_t, seed);
  LMS_CAP(step_, uint64_t, step);
  LMS_CAP(substream_, uint32_t, substream);
  if (hb.has_mask) LMS_CAP(mask_, uint32_t, mask);
  if (hb.bias.used) {
    LMS_CAP(bias_off_, int64_t, bias.offsets);
    LMS_CAP(bias_tok_, int32_t, bias.tokens);
    LMS_CAP(bias_val_, float, bias.values);
  }
  if (hb.prompt.used) {
    LMS_CAP(prompt_off_, int64_t, prompt.offsets);
    LMS_CAP(prompt_tok_, int32_t, prompt.tokens);
  }
  if (hb.output.used) {
    LMS_CAP(output_off_, int64_t, output.offsets);
    LMS_CAP(output_tok_, int32_t, output.tokens);
  }
#undef LMS_CAP
  upload(hb, nullptr);
  LMS_CUDA(cudaDeviceSynchronize());
}

void DeviceBatch::upload(const HostBatch& hb, cudaStream_t st) {
  auto up = [&](DevBuf& d, const auto& v) {
    const size_t n = vbytes(v);
    if (n > d.size())
      throw std::runtime_error("DeviceBatch::upload: host array larger than the device buffer");
    if (n) LMS_CUDA(cudaMemcpyAsync(d.get(), v.data(), n, cudaMemcpyHostToDevice, st));
  };
  up(logits_, hb.logits);
  up(temperature_, hb.temperature);
  up(top_k_, hb.top_k);
  up(top_p_, hb.top_p);
  up(min_p_, hb.min_p);
  up(repetition_, hb.repetition);
  up(frequency_, hb.frequency);
  up(presence_, hb.presence);
  up(seed_, hb.seed);
  up(step_, hb.step);
  up(substream_, hb.substream);
  if (hb.has_mask) up(mask_, hb.mask);
  if (hb.bias.used) {
    up(bias_off_, hb.bias.offsets);
    up(bias_tok_, hb.bias.tokens);
    up(bias_val_, hb.bias.values);
  }
  if (hb.prompt.used) {
    up(prompt_off_, hb.prompt.offsets);
    up(prompt_tok_, hb.prompt.tokens);
  }
  if (hb.output.used) {
    up(output_off_, hb.output.offsets);
    up(output_tok_, hb.output.tokens);
  }
  // The same request as the host one, with device pointers.
  req_ = hb.request();
  req_.logits.data =
      logits_.as<unsigned char>() + static_cast<size_t>(hb.base) * dtype_bytes(hb.dtype);
  auto dev = [](auto*& p, const DevBuf& d) {
    using T = std::remove_const_t<std::remove_pointer_t<std::remove_reference_t<decltype(p)>>>;
    if (p) p = d.as<T>();
  };
  dev(req_.params.temperature, temperature_);
  dev(req_.params.top_k, top_k_);
  dev(req_.params.top_p, top_p_);
  dev(req_.params.min_p, min_p_);
  dev(req_.params.repetition_penalty, repetition_);
  dev(req_.params.frequency_penalty, frequency_);
  dev(req_.params.presence_penalty, presence_);
  dev(req_.params.seed, seed_);
  dev(req_.params.step, step_);
  dev(req_.params.substream, substream_);
  dev(req_.allowed_mask, mask_);
  dev(req_.logit_bias.offsets, bias_off_);
  dev(req_.logit_bias.tokens, bias_tok_);
  dev(req_.logit_bias.values, bias_val_);
  dev(req_.prompt_tokens.offsets, prompt_off_);
  dev(req_.prompt_tokens.tokens, prompt_tok_);
  dev(req_.output_tokens.offsets, output_off_);
  dev(req_.output_tokens.tokens, output_tok_);
}

HostOutputs::HostOutputs(int64_t b, int32_t n)
    : batch(b),
      top_n(n),
      tokens(static_cast<size_t>(b), 0x5a5a5a5a),
      status(static_cast<size_t>(b), 0x5a5a5a5a),
      kept(static_cast<size_t>(b), 0x5a5a5a5a),
      top_ids(static_cast<size_t>(b * n), 0x5a5a5a5a),
      logprob(static_cast<size_t>(b), 12345.5f),
      top_logprobs(static_cast<size_t>(b * n), 12345.5f) {}

lmsample::Outputs HostOutputs::outputs(bool optional) {
  lmsample::Outputs o;
  o.tokens = tokens.data();
  o.status = status.data();
  if (optional) {
    o.logprob = logprob.data();
    o.kept = kept.data();
  }
  if (top_n > 0) {
    o.top_ids = top_ids.data();
    o.top_logprobs = top_logprobs.data();
  }
  return o;
}

DeviceOutputs::DeviceOutputs(int64_t b, int32_t n) : batch(b), top_n(n) {
  const auto ub = static_cast<size_t>(b), nt = static_cast<size_t>(b * n);
  tokens.alloc(ub * 4);
  status.alloc(ub * 4);
  logprob.alloc(ub * 4);
  kept.alloc(ub * 4);
  if (n > 0) {
    top_ids.alloc(nt * 4);
    top_logprobs.alloc(nt * 4);
  }
}

lmsample::Outputs DeviceOutputs::outputs(bool optional) const {
  lmsample::Outputs o;
  o.tokens = tokens.as<int32_t>();
  o.status = status.as<int32_t>();
  if (optional) {
    o.logprob = logprob.as<float>();
    o.kept = kept.as<int32_t>();
  }
  if (top_n > 0) {
    o.top_ids = top_ids.as<int32_t>();
    o.top_logprobs = top_logprobs.as<float>();
  }
  return o;
}

void DeviceOutputs::poison(cudaStream_t st) {
  for (DevBuf* d : {&tokens, &status, &logprob, &kept, &top_ids, &top_logprobs})
    if (d->get()) LMS_CUDA(cudaMemsetAsync(d->get(), kPoisonByte, d->size(), st));
}

void DeviceOutputs::download(HostOutputs& ho, int64_t first) const {
  const auto n = static_cast<size_t>(ho.batch);
  const auto f = static_cast<size_t>(first);
  LMS_CUDA(cudaMemcpy(ho.tokens.data(), tokens.as<int32_t>() + f, n * 4, cudaMemcpyDeviceToHost));
  LMS_CUDA(cudaMemcpy(ho.status.data(), status.as<int32_t>() + f, n * 4, cudaMemcpyDeviceToHost));
  LMS_CUDA(cudaMemcpy(ho.logprob.data(), logprob.as<float>() + f, n * 4, cudaMemcpyDeviceToHost));
  LMS_CUDA(cudaMemcpy(ho.kept.data(), kept.as<int32_t>() + f, n * 4, cudaMemcpyDeviceToHost));
  if (ho.top_n > 0) {
    const size_t t = static_cast<size_t>(ho.top_n);
    LMS_CUDA(cudaMemcpy(ho.top_ids.data(), top_ids.as<int32_t>() + f * t, n * t * 4,
                        cudaMemcpyDeviceToHost));
    LMS_CUDA(cudaMemcpy(ho.top_logprobs.data(), top_logprobs.as<float>() + f * t, n * t * 4,
                        cudaMemcpyDeviceToHost));
  }
}

// ---- running ---------------------------------------------------------------------------------
lmsample::Status run_cpu(const lmsample::Request& req, HostOutputs& out, bool optional) {
  lmsample::ExecConfig cfg;
  cfg.backend = lmsample::Backend::kCpu;
  cfg.cpu_threads = 0;
  const size_t bytes = lmsample::workspace_size(req, cfg);
  std::unique_ptr<unsigned char[]> ws(new unsigned char[bytes + 64]);
  return lmsample::sample(req, out.outputs(optional), ws.get(), bytes, cfg);
}

GpuRun run_gpu(const lmsample::Request& dreq, DeviceOutputs& out, bool optional,
               cudaStream_t stream, Workspace& ws, double timeout_s, const std::string& what,
               lmsample::GpuKeys keys) {
  lmsample::ExecConfig cfg;
  cfg.backend = lmsample::Backend::kCuda;
  cfg.stream = stream;
  cfg.gpu_keys = keys;
  out.poison(stream);
  const size_t bytes = lmsample::workspace_size(dreq, cfg);
  void* w = ws.get(bytes);
  GpuRun r;
  const auto t0 = Clock::now();
  {
    WatchdogGuard guard(timeout_s + 30.0, "lmsample::sample (kCuda) for " + what);
    r.status = lmsample::sample(dreq, out.outputs(optional), w, bytes, cfg);
    wait_stream(stream, timeout_s, "lmsample::sample (kCuda) for " + what);
  }
  r.ms = ms_since(t0);
  return r;
}

// ---- comparison ------------------------------------------------------------------------------
void Compared::add(const Compared& o) {
  rows += o.rows;
  mismatched += o.mismatched;
  unwritten += o.unwritten;
  logprob_exact += o.logprob_exact;
  if (report.size() < 4000) report += o.report;
}

namespace {
bool lp_close(float a, float b) {
  if (float_to_bits(a) == float_to_bits(b)) return true;
  if (std::isnan(a) || std::isnan(b)) return false;
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(static_cast<double>(a) - static_cast<double>(b)) <=
         1e-6 * std::max(1.0, std::fabs(static_cast<double>(b)));
}
std::string fstr(float f) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g (0x%08x)", static_cast<double>(f), float_to_bits(f));
  return buf;
}
}  // namespace

void compare_row(const HostBatch& hb, int64_t hb_row, const HostOutputs& gpu, int64_t g,
                 const HostOutputs& cpu, int64_t c, bool optional, Compared& acc) {
  const auto gi = static_cast<size_t>(g), ci = static_cast<size_t>(c);
  const int32_t n = gpu.top_n;
  auto poisoned_i = [](int32_t v) { return static_cast<uint32_t>(v) == kPoisonBits; };
  auto poisoned_f = [](float v) { return float_to_bits(v) == kPoisonBits; };
  int64_t unwritten = 0;
  std::string unwritten_what;
  auto uw = [&](bool p, const char* name) {
    if (p) {
      ++unwritten;
      if (unwritten_what.empty()) unwritten_what = name;
    }
  };
  uw(poisoned_i(gpu.tokens[gi]), "tokens");
  uw(poisoned_i(gpu.status[gi]), "status");
  if (optional) {
    uw(poisoned_i(gpu.kept[gi]), "kept");
    uw(poisoned_f(gpu.logprob[gi]), "logprob");
  }
  for (int32_t j = 0; j < n; ++j) {
    uw(poisoned_i(gpu.top_ids[gi * n + j]), "top_ids");
    uw(poisoned_f(gpu.top_logprobs[gi * n + j]), "top_logprobs");
  }

  std::string what;
  if (gpu.status[gi] != cpu.status[ci]) {
    what = "status gpu " + std::to_string(gpu.status[gi]) + " (" +
           lmsample::row_status_name(gpu.status[gi]) + ") cpu " + std::to_string(cpu.status[ci]) +
           " (" + lmsample::row_status_name(cpu.status[ci]) + ")";
  } else if (gpu.tokens[gi] != cpu.tokens[ci]) {
    what = "token gpu " + std::to_string(gpu.tokens[gi]) + " cpu " + std::to_string(cpu.tokens[ci]);
  } else if (optional && gpu.kept[gi] != cpu.kept[ci]) {
    what = "kept gpu " + std::to_string(gpu.kept[gi]) + " cpu " + std::to_string(cpu.kept[ci]);
  } else if (optional && !lp_close(gpu.logprob[gi], cpu.logprob[ci])) {
    what = "logprob gpu " + fstr(gpu.logprob[gi]) + " cpu " + fstr(cpu.logprob[ci]);
  }
  bool exact = !optional || float_to_bits(gpu.logprob[gi]) == float_to_bits(cpu.logprob[ci]);
  for (int32_t j = 0; j < n; ++j) {
    const size_t a = gi * static_cast<size_t>(n) + static_cast<size_t>(j);
    const size_t b = ci * static_cast<size_t>(n) + static_cast<size_t>(j);
    exact = exact && float_to_bits(gpu.top_logprobs[a]) == float_to_bits(cpu.top_logprobs[b]);
    if (!what.empty()) continue;
    if (gpu.top_ids[a] != cpu.top_ids[b]) {
      what = "top_ids[" + std::to_string(j) + "] gpu " + std::to_string(gpu.top_ids[a]) + " cpu " +
             std::to_string(cpu.top_ids[b]);
    } else if (!lp_close(gpu.top_logprobs[a], cpu.top_logprobs[b])) {
      what = "top_logprobs[" + std::to_string(j) + "] gpu " + fstr(gpu.top_logprobs[a]) + " cpu " +
             fstr(cpu.top_logprobs[b]);
    }
  }
  acc.rows += 1;
  acc.unwritten += unwritten;
  if (exact && (optional || n > 0)) acc.logprob_exact += 1;
  if (!what.empty() || unwritten) {
    acc.mismatched += what.empty() ? 0 : 1;
    if (acc.report.size() < 4000) {
      acc.report +=
          "\n  row " + std::to_string(hb_row) + ": " +
          (what.empty() ? "" : what + (unwritten ? "; " : "")) +
          (unwritten ? std::to_string(unwritten) +
                           " output element(s) not written (first: " + unwritten_what + ")"
                     : "") +
          "\n    " + hb.describe_row(hb_row);
    }
  }
}

Compared compare_all(const HostBatch& hb, const HostOutputs& gpu, const HostOutputs& cpu,
                     bool optional) {
  Compared c;
  for (int64_t r = 0; r < hb.batch; ++r) compare_row(hb, r, gpu, r, cpu, r, optional, c);
  return c;
}

std::string bitwise_difference(const HostOutputs& a, const HostOutputs& b, bool optional) {
  for (int64_t r = 0; r < a.batch; ++r) {
    const auto i = static_cast<size_t>(r);
    bool same = a.tokens[i] == b.tokens[i] && a.status[i] == b.status[i];
    if (optional)
      same = same && a.kept[i] == b.kept[i] &&
             float_to_bits(a.logprob[i]) == float_to_bits(b.logprob[i]);
    for (int32_t j = 0; j < a.top_n; ++j) {
      const size_t k = i * static_cast<size_t>(a.top_n) + static_cast<size_t>(j);
      same = same && a.top_ids[k] == b.top_ids[k] &&
             float_to_bits(a.top_logprobs[k]) == float_to_bits(b.top_logprobs[k]);
    }
    if (!same) {
      return "row " + std::to_string(r) + ": token " + std::to_string(a.tokens[i]) + " vs " +
             std::to_string(b.tokens[i]) + ", status " + std::to_string(a.status[i]) + " vs " +
             std::to_string(b.status[i]) + ", kept " + std::to_string(a.kept[i]) + " vs " +
             std::to_string(b.kept[i]) + ", logprob " + fstr(a.logprob[i]) + " vs " +
             fstr(b.logprob[i]);
    }
  }
  return "";
}

// ---- fixture ---------------------------------------------------------------------------------
void GpuTest::SetUp() {
  const std::string why = no_device_reason();
  if (!why.empty())
    GTEST_SKIP() << "no CUDA device: " << why << " (the GPU tests need an NVIDIA GPU)";
  ASSERT_TRUE(lmsample::backend_available(lmsample::Backend::kCuda))
      << "a CUDA device is present but lmsample::backend_available(kCuda) is false";
  LMS_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

void GpuTest::TearDown() {
  if (stream_) {
    wait_stream(stream_, call_timeout_s(), "the test's stream at teardown");
    (void)cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }
  if (no_device_reason().empty()) {
    const cudaError_t e = cudaGetLastError();
    EXPECT_EQ(e, cudaSuccess) << "CUDA error left behind: " << cudaGetErrorName(e);
  }
}

Compared GpuTest::run_group(const GroupCfg& cfg) {
  const auto t0 = Clock::now();
  const HostBatch hb = make_batch(cfg);
  const double gen_ms = ms_since(t0);

  HostOutputs cpu(cfg.batch, cfg.top_n);
  const auto t1 = Clock::now();
  const lmsample::Status cs = run_cpu(hb.request(), cpu, cfg.optional_outputs);
  const double cpu_ms = ms_since(t1);
  EXPECT_TRUE(cs.code == lmsample::Code::kOk || cs.code == lmsample::Code::kInvalidRowParameter)
      << cfg.name << ": CPU backend returned " << static_cast<int>(cs.code) << ": " << cs.message;

  DeviceBatch db(hb);
  DeviceOutputs dout(cfg.batch, cfg.top_n);
  const GpuRun g =
      run_gpu(db.request(), dout, cfg.optional_outputs, cfg.default_stream ? nullptr : stream_, ws_,
              call_timeout_s(), cfg.name, cfg.gpu_keys);
  Compared c;
  EXPECT_EQ(g.status.code, lmsample::Code::kOk)
      << cfg.name << ": GPU backend returned " << static_cast<int>(g.status.code) << ": "
      << g.status.message
      << " (row parameter errors must be reported through the row statuses only)";
  if (g.status.code != lmsample::Code::kOk) {
    c.rows = cfg.batch;
    c.mismatched = cfg.batch;
    return c;
  }
  HostOutputs gpu(cfg.batch, cfg.top_n);
  dout.download(gpu);
  c = compare_all(hb, gpu, cpu, cfg.optional_outputs);
  EXPECT_EQ(c.mismatched, 0) << cfg.name << " (" << dtype_name(cfg.dtype) << " V=" << cfg.vocab
                             << " B=" << cfg.batch << ", seed " << cfg.seed << "): " << c.mismatched
                             << " rows differ between GPU and CPU:" << c.report;
  EXPECT_EQ(c.unwritten, 0) << cfg.name << ": " << c.unwritten
                            << " GPU output elements were left unwritten (still 0x7f7f7f7f)";
  int64_t bad_rows = 0, empty_rows = 0;
  for (const int32_t s : cpu.status) {
    bad_rows += s >= lmsample::kRowBadTemperature;
    empty_rows += s == lmsample::kRowEmpty;
  }
  std::printf(
      "[   gpu    ] %-30s %-4s V=%-8lld B=%-4lld top=%-2d%s%s: %lld/%lld rows equal "
      "(%lld logprob-exact, %lld empty, %lld bad-param) | gen %.0f ms, cpu %.0f ms, gpu %.2f ms\n",
      cfg.name.c_str(), dtype_name(cfg.dtype), static_cast<long long>(cfg.vocab),
      static_cast<long long>(cfg.batch), cfg.top_n,
      cfg.optional_outputs ? "" : " (no optional outputs)",
      cfg.default_stream ? " (default stream)" : "", static_cast<long long>(c.rows - c.mismatched),
      static_cast<long long>(c.rows), static_cast<long long>(c.logprob_exact),
      static_cast<long long>(empty_rows), static_cast<long long>(bad_rows), gen_ms, cpu_ms, g.ms);
  std::fflush(stdout);
  return c;
}

void GpuTest::summary(const Compared& c, const std::string& extra) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::printf(
      "[ summary  ] %s.%s: %lld rows compared, %lld differ, %lld unwritten outputs, on %s%s%s\n",
      info->test_suite_name(), info->name(), static_cast<long long>(c.rows),
      static_cast<long long>(c.mismatched), static_cast<long long>(c.unwritten),
      device_description().c_str(), extra.empty() ? "" : "; ", extra.c_str());
  std::fflush(stdout);
}

}  // namespace lmsgpu
