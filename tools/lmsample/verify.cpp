// See verify.hpp.
#include "verify.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>
#include <sstream>
#include <utility>

#include "check/reference.hpp"
#include "check/stats.hpp"
#include "exec.hpp"
#include "synth.hpp"

namespace lmsample::tool {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kFltMax = std::numeric_limits<float>::max();
constexpr double kLogprobTol = 1e-6;  // docs/contract.md: logprobs agree to within 1e-6
constexpr double kMinP = 1e-4;        // chi-square tests pass when p > kMinP

// ---------------------------------------------------------------------------------------------
// Test rows and batches (host memory)

struct RowSpec {
  std::vector<float> logits;  // vocab values (converted to the batch's dtype)
  float temperature = 1.0f, top_p = 1.0f, min_p = 0.0f;
  float repetition = 1.0f, frequency = 0.0f, presence = 0.0f;
  int32_t top_k = 0;
  uint64_t seed = 0, step = 0;
  uint32_t substream = 0;
  std::vector<uint32_t> mask;  // empty: all allowed
  std::vector<std::pair<int32_t, float>> bias;
  std::vector<int32_t> prompt, output;
  std::string label;  // for messages
};

struct BuildOptions {
  DType dtype = DType::kFloat32;
  int64_t stride_pad = 0;  // row_stride = vocab + stride_pad (0: row_stride field left 0)
  int64_t mask_pad = 0;    // extra words per mask row (0: mask_row_words field left 0)
  int32_t top_logprobs = 0;
  bool null_params = false;  // every RowParams pointer null (defaults)
};

struct Csr {
  std::vector<int64_t> offsets;
  std::vector<int32_t> tokens;
  std::vector<float> values;
  bool present = false;
  SparseRows view(bool with_values) const {
    SparseRows s;
    if (!present) return s;
    s.offsets = offsets.data();
    s.tokens = tokens.data();
    if (with_values) s.values = values.data();
    return s;
  }
};

struct HostBatch {
  int64_t batch = 0, vocab = 0, stride = 0;
  BuildOptions opt;
  std::vector<float> f32;
  std::vector<uint16_t> u16;
  std::vector<float> temperature, top_p, min_p, repetition, frequency, presence;
  std::vector<int32_t> top_k;
  std::vector<uint64_t> seed, step;
  std::vector<uint32_t> substream;
  std::vector<uint32_t> mask;
  int64_t mask_words = 0;
  Csr bias, prompt, output;

  Request request() const {
    Request r;
    r.logits.data = opt.dtype == DType::kFloat32 ? static_cast<const void*>(f32.data())
                                                 : static_cast<const void*>(u16.data());
    r.logits.dtype = opt.dtype;
    r.logits.batch = batch;
    r.logits.vocab = vocab;
    r.logits.row_stride = opt.stride_pad ? stride : 0;
    if (!opt.null_params) {
      r.params.temperature = temperature.data();
      r.params.top_k = top_k.data();
      r.params.top_p = top_p.data();
      r.params.min_p = min_p.data();
      r.params.repetition_penalty = repetition.data();
      r.params.frequency_penalty = frequency.data();
      r.params.presence_penalty = presence.data();
      r.params.seed = seed.data();
      r.params.step = step.data();
      r.params.substream = substream.data();
    }
    if (!mask.empty()) {
      r.allowed_mask = mask.data();
      r.mask_row_words = opt.mask_pad ? mask_words : 0;
    }
    r.logit_bias = bias.view(true);
    r.prompt_tokens = prompt.view(false);
    r.output_tokens = output.view(false);
    r.top_logprobs = opt.top_logprobs;
    return r;
  }
};

HostBatch build(const std::vector<RowSpec>& rows, int64_t vocab, const BuildOptions& o) {
  HostBatch h;
  h.batch = static_cast<int64_t>(rows.size());
  h.vocab = vocab;
  h.opt = o;
  h.stride = vocab + o.stride_pad;
  std::vector<float> x(static_cast<size_t>(h.batch * h.stride), 0.0f);
  bool any_mask = false;
  for (const auto& r : rows) any_mask = any_mask || !r.mask.empty();
  const int64_t need_words = (vocab + 31) / 32;
  if (any_mask) {
    h.mask_words = need_words + o.mask_pad;
    h.mask.assign(static_cast<size_t>(h.batch * h.mask_words), 0xffffffffu);
  }
  h.bias.offsets.push_back(0);
  h.prompt.offsets.push_back(0);
  h.output.offsets.push_back(0);
  for (int64_t i = 0; i < h.batch; ++i) {
    const RowSpec& r = rows[static_cast<size_t>(i)];
    std::copy(r.logits.begin(), r.logits.end(), x.begin() + i * h.stride);
    for (int64_t p = vocab; p < h.stride; ++p) x[static_cast<size_t>(i * h.stride + p)] = kNaN;
    h.temperature.push_back(r.temperature);
    h.top_k.push_back(r.top_k);
    h.top_p.push_back(r.top_p);
    h.min_p.push_back(r.min_p);
    h.repetition.push_back(r.repetition);
    h.frequency.push_back(r.frequency);
    h.presence.push_back(r.presence);
    h.seed.push_back(r.seed);
    h.step.push_back(r.step);
    h.substream.push_back(r.substream);
    if (!r.mask.empty()) std::copy(r.mask.begin(), r.mask.end(), h.mask.begin() + i * h.mask_words);
    for (const auto& [t, b] : r.bias) {
      h.bias.tokens.push_back(t);
      h.bias.values.push_back(b);
    }
    h.bias.offsets.push_back(static_cast<int64_t>(h.bias.tokens.size()));
    h.prompt.tokens.insert(h.prompt.tokens.end(), r.prompt.begin(), r.prompt.end());
    h.prompt.offsets.push_back(static_cast<int64_t>(h.prompt.tokens.size()));
    h.output.tokens.insert(h.output.tokens.end(), r.output.begin(), r.output.end());
    h.output.offsets.push_back(static_cast<int64_t>(h.output.tokens.size()));
  }
  h.bias.present = !h.bias.tokens.empty();
  h.prompt.present = !h.prompt.tokens.empty();
  h.output.present = !h.output.tokens.empty();
  if (o.dtype == DType::kFloat32)
    h.f32 = std::move(x);
  else if (o.dtype == DType::kBFloat16)
    h.u16 = to_bf16(x);
  else
    h.u16 = to_fp16(x);
  return h;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32:
      return "fp32";
    case DType::kBFloat16:
      return "bf16";
    case DType::kFloat16:
      return "fp16";
  }
  return "?";
}

struct HostOutputs {
  int64_t batch = 0;
  int32_t n_top = 0;
  std::vector<int32_t> tokens, status, kept, top_ids;
  std::vector<float> logprob, top_lp;
  HostOutputs(int64_t b, int32_t n) : batch(b), n_top(n) {
    const auto nb = static_cast<size_t>(b);
    tokens.assign(nb, 0x5a5a5a5a);
    status.assign(nb, 0x5a5a5a5a);
    kept.assign(nb, 0x5a5a5a5a);
    logprob.assign(nb, 12345.0f);
    top_ids.assign(nb * static_cast<size_t>(n), 0x5a5a5a5a);
    top_lp.assign(nb * static_cast<size_t>(n), 12345.0f);
  }
  Outputs view() {
    Outputs o;
    o.tokens = tokens.data();
    o.status = status.data();
    o.kept = kept.data();
    o.logprob = logprob.data();
    if (n_top > 0) {
      o.top_ids = top_ids.data();
      o.top_logprobs = top_lp.data();
    }
    return o;
  }
};

std::string fstr(float f) {
  std::ostringstream s;
  s.precision(9);
  s << f;
  return s.str();
}

