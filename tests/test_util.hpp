// Shared helpers of the tests: rows described one by one (RowSpec), assembled into a Request with
// the layout a test asks for (Batch), output buffers (OutBuf), and a deterministic random source.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "lmsample/lmsample.hpp"

namespace lmstest {

using lmsample::DType;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

//! float -> bfloat16, round to nearest even (NaN stays a quiet NaN).
inline uint16_t float_to_bf16(float f) {
  uint32_t u = bits_of(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

//! float -> IEEE binary16, round to nearest even, with subnormals, overflow to inf and NaN.
inline uint16_t float_to_f16(float f) {
  const uint32_t u = bits_of(f);
  const auto sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: inf
  if (a < 0x38800000u) {  // below 2^-14: subnormal half (or zero); value = a * 2^-24 rounded
    if (a < 0x33000000u) return sign;  // below 2^-25: rounds to zero
    const uint32_t e = a >> 23;
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // m * 2^(e-150) / 2^-24 = m >> (126 - e)
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t r = a - 0x38000000u;  // rebias exponent 127 -> 15 (in float bit positions)
  r += 0xfffu + ((r >> 13) & 1u);
  return static_cast<uint16_t>(sign | (r >> 13));
}

//! One row of a request, described on its own.
struct RowSpec {
  std::vector<float> f32;     //!< logits when the batch is kFloat32
  std::vector<uint16_t> h16;  //!< logits when the batch is kBFloat16 / kFloat16
  float temperature = 1.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition = 1.0f;
  float frequency = 0.0f;
  float presence = 0.0f;
  uint64_t seed = 0;
  uint64_t step = 0;
  uint32_t substream = 0;
  std::vector<uint32_t> mask;  //!< allowed-token words, empty = everything allowed
  std::vector<std::pair<int32_t, float>> bias;
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;
};

//! Layout choices of a batch (none of them may change any row's result).
struct Layout {
  int64_t stride_extra = 0;         //!< row_stride = V + stride_extra (0: row_stride left 0)
  int64_t mask_extra_words = 0;     //!< mask_row_words = ceil(V/32) + this (0: left 0)
  int64_t csr_base = 0;             //!< offsets[0] of every CSR array (junk entries before it)
  bool always_pass_params = false;  //!< pass every parameter array even when all defaults
  //! a parameter whose value is the same in every row goes to RowParams::defaults, not an array
  bool uniform_as_defaults = false;
};

//! A Request assembled from RowSpecs; owns every buffer the Request points into.
class Batch {
 public:
  Batch(DType dtype, int64_t vocab, std::vector<RowSpec> rows, int32_t top_logprobs = 0,
        Layout layout = {})
      : dtype_(dtype), vocab_(vocab), rows_(std::move(rows)), top_(top_logprobs), layout_(layout) {
    build();
  }
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;

  const lmsample::Request& request() const { return req_; }
  lmsample::Request& mutable_request() { return req_; }
  int64_t batch() const { return static_cast<int64_t>(rows_.size()); }
  int64_t vocab() const { return vocab_; }
  const std::vector<RowSpec>& rows() const { return rows_; }

 private:
  void build() {
    const int64_t b = batch();
    const int64_t stride = vocab_ + layout_.stride_extra;
    if (dtype_ == DType::kFloat32) {
      f32_.assign(static_cast<size_t>(b * stride), -12345.0f);  // padding must never be read
      for (int64_t r = 0; r < b; ++r) {
        std::copy(rows_[r].f32.begin(), rows_[r].f32.end(), f32_.begin() + r * stride);
      }
    } else {
      h16_.assign(static_cast<size_t>(b * stride), 0x7c00u);  // +inf padding: would show up
      for (int64_t r = 0; r < b; ++r) {
        std::copy(rows_[r].h16.begin(), rows_[r].h16.end(), h16_.begin() + r * stride);
      }
    }
    req_ = lmsample::Request{};
    req_.logits.data = dtype_ == DType::kFloat32 ? static_cast<const void*>(f32_.data())
                                                 : static_cast<const void*>(h16_.data());
    req_.logits.dtype = dtype_;
    req_.logits.batch = b;
    req_.logits.vocab = vocab_;
    req_.logits.row_stride = layout_.stride_extra == 0 ? 0 : stride;
    req_.top_logprobs = top_;

    auto param = [&](auto member, auto dflt, auto& store, auto& uniform) -> decltype(store.data()) {
      bool any = layout_.always_pass_params, same = !rows_.empty();
      store.clear();
      for (const RowSpec& r : rows_) {
        store.push_back(r.*member);
        if (!(r.*member == dflt)) any = true;  // NaN counts as non-default too
        same = same && std::memcmp(&(r.*member), &(rows_[0].*member), sizeof dflt) == 0;
      }
      if (layout_.uniform_as_defaults && same) {
        uniform = rows_[0].*member;
        return nullptr;
      }
      return any ? store.data() : nullptr;
    };
    lmsample::RowDefaults& d = req_.params.defaults;
    req_.params.temperature = param(&RowSpec::temperature, 1.0f, temperature_, d.temperature);
    req_.params.top_k = param(&RowSpec::top_k, 0, top_k_, d.top_k);
    req_.params.top_p = param(&RowSpec::top_p, 1.0f, top_p_, d.top_p);
    req_.params.min_p = param(&RowSpec::min_p, 0.0f, min_p_, d.min_p);
    req_.params.repetition_penalty =
        param(&RowSpec::repetition, 1.0f, repetition_, d.repetition_penalty);
    req_.params.frequency_penalty =
        param(&RowSpec::frequency, 0.0f, frequency_, d.frequency_penalty);
    req_.params.presence_penalty = param(&RowSpec::presence, 0.0f, presence_, d.presence_penalty);
    req_.params.seed = param(&RowSpec::seed, uint64_t{0}, seed_, d.seed);
    req_.params.step = param(&RowSpec::step, uint64_t{0}, step_, d.step);
    req_.params.substream = param(&RowSpec::substream, uint32_t{0}, substream_, d.substream);

    bool any_mask = false;
    for (const RowSpec& r : rows_) any_mask = any_mask || !r.mask.empty();
    if (any_mask) {
      const int64_t words = (vocab_ + 31) / 32 + layout_.mask_extra_words;
      mask_.assign(static_cast<size_t>(b * words), 0u);
      for (int64_t r = 0; r < b; ++r) {
        for (int64_t w = 0; w < words; ++w) {
          uint32_t word = 0xffffffffu;
          if (!rows_[r].mask.empty())
            word = w < static_cast<int64_t>(rows_[r].mask.size()) ? rows_[r].mask[w] : 0u;
          mask_[r * words + w] = word;
        }
      }
      req_.allowed_mask = mask_.data();
      req_.mask_row_words = layout_.mask_extra_words == 0 ? 0 : words;
    }

    // CSR arrays, with `csr_base` junk entries (out-of-range ids) before the first row's.
    bool any_bias = false, any_prompt = false, any_output = false;
    for (const RowSpec& r : rows_) {
      any_bias = any_bias || !r.bias.empty();
      any_prompt = any_prompt || !r.prompt.empty();
      any_output = any_output || !r.output.empty();
    }
    if (any_bias) {
      bias_off_.assign(1, layout_.csr_base);
      bias_tok_.assign(static_cast<size_t>(layout_.csr_base), -7);
      bias_val_.assign(static_cast<size_t>(layout_.csr_base), kNaN);
      for (const RowSpec& r : rows_) {
        for (const auto& [t, v] : r.bias) {
          bias_tok_.push_back(t);
          bias_val_.push_back(v);
        }
        bias_off_.push_back(static_cast<int64_t>(bias_tok_.size()));
      }
      req_.logit_bias = {bias_off_.data(), bias_tok_.data(), bias_val_.data()};
    }
    auto history = [&](std::vector<int32_t> RowSpec::*member, std::vector<int64_t>& off,
                       std::vector<int32_t>& tok) {
      off.assign(1, layout_.csr_base);
      tok.assign(static_cast<size_t>(layout_.csr_base), -7);
      for (const RowSpec& r : rows_) {
        tok.insert(tok.end(), (r.*member).begin(), (r.*member).end());
        off.push_back(static_cast<int64_t>(tok.size()));
      }
      return lmsample::SparseRows{off.data(), tok.data(), nullptr};
    };
    if (any_prompt) req_.prompt_tokens = history(&RowSpec::prompt, prompt_off_, prompt_tok_);
    if (any_output) req_.output_tokens = history(&RowSpec::output, output_off_, output_tok_);
  }

  DType dtype_;
  int64_t vocab_;
  std::vector<RowSpec> rows_;
  int32_t top_;
  Layout layout_;
  lmsample::Request req_;
  std::vector<float> f32_;
  std::vector<uint16_t> h16_;
  std::vector<float> temperature_, top_p_, min_p_, repetition_, frequency_, presence_;
  std::vector<int32_t> top_k_;
  std::vector<uint64_t> seed_, step_;
  std::vector<uint32_t> substream_;
  std::vector<uint32_t> mask_;
  std::vector<int64_t> bias_off_, prompt_off_, output_off_;
  std::vector<int32_t> bias_tok_, prompt_tok_, output_tok_;
  std::vector<float> bias_val_;
};

//! Output buffers, poisoned so that anything left unwritten is visible.
struct OutBuf {
  static constexpr int32_t kPoisonI = 0x5a5a5a5a;
  static constexpr float kPoisonF = 12345.5f;

  OutBuf(int64_t batch, int32_t top)
      : b(batch),
        n_top(top),
        tokens(static_cast<size_t>(batch), kPoisonI),
        status(static_cast<size_t>(batch), kPoisonI),
        kept(static_cast<size_t>(batch), kPoisonI),
        logprob(static_cast<size_t>(batch), kPoisonF),
        top_ids(static_cast<size_t>(batch * top), kPoisonI),
        top_logprobs(static_cast<size_t>(batch * top), kPoisonF) {}

  lmsample::Outputs outputs() {
    lmsample::Outputs o;
    o.tokens = tokens.data();
    o.status = status.data();
    o.logprob = logprob.data();
    o.kept = kept.data();
    o.top_ids = n_top > 0 ? top_ids.data() : nullptr;
    o.top_logprobs = n_top > 0 ? top_logprobs.data() : nullptr;
    return o;
  }
  bool untouched() const {
    for (const int32_t v : tokens)
      if (v != kPoisonI) return false;
    for (const int32_t v : status)
      if (v != kPoisonI) return false;
    for (const int32_t v : kept)
      if (v != kPoisonI) return false;
    for (const float v : logprob)
      if (bits_of(v) != bits_of(kPoisonF)) return false;
    for (const int32_t v : top_ids)
      if (v != kPoisonI) return false;
    for (const float v : top_logprobs)
      if (bits_of(v) != bits_of(kPoisonF)) return false;
    return true;
  }

  int64_t b;
  int32_t n_top;
  std::vector<int32_t> tokens, status, kept;
  std::vector<float> logprob;
  std::vector<int32_t> top_ids;
  std::vector<float> top_logprobs;
};

//! Runs the CPU backend with a workspace of exactly workspace_size() bytes.
inline lmsample::Status run_cpu(const lmsample::Request& req, OutBuf& out, int threads = 1) {
  lmsample::ExecConfig cfg;
  cfg.backend = lmsample::Backend::kCpu;
  cfg.cpu_threads = threads;
  const size_t bytes = lmsample::workspace_size(req, cfg);
  std::vector<unsigned char> ws(bytes + 1);  // +1: a valid pointer even for 0 bytes
  return lmsample::sample(req, out.outputs(), ws.data(), bytes, cfg);
}

//! Sets LMSAMPLE_CPU_ISA (the CPU backend's instruction-set build: "baseline" forces the portable
//! one) for its lifetime; null leaves the variable unset. Restores the previous value.
class ScopedIsa {
 public:
  explicit ScopedIsa(const char* isa) {
    const char* old = std::getenv("LMSAMPLE_CPU_ISA");
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (isa)
      ::setenv("LMSAMPLE_CPU_ISA", isa, 1);
    else
      ::unsetenv("LMSAMPLE_CPU_ISA");
  }
  ~ScopedIsa() {
    if (had_)
      ::setenv("LMSAMPLE_CPU_ISA", old_.c_str(), 1);
    else
      ::unsetenv("LMSAMPLE_CPU_ISA");
  }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;

 private:
  bool had_ = false;
  std::string old_;
};

//! Deterministic random source of the tests.
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  double uniform(double lo = 0.0, double hi = 1.0) {
    return std::uniform_real_distribution<double>(lo, hi)(gen_);
  }
  double normal(double mean = 0.0, double sd = 1.0) {
    return std::normal_distribution<double>(mean, sd)(gen_);
  }
  int64_t range(int64_t lo, int64_t hi) {  // inclusive
    return std::uniform_int_distribution<int64_t>(lo, hi)(gen_);
  }
  bool chance(double p) { return uniform() < p; }
  uint64_t u64() { return gen_(); }
  std::mt19937_64& engine() { return gen_; }

 private:
  std::mt19937_64 gen_;
};

//! Converts float logits to the batch's storage (f32 kept as is, else bf16/f16 bits).
inline void set_logits(RowSpec& row, DType dtype, const std::vector<float>& x) {
  row.f32.clear();
  row.h16.clear();
  if (dtype == DType::kFloat32) {
    row.f32 = x;
  } else {
    row.h16.reserve(x.size());
    for (const float v : x)
      row.h16.push_back(dtype == DType::kBFloat16 ? float_to_bf16(v) : float_to_f16(v));
  }
}

inline const char* dtype_name(DType d) {
  return d == DType::kFloat32 ? "f32" : d == DType::kBFloat16 ? "bf16" : "f16";
}

//! Knobs of random_row.
struct RowMix {
  double greedy = 0.2;
  double specials = 0.15;  //!< NaN / -inf / +inf sprinkled, or whole special rows
  double mask = 0.25;
  double bias = 0.25;
  double penalties = 0.25;
  double bad_param = 0.03;     //!< an invalid parameter
  double bad_token_id = 0.02;  //!< a bias / history id outside [0, V)
};

//! Float logits of one of several shapes: Gaussian bodies, quantized values (many exact ties),
//! a handful of distinct values, heavy spikes, a very wide range.
inline std::vector<float> random_logits(Rng& rng, int64_t v) {
  std::vector<float> x(static_cast<size_t>(v));
  const double mean = rng.uniform(-8.0, 8.0);
  switch (rng.range(0, 5)) {
    case 0: {
      const double sd = rng.uniform(0.3, 6.0);
      for (float& xi : x) xi = static_cast<float>(rng.normal(mean, sd));
      break;
    }
    case 1: {  // quantized: steps of 1/4 or 1
      const double q = rng.chance(0.5) ? 4.0 : 1.0;
      const double sd = rng.uniform(0.5, 4.0);
      for (float& xi : x) xi = static_cast<float>(std::round(rng.normal(mean, sd) * q) / q);
      break;
    }
    case 2: {  // a few distinct values
      const int64_t k = rng.range(1, 5);
      std::vector<float> vals;
      for (int64_t i = 0; i < k; ++i) vals.push_back(static_cast<float>(rng.normal(mean, 3.0)));
      for (float& xi : x) xi = vals[static_cast<size_t>(rng.range(0, k - 1))];
      break;
    }
    case 3: {  // an LLM-like row: body plus a few strong tokens
      const double sd = rng.uniform(1.0, 3.0);
      for (float& xi : x) xi = static_cast<float>(rng.normal(mean, sd));
      const int64_t spikes = rng.range(1, 10);
      for (int64_t i = 0; i < spikes; ++i)
        x[static_cast<size_t>(rng.range(0, v - 1))] += static_cast<float>(rng.uniform(5.0, 20.0));
      break;
    }
    case 4: {  // very wide
      for (float& xi : x) xi = static_cast<float>(rng.uniform(-100.0, 100.0));
      break;
    }
    default: {  // nearly flat: tiny differences around one value
      for (float& xi : x) xi = static_cast<float>(mean + rng.normal(0.0, 1e-5));
      break;
    }
  }
  return x;
}

//! A random row with mixed parameters (see RowMix), in the storage of `dtype`.
inline RowSpec random_row(Rng& rng, DType dtype, int64_t v, const RowMix& mix = {}) {
  RowSpec row;
  std::vector<float> x = random_logits(rng, v);
  if (rng.chance(mix.specials)) {
    switch (rng.range(0, 6)) {
      case 0:
        for (float& xi : x) xi = -kInf;
        break;  // all -inf: EMPTY
      case 1:
        for (float& xi : x) xi = kNaN;
        break;   // all NaN: EMPTY
      case 2: {  // one or a few +inf
        const int64_t n = rng.range(1, std::min<int64_t>(v, 5));
        for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(rng.range(0, v - 1))] = kInf;
        break;
      }
      default: {  // sprinkle NaN / -inf / +-0
        const int64_t n = rng.range(1, std::max<int64_t>(1, v / 3));
        for (int64_t i = 0; i < n; ++i) {
          const auto t = static_cast<size_t>(rng.range(0, v - 1));
          const int64_t what = rng.range(0, 3);
          x[t] = what == 0 ? kNaN : what == 1 ? -kInf : what == 2 ? -0.0f : 0.0f;
        }
        break;
      }
    }
  }
  set_logits(row, dtype, x);

  // temperature
  if (rng.chance(mix.greedy)) {
    row.temperature = 0.0f;
  } else {
    switch (rng.range(0, 5)) {
      case 0:
        row.temperature = 1.0f;
        break;
      case 1:
        row.temperature = 0.7f;
        break;
      case 2:
        row.temperature = static_cast<float>(rng.uniform(0.05, 3.0));
        break;
      case 3:
        row.temperature = 1e-3f;
        break;
      case 4:
        row.temperature = 50.0f;
        break;
      default:
        row.temperature = static_cast<float>(std::exp(rng.uniform(-12.0, 6.0)));
        break;
    }
  }
  // top-k
  if (rng.chance(0.45)) {
    switch (rng.range(0, 6)) {
      case 0:
        row.top_k = 1;
        break;
      case 1:
        row.top_k = static_cast<int32_t>(rng.range(1, std::min<int64_t>(v, 64)));
        break;
      case 2:
        row.top_k = static_cast<int32_t>(v);
        break;
      case 3:
        row.top_k = static_cast<int32_t>(v + rng.range(0, 100));
        break;
      case 4:
        row.top_k = static_cast<int32_t>(std::max<int64_t>(1, v - rng.range(0, 3)));
        break;
      case 5:
        row.top_k = static_cast<int32_t>(rng.range(1, std::min<int64_t>(v, 4000)));
        break;  // > 1024 too
      default:
        row.top_k = static_cast<int32_t>(rng.range(1, v));
        break;
    }
  }
  // top-p
  if (rng.chance(0.45)) {
    switch (rng.range(0, 5)) {
      case 0:
        row.top_p = static_cast<float>(rng.uniform(0.05, 0.99));
        break;
      case 1:
        row.top_p = 1e-6f;
        break;
      case 2:
        row.top_p = 1e-30f;
        break;
      case 3:
        row.top_p = 0.99999994f;
        break;  // largest float below 1
      case 4:
        row.top_p = rng.chance(0.5) ? 1.0f : 1.5f;
        break;
      default:
        row.top_p = static_cast<float>(rng.uniform(0.5, 0.999));
        break;
    }
  }
  // min-p
  if (rng.chance(0.35)) {
    switch (rng.range(0, 3)) {
      case 0:
        row.min_p = static_cast<float>(rng.uniform(0.0, 0.5));
        break;
      case 1:
        row.min_p = 1.0f;
        break;
      case 2:
        row.min_p = 1e-8f;
        break;
      default:
        row.min_p = static_cast<float>(std::exp(rng.uniform(-25.0, 0.0)));
        break;
    }
  }
  // bitmask
  if (rng.chance(mix.mask)) {
    const int64_t words = (v + 31) / 32;
    const double density = rng.chance(0.1)   ? 0.0
                           : rng.chance(0.3) ? 0.02
                           : rng.chance(0.5) ? 0.5
                                             : 0.97;
    row.mask.assign(static_cast<size_t>(words), 0u);
    for (int64_t t = 0; t < v; ++t) {
      if (rng.chance(density)) row.mask[static_cast<size_t>(t / 32)] |= 1u << (t % 32);
    }
    // bits past V are set at random: they must be ignored
    for (int64_t t = v; t < words * 32; ++t) {
      if (rng.chance(0.5)) row.mask[static_cast<size_t>(t / 32)] |= 1u << (t % 32);
    }
  }
  // logit bias (duplicates add up in order; rare +-inf and NaN values)
  if (rng.chance(mix.bias)) {
    const int64_t n = rng.range(1, 12);
    for (int64_t i = 0; i < n; ++i) {
      const auto t = static_cast<int32_t>(rng.range(0, v - 1));
      float b = static_cast<float>(rng.uniform(-10.0, 10.0));
      if (rng.chance(0.05)) b = rng.chance(0.5) ? kInf : -kInf;
      if (rng.chance(0.02)) b = kNaN;
      row.bias.emplace_back(t, b);
      if (rng.chance(0.3)) row.bias.emplace_back(t, static_cast<float>(rng.uniform(-3.0, 3.0)));
    }
  }
  // penalties with token histories (repeats in the output count)
  if (rng.chance(mix.penalties)) {
    row.repetition = rng.chance(0.2) ? 1.0f : static_cast<float>(rng.uniform(0.5, 2.0));
    row.frequency = rng.chance(0.3) ? 0.0f : static_cast<float>(rng.uniform(-2.0, 2.0));
    row.presence = rng.chance(0.3) ? 0.0f : static_cast<float>(rng.uniform(-2.0, 2.0));
    const int64_t np = rng.range(0, 40), no = rng.range(0, 40);
    const int64_t span = std::min<int64_t>(v, rng.chance(0.5) ? 20 : v);  // small span: repeats
    for (int64_t i = 0; i < np; ++i)
      row.prompt.push_back(static_cast<int32_t>(rng.range(0, span - 1)));
    for (int64_t i = 0; i < no; ++i)
      row.output.push_back(static_cast<int32_t>(rng.range(0, span - 1)));
  }
  row.seed = rng.u64();
  row.step = rng.chance(0.5) ? static_cast<uint64_t>(rng.range(0, 5000)) : rng.u64();
  row.substream = rng.chance(0.8) ? 0u : static_cast<uint32_t>(rng.u64());

  if (rng.chance(mix.bad_param)) {
    switch (rng.range(0, 6)) {
      case 0:
        row.temperature = rng.chance(0.5) ? -1.0f : kNaN;
        break;
      case 1:
        row.top_k = -static_cast<int32_t>(rng.range(1, 10));
        break;
      case 2:
        row.top_p = rng.chance(0.5) ? 0.0f : kNaN;
        break;
      case 3:
        row.min_p = rng.chance(0.5) ? 1.5f : -0.25f;
        break;
      case 4:
        row.repetition = rng.chance(0.5) ? 0.0f : kInf;
        break;
      case 5:
        row.frequency = 2.5f;
        break;
      default:
        row.presence = -3.0f;
        break;
    }
  }
  if (rng.chance(mix.bad_token_id)) {
    const int32_t bad = rng.chance(0.5) ? -1 : static_cast<int32_t>(v + rng.range(0, 3));
    switch (rng.range(0, 2)) {
      case 0:
        row.bias.emplace_back(bad, 1.0f);
        break;
      case 1:
        row.prompt.push_back(bad);
        break;
      default:
        row.output.push_back(bad);
        break;
    }
  }
  return row;
}

//! A short description of a row's parameters, for failure messages.
inline std::string describe(const RowSpec& r) {
  std::string s =
      "T=" + std::to_string(r.temperature) + " k=" + std::to_string(r.top_k) +
      " p=" + std::to_string(r.top_p) + " min_p=" + std::to_string(r.min_p) +
      " rep=" + std::to_string(r.repetition) + " freq=" + std::to_string(r.frequency) +
      " pres=" + std::to_string(r.presence) + " seed=" + std::to_string(r.seed) +
      " step=" + std::to_string(r.step) + " sub=" + std::to_string(r.substream) +
      " mask=" + (r.mask.empty() ? "no" : "yes") + " bias=" + std::to_string(r.bias.size()) +
      " prompt=" + std::to_string(r.prompt.size()) + " output=" + std::to_string(r.output.size());
  return s;
}

//! First difference between two outputs (bitwise; "" when equal).
inline std::string first_difference(const OutBuf& a, const OutBuf& b, const char* a_name = "got",
                                    const char* b_name = "want") {
  auto f = [](float v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.9g (0x%08x)", static_cast<double>(v), bits_of(v));
    return std::string(buf);
  };
  for (int64_t r = 0; r < a.b; ++r) {
    const auto i = static_cast<size_t>(r);
    std::string what;
    if (a.status[i] != b.status[i])
      what = "status " + std::to_string(a.status[i]) + " vs " + std::to_string(b.status[i]);
    else if (a.tokens[i] != b.tokens[i])
      what = "token " + std::to_string(a.tokens[i]) + " vs " + std::to_string(b.tokens[i]);
    else if (a.kept[i] != b.kept[i])
      what = "kept " + std::to_string(a.kept[i]) + " vs " + std::to_string(b.kept[i]);
    else if (bits_of(a.logprob[i]) != bits_of(b.logprob[i]))
      what = "logprob " + f(a.logprob[i]) + " vs " + f(b.logprob[i]);
    for (int32_t j = 0; what.empty() && j < a.n_top; ++j) {
      const auto k = static_cast<size_t>(r * a.n_top + j);
      if (a.top_ids[k] != b.top_ids[k])
        what = "top_ids[" + std::to_string(j) + "] " + std::to_string(a.top_ids[k]) + " vs " +
               std::to_string(b.top_ids[k]);
      else if (bits_of(a.top_logprobs[k]) != bits_of(b.top_logprobs[k]))
        what = "top_logprobs[" + std::to_string(j) + "] " + f(a.top_logprobs[k]) + " vs " +
               f(b.top_logprobs[k]);
    }
    if (!what.empty())
      return "row " + std::to_string(r) + ": " + what + " (" + a_name + " vs " + b_name + ")";
  }
  return "";
}

}  // namespace lmstest