bool same_float(float a, float b, double tol) {
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  if (ua == ub) return true;
  if (tol == 0.0) return false;
  if (std::isnan(a) || std::isnan(b) || std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(static_cast<double>(a) - b) <=
         tol * std::max(1.0, std::fabs(static_cast<double>(a)));
}

// First difference between row ra of a and row rb of b ("" when equal).
std::string diff_row(const HostOutputs& a, int64_t ra, const HostOutputs& b, int64_t rb, double tol,
                     bool compare_logprobs = true) {
  const auto ia = static_cast<size_t>(ra), ib = static_cast<size_t>(rb);
  std::ostringstream s;
  if (a.status[ia] != b.status[ib])
    s << "status " << row_status_name(a.status[ia]) << " vs " << row_status_name(b.status[ib]);
  else if (a.tokens[ia] != b.tokens[ib])
    s << "token " << a.tokens[ia] << " vs " << b.tokens[ib];
  else if (a.kept[ia] != b.kept[ib])
    s << "kept " << a.kept[ia] << " vs " << b.kept[ib];
  else if (compare_logprobs && !same_float(a.logprob[ia], b.logprob[ib], tol))
    s << "logprob " << fstr(a.logprob[ia]) << " vs " << fstr(b.logprob[ib]);
  if (!s.str().empty()) return s.str();
  const int32_t n = std::min(a.n_top, b.n_top);
  for (int32_t j = 0; j < n; ++j) {
    const size_t ja = ia * static_cast<size_t>(a.n_top) + static_cast<size_t>(j);
    const size_t jb = ib * static_cast<size_t>(b.n_top) + static_cast<size_t>(j);
    if (a.top_ids[ja] != b.top_ids[jb]) {
      s << "top_ids[" << j << "] " << a.top_ids[ja] << " vs " << b.top_ids[jb];
      return s.str();
    }
    if (compare_logprobs && !same_float(a.top_lp[ja], b.top_lp[jb], tol)) {
      s << "top_logprobs[" << j << "] " << fstr(a.top_lp[ja]) << " vs " << fstr(b.top_lp[jb]);
      return s.str();
    }
  }
  return "";
}

std::string describe(const RowSpec& r, int64_t vocab) {
  std::ostringstream s;
  s << "[" << (r.label.empty() ? "row" : r.label) << ": V=" << vocab << " T=" << fstr(r.temperature)
    << " k=" << r.top_k << " p=" << fstr(r.top_p) << " min_p=" << fstr(r.min_p)
    << " rep=" << fstr(r.repetition) << " freq=" << fstr(r.frequency)
    << " pres=" << fstr(r.presence) << " seed=" << r.seed << " step=" << r.step
    << " substream=" << r.substream << (r.mask.empty() ? "" : " masked")
    << " bias=" << r.bias.size() << " prompt=" << r.prompt.size() << " output=" << r.output.size()
    << "]";
  return s.str();
}

// ---------------------------------------------------------------------------------------------
// Random rows

enum class Kind {
  kLlm,
  kNormal,
  kTies,
  kFlat,
  kAllNegInf,
  kAllNaN,
  kNanMix,
  kOnePosInf,
  kSomePosInf,
  kPosInfNaN,
  kHuge,
  kTiny,
  kSingleValid,
  kCount
};
const char* kind_name(Kind k) {
  static const char* names[] = {"llm",     "normal",  "ties",        "flat",         "all-neg-inf",
                                "all-nan", "nan-mix", "one-pos-inf", "some-pos-inf", "pos-inf-nan",
                                "huge",    "tiny",    "single-valid"};
  return names[static_cast<int>(k)];
}

template <class T>
T pick(Rng& rng, std::initializer_list<T> xs) {
  return *(xs.begin() + rng.below(xs.size()));
}

int32_t rand_token(Rng& rng, int64_t v) {
  return static_cast<int32_t>(rng.below(static_cast<uint64_t>(v)));
}

std::vector<float> make_logits(Rng& rng, int64_t v, Kind k) {
  std::vector<float> x(static_cast<size_t>(v));
  auto llm = [&] {
    fill_llm_row(x.data(), v, rng, 10.0 + 10.0 * rng.uniform(), 1.0 + 2.0 * rng.uniform(), 0.4);
  };
  switch (k) {
    case Kind::kLlm:
      llm();
      break;
    case Kind::kNormal: {
      const double s = 0.3 + 6.0 * rng.uniform();
      for (auto& f : x) f = static_cast<float>(s * rng.normal());
      break;
    }
    case Kind::kTies:
      for (auto& f : x) f = 0.5f * static_cast<float>(rng.below(4));
      break;
    case Kind::kFlat: {
      const auto c = static_cast<float>(rng.uniform() * 10.0 - 5.0);
      for (auto& f : x) f = c;
      break;
    }
    case Kind::kAllNegInf:
      for (auto& f : x) f = -kInf;
      break;
    case Kind::kAllNaN:
      for (auto& f : x) f = rng.below(2) ? kNaN : -kNaN;
      break;
    case Kind::kNanMix:
      llm();
      for (auto& f : x) {
        const uint64_t u = rng.below(10);
        if (u < 4)
          f = kNaN;
        else if (u < 7)
          f = -kInf;
      }
      break;
    case Kind::kOnePosInf:
      llm();
      x[static_cast<size_t>(rand_token(rng, v))] = kInf;
      break;
    case Kind::kSomePosInf:
      llm();
      for (int i = 0; i < 3; ++i) x[static_cast<size_t>(rand_token(rng, v))] = kInf;
      break;
    case Kind::kPosInfNaN:
      for (auto& f : x) {
        const uint64_t u = rng.below(6);
        f = u == 0 ? kInf : u < 3 ? kNaN : u < 4 ? -kInf : static_cast<float>(rng.normal());
      }
      break;
    case Kind::kHuge:
      for (auto& f : x) {
        const uint64_t u = rng.below(5);
        f = u == 0   ? kFltMax
            : u == 1 ? -kFltMax
                     : static_cast<float>((rng.uniform() * 2.0 - 1.0) * 3.0e38);
      }
      break;
    case Kind::kTiny:
      for (auto& f : x)
        f = pick(rng, {0.0f, -0.0f, 1e-40f, -1e-40f, 1e-45f, std::numeric_limits<float>::min(),
                       -std::numeric_limits<float>::min()});
      break;
    case Kind::kSingleValid:
      for (auto& f : x) f = -kInf;
      x[static_cast<size_t>(rand_token(rng, v))] = static_cast<float>(rng.normal());
      break;
    case Kind::kCount:
      break;
  }
  return x;
}

std::vector<uint32_t> random_mask(Rng& rng, int64_t v, double allowed_fraction) {
  std::vector<uint32_t> m(static_cast<size_t>((v + 31) / 32), 0u);
  for (int64_t t = 0; t < v; ++t)
    if (rng.uniform() < allowed_fraction) m[static_cast<size_t>(t / 32)] |= 1u << (t % 32);
  return m;
}

// Random, mostly valid parameters; with `bad`, sometimes one invalid value.
void random_params(Rng& rng, RowSpec& r, int64_t v, bool bad, bool extras) {
  const auto vi = static_cast<int32_t>(std::min<int64_t>(v, 1 << 30));
  switch (rng.below(7)) {
    case 0:
      r.temperature = 0.0f;
      break;
    case 1:
      r.temperature = 1.0f;
      break;
    case 2:
      r.temperature = 0.7f;
      break;
    default:
      r.temperature = static_cast<float>(0.05 + 2.0 * rng.uniform());
      break;
  }
  if (rng.below(2)) r.top_k = pick(rng, {1, 2, 5, 50, vi, vi + 5, 1 + rand_token(rng, v)});
  if (rng.below(5) < 3)
    r.top_p = pick(rng, {0.9f, 0.5f, 0.95f, 0.99f, 1.5f, static_cast<float>(rng.uniform())});
  if (r.top_p <= 0.0f) r.top_p = 0.25f;
  if (rng.below(5) < 2)
    r.min_p = pick(rng, {0.05f, 0.1f, 0.5f, 1.0f, static_cast<float>(rng.uniform())});
  r.seed = rng.next();
  r.step = rng.below(4) == 0 ? rng.next() : rng.below(100000);
  r.substream = rng.below(5) == 0 ? static_cast<uint32_t>(rng.next()) : 0u;
  if (extras) {
    if (rng.below(10) < 3) r.mask = random_mask(rng, v, rng.below(20) == 0 ? 0.0 : rng.uniform());
    if (rng.below(10) < 3) {
      const uint64_t n = 1 + rng.below(5);
      for (uint64_t i = 0; i < n; ++i) {
        const int32_t t = rand_token(rng, v);
        const float b = pick(rng, {static_cast<float>(rng.normal() * 3.0), 100.0f, -kInf, 5.0f,
                                   static_cast<float>(rng.normal())});
        r.bias.emplace_back(t, b);
        if (rng.below(3) == 0) r.bias.emplace_back(t, -2.5f);  // duplicates add up in order
      }
    }
    if (rng.below(10) < 3) {
      r.repetition = pick(rng, {1.1f, 1.3f, 0.8f, 2.0f});
      r.frequency = pick(rng, {0.0f, 0.5f, -0.5f, 2.0f, -2.0f});
      r.presence = pick(rng, {0.0f, 0.5f, -1.0f, 2.0f});
      const uint64_t np = rng.below(20), no = rng.below(30);
      for (uint64_t i = 0; i < np; ++i) r.prompt.push_back(rand_token(rng, v));
      for (uint64_t i = 0; i < no; ++i)
        r.output.push_back(i > 0 && rng.below(3) == 0 ? r.output.back() : rand_token(rng, v));
    }
  }
  if (bad && rng.below(12) == 0) {
    switch (rng.below(12)) {
      case 0:
        r.temperature = -1.0f;
        break;
      case 1:
        r.temperature = kNaN;
        break;
      case 2:
        r.top_k = -3;
        break;
      case 3:
        r.top_p = 0.0f;
        break;
      case 4:
        r.top_p = kNaN;
        break;
      case 5:
        r.min_p = 1.5f;
        break;
      case 6:
        r.repetition = 0.0f;
        break;
      case 7:
        r.repetition = kInf;
        break;
      case 8:
        r.frequency = 2.5f;
        break;
      case 9:
        r.presence = -kNaN;
        break;
      case 10:
        r.output.push_back(static_cast<int32_t>(v));
        break;
      default:
        r.bias.emplace_back(-1, 1.0f);
        break;
    }
  }
}

RowSpec random_row(Rng& rng, int64_t v, bool bad, bool extras, bool edge_kinds) {
  RowSpec r;
  Kind k = Kind::kLlm;
  if (edge_kinds && rng.below(3) == 0)
    k = static_cast<Kind>(rng.below(static_cast<uint64_t>(Kind::kCount)));
  else
    k = rng.below(4) == 0 ? Kind::kNormal : Kind::kLlm;
  r.logits = make_logits(rng, v, k);
  r.label = kind_name(k);
  random_params(rng, r, v, bad, extras);
  return r;
}

// The edge-case presets of exact/edge-cases, applied to every kind of row.
using Preset = std::function<void(RowSpec&, Rng&, int64_t)>;
std::vector<std::pair<const char*, Preset>> presets() {
  auto tok = [](Rng& rng, int64_t v) { return rand_token(rng, v); };
  std::vector<std::pair<const char*, Preset>> p = {
      {"greedy", [](RowSpec& r, Rng&, int64_t) { r.temperature = 0.0f; }},
      {"T=1", [](RowSpec&, Rng&, int64_t) {}},
      {"T=0.7,p=0.9",
       [](RowSpec& r, Rng&, int64_t) {
         r.temperature = 0.7f;
         r.top_p = 0.9f;
       }},
      {"k=1", [](RowSpec& r, Rng&, int64_t) { r.top_k = 1; }},
      {"k=5,T=1.3",
       [](RowSpec& r, Rng&, int64_t) {
         r.top_k = 5;
         r.temperature = 1.3f;
       }},
      {"k=V", [](RowSpec& r, Rng&, int64_t v) { r.top_k = static_cast<int32_t>(v); }},
      {"k=V+7", [](RowSpec& r, Rng&, int64_t v) { r.top_k = static_cast<int32_t>(v + 7); }},
      {"p=1e-30", [](RowSpec& r, Rng&, int64_t) { r.top_p = 1e-30f; }},
      {"p=1.5", [](RowSpec& r, Rng&, int64_t) { r.top_p = 1.5f; }},
      {"min_p=1", [](RowSpec& r, Rng&, int64_t) { r.min_p = 1.0f; }},
      {"min_p=-0", [](RowSpec& r, Rng&, int64_t) { r.min_p = -0.0f; }},
      {"min_p=0.5,T=2",
       [](RowSpec& r, Rng&, int64_t) {
         r.min_p = 0.5f;
         r.temperature = 2.0f;
       }},
      {"T=1e-30", [](RowSpec& r, Rng&, int64_t) { r.temperature = 1e-30f; }},
      {"T=1e30", [](RowSpec& r, Rng&, int64_t) { r.temperature = 1e30f; }},
      {"T=1e-45", [](RowSpec& r, Rng&, int64_t) { r.temperature = 1e-45f; }},
      {"all-filters",
       [](RowSpec& r, Rng&, int64_t) {
         r.top_p = 0.5f;
         r.top_k = 3;
         r.min_p = 0.1f;
         r.temperature = 0.8f;
       }},
      {"penalties",
       [tok](RowSpec& r, Rng& rng, int64_t v) {
         r.repetition = 1.5f;
         r.frequency = 0.7f;
         r.presence = 0.3f;
         for (int i = 0; i < 5; ++i) r.prompt.push_back(tok(rng, v));
         const int32_t t = tok(rng, v);
         for (int i = 0; i < 4; ++i) r.output.push_back(t);
         r.output.push_back(tok(rng, v));
       }},
      {"penalties-negative",
       [tok](RowSpec& r, Rng& rng, int64_t v) {
         r.repetition = 0.7f;
         r.frequency = -2.0f;
         r.presence = 2.0f;
         for (int i = 0; i < 6; ++i) r.output.push_back(tok(rng, v));
       }},
      {"bias+inf",
       [tok](RowSpec& r, Rng& rng, int64_t v) { r.bias.emplace_back(tok(rng, v), kInf); }},
      {"bias-nan",
       [tok](RowSpec& r, Rng& rng, int64_t v) { r.bias.emplace_back(tok(rng, v), kNaN); }},
      {"bias-dup",
       [tok](RowSpec& r, Rng& rng, int64_t v) {
         const int32_t t = tok(rng, v);
         r.bias.emplace_back(t, 3.0f);
         r.bias.emplace_back(t, -1.5f);
         r.bias.emplace_back(tok(rng, v), -kInf);
       }},
      {"mask-none", [](RowSpec& r, Rng& rng, int64_t v) { r.mask = random_mask(rng, v, 0.0); }},
      {"mask-one",
       [tok](RowSpec& r, Rng& rng, int64_t v) {
         r.mask = random_mask(rng, v, 0.0);
         const int32_t t = tok(rng, v);
         r.mask[static_cast<size_t>(t / 32)] |= 1u << (t % 32);
       }},
      {"mask-half+bias",
       [tok](RowSpec& r, Rng& rng, int64_t v) {
         r.mask = random_mask(rng, v, 0.5);
         for (int i = 0; i < 4; ++i) r.bias.emplace_back(tok(rng, v), 50.0f);
       }},
      {"large-seed-step",
       [](RowSpec& r, Rng&, int64_t) {
         r.seed = ~uint64_t{0};
         r.step = (uint64_t{1} << 63) + 5;
         r.substream = 0xffffffffu;
       }},
      {"bad:T=-1", [](RowSpec& r, Rng&, int64_t) { r.temperature = -1.0f; }},
      {"bad:T=nan", [](RowSpec& r, Rng&, int64_t) { r.temperature = kNaN; }},
      {"bad:T=inf", [](RowSpec& r, Rng&, int64_t) { r.temperature = kInf; }},
      {"bad:k=-1", [](RowSpec& r, Rng&, int64_t) { r.top_k = -1; }},
      {"bad:p=0", [](RowSpec& r, Rng&, int64_t) { r.top_p = 0.0f; }},
      {"bad:p=nan", [](RowSpec& r, Rng&, int64_t) { r.top_p = kNaN; }},
      {"bad:min_p=1.5", [](RowSpec& r, Rng&, int64_t) { r.min_p = 1.5f; }},
      {"bad:min_p=nan", [](RowSpec& r, Rng&, int64_t) { r.min_p = kNaN; }},
      {"bad:rep=0", [](RowSpec& r, Rng&, int64_t) { r.repetition = 0.0f; }},
      {"bad:rep=inf", [](RowSpec& r, Rng&, int64_t) { r.repetition = kInf; }},
      {"bad:rep=-1", [](RowSpec& r, Rng&, int64_t) { r.repetition = -1.0f; }},
      {"bad:freq=2.5", [](RowSpec& r, Rng&, int64_t) { r.frequency = 2.5f; }},
      {"bad:pres=nan", [](RowSpec& r, Rng&, int64_t) { r.presence = kNaN; }},
      {"bad:bias-id=V",
       [](RowSpec& r, Rng&, int64_t v) { r.bias.emplace_back(static_cast<int32_t>(v), 1.0f); }},
      {"bad:prompt-id=-1", [](RowSpec& r, Rng&, int64_t) { r.prompt.push_back(-1); }},
      {"bad:output-id=V+10",
       [](RowSpec& r, Rng&, int64_t v) { r.output.push_back(static_cast<int32_t>(v + 10)); }},
      {"bad:T=-1,p=0",
       [](RowSpec& r, Rng&, int64_t) {
         r.temperature = -1.0f;
         r.top_p = 0.0f;
       }},
  };
  return p;
}

// ---------------------------------------------------------------------------------------------
// Checks

struct Context {
  const VerifyOptions& opt;
  Executor& ex;
  bool quick;
};

struct Tally {
  int64_t rows = 0;
  int64_t logprob_exact = 0;
  int64_t logprob_total = 0;
  double max_logprob_diff = 0.0;
};

bool has_bad_rows(const HostOutputs& o) {
  for (const int32_t s : o.status)
    if (s >= kRowBadTemperature) return true;
  return false;
}

// Runs `rows` on the backend and on the reference; "" when they agree.
std::string exact_batch(Context& c, const std::vector<RowSpec>& rows, int64_t v,
                        const BuildOptions& bo, Tally* tally) {
  const HostBatch hb = build(rows, v, bo);
  const Request req = hb.request();
  HostOutputs got(hb.batch, bo.top_logprobs), want(hb.batch, bo.top_logprobs);
  const Status s = c.ex.run(req, got.view());
  check::reference_sample_batch(req, want.view());
  const bool bad = has_bad_rows(want);
  const std::string where = "V=" + std::to_string(v) + " " + dtype_name(bo.dtype) + ": ";
  if (c.ex.backend() == Backend::kCpu) {
    const Code expect = bad ? Code::kInvalidRowParameter : Code::kOk;
    if (s.code != expect)
      return where + "sample() returned code " + std::to_string(static_cast<int>(s.code)) + " (" +
             s.message + "), expected " + std::to_string(static_cast<int>(expect));
  } else if (!(s.ok() || (bad && s.code == Code::kInvalidRowParameter))) {
    return where + "sample() failed: " + s.message;
  }
  for (int64_t r = 0; r < hb.batch; ++r) {
    const std::string d = diff_row(got, r, want, r, kLogprobTol);
    if (!d.empty())
      return where + "row " + std::to_string(r) + " " + describe(rows[static_cast<size_t>(r)], v) +
             ": backend vs reference: " + d;
    const auto i = static_cast<size_t>(r);
    ++tally->logprob_total;
    if (same_float(got.logprob[i], want.logprob[i], 0.0)) ++tally->logprob_exact;
    if (std::isfinite(got.logprob[i]) && std::isfinite(want.logprob[i]))
      tally->max_logprob_diff =
          std::max(tally->max_logprob_diff,
                   std::fabs(static_cast<double>(got.logprob[i]) - want.logprob[i]));
  }
  tally->rows += hb.batch;
  return "";
}

std::string tally_text(const Tally& t) {
  std::ostringstream s;
  s << t.rows << " rows equal to the reference; logprobs bit-equal on " << t.logprob_exact << "/"
    << t.logprob_total;
  if (t.logprob_exact != t.logprob_total) s << " (max |diff| " << t.max_logprob_diff << ")";
  return s.str();
}

bool check_exact_random(Context& c, std::string* detail) {
  Rng rng(0x1001);
  Tally t;
  const std::vector<int64_t> vocabs = {1, 2, 3, 7, 31, 32, 33, 100, 257, 1000, 4099};
  const int rows_per = c.quick ? 12 : 40;
  int i = 0;
  for (const int64_t v : vocabs) {
    for (const DType dt : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
      std::vector<RowSpec> rows;
      for (int r = 0; r < rows_per; ++r) rows.push_back(random_row(rng, v, true, true, true));
      BuildOptions bo;
      bo.dtype = dt;
      bo.stride_pad = (i % 3 == 1) ? 3 : 0;
      bo.mask_pad = (i % 4 == 2) ? 2 : 0;
      bo.top_logprobs = pick(rng, {0, 1, 5, 20, 64});
      ++i;
      const std::string e = exact_batch(c, rows, v, bo, &t);
      if (!e.empty()) {
        *detail = e;
        return false;
      }
    }
  }
  *detail = tally_text(t) +
            " (V 1..4099; fp32, bf16, fp16; random parameters, masks, biases, "
            "histories, bad rows)";
  return true;
}

bool check_exact_edge(Context& c, std::string* detail) {
  Rng rng(0x2002);
  Tally t;
  const auto ps = presets();
  const std::vector<int64_t> vocabs =
      c.quick ? std::vector<int64_t>{1, 3, 64, 1500} : std::vector<int64_t>{1, 2, 3, 64, 1500};
  std::vector<DType> dtypes = {DType::kFloat32, DType::kBFloat16, DType::kFloat16};
  if (c.quick) dtypes = {DType::kFloat32, DType::kBFloat16};
  for (const int64_t v : vocabs) {
    for (const DType dt : dtypes) {
      std::vector<RowSpec> rows;
      for (int k = 0; k < static_cast<int>(Kind::kCount); ++k) {
        for (const auto& [name, apply] : ps) {
          RowSpec r;
          r.logits = make_logits(rng, v, static_cast<Kind>(k));
          r.seed = rng.next();
          r.step = rng.below(1000);
          apply(r, rng, v);
          r.label = std::string(kind_name(static_cast<Kind>(k))) + "/" + name;
          rows.push_back(std::move(r));
        }
      }
      BuildOptions bo;
      bo.dtype = dt;
      bo.top_logprobs = v >= 64 ? 8 : 3;
      bo.stride_pad = dt == DType::kBFloat16 ? 5 : 0;
      bo.mask_pad = dt == DType::kFloat16 ? 1 : 0;
      const std::string e = exact_batch(c, rows, v, bo, &t);
      if (!e.empty()) {
        *detail = e;
        return false;
      }
    }
  }
  *detail = tally_text(t) + " (" + std::to_string(static_cast<int>(Kind::kCount)) +
            " kinds of rows x " + std::to_string(ps.size()) + " parameter presets)";
  return true;
}

bool check_exact_defaults(Context& c, std::string* detail) {
  Rng rng(0x3003);
  Tally t;
  for (const int64_t v : {1, 17, 3000}) {
    std::vector<RowSpec> rows;
    for (int r = 0; r < 8; ++r) {
      RowSpec s;
      s.logits = make_logits(rng, v, r == 5 ? Kind::kTies : r == 6 ? Kind::kNanMix : Kind::kLlm);
      rows.push_back(std::move(s));
    }
    BuildOptions bo;
    bo.null_params = true;
    bo.top_logprobs = 3;
    const std::string e = exact_batch(c, rows, v, bo, &t);
    if (!e.empty()) {
      *detail = e;
      return false;
    }
  }
  *detail = tally_text(t) + " (every parameter array null)";
  return true;
}

bool check_exact_large(Context& c, std::string* detail, int64_t v, std::vector<DType> dtypes,
                       int rows_per, uint64_t seed) {
  Rng rng(seed);
  Tally t;
  for (const DType dt : dtypes) {
    std::vector<RowSpec> rows;
    for (int r = 0; r < rows_per; ++r) {
      RowSpec s = random_row(rng, v, false, true, false);
      s.label = "llm";
      if (r == 1) {  // a row dominated by one token, as in confident decoding steps
        float* x = s.logits.data();
        *std::max_element(x, x + v) += 12.0f;
        s.label = "peaked";
      }
      rows.push_back(std::move(s));
    }
    BuildOptions bo;
    bo.dtype = dt;
    bo.top_logprobs = 20;
    const std::string e = exact_batch(c, rows, v, bo, &t);
    if (!e.empty()) {
      *detail = e;
      return false;
    }
  }
  *detail = tally_text(t);
  return true;
}

// ---- chi-square ----

enum class Vary { kStep, kSeed, kSubstream };

bool chi2_check(Context& c, std::string* detail, const RowSpec& spec, int64_t v, DType dt,
                int64_t draws, Vary vary) {
  // The exact distribution of the row.
  const HostBatch one = build({spec}, v, BuildOptions{dt, 0, 0, 0, false});
  const check::RefDistribution d = check::reference_distribution(one.request(), 0);
  if (d.status != kRowOk || d.ids.empty()) {
    *detail =
        "the test row has no distribution (status " + std::string(row_status_name(d.status)) + ")";
    return false;
  }
  // N draws in chunks of identical rows that differ only in step / seed / substream.
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(draws, (int64_t{8} << 20) / v));
  HostBatch hb = build(std::vector<RowSpec>(static_cast<size_t>(chunk), spec), v,
                       BuildOptions{dt, 0, 0, 0, false});
  std::vector<uint64_t> counts(d.ids.size(), 0);
  int64_t outside = 0, not_ok = 0;
  int32_t first_outside = -1;
  for (int64_t start = 0; start < draws; start += chunk) {
    const int64_t n = std::min(chunk, draws - start);
    for (int64_t i = 0; i < n; ++i) {
      const auto k = static_cast<uint64_t>(start + i);
      const auto ii = static_cast<size_t>(i);
      switch (vary) {
        case Vary::kStep:
          hb.step[ii] = spec.step + k;
          break;
        case Vary::kSeed:
          hb.seed[ii] = spec.seed + k;
          break;
        case Vary::kSubstream:
          hb.substream[ii] = spec.substream + static_cast<uint32_t>(k);
          break;
      }
    }
    hb.batch = n;
    HostOutputs out(n, 0);
    const Status s = c.ex.run(hb.request(), out.view());
    if (!s.ok()) {
      *detail = "sample() failed: " + s.message;
      return false;
    }
    for (int64_t i = 0; i < n; ++i) {
      const auto ii = static_cast<size_t>(i);
      if (out.status[ii] != kRowOk) {
        ++not_ok;
        continue;
      }
      const auto it = std::lower_bound(d.ids.begin(), d.ids.end(), out.tokens[ii]);
      if (it == d.ids.end() || *it != out.tokens[ii]) {
        if (outside++ == 0) first_outside = out.tokens[ii];
        continue;
      }
      ++counts[static_cast<size_t>(it - d.ids.begin())];
    }
  }
  std::ostringstream s;
  s << draws << " draws, " << d.ids.size() << " kept";
  if (not_ok || outside) {
    s << ": " << not_ok << " draws failed, " << outside << " outside the kept set (first: token "
      << first_outside << ")";
    *detail = s.str();
    return false;
  }
  if (d.greedy || d.ids.size() == 1) {
    s << ", every draw = token " << d.ids[0];
    *detail = s.str();
    return counts[0] == static_cast<uint64_t>(draws);
  }
  std::vector<double> probs(d.ids.size());
  for (size_t i = 0; i < probs.size(); ++i)
    probs[i] = static_cast<double>(d.weights[i]) / static_cast<double>(d.total);
  const check::ChiSquare t = check::chi_square_test(counts, probs);
  s.precision(4);
  s << ", chi2 = " << t.statistic << ", dof = " << t.dof << ", p = " << t.p_value;
  *detail = s.str();
  return t.p_value > kMinP;
}

RowSpec llm_spec(uint64_t seed, int64_t v, double slope = 1.6) {
  Rng rng(seed);
  RowSpec r;
  r.logits.resize(static_cast<size_t>(v));
  fill_llm_row(r.logits.data(), v, rng, 15.0, slope, 0.4);
  r.seed = 0x5eed0000ull + seed;
  r.step = 0;
  return r;
}

// ---- invariance ----

std::vector<RowSpec> mixed_rows(uint64_t seed, int64_t v, int n) {
  Rng rng(seed);
  std::vector<RowSpec> rows;
  for (int i = 0; i < n; ++i) rows.push_back(random_row(rng, v, true, true, true));
  return rows;
}

Request sub_request(const Request& full, int64_t r0, int64_t n) {
  Request r = full;
  const int64_t stride = full.logits.row_stride ? full.logits.row_stride : full.logits.vocab;
  const size_t elem = full.logits.dtype == DType::kFloat32 ? 4 : 2;
  r.logits.data =
      static_cast<const char*>(full.logits.data) + static_cast<size_t>(r0 * stride) * elem;
  r.logits.batch = n;
  RowParams& p = r.params;
  if (p.temperature) p.temperature += r0;
  if (p.top_k) p.top_k += r0;
  if (p.top_p) p.top_p += r0;
  if (p.min_p) p.min_p += r0;
  if (p.repetition_penalty) p.repetition_penalty += r0;
  if (p.frequency_penalty) p.frequency_penalty += r0;
  if (p.presence_penalty) p.presence_penalty += r0;
  if (p.seed) p.seed += r0;
  if (p.step) p.step += r0;
  if (p.substream) p.substream += r0;
  if (r.allowed_mask) {
    const int64_t words = full.mask_row_words ? full.mask_row_words : (full.logits.vocab + 31) / 32;
    r.allowed_mask += r0 * words;
  }
  if (r.logit_bias.offsets) r.logit_bias.offsets += r0;  // offsets[0] need not be 0
  if (r.prompt_tokens.offsets) r.prompt_tokens.offsets += r0;
  if (r.output_tokens.offsets) r.output_tokens.offsets += r0;
  return r;
}

constexpr int kInvRows = 40;
constexpr int64_t kInvVocab = 3001;
constexpr int32_t kInvTop = 8;

BuildOptions inv_options() {
  BuildOptions bo;
  bo.dtype = DType::kBFloat16;
  bo.stride_pad = 5;
  bo.mask_pad = 1;
  bo.top_logprobs = kInvTop;
  return bo;
}

bool run_ok(const Status& s) { return s.ok() || s.code == Code::kInvalidRowParameter; }

bool check_threads_one(Context& c, std::string* detail, int64_t v, int nrows, uint64_t seed) {
  if (c.ex.backend() != Backend::kCpu) {
    *detail = "not applicable to the " + std::string(backend_name(c.ex.backend())) + " backend";
    return true;
  }
  const auto rows = mixed_rows(seed, v, nrows);
  const HostBatch hb = build(rows, v, inv_options());
  HostOutputs base(hb.batch, kInvTop);
  const int saved = c.ex.config().cpu_threads;
  c.ex.set_threads(1);
  Status s = c.ex.run(hb.request(), base.view());
  if (!run_ok(s)) {
    c.ex.set_threads(saved);
    *detail = "sample() failed: " + s.message;
    return false;
  }
  const std::vector<int> counts = {2, 3, 4, 7, 16, 0};
  for (const int n : counts) {
    c.ex.set_threads(n);
    HostOutputs o(hb.batch, kInvTop);
    s = c.ex.run(hb.request(), o.view());
    for (int64_t r = 0; r < hb.batch && run_ok(s); ++r) {
      const std::string d = diff_row(o, r, base, r, 0.0);
      if (!d.empty()) {
        c.ex.set_threads(saved);
        *detail = "row " + std::to_string(r) + " " + describe(rows[static_cast<size_t>(r)], v) +
                  ": " + std::to_string(n) + " threads vs 1 thread: " + d;
        return false;
      }
    }
    if (!run_ok(s)) {
      c.ex.set_threads(saved);
      *detail = "sample() failed with " + std::to_string(n) + " threads: " + s.message;
      return false;
    }
  }
  c.ex.set_threads(saved);
  *detail = std::to_string(hb.batch) + " rows identical with 1, 2, 3, 4, 7, 16 and all threads";
  return true;
}

bool check_position_one(Context& c, std::string* detail, int64_t v, int nrows, uint64_t seed) {
  const auto rows = mixed_rows(seed, v, nrows);
  const BuildOptions bo = inv_options();
  const HostBatch hb = build(rows, v, bo);
  const Request full = hb.request();
  HostOutputs base(hb.batch, kInvTop);
  Status s = c.ex.run(full, base.view());
  if (!run_ok(s)) {
    *detail = "sample() failed: " + s.message;
    return false;
  }
  auto fail_row = [&](int64_t r, const std::string& how, const std::string& d) {
    *detail = "row " + std::to_string(r) + " " + describe(rows[static_cast<size_t>(r)], v) + ": " +
              how + " vs full batch: " + d;
    return false;
  };
  // Every row alone (B = 1, CSR offsets not starting at 0).
  for (int64_t r = 0; r < hb.batch; ++r) {
    HostOutputs o(1, kInvTop);
    s = c.ex.run(sub_request(full, r, 1), o.view());
    if (!run_ok(s)) {
      *detail = "sample() failed on a single row: " + s.message;
      return false;
    }
    const std::string d = diff_row(o, 0, base, r, 0.0);
    if (!d.empty()) return fail_row(r, "alone", d);
  }
  // A slice from the middle.
  const int64_t r0 = hb.batch / 5, n = hb.batch / 2;
  {
    HostOutputs o(n, kInvTop);
    s = c.ex.run(sub_request(full, r0, n), o.view());
    if (!run_ok(s)) {
      *detail = "sample() failed on a slice: " + s.message;
      return false;
    }
    for (int64_t i = 0; i < n; ++i) {
      const std::string d = diff_row(o, i, base, r0 + i, 0.0);
      if (!d.empty())
        return fail_row(r0 + i, "in rows " + std::to_string(r0) + ".." + std::to_string(r0 + n - 1),
                        d);
    }
  }
  // Reversed, and each row repeated within a larger batch.
  {
    std::vector<RowSpec> perm(rows.rbegin(), rows.rend());
    std::vector<RowSpec> twice = rows;
    twice.insert(twice.end(), perm.begin(), perm.end());
    const HostBatch hb2 = build(twice, v, bo);
    HostOutputs o(hb2.batch, kInvTop);
    s = c.ex.run(hb2.request(), o.view());
    if (!run_ok(s)) {
      *detail = "sample() failed on the doubled batch: " + s.message;
      return false;
    }
    for (int64_t r = 0; r < hb.batch; ++r) {
      std::string d = diff_row(o, r, base, r, 0.0);
      if (!d.empty()) return fail_row(r, "in a batch of " + std::to_string(hb2.batch), d);
      d = diff_row(o, 2 * hb.batch - 1 - r, base, r, 0.0);
      if (!d.empty()) return fail_row(r, "reversed", d);
    }
  }
  *detail = std::to_string(hb.batch) +
            " rows identical alone, in a slice, reversed and in a batch of twice the size";
  return true;
}

bool check_repeat_one(Context& c, std::string* detail, int64_t v, int nrows, uint64_t seed) {
  const auto rows = mixed_rows(seed, v, nrows);
  const HostBatch hb = build(rows, v, inv_options());
  HostOutputs a(hb.batch, kInvTop), b(hb.batch, kInvTop);
  const Status s1 = c.ex.run(hb.request(), a.view());
  const Status s2 = c.ex.run(hb.request(), b.view());
  if (!run_ok(s1) || !run_ok(s2) || s1.code != s2.code || s1.message != s2.message) {
    *detail =
        "the two calls returned different statuses: '" + s1.message + "' / '" + s2.message + "'";
    return false;
  }
  for (int64_t r = 0; r < hb.batch; ++r) {
    const std::string d = diff_row(a, r, b, r, 0.0);
    if (!d.empty()) {
      *detail = "row " + std::to_string(r) + ": second call vs first: " + d;
      return false;
    }
  }
  *detail = std::to_string(hb.batch) + " rows identical on a second call";
  return true;
}

// The invariance checks on a mixed batch (V = 3001, 40 rows) and on Qwen2-sized rows.
using InvFn = bool (*)(Context&, std::string*, int64_t, int, uint64_t);
bool invariance(Context& c, std::string* detail, InvFn fn, uint64_t seed) {
  std::string d1, d2;
  if (!fn(c, &d1, kInvVocab, kInvRows, seed)) {
    *detail = "V=3001: " + d1;
    return false;
  }
  if (!fn(c, &d2, 151936, c.quick ? 3 : 6, seed + 1)) {
    *detail = "V=151936: " + d2;
    return false;
  }
  *detail = "V=3001: " + d1 + "; V=151936: " + d2;
  return true;
}
bool check_threads(Context& c, std::string* detail) {
  if (c.ex.backend() != Backend::kCpu) {
    *detail = "not applicable to the " + std::string(backend_name(c.ex.backend())) + " backend";
    return true;
  }
  return invariance(c, detail, check_threads_one, 0x4004);
}
bool check_position(Context& c, std::string* detail) {
  return invariance(c, detail, check_position_one, 0x5005);
}
bool check_repeat(Context& c, std::string* detail) {
  return invariance(c, detail, check_repeat_one, 0x6006);
}

bool check_cuda_vs_cpu(Context& c, std::string* detail) {
  Status st;
  auto cpu = Executor::create(Backend::kCpu, c.opt.threads, &st);
  if (!cpu) {
    *detail = st.message;
    return false;
  }
  int64_t total = 0;
  for (const int64_t v : {int64_t{1}, int64_t{777}, kInvVocab, int64_t{151936}}) {
    const auto rows = mixed_rows(0x7007 + static_cast<uint64_t>(v), v, v > 10000 ? 8 : kInvRows);
    for (const DType dt : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
      BuildOptions bo = inv_options();
      bo.dtype = dt;
      const HostBatch hb = build(rows, v, bo);
      HostOutputs a(hb.batch, kInvTop), b(hb.batch, kInvTop);
      const Status s1 = c.ex.run(hb.request(), a.view());
      const Status s2 = cpu->run(hb.request(), b.view());
      if (!run_ok(s1) || !run_ok(s2)) {
        *detail = "sample() failed: cuda '" + s1.message + "', cpu '" + s2.message + "'";
        return false;
      }
      for (int64_t r = 0; r < hb.batch; ++r) {
        const std::string d = diff_row(a, r, b, r, kLogprobTol);
        if (!d.empty()) {
          *detail = "V=" + std::to_string(v) + " " + dtype_name(dt) + " row " + std::to_string(r) +
                    " " + describe(rows[static_cast<size_t>(r)], v) + ": cuda vs cpu: " + d;
          return false;
        }
      }
      total += hb.batch;
    }
  }
  *detail =
      std::to_string(total) + " rows: cuda == cpu (tokens, statuses, kept; logprobs within 1e-6)";
  return true;
}

// ---- contract ----

bool check_structural(Context&, std::string* detail) {
  Rng rng(0x8008);
  const int64_t v = 100, b = 4;
  std::vector<RowSpec> rows;
  for (int i = 0; i < b; ++i) rows.push_back(random_row(rng, v, false, false, false));
  rows[0].output = {1, 2, 3};
  const HostBatch hb = build(rows, v, BuildOptions{DType::kFloat32, 0, 0, 2, false});
  const Request good = hb.request();
  ExecConfig cfg;
  cfg.backend = Backend::kCpu;
  const size_t ws_good = workspace_size(good, cfg);
  const std::vector<uint32_t> short_mask(static_cast<size_t>(b * 4), 0xffffffffu);
  const std::vector<int64_t> bad_offsets = {0, 3, 2, 3, 3};
  const std::vector<int32_t> some_tokens = {1, 2, 3};

  struct Case {
    const char* name;
    std::function<void(Request&, Outputs&, size_t&)> apply;
    bool workspace_case;
  };
  const std::vector<Case> cases = {
      {"null tokens", [](Request&, Outputs& o, size_t&) { o.tokens = nullptr; }, false},
      {"null status", [](Request&, Outputs& o, size_t&) { o.status = nullptr; }, false},
      {"null logits", [](Request& r, Outputs&, size_t&) { r.logits.data = nullptr; }, false},
      {"V = 0", [](Request& r, Outputs&, size_t&) { r.logits.vocab = 0; }, false},
      {"V > 2^24",
       [](Request& r, Outputs&, size_t&) {
         r.logits.vocab = kMaxVocab + 1;
         r.logits.batch = 1;
       },
       false},
      {"B < 0", [](Request& r, Outputs&, size_t&) { r.logits.batch = -1; }, false},
      {"row_stride < V",
       [](Request& r, Outputs&, size_t&) { r.logits.row_stride = r.logits.vocab - 1; }, false},
      {"mask_row_words < ceil(V/32)",
       [&](Request& r, Outputs&, size_t&) {
         r.allowed_mask = short_mask.data();
         r.mask_row_words = 1;
       },
       false},
      {"top_logprobs = 65", [](Request& r, Outputs&, size_t&) { r.top_logprobs = 65; }, false},
      {"top_logprobs = -1", [](Request& r, Outputs&, size_t&) { r.top_logprobs = -1; }, false},
      {"decreasing CSR offsets",
       [&](Request& r, Outputs&, size_t&) {
         r.output_tokens.offsets = bad_offsets.data();
         r.output_tokens.tokens = some_tokens.data();
       },
       false},
      {"workspace too small", [](Request&, Outputs&, size_t& ws) { ws = ws > 0 ? ws - 1 : 0; },
       true},
  };
  int n_checked = 0;
  for (const auto& cs : cases) {
    Request req = good;
    HostOutputs ho(b, 2);
    Outputs out = ho.view();
    size_t ws = ws_good;
    cs.apply(req, out, ws);
    if (cs.workspace_case && ws_good == 0) continue;  // nothing to shrink
    std::vector<unsigned char> workspace(std::max<size_t>(ws_good, 1) + 64);
    HostOutputs before = ho;
    const Status s = sample(req, out, workspace.data(), ws, cfg);
    ++n_checked;
    const bool code_ok = cs.workspace_case ? s.code == Code::kWorkspaceTooSmall
                                           : (s.code == Code::kInvalidArgument ||
                                              s.code == Code::kWorkspaceTooSmall);
    if (!code_ok || s.message.empty()) {
      *detail = std::string(cs.name) + ": sample() returned code " +
                std::to_string(static_cast<int>(s.code)) + " '" + s.message + "', expected " +
                (cs.workspace_case ? "kWorkspaceTooSmall" : "kInvalidArgument") + " with a message";
      return false;
    }
    if (ho.tokens != before.tokens || ho.status != before.status || ho.kept != before.kept ||
        std::memcmp(ho.logprob.data(), before.logprob.data(), ho.logprob.size() * 4) != 0 ||
        ho.top_ids != before.top_ids ||
        std::memcmp(ho.top_lp.data(), before.top_lp.data(), ho.top_lp.size() * 4) != 0) {
      *detail = std::string(cs.name) + ": sample() rejected the request but wrote outputs";
      return false;
    }
  }
  *detail = std::to_string(n_checked) +
            " malformed requests rejected with a message and nothing written (cpu backend)";
  return true;
}

bool check_bad_rows(Context& c, std::string* detail) {
  Rng rng(0x9009);
  const int64_t v = 50;
  struct Bad {
    std::function<void(RowSpec&)> apply;
    int32_t status;
  };
  const std::vector<Bad> bads = {
      {[](RowSpec&) {}, kRowOk},
      {[](RowSpec& r) { r.temperature = -0.5f; }, kRowBadTemperature},
      {[](RowSpec& r) { r.temperature = kInf; }, kRowBadTemperature},
      {[](RowSpec& r) { r.top_k = -1; }, kRowBadTopK},
      {[](RowSpec& r) { r.top_p = kNaN; }, kRowBadTopP},
      {[](RowSpec& r) { r.top_p = -1.0f; }, kRowBadTopP},
      {[](RowSpec& r) { r.min_p = 1.01f; }, kRowBadMinP},
      {[](RowSpec& r) { r.repetition = 0.0f; }, kRowBadRepetitionPenalty},
      {[](RowSpec& r) { r.frequency = -2.01f; }, kRowBadFrequencyPenalty},
      {[](RowSpec& r) { r.presence = 2.5f; }, kRowBadPresencePenalty},
      {[](RowSpec& r) { r.prompt.push_back(50); }, kRowBadTokenId},
      {[](RowSpec& r) { r.bias.emplace_back(-7, 1.0f); }, kRowBadTokenId},
      {[](RowSpec& r) {
         r.top_k = -1;
         r.presence = 9.0f;
         r.prompt.push_back(99);
       },
       kRowBadTopK},
      {[](RowSpec& r) { r.temperature = 0.0f; }, kRowOk},
  };
  std::vector<RowSpec> rows;
  for (const auto& bd : bads) {
    RowSpec r = random_row(rng, v, false, false, false);
    r.temperature = 1.0f;
    r.top_k = 0;
    r.top_p = 1.0f;
    r.min_p = 0.0f;
    bd.apply(r);
    rows.push_back(std::move(r));
  }
  const HostBatch hb = build(rows, v, BuildOptions{});
  HostOutputs o(hb.batch, 0);
  const Status s = c.ex.run(hb.request(), o.view());
  if (c.ex.backend() == Backend::kCpu) {
    if (s.code != Code::kInvalidRowParameter || s.message.find("row 1") == std::string::npos) {
      *detail = "sample() returned code " + std::to_string(static_cast<int>(s.code)) + " '" +
                s.message + "', expected kInvalidRowParameter naming row 1";
      return false;
    }
  } else if (!run_ok(s)) {
    *detail = "sample() failed: " + s.message;
    return false;
  }
  for (size_t r = 0; r < bads.size(); ++r) {
    const bool ok_row = bads[r].status == kRowOk;
    if (o.status[r] != bads[r].status || (ok_row ? o.tokens[r] < 0 : o.tokens[r] != -1) ||
        (!ok_row && o.kept[r] != 0)) {
      *detail = "row " + std::to_string(r) + ": status " + row_status_name(o.status[r]) +
                ", token " + std::to_string(o.tokens[r]) + ", kept " + std::to_string(o.kept[r]) +
                "; expected status " + row_status_name(bads[r].status);
      return false;
    }
  }
  *detail = std::to_string(bads.size()) + " rows: each bad parameter gets its status and token -1" +
            (c.ex.backend() == Backend::kCpu ? "; message: \"" + s.message + "\"" : std::string());
  return true;
}

// ---------------------------------------------------------------------------------------------

struct CheckDef {
  std::string name;
  std::function<bool(Context&, std::string*)> fn;
  bool cuda_only = false;
};

std::vector<CheckDef> all_checks(bool quick) {
  const int64_t k = quick ? 1 : 4;  // draw multiplier
  std::vector<CheckDef> v;
  v.push_back({"exact/random-rows", check_exact_random});
  v.push_back({"exact/edge-cases", check_exact_edge});
  v.push_back({"exact/default-params", check_exact_defaults});
  v.push_back({"exact/vocab-32000-fp16", [quick](Context& c, std::string* d) {
                 return check_exact_large(c, d, 32000, {DType::kFloat16}, quick ? 4 : 12, 0xa00a);
               }});
  v.push_back({"exact/vocab-151936-fp32-bf16", [quick](Context& c, std::string* d) {
                 return check_exact_large(c, d, 151936, {DType::kFloat32, DType::kBFloat16},
                                          quick ? 3 : 8, 0xb00b);
               }});
  v.push_back({"chi2/softmax-v64", [k](Context& c, std::string* d) {
                 RowSpec r;
                 Rng rng(1);
                 for (int i = 0; i < 64; ++i)
                   r.logits.push_back(static_cast<float>(rng.normal() * 1.5));
                 r.seed = 42;
                 return chi2_check(c, d, r, 64, DType::kFloat32, 10000 * k, Vary::kStep);
               }});
  v.push_back({"chi2/temperature-0.7-top-p-0.9", [k](Context& c, std::string* d) {
                 RowSpec r = llm_spec(2, 1000, 0.9);
                 r.temperature = 0.7f;
                 r.top_p = 0.9f;
                 return chi2_check(c, d, r, 1000, DType::kFloat32, 8000 * k, Vary::kStep);
               }});
  v.push_back({"chi2/top-k-50", [k](Context& c, std::string* d) {
                 RowSpec r = llm_spec(3, 1000);
                 r.top_k = 50;
                 r.temperature = 1.5f;
                 return chi2_check(c, d, r, 1000, DType::kFloat32, 8000 * k, Vary::kStep);
               }});
  v.push_back({"chi2/min-p-0.05", [k](Context& c, std::string* d) {
                 RowSpec r = llm_spec(4, 1000);
                 r.min_p = 0.05f;
                 r.temperature = 1.3f;
                 return chi2_check(c, d, r, 1000, DType::kFloat32, 8000 * k, Vary::kStep);
               }});
  v.push_back({"chi2/bf16-ties-top-k-top-p", [k](Context& c, std::string* d) {
                 RowSpec r;
                 Rng rng(5);
                 for (int i = 0; i < 500; ++i)
                   r.logits.push_back(static_cast<float>(rng.below(12)) * 0.25f);
                 r.top_k = 20;  // the 20th value is tied: every token equal to it is kept
                 r.top_p = 0.8f;
                 r.seed = 77;
                 return chi2_check(c, d, r, 500, DType::kBFloat16, 10000 * k, Vary::kStep);
               }});
  v.push_back({"chi2/plus-inf-ties", [k](Context& c, std::string* d) {
                 RowSpec r = llm_spec(6, 100);
                 r.logits[3] = r.logits[50] = r.logits[97] = kInf;
                 r.top_k = 1;
                 return chi2_check(c, d, r, 100, DType::kFloat32, 3000 * k, Vary::kStep);
               }});
  v.push_back({"chi2/penalties-bias-mask", [k](Context& c, std::string* d) {
                 RowSpec r = llm_spec(7, 512);
                 Rng rng(7);
                 r.temperature = 0.9f;
                 r.repetition = 1.3f;
                 r.frequency = 0.4f;
                 r.presence = 0.3f;
                 r.mask = random_mask(rng, 512, 0.5);
                 for (int i = 0; i < 40; ++i) r.output.push_back(rand_token(rng, 512));
                 for (int i = 0; i < 20; ++i) r.prompt.push_back(rand_token(rng, 512));
                 for (int i = 0; i < 10; ++i) r.bias.emplace_back(rand_token(rng, 512), 4.0f);
                 return chi2_check(c, d, r, 512, DType::kFloat32, 10000 * k, Vary::kStep);
               }});
  v.push_back({"chi2/flat-v1024", [k](Context& c, std::string* d) {
                 RowSpec r;
                 r.logits.assign(1024, 1.0f);
                 r.seed = 9;
                 return chi2_check(c, d, r, 1024, DType::kFloat32, 10000 * k, Vary::kStep);
               }});
  v.push_back({"chi2/vary-seed", [k](Context& c, std::string* d) {
                 RowSpec r = llm_spec(10, 256);
                 r.step = 7;
                 return chi2_check(c, d, r, 256, DType::kFloat16, 10000 * k, Vary::kSeed);
               }});
  v.push_back({"chi2/vary-substream", [k](Context& c, std::string* d) {
                 RowSpec r = llm_spec(11, 256);
                 r.step = 12345;
                 r.temperature = 0.8f;
                 return chi2_check(c, d, r, 256, DType::kFloat32, 10000 * k, Vary::kSubstream);
               }});
  v.push_back({"chi2/greedy-ties", [](Context& c, std::string* d) {
                 RowSpec r = llm_spec(12, 1000);
                 const float m = *std::max_element(r.logits.begin(), r.logits.end());
                 r.logits[900] = r.logits[17] = m;  // ties: the lowest id wins
                 r.temperature = 0.0f;
                 return chi2_check(c, d, r, 1000, DType::kFloat32, 2000, Vary::kStep);
               }});
  v.push_back({"chi2/vocab-151936-top-p-0.95", [quick](Context& c, std::string* d) {
                 RowSpec r = llm_spec(13, 151936, 1.3);
                 r.seed = 2024;
                 r.top_p = 0.95f;
                 r.temperature = 0.9f;
                 return chi2_check(c, d, r, 151936, DType::kBFloat16, quick ? 200 : 1500,
                                   Vary::kStep);
               }});
  v.push_back({"invariance/threads", check_threads});
  v.push_back({"invariance/batch-position", check_position});
  v.push_back({"invariance/repeat", check_repeat});
  v.push_back({"invariance/cuda-vs-cpu", check_cuda_vs_cpu, true});
  v.push_back({"contract/structural-errors", check_structural});
  v.push_back({"contract/bad-row-parameters", check_bad_rows});
  return v;
}

}  // namespace

bool VerifyReport::passed() const {
  if (!error.empty() || checks.empty()) return false;
  for (const auto& c : checks)
    if (!c.passed) return false;
  return true;
}

std::vector<std::string> verify_check_names(bool quick) {
  std::vector<std::string> names;
  for (const auto& c : all_checks(quick)) names.push_back(c.name);
  return names;
}

VerifyReport run_verify(const VerifyOptions& options) {
  VerifyReport report;
  Status st;
  std::unique_ptr<Executor> ex;
  try {
    ex = Executor::create(options.backend, options.threads, &st);
  } catch (const std::exception& e) {
    st = Status{Code::kBackendError, e.what()};
  }
  if (!ex) {
    report.error = st.message;
    return report;
  }
  report.backend = ex->describe();
  Context ctx{options, *ex, options.quick};
  for (const auto& def : all_checks(options.quick)) {
    if (!options.filter.empty() && def.name.find(options.filter) == std::string::npos) continue;
    if (def.cuda_only && ex->backend() != Backend::kCuda) continue;
    CheckResult r;
    r.name = def.name;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      r.passed = def.fn(ctx, &r.detail);
    } catch (const std::exception& e) {
      r.passed = false;
      r.detail = std::string("exception: ") + e.what();
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (options.log) {
      std::ostringstream line;
      line << (r.passed ? "PASS  " : "FAIL  ") << r.name;
      line.setf(std::ios::fixed);
      line.precision(2);
      line << "  (" << r.seconds << " s)  " << r.detail << "\n";
      *options.log << line.str() << std::flush;
    }
    report.checks.push_back(std::move(r));
  }
  return report;
}

}  // namespace lmsample::tool
